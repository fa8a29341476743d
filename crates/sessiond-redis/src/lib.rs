//! A sessiond [`Store`] over Redis 7 (or Valkey), shared by every node that points at
//! the same server and prefix, with events between nodes over Redis pub/sub.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sessiond_core::{Manager, OpenRequest, Policy};
//! use sessiond_redis::{RedisOptions, RedisStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?;
//! let manager = Arc::new(Manager::new(Arc::new(store)));
//! manager.set_policy("shop", Policy { seats: Some(5), ..Default::default() })?;
//! manager.start_relay(); // closes made on other nodes reach this node's subscribers
//! let opened = manager.open("shop", OpenRequest::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Atomicity without a second copy of the rules
//!
//! Every write is optimistic: Rust reads what it needs, runs the core's pure logic
//! ([`Session::step`], [`sessiond_core::admission::plan`]), then commits with the one
//! `COMMIT` Lua script, which applies all of the operation's writes at once only if
//! nothing it read has moved since, else reports a conflict and Rust starts over.
//! "Moved" is told by revision counters:
//!
//! - each session record has a `rev` that every write increments (touches included),
//!   so a write computed from a stale read never lands: no lost update, and a write
//!   never resurrects a closed session (the close moved the `rev`);
//! - each app has a `rev` that every change of *who holds what* increments (an open, a
//!   close, new privileges that change the seat or user). Admission (an open, or a
//!   privilege change that makes a session take a seat or moves it to a user) commits
//!   only if the app's `rev` is what it read, so N concurrent opens or logins against S
//!   seats (or a user's last slots) admit exactly S on any number of nodes, and
//!   concurrent take-overs of one holder have one winner.
//!
//! An import (for migrations and restores) runs no rule: it writes the session as
//! given through the same `COMMIT` script, against the revision of the record it
//! replaces, and moves the app's revision whatever it changes, so admissions and writes
//! in flight on every node read again. A session moved to another app by an import is
//! deleted from its old app afterwards, by a commit of that app.
//!
//! What admission reads is one consistent snapshot taken by the `GATHER_OPEN` script
//! (seats used, the user's open sessions, the take-over target, and, when the house is
//! full, the sessions past their deadline and the idlest seat holders), so a refusal is
//! as exact as an admission. Conflicts are retried with a short jittered backoff until
//! the operation's timeout; each retry starts from a fresh read. Within one node,
//! writers of the same session (and admissions to the same app) also take turns on a
//! local queue, so contention costs a wait rather than a storm of failed commits; the
//! revision checks alone keep nodes from overwriting each other.
//!
//! # Key layout
//!
//! With `<p>` the prefix ([`RedisOptions::prefix`], default `sessiond`), an app's keys
//! share the hash tag `{<app>}`, so in Redis Cluster they live in one slot and every
//! script touches one slot only:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{<app>}:s:<id>` | hash | `rev` (write counter), `json` (the [`Session`] as JSON, with the token's hash only) |
//! | `<p>:{<app>}:rev` | string | the app's revision |
//! | `<p>:{<app>}:open` / `:closed` | sorted set, scores 0 | open / closed ids, in id order (lists page through them by id) |
//! | `<p>:{<app>}:seated` | sorted set | open seat-taking ids scored by last activity (seats used, idlest holders) |
//! | `<p>:{<app>}:u:<user>` | sorted set, scores 0 | the user's open ids |
//! | `<p>:{<app>}:due` | sorted set | open ids scored by [`Session::deadline`] in ms |
//! | `<p>:{<app>}:purge` | sorted set | closed ids scored by the end of their retention in ms |
//!
//! Global keys, never mixed with an app's keys in one script:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:apps` | set | names of the apps that ever held a session (what expiry walks) |
//! | `<p>:t:<token hash>` | string | `<app>\n<id>`: resolving a token |
//! | `<p>:i:<id>` | string | `<app>`: reading a session by id |
//! | `<p>:events` | pub/sub channel | the [`EventBus`](sessiond_core::events::EventBus) |
//!
//! The two index entries are written before the session's record and removed after it
//! (purge, token rotation), and a token is accepted only if the record still holds its
//! hash, so the record is always the truth. Both entries also carry a TTL (lifetime +
//! retention + one day) so that one orphaned by a crash between two steps disappears;
//! the expiry sweep (which the server runs every few seconds) purges records long
//! before that, unless it stalls for more than a day.
//!
//! # Costs
//!
//! - A resolve is one round trip (read the record) when the node-local cache knows the
//!   token's app and id, which never change for a token's life (but through an import,
//!   after which a miss reads the index once more); a read always reads the record, so
//!   a close or rotation made on any node is seen at once (a record equal, revision
//!   and text, to the one this node last read is not decoded again). A touch that
//!   [`Session::step`] coalesces (`Unchanged`) writes nothing.
//! - A write is two round trips (read, revision-checked commit), or one when this node
//!   read or wrote the record within the last second: the commit is then made against
//!   that copy, and the revision check sends it back to a read if another node wrote in
//!   between (see [`RedisOptions::record_cache_capacity`]). The same copy is the
//!   store's [`Store::write_hint`], from which sessiond-axum makes a request's first
//!   storage write, conditional on its version, without resolving the cookie first: a
//!   web request that updates its session is then one round trip. A write that moves
//!   no index entry (the usual storage write) runs the small `PUT` script rather than
//!   the batch `COMMIT`.
//! - Expiry walks the known apps and takes only what is due from `due` and `purge`, so
//!   its cost grows with what is due, not with what is stored. Several nodes may sweep
//!   at once: each close is a revision-checked write, so each session closes once.
//!
//! # Reads from memory
//!
//! With [`RedisOptions::read_cache`] set (off by default; not on Redis Cluster), a node
//! answers a read of a session by token (a resolve, or a touch that has nothing to write
//! yet) from the copy it last read, when that copy is younger than the set age (1 s is
//! a good value), the node's tracking connection is up, and the change would write
//! nothing; anything else goes to the server as before. The tracking connection speaks
//! RESP3 and asks the server to report every write under the prefix
//! (`CLIENT TRACKING ON BCAST PREFIX <prefix>:`), whoever makes it: a kill, logout,
//! rotation or storage write on one node is seen on the others about a millisecond
//! later (docs/BENCHMARKS.md), and never later than the set age. When the connection
//! is lost the node empties its copies at once and reads from the server until
//! tracking is on again. Nothing needs announcing, so nodes with and without the cache
//! can share a prefix. Each write costs the server a report per key it changes, and
//! the node the reading of them: 13 % fewer many-sessions increments in the benchmark.
//! [`RedisStore::read_cache_hits`] counts the reads answered from memory; the module
//! `tracking.rs` has the details.
//!
//! # Failures and what a Redis crash can lose
//!
//! Every operation is bounded by [`RedisOptions::op_timeout`]; a timeout or a lost
//! connection answers [`StoreError::Unavailable`] when the operation had sent no write
//! yet (nothing changed; the connection is re-established in the background), and
//! [`StoreError::OutcomeUnknown`] once its commit script was sent: Redis may have run
//! it (a server that was only slow, or stopped, runs it when it resumes) or not, and the
//! caller must read again before retrying. A timed-out open may so leave a session that
//! no client holds, which then idles out.
//!
//! The store is as durable as the server is configured to be. With persistence off, a
//! Redis restart loses every session (clients must sign in again) and the list of apps
//! (it is rebuilt as sessions open). With AOF `appendfsync everysec` (the usual choice)
//! a crash loses at most about the last second of writes; with `always`, nothing that
//! was acknowledged. Because the AOF keeps writes in order and index entries are
//! written before their record and removed after it, a crash that loses the last writes
//! can leave an entry that points to nothing (rejected, then expired), never a record
//! its token cannot reach. A replica promoted after a failover may miss the last
//! writes its primary acknowledged (Redis replication is asynchronous). Events are at
//! most once: a node that was disconnected from pub/sub misses what was sent meanwhile,
//! and its clients learn the state at their next request.
//!
//! # Unreadable records
//!
//! A record whose fields do not decode (JSON nested deeper than the decoder's limit of
//! 128, a revision that is not a number, text that is not a session, a missing field)
//! harms only its session, as [`sessiond_core::store`] describes: reads and writes of
//! that session answer [`StoreError::Corrupt`]; lists, close-all and the expiry sweep
//! pass over it; admission reads the seats from the `seated` index, so the record
//! keeps its seat, but never picks it to displace and leaves it out of its user's
//! count. An unreadable record indexed as closed and past retention is purged like any
//! other. Closing the session by id deletes the record and its entries in the app's
//! indexes (the user's index entry, which cannot be named without the record, is
//! dropped when admission next reads that user; the token entry expires by its TTL)
//! and answers [`CloseOutcome::Discarded`]. Each meeting is counted
//! ([`RedisStore::unreadable_records`]) and logged with the session id and record key.
//!
//! # TLS
//!
//! `rediss://` (or `valkeys://`) connects over TLS with rustls (the *ring* provider).
//! The server's certificate is always verified, host name included: against the
//! system's roots, or, with the query parameter `ca_cert=/path/ca.pem`
//! (`rediss://:password@cache.internal:6380/0?ca_cert=/etc/sessiond/redis-ca.pem`),
//! against the certificates of that file only, for a private CA. `#insecure`, the
//! redis client's switch that accepts any certificate, is refused, and so is
//! `ca_cert` on a plain `redis://` URL. A certificate that does not verify fails the
//! connection as [`StoreError::Unavailable`], with a message saying what to check;
//! the pub/sub connection of the [`RedisBus`] connects the same way. Client
//! certificates (mutual TLS) are not supported.
//!
//! # Redis Cluster
//!
//! `redis+cluster://host:port,host:port` (or `rediss+cluster://`, with the same TLS
//! rules) connects to a Redis Cluster through some of its primaries. The layout is the
//! same: an app's keys share its hash tag, so each script runs on the app's node; the
//! global entries live in slots of their own and are written one by one, never in one
//! pipeline with other slots (see the `conn` module). While a slot moves, the
//! multi-key scripts wait out `TRYAGAIN` within the operation timeout, and a record a
//! gather script cannot see because it has already moved is never taken for gone (the
//! `ghosts` module). docs/OPERATIONS.md, "Redis Cluster", says how it is tested.

mod bus;
mod cache;
mod commit;
mod conn;
mod error;
mod expiry;
mod ghosts;
mod hooks;
mod keys;
mod open;
mod outcome;
mod read;
mod scripts;
mod tls;
mod tracking;
mod unreadable;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use conn::Conn;
use sessiond_core::admission::Admission;
use sessiond_core::backend::{Effect, ReadCache, Seen};
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Session, SessionId, Store, StoreError,
    Timestamp, TokenHash,
};

pub use bus::RedisBus;
pub use error::Error;
pub use tracking::CLIENT_NAME as READ_CACHE_CLIENT_NAME;

use cache::Cache;
use keys::Keys;
use unreadable::Unreadable;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sessiond";
/// The default bound of every operation.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The default number of entries of each node-local cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;
/// The default number of session records a node keeps as write hints.
pub const DEFAULT_RECORD_CACHE_CAPACITY: usize = 4_096;

/// How a [`RedisStore`] connects and names its keys.
///
/// ```
/// use std::time::Duration;
/// use sessiond_redis::RedisOptions;
///
/// let options = RedisOptions::default()
///     .with_prefix("shop-prod")
///     .with_op_timeout(Duration::from_millis(500))
///     .with_cache_capacity(10_000);
/// assert_eq!(options.prefix, "shop-prod");
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Namespace of every key (and of the event channel), so several deployments can
    /// share one server. No `{` or `}`. Default `sessiond`.
    pub prefix: String,
    /// The longest any operation may take, retries included; past it the operation
    /// fails with [`StoreError::Unavailable`]. Also bounds connecting. Default 2 s.
    pub op_timeout: Duration,
    /// Entries kept by each node-local cache (token → app and id, id → app); below 2
    /// disables caching. Default 100,000 (a few MiB).
    pub cache_capacity: usize,
    /// Session records a node keeps for a second after reading or writing them, so that
    /// a write that follows a read (a request that resolves its cookie, then updates
    /// the session) commits in one round trip instead of two. The record is only a
    /// hint: the commit is checked against its revision, and a stale hint costs a read.
    /// Never used to answer a read. Records over 16 KiB of data are not kept; below 2
    /// disables it. Default 4,096.
    pub record_cache_capacity: usize,
    /// Answer reads of a session by token from this node's memory, for at most this
    /// long after the copy was read, while the server reports every write under the
    /// prefix (RESP3 client tracking; default off). Not on Redis Cluster. See "Reads
    /// from memory" in the crate docs.
    pub read_cache: Option<Duration>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            record_cache_capacity: DEFAULT_RECORD_CACHE_CAPACITY,
            read_cache: None,
        }
    }
}

impl RedisOptions {
    /// Sets [`RedisOptions::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`RedisOptions::op_timeout`].
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Sets [`RedisOptions::cache_capacity`].
    pub fn with_cache_capacity(mut self, entries: usize) -> Self {
        self.cache_capacity = entries;
        self
    }

    /// Sets [`RedisOptions::record_cache_capacity`].
    pub fn with_record_cache_capacity(mut self, entries: usize) -> Self {
        self.record_cache_capacity = entries;
        self
    }
}

/// Sessions in Redis. Cheap to clone (clones share the connection and caches).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    keys: Keys,
    op_timeout: Duration,
    tokens: Cache<TokenHash, (Arc<str>, SessionId)>,
    ids: Cache<SessionId, Arc<str>>,
    records: Cache<SessionId, cache::Hint>,
    stripes: Stripes,
    bus: Arc<RedisBus>,
    unreadable: Unreadable,
    read_cache: Option<Arc<ReadCache>>,
}

/// Node-local queues for writers of the same session (or admissions of the same app).
///
/// Correctness never depends on them (the revision checks do that, across nodes too);
/// they only make this node's writers of one session take turns instead of failing each
/// other's commits, which under contention turns many wasted round trips into a queue.
/// An operation holds at most one stripe of each kind, a session's before an app's (a
/// privilege change that may need admission), so they cannot deadlock.
struct Stripes {
    sessions: Box<[tokio::sync::Mutex<()>]>,
    apps: Box<[tokio::sync::Mutex<()>]>,
}

impl Stripes {
    const COUNT: usize = 256;

    fn new() -> Self {
        let queues = || {
            (0..Self::COUNT)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect()
        };
        Stripes {
            sessions: queues(),
            apps: queues(),
        }
    }

    /// The queue of session `id`. A task holding it may go on to take its app's
    /// queue (a privilege change), never the other way round.
    async fn session(&self, id: SessionId) -> tokio::sync::MutexGuard<'_, ()> {
        self.sessions[(id.low_bits() as usize) % Self::COUNT]
            .lock()
            .await
    }

    /// The admission queue of `app`: a queue of its own, apart from the sessions'
    /// (a shared one would make a task that holds a session's queue wait for itself
    /// where the two fall on the same stripe).
    async fn app(&self, app: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(app);
        self.apps[(h as usize) % Self::COUNT].lock().await
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// The layout of the keys this build reads and writes (their names and what they
/// hold, as the crate docs describe), recorded under `<prefix>:layout`.
pub const LAYOUT: u64 = 1;

impl RedisStore {
    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://...` for TLS, see "TLS" in the crate docs) and checks that it answers,
    /// within [`RedisOptions::op_timeout`]. Needs a Tokio runtime. A server that is
    /// down, or whose certificate is refused, gives [`StoreError::Unavailable`]; use
    /// [`RedisStore::connect_lazy`] to start without one.
    ///
    /// It also checks the layout of the keys under the prefix ([`LAYOUT`]): a prefix a
    /// newer sessiond laid out is refused (nothing is read or written); one with
    /// nothing recorded (new, or written before layouts were recorded, which is this
    /// layout) gets [`LAYOUT`] recorded.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        let store = Self::connect_lazy(url, options)?;
        store.ping().await?;
        let found = store.bounded(store.record_layout()).await?;
        if found > LAYOUT {
            return Err(sessiond_core::store::written_by_newer(
                &format!("the Redis store under prefix {:?}", store.prefix()),
                found,
                LAYOUT,
            ));
        }
        if let Some(c) = &store.inner.read_cache {
            // Connected means reading from memory where it can, as soon as tracking is
            // on; until then (or if it cannot be) every read goes to the server.
            let deadline = tokio::time::Instant::now() + store.inner.op_timeout;
            while !c.is_live() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(store)
    }

    /// Records [`LAYOUT`] where nothing is recorded; gives the layout recorded.
    async fn record_layout(&self) -> error::Result<u64> {
        let key = self.inner.keys.layout();
        let mut conn = self.conn();
        // "OK" when this sets it, nil when it was there.
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(LAYOUT)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let found: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        found.trim().parse::<u64>().map_err(|_| {
            error::Error::Corrupt(format!("{key} holds {found:?}, not a layout version"))
        })
    }

    /// Prepares a store for the server at `url` without contacting it: the first
    /// operation connects (and fails with [`StoreError::Unavailable`] while the server
    /// is down). Fails only on a bad URL or prefix, or a `ca_cert` file that cannot be
    /// read or holds no certificate. Must be called within a Tokio runtime.
    pub fn connect_lazy(url: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        let keys = Keys::new(&options.prefix)?;
        if options.read_cache.is_some() && tls::is_cluster(url) {
            return Err(Error::Config(
                "read_cache is not available on Redis Cluster (tracking would have to be \
                 asked of every primary): leave it off there"
                    .into(),
            )
            .into());
        }
        let (client, conn) = if tls::is_cluster(url) {
            let (cluster, first) = tls::cluster_client(url, options.op_timeout)?;
            (first, Conn::Cluster(conn::LazyCluster::new(cluster)))
        } else {
            let client = tls::client(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.op_timeout))
                .set_response_timeout(Some(options.op_timeout))
                .set_number_of_retries(0);
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(Error::from)?;
            (client, Conn::Single(conn))
        };
        let read_cache = options.read_cache.map(|max_age| {
            let cache = Arc::new(ReadCache::new(max_age));
            tracking::start(&client, keys.prefix(), &cache, options.op_timeout);
            cache
        });
        let bus = Arc::new(RedisBus::new(
            client,
            conn.clone(),
            keys.channel(),
            options.op_timeout,
        ));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                op_timeout: options.op_timeout,
                tokens: Cache::new(options.cache_capacity),
                ids: Cache::new(options.cache_capacity),
                records: Cache::new(options.record_cache_capacity),
                stripes: Stripes::new(),
                bus,
                unreadable: Unreadable::default(),
                read_cache,
            }),
        })
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// How many times an operation of this store (any clone of it) met a session
    /// record it could not decode and went on around it, since the store was made: a
    /// counter for the metrics. Each meeting counts, so one bad record that every
    /// sweep passes over keeps it growing until an administrator closes that session
    /// by id (which removes the record). The log names the records (`warn`, once per
    /// record and process). See "Unreadable records" in the crate docs.
    pub fn unreadable_records(&self) -> u64 {
        self.inner.unreadable.count()
    }

    /// Reads of a session answered from this node's memory since the store was made
    /// (0 without [`RedisOptions::read_cache`]), for the metrics.
    pub fn read_cache_hits(&self) -> u64 {
        self.inner.read_cache.as_ref().map_or(0, |c| c.hits())
    }

    /// Whether this node's read cache is on and its tracking connection up.
    pub fn read_cache_live(&self) -> bool {
        self.inner.read_cache.as_ref().is_some_and(|c| c.is_live())
    }

    /// The event bus of this store's prefix.
    pub fn bus(&self) -> Arc<RedisBus> {
        self.inner.bus.clone()
    }

    /// Deletes every key under this store's prefix (all sessions of all apps), for tests
    /// and resets. Walks the keyspace with `SCAN`, so it may take a while on a large
    /// server; it is not bounded by the operation timeout.
    pub async fn delete_all(&self) -> Result<usize, StoreError> {
        read::delete_prefix(self.conn(), self.inner.keys.prefix())
            .await
            .map_err(StoreError::from)
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Runs `fut` within the operation timeout, mapping errors into [`StoreError`]: a
    /// timeout or a lost connection is [`StoreError::OutcomeUnknown`] once a commit of
    /// the operation was sent, [`StoreError::Unavailable`] before (see [`outcome`]).
    async fn bounded<T>(&self, fut: impl Future<Output = error::Result<T>>) -> StoreResult<T> {
        let writes = Arc::new(outcome::Writes::default());
        let run = outcome::track(writes.clone(), fut);
        match tokio::time::timeout(self.inner.op_timeout, run).await {
            Ok(r) => r.map_err(|e| outcome::classify(&writes, e)),
            Err(_) => Err(outcome::classify(
                &writes,
                Error::TimedOut(self.inner.op_timeout),
            )),
        }
    }
}

impl RedisStore {
    /// What an operation did, for this node's copies: the server reports every write
    /// to the other nodes (and to this one), but this node follows its own writes at
    /// once, before its next read.
    fn after(&self, seen: Option<Seen>, effect: &Effect<'_>) {
        if let Some(c) = &self.inner.read_cache {
            c.after(seen, effect);
        }
    }
}

/// Waits a little before retrying after a conflict: nothing the first time, then a
/// random pause growing to 10 ms, so contenders spread out.
async fn backoff(attempt: u32) {
    if attempt < 2 {
        tokio::task::yield_now().await;
        return;
    }
    let mut b = [0u8; 2];
    let jitter = match getrandom::fill(&mut b) {
        Ok(()) => u64::from(u16::from_le_bytes(b)),
        Err(_) => u64::from(attempt) * 7919,
    };
    let cap = u64::from(attempt.min(10)) * 1000;
    tokio::time::sleep(Duration::from_micros(jitter % cap.max(1))).await;
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn open(
        &self,
        session: Session,
        admission: &Admission,
        now: Timestamp,
    ) -> StoreResult<OpenOutcome> {
        let out = self
            .bounded(self.open_session(session, admission, now))
            .await;
        self.after(None, &Effect::of_open(&out));
        out
    }

    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        self.bounded(async {
            Ok(self
                .fetch(lookup)
                .await?
                .map(|(_, s)| Arc::unwrap_or_clone(s).session))
        })
        .await
    }

    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        let cache = self.inner.read_cache.as_deref();
        if let Some(answer) = cache.and_then(|c| c.answer(lookup, change, cond, now)) {
            return Ok(answer);
        }
        let seen = cache.map(ReadCache::begin);
        let out = self
            .bounded(self.modify_session(lookup, change, cond, now))
            .await;
        self.after(seen, &Effect::of_modify(lookup, &out));
        out
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        let out = self.bounded(self.close_session(id, reason, by, now)).await;
        self.after(None, &Effect::of_close(id, &out));
        out
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
        let out = self
            .bounded(self.close_all_sessions(app, except, user, reason, by, now))
            .await;
        self.after(None, &Effect::of_close_all(&out));
        out
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        self.bounded(self.list_sessions(query)).await
    }

    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        self.bounded(self.app_counts(app)).await
    }

    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        let out = self.bounded(self.expire(now, limit)).await;
        self.after(None, &Effect::of_expiry(&out));
        out
    }

    async fn import(&self, session: Session) -> StoreResult<()> {
        let id = session.id;
        let out = self.bounded(self.import_session(session)).await;
        // Even a failed import may have been applied (an unknown outcome).
        self.after(None, &Effect::Changed(vec![id]));
        out
    }

    async fn ping(&self) -> StoreResult<()> {
        self.bounded(async {
            let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }

    fn write_hint(&self, lookup: Lookup) -> Option<Session> {
        let id = match lookup {
            Lookup::Id(id) => id,
            Lookup::Token(h) => self.inner.tokens.get(&h)?.1,
        };
        self.hinted(lookup, id).map(|s| s.session.clone())
    }

    fn event_bus(&self) -> Option<Arc<dyn sessiond_core::events::EventBus>> {
        Some(self.inner.bus.clone())
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        Some(self)
    }
}

/// The webhook outbox: per app, in the app's slot (`hooks.rs`); a session write adds
/// what it owes in its own `COMMIT` group.
#[async_trait]
impl sessiond_core::hooks::Outbox for RedisStore {
    fn routes(&self) -> &sessiond_core::hooks::HookRoutes {
        hooks::routes(&self.inner.keys)
    }

    async fn push(&self, deliveries: Vec<sessiond_core::hooks::Delivery>) -> StoreResult<()> {
        self.bounded(hooks::push(&mut self.conn(), &self.inner.keys, deliveries))
            .await
    }

    async fn claim(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<sessiond_core::hooks::Delivery>> {
        self.bounded(hooks::claim(
            &mut self.conn(),
            &self.inner.keys,
            now,
            until,
            limit,
        ))
        .await
    }

    async fn settle(
        &self,
        app: &str,
        id: sessiond_core::hooks::HookId,
        claimed_until: Timestamp,
        outcome: sessiond_core::hooks::Settle,
    ) -> StoreResult<()> {
        self.bounded(hooks::settle(
            &mut self.conn(),
            &self.inner.keys,
            app,
            id,
            claimed_until,
            &outcome,
        ))
        .await
    }

    async fn deliveries(
        &self,
        query: &sessiond_core::hooks::DeliveryQuery,
    ) -> StoreResult<Vec<sessiond_core::hooks::Delivery>> {
        self.bounded(hooks::list(&mut self.conn(), &self.inner.keys, query))
            .await
    }

    async fn resend(
        &self,
        app: &str,
        id: sessiond_core::hooks::HookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.bounded(hooks::resend(
            &mut self.conn(),
            &self.inner.keys,
            app,
            id,
            now,
        ))
        .await
    }

    async fn tally(&self) -> StoreResult<sessiond_core::hooks::OutboxCounts> {
        self.bounded(hooks::tally(&mut self.conn(), &self.inner.keys))
            .await
    }

    async fn forget_dead(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        self.bounded(hooks::forget_dead(
            &mut self.conn(),
            &self.inner.keys,
            before,
            limit,
        ))
        .await
    }
}
