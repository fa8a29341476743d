//! A write sent to a Redis server that stops answering (frozen with `SIGSTOP`) has an
//! unknown outcome, told apart from a server that was unavailable before anything was
//! sent; once the server resumes, a read shows one consistent state, from which a
//! conditional retry works.
//!
//! Runs a private `redis-server` on a free loopback port (never the shared one): skipped
//! loudly when the binary is missing, except under `CI=true`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_core::{Error, Lookup, Manager, OpenRequest, Policy, StoreError};
use sessiond_redis::{RedisOptions, RedisStore};

/// A `redis-server` child on its own port, without persistence; stopped and killed
/// when dropped.
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
                    "frozen Redis test",
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
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} failed");
    }

    /// The server stops: connections stay open, nothing is answered.
    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_frozen_server_has_an_unknown_outcome() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let options = RedisOptions::default().with_op_timeout(Duration::from_millis(500));
    let store = RedisStore::connect(&redis.url(), options).await.unwrap();
    let m = Manager::new(Arc::new(store));
    m.set_policy("shop", Policy::default()).unwrap();
    let id = m
        .open("shop", OpenRequest::default())
        .await
        .unwrap()
        .session
        .id;

    redis.freeze();
    // This node just wrote the record, so the write is computed from its copy and its
    // commit is the first thing sent.
    let started = Instant::now();
    let write = m
        .update_data(Lookup::Id(id), json!({"n": 1}), None, None)
        .await;
    assert!(
        matches!(write, Err(Error::Store(StoreError::OutcomeUnknown(_)))),
        "a write sent to a frozen server: {write:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // A read sends no write: nothing can have changed.
    let read = m.get(id).await;
    assert!(
        matches!(read, Err(Error::Store(StoreError::Unavailable(_)))),
        "a read from a frozen server: {read:?}"
    );
    redis.thaw();

    // Reading again shows the write either whole or not at all.
    let started = Instant::now();
    let s = loop {
        match m.get(id).await {
            Ok(s) => break s,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                eprintln!("re-read after thaw: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no read after the server resumed: {e}"),
        }
    };
    let data = serde_json::to_value(&s.data).unwrap();
    match s.version {
        1 => assert_eq!(data, json!({}), "{s:?}"),
        2 => assert_eq!(data, json!({"n": 1}), "{s:?}"),
        v => panic!("version {v} after one write: {s:?}"),
    }
    // A retry made conditional on what was read lands once.
    let after = m
        .update_data(Lookup::Id(id), json!({"n": 2}), Some(s.version), None)
        .await
        .unwrap();
    assert_eq!(after.version, s.version + 1);
    assert_eq!(serde_json::to_value(&after.data).unwrap(), json!({"n": 2}));
}
