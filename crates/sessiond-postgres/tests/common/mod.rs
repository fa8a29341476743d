//! What the PostgreSQL test binaries share: where the server is, whether to skip,
//! stores on fresh schemas that are dropped when the store is, and private clusters
//! that speak TLS only.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sessiond_core::admission::Admission;
use sessiond_core::events::EventBus;
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Session, SessionId, Store, StoreError,
    Timestamp,
};
use sessiond_postgres::{PostgresOptions, PostgresStore};
use sessiond_testkit::{TestCa, TlsPostgres};

/// Test schemas are named `sessiond_test_<unix seconds>_<random hex>`.
const PREFIX: &str = "sessiond_test_";
/// Test schemas older than this are leftovers of killed runs, dropped on sight.
const STALE_AFTER_S: u64 = 3600;

/// The server the tests use: `SESSIOND_TEST_POSTGRES_URL`, else the local default.
pub fn url() -> String {
    std::env::var("SESSIOND_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other run uses.
pub fn fresh_schema() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("OS random numbers");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{PREFIX}{secs}_{hex}")
}

/// Options for a test store on `schema`.
pub fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: schema.into(),
        pool_size: 8,
        op_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Connects a store on a fresh schema; `None` (said loudly) when no PostgreSQL answers
/// and we are not in CI, where that is a failure.
pub async fn fresh_store() -> Option<TestStore> {
    fresh_store_with(|_| {}).await
}

/// [`fresh_store`] with options changed by `tune`.
pub async fn fresh_store_with(tune: impl FnOnce(&mut PostgresOptions)) -> Option<TestStore> {
    let url = url();
    let schema = fresh_schema();
    let mut options = options(&schema);
    tune(&mut options);
    match PostgresStore::connect(&url, options).await {
        Ok(store) => {
            sweep_stale(&url).await;
            Some(TestStore { store, schema, url })
        }
        Err(StoreError::Unavailable(e)) => {
            sessiond_core::skip::skip(
                "PostgreSQL store suite",
                &format!("no PostgreSQL at {url} ({e})"),
            );
            None
        }
        Err(e) => panic!("PostgreSQL at {url} refused the store: {e}"),
    }
}

/// A private cluster reachable over TLS only, with a certificate `ca` issued for
/// `names`; `None` (said loudly; with `CI=true` a failure) when this machine cannot
/// run one.
pub fn tls_cluster(ca: &TestCa, names: &[&str]) -> Option<TlsPostgres> {
    match TlsPostgres::start(ca, names) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            sessiond_core::skip::skip("PostgreSQL over TLS", &why);
            None
        }
    }
}

/// A raw connection for tests that poke at the database directly.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Drops test schemas that a killed run left behind.
async fn sweep_stale(url: &str) {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return;
    };
    let driver = tokio::spawn(conn);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pattern = format!("{PREFIX}%");
    if let Ok(rows) = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1",
            &[&pattern],
        )
        .await
    {
        for row in rows {
            let name: String = row.get(0);
            let secs = name[PREFIX.len()..]
                .split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok());
            if secs.is_some_and(|s| s + STALE_AFTER_S < now) {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await;
            }
        }
    }
    drop(client);
    let _ = driver.await;
}

/// Drops `schema` from a thread of its own (a destructor cannot await).
fn drop_schema(url: String, schema: String) {
    let job = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                return;
            };
            let driver = tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                ))
                .await;
            drop(client);
            let _ = driver.await;
        });
    });
    let _ = job.join();
}

/// A [`PostgresStore`] on a schema of its own, dropped with the store.
pub struct TestStore {
    pub store: PostgresStore,
    pub schema: String,
    pub url: String,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        drop_schema(self.url.clone(), self.schema.clone());
    }
}

#[async_trait]
impl Store for TestStore {
    fn kind(&self) -> &'static str {
        self.store.kind()
    }
    async fn open(&self, s: Session, a: &Admission, now: Timestamp) -> StoreResult<OpenOutcome> {
        self.store.open(s, a, now).await
    }
    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        self.store.get(lookup).await
    }
    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        self.store.modify(lookup, change, cond, now).await
    }
    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        self.store.close(id, reason, by, now).await
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
        self.store
            .close_all(app, except, user, reason, by, now)
            .await
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        self.store.list(query).await
    }
    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        self.store.counts(app).await
    }
    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        self.store.expire_due(now, limit).await
    }
    async fn import(&self, session: Session) -> StoreResult<()> {
        self.store.import(session).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.store.ping().await
    }
    fn event_bus(&self) -> Option<Arc<dyn EventBus>> {
        self.store.event_bus()
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        self.store.outbox()
    }
}
