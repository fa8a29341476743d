//! Credentials beyond the admin token and app keys: a client credential that can only
//! take a seat (then act with its session's token), named operators whose name the
//! history keeps, and keys rotated without a restart (SIGHUP) while requests flow.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

const CLIENT: &str = "desk-client-0123456789abcdef";
const KEY: &str = "desk-app-key-0123456789abcdef";

/// One app, `desk`, with 2 seats, its app key and a client credential, and at most 5
/// opens a minute by client credentials.
fn seats_config() -> sessiond::Config {
    sessiond::Config::from_toml(&format!(
        r#"
        admin_token = "{ADMIN}"
        store = "memory:"
        client_opens_per_minute = 5
        [apps.desk]
        key = "{KEY}"
        client_key = "{CLIENT}"
        seats = 2
        "#
    ))
    .unwrap()
}

#[tokio::test]
async fn a_client_credential_takes_a_seat_and_does_nothing_else() {
    let srv = Server::start(seats_config()).await;
    let open = |body: Value| {
        srv.call(
            Method::POST,
            "/v1/apps/desk/sessions",
            Some(CLIENT),
            Some(body),
        )
    };
    // It opens, and acts through its session's token from then on.
    let (s, ann) = open(json!({"user": "ann", "client": {"label": "pc-ann"}})).await;
    assert_eq!(s, 201, "{ann}");
    let ann_token = token(&ann);
    let (s, v) = srv
        .call(
            Method::POST,
            "/v1/session/heartbeat",
            Some(&ann_token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, bob) = open(json!({"user": "bob", "client": {"label": "pc-bob"}})).await;
    assert_eq!(s, 201, "{bob}");

    // A full house: the holders in the usual shape, by name and label only.
    let (s, full) = open(json!({"user": "cid"})).await;
    assert_error(s, &full, 409, "seats_exhausted");
    let holders = full["sessions"].as_array().unwrap();
    assert_eq!(holders.len(), 2, "{full}");
    for h in holders {
        assert!(
            h["user"].is_string() && h["client"]["label"].is_string(),
            "{h}"
        );
        assert!(h["id"].is_string() && h["created_at"].is_string(), "{h}");
        for hidden in ["ip", "user_agent"] {
            assert!(h["client"][hidden].is_null(), "{h}");
        }
        assert_eq!((&h["info"], &h["data"]), (&json!({}), &json!({})), "{h}");
        assert_eq!(h["privileges"], json!([]), "{h}");
        assert!(h.get("token").is_none(), "{h}");
    }
    // sessiond-client reads them as it reads any holders (what `connect` shows).
    let err = sessiond_client::Error::Api {
        status: 409,
        code: "seats_exhausted".into(),
        message: String::new(),
        body: full.clone(),
    };
    assert_eq!(err.seats_exhausted().expect("holders").sessions.len(), 2);
    // The app key sees everything, as before.
    let (s, full_app) = srv
        .call(
            Method::POST,
            "/v1/apps/desk/sessions",
            Some(KEY),
            Some(json!({"user": "cid"})),
        )
        .await;
    assert_eq!(s, 409);
    assert!(
        full_app["sessions"][0]["client"]["ip"].is_string(),
        "{full_app}"
    );

    // It takes over a seat, and the one taken over learns it.
    let (s, cid) = open(json!({"user": "cid", "take_over": id(&ann)})).await;
    assert_eq!(s, 201, "{cid}");
    let (s, v) = srv
        .call(Method::GET, "/v1/session", Some(&ann_token), None)
        .await;
    assert_error(s, &v, 410, "session_closed");
    assert_eq!(v["reason"], "taken_over", "{v}");
    // And closes its own seat with its token.
    let (s, v) = srv
        .call(Method::DELETE, "/v1/session", Some(&token(&cid)), None)
        .await;
    assert_eq!(s, 200, "{v}");

    // No heartbeat its session could not set itself, no longer idle timeout.
    let (s, v) =
        open(json!({"user": "dan", "heartbeat": {"interval_s": 30, "grace_s": 100000}})).await;
    assert_error(s, &v, 400, "bad_request");
    let (s, v) = open(json!({"user": "dan", "idle_timeout_s": 9_999_999})).await;
    assert_error(s, &v, 400, "bad_request");
    // No privileges (a reserved one would skip the seat count), no address of its own.
    let (s, v) = open(json!({"user": "dan", "privileges": ["admin"]})).await;
    assert_error(s, &v, 403, "forbidden");
    let (s, v) = open(json!({"user": "dan", "client": {"ip": "10.9.8.7"}})).await;
    assert_error(s, &v, 403, "forbidden");
    // Refused elsewhere: listing, reading or closing another's session.
    for (method, path) in [
        (Method::GET, "/v1/apps/desk/sessions".to_string()),
        (Method::GET, format!("/v1/sessions/{}", id(&bob))),
        (Method::DELETE, format!("/v1/sessions/{}", id(&bob))),
        (Method::POST, "/v1/apps/desk/sessions/close-all".to_string()),
    ] {
        let (s, v) = srv.call(method.clone(), &path, Some(CLIENT), None).await;
        assert_error(s, &v, 403, "forbidden");
    }
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", id(&bob)),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("open")), "{v}");
    srv.stop().await;
}

#[tokio::test]
async fn client_opens_are_rate_limited_per_app() {
    let srv = Server::start(seats_config()).await;
    let mut answers = Vec::new();
    for i in 0..7 {
        let r = srv
            .req(Method::POST, "/v1/apps/desk/sessions", Some(CLIENT))
            .json(&json!({"user": format!("u{i}")}))
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        answers.push((r.status().as_u16(), retry, r.json::<Value>().await.unwrap()));
    }
    // 5 a minute: the first 5 are answered (2 opened, 3 refused for seats), then 429.
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [201, 201, 409, 409, 409, 429, 429], "{answers:?}");
    let (_, retry, body) = &answers[5];
    assert_error(429, body, 429, "too_many_opens");
    let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{retry:?}");
    // The app key is not limited by its clients' opens.
    let (s, _) = srv
        .call(Method::GET, "/v1/apps/desk/sessions", Some(KEY), None)
        .await;
    assert_eq!(s, 200);
    srv.stop().await;
}

/// Writes a configuration file for the real binary.
fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hangup(p: &Process) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Polls until `secret` gets `want` on `GET /v1/apps/shop`, for at most 10 s.
async fn until(base: &str, secret: &str, want: u16) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let s = http
            .get(format!("{base}/v1/apps/shop"))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if s == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{want} never came (last {s})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_key_is_rotated_under_load_without_a_refusal_or_a_restart() {
    const OLD: &str = "shop-key-old-0123456789";
    const NEW: &str = "shop-key-new-0123456789";
    let dir = temp_dir("rotate");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessiond.toml");
    write_config(&file, &format!("[apps.shop]\nkey = \"{OLD}\"\n"));
    let server = Process::start_with(&dir.join("data"), &["--config", file.to_str().unwrap()]);
    let base = server.base.clone();

    // Load: as many requests as it can, with the key it is told to use.
    let key = Arc::new(Mutex::new(OLD.to_string()));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (key, stop, sent, refused, base) = (
            key.clone(),
            stop.clone(),
            sent.clone(),
            refused.clone(),
            base.clone(),
        );
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let k = key.lock().unwrap().clone();
                let s = http
                    .get(format!("{base}/v1/apps/shop"))
                    .bearer_auth(&k)
                    .send()
                    .await
                    .unwrap()
                    .status();
                sent.fetch_add(1, Ordering::Relaxed);
                if s != 200 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 1. Both keys: the new one is accepted once the server has read the file again.
    write_config(
        &file,
        &format!("[apps.shop]\nkey = [\"{NEW}\", \"{OLD}\"]\n"),
    );
    hangup(&server);
    until(&base, NEW, 200).await;
    // 2. The clients move over, under load.
    tokio::time::sleep(Duration::from_millis(200)).await;
    *key.lock().unwrap() = NEW.to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 3. The old key is retired.
    write_config(&file, &format!("[apps.shop]\nkey = \"{NEW}\"\n"));
    hangup(&server);
    until(&base, OLD, 401).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (sent, refused) = (
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert_eq!(refused, 0, "{refused} of {sent} requests were refused");

    // A file that cannot be used keeps the credentials in use.
    write_config(&file, "[apps.shop]\nkey = \"short\"\n");
    hangup(&server);
    let start = Instant::now();
    while !server
        .output
        .lock()
        .unwrap()
        .contains("configuration not reloaded")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the refusal is logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until(&base, NEW, 200).await;
    let log = server.output.lock().unwrap().clone();
    assert!(log.contains("configuration reloaded"), "{log}");
    for secret in [OLD, NEW] {
        assert!(!log.contains(secret), "a key in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_kill_is_recorded_with_its_name() {
    const ALICE: &str = "alice-token-0123456789ab";
    let dir = temp_dir("operator");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessiond.toml");
    write_config(
        &file,
        &format!("[operators.alice]\ntoken = \"{ALICE}\"\napps = [\"shop\"]\n[apps.shop]\n"),
    );
    let server = Process::start_with(&dir.join("data"), &["--config", file.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let opened: Value = http
        .post(format!("{}/v1/apps/shop/sessions", server.base))
        .bearer_auth(ADMIN)
        .json(&json!({"user": "ann"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let killed = http
        .delete(format!("{}/v1/sessions/{}", server.base, id(&opened)))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 200);
    let history: Value = http
        .get(format!(
            "{}/v1/apps/shop/sessions?status=closed",
            server.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        history["sessions"][0]["closed_by"], "operator:alice",
        "{history}"
    );
    let start = Instant::now();
    while !server.output.lock().unwrap().contains("by=operator:alice") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the log names alice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The command line shows it too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "sessions",
            "history",
            "--app",
            "shop",
            "--server",
            &server.base,
            "--token",
            ADMIN,
        ])
        .env_remove("SESSIOND_SERVER")
        .env_remove("SESSIOND_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("operator:alice"), "{text}");
}

#[tokio::test]
async fn the_consoles_sign_ins_are_the_admin_tokens_alone() {
    let srv = Server::memory().await;
    let signed_in = crate::console::sign_in(&srv, ADMIN).await;
    assert_eq!(signed_in.status(), 303);
    let (s, page) = srv
        .call(Method::GET, "/v1/apps/@console/sessions", Some(ADMIN), None)
        .await;
    assert_eq!(s, 200, "{page}");
    let console_session = page["sessions"][0]["id"].as_str().unwrap().to_string();
    // An operator of "every app" is not an operator of the server's own app.
    for op in [OPS_TOKEN, AUDITOR_TOKEN] {
        let (s, v) = srv
            .call(Method::GET, "/v1/apps/@console/sessions", Some(op), None)
            .await;
        assert_error(s, &v, 403, "forbidden");
        let (s, v) = srv
            .call(
                Method::GET,
                &format!("/v1/sessions/{console_session}"),
                Some(op),
                None,
            )
            .await;
        assert_error(s, &v, 404, "not_found");
    }
    // No route hands out a console token, not even to the admin token.
    let (s, v) = srv
        .call(
            Method::PUT,
            &format!("/v1/sessions/{console_session}/privileges"),
            Some(ADMIN),
            Some(json!({"privileges": []})),
        )
        .await;
    assert_error(s, &v, 404, "not_found");
    srv.stop().await;
}

#[tokio::test]
async fn the_console_signs_in_current_secrets_only() {
    const NEW: &str = "shop-key-new-0123456789";
    const OLD: &str = "shop-key-old-0123456789";
    let config = sessiond::Config::from_toml(&format!(
        "admin_token = \"{ADMIN}\"\nstore = \"memory:\"\n[apps.shop]\nkey = [\"{NEW}\", \"{OLD}\"]\n"
    ))
    .unwrap();
    let srv = Server::start(config).await;
    let sign_in = |secret: &'static str| {
        let base = srv.base.clone();
        async move {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .post(format!("{base}/admin/login"))
                .form(&[("token", secret)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The API takes both while the key is rotated...
    for key in [NEW, OLD] {
        let (s, _) = srv
            .call(Method::GET, "/v1/apps/shop", Some(key), None)
            .await;
        assert_eq!(s, 200);
    }
    // ...the console only the current one: a sign-in would outlive the old key.
    assert_eq!(sign_in(OLD).await, 401);
    assert_eq!(sign_in(NEW).await, 303);
    srv.stop().await;
}
