//! [`SessionLocks`]: the writes of one session in this process, in line and combined.
//!
//! Read-modify-write of session storage is a version-conditional update with retry, which
//! is correct on its own across any number of nodes. But the parallel requests of one
//! page on one node would mostly lose that race to each other and retry, and even in
//! line each would wait out the store's round trip or sync of the one before it. So the
//! writes of a session in this process meet here:
//!
//! - one write at a time is sent to the store (the session's *send lock*);
//! - a write that comes while another is being sent does not wait for its turn alone: it
//!   joins the session's *open batch*, planned on the data the write in flight will leave
//!   (each request runs its own plan, in order, on the data the plans before it left),
//!   and the batch goes to the store as one conditional write of the difference, sent by
//!   a task of its own once the write before it is let go. Thirty-two parallel
//!   increments of one session cost a few store writes, not thirty-two in a row, and no
//!   update is lost: each plan saw every change before it;
//! - a batch is sent only if what it was planned on is what the store then holds: the
//!   write before it succeeded, conditionally, so the store holds exactly the data that
//!   write was planned to leave (a version the store reports is never taken for data it
//!   did not confirm). Otherwise nothing is written and its members plan again, on the
//!   store's state (read again after a version conflict).
//!
//! - a write is let go as soon as the store has put it in its order
//!   ([`sessiond_core::Store::modify_ordered`]: the file store, before its sync), so the
//!   next one is sent while it becomes durable; a request is answered only once its own
//!   write, and every write its plan saw, is durable (a plan that changes nothing waits
//!   for the writes it saw as well).
//!
//! An entry lives only while someone holds, waits for or sends a write of its session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use sessiond_core::{Error, Lookup, Manager, Session as Record, SessionId, StoreError};
use tokio::sync::{watch, Mutex as AsyncMutex, OwnedMutexGuard};

use crate::patch;

/// Session storage, as plans see it.
pub(crate) type Data = Map<String, Value>;

/// Per-session write lines of one layer.
#[derive(Debug, Default)]
pub(crate) struct SessionLocks {
    map: Arc<SessionLocksInner>,
}

#[derive(Debug, Default)]
struct Slot {
    send: Arc<AsyncMutex<()>>,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    base: Base,
    /// The write being sent, when its result is what the open batch builds on.
    tip: Option<Tip>,
    open: Option<Open>,
}

/// What this process knows of the session as stored.
// As `Option<Record>` would be: boxing the copy would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
enum Base {
    /// Nothing yet: a writer's own copy of the session is the base.
    #[default]
    Unknown,
    /// As the store last confirmed it (read, or written under the send lock).
    Known(Record),
    /// The store refused a write as stale: read it again before planning.
    Stale,
}

/// A write in flight and the data it will leave if it succeeds.
#[derive(Debug, Clone)]
struct Tip {
    batch: Arc<Batch>,
    data: Arc<Data>,
}

/// Writes gathered while another is in flight.
#[derive(Debug)]
struct Open {
    batch: Arc<Batch>,
    /// What the plans were made on.
    start: Start,
    /// The data as the plans left it.
    data: Data,
    /// The patches, in order, with whether each was computed from the data it saw.
    members: Vec<(Data, bool)>,
    ip: Option<IpAddr>,
}

/// The state a batch was planned on.
#[derive(Debug)]
enum Start {
    /// The confirmed base at this version.
    Base(u64),
    /// The result of this write, planned to leave this data.
    After(Arc<Batch>, Arc<Data>),
}

/// One store write, and how it ended, for everyone waiting on it.
#[derive(Debug)]
struct Batch {
    outcome: watch::Sender<Option<Progress>>,
}

/// How `batch` ended, once it has (`None` if its sender went without a word).
async fn wait_done(batch: &Batch) -> Option<Outcome> {
    wait_for_end(batch.outcome.subscribe()).await
}

/// The end a write's progress reaches.
async fn wait_for_end(mut rx: watch::Receiver<Option<Progress>>) -> Option<Outcome> {
    let p = rx
        .wait_for(|p| matches!(p, Some(Progress::Done(_))))
        .await
        .ok()?;
    match &*p {
        Some(Progress::Done(o)) => Some(o.clone()),
        _ => None,
    }
}

impl Outcome {
    fn is_written(&self) -> bool {
        matches!(self, Outcome::Written { .. })
    }
}

/// Where a write stands.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Progress {
    /// The store has put it in its order and it is becoming durable (the file store):
    /// what builds on it may be sent now.
    Ordered,
    /// It ended.
    Done(Outcome),
}

impl Batch {
    fn new() -> Arc<Batch> {
        Arc::new(Batch {
            outcome: watch::channel(None).0,
        })
    }

    fn publish(&self, o: Outcome) {
        self.outcome.send_replace(Some(Progress::Done(o)));
    }
}

/// How a write ended.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Written; `planned` when conditional on the state it was planned on (so the store
    /// holds exactly the planned data).
    Written { record: Record, planned: bool },
    /// Nothing was written: plan again (the state moved on, or the write it built on
    /// failed).
    Replan,
    /// Nothing was written, for a reason each member must learn by writing alone (a
    /// refusal, the store unavailable, a closed session).
    Alone,
    /// The store did not confirm the write, which may have been applied: fail closed.
    Unknown(Arc<str>),
}

/// What joining the session's writes gave.
pub(crate) enum Joined<R> {
    /// The plan changes nothing: its answer, and the session as known.
    Nothing(R, Record),
    /// The store's state must be read first ([`SessionLocks::offer`]), then join again,
    /// handing back the place in line this writer held, if any.
    ReadFirst(Option<SessionLock>),
    /// This writer sends its own write (the session had no write in flight).
    Direct(R, Direct),
    /// The write goes with a batch: wait for it ([`Member::outcome`]).
    Member(R, Member),
}

/// A write this request sends itself, holding the send lock.
pub(crate) struct Direct {
    entry: Entry,
    send: Option<OwnedMutexGuard<()>>,
    batch: Arc<Batch>,
    /// The session it was planned on.
    pub base: Record,
    /// The patch to send.
    patch: Data,
    /// Whether the plan read the data it changes: the write must then be conditional
    /// on `base`'s version.
    pub exact: bool,
    published: bool,
}

impl Direct {
    /// Sends the write (to the session found by `lookup`, at version `expect`) and
    /// tells the writes built on it how it ended ([`send_write`]).
    pub async fn send(
        mut self,
        manager: &Manager,
        lookup: Lookup,
        expect: Option<u64>,
        ip: Option<IpAddr>,
    ) -> Result<Record, Error> {
        let send = self.send.take();
        let patch = std::mem::take(&mut self.patch);
        let result = send_write(
            &self.entry,
            &self.batch,
            send,
            manager,
            lookup,
            patch,
            expect,
            ip,
        )
        .await;
        self.published = true;
        result
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        // Dropped unfinished (the request was cancelled mid-write): what builds on it
        // plans again, on a fresh read.
        if !self.published {
            let o = Outcome::Unknown("cancelled".into());
            self.entry.settle(&self.batch, &o);
            self.batch.publish(o);
        }
    }
}

/// A write sent with others.
pub(crate) struct Member {
    _entry: Entry,
    rx: watch::Receiver<Option<Progress>>,
}

impl Member {
    /// Waits until the write it waits on has ended (durably, on the file store).
    pub async fn outcome(self) -> Outcome {
        // The sender is a task nobody cancels, or a Direct whose drop publishes; a
        // runtime shutting down drops it.
        wait_for_end(self.rx)
            .await
            .unwrap_or_else(|| Outcome::Unknown("the write was dropped".into()))
    }
}

/// A reference to a slot that forgets the entry when the last one goes.
#[derive(Debug)]
struct Entry {
    locks: Arc<SessionLocksInner>,
    id: SessionId,
    slot: Arc<Slot>,
}

/// The map, shared with the batch tasks.
type SessionLocksInner = Mutex<HashMap<SessionId, Arc<Slot>>>;

impl Entry {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.slot.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a write under the send lock: the base it leaves, and no tip if it was one.
    fn settle(&self, batch: &Arc<Batch>, o: &Outcome) {
        let mut st = self.state();
        match o {
            // A write let go once ordered may end after the ones built on it.
            Outcome::Written { record, .. } => match &st.base {
                Base::Known(k) if k.version > record.version => {}
                _ => st.base = Base::Known(record.clone()),
            },
            Outcome::Replan | Outcome::Alone | Outcome::Unknown(_) => st.base = Base::Stale,
        }
        if st
            .tip
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(&t.batch, batch))
        {
            st.tip = None;
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the map's and this entry's. Anyone else holds a third.
        if Arc::strong_count(&self.slot) == 2 {
            map.remove(&self.id);
        }
        // This entry's reference goes while the map is locked, so two entries dropped
        // at once cannot both count three and leave the slot behind.
        drop(std::mem::replace(&mut self.slot, detached()));
    }
}

/// A slot of no session, standing in for a dropped entry's (no allocation).
fn detached() -> Arc<Slot> {
    static DETACHED: std::sync::OnceLock<Arc<Slot>> = std::sync::OnceLock::new();
    DETACHED.get_or_init(Arc::default).clone()
}

/// The outcome other writes learn from a write's result.
fn outcome_of(result: &Result<Record, Error>, exact: bool) -> Outcome {
    match result {
        Ok(record) => Outcome::Written {
            record: record.clone(),
            planned: exact,
        },
        Err(Error::VersionMismatch { .. }) => Outcome::Replan,
        Err(e) if e.may_have_applied() => Outcome::Unknown(e.to_string().into()),
        Err(_) => Outcome::Alone,
    }
}

/// A writer's plan: its answer, the patch it wants (empty: nothing to write), and
/// whether the patch was computed from the data it was given.
pub(crate) type Planned<R> = (R, Data, bool);

impl SessionLocks {
    fn entry(&self, id: SessionId) -> Entry {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id).or_default().clone()
        };
        Entry {
            locks: self.map.clone(),
            id,
            slot,
        }
    }

    /// Runs `plan` on the newest data of session `mine.id` this process knows (the data
    /// the writes in flight will leave) and puts its patch in line: sent by this writer
    /// ([`Joined::Direct`]) when nothing is in flight, else with the session's open
    /// batch ([`Joined::Member`]). `alone` waits for the send lock and never joins a
    /// batch (to learn a refusal of one's own); `line` is a place in line this writer
    /// holds already (from [`Joined::ReadFirst`]). `reread`: a write planned on `mine`
    /// was refused, so `mine` is older than the store; the plan runs only on a state
    /// this line confirmed newer than it, else the store is read first
    /// ([`Joined::ReadFirst`], holding the line when this writer holds it, so that
    /// nothing of this process writes between that read and this write).
    #[allow(clippy::too_many_arguments)]
    pub async fn join<R, E>(
        &self,
        manager: &Arc<Manager>,
        mine: &Record,
        ip: Option<IpAddr>,
        mut alone: bool,
        reread: bool,
        mut line: Option<SessionLock>,
        plan: impl FnOnce(&Data) -> Result<Planned<R>, E>,
    ) -> Result<Joined<R>, E> {
        let mut entry = self.entry(mine.id);
        let mut plan = Some(plan);
        loop {
            let held = match line.take() {
                Some(l) => Some(l._send),
                None if alone => Some(entry.slot.send.clone().lock_owned().await),
                None => entry.slot.send.clone().try_lock_owned().ok(),
            };
            let copy = Mine { mine, reread };
            match self.place(entry, held, alone, manager, copy, ip, &mut plan)? {
                Ok(joined) => return Ok(joined),
                // The open batch is another address's: wait for the line.
                Err(back) => {
                    entry = back;
                    alone = true;
                }
            }
        }
    }

    /// A write this writer sends itself, planned on `mine` (or the newer base this
    /// process knows), only when no other write of the session is being sent, waiting or
    /// becoming durable here; `None` otherwise, or when the plan fails or changes
    /// nothing.
    pub fn try_direct<R, E>(
        &self,
        manager: &Arc<Manager>,
        mine: &Record,
        ip: Option<IpAddr>,
        plan: impl FnOnce(&Data) -> Result<Planned<R>, E>,
    ) -> Option<(R, Direct)> {
        let entry = self.entry(mine.id);
        let send = entry.slot.send.clone().try_lock_owned().ok()?;
        {
            let st = entry.state();
            if st.open.is_some() || st.tip.is_some() {
                return None;
            }
        }
        let copy = Mine {
            mine,
            reread: false,
        };
        match self.place(entry, Some(send), true, manager, copy, ip, &mut Some(plan)) {
            Ok(Ok(Joined::Direct(out, direct))) => Some((out, direct)),
            _ => None,
        }
    }

    /// [`SessionLocks::join`] once the send lock is held (`held`) or known busy; `Err`
    /// gives the entry back when this writer must wait for the lock instead.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn place<R, E>(
        &self,
        entry: Entry,
        held: Option<OwnedMutexGuard<()>>,
        alone: bool,
        manager: &Arc<Manager>,
        copy: Mine<'_>,
        ip: Option<IpAddr>,
        plan: &mut Option<impl FnOnce(&Data) -> Result<Planned<R>, E>>,
    ) -> Result<Result<Joined<R>, Entry>, E> {
        let mine = copy.mine;
        let mut st = entry.state();
        // An open batch waits for the write in flight: join it, whoever holds the lock
        // (unless waiting for the lock to write alone).
        let held = match held {
            // A write let go once ordered is still becoming durable: build on it, in a
            // batch (whose sender checks the store holds what it planned).
            Some(h) if !alone && (st.open.is_some() || st.tip.is_some()) => {
                drop(h);
                None
            }
            other => other,
        };
        if held.is_none() {
            if let Some(open) = st.open.as_mut() {
                if open.ip != ip {
                    drop(st);
                    return Ok(Err(entry));
                }
                let Some(plan) = plan.take() else {
                    unreachable!("a plan runs once: `place` answers after running it")
                };
                let (out, p, exact) = plan(&open.data)?;
                // Even a plan that changes nothing saw the batch's data: it stands only
                // once the batch is written.
                if !p.is_empty() {
                    patch::apply(&mut open.data, &p);
                    open.members.push((p, exact));
                }
                let rx = open.batch.outcome.subscribe();
                drop(st);
                return Ok(Ok(Joined::Member(out, Member { _entry: entry, rx })));
            }
        }
        // Planned on the write in flight, or on the base.
        let (start, data) = match (&held, &st.tip) {
            (None, Some(tip)) => (
                Start::After(tip.batch.clone(), tip.data.clone()),
                (*tip.data).clone(),
            ),
            _ => {
                let read_first = match &st.base {
                    Base::Stale => true,
                    // Confirmed by this line after the writer's copy was taken.
                    Base::Known(b) if b.version > mine.version => false,
                    // The copy was refused as old: neither it nor a base that is not
                    // newer (a slot made anew while the writer waited) will do.
                    _ if copy.reread => true,
                    Base::Known(b) if b.version == mine.version => false,
                    _ => {
                        st.base = Base::Known(mine.clone());
                        false
                    }
                };
                if read_first {
                    drop(st);
                    let line = held.map(|send| SessionLock {
                        entry: self.entry(mine.id),
                        _send: send,
                    });
                    return Ok(Ok(Joined::ReadFirst(line)));
                }
                let Base::Known(b) = &st.base else {
                    unreachable!("set just above")
                };
                (Start::Base(b.version), b.data.to_map())
            }
        };
        let Some(plan) = plan.take() else {
            unreachable!("a plan runs once: `place` answers after running it")
        };
        let (out, p, exact) = plan(&data)?;
        if p.is_empty() {
            // Planned on the write in flight: it stands once that write is durable.
            if let Start::After(prev, _) = &start {
                let rx = prev.outcome.subscribe();
                drop(st);
                return Ok(Ok(Joined::Member(out, Member { _entry: entry, rx })));
            }
            let s = newest(&st.base, mine);
            drop(st);
            return Ok(Ok(Joined::Nothing(out, s)));
        }
        let mut after = data;
        patch::apply(&mut after, &p);
        let batch = Batch::new();
        match (held, start, &st.base) {
            (Some(send), Start::Base(_), Base::Known(base)) => {
                let base = base.clone();
                st.tip = Some(Tip {
                    batch: batch.clone(),
                    data: Arc::new(after),
                });
                drop(st);
                Ok(Ok(Joined::Direct(
                    out,
                    Direct {
                        entry,
                        send: Some(send),
                        batch,
                        base,
                        patch: p,
                        exact,
                        published: false,
                    },
                )))
            }
            (_, start, _) => {
                let rx = batch.outcome.subscribe();
                st.open = Some(Open {
                    batch: batch.clone(),
                    start,
                    data: after,
                    members: vec![(p, exact)],
                    ip,
                });
                drop(st);
                let sender = self.entry(mine.id);
                tokio::spawn(send_batch(sender, batch, manager.clone()));
                Ok(Ok(Joined::Member(out, Member { _entry: entry, rx })))
            }
        }
    }

    /// Gives the store's state of a session, read after [`Joined::ReadFirst`].
    pub fn offer(&self, s: &Record) {
        let entry = self.entry(s.id);
        let mut st = entry.state();
        match &st.base {
            Base::Known(b) if b.version >= s.version => {}
            _ => st.base = Base::Known(s.clone()),
        }
    }

    /// Waits for session `id`'s send lock (no write of it being sent here; one let go
    /// once ordered may still be becoming durable, and this change is ordered after
    /// it), for a change that is not a storage write (privileges, heartbeat).
    pub async fn lock(&self, id: SessionId) -> SessionLock {
        let entry = self.entry(id);
        let send = entry.slot.send.clone().lock_owned().await;
        SessionLock { entry, _send: send }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A writer's copy of the session, and whether a write planned on it was refused.
#[derive(Clone, Copy)]
struct Mine<'a> {
    mine: &'a Record,
    reread: bool,
}

/// The newer of the known base and a writer's own copy.
fn newest(base: &Base, mine: &Record) -> Record {
    match base {
        Base::Known(b) if b.version > mine.version && b.id == mine.id => b.clone(),
        _ => mine.clone(),
    }
}

/// Sends a batch once the write before it is let go, if what it was planned on is what
/// the store holds; tells its members how it ended.
async fn send_batch(entry: Entry, batch: Arc<Batch>, manager: Arc<Manager>) {
    let send = entry.slot.send.clone().lock_owned().await;
    let taken = {
        let mut st = entry.state();
        match st.open.take() {
            Some(mut open) if Arc::ptr_eq(&open.batch, &batch) => {
                // The planned data moves to the tip (no copy); the diff reads it there.
                let data = Arc::new(std::mem::take(&mut open.data));
                st.tip = Some(Tip {
                    batch: batch.clone(),
                    data: data.clone(),
                });
                let known = match &st.base {
                    Base::Known(k) => Some(k.clone()),
                    _ => None,
                };
                Some((open, data, known))
            }
            other => {
                st.open = other;
                None
            }
        }
    };
    let Some((mut open, data, known)) = taken else {
        batch.publish(Outcome::Replan);
        return;
    };
    let base = match (&open.start, known) {
        (Start::Base(v), Some(k)) if k.version == *v => Some(k),
        (Start::After(prev, planned), known) => {
            let before = prev.outcome.borrow().clone();
            match before {
                // Written: conditionally on what it was planned on, or (a blind write)
                // leaving exactly the planned data.
                Some(Progress::Done(Outcome::Written { record, planned: p }))
                    if known.is_some_and(|k| k.version == record.version)
                        && (p || record.data.to_map() == **planned) =>
                {
                    Some(record)
                }
                // Ordered, not yet durable: build on it if the store holds what it
                // planned (a read of the store's memory).
                Some(Progress::Ordered) => match manager.get(entry.id).await {
                    Ok(s) if s.is_open() && s.data.to_map() == **planned => Some(s),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    };
    let Some(base) = base else {
        let o = Outcome::Replan;
        entry.settle(&batch, &o);
        batch.publish(o);
        return;
    };
    let (patch, exact) = if open.members.len() == 1 {
        open.members.pop().unwrap_or_default()
    } else {
        (patch::diff_maps(&base.data.to_map(), &data), true)
    };
    if patch.is_empty() {
        // Nothing to write: the batch stands or falls with the write it was planned on,
        // which may still be becoming durable.
        let stands = match &open.start {
            Start::After(prev, _) => wait_done(prev).await.is_some_and(|o| o.is_written()),
            Start::Base(_) => true,
        };
        let o = if stands {
            Outcome::Written {
                record: base,
                planned: true,
            }
        } else {
            Outcome::Replan
        };
        entry.settle(&batch, &o);
        batch.publish(o);
        return;
    }
    let _ = send_write(
        &entry,
        &batch,
        Some(send),
        &manager,
        Lookup::Id(base.id),
        patch,
        exact.then_some(base.version),
        open.ip,
    )
    .await;
}

/// Sends one write, holding the session's send lock (`send`): the lock goes as soon as
/// the store has put the write in its order (the file store: in memory, before its
/// sync), so the session's next write is made while this one becomes durable, and
/// builds on it (a write the store cannot keep takes those after it down with it). The
/// answer waits for durability; every write built on this one learns how it ended.
#[allow(clippy::too_many_arguments)]
async fn send_write(
    entry: &Entry,
    batch: &Arc<Batch>,
    mut send: Option<OwnedMutexGuard<()>>,
    manager: &Manager,
    lookup: Lookup,
    patch: Data,
    expect: Option<u64>,
    ip: Option<IpAddr>,
) -> Result<Record, Error> {
    let result = match manager
        .update_data_ordered(lookup, Value::Object(patch), expect, ip)
        .await
    {
        Ok(applied) => {
            if !applied.is_done() {
                batch.outcome.send_replace(Some(Progress::Ordered));
                send.take();
            }
            applied.finish().await
        }
        Err(e) => Err(e),
    };
    let o = outcome_of(&result, expect.is_some());
    entry.settle(batch, &o);
    batch.publish(o);
    result
}

/// The send lock of a session, held by a change that is not a storage write.
pub(crate) struct SessionLock {
    entry: Entry,
    _send: OwnedMutexGuard<()>,
}

impl SessionLock {
    /// Records the session as just written.
    pub fn remember(&mut self, s: &Record) {
        self.entry.state().base = Base::Known(s.clone());
    }
}

/// What a batch member answers when the store's outcome is unknown.
pub(crate) fn unknown(why: &str) -> Error {
    Error::Store(StoreError::OutcomeUnknown(format!(
        "a combined write of this session was not confirmed: {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_live_only_while_wanted() {
        let locks = SessionLocks::default();
        let id = SessionId::new();
        {
            let _a = locks.lock(id).await;
            assert_eq!(locks.len(), 1);
        }
        assert_eq!(locks.len(), 0);
    }

    /// Entries dropped on two threads at once are forgotten all the same: many rounds of
    /// writers finishing together leave no entry behind (a leaked entry would keep its
    /// session's data for good).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_dropped_at_once_are_all_forgotten() {
        let locks = Arc::new(SessionLocks::default());
        for _ in 0..300 {
            let id = SessionId::new();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let locks = locks.clone();
                    tokio::spawn(async move {
                        drop(locks.lock(id).await);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        assert_eq!(locks.len(), 0);
    }

    /// A writer whose write was refused as old does not plan on its old copy again
    /// when the line's state of the session went with its last writer meanwhile (a
    /// slot made anew knows nothing): it reads the store first, holding the line, so
    /// nothing of this process can write between that read and its write. Planning on
    /// the old copy again is what left one lone writer refused 62 times in a row.
    #[tokio::test]
    async fn a_refused_writer_reads_again_in_line() {
        let manager = Arc::new(Manager::new(Arc::new(sessiond_core::MemoryStore::new())));
        manager
            .set_policy("app", sessiond_core::Policy::default())
            .unwrap();
        let opened = manager
            .open("app", sessiond_core::OpenRequest::default())
            .await
            .unwrap();
        let old = opened.session;
        let newer = manager
            .update_data(Lookup::Id(old.id), serde_json::json!({"n": 1}), None, None)
            .await
            .unwrap();
        let locks = SessionLocks::default();
        let plan = |d: &Data| -> Result<Planned<()>, ()> {
            let n = d.get("n").and_then(Value::as_u64).unwrap_or(0);
            let mut p = Data::new();
            p.insert("n".into(), (n + 1).into());
            Ok(((), p, true))
        };

        // After a refusal: the store is read first, in line.
        let joined = locks
            .join(&manager, &old, None, true, true, None, plan)
            .await
            .unwrap();
        let Joined::ReadFirst(Some(line)) = joined else {
            panic!("a refused writer planned on its old copy");
        };
        let read = manager.get(old.id).await.unwrap();
        assert_eq!(read.version, newer.version);
        locks.offer(&read);
        let joined = locks
            .join(&manager, &read, None, true, false, Some(line), plan)
            .await
            .unwrap();
        let Joined::Direct((), direct) = joined else {
            panic!("the line held after the read must be this writer's");
        };
        assert_eq!(direct.base.version, newer.version);
        let lookup = Lookup::Id(direct.base.id);
        let written = direct
            .send(&manager, lookup, Some(newer.version), None)
            .await
            .unwrap();
        assert_eq!(written.data.to_map().get("n"), Some(&Value::from(2)));
        drop(locks);

        // A first attempt still plans on the copy it has (one store round trip saved).
        let locks = SessionLocks::default();
        let joined = locks
            .join(&manager, &read, None, true, false, None, plan)
            .await
            .unwrap();
        let Joined::Direct((), direct) = joined else {
            panic!("a first attempt on a fresh line writes directly");
        };
        assert_eq!(direct.base.version, read.version);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time() {
        let locks = Arc::new(SessionLocks::default());
        let id = SessionId::new();
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(id).await;
                assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(locks.len(), 0);
    }
}
