//! The real binary: restart persistence, acknowledged writes surviving `kill -9`,
//! graceful SIGTERM, and no token ever in the server's output.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn restart_keeps_sessions_and_data() {
    let dir = temp_dir("restart");
    let s = Server::start(config(Some(&dir))).await;
    let o = s
        .open(
            "shop",
            SHOP_KEY,
            json!({"user": "ann", "data": {"cart": [1, 2]}}),
        )
        .await;
    let t = token(&o);
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/session/data",
            Some(&t),
            Some(json!({"n": 7})),
        )
        .await;
    assert_eq!(st, 200);
    s.stop().await;
    let s = Server::start(config(Some(&dir))).await;
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"], json!({"cart": [1, 2], "n": 7}));
    assert_eq!(v["id"], o["id"]);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    m: Method,
    path: &str,
    secret: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(m, format!("{base}{path}")).bearer_auth(secret);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_and_no_token_is_logged() {
    let dir = temp_dir("kill9");
    let http = reqwest::Client::new();
    let mut p = Process::start(&dir);
    let mut issued: Vec<(String, u64)> = Vec::new();
    for n in 0..40u64 {
        let (st, v) = call(
            &http,
            &p.base,
            Method::POST,
            "/v1/apps/default/sessions",
            ADMIN,
            Some(json!({"user": format!("u{n}")})),
        )
        .await;
        assert_eq!(st, 201);
        let t = token(&v);
        let (st, _) = call(
            &http,
            &p.base,
            Method::PATCH,
            "/v1/session/data",
            &t,
            Some(json!({"n": n})),
        )
        .await;
        assert_eq!(st, 200);
        if n % 10 == 0 {
            // Rotation issues a new token: the old one must not leak either.
            let (st, v) = call(
                &http,
                &p.base,
                Method::PUT,
                &format!("/v1/sessions/{}/privileges", id(&v)),
                ADMIN,
                Some(json!({"privileges": ["x"]})),
            )
            .await;
            assert_eq!(st, 200);
            issued.push((t, u64::MAX));
            issued.push((token(&v), n));
        } else {
            issued.push((t, n));
        }
        // Errors mention no token either.
        call(
            &http,
            &p.base,
            Method::GET,
            "/v1/session",
            &format!("{}x", issued.last().unwrap().0),
            None,
        )
        .await;
    }
    // An operator's kill is logged, by whom, without the session's token.
    let (st, v) = call(
        &http,
        &p.base,
        Method::POST,
        "/v1/apps/default/sessions",
        ADMIN,
        Some(json!({"user": "killed"})),
    )
    .await;
    assert_eq!(st, 201);
    issued.push((token(&v), u64::MAX - 1));
    let (st, _) = call(
        &http,
        &p.base,
        Method::DELETE,
        &format!("/v1/sessions/{}", id(&v)),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    let first_output = p.output.lock().unwrap().clone();
    drop(p);

    let mut p = Process::start(&dir);
    for (t, n) in &issued {
        let (st, v) = call(
            &http,
            &p.base,
            Method::GET,
            "/v1/session?touch=false",
            t,
            None,
        )
        .await;
        if *n == u64::MAX {
            assert_eq!(st, 401, "a rotated token stays dead");
        } else if *n == u64::MAX - 1 {
            assert_eq!((st, v["reason"].clone()), (410, json!("killed")));
        } else {
            assert_eq!(st, 200, "session {n} lost after kill -9: {v}");
            assert_eq!(v["data"]["n"], json!(n));
        }
    }
    let status = p.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let output = format!("{first_output}{}", p.output.lock().unwrap());
    assert!(output.contains("sessiond serving"), "the log was captured");
    assert!(
        output.contains("privileges changed; token rotated"),
        "privilege changes are logged"
    );
    assert!(output.contains("session killed"), "kills are logged");
    for (t, _) in &issued {
        let key = t.split(':').nth(1).unwrap();
        assert!(
            !output.contains(key),
            "a session token appears in the server output"
        );
    }
    assert!(
        !output.contains(ADMIN),
        "the admin token appears in the server output"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin token is held to one rule wherever it comes from: the environment, the
/// configuration file and the token file alike (the file once took one character).
#[test]
fn one_rule_for_the_admin_token_from_env_file_and_token_file() {
    let serve = |dir: &std::path::Path, env: Option<&str>, config: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory:",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("SESSIOND_CONFIG")
        .env_remove("SESSIOND_STORE")
        .env_remove("SESSIOND_ADMIN_TOKEN");
        if let Some(t) = env {
            cmd.env("SESSIOND_ADMIN_TOKEN", t);
        }
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = temp_dir("admin-token-rule");
    std::fs::create_dir_all(&dir).unwrap();
    for bad in ["x", "sixteen chars xx"] {
        let (code, err) = serve(&dir, Some(bad), None);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("SESSIOND_ADMIN_TOKEN must be 16 to 1024"),
            "{err}"
        );
        let config = dir.join("sessiond.toml");
        std::fs::write(&config, format!("admin_token = {bad:?}\n")).unwrap();
        let (code, err) = serve(&dir, None, Some(&config));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("admin_token must be 16 to 1024"), "{err}");
        std::fs::remove_file(&config).unwrap();
        std::fs::write(dir.join("admin-token"), format!("{bad}\n")).unwrap();
        let (code, err) = serve(&dir, None, None);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("admin-token must be 16 to 1024"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restart longer than interval + grace: the client that beats right after it keeps
/// its session; one that never beats again is lost a window later.
#[tokio::test]
async fn a_restart_longer_than_the_heartbeat_window_kicks_no_one() {
    let dir = temp_dir("restart-beat");
    let s = Server::start(config(Some(&dir))).await;
    let beat = json!({"heartbeat": {"interval_s": 1, "grace_s": 1}});
    let back = token(&s.open("shop", SHOP_KEY, beat.clone()).await);
    let gone = token(&s.open("shop", SHOP_KEY, beat).await);
    s.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;

    let s = Server::start(config(Some(&dir))).await;
    let (st, v) = s
        .call(Method::POST, "/v1/session/heartbeat", Some(&back), None)
        .await;
    assert_eq!(st, 200, "the seat survives the downtime: {v}");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let (st, v) = s
        .call(Method::POST, "/v1/session/heartbeat", Some(&gone), None)
        .await;
    assert_eq!(st, 410, "{v}");
    assert_eq!(v["reason"], "heartbeat_lost");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bit flip in an acknowledged journal record: the server refuses to start and names
/// `sessiond repair`; the repair keeps every other record and the server starts again.
#[tokio::test]
async fn a_damaged_store_is_refused_then_repaired_by_the_command_it_names() {
    let dir = temp_dir("repair");
    let s = Server::start(config(Some(&dir))).await;
    let first = token(&s.open("shop", SHOP_KEY, json!({"user": "ann"})).await);
    let kept = token(&s.open("shop", SHOP_KEY, json!({"user": "bob"})).await);
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/session/data",
            Some(&kept),
            Some(json!({"n": 1})),
        )
        .await;
    assert_eq!(st, 200);
    s.stop().await;
    let store = dir.join("store");
    let journal = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".log"))
        .unwrap();
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[60] ^= 0x55; // inside the first record
    std::fs::write(&journal, &bytes).unwrap();

    let mut config = config(Some(&dir));
    config.listen = "127.0.0.1:0".parse().unwrap();
    let refused = sessiond_file::FileStore::open(config.store_dir()).unwrap_err();
    assert!(refused.to_string().contains("sessiond repair"), "{refused}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["repair", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("damaged bytes set aside"), "{stdout}");

    let s = Server::start(config).await;
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&kept), None).await;
    assert_eq!((st, &v["data"]), (200, &json!({"n": 1})), "{v}");
    let (st, _) = s.call(Method::GET, "/v1/session", Some(&first), None).await;
    assert_eq!(st, 401, "the damaged record's session is left out");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
