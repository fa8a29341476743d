//! Store outages: a TCP proxy between the node and its store is cut under load, then
//! restored. While it is down the API answers 503 (never a wrong answer: no fresh
//! session, no "unknown token"), `/readyz` turns unready, requests end within a bound;
//! afterwards service comes back by itself with every acknowledged write there.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::*;

/// A TCP forwarder on a fixed loopback port that can be cut and restored.
struct Proxy {
    port: u16,
    target: &'static str,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Proxy {
            port: listener.local_addr().unwrap().port(),
            target,
            tasks: Default::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every forwarded connection.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

async fn outage(kind: &str) {
    let (target, scheme) = match kind {
        "postgres" => ("127.0.0.1:5432", "postgres://postgres@127.0.0.1"),
        _ => ("127.0.0.1:6379", "redis://127.0.0.1"),
    };
    if TcpStream::connect(target).await.is_err() {
        sessiond_core::skip::skip(
            &format!("outage test on {kind}"),
            &format!("nothing listens on {target}"),
        );
        return;
    }
    let proxy = Proxy::start(target).await;
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let ns: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let db = if kind == "postgres" { "/test" } else { "" };
    let mut config = config(None);
    config.store = format!("{scheme}:{}{db}?namespace=sessiond_outage_{ns}", proxy.port)
        .parse()
        .unwrap();
    let s = Arc::new(Server::start(config).await);

    // Acknowledged writes before the outage.
    let mut acked = Vec::new();
    for n in 0..20 {
        let t = token(
            &s.open("shop", SHOP_KEY, json!({"user": format!("u{n}")}))
                .await,
        );
        let (st, _) = s
            .call(
                Method::PATCH,
                "/v1/session/data",
                Some(&t),
                Some(json!({"n": n})),
            )
            .await;
        assert_eq!(st, 200);
        acked.push((t, n));
    }

    // Load during the outage: only 200 (before the cut) or 503 are acceptable.
    let stop = Arc::new(AtomicBool::new(false));
    let served_503 = Arc::new(AtomicU32::new(0));
    let load = {
        let (s, stop, served_503, t) = (
            s.clone(),
            stop.clone(),
            served_503.clone(),
            acked[0].0.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (st, v) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a request took {:?}",
                    started.elapsed()
                );
                match st {
                    200 => {}
                    503 => {
                        assert_eq!(v["error"], json!("store_unavailable"), "{v}");
                        served_503.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("wrong answer during the outage: {other} {v}"),
                }
            }
        })
    };
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _) = s.call(Method::GET, "/readyz", None, None).await;
        if st == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready with the store down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 503, "store_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", "0192f0c1-7a3b-7cde-8f01-23456789abcd"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_error(st, &v, 503, "store_unavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, _) = s.call(Method::GET, "/readyz", None, None).await;
        if st == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        served_503.load(Ordering::Relaxed) > 0,
        "the load saw the outage"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for (t, n) in &acked {
        loop {
            let (st, v) = s
                .call(Method::GET, "/v1/session?touch=false", Some(t), None)
                .await;
            if st == 200 {
                assert_eq!(v["data"]["n"], json!(n));
                break;
            }
            assert!(
                st == 503 && Instant::now() < deadline,
                "acknowledged session {n} after recovery: {st} {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Arc::try_unwrap(s).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_fails_closed_and_recovers() {
    outage("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fails_closed_and_recovers() {
    outage("redis").await;
}
