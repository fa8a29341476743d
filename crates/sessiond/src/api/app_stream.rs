//! The frames of `GET /v1/apps/{app}/events`, from the node's [`EventLog`]: what a
//! client missed (or `resync` when that cannot be had), then the app's live events,
//! each with its id `<epoch>-<seq>` ([`crate::event_id`]).
//!
//! A stream's first frame tells the client where it stands, so that a drop at any time,
//! even before the first event, can be resumed:
//! - no `Last-Event-ID`: a frame with only an `id:` (the newest number now), which
//!   dispatches no event (WHATWG rules) but is what the client sends back;
//! - an id this node honours: the app's events that followed it, then that id-only
//!   frame if other apps' events came after the last one replayed;
//! - an id it cannot honour: `event: resync` with `{"reason": ...}` and the newest id.
//!
//! A live stream that falls behind the log's channel catches up from the log, or
//! sends `resync` when the log no longer holds what it missed; a gap in the log itself
//! goes out as `resync` with reason `lagged`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::sse::Event as SseEvent;
use futures_util::stream::{self, BoxStream, StreamExt};
use sessiond_core::Event;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::events::{frame, StreamSlot};
use crate::event_log::{Entry, EventLog, Numbered, ResyncReason, Start};
use crate::state::SharedState;

/// The frames of a stream of `app` whose client sent `last_event_id`; it holds `slot`
/// until it ends (shutdown, or its client goes).
pub(super) fn frames(
    st: &SharedState,
    app: String,
    slot: StreamSlot,
    last_event_id: Option<&HeaderValue>,
) -> BoxStream<'static, Result<SseEvent, Infallible>> {
    let live = Live::start(
        st.event_log.clone(),
        app,
        last_event_id.map(HeaderValue::as_bytes),
        st.shutdown.clone(),
        slot,
    );
    stream::unfold(live, |mut live| async move {
        let out = live.next().await?;
        let frame = out.frame(&live.log);
        Some((Ok(frame), live))
    })
    .boxed()
}

/// One frame to send, before it is written out.
#[derive(Debug)]
enum Out {
    /// An event of the app, with its number.
    Event(Numbered),
    /// Only an id: where the client stands, no event.
    Position(u64),
    /// `event: resync`: what followed the client's id cannot be replayed; the stream
    /// goes on after this number.
    Resync(u64, ResyncReason),
}

impl Out {
    fn frame(&self, log: &EventLog) -> SseEvent {
        match self {
            Out::Event((seq, e)) => frame(e).id(log.id(*seq).to_string()),
            Out::Position(seq) => SseEvent::default().id(log.id(*seq).to_string()),
            Out::Resync(seq, reason) => SseEvent::default()
                .event("resync")
                .id(log.id(*seq).to_string())
                .data(serde_json::json!({ "reason": reason.as_str() }).to_string()),
        }
    }
}

/// A stream's state: the log's channel, and what to send before reading it again.
struct Live {
    log: Arc<EventLog>,
    rx: broadcast::Receiver<Entry>,
    shutdown: watch::Receiver<bool>,
    app: String,
    /// The newest number this stream has accounted for (sent, or skipped as another
    /// app's); entries up to it are not sent again.
    last: u64,
    pending: VecDeque<Out>,
    _slot: StreamSlot,
}

impl Live {
    /// Subscribes to the log and lines up the first frames.
    fn start(
        log: Arc<EventLog>,
        app: String,
        last_event_id: Option<&[u8]>,
        shutdown: watch::Receiver<bool>,
        slot: StreamSlot,
    ) -> Live {
        let sub = log.subscribe(last_event_id, &app);
        let mut pending = VecDeque::new();
        match sub.start {
            Start::Fresh => pending.push_back(Out::Position(sub.head)),
            Start::Replay(events) => {
                let last = events.last().map(|(seq, _)| *seq);
                pending.extend(events.into_iter().map(Out::Event));
                if last != Some(sub.head) {
                    pending.push_back(Out::Position(sub.head));
                }
            }
            Start::Resync(reason) => pending.push_back(Out::Resync(sub.head, reason)),
        }
        Live {
            log,
            rx: sub.rx,
            shutdown,
            app,
            last: sub.head,
            pending,
            _slot: slot,
        }
    }

    /// The next frame; None on shutdown (the stream ends).
    async fn next(&mut self) -> Option<Out> {
        loop {
            if let Some(out) = self.pending.pop_front() {
                return Some(out);
            }
            if *self.shutdown.borrow() {
                return None;
            }
            let entry = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.shutdown.changed() => return None,
            };
            match entry {
                Ok(entry) if entry.seq() <= self.last => {}
                Ok(Entry::Event(seq, e)) => {
                    self.last = seq;
                    if self.mine(&e) {
                        return Some(Out::Event((seq, e)));
                    }
                }
                Ok(Entry::Gap(seq)) => {
                    self.last = seq;
                    return Some(Out::Resync(seq, ResyncReason::Lagged));
                }
                // The channel dropped entries for this stream: the log may still have
                // them. Entries the channel sends from here on that the log already
                // gave are skipped by number.
                Err(RecvError::Lagged(_)) => {
                    let (head, missed) = self.log.catch_up(self.last, &self.app);
                    match missed {
                        Ok(events) => self.pending.extend(events.into_iter().map(Out::Event)),
                        Err(reason) => self.pending.push_back(Out::Resync(head, reason)),
                    }
                    self.last = head;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn mine(&self, e: &Event) -> bool {
        *e.app == *self.app
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::events::{StreamLimits, Streams};
    use crate::event_id::EventId;
    use futures_util::FutureExt;
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

    /// A stream of app `a`, and the sender of its shutdown signal.
    fn live(log: &Arc<EventLog>, last_event_id: Option<String>) -> (Live, watch::Sender<bool>) {
        let streams = Arc::new(Streams::new(StreamLimits {
            total: 1,
            per_app: 1,
            per_session: 1,
        }));
        let slot = streams.open("a", None).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let header = last_event_id.as_deref().map(str::as_bytes);
        (
            Live::start(log.clone(), "a".into(), header, shutdown, slot),
            stop,
        )
    }

    /// What the stream has to send now, without waiting (and without the runtime's
    /// budget cutting a long catch-up short).
    fn ready(live: &mut Live) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(o)) = tokio::task::unconstrained(live.next()).now_or_never() {
            out.push(match o {
                Out::Event((seq, e)) => format!("{seq}:{}", e.app),
                Out::Position(seq) => format!("at {seq}"),
                Out::Resync(seq, reason) => format!("resync {seq} {}", reason.as_str()),
            });
        }
        out
    }

    #[tokio::test]
    async fn starts_with_where_the_client_stands() {
        let log = Arc::new(EventLog::with_epoch(3));
        for app in ["a", "b", "a", "b"] {
            log.record(event(app));
        }
        let first = |header: Option<String>| {
            let (mut s, _stop) = live(&log, header);
            ready(&mut s)
        };
        assert_eq!(first(None), ["at 4"]);
        assert_eq!(first(Some(log.id(1).to_string())), ["3:a", "at 4"]);
        assert_eq!(first(Some(log.id(3).to_string())), ["at 4"]);
        assert_eq!(first(Some(log.id(4).to_string())), ["at 4"]);
        let other_run = EventId { epoch: 4, seq: 1 }.to_string();
        assert_eq!(first(Some(other_run)), ["resync 4 unknown_epoch"]);
        assert_eq!(first(Some("1".into())), ["resync 4 unknown_epoch"]);
        assert_eq!(first(Some("é".repeat(100))), ["resync 4 malformed"]);
    }

    #[tokio::test]
    async fn live_events_of_the_app_once_each_in_order() {
        let log = Arc::new(EventLog::with_epoch(3));
        let (mut s, _stop) = live(&log, None);
        assert_eq!(ready(&mut s), ["at 0"]);
        for app in ["a", "b", "a"] {
            log.record(event(app));
        }
        assert_eq!(ready(&mut s), ["1:a", "3:a"]);
    }

    /// A stream that falls more than the channel's capacity behind gets every missed
    /// event of its app from the log, once, in order, and goes on live.
    #[tokio::test]
    async fn a_stream_that_falls_behind_catches_up_from_the_log() {
        let log = Arc::new(EventLog::with_epoch(3));
        let (mut s, _stop) = live(&log, None);
        assert_eq!(ready(&mut s), ["at 0"]);
        for i in 0..6000 {
            log.record(event(if i % 3 == 0 { "a" } else { "b" }));
        }
        let got = ready(&mut s);
        let want: Vec<String> = (0..6000)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("{}:a", i + 1))
            .collect();
        assert_eq!(got, want);
        log.record(event("a"));
        assert_eq!(ready(&mut s), ["6001:a"]);
    }

    /// Behind by more than the log keeps: `resync`, then live.
    #[tokio::test]
    async fn a_stream_too_far_behind_resyncs() {
        let log = Arc::new(EventLog::with_epoch(3));
        let (mut s, _stop) = live(&log, None);
        assert_eq!(ready(&mut s), ["at 0"]);
        for _ in 0..EventLog::CAPACITY + 1 {
            log.record(event("a"));
        }
        let head = EventLog::CAPACITY + 1;
        assert_eq!(ready(&mut s), [format!("resync {head} evicted")]);
        log.record(event("a"));
        assert_eq!(ready(&mut s), [format!("{}:a", head + 1)]);
    }
}
