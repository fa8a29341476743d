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
    multi_node_on(&store).await;
}

async fn multi_node_on(store: &str) {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(Server::start(node_config(store)).await));
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

/// The same on a three-primary Redis Cluster of the test's own: exact seats across the
/// nodes, a session read on another node, its close relayed to a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_a_redis_cluster() {
    let cluster = match sessiond_testkit::RedisCluster::start(3) {
        Ok(c) => c,
        Err(why) => {
            sessiond_core::skip::skip("three nodes on a Redis Cluster", &why);
            return;
        }
    };
    multi_node_on(&format!("{}?namespace=multi-node", cluster.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_postgres() {
    multi_node("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_redis() {
    multi_node("redis").await;
}

/// Sends `body` to `path` on `base` with `key`, retrying a 503 ("retry shortly") as the
/// contract asks; gives the final status and body.
async fn call_retrying(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    for _ in 0..40 {
        let r = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("the node answers");
        let st = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if st != 503 {
            return (st, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{method} {path} still unavailable after 40 tries");
}

/// 200 logins (privilege changes) racing across three `sessiond` processes sharing one
/// store: for the last 20 seats (admins dropping the reserved privilege that kept them
/// seatless), and for the last 5 slots of one user (guests logging in as her, `reject`).
/// Exactly the limit is admitted each time; every other login is refused with 409 and
/// changes nothing.
async fn logins_race_across_processes(kind: &str) {
    let Some((url, ns)) = shared_store(kind, "logins racing across processes").await else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut nodes = Vec::new();
    for n in 0..3 {
        let dir = temp_dir(&format!("logins-race-{kind}-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sessiond.toml");
        std::fs::write(
            &file,
            format!(
                "store = \"{url}{sep}namespace={ns}\"\n\
                 [apps.desk]\nkey = \"{DESK_KEY}\"\nseats = 20\n\
                 reserved_privileges = [\"admin\"]\n\
                 [apps.shop]\nkey = \"{SHOP_KEY}\"\nmax_per_user = 5\n\
                 on_user_limit = \"reject\"\n"
            ),
        )
        .unwrap();
        nodes.push(Process::start_with(
            &dir,
            &["--config", file.to_str().unwrap()],
        ));
    }
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|p| p.base.clone()).collect());
    let client = reqwest::Client::new();

    for (app, key, open_body, login_body, refusal) in [
        (
            "desk",
            DESK_KEY,
            json!({"privileges": ["admin"]}),
            json!({"privileges": []}),
            "seats_exhausted",
        ),
        (
            "shop",
            SHOP_KEY,
            json!({}),
            json!({"privileges": [], "user": "ann"}),
            "user_limit",
        ),
    ] {
        let mut ids = Vec::new();
        for i in 0..200 {
            let (st, v) = call_retrying(
                &client,
                &bases[i % 3],
                Method::POST,
                &format!("/v1/apps/{app}/sessions"),
                key,
                open_body.clone(),
            )
            .await;
            assert_eq!(st, 201, "{v}");
            ids.push(id(&v));
        }
        let tasks: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, sid)| {
                let (client, bases, body) = (client.clone(), bases.clone(), login_body.clone());
                let path = format!("/v1/sessions/{sid}/privileges");
                tokio::spawn(async move {
                    call_retrying(&client, &bases[i % 3], Method::PUT, &path, key, body).await
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            let (st, v) = t.await.unwrap();
            match st {
                200 => admitted += 1,
                409 => assert_eq!(v["error"], json!(refusal), "{v}"),
                other => panic!("unexpected {other}: {v}"),
            }
        }
        let limit = if app == "desk" { 20 } else { 5 };
        assert_eq!(admitted, limit, "{app}: exactly the limit is admitted");
        let (st, v) = call_retrying(
            &client,
            &bases[1],
            Method::GET,
            &format!("/v1/apps/{app}"),
            key,
            json!(null),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        if app == "desk" {
            assert_eq!(v["seats"], json!({"used": 20, "total": 20}), "{v}");
        }
        assert_eq!(v["open"], json!(200), "{app}: nobody was closed");
    }
    for mut n in nodes {
        assert!(n.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_race_across_three_processes_on_postgres() {
    logins_race_across_processes("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_race_across_three_processes_on_redis() {
    logins_race_across_processes("redis").await;
}
