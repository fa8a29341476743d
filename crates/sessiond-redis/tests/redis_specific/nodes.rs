//! The conformance races again, with every call going to the next of several stores
//! (own connection, cache and local queues each) sharing one prefix: the nodes of a
//! deployment. Within one store, local queues keep writers of a session from colliding;
//! here only the revision checks of the scripts stand between the nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sessiond_core::admission::Admission;
use sessiond_core::conformance;
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Session, SessionId, Store, Timestamp,
};
use sessiond_redis::{RedisOptions, RedisStore};

use crate::{fresh_store, server_url, Own, TestStore};

/// Several stores on one prefix, used in turn.
struct Nodes {
    nodes: Vec<RedisStore>,
    next: AtomicUsize,
    _cleanup: TestStore,
}

impl Nodes {
    async fn new(n: usize) -> Option<Nodes> {
        let first = fresh_store().await?;
        Self::beside(first, &server_url(), n).await
    }

    /// `n` nodes on a Redis Cluster of the test's own.
    async fn on_cluster(n: usize) -> Option<Nodes> {
        let cluster = crate::cluster("Redis store races across nodes on a cluster")?;
        let url = cluster.url();
        let first = RedisStore::connect(
            &url,
            RedisOptions::default().with_prefix(crate::random_prefix()),
        )
        .await
        .expect("connect to the cluster");
        Self::beside(
            TestStore(first, Own::Cluster { _cluster: cluster }),
            &url,
            n,
        )
        .await
    }

    /// `first` and `n - 1` more stores on its prefix at `url`.
    async fn beside(first: TestStore, url: &str, n: usize) -> Option<Nodes> {
        let mut nodes = vec![first.0.clone()];
        for _ in 1..n {
            let options = RedisOptions::default().with_prefix(first.0.prefix());
            nodes.push(RedisStore::connect(url, options).await.ok()?);
        }
        Some(Nodes {
            nodes,
            next: AtomicUsize::new(0),
            _cleanup: first,
        })
    }

    fn node(&self) -> &RedisStore {
        &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()]
    }
}

#[async_trait::async_trait]
impl Store for Nodes {
    fn kind(&self) -> &'static str {
        "redis"
    }
    fn event_bus(&self) -> Option<std::sync::Arc<dyn sessiond_core::events::EventBus>> {
        self.node().event_bus()
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        self.node().outbox()
    }
    async fn open(&self, s: Session, adm: &Admission, now: Timestamp) -> StoreResult<OpenOutcome> {
        self.node().open(s, adm, now).await
    }
    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        self.node().get(lookup).await
    }
    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        self.node().modify(lookup, change, cond, now).await
    }
    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        self.node().close(id, reason, by, now).await
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
        self.node()
            .close_all(app, except, user, reason, by, now)
            .await
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        self.node().list(query).await
    }
    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        self.node().counts(app).await
    }
    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        self.node().expire_due(now, limit).await
    }
    async fn import(&self, session: Session) -> StoreResult<()> {
        self.node().import(session).await
    }
}

macro_rules! across_nodes {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(nodes) = Nodes::new(4).await else {
                    return;
                };
                conformance::$name(Arc::new(nodes)).await;
            }
        )*

        /// The same races with three nodes on a three-primary Redis Cluster.
        mod on_cluster {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(nodes) = Nodes::on_cluster(3).await else {
                        return;
                    };
                    conformance::$name(Arc::new(nodes)).await;
                }
            )*
        }
    };
}

across_nodes!(
    race_64_opens_10_seats,
    race_take_over_has_one_winner,
    race_logins_for_the_last_seats,
    race_logins_for_the_last_user_slots,
    race_logins_replacing_the_oldest,
    fewer_seats_close_nobody,
    race_patches_of_distinct_keys,
    race_conditional_increments,
    expiry_on_many_nodes_closes_each_once,
    evict_idlest,
    user_limit_replace_oldest,
    close_and_close_all,
    import_copies_sessions_verbatim,
);
