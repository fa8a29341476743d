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

use serde_json::json;
use sessiond_core::{
    Actor, CloseReason, Error, Lookup, Manager, OpenRequest, Policy, Resolve, Session, Token,
};
use sessiond_redis::{RedisOptions, RedisStore, READ_CACHE_CLIENT_NAME};

use super::super::{random_prefix, server_url};

/// Three managers over three stores under one fresh prefix, each caching reads for
/// `max_age`; `None` (said loudly) without a server.
async fn three_nodes(max_age: Duration) -> Option<(Vec<Manager>, Vec<RedisStore>)> {
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
    let managers: Vec<Manager> = stores
        .iter()
        .map(|s| Manager::new(Arc::new(s.clone())))
        .collect();
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
    done: impl Fn(&Result<Session, Error>) -> bool,
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
/// happens to the invalidations; the delays are printed.
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
                    let written = |r: &Result<Session, Error>| {
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
    // Copies were kept just before each change: without the invalidations every change
    // would be seen only as they aged out, about the maximum age later.
    let median = percentile(&delays, 0.5);
    assert!(
        median < max_age / 4,
        "changes were seen after {median:?} (median): the invalidations do not arrive"
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

/// The tracking connections are killed (`CLIENT KILL`): node 2 stops answering from
/// memory at once (its copies had a minute to live), and answers from memory again
/// once tracking is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_tracking_connection_sends_reads_to_the_server() {
    let Some((nodes, stores)) = three_nodes(Duration::from_secs(60)).await else {
        return;
    };
    let opened = nodes[0].open("app", OpenRequest::default()).await.unwrap();
    let token = opened.token;
    // Read until a read is answered from memory (a copy whose read raced a change
    // report, such as the open's own, is not kept).
    for tries in 0.. {
        nodes[1].resolve(&token, Resolve::default()).await.unwrap();
        if stores[1].read_cache_hits() > 0 {
            break;
        }
        assert!(tries < 100, "node 2 never answered from memory");
    }

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
    let before = stores[1].read_cache_hits();
    nodes[1].resolve(&token, Resolve::default()).await.unwrap();
    assert_eq!(stores[1].read_cache_hits(), before, "read from the server");

    // Tracking comes back by itself; reads from memory resume.
    while !stores[1].read_cache_live() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tracking never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for tries in 0.. {
        nodes[1].resolve(&token, Resolve::default()).await.unwrap();
        if stores[1].read_cache_hits() > before {
            break;
        }
        assert!(tries < 100, "never from memory again");
    }
}
