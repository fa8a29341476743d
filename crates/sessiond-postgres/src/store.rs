//! [`PostgresStore`] and its [`PostgresOptions`]: connecting (URL, pool, server-side
//! time limits, migrations) and the [`Store`] trait, each method a bounded, retried
//! call into [`crate::admit`] or [`crate::ops`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use sessiond_core::admission::Admission;
use sessiond_core::events::EventBus;
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Session, SessionId, Store, StoreError,
    Timestamp,
};

use crate::bus::{self, PostgresEventBus};
use crate::cache::{CacheListener, Notifier};
use crate::db::{retrying, Db};
use crate::error::{PgResult, PostgresError};
use crate::schema::{self, Sql};
use crate::unreadable::Unreadable;
use crate::{admit, ops, tls};
use sessiond_core::backend::{Effect, ReadCache, Seen};

/// How long migrations at connect may take (they may wait for another node's).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a [`PostgresStore`].
///
/// ```
/// use std::time::Duration;
/// use sessiond_postgres::PostgresOptions;
///
/// let options = PostgresOptions {
///     schema: "crm_sessions".into(),
///     op_timeout: Duration::from_millis(500),
///     ..Default::default()
/// };
/// assert_eq!(options.pool_size, 16);
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The schema every table lives in (default `sessiond`): 1 to 48 lowercase ASCII
    /// letters, digits or `_`, not starting with a digit. Stores with different schemas
    /// in one database are independent (their events too).
    pub schema: String,
    /// Most pooled connections (default 16). The event bus uses one more, outside the
    /// pool, while something subscribes.
    pub pool_size: usize,
    /// Time limit of every operation, waiting for a connection included (default 2 s).
    pub op_timeout: Duration,
    /// Commit touch writes without waiting for the WAL flush (default true); see the
    /// crate docs on durability.
    pub async_touches: bool,
    /// Answer reads of a session by token from this node's memory, for at most this
    /// long after the copy was read, while the other nodes' change notices arrive
    /// (default off). Every node sharing the store must have it on: a node without it
    /// does not announce its changes. See "Reads from memory" in the crate docs.
    pub read_cache: Option<Duration>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "sessiond".into(),
            pool_size: 16,
            op_timeout: Duration::from_secs(2),
            async_touches: true,
            read_cache: None,
        }
    }
}

/// Sessions in PostgreSQL, shared by every node that connects to the same database
/// and schema. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PostgresStore {
    db: Arc<Db>,
    bus: Arc<PostgresEventBus>,
    schema: Arc<str>,
    async_touches: bool,
    unreadable: Arc<Unreadable>,
    cache: Option<Cached>,
}

/// The read cache and where this node announces its changes.
#[derive(Clone)]
struct Cached {
    cache: Arc<ReadCache>,
    notifier: Notifier,
}

impl Cached {
    /// What an operation did: this node's copies follow now, the other nodes' when the
    /// notice arrives (sessions that changed, or every copy when which is unknown).
    fn after(&self, seen: Option<Seen>, effect: &Effect<'_>) {
        self.cache.after(seen, effect);
        match effect {
            Effect::Changed(ids) => self.notifier.changed(ids),
            Effect::Unknown => self.notifier.everything(),
            Effect::Read(_) | Effect::Contradicted(_) | Effect::Nothing => {}
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("op_timeout", &self.db.op_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`,
    /// or the `key=value` form), creates or migrates the schema, and returns the store.
    /// `sslmode` and `sslrootcert` choose TLS ("Connecting" in the crate docs).
    ///
    /// Fails with [`StoreError::Unavailable`] when PostgreSQL cannot be reached within
    /// `op_timeout` or its certificate is refused, and with [`StoreError::Backend`]
    /// (holding a [`PostgresError`]) for a bad URL, TLS setting or schema name or a
    /// refused login.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        Ok(Self::try_connect(url, options).await?)
    }

    async fn try_connect(url: &str, options: PostgresOptions) -> PgResult<Self> {
        schema::check_schema(&options.schema)?;
        let op_timeout = options.op_timeout.max(Duration::from_millis(1));
        let (url, tls, ssl_mode) = tls::configure(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(PostgresError::BadUrl)?;
        // `configure` took every sslmode it could see off the URL, so tokio-postgres must
        // find none. If it does, the two read the URL differently (an unencoded '?' or
        // '@' in the password, a percent-encoded key): refuse rather than let its mode
        // be overridden, which could connect in the clear a URL that asks for TLS.
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer {
            return Err(PostgresError::Tls(
                "the URL's sslmode could not be read unambiguously: percent-encode the user \
                 name and password (a '?', '@', '/' or '#' in them) and write the parameter \
                 as sslmode=..."
                    .into(),
            ));
        }
        config.ssl_mode(ssl_mode);
        tune(&mut config, op_timeout);
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(op_timeout))
            .create_timeout(Some(op_timeout))
            .recycle_timeout(Some(op_timeout))
            .build()?;
        let db = Arc::new(Db {
            pool,
            sql: Sql::new(&options.schema),
            op_timeout,
            tls,
        });

        let mut conn = db.bounded("connect", db.conn()).await?;
        match tokio::time::timeout(
            MIGRATION_TIMEOUT,
            schema::migrate(&mut conn, &options.schema),
        )
        .await
        {
            Ok(done) => {
                conn.release();
                done?;
            }
            Err(_) => {
                return Err(PostgresError::Timeout {
                    what: "the schema migrations",
                    timeout: MIGRATION_TIMEOUT,
                })
            }
        }

        let cache = options.read_cache.map(|max_age| {
            let channel = format!("{}_changes", options.schema);
            let cache = Arc::new(ReadCache::new(max_age));
            let listener = CacheListener {
                cache: Arc::downgrade(&cache),
                channel: channel.clone(),
            };
            let mut config = config.clone();
            config.application_name("sessiond read cache");
            tokio::spawn(bus::listen(Arc::new(listener), db.clone(), config));
            Cached {
                cache,
                notifier: Notifier::start(db.clone(), channel),
            }
        });
        if let Some(c) = &cache {
            // Connected means reading from memory where it can, as soon as the
            // listener is up; until then (or if it cannot be) every read goes to the
            // store, as without the cache.
            let deadline = tokio::time::Instant::now() + op_timeout;
            while !c.cache.is_live() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let channel = format!("{}_events", options.schema);
        Ok(PostgresStore {
            bus: Arc::new(PostgresEventBus::new(db.clone(), config, channel)),
            db,
            schema: Arc::from(options.schema),
            async_touches: options.async_touches,
            unreadable: Arc::default(),
            cache,
        })
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// How many times an operation of this store (any clone of it) met a row whose
    /// body it could not decode and went on around it, since the store was made: a
    /// counter for the metrics. Each meeting counts, so one bad row that every sweep
    /// passes over keeps it growing until an administrator closes that session by id
    /// (which deletes the row). The log names the rows (`warn`, once per row and
    /// process). See "Unreadable rows" in the crate docs.
    pub fn unreadable_records(&self) -> u64 {
        self.unreadable.count()
    }

    /// Reads of a session answered from this node's memory since the store was made
    /// (0 without [`PostgresOptions::read_cache`]), for the metrics.
    pub fn read_cache_hits(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.cache.hits())
    }

    /// The event bus (also what [`Store::event_bus`] returns).
    pub fn bus(&self) -> &PostgresEventBus {
        &self.bus
    }
}

/// Connection settings the store relies on: a connect timeout, TCP keepalives, and the
/// server-side statement and idle-in-transaction timeouts (see the crate docs).
fn tune(config: &mut tokio_postgres::Config, op_timeout: Duration) {
    config.connect_timeout(op_timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("sessiond");
    }
    let ms = op_timeout.as_millis().max(1);
    let ours = format!(
        "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={}",
        ms * 2 + 1000
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(options);
}

/// Runs `$body` (which may use `$c`, a `&mut Conn`) on a pooled connection, retrying
/// aborted transactions, all within the operation deadline. A failure for want of an
/// answer is [`StoreError::OutcomeUnknown`] once a commit was sent (see
/// [`crate::outcome`]), [`StoreError::Unavailable`] before.
macro_rules! run {
    ($store:expr, $what:literal, |$c:ident| $body:expr) => {{
        let db = &*$store.db;
        let writes = std::sync::Arc::new(crate::outcome::Writes::default());
        let out: PgResult<_> = db
            .bounded(
                $what,
                crate::outcome::track(writes.clone(), async {
                    #[allow(unused_mut)]
                    let mut $c = db.conn().await?;
                    let out = retrying!($body);
                    $c.release();
                    out
                }),
            )
            .await;
        out.map_err(|e| crate::outcome::classify(&writes, e))
    }};
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn open(
        &self,
        session: Session,
        admission: &Admission,
        now: Timestamp,
    ) -> StoreResult<OpenOutcome> {
        let (sql, bad) = (&self.db.sql, &*self.unreadable);
        let out = run!(self, "open", |c| admit::open(
            &mut c, sql, bad, &session, admission, now
        )
        .await);
        if let Some(c) = &self.cache {
            c.after(None, &Effect::of_open(&out));
        }
        out
    }

    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        let (sql, bad) = (&self.db.sql, &*self.unreadable);
        run!(self, "get", |c| ops::get(&c, sql, bad, lookup).await)
    }

    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        let (sql, bad, touches) = (&self.db.sql, &*self.unreadable, self.async_touches);
        if let Some(answer) = self
            .cache
            .as_ref()
            .and_then(|c| c.cache.answer(lookup, change, cond, now))
        {
            return Ok(answer);
        }
        let seen = self.cache.as_ref().map(|c| c.cache.begin());
        let out = run!(self, "modify", |c| ops::modify(
            &mut c, sql, bad, lookup, change, cond, now, touches
        )
        .await);
        if let Some(c) = &self.cache {
            c.after(seen, &Effect::of_modify(lookup, &out));
        }
        out
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        let (sql, bad) = (&self.db.sql, &*self.unreadable);
        let out = run!(self, "close", |c| ops::close(
            &mut c, sql, bad, id, reason, by, now
        )
        .await);
        if let Some(c) = &self.cache {
            c.after(None, &Effect::of_close(id, &out));
        }
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
        let (sql, bad) = (&self.db.sql, &*self.unreadable);
        let out = run!(self, "close_all", |c| ops::close_all(
            &mut c, sql, bad, app, except, user, reason, by, now
        )
        .await);
        if let Some(c) = &self.cache {
            c.after(None, &Effect::of_close_all(&out));
        }
        out
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        let (sql, bad) = (&self.db.sql, &*self.unreadable);
        run!(self, "list", |c| ops::list(&c, sql, bad, query).await)
    }

    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        let sql = &self.db.sql;
        run!(self, "counts", |c| ops::counts(&c, sql, app).await)
    }

    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        // Leave room in the deadline for the batch under way when the budget runs out.
        let (sql, bad, budget) = (&self.db.sql, &*self.unreadable, self.db.op_timeout / 2);
        let out = run!(self, "expire_due", |c| ops::expire_due(
            &mut c, sql, bad, now, limit, budget
        )
        .await);
        if let Some(c) = &self.cache {
            c.after(None, &Effect::of_expiry(&out));
        }
        out
    }

    async fn import(&self, session: Session) -> StoreResult<()> {
        let sql = &self.db.sql;
        let out = run!(self, "import", |c| ops::import(&mut c, sql, &session).await);
        if let Some(c) = &self.cache {
            // Even a failed import may have been applied (an unknown outcome).
            c.after(None, &Effect::Changed(vec![session.id]));
        }
        out
    }

    async fn ping(&self) -> StoreResult<()> {
        run!(self, "ping", |c| c
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(PostgresError::from))
    }

    fn event_bus(&self) -> Option<Arc<dyn EventBus>> {
        Some(self.bus.clone())
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        Some(self)
    }
}

/// The webhook outbox: the `deliveries` table (`outbox.rs`), written in the
/// transaction of each change.
#[async_trait]
impl sessiond_core::hooks::Outbox for PostgresStore {
    fn routes(&self) -> &sessiond_core::hooks::HookRoutes {
        &self.db.sql.routes
    }

    async fn push(&self, deliveries: Vec<sessiond_core::hooks::Delivery>) -> StoreResult<()> {
        let sql = &self.db.sql;
        run!(self, "hooks_push", |c| crate::outbox::keep(
            &*c,
            sql,
            &deliveries
        )
        .await)
    }

    async fn claim(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<sessiond_core::hooks::Delivery>> {
        let sql = &self.db.sql;
        run!(self, "hooks_claim", |c| crate::outbox::claim(
            &c, sql, now, until, limit
        )
        .await)
    }

    async fn settle(
        &self,
        _app: &str,
        id: sessiond_core::hooks::HookId,
        claimed_until: Timestamp,
        outcome: sessiond_core::hooks::Settle,
    ) -> StoreResult<()> {
        let sql = &self.db.sql;
        run!(self, "hooks_settle", |c| crate::outbox::settle(
            &mut c,
            sql,
            id,
            claimed_until,
            &outcome
        )
        .await)
    }

    async fn deliveries(
        &self,
        query: &sessiond_core::hooks::DeliveryQuery,
    ) -> StoreResult<Vec<sessiond_core::hooks::Delivery>> {
        let sql = &self.db.sql;
        run!(self, "hooks_list", |c| crate::outbox::list(&c, sql, query)
            .await)
    }

    async fn resend(
        &self,
        app: &str,
        id: sessiond_core::hooks::HookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let sql = &self.db.sql;
        run!(self, "hooks_resend", |c| crate::outbox::resend(
            &mut c, sql, app, id, now
        )
        .await)
    }

    async fn tally(&self) -> StoreResult<sessiond_core::hooks::OutboxCounts> {
        let sql = &self.db.sql;
        run!(self, "hooks_tally", |c| crate::outbox::tally(&c, sql).await)
    }

    async fn forget_dead(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        let sql = &self.db.sql;
        run!(self, "hooks_forget_dead", |c| crate::outbox::forget_dead(
            &c, sql, before, limit
        )
        .await)
    }
}
