//! [`EventLog`]: the node's recent events, numbered, so that an app event stream that
//! reconnects with `Last-Event-ID` gets exactly what it missed, or is told that it
//! cannot ([`ResyncReason`]). The Manager's broadcast channel has no memory; this keeps
//! the last [`EventLog::CAPACITY`] events and re-broadcasts each with its number.
//!
//! Numbers belong to one run of one node: each log draws an epoch when the server
//! starts, and an id ([`EventId`]) carries both. The log honours an id only when it is
//! its own (same epoch, a number it gave) and every event of the stream's app that
//! followed it is still kept; otherwise a stream starts with `resync` and the client
//! re-lists the sessions. Eviction is counted per app, so a quiet app's client is not
//! told to resync because other apps were busy.
//!
//! When the log itself falls behind the Manager's channel, the events it missed were
//! never numbered: it gives the gap a number of its own ([`Entry::Gap`]), live streams
//! pass it on as `resync` (reason `lagged`), and ids from before it are not honoured.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sessiond_core::Event;
use tokio::sync::broadcast;

use crate::event_id::{EventId, NotAnId};

/// An event with its sequence number.
pub type Numbered = (u64, Event);

/// What the log broadcasts, each with its number.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An event.
    Event(u64, Event),
    /// Events the log missed (it fell behind the Manager's channel).
    Gap(u64),
}

impl Entry {
    /// The entry's number.
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Event(seq, _) | Entry::Gap(seq) => *seq,
        }
    }
}

/// Why a stream cannot replay what followed a client's `Last-Event-ID`: the data of the
/// `resync` event, `{"reason": "<as_str>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The id is from another node, an earlier run of this one, or the format without
    /// an epoch.
    UnknownEpoch,
    /// Events of the app that followed the id are no longer kept.
    Evicted,
    /// Events were lost because this node, or this stream, fell behind.
    Lagged,
    /// Not an id this node sent.
    Malformed,
}

impl ResyncReason {
    /// The `reason` of the `resync` event.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::UnknownEpoch => "unknown_epoch",
            ResyncReason::Evicted => "evicted",
            ResyncReason::Lagged => "lagged",
            ResyncReason::Malformed => "malformed",
        }
    }
}

/// How a stream starts, after [`EventLog::subscribe`].
#[derive(Debug)]
pub enum Start {
    /// No `Last-Event-ID`: live events only.
    Fresh,
    /// The events of the app that followed the client's id, oldest first (maybe none).
    Replay(Vec<Numbered>),
    /// The client's id cannot be honoured.
    Resync(ResyncReason),
}

/// A stream's subscription: live entries, the newest number when it was taken, and
/// what to send before the live entries.
#[derive(Debug)]
pub struct Subscription {
    /// Live entries; those numbered `head` or below were already in the log.
    pub rx: broadcast::Receiver<Entry>,
    /// The newest number given when the subscription was taken.
    pub head: u64,
    /// What comes first.
    pub start: Start,
}

/// The kept events and what is needed to judge an id against them.
#[derive(Default)]
struct Kept {
    events: VecDeque<Numbered>,
    /// The newest number given (0: none yet).
    head: u64,
    /// Per app, the newest number of its events evicted. One entry per app that had
    /// events, so bounded by the configured apps.
    evicted: HashMap<Arc<str>, u64>,
    /// The newest number given to a gap (0: none).
    gap: u64,
}

impl Kept {
    /// The events of `app` after `after`, or why they cannot be had.
    fn after(&self, after: u64, app: &str) -> Result<Vec<Numbered>, ResyncReason> {
        if after > self.head {
            return Err(ResyncReason::Malformed);
        }
        if after < self.gap {
            return Err(ResyncReason::Lagged);
        }
        if self.evicted.get(app).is_some_and(|&e| e > after) {
            return Err(ResyncReason::Evicted);
        }
        Ok(self
            .events
            .iter()
            .filter(|(seq, e)| *seq > after && *e.app == *app)
            .cloned()
            .collect())
    }
}

/// Recent events with their sequence numbers.
pub struct EventLog {
    epoch: u64,
    kept: Mutex<Kept>,
    tx: broadcast::Sender<Entry>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::with_epoch(EventId::random_epoch())
    }
}

impl EventLog {
    /// How many events are kept for replay.
    pub const CAPACITY: usize = 10_000;

    /// An empty log with a given epoch ([`EventLog::default`] draws one).
    pub fn with_epoch(epoch: u64) -> Self {
        EventLog {
            epoch,
            kept: Mutex::new(Kept::default()),
            tx: broadcast::channel(4096).0,
        }
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The id of number `seq` of this run.
    pub fn id(&self, seq: u64) -> EventId {
        EventId {
            epoch: self.epoch,
            seq,
        }
    }

    /// Numbers and keeps the events of `rx` (the Manager's, subscribed before the server
    /// serves, so none is missed) until its channel closes.
    pub async fn follow(self: Arc<Self>, mut rx: broadcast::Receiver<Event>) {
        loop {
            match rx.recv().await {
                Ok(e) => self.record(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "the event log fell behind; app event streams will resync"
                    );
                    self.record_gap();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers, keeps and broadcasts one event.
    pub fn record(&self, e: Event) {
        let mut kept = self.kept();
        kept.head += 1;
        let seq = kept.head;
        if kept.events.len() == Self::CAPACITY {
            if let Some((old, gone)) = kept.events.pop_front() {
                kept.evicted.insert(gone.app, old);
            }
        }
        kept.events.push_back((seq, e.clone()));
        // Sent under the lock, so the channel's order is the numbers' order.
        let _ = self.tx.send(Entry::Event(seq, e));
    }

    /// Gives a number to events that were missed.
    fn record_gap(&self) {
        let mut kept = self.kept();
        kept.head += 1;
        kept.gap = kept.head;
        let _ = self.tx.send(Entry::Gap(kept.head));
    }

    /// Subscribes a stream of `app` whose client sent `last_event_id` (the raw header,
    /// if any). Subscribing comes first, then the replay is read, so nothing falls in
    /// between; live entries numbered up to `head` are the replay's and are skipped.
    pub fn subscribe(&self, last_event_id: Option<&[u8]>, app: &str) -> Subscription {
        let rx = self.tx.subscribe();
        let kept = self.kept();
        let head = kept.head;
        let start = match last_event_id.map(EventId::parse) {
            None => Start::Fresh,
            Some(Err(NotAnId::Legacy)) => Start::Resync(ResyncReason::UnknownEpoch),
            Some(Err(NotAnId::Malformed)) => Start::Resync(ResyncReason::Malformed),
            Some(Ok(id)) if id.epoch != self.epoch => Start::Resync(ResyncReason::UnknownEpoch),
            Some(Ok(id)) => match kept.after(id.seq, app) {
                Ok(events) => Start::Replay(events),
                Err(reason) => Start::Resync(reason),
            },
        };
        Subscription { rx, head, start }
    }

    /// For a stream that fell behind the live channel: the newest number now, and the
    /// events of `app` after `after`, or why they cannot be had.
    pub fn catch_up(&self, after: u64, app: &str) -> (u64, Result<Vec<Numbered>, ResyncReason>) {
        let kept = self.kept();
        (kept.head, kept.after(after, app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{EventKind, SessionId, Timestamp};

    fn event(app: &str) -> Event {
        Event {
            kind: EventKind::Opened,
            id: SessionId::new(),
            app: app.into(),
            user: None,
            reason: None,
            by: None,
            at: Timestamp(0),
        }
    }

    fn header(log: &EventLog, seq: u64) -> Vec<u8> {
        log.id(seq).to_string().into_bytes()
    }

    fn replayed(s: &Subscription) -> Vec<u64> {
        match &s.start {
            Start::Replay(events) => events.iter().map(|(seq, _)| *seq).collect(),
            other => panic!("not a replay: {other:?}"),
        }
    }

    fn resync(s: &Subscription) -> ResyncReason {
        match &s.start {
            Start::Resync(reason) => *reason,
            other => panic!("not a resync: {other:?}"),
        }
    }

    #[test]
    fn replays_the_apps_events_after_the_id() {
        let log = EventLog::with_epoch(7);
        for app in ["a", "b", "a", "a", "b"] {
            log.record(event(app));
        }
        let s = log.subscribe(Some(&header(&log, 1)), "a");
        assert_eq!(s.head, 5);
        assert_eq!(replayed(&s), [3, 4]);
        assert_eq!(
            replayed(&log.subscribe(Some(&header(&log, 5)), "a")),
            [0u64; 0]
        );
        assert_eq!(
            replayed(&log.subscribe(Some(&header(&log, 0)), "b")),
            [2, 5]
        );
        assert!(matches!(log.subscribe(None, "a").start, Start::Fresh));
    }

    #[test]
    fn ids_it_cannot_honour() {
        let log = EventLog::with_epoch(7);
        log.record(event("a"));
        let other_run = EventId { epoch: 8, seq: 1 }.to_string();
        assert_eq!(
            resync(&log.subscribe(Some(other_run.as_bytes()), "a")),
            ResyncReason::UnknownEpoch
        );
        assert_eq!(
            resync(&log.subscribe(Some(b"1"), "a")),
            ResyncReason::UnknownEpoch
        );
        assert_eq!(
            resync(&log.subscribe(Some(b"x-1"), "a")),
            ResyncReason::Malformed
        );
        // An id of this run beyond the newest number was never sent.
        assert_eq!(
            resync(&log.subscribe(Some(&header(&log, 2)), "a")),
            ResyncReason::Malformed
        );
    }

    #[test]
    fn eviction_is_judged_per_app() {
        let log = EventLog::with_epoch(1);
        log.record(event("quiet")); // 1
        log.record(event("busy")); // 2
        for _ in 0..EventLog::CAPACITY {
            log.record(event("busy"));
        }
        // `busy` lost event 2, `quiet` lost event 1.
        assert_eq!(
            resync(&log.subscribe(Some(&header(&log, 1)), "busy")),
            ResyncReason::Evicted
        );
        assert_eq!(
            replayed(&log.subscribe(Some(&header(&log, 2)), "busy")).len(),
            EventLog::CAPACITY
        );
        assert_eq!(
            resync(&log.subscribe(Some(&header(&log, 0)), "quiet")),
            ResyncReason::Evicted
        );
        // Having seen event 1, `quiet` missed nothing that was evicted.
        assert_eq!(
            replayed(&log.subscribe(Some(&header(&log, 1)), "quiet")),
            [0u64; 0]
        );
    }

    #[test]
    fn a_gap_is_numbered_broadcast_and_ends_older_ids() {
        let log = EventLog::with_epoch(1);
        log.record(event("a")); // 1
        let mut live = log.subscribe(None, "a").rx;
        log.record_gap(); // 2
        log.record(event("a")); // 3
        assert!(matches!(live.try_recv(), Ok(Entry::Gap(2))));
        assert!(matches!(live.try_recv(), Ok(Entry::Event(3, _))));
        assert_eq!(
            resync(&log.subscribe(Some(&header(&log, 1)), "a")),
            ResyncReason::Lagged
        );
        assert_eq!(replayed(&log.subscribe(Some(&header(&log, 2)), "a")), [3]);
        assert_eq!(log.catch_up(1, "a"), (3, Err(ResyncReason::Lagged)));
        let (head, events) = log.catch_up(2, "a");
        assert_eq!((head, events.map(|e| e.len())), (3, Ok(1)));
    }
}
