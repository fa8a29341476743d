//! A change sent to a store that stops answering is answered 503 `outcome_unknown`
//! (read again before retrying), not `store_unavailable` (nothing changed): a private
//! `redis-server` on a free loopback port, frozen with `SIGSTOP` under a running
//! server. Skipped loudly when `redis-server` is missing, except under `CI=true`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// A `redis-server` child without persistence, thawed and killed when dropped.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                sessiond_core::skip::skip(
                    "outcome_unknown test",
                    &format!("cannot run redis-server ({e})"),
                );
                return None;
            }
        };
        let redis = PrivateRedis { child, port };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no redis-server"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(redis)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the server's store answers again.
async fn wait_ready(s: &Server) {
    let started = Instant::now();
    while s.call(Method::GET, "/readyz", None, None).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "store not back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_frozen_redis_is_answered_outcome_unknown() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let mut c = config(None);
    c.store = format!("redis://127.0.0.1:{}", redis.port).parse().unwrap();
    let s = Server::start(c).await;
    // The server computes the write from the copy of the record it wrote within the
    // last second, so the commit is the first thing it sends. On a machine too slow for
    // that second, it reads first, times out before sending anything and rightly
    // answers store_unavailable: try again with a fresh session.
    let mut attempts = 0;
    let tok = loop {
        attempts += 1;
        let tok = token(&s.open("shop", SHOP_KEY, json!({})).await);
        redis.signal("-STOP");
        let (st, v) = s
            .call(
                Method::PATCH,
                "/v1/session/data",
                Some(&tok),
                Some(json!({"n": 1})),
            )
            .await;
        if v["error"] == "store_unavailable" && attempts < 5 {
            redis.signal("-CONT");
            wait_ready(&s).await;
            continue;
        }
        assert_error(st, &v, 503, "outcome_unknown");
        assert!(v["message"].as_str().unwrap().contains("read"), "{v}");
        break tok;
    };
    // A read sends no change: nothing can have happened.
    let (st, v) = s
        .call(Method::GET, "/v1/session?touch=false", Some(&tok), None)
        .await;
    assert_error(st, &v, 503, "store_unavailable");
    redis.signal("-CONT");
    // Read again: one consistent state, and a retry conditional on it lands once.
    let started = Instant::now();
    let v = loop {
        let (st, v) = s
            .call(Method::GET, "/v1/session?touch=false", Some(&tok), None)
            .await;
        if st == 200 {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{st} {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let version = v["version"].as_u64().unwrap();
    match version {
        1 => assert_eq!(v["data"], json!({}), "{v}"),
        2 => assert_eq!(v["data"], json!({"n": 1}), "{v}"),
        _ => panic!("{v}"),
    }
    let retried = s
        .req(Method::PATCH, "/v1/session/data", Some(&tok))
        .header("if-match", version.to_string())
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status().as_u16(), 200);
    let v: serde_json::Value = retried.json().await.unwrap();
    assert_eq!(
        (v["version"].as_u64(), &v["data"]),
        (Some(version + 1), &json!({"n": 2}))
    );
    s.stop().await;
}
