//! The store conformance suite on Redis, each test under its own random key prefix
//! (deleted when the test's store is dropped), then the whole suite again with the read
//! cache on (`with_read_cache`), over TLS
//! (`over_tls`: each test on a TLS-only `redis-server` of its own, started with a
//! certificate from a test CA and trusted through `ca_cert`), plus Redis-specific
//! checks: behaviour with no server, the key layout, what a resolve costs, and the
//! certificates TLS refuses.
//!
//! Server: `SESSIOND_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Without a
//! server the suite is skipped loudly, except under `CI=true`, where it fails; so is
//! the suite over TLS on a machine without `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::admission::Admission;
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Session, SessionId, Store, Timestamp,
};
use sessiond_redis::{RedisOptions, RedisStore};
use sessiond_testkit::{RedisCluster, TestCa, TlsRedis};

fn server_url() -> String {
    std::env::var("SESSIOND_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub(crate) fn random_prefix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS random numbers");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("sessiond-test-{hex}")
}

/// A store under a fresh prefix, or none (after saying so) when there is no server.
async fn fresh_store() -> Option<TestStore> {
    let url = server_url();
    let options = RedisOptions::default().with_prefix(random_prefix());
    match RedisStore::connect(&url, options).await {
        Ok(store) => Some(TestStore(store, Own::Nothing)),
        Err(e) => {
            sessiond_core::skip::skip("Redis store suite", &format!("no Redis at {url} ({e})"));
            None
        }
    }
}

/// [`fresh_store`] with the read cache on (copies kept at most 1 s).
async fn fresh_cached_store() -> Option<TestStore> {
    let url = server_url();
    let mut options = RedisOptions::default().with_prefix(random_prefix());
    options.read_cache = Some(Duration::from_secs(1));
    match RedisStore::connect(&url, options).await {
        Ok(store) => {
            assert!(store.read_cache_live(), "tracking is on once connected");
            Some(TestStore(store, Own::Nothing))
        }
        Err(e) => {
            sessiond_core::skip::skip("Redis store suite", &format!("no Redis at {url} ({e})"));
            None
        }
    }
}

/// A TLS-only Redis server of the test's own, with a certificate for `127.0.0.1` from a
/// fresh test CA; `None` (said loudly) when this machine cannot run one.
fn tls_server(test: &str) -> Option<TlsRedis> {
    match TlsRedis::start(&TestCa::new("sessiond test CA"), &["127.0.0.1"]) {
        Ok(server) => Some(server),
        Err(why) => {
            sessiond_core::skip::skip(test, &why);
            None
        }
    }
}

/// `rediss://` to `server`, trusting its CA through `ca_cert`.
fn tls_url(server: &TlsRedis) -> String {
    format!("{}?ca_cert={}", server.url(), server.ca_path().display())
}

/// A store over TLS on a server of its own (see [`tls_server`]).
async fn fresh_tls_store() -> Option<TestStore> {
    let server = tls_server("Redis store suite over TLS")?;
    let options = RedisOptions::default().with_prefix(random_prefix());
    let store = RedisStore::connect(&tls_url(&server), options)
        .await
        .expect("connect over TLS, trusting the test CA");
    Some(TestStore(store, Own::Tls { _server: server }))
}

/// A Redis Cluster of the test's own (three primaries, see [`RedisCluster`]); `None`
/// (said loudly) when this machine cannot run one.
pub(crate) fn cluster(test: &str) -> Option<RedisCluster> {
    match RedisCluster::start(3) {
        Ok(c) => Some(c),
        Err(why) => {
            sessiond_core::skip::skip(test, &why);
            None
        }
    }
}

/// A store on a cluster of its own (see [`cluster`]).
async fn fresh_cluster_store() -> Option<TestStore> {
    let cluster = cluster("Redis store suite on a cluster")?;
    let options = RedisOptions::default().with_prefix(random_prefix());
    let store = RedisStore::connect(&cluster.url(), options)
        .await
        .expect("connect to the cluster");
    Some(TestStore(store, Own::Cluster { _cluster: cluster }))
}

sessiond_core::conformance_tests!(fresh_store());
sessiond_core::hooks_conformance_tests!(fresh_store());

/// The whole suite again with the read cache on: every answer a node gives from its
/// memory must be one the server would have given.
mod with_read_cache {
    sessiond_core::conformance_tests!(super::fresh_cached_store());
}

/// The whole suite again, over TLS.
mod over_tls {
    sessiond_core::conformance_tests!(super::fresh_tls_store());
}

/// The whole suite again, on a three-primary Redis Cluster.
mod on_cluster {
    sessiond_core::conformance_tests!(super::fresh_cluster_store());
    sessiond_core::hooks_conformance_tests!(super::fresh_cluster_store());
}

/// What a test store brings of its own.
pub(crate) enum Own {
    /// Nothing: the shared server, whose keys under the prefix are deleted at the end.
    Nothing,
    /// A TLS-only server, kept running while the store lives.
    Tls { _server: TlsRedis },
    /// A cluster, kept running while the store lives.
    Cluster { _cluster: RedisCluster },
}

/// A [`RedisStore`] that deletes its keys when the test is done with it, or takes its
/// own server (TLS, or a cluster) down with it.
pub(crate) struct TestStore(RedisStore, Own);

impl Drop for TestStore {
    /// Deletes the test's keys from a thread of its own, with its own runtime and
    /// connection: the test's runtime may be shutting down when the last clone goes.
    /// A server of the test's own goes whole, keys and all.
    fn drop(&mut self) {
        if !matches!(self.1, Own::Nothing) {
            return;
        }
        let prefix = self.0.prefix().to_string();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let options = RedisOptions::default().with_prefix(prefix);
                let store = RedisStore::connect(&server_url(), options).await.ok()?;
                tokio::time::timeout(Duration::from_secs(10), store.delete_all())
                    .await
                    .ok()
            })
        });
        let _ = cleanup.join();
    }
}

#[async_trait::async_trait]
impl Store for TestStore {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    async fn open(&self, s: Session, adm: &Admission, now: Timestamp) -> StoreResult<OpenOutcome> {
        self.0.open(s, adm, now).await
    }
    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        self.0.get(lookup).await
    }
    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        self.0.modify(lookup, change, cond, now).await
    }
    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        self.0.close(id, reason, by, now).await
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
        self.0.close_all(app, except, user, reason, by, now).await
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        self.0.list(query).await
    }
    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        self.0.counts(app).await
    }
    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        self.0.expire_due(now, limit).await
    }
    async fn import(&self, session: Session) -> StoreResult<()> {
        self.0.import(session).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.0.ping().await
    }
    fn event_bus(&self) -> Option<Arc<dyn sessiond_core::events::EventBus>> {
        self.0.event_bus()
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        self.0.outbox()
    }
}

mod redis_specific;
