//! Webhooks end to end: a real receiver on loopback that refuses its first deliveries
//! and is down while the server restarts gets every event, signed, each under one
//! event id; a hook that cannot be reached ends as a dead letter an operator sends
//! again; a hook pointing inside without `allow_private` is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{config, temp_dir, Process, Server, ADMIN};

const SECRET: &str = "hook-secret-0123456789abcdef";
const OLD_SECRET: &str = "old-hook-secret-0123456789ab";

/// What the receiver saw: each delivery's headers of note and body.
#[derive(Default)]
struct Seen {
    deliveries: Vec<(String, String, Value)>,
    refused: usize,
    bad_signatures: usize,
}

/// A receiver bound to `addr` (a fixed port, so it can go down and come back) that
/// answers 503 to its first `refuse` deliveries.
struct Receiver {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(sig) = headers
        .get("sessiond-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = sig.split(',');
    let Some(t) = parts.next().and_then(|p| p.strip_prefix("t=")) else {
        return false;
    };
    let Ok(secs) = t.parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(secs) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    parts.any(|p| p.strip_prefix("v1=") == Some(want.as_str()))
}

impl Receiver {
    async fn start(addr: SocketAddr, seen: Arc<Mutex<Seen>>, refuse: usize) -> Receiver {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let mut s = seen.lock().unwrap();
                    if !verify(&headers, &body) {
                        s.bad_signatures += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    if s.refused < refuse {
                        s.refused += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let event_id = h("sessiond-event-id");
                    let kind = h("sessiond-event");
                    s.deliveries
                        .push((event_id, kind, serde_json::from_slice(&body).unwrap()));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Receiver { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The test configuration with hooks on app `desk`.
fn with_hooks(dir: &std::path::Path, hooks: &str) -> sessiond::Config {
    let mut text = String::new();
    text.push_str(hooks);
    let mut c = config(Some(dir));
    let parsed = sessiond::Config::from_toml(&format!(
        "admin_token = \"{ADMIN}\"\n[apps.desk]\nseats = 2\n{text}"
    ))
    .expect("hooks config");
    c.apps.get_mut("desk").unwrap().hooks = parsed.apps["desk"].hooks.clone();
    c
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn deliveries(s: &Server, state: &str) -> Vec<Value> {
    let (status, v) = s
        .call(
            Method::GET,
            &format!("/v1/apps/desk/hooks/deliveries?state={state}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

/// The real binary on the file store in `dir`, with app `desk` (two seats) and `hooks`.
fn process(dir: &std::path::Path, hooks: &str) -> Process {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("sessiond.toml");
    std::fs::write(&file, format!("[apps.desk]\nseats = 2\n{hooks}")).unwrap();
    Process::start_with(dir, &["--config", file.to_str().unwrap()])
}

/// A call to a server at `base`: (status, JSON body or Null).
async fn call(base: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn pending(base: &str, state: &str) -> Vec<Value> {
    let (status, v) = call(
        base,
        Method::GET,
        &format!("/v1/apps/desk/hooks/deliveries?state={state}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_through_refusals_and_a_crash() {
    let addr = free_port();
    let dir = temp_dir("webhooks");
    let hooks = format!(
        r#"
        [apps.desk.hooks.billing]
        url = "http://{addr}/hook"
        secret = ["{SECRET}", "{OLD_SECRET}"]
        first_retry_s = 1
        max_tries = 50
        allow_private = true
        "#
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = Receiver::start(addr, seen.clone(), 3).await;
    let mut server = process(&dir, &hooks);
    let base = server.base.clone();
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let open = |user: &str| Some(json!({ "user": user }));
    let opened = |v: (u16, Value)| {
        assert_eq!(v.0, 201, "{}", v.1);
        crate::common::id(&v.1)
    };
    let sessions = "/v1/apps/desk/sessions";
    let aid = opened(call(&base, Method::POST, sessions, open("ann")).await);
    let bid = opened(call(&base, Method::POST, sessions, open("bob")).await);
    expected.insert(("opened".into(), aid.clone()));
    expected.insert(("opened".into(), bid.clone()));
    // A full house: seats_full (no session).
    let (status, _) = call(&base, Method::POST, sessions, open("cid")).await;
    assert_eq!(status, 409);
    let (status, v) = call(
        &base,
        Method::PUT,
        &format!("/v1/sessions/{aid}/privileges"),
        Some(json!({ "privileges": ["billing"] })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    expected.insert(("privileges_changed".into(), aid.clone()));
    let (status, _) = call(&base, Method::DELETE, &format!("/v1/sessions/{aid}"), None).await;
    assert_eq!(status, 200);
    expected.insert(("closed".into(), aid.clone()));
    // The receiver goes down; events go on; the server is killed (kill -9) meanwhile.
    wait_until("the first events are in", || {
        seen.lock().unwrap().deliveries.len() >= 2
    })
    .await;
    receiver.stop().await;
    let cid = opened(call(&base, Method::POST, sessions, open("cid")).await);
    expected.insert(("opened".into(), cid.clone()));
    let (status, _) = call(&base, Method::DELETE, &format!("/v1/sessions/{bid}"), None).await;
    assert_eq!(status, 200);
    expected.insert(("closed".into(), bid.clone()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !pending(&base, "pending").await.is_empty(),
        "the receiver is down: deliveries wait"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let receiver = Receiver::start(addr, seen.clone(), 0).await;
    let server = process(&dir, &hooks);
    let base = server.base.clone();
    wait_until("the outbox is empty", || {
        let s = seen.lock().unwrap();
        let kinds: BTreeSet<(String, String)> = s
            .deliveries
            .iter()
            .filter_map(|(_, k, b)| Some((k.clone(), b["session"].as_str()?.to_string())))
            .collect();
        kinds.len() == expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pending(&base, "any").await.is_empty());
    let s = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(s.bad_signatures, 0);
    assert_eq!(
        s.refused, 3,
        "the first three were refused, then sent again"
    );
    // Every event once by id; a duplicate only ever repeats an event id and its body.
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for (id, kind, body) in &s.deliveries {
        assert_eq!(body["event_id"].as_str(), Some(id.as_str()));
        assert_eq!(body["event"].as_str(), Some(kind.as_str()));
        assert_eq!(body["app"], "desk");
        if let Some(before) = by_id.insert(id, body) {
            assert_eq!(before, body, "a duplicate is the same event");
        }
    }
    let got: BTreeSet<(String, String)> = by_id
        .values()
        .filter_map(|b| {
            Some((
                b["event"].as_str()?.to_string(),
                b["session"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(got, expected);
    let full: Vec<&&Value> = by_id
        .values()
        .filter(|b| b["event"] == "seats_full")
        .collect();
    assert_eq!(full.len(), 1);
    assert_eq!(
        (full[0]["limit"].as_str(), full[0]["total"].as_u64()),
        (Some("seats"), Some(2))
    );
    let closes: Vec<(&str, &str)> = by_id
        .values()
        .filter(|b| b["event"] == "closed")
        .map(|b| (b["reason"].as_str().unwrap(), b["by"].as_str().unwrap()))
        .collect();
    assert_eq!(closes, [("killed", "admin"), ("killed", "admin")]);
    assert_eq!(by_id.len(), 7, "six session events and one seats_full");
    let output = server.output.lock().unwrap().clone();
    assert!(!output.contains(SECRET), "a secret in the log");
    drop(server);
    receiver.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hook_leaves_a_dead_letter_an_operator_sends_again() {
    let nobody = free_port();
    let dir = temp_dir("webhooks-dead");
    let hooks = format!(
        r#"
        [apps.desk.hooks.gone]
        url = "http://{nobody}/hook"
        secret = "{SECRET}"
        events = ["opened"]
        first_retry_s = 1
        max_tries = 2
        allow_private = true
        [apps.desk.hooks.inside]
        url = "http://127.0.0.1:{port}/hook"
        secret = "{SECRET}"
        events = ["opened"]
        max_tries = 1
        "#,
        port = nobody.port()
    );
    let server = Server::start(with_hooks(&dir, &hooks)).await;
    let (status, v) = server
        .call(Method::GET, "/v1/apps/desk/hooks", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["hooks"][0]["name"], "gone");
    assert_eq!(
        v["hooks"][0]["url"],
        format!("http://{nobody}/…"),
        "the path is not shown"
    );
    assert!(!v.to_string().contains(SECRET), "no secret is ever shown");
    server.open("desk", ADMIN, json!({ "user": "ann" })).await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = deliveries(&server, "dead").await;
        if dead.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:#?}");
    let by_hook = |h: &str| dead.iter().find(|d| d["hook"] == h).unwrap().clone();
    let gone = by_hook("gone");
    assert_eq!(gone["tries"], 2);
    assert!(
        gone["error"].as_str().unwrap().contains("connect"),
        "{gone}"
    );
    let inside = by_hook("inside");
    assert_eq!(inside["tries"], 1);
    assert!(
        inside["error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{inside}"
    );
    // The CLI shows the same, and sends one again.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(args)
            .args(["--server", &server.base, "--token", ADMIN])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = cli(&["hooks", "deliveries", "--app", "desk", "--dead"]);
    assert!(
        table.contains("DELIVERY") && table.contains("not a public address"),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.contains(" dead ")).count(),
        2,
        "{table}"
    );
    let listed = cli(&["hooks", "list", "--app", "desk"]);
    assert!(
        listed.contains("gone") && listed.contains("inside") && !listed.contains(SECRET),
        "{listed}"
    );
    let inside_id = inside["id"].as_str().unwrap();
    let said = cli(&["hooks", "resend", "--app", "desk", inside_id]);
    assert!(said.contains("due now"), "{said}");
    // Sending again: the receiver is there now.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = Receiver::start(nobody, seen.clone(), 0).await;
    let id = gone["id"].as_str().unwrap();
    let (status, v) = server
        .call(
            Method::POST,
            &format!("/v1/apps/desk/hooks/deliveries/{id}/resend"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["dead"].as_bool(), v["tries"].as_u64()),
        (Some(false), Some(0))
    );
    wait_until("the dead letter is delivered", || {
        seen.lock().unwrap().deliveries.len() == 1
    })
    .await;
    assert_eq!(
        seen.lock().unwrap().deliveries[0].0,
        gone["event_id"].as_str().unwrap(),
        "the same event id"
    );
    // Another app's credential, or an unknown id: 404 or 403, nothing changes.
    let (status, _) = server
        .call(
            Method::POST,
            &format!(
                "/v1/apps/desk/hooks/deliveries/{}/resend",
                sessiond_core::SessionId::new()
            ),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/apps/desk/hooks/deliveries/{id}/resend"),
            Some(crate::common::SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let metrics = server
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sessiond_webhook_deliveries_total{app=\"desk\",hook=\"gone\",outcome=\"dead\"} 1",
        "sessiond_webhook_deliveries_total{app=\"desk\",hook=\"gone\",outcome=\"failed\"} 1",
        "sessiond_webhook_deliveries_total{app=\"desk\",hook=\"gone\",outcome=\"delivered\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // Once, or twice if the try the CLI asked for is over already.
    let inside_dead =
        "sessiond_webhook_deliveries_total{app=\"desk\",hook=\"inside\",outcome=\"dead\"} ";
    assert!(
        metrics.lines().any(|l| l.starts_with(inside_dead)),
        "{metrics}"
    );
    server.stop().await;
    receiver.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Three nodes on one shared store, all sending: every event is delivered, and by one
/// node only (claims are exclusive), so a receiver that never fails sees each once.
async fn three_nodes_deliver_each_event_once(kind: &str) {
    let Some(store) = crate::multinode::shared_store_url(kind).await else {
        return;
    };
    let addr = free_port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = Receiver::start(addr, seen.clone(), 0).await;
    let hooks = format!(
        r#"
        [apps.desk.hooks.audit]
        url = "http://{addr}/hook"
        secret = "{SECRET}"
        events = ["opened", "closed"]
        allow_private = true
        "#
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut c = crate::multinode::node_config(&store);
        let parsed = sessiond::Config::from_toml(&format!(
            "admin_token = \"{ADMIN}\"\n[apps.desk]\n{hooks}"
        ))
        .unwrap();
        c.apps.get_mut("desk").unwrap().hooks = parsed.apps["desk"].hooks.clone();
        nodes.push(Server::start(c).await);
    }
    let mut ids = Vec::new();
    for i in 0..30 {
        let v = nodes[i % 3]
            .open("desk", ADMIN, json!({ "user": format!("u{i}") }))
            .await;
        ids.push(crate::common::id(&v));
    }
    for (i, id) in ids.iter().enumerate() {
        let (status, _) = nodes[(i + 1) % 3]
            .call(
                Method::DELETE,
                &format!("/v1/sessions/{id}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    wait_until("every event is delivered", || {
        let s = seen.lock().unwrap();
        s.deliveries
            .iter()
            .map(|(id, _, _)| id)
            .collect::<BTreeSet<_>>()
            .len()
            >= 60
    })
    .await;
    // Time for any second delivery to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(s.bad_signatures, 0);
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for (id, _, _) in &s.deliveries {
        *per_event.entry(id.clone()).or_default() += 1;
    }
    assert_eq!(per_event.len(), 60, "30 opens and 30 closes");
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for n in nodes {
        n.stop().await;
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_redis_deliver_each_event_once() {
    three_nodes_deliver_each_event_once("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_postgres_deliver_each_event_once() {
    three_nodes_deliver_each_event_once("postgres").await;
}
