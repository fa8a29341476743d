//! [`MemoryStore`]: sessions in this process's memory, sharded so that resolving and
//! touching sessions never takes a global lock.
//!
//! Layout:
//! - records live in 64 shards by session id, each with its own deadline index
//!   (`(deadline, id)` ordered), so expiry reads only what is due;
//! - a token index (hash → id), sharded the same way by token hash;
//! - one index per app (open and closed ids in id order, seats taken, sessions per user),
//!   behind a mutex that serialises admission, close-all and listing within that app.
//!
//! Lock order is always app → record shard → token shard, so no two operations can wait
//! on each other. Reads and touches take only a record shard (and a token shard).
//!
//! Every change is reported to an optional [`Journal`] while the record's shard lock is
//! held, so a journal sees each session's changes in the order they happened. The
//! embedded durable store is this store plus a journal on disk: it calls the
//! `*_journaled` methods, which are synchronous and return, beside their outcome, the
//! [`Appended`] journal position the operation's records reached: what must be durable
//! before the operation may be acknowledged. The type says it, so no caller can lose
//! track of it (`#[must_use]`), whatever thread or task runs the operation.

mod hasher;
mod record;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use crate::admission::{plan, Admission, Close, Gathered, Plan, Seen, Wants};
use crate::hooks::{
    resent, Deliveries, Delivery, DeliveryQuery, HookId, HookRoutes, Outbox, OutboxCounts, Settle,
};
use crate::id::{SessionId, TokenHash};
use crate::session::{Actor, Change, ChangeError, CloseReason, Conditions, Session, Step};
use crate::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, Lookup, ModifyOutcome, OpenOutcome, StatusFilter,
    Store, StoreResult,
};
use crate::time::Timestamp;
use hasher::BuildIdHasher;
use record::Records;

const SHARDS: usize = 64;

/// Receives every change of a [`MemoryStore`], in order per session.
pub trait Journal: Send + Sync + 'static {
    /// `session` now has this state (a new or changed session). Returns the record's
    /// position in the journal (increasing from 1).
    fn put(&self, session: &Session) -> u64;
    /// The session `id` is gone (purged after retention). Returns the record's position.
    fn remove(&self, id: SessionId) -> u64;
    /// `session` now has this state, and its change owes these webhook deliveries: both
    /// kept as one (a crash keeps both or neither). Returns the last record's position.
    fn put_hooked(&self, session: &Session, deliveries: &[Delivery]) -> u64;
    /// A delivery's new state (kept, retried, dead, resent). Returns its position.
    fn hook(&self, delivery: &Delivery) -> u64;
    /// A delivery is done. Returns the record's position.
    fn unhook(&self, id: HookId) -> u64;
}

/// The journal position the records of one operation reached (0: it journaled
/// nothing). A durable store acknowledges the operation once the journal is durable up
/// to here.
#[must_use = "an operation is acknowledged only once what it appended is durable"]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Appended(pub u64);

impl Appended {
    fn add(&mut self, position: u64) {
        self.0 = self.0.max(position);
    }
}

/// An operation's outcome and what it appended to the journal.
#[must_use = "an operation is acknowledged only once what it appended is durable"]
#[derive(Debug)]
pub struct Journaled<T> {
    /// The outcome.
    pub value: T,
    /// How far its records reached in the journal.
    pub appended: Appended,
}

#[derive(Default)]
struct Shard {
    sessions: Records,
    deadlines: BTreeSet<(Timestamp, SessionId)>,
}

#[derive(Default)]
struct AppIndex {
    open: BTreeSet<SessionId>,
    closed: BTreeSet<SessionId>,
    seats_used: u64,
    by_user: HashMap<Box<str>, Vec<SessionId>>,
}

impl AppIndex {
    fn add_open(&mut self, s: &Session) {
        self.open.insert(s.id);
        self.seats_used += u64::from(s.counts_seat);
        if let Some(u) = &s.user {
            self.by_user.entry(u.clone()).or_default().push(s.id);
        }
    }

    fn remove_user(&mut self, user: &Option<Box<str>>, id: SessionId) {
        if let Some(u) = user {
            if let Some(v) = self.by_user.get_mut(u) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
    }

    /// `before` was open and `after` is its new state (closed, or re-privileged).
    fn update(&mut self, before: &Session, after: &Session) {
        self.seats_used -= u64::from(before.is_open() && before.counts_seat);
        self.remove_user(&before.user, before.id);
        if after.is_open() {
            self.seats_used += u64::from(after.counts_seat);
            if let Some(u) = &after.user {
                self.by_user.entry(u.clone()).or_default().push(after.id);
            }
        } else {
            self.open.remove(&after.id);
            self.closed.insert(after.id);
        }
    }
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    tokens: Box<[RwLock<HashMap<TokenHash, SessionId, BuildIdHasher>>]>,
    apps: RwLock<HashMap<Arc<str>, Arc<Mutex<AppIndex>>>>,
    journal: Option<Arc<dyn Journal>>,
    routes: HookRoutes,
    /// Taken with a record shard held, never the other way round.
    outbox: Mutex<Deliveries>,
}

/// Sessions in memory. Cheap to clone (clones share the sessions).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// An empty store reporting every change to `journal`.
    pub fn with_journal(journal: Arc<dyn Journal>) -> Self {
        Self::build(Some(journal))
    }

    /// This store, loaded and not shared yet, reporting every change to `journal` from
    /// now on (a durable store fills it from its files before its journal can be
    /// written). Gives the store back unchanged if a clone of it exists.
    pub fn journaled(self, journal: Arc<dyn Journal>) -> Result<Self, Self> {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.journal = Some(journal);
                Ok(MemoryStore {
                    inner: Arc::new(inner),
                })
            }
            Err(inner) => Err(MemoryStore { inner }),
        }
    }

    fn build(journal: Option<Arc<dyn Journal>>) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                tokens: (0..SHARDS).map(|_| RwLock::default()).collect(),
                apps: RwLock::default(),
                journal,
                routes: HookRoutes::default(),
                outbox: Mutex::default(),
            }),
        }
    }

    /// Loads sessions (a restart) without reporting them to the journal. A session seen
    /// twice keeps its last state.
    pub fn load(&self, sessions: impl IntoIterator<Item = Session>) {
        self.put_all(sessions, None);
    }

    /// Forgets session `id`, if held, without reporting it to the journal: a restart
    /// replaying a removal (or leaving out a record it cannot read).
    pub fn unload(&self, id: SessionId) {
        let Some(app) = read(self.shard(id)).sessions.app_of(&id) else {
            return;
        };
        let idx = self.app_index(&app);
        let mut idx = lock(&idx);
        let mut shard = write(self.shard(id));
        self.forget(&mut idx, &mut shard, id);
    }

    /// Forgets every session and loads `sessions` instead, without reporting them to the
    /// journal: a durable store going back to what its disk holds. The caller makes sure
    /// no operation runs meanwhile.
    ///
    /// Versions never go back: a session this store held at a version above its loaded
    /// state (changes that were seen, then undone) continues one above that version, so
    /// a version once seen never names other data (a client's `If-Match` on an undone
    /// state is refused). Returns those sessions, for the caller to make durable.
    #[must_use = "sessions whose version continued above undone changes must be made durable"]
    pub fn replace_all(&self, sessions: impl IntoIterator<Item = Session>) -> Vec<Session> {
        let mut continued = Vec::new();
        let sessions: Vec<Session> = sessions
            .into_iter()
            .map(|mut s| {
                let seen = read(self.shard(s.id)).sessions.version_of(&s.id);
                if let Some(v) = seen.filter(|v| *v > s.version) {
                    s.version = v + 1;
                    continued.push(s.clone());
                }
                s
            })
            .collect();
        write(&self.inner.apps).clear();
        for shard in self.inner.shards.iter() {
            *write(shard) = Shard::default();
        }
        for tokens in self.inner.tokens.iter() {
            write(tokens).clear();
        }
        self.load(sessions);
        continued
    }

    /// The routes this store derives webhook deliveries with.
    pub fn hook_routes(&self) -> &HookRoutes {
        &self.inner.routes
    }

    /// Loads a webhook delivery (a restart) without reporting it to the journal.
    pub fn load_hook(&self, d: Delivery) {
        lock(&self.inner.outbox).put(d);
    }

    /// Forgets a webhook delivery without reporting it to the journal (a restart reads
    /// it as done).
    pub fn unload_hook(&self, id: HookId) {
        lock(&self.inner.outbox).remove(id);
    }

    /// Replaces every webhook delivery without reporting it to the journal: a durable
    /// store going back to what its disk holds (with [`Self::replace_all`]).
    pub fn replace_hooks(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        let mut fresh = Deliveries::default();
        for d in deliveries {
            fresh.put(d);
        }
        *lock(&self.inner.outbox) = fresh;
    }

    /// Calls `f` with every webhook delivery (a snapshot), a copy taken at once.
    pub fn for_each_hook(&self, mut f: impl FnMut(&Delivery)) {
        let copy: Vec<Delivery> = lock(&self.inner.outbox).iter().cloned().collect();
        copy.iter().for_each(&mut f);
    }

    /// [`Outbox::push`], with what it appended to the journal.
    pub fn hooks_push_journaled(&self, deliveries: Vec<Delivery>) -> Journaled<()> {
        let mut rec = Appended::default();
        let mut out = lock(&self.inner.outbox);
        for d in deliveries {
            if let Some(j) = &self.inner.journal {
                rec.add(j.hook(&d));
            }
            out.put(d);
        }
        Journaled {
            value: (),
            appended: rec,
        }
    }

    /// [`Outbox::claim`]. A claim is not journaled: after a restart a delivery is due
    /// again as it was before the claim, which only sends it once more (the same
    /// event id).
    pub fn hooks_claim_now(&self, now: Timestamp, until: Timestamp, limit: usize) -> Vec<Delivery> {
        lock(&self.inner.outbox).claim(now, until, limit)
    }

    /// [`Outbox::settle`], with what it appended to the journal.
    pub fn hooks_settle_journaled(
        &self,
        id: HookId,
        claimed_until: Timestamp,
        outcome: &Settle,
    ) -> Journaled<()> {
        let mut rec = Appended::default();
        let mut out = lock(&self.inner.outbox);
        if let Some(d) = out.get(id) {
            match d.settled(claimed_until, outcome) {
                None => {
                    out.remove(id);
                    if let Some(j) = &self.inner.journal {
                        rec.add(j.unhook(id));
                    }
                }
                Some(next) if next != *d => {
                    if let Some(j) = &self.inner.journal {
                        rec.add(j.hook(&next));
                    }
                    out.put(next);
                }
                Some(_) => {}
            }
        }
        Journaled {
            value: (),
            appended: rec,
        }
    }

    /// [`Outbox::resend`], with what it appended to the journal.
    pub fn hooks_resend_journaled(&self, app: &str, id: HookId, now: Timestamp) -> Journaled<bool> {
        let mut rec = Appended::default();
        let mut out = lock(&self.inner.outbox);
        let found = match out.get(id).filter(|d| *d.app == *app) {
            None => false,
            Some(d) => {
                let d = resent(d, now);
                if let Some(j) = &self.inner.journal {
                    rec.add(j.hook(&d));
                }
                out.put(d);
                true
            }
        };
        Journaled {
            value: found,
            appended: rec,
        }
    }

    /// [`Outbox::forget_dead`], with what it appended to the journal.
    pub fn hooks_forget_dead_journaled(&self, before: Timestamp, limit: usize) -> Journaled<usize> {
        let mut rec = Appended::default();
        let mut out = lock(&self.inner.outbox);
        let gone = out.dead_before(before, limit);
        for id in &gone {
            out.remove(*id);
            if let Some(j) = &self.inner.journal {
                rec.add(j.unhook(*id));
            }
        }
        Journaled {
            value: gone.len(),
            appended: rec,
        }
    }

    /// [`Outbox::deliveries`], synchronous.
    pub fn hooks_list_now(&self, q: &DeliveryQuery) -> Vec<Delivery> {
        lock(&self.inner.outbox).list(q)
    }

    /// [`Outbox::tally`], synchronous.
    pub fn hooks_counts_now(&self) -> OutboxCounts {
        lock(&self.inner.outbox).counts()
    }

    /// Removes session `id` and its index entries, with its app index and shard locked
    /// by the caller.
    fn forget(&self, idx: &mut AppIndex, shard: &mut Shard, id: SessionId) {
        if let Some(old) = shard.sessions.remove(&id) {
            shard.deadlines.remove(&(old.deadline(), old.id));
            write(self.token_shard(old.token_hash)).remove(&old.token_hash);
            if idx.open.remove(&old.id) {
                idx.seats_used -= u64::from(old.counts_seat);
                idx.remove_user(&old.user, old.id);
            }
            idx.closed.remove(&old.id);
        }
    }

    fn put_all(&self, sessions: impl IntoIterator<Item = Session>, mut rec: Option<&mut Appended>) {
        for mut s in sessions {
            // A session moving to another app leaves its old app's indexes first (with
            // that app locked), so no app ever counts a session it no longer has.
            let moved_from = read(self.shard(s.id))
                .sessions
                .app_of(&s.id)
                .filter(|a| **a != *s.app);
            if let Some(old_app) = moved_from {
                let old_idx = self.app_index(&old_app);
                let mut idx = lock(&old_idx);
                let mut shard = write(self.shard(s.id));
                self.forget(&mut idx, &mut shard, s.id);
            }
            let (name, app) = self.app_entry(&s.app);
            s.app = name;
            let mut idx = lock(&app);
            let mut shard = write(self.shard(s.id));
            self.forget(&mut idx, &mut shard, s.id);
            if s.is_open() {
                idx.add_open(&s);
            } else {
                idx.closed.insert(s.id);
            }
            shard.deadlines.insert((s.deadline(), s.id));
            write(self.token_shard(s.token_hash)).insert(s.token_hash, s.id);
            if let Some(rec) = rec.as_deref_mut() {
                self.journal_put(&s, rec);
            }
            shard.sessions.insert(s);
        }
    }

    /// Calls `f` with every stored session, one shard at a time (a fuzzy snapshot: each
    /// session is seen in one consistent state, sessions in different shards at
    /// slightly different times).
    pub fn for_each(&self, mut f: impl FnMut(&Session)) {
        for shard in self.inner.shards.iter() {
            let shard = read(shard);
            for s in shard.sessions.values() {
                f(&s);
            }
        }
    }

    /// Number of stored sessions, open and closed.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| read(s).sessions.len())
            .sum()
    }

    /// Whether the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: SessionId) -> &RwLock<Shard> {
        &self.inner.shards[(id.low_bits() as usize) % SHARDS]
    }

    fn token_shard(&self, h: TokenHash) -> &RwLock<HashMap<TokenHash, SessionId, BuildIdHasher>> {
        &self.inner.tokens[(h.0 as usize) % SHARDS]
    }

    fn app_index(&self, app: &str) -> Arc<Mutex<AppIndex>> {
        self.app_entry(app).1
    }

    /// The app's shared name (so records share one allocation per app) and index.
    fn app_entry(&self, app: &str) -> (Arc<str>, Arc<Mutex<AppIndex>>) {
        if let Some((k, v)) = read(&self.inner.apps).get_key_value(app) {
            return (k.clone(), v.clone());
        }
        let mut apps = write(&self.inner.apps);
        if let Some((k, v)) = apps.get_key_value(app) {
            return (k.clone(), v.clone());
        }
        let name: Arc<str> = Arc::from(app);
        let idx = Arc::new(Mutex::default());
        apps.insert(name.clone(), idx.clone());
        (name, idx)
    }

    fn id_of(&self, lookup: Lookup) -> Option<SessionId> {
        match lookup {
            Lookup::Id(id) => Some(id),
            Lookup::Token(h) => read(self.token_shard(h)).get(&h).copied(),
        }
    }

    fn journal_put(&self, s: &Session, rec: &mut Appended) {
        if let Some(j) = &self.inner.journal {
            rec.add(j.put(s));
        }
    }

    /// Journals a change of a session from `before` (none: new) to `after`, with the
    /// webhook deliveries it owes ([`HookRoutes::derive`]) in the same record batch, and
    /// keeps those. Called with the record's shard write lock held.
    fn write_through(
        &self,
        before: Option<&Session>,
        after: &Session,
        now: Timestamp,
        rec: &mut Appended,
    ) {
        let owed = self.inner.routes.derive(before, after, now);
        if let Some(j) = &self.inner.journal {
            rec.add(if owed.is_empty() {
                j.put(after)
            } else {
                j.put_hooked(after, &owed)
            });
        }
        if !owed.is_empty() {
            let mut out = lock(&self.inner.outbox);
            for d in owed {
                out.put(d);
            }
        }
    }

    /// Stores the new state of a session held in `shard`, keeping the deadline and token
    /// indexes right. Called with the shard write lock held.
    fn replace(
        &self,
        shard: &mut Shard,
        before: &Session,
        after: Session,
        now: Timestamp,
        rec: &mut Appended,
    ) {
        let (old_d, new_d) = (before.deadline(), after.deadline());
        if old_d != new_d {
            shard.deadlines.remove(&(old_d, before.id));
            shard.deadlines.insert((new_d, after.id));
        }
        if before.token_hash != after.token_hash {
            write(self.token_shard(before.token_hash)).remove(&before.token_hash);
            write(self.token_shard(after.token_hash)).insert(after.token_hash, after.id);
        }
        self.write_through(Some(before), &after, now, rec);
        shard.sessions.insert(after);
    }

    /// Closes `id` if open, with the app index locked by the caller.
    fn close_locked(
        &self,
        idx: &mut AppIndex,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
        rec: &mut Appended,
    ) -> CloseOutcome {
        let mut shard = write(self.shard(id));
        let Some(before) = shard.sessions.get(&id) else {
            return CloseOutcome::NotFound;
        };
        if !before.is_open() {
            return CloseOutcome::AlreadyClosed(before);
        }
        let mut after = before.clone();
        after.close(reason, by, now);
        idx.update(&before, &after);
        self.replace(&mut shard, &before, after.clone(), now, rec);
        CloseOutcome::Closed(after)
    }

    /// Runs a step that cannot close the session or change its token or seat under the
    /// record's shard lock alone; falls back to [`Self::modify_slow`] when it might.
    fn modify_in_shard(
        &self,
        id: SessionId,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
        rec: &mut Appended,
    ) -> ModifyOutcome {
        let mut shard = write(self.shard(id));
        let Some(before) = shard.sessions.get(&id) else {
            return ModifyOutcome::NotFound;
        };
        if before.is_open() && before.due_reason(now).is_some() {
            drop(shard);
            return self.modify_slow(id, change, cond, now, rec);
        }
        let before = before.clone();
        let mut after = before.clone();
        match after.step(change, cond, now) {
            Err(e) => ModifyOutcome::Refused(e),
            Ok(Step::Unchanged) => ModifyOutcome::Done {
                session: after,
                step: Step::Unchanged,
                displaced: Vec::new(),
            },
            Ok(step) => {
                self.replace(&mut shard, &before, after.clone(), now, rec);
                ModifyOutcome::Done {
                    session: after,
                    step,
                    displaced: Vec::new(),
                }
            }
        }
    }

    /// Runs a step with the app index locked first: for steps that may close the
    /// session (a timeout passed) or change its token or seat.
    ///
    /// A privilege change is admitted in the same step ([`crate::admission`]): the
    /// step runs on a copy, admission gathers what it wants with no record lock held
    /// (the app lock keeps what it counts still: nothing opens, closes or changes a
    /// seat or a user in this app without it), the sessions it displaces are closed,
    /// then the step runs again on the record under its lock and is written. Closes go
    /// first, as for an open, so a crash between the frames leaves fewer sessions
    /// counted, never more. A refusal writes nothing.
    ///
    /// Between the copy and the record lock, only changes that never bring a deadline
    /// closer may write the record (touches, beats, storage writes: they take the
    /// shard lock alone; a heartbeat retune takes this path, see
    /// [`Self::modify_in`]). So a change the copy found live is live on the record;
    /// one the copy found timed out may have been revived meanwhile, and then it
    /// starts over, to be admitted (nothing was written for it).
    fn modify_slow(
        &self,
        id: SessionId,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
        rec: &mut Appended,
    ) -> ModifyOutcome {
        let Some(app) = read(self.shard(id)).sessions.app_of(&id) else {
            return ModifyOutcome::NotFound;
        };
        let app = self.app_index(&app);
        let mut idx = lock(&app);
        loop {
            let mut admitted = false;
            let mut displaced = Vec::new();
            if let Change::SetPrivileges { admission, .. } = change {
                let Some(before) = read(self.shard(id)).sessions.get(&id) else {
                    return ModifyOutcome::NotFound;
                };
                let mut after = before.clone();
                if let Ok(Step::Changed) = after.step(change, cond, now) {
                    admitted = true;
                    let wants = admission.wants(Some(&before), &after);
                    if wants.anything() {
                        let got = self.gather_locked(&idx, admission, &wants, now);
                        match plan(admission, &wants, id, &got) {
                            Plan::Refuse(r) => {
                                return ModifyOutcome::Refused(ChangeError::NotAdmitted(r))
                            }
                            Plan::Admit(closes) => {
                                displaced = self.close_planned(&mut idx, closes, now, rec);
                            }
                        }
                    }
                }
            }
            let mut shard = write(self.shard(id));
            let Some(before) = shard.sessions.get(&id) else {
                return ModifyOutcome::NotFound;
            };
            let mut after = before.clone();
            return match after.step(change, cond, now) {
                Err(e) => ModifyOutcome::Refused(e),
                Ok(Step::Unchanged) => ModifyOutcome::Done {
                    session: after,
                    step: Step::Unchanged,
                    displaced,
                },
                // Revived since the copy was read: admit it first.
                Ok(Step::Changed)
                    if matches!(change, Change::SetPrivileges { .. }) && !admitted =>
                {
                    continue
                }
                Ok(step) => {
                    idx.update(&before, &after);
                    self.replace(&mut shard, &before, after.clone(), now, rec);
                    ModifyOutcome::Done {
                        session: after,
                        step,
                        displaced,
                    }
                }
            };
        }
    }

    /// What [`plan`] needs, read from the app's index (locked by the caller) and the
    /// records, with no record lock held on return.
    fn gather_locked(
        &self,
        idx: &AppIndex,
        adm: &Admission,
        wants: &Wants<'_>,
        now: Timestamp,
    ) -> Gathered {
        let seen = |id: &SessionId| {
            let s = read(self.shard(*id)).sessions.get(id)?;
            Seen::of(&s, now)
        };
        let mut got = Gathered {
            seats_used: idx.seats_used,
            ..Default::default()
        };
        if let Some(u) = wants.user {
            if let Some(ids) = idx.by_user.get(u) {
                got.user_sessions = ids.iter().filter_map(seen).collect();
            }
        }
        if let Some(t) = wants.take_over.filter(|t| idx.open.contains(t)) {
            got.take_over = seen(&t);
        }
        if wants.full_on_paper(got.seats_used) {
            // Reading every open session is what finding the due ones costs here (the
            // deadline index is per shard, not per app); the idlest come with it.
            let all: Vec<Seen> = idx.open.iter().filter_map(seen).collect();
            got.due = all.iter().filter(|s| s.due.is_some()).cloned().collect();
            if wants.idlest(adm, got.user_sessions.len(), 0) > 0 {
                got.idlest = all.into_iter().filter(|s| s.holder.counts_seat).collect();
            }
        }
        got
    }

    /// Closes what [`plan`] listed, in its order, with the app index locked by the
    /// caller; returns those it closed (one closed meanwhile is skipped).
    fn close_planned(
        &self,
        idx: &mut AppIndex,
        closes: Vec<Close>,
        now: Timestamp,
        rec: &mut Appended,
    ) -> Vec<Session> {
        closes
            .into_iter()
            .filter_map(
                |c| match self.close_locked(idx, c.id, c.reason, c.by, now, rec) {
                    CloseOutcome::Closed(s) => Some(s),
                    _ => None,
                },
            )
            .collect()
    }
}

/// The operations of [`Store`], synchronous, each with what it appended to the journal.
impl MemoryStore {
    /// [`Store::list`], synchronous.
    pub fn list_now(&self, q: &ListQuery) -> Vec<Session> {
        let mut round = q.clone();
        let mut out = Vec::new();
        loop {
            let (page, more_after) = self.list_round(&round);
            out.extend(page);
            match more_after {
                // A session closed or purged meanwhile left the page short: go on past
                // the ids looked at, so a short page always means the end.
                Some(b) if out.len() < q.limit => {
                    round.after = Some(b);
                    round.limit = q.limit - out.len();
                }
                _ => break,
            }
        }
        out
    }

    /// One pass of [`MemoryStore::list_now`]: a page, and the id past which ids were
    /// not looked at (a set held more), if any.
    fn list_round(&self, q: &ListQuery) -> (Vec<Session>, Option<SessionId>) {
        let apps: Vec<Arc<Mutex<AppIndex>>> = match &q.app {
            Some(a) => match read(&self.inner.apps).get(a.as_str()) {
                Some(idx) => vec![idx.clone()],
                None => return (Vec::new(), None),
            },
            None => read(&self.inner.apps).values().cloned().collect(),
        };
        // A page needs at most `limit` ids of each set past the cursor: the sets are
        // ordered by id, so a page costs what it returns, not what the app holds (a
        // walk over every open session, page after page, stays linear).
        // A filter the sets do not answer (a user, in the history) may pass over many
        // ids: then every id past the cursor is a candidate, as before.
        let per_set = if q.user.is_some() {
            usize::MAX
        } else {
            q.limit
        };
        let page_of = |set: &BTreeSet<SessionId>| -> Vec<SessionId> {
            use std::ops::Bound::{Excluded, Unbounded};
            let limit = per_set;
            match (q.newest_first, q.after) {
                (false, Some(a)) => set
                    .range((Excluded(a), Unbounded))
                    .take(limit)
                    .copied()
                    .collect(),
                (false, None) => set.iter().take(limit).copied().collect(),
                (true, Some(a)) => set.range(..a).rev().take(limit).copied().collect(),
                (true, None) => set.iter().rev().take(limit).copied().collect(),
            }
        };
        // Where the sets that held more than a page were cut: only ids up to the nearest
        // such cut are certain to be the next ones.
        let mut bound: Option<SessionId> = None;
        let mut note = |v: Vec<SessionId>| -> Vec<SessionId> {
            if per_set != usize::MAX && v.len() == per_set {
                if let Some(last) = v.last().copied() {
                    bound = Some(match bound {
                        None => last,
                        Some(b) if q.newest_first => b.max(last),
                        Some(b) => b.min(last),
                    });
                }
            }
            v
        };
        let mut ids: Vec<SessionId> = Vec::new();
        for app in apps {
            let idx = lock(&app);
            match (q.status, &q.user) {
                (StatusFilter::Open, Some(u)) => {
                    if let Some(mine) = idx.by_user.get(u.as_str()) {
                        ids.extend(mine.iter().filter(|id| q.after_cursor(**id)));
                    }
                }
                (StatusFilter::Open, None) => ids.extend(note(page_of(&idx.open))),
                (StatusFilter::Closed, _) => ids.extend(note(page_of(&idx.closed))),
                (StatusFilter::Any, _) => {
                    ids.extend(note(page_of(&idx.open)));
                    ids.extend(note(page_of(&idx.closed)));
                }
            }
        }
        ids.sort_unstable();
        if q.newest_first {
            ids.reverse();
        }
        if let Some(b) = bound {
            ids.retain(|id| if q.newest_first { *id >= b } else { *id <= b });
        }
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= q.limit {
                break;
            }
            if let Some(s) = read(self.shard(id)).sessions.get(&id) {
                if q.matches(&s) {
                    out.push(s);
                }
            }
        }
        (out, bound)
    }

    /// [`Store::counts`], synchronous.
    pub fn counts_now(&self, app: &str) -> AppCounts {
        let Some(app) = read(&self.inner.apps).get(app).cloned() else {
            return AppCounts::default();
        };
        let idx = lock(&app);
        AppCounts {
            open: idx.open.len() as u64,
            seats_used: idx.seats_used,
        }
    }

    /// [`Store::get`], synchronous.
    pub fn peek(&self, lookup: Lookup) -> Option<Session> {
        self.id_of(lookup)
            .and_then(|id| read(self.shard(id)).sessions.get(&id))
    }

    /// [`Store::open`], with what it appended to the journal.
    pub fn open_journaled(
        &self,
        session: Session,
        adm: &Admission,
        now: Timestamp,
    ) -> Journaled<OpenOutcome> {
        let mut rec = Appended::default();
        let app = self.app_index(&session.app);
        let mut idx = lock(&app);
        let wants = adm.wants(None, &session);
        let mut displaced = Vec::new();
        if wants.anything() {
            let got = self.gather_locked(&idx, adm, &wants, now);
            match plan(adm, &wants, session.id, &got) {
                Plan::Refuse(r) => {
                    return Journaled {
                        value: OpenOutcome::Refused(r),
                        appended: rec,
                    }
                }
                Plan::Admit(closes) => {
                    displaced = self.close_planned(&mut idx, closes, now, &mut rec);
                }
            }
        }
        idx.add_open(&session);
        let mut shard = write(self.shard(session.id));
        shard.deadlines.insert((session.deadline(), session.id));
        write(self.token_shard(session.token_hash)).insert(session.token_hash, session.id);
        self.write_through(None, &session, now, &mut rec);
        shard.sessions.insert(session.clone());
        Journaled {
            value: OpenOutcome::Opened { session, displaced },
            appended: rec,
        }
    }

    /// [`Store::modify`], with what it appended to the journal.
    pub fn modify_journaled(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> Journaled<ModifyOutcome> {
        let mut rec = Appended::default();
        let value = self.modify_in(lookup, change, cond, now, &mut rec);
        Journaled {
            value,
            appended: rec,
        }
    }

    fn modify_in(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
        rec: &mut Appended,
    ) -> ModifyOutcome {
        let Some(id) = self.id_of(lookup) else {
            return ModifyOutcome::NotFound;
        };
        // A privilege change may change the seat, the user and the token; a heartbeat
        // retune may bring the deadline closer, which a privilege change being admitted
        // must not see happen under it (see `modify_slow`).
        let touches_indexes = matches!(
            change,
            Change::SetPrivileges { .. } | Change::SetHeartbeat { .. }
        );
        {
            // Fast path: reads and coalesced touches need only a read lock.
            let shard = read(self.shard(id));
            let Some(s) = shard.sessions.get(&id) else {
                return ModifyOutcome::NotFound;
            };
            if matches!(change, Change::Read | Change::Touch) && s.due_reason(now).is_none() {
                let mut copy = s;
                drop(shard);
                return match copy.step(change, cond, now) {
                    Ok(Step::Unchanged) => ModifyOutcome::Done {
                        session: copy,
                        step: Step::Unchanged,
                        displaced: Vec::new(),
                    },
                    Err(e) => ModifyOutcome::Refused(e),
                    // A touch to write: take the write path below.
                    Ok(_) => self.modify_in_shard(id, change, cond, now, rec),
                };
            }
        }
        if touches_indexes {
            self.modify_slow(id, change, cond, now, rec)
        } else {
            self.modify_in_shard(id, change, cond, now, rec)
        }
    }

    /// [`Store::close`], with what it appended to the journal.
    pub fn close_journaled(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> Journaled<CloseOutcome> {
        let mut rec = Appended::default();
        // The shard's read guard must end before close_locked takes its write lock.
        let app = read(self.shard(id)).sessions.app_of(&id);
        let value = match app {
            None => CloseOutcome::NotFound,
            Some(app) => {
                let app = self.app_index(&app);
                let mut idx = lock(&app);
                self.close_locked(&mut idx, id, reason, by, now, &mut rec)
            }
        };
        Journaled {
            value,
            appended: rec,
        }
    }

    /// [`Store::close_all`], with what it appended to the journal.
    pub fn close_all_journaled(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> Journaled<Vec<Session>> {
        let mut rec = Appended::default();
        let app = self.app_index(app);
        let mut idx = lock(&app);
        let candidates: Vec<SessionId> = match user {
            Some(u) => idx.by_user.get(u).cloned().unwrap_or_default(),
            None => idx.open.iter().copied().collect(),
        };
        let ids: Vec<SessionId> = candidates
            .into_iter()
            .filter(|id| !except.contains(id) && idx.open.contains(id))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let CloseOutcome::Closed(s) =
                self.close_locked(&mut idx, id, reason, by, now, &mut rec)
            {
                out.push(s);
            }
        }
        Journaled {
            value: out,
            appended: rec,
        }
    }

    /// [`Store::import`], with what it appended to the journal.
    pub fn import_journaled(&self, session: Session) -> Journaled<()> {
        let mut rec = Appended::default();
        self.put_all([session], Some(&mut rec));
        Journaled {
            value: (),
            appended: rec,
        }
    }

    /// [`Store::expire_due`], with what it appended to the journal.
    pub fn expire_due_journaled(&self, now: Timestamp, limit: usize) -> Journaled<Expired> {
        let mut rec = Appended::default();
        let mut due: Vec<SessionId> = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = read(shard);
            due.extend(
                shard
                    .deadlines
                    .range(..(now, SessionId::from_u128(0)))
                    .map(|(_, id)| *id)
                    .take(limit.saturating_mul(2).saturating_sub(due.len())),
            );
        }
        let mut out = Expired::default();
        for id in due {
            let Some(app) = read(self.shard(id)).sessions.app_of(&id) else {
                continue;
            };
            let app_idx = self.app_index(&app);
            let mut idx = lock(&app_idx);
            let mut shard = write(self.shard(id));
            let Some(s) = shard.sessions.get(&id) else {
                continue;
            };
            if let Some(reason) = s.due_reason(now) {
                if out.closed.len() >= limit {
                    continue;
                }
                let before = s;
                let mut after = before.clone();
                after.close(reason, Actor::Expiry, now);
                idx.update(&before, &after);
                self.replace(&mut shard, &before, after.clone(), now, &mut rec);
                out.closed.push(after);
            } else if s.is_past_retention(now) && out.purged < limit {
                self.forget(&mut idx, &mut shard, id);
                if let Some(j) = &self.inner.journal {
                    rec.add(j.remove(id));
                }
                out.purged += 1;
            }
        }
        Journaled {
            value: out,
            appended: rec,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn event_bus(&self) -> Option<Arc<dyn crate::events::EventBus>> {
        None
    }

    fn outbox(&self) -> Option<&dyn Outbox> {
        Some(self)
    }

    async fn open(
        &self,
        session: Session,
        adm: &Admission,
        now: Timestamp,
    ) -> StoreResult<OpenOutcome> {
        Ok(self.open_journaled(session, adm, now).value)
    }

    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        Ok(self.peek(lookup))
    }

    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        Ok(self.modify_journaled(lookup, change, cond, now).value)
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        Ok(self.close_journaled(id, reason, by, now).value)
    }

    async fn close_all(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        Ok(self
            .close_all_journaled(app, except, user, reason, by, now)
            .value)
    }

    async fn list(&self, q: &ListQuery) -> StoreResult<Vec<Session>> {
        Ok(self.list_now(q))
    }

    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        Ok(self.counts_now(app))
    }

    async fn import(&self, session: Session) -> StoreResult<()> {
        let _no_journal = self.import_journaled(session);
        Ok(())
    }

    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        Ok(self.expire_due_journaled(now, limit).value)
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    fn routes(&self) -> &HookRoutes {
        &self.inner.routes
    }

    async fn push(&self, deliveries: Vec<Delivery>) -> StoreResult<()> {
        let _no_journal = self.hooks_push_journaled(deliveries);
        Ok(())
    }

    async fn claim(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        Ok(self.hooks_claim_now(now, until, limit))
    }

    async fn settle(
        &self,
        _app: &str,
        id: HookId,
        claimed_until: Timestamp,
        outcome: Settle,
    ) -> StoreResult<()> {
        let _no_journal = self.hooks_settle_journaled(id, claimed_until, &outcome);
        Ok(())
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<Delivery>> {
        Ok(self.hooks_list_now(query))
    }

    async fn resend(&self, app: &str, id: HookId, now: Timestamp) -> StoreResult<bool> {
        Ok(self.hooks_resend_journaled(app, id, now).value)
    }

    async fn tally(&self) -> StoreResult<OutboxCounts> {
        Ok(self.hooks_counts_now())
    }

    async fn forget_dead(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        Ok(self.hooks_forget_dead_journaled(before, limit).value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance_tests!(async { MemoryStore::new() });
    crate::hooks_conformance_tests!(async { MemoryStore::new() });

    /// Paging through the store with every filter, order and page size gives exactly
    /// the sessions a brute-force filter of all of them gives, in order.
    #[tokio::test]
    async fn pages_are_what_filtering_everything_gives() {
        use crate::manager::{Manager, OpenRequest};
        let store = MemoryStore::new();
        let m = Manager::new(std::sync::Arc::new(store.clone()));
        for app in ["a", "b"] {
            m.set_policy(app, crate::Policy::default()).unwrap();
        }
        for i in 0..60u32 {
            let app = if i % 3 == 0 { "b" } else { "a" };
            let user = ["ann", "bob", "cat"][(i % 5 % 3) as usize];
            let o = m
                .open(
                    app,
                    OpenRequest {
                        user: Some(user.into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            if i % 4 == 0 {
                m.close(Lookup::Id(o.session.id), CloseReason::Logout, Actor::User)
                    .await
                    .unwrap();
            }
        }
        let mut all = Vec::new();
        store.for_each(|s| all.push(s.clone()));
        all.sort_by_key(|s| s.id);
        for app in [None, Some("a"), Some("b")] {
            for status in [StatusFilter::Any, StatusFilter::Open, StatusFilter::Closed] {
                for user in [None, Some("bob")] {
                    for newest_first in [false, true] {
                        for limit in [1, 7, 100] {
                            let mut q = ListQuery {
                                app: app.map(String::from),
                                status,
                                user: user.map(String::from),
                                after: None,
                                newest_first,
                                limit,
                            };
                            let mut want: Vec<SessionId> =
                                all.iter().filter(|s| q.matches(s)).map(|s| s.id).collect();
                            if newest_first {
                                want.reverse();
                            }
                            let mut got = Vec::new();
                            loop {
                                let page = store.list_now(&q);
                                assert!(page.len() <= limit);
                                let Some(last) = page.last() else { break };
                                q.after = Some(last.id);
                                got.extend(page.iter().map(|s| s.id));
                            }
                            assert_eq!(
                                got, want,
                                "{app:?} {status:?} {user:?} {newest_first} {limit}"
                            );
                        }
                    }
                }
            }
        }
    }
}
