//! Real races on one session: parallel requests setting distinct keys, and increments
//! through `update` from many clients, on one node and on two nodes sharing a store.
//! Exact counts are asserted.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use sessiond_axum::SessionLayer;
use sessiond_core::{Manager, Policy};
use sessiond_file::FileStore;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_requests_setting_distinct_keys_all_persist() {
    let dir = TempDir::new();
    let id = {
        let m = Manager::new(Arc::new(FileStore::open(dir.path()).unwrap()));
        m.set_policy(APP, Policy::default()).unwrap();
        let app = routes(SessionLayer::new(Arc::new(m), APP).unwrap());
        let pair = new_session(&app).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (app, pair) = (app.clone(), pair.clone());
            tasks.push(tokio::spawn(async move {
                call(Method::POST, &format!("/set/k{i:02}/v{i}"))
                    .cookie(&pair)
                    .send(&app)
                    .await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert!(r.set_cookies().is_empty());
        }
        let keys = call(Method::GET, "/keys")
            .cookie(&pair)
            .send(&app)
            .await
            .json();
        assert_eq!(keys.as_array().unwrap().len(), 21, "{keys}");
        id_of(&app, &pair).await.unwrap()
        // The router, the Manager and the store are dropped here.
    };
    // Reopened from disk: every key is there.
    let m = Manager::new(Arc::new(FileStore::open(dir.path()).unwrap()));
    m.set_policy(APP, Policy::default()).unwrap();
    let s = m.get(id).await.unwrap();
    for i in 0..20 {
        assert_eq!(
            s.data.get(&format!("k{i:02}")),
            Some(serde_json::json!(format!("v{i}")))
        );
    }
}

/// Sends `total` increments from `clients` parallel clients, client `c` going through
/// `nodes[c % nodes.len()]`; answers every value the increments returned.
async fn increments(nodes: &[Router], pair: &str, clients: usize, total: usize) -> Vec<u64> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let app = nodes[c % nodes.len()].clone();
        let pair = pair.to_string();
        let n = total / clients;
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(n);
            for _ in 0..n {
                let r = call(Method::POST, "/incr").cookie(&pair).send(&app).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                seen.push(r.body.parse::<u64>().unwrap());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_increments_from_twenty_clients_land_at_exactly_a_thousand() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let pair = call(Method::POST, "/login/ann")
        .send(&app)
        .await
        .cookie_pair();

    let seen = increments(std::slice::from_ref(&app), &pair, 20, 1000).await;
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "every increment saw its own value");
    assert_eq!(distinct.iter().next_back(), Some(&1000));
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&app).await;
    assert_eq!(r.body, "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_sharing_a_store_lose_no_increment() {
    // Two layers are two app nodes: they share the store but no in-process lock, so
    // their updates really conflict and must be retried on the session version.
    let m = memory_manager(Policy::default());
    let a = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let b = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let pair = new_session(&a).await;

    let seen = increments(&[a.clone(), b], &pair, 20, 1000).await;
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 1000);
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&a).await;
    assert_eq!(r.body, "1000");
}

/// A write waiting for the store to make it durable no longer holds its session's
/// lock: with acknowledgements held back, the session's second write is made while the
/// first still waits (the two share the store's next sync), and each is answered, in
/// order, once the store catches up. Holding the lock across the wait would leave the
/// second request queued behind the first, its write never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_for_durability_lets_its_sessions_next_write_in() {
    let store = Arc::new(TestStore::default());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = new_session(&app).await;
    let before = store.writes.load(Ordering::SeqCst);
    let gate = store.hold_durability();
    let incr = || {
        let (app, pair) = (app.clone(), pair.clone());
        tokio::spawn(async move { call(Method::POST, "/incr").cookie(&pair).send(&app).await })
    };
    let wait_for_writes = |n: u64| {
        let store = store.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.writes.load(Ordering::SeqCst) < before + n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "write {n} of the session was never made"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    let first = incr();
    wait_for_writes(1).await;
    let second = incr();
    wait_for_writes(2).await;
    assert!(
        !first.is_finished(),
        "nothing is answered before it is durable"
    );
    gate.add_permits(2);
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "1"));
    assert_eq!((b.status, b.body.as_str()), (StatusCode::OK, "2"));
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&app).await;
    assert_eq!(r.body, "2");
}

/// With a store that keeps write hints (Redis does), a write that comes first in its
/// request is made from the hint, conditional on its version: no resolve read.
#[tokio::test]
async fn a_write_from_a_current_hint_skips_the_resolve_read() {
    let store = Arc::new(TestStore::hinting());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = new_session(&app).await;
    let r = call(Method::POST, "/incr").cookie(&pair).send(&app).await;
    assert_eq!(r.body, "1");

    store.reads.store(0, Ordering::SeqCst);
    store.writes.store(0, Ordering::SeqCst);
    let r = call(Method::POST, "/incr").cookie(&pair).send(&app).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "2"));
    assert!(r.set_cookies().is_empty(), "same session, same cookie");
    assert_eq!(store.reads.load(Ordering::SeqCst), 0, "no resolve");
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        1,
        "one conditional write"
    );

    // A handler that reads after writing sees the written state without a read.
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&app).await;
    assert_eq!(r.body, "2");
}

/// Stale hints (another node wrote since) make the conditional write fail and the
/// request take the usual path: two nodes, 20 clients, stale hints, no lost increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_hints_lose_no_increment() {
    let store = Arc::new(TestStore::hinting());
    let m = test_manager(store.clone());
    let a = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let b = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let pair = new_session(&a).await;
    store.frozen.store(true, Ordering::SeqCst);

    let seen = increments(&[a.clone(), b], &pair, 20, 1000).await;
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "every increment saw its own value");
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&a).await;
    assert_eq!(r.body, "1000");
}
