//! [`ReadCache`]: a node's copies of sessions it read, by token hash, for a networked
//! store to answer reads from memory while it can prove them current.
//!
//! The store decides what keeps a copy current (PostgreSQL: its nodes' `NOTIFY` after
//! each change; Redis: the server's key-invalidation messages) and tells the cache:
//! [`ReadCache::listening`] when its channel is up or lost, [`ReadCache::forget`] (or
//! [`ReadCache::forget_token`], [`ReadCache::forget_all`]) when a session changed. The
//! cache answers ([`ReadCache::get`]) only when all of these hold:
//!
//! - the copy is younger than the maximum age, counted from when the read that made it
//!   began: this bounds how stale an answer can be whatever else fails (a message
//!   lost, a node writing without announcing, a half-open channel not yet noticed);
//! - the channel is up: when it is lost the cache empties at once and keeps nothing
//!   until it is up again (messages sent meanwhile are lost);
//! - no change of that session (and no emptying) was reported between the start of
//!   that read and the keeping of its copy: reports are numbered, the cache remembers
//!   the number of each session's last one, and checks it under the lock every report
//!   takes, so a read that raced a change of its session is not kept, while reports of
//!   other sessions (a busy store's many writes) do not stop it.
//!
//! The store answers from a copy only when the change asked for writes nothing
//! ([`crate::Step::Unchanged`]); anything else goes to the store. Memory is bounded:
//! at most 100 000 copies and 64 MiB in all, none over 16 KiB (counting the
//! variable parts of a session and a fixed share for the rest).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::id::{SessionId, TokenHash};
use crate::session::{Change, Conditions, Session, Step};
use crate::store::{CloseOutcome, Expired, Lookup, ModifyOutcome, OpenOutcome, StoreError};
use crate::time::Timestamp;

/// Most sessions a node keeps; past it the cache starts over (a bound on memory).
const MAX_ENTRIES: usize = 100_000;

/// Most bytes of storage and info a node keeps, all copies together; past it the cache
/// starts over. A copy is useful for its maximum age only, so this holds the sessions
/// read within it on a busy node, and bounds what crafted big sessions can take.
const MAX_BYTES: usize = 64 << 20;

/// Sessions whose reports a cache remembers, for telling which reads raced them.
const MAX_FORGOTTEN: usize = 1 << 16;

/// Sessions weighing more than this ([`weight`]) are not kept (read from the store).
const MAX_SESSION_BYTES: usize = 16 << 10;

/// Sessions read by this node, by token hash (see the module docs).
pub struct ReadCache {
    max_age: Duration,
    /// Whether the listening connection is up (entries are kept and used only then).
    live: AtomicBool,
    /// Counts the reports of changes and the emptyings: each gets the next value, and a
    /// read remembers the value as it begins ([`Seen`]).
    generation: AtomicU64,
    /// Reads answered from memory, for the metrics.
    hits: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_token: HashMap<TokenHash, (Session, Instant)>,
    token_of: HashMap<SessionId, TokenHash>,
    /// What the copies weigh ([`weight`]), all together.
    bytes: usize,
    /// The generation at which each session was last reported changed (recent ones):
    /// a read of it that began before is not kept. Reports of other sessions do not
    /// stop it.
    forgotten: HashMap<SessionId, u64>,
    /// No read that began before this generation is kept (the last emptying, or the
    /// last time `forgotten` grew too long and was cleared).
    floor: u64,
}

impl Entries {
    /// Forgets every copy (what was forgotten stays known).
    fn clear_copies(&mut self) {
        self.by_token.clear();
        self.token_of.clear();
        self.bytes = 0;
    }

    /// Records that `id` changed at generation `g`.
    fn changed(&mut self, id: SessionId, g: u64) {
        if self.forgotten.len() >= MAX_FORGOTTEN {
            // Too many to tell apart: no read begun before now is kept.
            self.forgotten.clear();
            self.floor = g;
        }
        self.forgotten.insert(id, g);
    }
}

/// What a read from the store saw of the cache when it began ([`ReadCache::begin`]).
#[derive(Clone, Copy)]
pub struct Seen {
    generation: u64,
    /// The copy's age counts from here: the store answered after it.
    at: Instant,
}

/// What a copy weighs for the memory bounds: its variable parts (storage, info, user,
/// privileges, client label and user agent) and a fixed share for the rest.
fn weight(s: &Session) -> usize {
    const FIXED: usize = 256;
    FIXED
        + s.data.as_str().len()
        + s.info.as_str().len()
        + s.user.as_deref().map_or(0, str::len)
        + s.privileges.iter().map(str::len).sum::<usize>()
        + s.client.label.as_deref().map_or(0, str::len)
        + s.client.user_agent.as_deref().map_or(0, str::len)
}

impl ReadCache {
    /// A cache whose copies live at most `max_age`, off until [`ReadCache::listening`].
    pub fn new(max_age: Duration) -> ReadCache {
        ReadCache {
            max_age,
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The copy of the session of token hash `token`, if one is kept and fresh.
    pub fn get(&self, token: TokenHash) -> Option<Session> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries();
        let (s, at) = entries.by_token.get(&token)?;
        (at.elapsed() < self.max_age).then(|| s.clone())
    }

    /// Call before reading from the store: what [`ReadCache::keep`] checks.
    pub fn begin(&self) -> Seen {
        Seen {
            generation: self.generation.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// Keeps `s`, read from the store after [`ReadCache::begin`] gave `seen`, unless a
    /// notice or an emptying came since (the read may have raced a change).
    pub fn keep(&self, seen: Seen, s: &Session) {
        let w = weight(s);
        if !self.live.load(Ordering::Acquire) || !s.is_open() || w > MAX_SESSION_BYTES {
            return;
        }
        let mut entries = self.entries();
        // Checked under the lock every report takes: none can slip in between.
        let raced = seen.generation < entries.floor
            || entries
                .forgotten
                .get(&s.id)
                .is_some_and(|g| *g > seen.generation);
        if raced {
            return;
        }
        if entries.by_token.len() >= MAX_ENTRIES || entries.bytes + w > MAX_BYTES {
            entries.clear_copies();
        }
        if let Some(old) = entries.token_of.insert(s.id, s.token_hash) {
            if let Some((gone, _)) = entries.by_token.remove(&old) {
                entries.bytes -= weight(&gone);
            }
        }
        entries.bytes += w;
        if let Some((gone, _)) = entries.by_token.insert(s.token_hash, (s.clone(), seen.at)) {
            // Another session under the same token hash (never, short of a collision).
            entries.token_of.remove(&gone.id);
            entries.token_of.insert(s.id, s.token_hash);
            entries.bytes -= weight(&gone);
        }
    }

    /// Forgets the sessions `ids` (changed here or on another node).
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        let mut entries = self.entries();
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        for id in ids {
            entries.changed(*id, g);
            if let Some(token) = entries.token_of.remove(id) {
                if let Some((gone, _)) = entries.by_token.remove(&token) {
                    entries.bytes -= weight(&gone);
                }
            }
        }
    }

    /// Forgets the session of token hash `token` (the store refused or did not find
    /// what this node's copy said).
    pub fn forget_token(&self, token: TokenHash) {
        let mut entries = self.entries();
        if let Some((gone, _)) = entries.by_token.remove(&token) {
            let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            entries.changed(gone.id, g);
            entries.token_of.remove(&gone.id);
            entries.bytes -= weight(&gone);
        }
    }

    /// Forgets every copy; no read begun before is kept. Whether copies are kept from
    /// now on is the channel's business ([`ReadCache::listening`]), not changed here.
    pub fn forget_all(&self) {
        let mut entries = self.entries();
        self.empty_locked(&mut entries);
    }

    fn empty_locked(&self, entries: &mut Entries) {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        entries.clear_copies();
        entries.forgotten.clear();
        entries.floor = g;
    }

    /// The channel that keeps copies current is up (`true`: copies may be kept from now
    /// on) or lost (`false`: none is kept or used until it is up again). Either way
    /// every copy is forgotten: messages may have been missed.
    pub fn listening(&self, up: bool) {
        self.empty(up);
    }

    /// Forgets everything; `live` says whether entries may be kept from now on.
    fn empty(&self, live: bool) {
        let mut entries = self.entries();
        self.empty_locked(&mut entries);
        self.live.store(live, Ordering::Release);
    }

    /// Counts a read answered from memory.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads answered from memory so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Whether the listening connection is up (copies are kept and used).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().by_token.len()
    }
}

/// What an operation's result means for the copies ([`ReadCache::after`]), and for
/// the other nodes when the store announces changes itself.
#[derive(Debug)]
pub enum Effect<'a> {
    /// A read that changed nothing: its copy may be kept.
    Read(&'a Session),
    /// These sessions changed.
    Changed(Vec<SessionId>),
    /// The store contradicted what a copy of this session may say (a refusal, not
    /// found): this node's copy goes.
    Contradicted(Lookup),
    /// Sessions changed that no list of ids can name (a write whose answer was lost,
    /// a sweep cut short): every copy goes.
    Unknown,
    /// Nothing changed.
    Nothing,
}

/// A failure is [`Effect::Unknown`] when the write may have been applied.
fn of_failure(e: &StoreError) -> Effect<'static> {
    match e {
        StoreError::OutcomeUnknown(_) => Effect::Unknown,
        _ => Effect::Nothing,
    }
}

impl<'a> Effect<'a> {
    /// Of [`crate::Store::modify`] on the session `lookup` names.
    pub fn of_modify(lookup: Lookup, out: &'a Result<ModifyOutcome, StoreError>) -> Effect<'a> {
        match out {
            Ok(ModifyOutcome::Done {
                session,
                step: Step::Unchanged,
                ..
            }) => Effect::Read(session),
            Ok(ModifyOutcome::Done {
                session, displaced, ..
            }) => Effect::Changed(
                std::iter::once(session.id)
                    .chain(displaced.iter().map(|s| s.id))
                    .collect(),
            ),
            Ok(ModifyOutcome::Refused(_) | ModifyOutcome::NotFound) => Effect::Contradicted(lookup),
            Err(e) => of_failure(e),
        }
    }

    /// Of [`crate::Store::open`]: the sessions it displaced changed.
    pub fn of_open(out: &Result<OpenOutcome, StoreError>) -> Effect<'a> {
        match out {
            Ok(OpenOutcome::Opened { displaced, .. }) => {
                Effect::Changed(displaced.iter().map(|s| s.id).collect())
            }
            Ok(OpenOutcome::Refused(_)) => Effect::Nothing,
            Err(e) => of_failure(e),
        }
    }

    /// Of [`crate::Store::close`] of `id` (already closed counts as a change: maybe by
    /// this very close, whose answer was lost).
    pub fn of_close(id: SessionId, out: &Result<CloseOutcome, StoreError>) -> Effect<'a> {
        match out {
            Ok(CloseOutcome::NotFound) => Effect::Contradicted(Lookup::Id(id)),
            Ok(_) | Err(StoreError::OutcomeUnknown(_)) => Effect::Changed(vec![id]),
            Err(_) => Effect::Nothing,
        }
    }

    /// Of [`crate::Store::close_all`].
    pub fn of_close_all(out: &Result<Vec<Session>, StoreError>) -> Effect<'a> {
        match out {
            Ok(closed) => Effect::Changed(closed.iter().map(|s| s.id).collect()),
            Err(e) => of_failure(e),
        }
    }

    /// Of [`crate::Store::expire_due`]: a sweep that failed may have closed sessions
    /// in the batches before its failure. (Purged sessions were closed, and reported,
    /// before.)
    pub fn of_expiry(out: &Result<Expired, StoreError>) -> Effect<'a> {
        match out {
            Ok(expired) => Effect::Changed(expired.closed.iter().map(|s| s.id).collect()),
            Err(_) => Effect::Unknown,
        }
    }
}

impl ReadCache {
    /// The answer to [`crate::Store::modify`] from this node's copy, when there is one
    /// and the change writes nothing on it (a read, or a touch not yet due, of a
    /// session found by token); `None` sends the operation to the store. The step runs
    /// on the copy as the store would run it: another app, a closed or expired
    /// session, a wrong address or version all go to the store.
    pub fn answer(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> Option<ModifyOutcome> {
        let (Lookup::Token(token), Change::Read | Change::Touch) = (lookup, change) else {
            return None;
        };
        let mut s = self.get(token)?;
        match s.step(change, cond, now) {
            Ok(Step::Unchanged) => {
                self.hit();
                Some(ModifyOutcome::Done {
                    session: s,
                    step: Step::Unchanged,
                    displaced: Vec::new(),
                })
            }
            _ => None,
        }
    }

    /// Applies what an operation did to this node's copies; `seen` is what
    /// [`ReadCache::begin`] gave before it (a read's copy is kept only then).
    pub fn after(&self, seen: Option<Seen>, effect: &Effect<'_>) {
        match effect {
            Effect::Read(s) => {
                if let Some(seen) = seen {
                    self.keep(seen, s);
                }
            }
            Effect::Changed(ids) => self.forget(ids),
            Effect::Contradicted(Lookup::Token(token)) => self.forget_token(*token),
            Effect::Contradicted(Lookup::Id(id)) => self.forget([id]),
            Effect::Unknown => self.forget_all(),
            Effect::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        use crate::{Client, JsonObject, Privileges, Timestamp};
        use std::sync::Arc;
        Session {
            id: SessionId::new(),
            token_hash: TokenHash(u128::from(rand_id())),
            app: Arc::from("shop"),
            user: None,
            privileges: Privileges::default(),
            info: JsonObject::empty(),
            data: JsonObject::empty(),
            client: Client::default(),
            created_at: Timestamp(1_700_000_000_000),
            last_activity_at: Timestamp(1_700_000_000_000),
            last_heartbeat_at: Timestamp(1_700_000_000_000),
            idle_timeout_s: 1800,
            lifetime_s: 86_400,
            heartbeat: None,
            retention_s: 0,
            counts_seat: false,
            bind_ip: false,
            closed: None,
            version: 1,
        }
    }

    fn rand_id() -> u64 {
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn nothing_is_kept_or_answered_while_not_listening() {
        let cache = ReadCache::new(Duration::from_secs(1));
        let s = session();
        cache.keep(cache.begin(), &s);
        assert_eq!(cache.len(), 0);
        cache.listening(true);
        cache.keep(cache.begin(), &s);
        assert_eq!(cache.get(s.token_hash).map(|c| c.id), Some(s.id));
        // The connection is lost: everything goes at once.
        cache.listening(false);
        assert!(cache.get(s.token_hash).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_read_that_raced_a_report_of_its_session_is_not_kept() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.listening(true);
        let s = session();
        let seen = cache.begin();
        // The session is reported changed while the read is under way.
        cache.forget(&[s.id]);
        cache.keep(seen, &s);
        assert!(cache.get(s.token_hash).is_none());
        // So is every session, when every copy is forgotten.
        let seen = cache.begin();
        cache.forget_all();
        cache.keep(seen, &s);
        assert!(cache.get(s.token_hash).is_none());
    }

    /// Reports of other sessions do not stop a read from being kept (under write load
    /// the cache would never fill), even when there are too many to remember each.
    #[test]
    fn reports_of_other_sessions_do_not_stop_a_read() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.listening(true);
        let s = session();
        let seen = cache.begin();
        cache.forget(&[SessionId::new(), SessionId::new()]);
        cache.keep(seen, &s);
        assert!(cache.get(s.token_hash).is_some());
        // Past what it can remember, it refuses the reads begun before: safe, not lost.
        let seen = cache.begin();
        let others: Vec<SessionId> = (0..=MAX_FORGOTTEN).map(|_| SessionId::new()).collect();
        cache.forget(&others);
        let t = session();
        cache.keep(seen, &t);
        assert!(cache.get(t.token_hash).is_none());
        cache.keep(cache.begin(), &t);
        assert!(cache.get(t.token_hash).is_some());
    }

    /// Forgetting every copy (an unknown outcome) neither turns the cache on while its
    /// channel is down nor off while it is up: that is the channel's to say.
    #[test]
    fn forgetting_all_leaves_the_channel_state_alone() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.forget_all();
        assert!(!cache.is_live());
        cache.listening(true);
        cache.forget_all();
        assert!(cache.is_live());
    }

    #[test]
    fn a_notice_forgets_the_session_whatever_its_token() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.listening(true);
        let s = session();
        cache.keep(cache.begin(), &s);
        cache.forget(&[s.id]);
        assert!(cache.get(s.token_hash).is_none());
        assert_eq!(cache.len(), 0);
    }

    /// A copy's age counts from when its read began, not from when it was kept: a
    /// slow read does not stretch the bound.
    #[test]
    fn copies_age_out_from_the_start_of_their_read() {
        let cache = ReadCache::new(Duration::from_millis(40));
        cache.listening(true);
        let s = session();
        cache.keep(cache.begin(), &s);
        assert!(cache.get(s.token_hash).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(cache.get(s.token_hash).is_none());
        let slow = cache.begin();
        std::thread::sleep(Duration::from_millis(50));
        cache.keep(slow, &s);
        assert!(cache.get(s.token_hash).is_none());
    }

    /// Big sessions are not kept, and the copies together stay under the byte budget.
    #[test]
    fn memory_stays_bounded() {
        use crate::JsonObject;
        let cache = ReadCache::new(Duration::from_secs(60));
        cache.listening(true);
        let mut big = session();
        let x = "y".repeat(MAX_SESSION_BYTES);
        big.data = JsonObject::from_value(&serde_json::json!({ "x": x })).unwrap();
        cache.keep(cache.begin(), &big);
        assert_eq!(cache.len(), 0);
        let pad = "y".repeat(MAX_SESSION_BYTES - 1000);
        for _ in 0..(2 * MAX_BYTES / MAX_SESSION_BYTES) {
            let mut s = session();
            s.data = JsonObject::from_value(&serde_json::json!({ "x": pad })).unwrap();
            cache.keep(cache.begin(), &s);
            assert!(cache.entries().bytes <= MAX_BYTES);
        }
        assert!(cache.len() > 0);
    }

    /// Forgetting by token (the store contradicted the copy) leaves nothing of it.
    #[test]
    fn a_copy_the_store_contradicted_is_forgotten() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.listening(true);
        let s = session();
        cache.keep(cache.begin(), &s);
        cache.forget_token(s.token_hash);
        assert!(cache.get(s.token_hash).is_none());
        assert_eq!(cache.entries().bytes, 0);
        assert!(cache.entries().token_of.is_empty());
    }
}
