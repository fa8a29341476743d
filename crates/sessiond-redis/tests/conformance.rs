//! The store conformance suite on Redis, each test under its own random key prefix
//! (deleted when the test's store is dropped), plus Redis-specific checks: behaviour
//! with no server, the key layout, and what a resolve costs.
//!
//! Server: `SESSIOND_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Without a
//! server the suite is skipped loudly, except under `CI=true`, where it fails.

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

fn server_url() -> String {
    std::env::var("SESSIOND_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn random_prefix() -> String {
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
        Ok(store) => Some(TestStore(store)),
        Err(e) => {
            sessiond_core::skip::skip("Redis store suite", &format!("no Redis at {url} ({e})"));
            None
        }
    }
}

sessiond_core::conformance_tests!(fresh_store());

/// A [`RedisStore`] that deletes its keys when the test is done with it.
struct TestStore(RedisStore);

impl Drop for TestStore {
    /// Deletes the test's keys from a thread of its own, with its own runtime and
    /// connection: the test's runtime may be shutting down when the last clone goes.
    fn drop(&mut self) {
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
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        self.0.close_all(app, except, reason, by, now).await
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
}

mod redis_specific;
