//! Reads from memory across nodes on Redis: three stores under one prefix, each with
//! the read cache on, as three servers sharing a Redis would be.
//!
//! What must hold: a kill, a rotation or a storage write on one node is seen on the
//! others once the server's invalidation arrives, and never later than the cache's
//! maximum age (the delays are measured and printed: docs/BENCHMARKS.md has a run's
//! figures); and a node whose tracking connection is killed (`CLIENT KILL`) stops
//! answering from memory at once, and starts again once tracking is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_core::conformance::across_nodes::{self, Node};
use sessiond_core::OpenRequest;
use sessiond_redis::{RedisOptions, RedisStore, READ_CACHE_CLIENT_NAME};

use super::super::{random_prefix, server_url};

/// Three stores under one fresh prefix, each caching reads for `max_age`; `None` (said
/// loudly) without a server.
async fn three_nodes(max_age: Duration) -> Option<([Node; 3], Vec<RedisStore>)> {
    let prefix = random_prefix();
    let mut stores = Vec::new();
    for _ in 0..3 {
        let mut options = RedisOptions::default().with_prefix(prefix.clone());
        options.read_cache = Some(max_age);
        match RedisStore::connect(&server_url(), options).await {
            Ok(s) => stores.push(s),
            Err(e) => {
                sessiond_core::skip::skip("Redis read cache", &format!("no Redis ({e})"));
                return None;
            }
        }
    }
    let node = |s: &RedisStore| {
        let counted = s.clone();
        Node {
            store: Arc::new(s.clone()),
            hits: Box::new(move || counted.read_cache_hits()),
        }
    };
    let nodes = [node(&stores[0]), node(&stores[1]), node(&stores[2])];
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

/// The tracking connections are killed (`CLIENT KILL`): node 2 stops answering from
/// memory at once (its copies had a minute to live), and answers from memory again
/// once tracking is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_tracking_connection_sends_reads_to_the_server() {
    let Some((nodes, stores)) = three_nodes(Duration::from_secs(60)).await else {
        return;
    };
    let one = across_nodes::manager(nodes[0].store.clone());
    let two = across_nodes::manager(nodes[1].store.clone());
    let token = one.open("app", OpenRequest::default()).await.unwrap().token;
    let hits = || stores[1].read_cache_hits();
    across_nodes::read_until_from_memory(&two, &token, hits, 0).await;

    let client = redis::Client::open(server_url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw)
        .await
        .unwrap();
    let name = format!("name={READ_CACHE_CLIENT_NAME}:{}", stores[0].prefix());
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == name))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3, "one tracking connection per node");
    let t0 = Instant::now();
    for id in &ids {
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    while stores[1].read_cache_live() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the loss was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "the tracking connection's loss was noticed {:?} after the kill",
        t0.elapsed()
    );
    let before = hits();
    two.resolve(&token, sessiond_core::Resolve::default())
        .await
        .unwrap();
    assert_eq!(hits(), before, "read from the server");

    // Tracking comes back by itself; reads from memory resume.
    while !stores[1].read_cache_live() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tracking never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    across_nodes::read_until_from_memory(&two, &token, hits, before).await;
}
