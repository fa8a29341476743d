//! Reads from memory across nodes: three stores on one schema, each with the read cache
//! on, as three servers sharing a PostgreSQL would be.
//!
//! What must hold: the checks every store with a read cache passes
//! (`sessiond_core::conformance::across_nodes`: a kill, a rotation or a storage write on
//! one node seen on the others once its notice arrives, never later than the maximum
//! age; the delays are printed, docs/BENCHMARKS.md has a run's figures); and a node
//! whose listening connection is cut goes back to the store at once, not after its
//! copies age out.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_core::conformance::across_nodes::{self, Node};
use sessiond_core::{Error, OpenRequest, Resolve};
use sessiond_postgres::PostgresStore;

/// Three stores on one fresh schema (the first owns the schema and drops it last),
/// each caching reads for `max_age`.
async fn three_nodes(max_age: Duration) -> Option<([Node; 3], Vec<PostgresStore>)> {
    let first = common::fresh_store_with(|o| o.read_cache = Some(max_age)).await?;
    let (url, schema) = (first.url.clone(), first.schema.clone());
    let mut stores = vec![first.store.clone()];
    for _ in 0..2 {
        let mut options = common::options(&schema);
        options.read_cache = Some(max_age);
        stores.push(PostgresStore::connect(&url, options).await.unwrap());
    }
    let node = |store: Arc<dyn sessiond_core::Store>, counted: &PostgresStore| {
        let counted = counted.clone();
        Node {
            store,
            hits: Box::new(move || counted.read_cache_hits()),
        }
    };
    let nodes = [
        node(Arc::new(first), &stores[0]),
        node(Arc::new(stores[1].clone()), &stores[1]),
        node(Arc::new(stores[2].clone()), &stores[2]),
    ];
    Some((nodes, stores))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_on_one_node_are_seen_on_the_others() {
    let max_age = Duration::from_secs(1);
    let Some((nodes, _stores)) = three_nodes(max_age).await else {
        return;
    };
    let delays = across_nodes::changes_on_one_node_are_seen_on_the_others(&nodes, max_age).await;
    eprintln!("revocation delay over {delays}");
}

/// Node 2's listening connection is cut (the server ends it): its copies go at once,
/// and its reads go to the store, long before they would have aged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_listening_connection_sends_reads_to_the_store() {
    let Some((nodes, stores)) = three_nodes(Duration::from_secs(60)).await else {
        return;
    };
    let schema = stores[0].schema().to_string();
    let one = across_nodes::manager(nodes[0].store.clone());
    let two = across_nodes::manager(nodes[1].store.clone());
    let opened = one.open("app", OpenRequest::default()).await.unwrap();
    let (id, token) = (opened.session.id, opened.token);
    across_nodes::read_until_from_memory(&two, &token, || stores[1].read_cache_hits(), 0).await;

    // Removed behind sessiond's back: no node announces it.
    let raw = common::raw_client(&common::url()).await;
    raw.execute(
        &format!("DELETE FROM \"{schema}\".sessions WHERE id = $1"),
        &[&uuid::Uuid::from_u128(id.as_u128())],
    )
    .await
    .unwrap();
    two.resolve(&token, Resolve::default())
        .await
        .expect("answered from memory: nothing announced the removal");

    // Cut every listening connection of this schema's read caches (nodes 1 to 3).
    let cut = raw
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'sessiond read cache' AND query LIKE $1",
            &[&format!("%{schema}_changes%")],
        )
        .await
        .unwrap();
    assert_eq!(cut, 3, "one listening connection per node");
    let t0 = Instant::now();
    let gone =
        across_nodes::seen_after(&two, &token, t0, |r| matches!(r, Err(Error::InvalidToken))).await;
    eprintln!("reads went back to the store {gone:?} after the cut");
}
