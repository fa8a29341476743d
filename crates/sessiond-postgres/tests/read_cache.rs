//! Reads from memory across nodes: three stores on one schema, each with the read cache
//! on, as three servers sharing a PostgreSQL would be.
//!
//! What must hold: a kill, a rotation or a storage write on one node is seen on the
//! others once its notice arrives, and never later than the cache's maximum age (the
//! delays are measured and printed: docs/BENCHMARKS.md has a run's figures); and a node
//! whose listening connection is cut goes back to the store at once, not after its
//! copies age out.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_core::{
    Actor, CloseReason, Error, Lookup, Manager, OpenRequest, Policy, Resolve, Token,
};
use sessiond_postgres::PostgresStore;

/// Three managers over three stores on one fresh schema (the first owns the schema
/// and drops it last), each caching reads for `max_age`.
async fn three_nodes(max_age: Duration) -> Option<(Vec<Manager>, Vec<PostgresStore>)> {
    let first = common::fresh_store_with(|o| o.read_cache = Some(max_age)).await?;
    let (url, schema) = (first.url.clone(), first.schema.clone());
    let mut stores = vec![first.store.clone()];
    for _ in 0..2 {
        let mut options = common::options(&schema);
        options.read_cache = Some(max_age);
        stores.push(PostgresStore::connect(&url, options).await.unwrap());
    }
    let mut managers = vec![Manager::new(Arc::new(first))];
    for s in &stores[1..] {
        managers.push(Manager::new(Arc::new(s.clone())));
    }
    for m in &managers {
        m.set_policy("app", Policy::default()).unwrap();
    }
    Some((managers, stores))
}

/// Reads `token` on `m` until `done` says the answer shows the change; how long that
/// took from `since`.
async fn seen_after(
    m: &Manager,
    token: &Token,
    since: Instant,
    done: impl Fn(&Result<sessiond_core::Session, Error>) -> bool,
) -> Duration {
    loop {
        let r = m.resolve(token, Resolve::default()).await;
        if done(&r) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "a change on another node was never seen: {r:?}"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A kill, a rotation and a storage write on node 1, each read on nodes 2 and 3 that
/// had the session in memory: every one is seen, within the maximum age whatever
/// happens to the notices; the delays are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_on_one_node_are_seen_on_the_others() {
    let max_age = Duration::from_secs(1);
    let Some((nodes, stores)) = three_nodes(max_age).await else {
        return;
    };
    let mut delays = Vec::new();
    for round in 0..60 {
        let opened = nodes[0]
            .open(
                "app",
                OpenRequest {
                    user: Some(format!("user-{round}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let (id, token) = (opened.session.id, opened.token);
        // Nodes 2 and 3 read it (the second read of each is from memory).
        for m in &nodes[1..] {
            for _ in 0..2 {
                m.resolve(&token, Resolve::default()).await.unwrap();
            }
        }
        let t0 = Instant::now();
        match round % 3 {
            0 => {
                nodes[0]
                    .close(Lookup::Id(id), CloseReason::Killed, Actor::Admin)
                    .await
                    .unwrap();
                for m in &nodes[1..] {
                    let refused = |r: &Result<_, Error>| matches!(r, Err(Error::SessionClosed(_)));
                    delays.push(seen_after(m, &token, t0, refused).await);
                }
            }
            1 => {
                nodes[0]
                    .set_privileges(Lookup::Id(id), vec!["admin".into()], None, None)
                    .await
                    .unwrap();
                for m in &nodes[1..] {
                    let refused = |r: &Result<_, Error>| matches!(r, Err(Error::InvalidToken));
                    delays.push(seen_after(m, &token, t0, refused).await);
                }
            }
            _ => {
                nodes[0]
                    .update_data(Lookup::Id(id), json!({ "cart": [round] }), None, None)
                    .await
                    .unwrap();
                for m in &nodes[1..] {
                    let written = |r: &Result<sessiond_core::Session, Error>| {
                        r.as_ref()
                            .is_ok_and(|s| s.data.to_map().get("cart") == Some(&json!([round])))
                    };
                    delays.push(seen_after(m, &token, t0, written).await);
                }
            }
        }
    }
    // Each node's second read of each session is from memory, unless a change report
    // (the open's own, say) raced its first read, which is then not kept.
    let hits: u64 = stores[1..].iter().map(|s| s.read_cache_hits()).sum();
    assert!(
        hits >= 60,
        "nodes 2 and 3 answered from memory ({hits} reads)"
    );
    delays.sort();
    // Copies were kept just before each change: without the notices every change would
    // be seen only as they aged out, about the maximum age later.
    let median = percentile(&delays, 0.5);
    assert!(
        median < max_age / 4,
        "changes were seen after {median:?} (median): the notices do not arrive"
    );
    let worst = *delays.last().unwrap();
    assert!(
        worst < max_age + Duration::from_millis(500),
        "a change was seen only after {worst:?}, past the maximum age"
    );
    eprintln!(
        "revocation delay over {} reads on other nodes: p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        worst
    );
}

/// Node 2's listening connection is cut (the server ends it): its copies go at once,
/// and its reads go to the store, long before they would have aged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_listening_connection_sends_reads_to_the_store() {
    let Some((nodes, stores)) = three_nodes(Duration::from_secs(60)).await else {
        return;
    };
    let schema = stores[0].schema().to_string();
    let opened = nodes[0].open("app", OpenRequest::default()).await.unwrap();
    let (id, token) = (opened.session.id, opened.token);
    // Read until a read is answered from memory (a copy whose read raced a change
    // report, such as the open's own, is not kept).
    for tries in 0.. {
        nodes[1].resolve(&token, Resolve::default()).await.unwrap();
        if stores[1].read_cache_hits() > 0 {
            break;
        }
        assert!(tries < 100, "node 2 never answered from memory");
    }

    // Removed behind sessiond's back: no node announces it.
    let raw = common::raw_client(&common::url()).await;
    raw.execute(
        &format!("DELETE FROM \"{schema}\".sessions WHERE id = $1"),
        &[&uuid::Uuid::from_u128(id.as_u128())],
    )
    .await
    .unwrap();
    nodes[1]
        .resolve(&token, Resolve::default())
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
    let gone = seen_after(&nodes[1], &token, t0, |r| {
        matches!(r, Err(Error::InvalidToken))
    })
    .await;
    eprintln!("reads went back to the store {gone:?} after the cut");
}
