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

/// Most bytes of storage and info a node keeps, all copies together; past it the cache
/// starts over. A copy is useful for its maximum age only, so this holds the sessions
/// read within it on a busy node, and bounds what crafted big sessions can take.
const MAX_BYTES: usize = 64 << 20;

/// Sessions with more storage and info than this are not kept (read from the store).
const MAX_SESSION_BYTES: usize = 16 << 10;

/// Ids announced in one `pg_notify` (each 36 characters and a separator).
const IDS_PER_NOTICE: usize = MAX_PAYLOAD / 37;

/// Ids waiting to be announced; past it one notice tells every node to forget
/// everything (the announcing cannot keep up, or the store is unreachable).
const MAX_WAITING: usize = 1 << 16;

/// The notice that tells every node to forget every copy (not an id).
const FORGET_ALL: &str = "*";

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
    /// Storage and info bytes of the copies kept.
    bytes: usize,
}

/// What a read from the store saw of the cache when it began ([`ReadCache::begin`]).
#[derive(Clone, Copy)]
pub(crate) struct Seen {
    generation: u64,
    /// The copy's age counts from here: the store answered after it.
    at: Instant,
}

/// The storage and info bytes of a copy, what the byte budget counts.
fn weight(s: &Session) -> usize {
    s.data.as_str().len() + s.info.as_str().len()
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
    pub(crate) fn begin(&self) -> Seen {
        Seen {
            generation: self.generation.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// Keeps `s`, read from the store after [`ReadCache::begin`] gave `seen`, unless a
    /// notice or an emptying came since (the read may have raced a change).
    pub(crate) fn keep(&self, seen: Seen, s: &Session) {
        let w = weight(s);
        if !self.live.load(Ordering::Acquire) || !s.is_open() || w > MAX_SESSION_BYTES {
            return;
        }
        let mut entries = self.entries();
        // Checked under the lock every notice takes: none can slip in between.
        if self.generation.load(Ordering::Acquire) != seen.generation {
            return;
        }
        if entries.by_token.len() >= MAX_ENTRIES || entries.bytes + w > MAX_BYTES {
            *entries = Entries::default();
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
    pub(crate) fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        for id in ids {
            if let Some(token) = entries.token_of.remove(id) {
                if let Some((gone, _)) = entries.by_token.remove(&token) {
                    entries.bytes -= weight(&gone);
                }
            }
        }
    }

    /// Forgets the session of token hash `token` (the store refused or did not find
    /// what this node's copy said).
    pub(crate) fn forget_token(&self, token: TokenHash) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some((gone, _)) = entries.by_token.remove(&token) {
            entries.token_of.remove(&gone.id);
            entries.bytes -= weight(&gone);
        }
    }

    /// Forgets every copy, and goes on keeping new ones if it did.
    pub(crate) fn forget_all(&self) {
        let live = self.live.load(Ordering::Acquire);
        self.empty(live);
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
            // FORGET_ALL, or a notice this version does not know: forget everything
            // rather than guess.
            cache.forget_all();
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
    tx: mpsc::Sender<Notice>,
    /// Set when a notice could not wait: the next one tells every node to forget all.
    overflowed: Arc<AtomicBool>,
}

/// What the announcing task is given.
enum Notice {
    Changed(SessionId),
    /// Sessions changed that no list of ids can name (an unknown outcome, say).
    Everything,
}

impl Notifier {
    /// Starts the task (it ends once every clone of the notifier is gone).
    pub(crate) fn start(db: Arc<Db>, channel: String) -> Notifier {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        let overflowed = Arc::new(AtomicBool::new(false));
        tokio::spawn(announce(db, channel, rx, overflowed.clone()));
        Notifier { tx, overflowed }
    }

    /// Announces that `ids` changed.
    pub(crate) fn changed<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        for id in ids {
            self.send(Notice::Changed(*id));
        }
    }

    /// Announces that sessions changed that no list of ids can name: every node
    /// forgets every copy.
    pub(crate) fn everything(&self) {
        self.send(Notice::Everything);
    }

    fn send(&self, n: Notice) {
        if self.tx.try_send(n).is_err() {
            // Full: the flag turns the next notice into FORGET_ALL.
            self.overflowed.store(true, Ordering::Release);
        }
    }
}

/// Sends what comes in on `rx`, batched: whatever queued while a notice was sent goes
/// in the next one. A notice that fails is logged and dropped (the other nodes' copies
/// then age out within their maximum age).
async fn announce(
    db: Arc<Db>,
    channel: String,
    mut rx: mpsc::Receiver<Notice>,
    overflowed: Arc<AtomicBool>,
) {
    let mut notices = Vec::new();
    while rx.recv_many(&mut notices, IDS_PER_NOTICE).await > 0 {
        let all = overflowed.swap(false, Ordering::AcqRel)
            || notices.iter().any(|n| matches!(n, Notice::Everything));
        let payload = if all {
            FORGET_ALL.to_string()
        } else {
            notices
                .iter()
                .filter_map(|n| match n {
                    Notice::Changed(id) => Some(id.to_string()),
                    Notice::Everything => None,
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        notices.clear();
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
        cache.keep(cache.begin(), &s);
        assert_eq!(cache.len(), 0);
        cache.empty(true);
        cache.keep(cache.begin(), &s);
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
        let seen = cache.begin();
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
        cache.empty(true);
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
        use sessiond_core::JsonObject;
        let cache = ReadCache::new(Duration::from_secs(60));
        cache.empty(true);
        let mut big = session();
        let x = "y".repeat(MAX_SESSION_BYTES);
        big.data = JsonObject::from_value(&serde_json::json!({ "x": x })).unwrap();
        cache.keep(cache.begin(), &big);
        assert_eq!(cache.len(), 0);
        let pad = "y".repeat(MAX_SESSION_BYTES - 100);
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
        cache.empty(true);
        let s = session();
        cache.keep(cache.begin(), &s);
        cache.forget_token(s.token_hash);
        assert!(cache.get(s.token_hash).is_none());
        assert_eq!(cache.entries().bytes, 0);
        assert!(cache.entries().token_of.is_empty());
    }
}
