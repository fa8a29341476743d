//! The real binary over a store reached by TLS: `sessiond serve --store rediss://...`
//! against a TLS-only Redis with a password, started here with a certificate from a
//! test CA; a session opened through the API lands in that Redis. A server whose
//! certificate another CA signed is refused at start with a message that says so.
//! Neither the output nor the messages ever show the password.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_core::{Lookup, SessionId, Store};
use sessiond_redis::{RedisOptions, RedisStore};
use sessiond_testkit::{TestCa, TlsRedis};

use crate::common::{temp_dir, token, Process, ADMIN};

const PASSWORD: &str = "redis-pw-never-shown-42";

/// A TLS-only Redis that wants [`PASSWORD`], or `None` (skip; under CI a failure).
fn tls_redis(ca: &TestCa) -> Option<TlsRedis> {
    match TlsRedis::start_with(ca, &["127.0.0.1"], &["--requirepass", PASSWORD]) {
        Ok(server) => Some(server),
        Err(why) => {
            sessiond_core::skip::skip("the server over rediss://", &why);
            None
        }
    }
}

async fn call(
    base: &str,
    m: Method,
    path: &str,
    secret: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(m, format!("{base}{path}"))
        .bearer_auth(secret);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn serves_sessions_kept_in_a_redis_reached_over_tls() {
    let ca = TestCa::new("sessiond test CA");
    let Some(redis) = tls_redis(&ca) else {
        return;
    };
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{}/?ca_cert={}",
        redis.port(),
        redis.ca_path().display()
    );
    let dir = temp_dir("store-tls");
    let mut p = Process::start_with(&dir, &["--store", &format!("{url}&namespace=tls_it")]);

    let (st, opened) = call(
        &p.base,
        Method::POST,
        "/v1/apps/default/sessions",
        ADMIN,
        Some(json!({"user": "ann", "data": {"over": "tls"}})),
    )
    .await;
    assert_eq!(st, 201, "{opened}");
    let (st, read) = call(&p.base, Method::GET, "/v1/session", &token(&opened), None).await;
    assert_eq!(st, 200, "{read}");
    assert_eq!(read["id"], opened["id"]);
    assert_eq!(read["data"], json!({"over": "tls"}));

    // The session is in that Redis, under the namespace given.
    let direct = RedisStore::connect(&url, RedisOptions::default().with_prefix("tls_it"))
        .await
        .expect("the test connects over TLS too");
    let id: SessionId = opened["id"].as_str().unwrap().parse().unwrap();
    let stored = direct.get(Lookup::Id(id)).await.unwrap().expect("stored");
    assert_eq!(stored.user.as_deref(), Some("ann"));

    let status = p.terminate();
    assert!(status.success(), "{status:?}");
    let output = p.output.lock().unwrap().clone();
    assert!(!output.contains(PASSWORD), "the password is in the output");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_store_certificate_from_another_ca_stops_the_start() {
    let ca = TestCa::new("sessiond test CA");
    let Some(redis) = tls_redis(&ca) else {
        return;
    };
    let dir = temp_dir("store-tls-refused");
    let other = TestCa::new("another CA").write_pem(redis.dir(), "other-ca.pem");
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{}/?ca_cert={}",
        redis.port(),
        other.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--data-dir",
        ])
        .arg(&dir)
        .env("SESSIOND_ADMIN_TOKEN", ADMIN)
        .env_remove("SESSIOND_CONFIG")
        .env_remove("SESSIOND_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the server started with a store whose certificate it cannot trust");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("certificate was refused") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(
        !text.contains(PASSWORD),
        "the password is in the output: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
