//! Many sessiond nodes over one shared store (PostgreSQL, Redis): exact admission
//! across nodes, closes pushed to SSE clients on other nodes, and outages answered with
//! 503 then recovered from. Skipped loudly when the store's server is absent, never in CI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// A store URL for a fresh namespace, or `None` (skip) when its server is absent.
pub async fn shared_store_url(kind: &str) -> Option<String> {
    let (url, ns) = shared_store(kind, "multi-node test").await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}namespace={ns}"))
}

pub fn node_config(store: &str) -> sessiond::Config {
    let mut c = config(None);
    c.store = store.parse().unwrap();
    c.apps.get_mut("desk").unwrap().policy.seats = Some(50);
    c.apps.get_mut("desk").unwrap().policy.max_per_user = None;
    c
}

async fn multi_node(kind: &str) {
    let Some(store) = shared_store_url(kind).await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(Server::start(node_config(&store)).await));
    }
    // 200 concurrent opens spread over the nodes against 50 seats. Under this much
    // contention (and a loaded test machine) an admission may run out of its time and
    // answer 503 "retry shortly": the client retries, as the contract asks.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let node = nodes[i % 3].clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let (st, v) = node
                        .call(
                            Method::POST,
                            "/v1/apps/desk/sessions",
                            Some(DESK_KEY),
                            Some(json!({"user": format!("u{i}")})),
                        )
                        .await;
                    if st != 503 {
                        return (st, v);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("open {i} still unavailable after 20 tries");
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        match st {
            201 => admitted.push(v),
            409 => assert_eq!(v["error"], json!("seats_exhausted")),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(
        admitted.len(),
        50,
        "exactly the seats are admitted across nodes"
    );
    for n in &nodes {
        let (_, app) = n
            .call(Method::GET, "/v1/apps/desk", Some(DESK_KEY), None)
            .await;
        assert_eq!(app["seats"]["used"], json!(50));
    }
    // A token opened on one node works on another.
    let t = token(&admitted[0]);
    let (st, _) = nodes[2]
        .call(Method::GET, "/v1/session", Some(&t), None)
        .await;
    assert_eq!(st, 200);
    // A kill on node 0 reaches an SSE client on node 1 within a second.
    let mut stream = nodes[1]
        .req(Method::GET, "/v1/session/events", Some(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await; // the relay subscribed
    let killed = Instant::now();
    let (st, _) = nodes[0]
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", id(&admitted[0])),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let mut buf = String::new();
    while !buf.contains("event: closed") {
        let left = Duration::from_secs(1).saturating_sub(killed.elapsed());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the close reached the other node within 1 s")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(buf.contains("\"reason\":\"killed\""), "{buf}");
    for n in nodes {
        Arc::try_unwrap(n).ok().unwrap().stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_postgres() {
    multi_node("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_redis() {
    multi_node("redis").await;
}
