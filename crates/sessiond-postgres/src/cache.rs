//! [`ReadCache`]: reads of a session by token answered from this node's memory, kept
//! current by the other nodes' notices (`LISTEN`/`NOTIFY` on `<schema>_changes`).
//!
//! A resolve (a read, or a touch that has nothing to write yet) is the most frequent
//! operation of a web app, and on a shared store each is a round trip. With the cache on
//! ([`crate::PostgresOptions::read_cache`]) a node keeps the sessions it read, by token
//! hash, and answers such a resolve from that copy when all of these hold:
//!
//! - the copy is younger than the cache's maximum age (default 1 s): this bounds how
//!   stale an answer can be whatever else fails (a notice lost, a node that writes
//!   without the cache, a half-open listening connection not yet noticed);
//! - the listening connection is up: when it is lost the cache is emptied at once and
//!   stays off until it listens again (notices sent meanwhile are lost);
//! - no notice of a change arrived between the read that filled the entry and its
//!   insertion (a generation counter: a read that raced a change is not kept);
//! - the step of the change on the copy writes nothing ([`Step::Unchanged`]): a touch
//!   that is due, an expiry, a refusal, all go to the store as without the cache.
//!
//! Every change a node makes to a session is announced after it commits: the ids go to
//! a notifier task that sends them in as few `pg_notify` calls as fit (ids are 36
//! characters, a payload 7999 bytes), outside the writer's transaction. A `NOTIFY` in
//! the writer's transaction would serialise every commit behind a database-wide lock
//! held through the WAL flush: measured with pgbench on this machine (32 clients, one
//! row update each), 21 860 transactions/s alone, 3 746 with a `NOTIFY` in the same
//! transaction, 9 249 with one after it. The node that made a change forgets its own
//! copy at once; the others when the notice arrives (the delay is measured and
//! published in docs/BENCHMARKS.md).
//!
//! Every node sharing a store must have the cache on
//! ([`crate::PostgresOptions::read_cache`]): a node without it announces nothing, and
//! leaves the others' copies stale for up to their maximum age.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use sessiond_core::{Session, SessionId, TokenHash};
use tokio::sync::mpsc;

use crate::bus::{Listens, MAX_PAYLOAD};
use crate::db::Db;
use crate::rows;

/// Most sessions a node keeps; past it the cache starts over (a bound on memory).
const MAX_ENTRIES: usize = 100_000;

/// Ids announced in one `pg_notify` (each 36 characters and a separator).
const IDS_PER_NOTICE: usize = MAX_PAYLOAD / 37;

/// Sessions read by this node, by token hash (see the module docs).
pub(crate) struct ReadCache {
    max_age: Duration,
    /// Whether the listening connection is up (entries are kept and used only then).
    live: AtomicBool,
    /// Bumped by every notice and every emptying: a read that saw another value before
    /// it started is not kept.
    generation: AtomicU64,
    /// Reads answered from memory, for the metrics.
    hits: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_token: HashMap<TokenHash, (Session, Instant)>,
    token_of: HashMap<SessionId, TokenHash>,
}

impl ReadCache {
    pub(crate) fn new(max_age: Duration) -> ReadCache {
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
    pub(crate) fn get(&self, token: TokenHash) -> Option<Session> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries();
        let (s, at) = entries.by_token.get(&token)?;
        (at.elapsed() < self.max_age).then(|| s.clone())
    }

    /// Call before reading from the store: what [`ReadCache::keep`] checks.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `s`, read from the store after [`ReadCache::generation`] gave `seen`,
    /// unless a notice or an emptying came since (the read may have raced a change).
    pub(crate) fn keep(&self, seen: u64, s: &Session) {
        if !self.live.load(Ordering::Acquire) || !s.is_open() {
            return;
        }
        let mut entries = self.entries();
        // Checked under the lock every notice takes: none can slip in between.
        if self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if entries.by_token.len() >= MAX_ENTRIES {
            *entries = Entries::default();
        }
        if let Some(old) = entries.token_of.insert(s.id, s.token_hash) {
            entries.by_token.remove(&old);
        }
        entries
            .by_token
            .insert(s.token_hash, (s.clone(), Instant::now()));
    }

    /// Forgets the sessions `ids` (changed here or on another node).
    pub(crate) fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        for id in ids {
            if let Some(token) = entries.token_of.remove(id) {
                entries.by_token.remove(&token);
            }
        }
    }

    /// Forgets everything; `live` says whether entries may be kept from now on.
    fn empty(&self, live: bool) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *entries = Entries::default();
        self.live.store(live, Ordering::Release);
    }

    /// Counts a read answered from memory.
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads answered from memory so far.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Whether the listening connection is up (copies are kept and used).
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().by_token.len()
    }
}

/// The cache's listening side: holds the cache weakly, and stops once the store that
/// owns it is gone.
pub(crate) struct CacheListener {
    pub(crate) cache: Weak<ReadCache>,
    pub(crate) channel: String,
}

impl Listens for CacheListener {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn message(&self, payload: &str) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        let ids: Vec<SessionId> = payload
            .split(',')
            .filter_map(|id| id.parse().ok())
            .collect();
        if ids.is_empty() {
            // Not a notice this version sends: forget everything rather than guess.
            cache.empty(true);
        } else {
            cache.forget(&ids);
        }
    }

    fn ready(&self, up: bool) {
        if let Some(cache) = self.cache.upgrade() {
            if !up {
                tracing::warn!(channel = %self.channel,
                    "the read cache's listening connection is lost: reads go to the store");
            }
            cache.empty(up);
        }
    }

    fn wanted(&self) -> bool {
        self.cache.strong_count() > 0
    }
}

/// Where a node's changes are announced: a task that sends the ids it is given in as
/// few notices as fit, on a pooled connection, outside any writer's transaction.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: mpsc::UnboundedSender<SessionId>,
}

impl Notifier {
    /// Starts the task (it ends once every clone of the notifier is gone).
    pub(crate) fn start(db: Arc<Db>, channel: String) -> Notifier {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(announce(db, channel, rx));
        Notifier { tx }
    }

    /// Announces that `ids` changed.
    pub(crate) fn changed<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        for id in ids {
            // The task ends only with the last sender: this cannot fail while `self` is.
            let _ = self.tx.send(*id);
        }
    }
}

/// Sends what comes in on `rx`, batched: whatever queued while a notice was sent goes
/// in the next one. A notice that fails is logged and dropped (the other nodes' copies
/// then age out within their maximum age).
async fn announce(db: Arc<Db>, channel: String, mut rx: mpsc::UnboundedReceiver<SessionId>) {
    let mut ids = Vec::new();
    while rx.recv_many(&mut ids, IDS_PER_NOTICE).await > 0 {
        let payload = ids
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",");
        ids.clear();
        let sent = db
            .bounded("NOTIFY", async {
                let conn = db.conn().await?;
                let out =
                    rows::execute(&*conn, "SELECT pg_notify($1, $2)", &[&channel, &payload]).await;
                conn.release();
                out
            })
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "changes not announced to the other nodes' read caches; their copies age out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        use sessiond_core::{Client, JsonObject, Privileges, Timestamp};
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
        cache.keep(cache.generation(), &s);
        assert_eq!(cache.len(), 0);
        cache.empty(true);
        cache.keep(cache.generation(), &s);
        assert_eq!(cache.get(s.token_hash).map(|c| c.id), Some(s.id));
        // The connection is lost: everything goes at once.
        cache.empty(false);
        assert!(cache.get(s.token_hash).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_read_that_raced_a_notice_is_not_kept() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.empty(true);
        let s = session();
        let seen = cache.generation();
        // A notice (of any session) arrives while the read is under way.
        cache.forget(&[SessionId::new()]);
        cache.keep(seen, &s);
        assert!(cache.get(s.token_hash).is_none());
    }

    #[test]
    fn a_notice_forgets_the_session_whatever_its_token() {
        let cache = ReadCache::new(Duration::from_secs(1));
        cache.empty(true);
        let s = session();
        cache.keep(cache.generation(), &s);
        cache.forget(&[s.id]);
        assert!(cache.get(s.token_hash).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn copies_age_out() {
        let cache = ReadCache::new(Duration::from_millis(20));
        cache.empty(true);
        let s = session();
        cache.keep(cache.generation(), &s);
        assert!(cache.get(s.token_hash).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(s.token_hash).is_none());
    }
}
