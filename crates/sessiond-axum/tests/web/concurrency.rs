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

/// Starts `n` increments of one session at once, and answers their tasks.
fn spawn_increments(app: &Router, pair: &str, n: usize) -> Vec<tokio::task::JoinHandle<Reply>> {
    (0..n)
        .map(|_| {
            let (app, pair) = (app.clone(), pair.to_string());
            tokio::spawn(async move { call(Method::POST, "/incr").cookie(&pair).send(&app).await })
        })
        .collect()
}

/// Waits until `counter` reaches `n` (a liveness bound, not a timing figure).
async fn reach(counter: &std::sync::atomic::AtomicU64, n: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counter.load(Ordering::SeqCst) < n {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Once the first write after `before` is held in the store, starts the requests
/// `more` makes and waits until each has resolved its cookie (a read), after which it
/// joins its session's write line with no store call between.
async fn behind_a_held_write(
    store: &TestStore,
    before: u64,
    more: impl FnOnce() -> Vec<tokio::task::JoinHandle<Reply>>,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    reach(
        &store.writes,
        before + 1,
        "the first write never reached the store",
    )
    .await;
    let reads = store.reads.load(Ordering::SeqCst);
    let tasks = more();
    let n = tasks.len() as u64;
    reach(
        &store.reads,
        reads + n,
        "the requests never resolved their cookie",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tasks
}

/// The sorted answers of increments, each checked 200.
async fn answers(tasks: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<u64> {
    let mut seen = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        seen.push(r.body.parse().unwrap());
    }
    seen.sort_unstable();
    seen
}

/// On a store that makes a change visible before it is durable (the file store), a
/// write waiting for durability no longer holds its session's line: with the store's
/// acknowledgements held back, six parallel increments of one session are all made
/// (alone or in batches, sharing the store's next sync), none is answered before it is
/// durable, and the answers are 1 to 6. Holding the line across the wait would leave
/// the others queued behind the first, their changes never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_becoming_durable_lets_its_sessions_next_writes_in() {
    let store = Arc::new(TestStore::default());
    let m = test_manager(store.clone());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let pair = new_session(&app).await;
    let id = id_of(&app, &pair).await.unwrap();
    let gate = store.hold_durability();
    let tasks = spawn_increments(&app, &pair, 6);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m.get(id).await.unwrap().data.get("n") != Some(serde_json::json!(6)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the session's writes were not all made"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "nothing is answered before it is durable"
    );
    gate.add_permits(6);
    assert_eq!(answers(tasks).await, vec![1, 2, 3, 4, 5, 6]);
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&app).await;
    assert_eq!(r.body, "6");
}

/// On a store whose write is a round trip (Redis, PostgreSQL), the writes of one session
/// that come while one is in flight do not go one by one: they gather in one batch,
/// each planned in order on the data the one before left, and go to the store as one
/// conditional write once the first is answered. One write held in the store, then
/// five requests: two store writes, answers 1 to 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_come_while_one_is_in_flight_go_as_one_batch() {
    let store = Arc::new(TestStore::default());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = new_session(&app).await;
    let before = store.writes.load(Ordering::SeqCst);
    let gate = store.hold_writes();
    let first = spawn_increments(&app, &pair, 1);
    let rest = behind_a_held_write(&store, before, || spawn_increments(&app, &pair, 5)).await;
    let tasks: Vec<_> = first.into_iter().chain(rest).collect();
    gate.add_permits(2);
    assert_eq!(
        answers(tasks).await,
        vec![1, 2, 3, 4, 5, 6],
        "each saw every change before it"
    );
    assert_eq!(
        store.writes.load(Ordering::SeqCst) - before,
        2,
        "the first write, then one batch of five"
    );
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&app).await;
    assert_eq!(r.body, "6");
}

/// Writes that need not read the data (storing a plain value) batch as well: a batch
/// built on such a write is sent when the store holds exactly what it planned, rather
/// than planned again. One held write, then three: two store writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_writes_batch_too() {
    let store = Arc::new(TestStore::default());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = new_session(&app).await;
    let before = store.writes.load(Ordering::SeqCst);
    let gate = store.hold_writes();
    let set = |v: &'static str| {
        let (app, pair) = (app.clone(), pair.clone());
        tokio::spawn(async move {
            call(Method::POST, &format!("/set/k/{v}"))
                .cookie(&pair)
                .send(&app)
                .await
        })
    };
    let first = set("0");
    let rest = behind_a_held_write(&store, before, || vec![set("1"), set("2"), set("3")]).await;
    gate.add_permits(10);
    for t in std::iter::once(first).chain(rest) {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(
        store.writes.load(Ordering::SeqCst) - before,
        2,
        "the first write, then one batch of three"
    );
    let r = call(Method::GET, "/get/k").cookie(&pair).send(&app).await;
    assert_ne!(r.json(), serde_json::json!("0"), "the batch was written");
}

/// A request whose change a write in flight has made already (the same object stored
/// twice: the second computes an empty patch) has nothing to send, but it is answered
/// only once that write is stored: it saw the data that write will leave, which the
/// store may yet refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_already_in_flight_is_answered_once_stored() {
    let store = Arc::new(TestStore::default());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = new_session(&app).await;
    let before = store.writes.load(Ordering::SeqCst);
    let gate = store.hold_writes();
    let set = || {
        let (app, pair) = (app.clone(), pair.clone());
        tokio::spawn(async move {
            call(Method::POST, "/json/a")
                .cookie(&pair)
                .json(r#"{"x":2}"#)
                .send(&app)
                .await
        })
    };
    let first = set();
    let second = behind_a_held_write(&store, before, || vec![set()])
        .await
        .remove(0);
    assert!(
        !second.is_finished(),
        "answered before the write it saw was stored"
    );
    gate.add_permits(1);
    for r in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(store.writes.load(Ordering::SeqCst) - before, 1, "one write");
    let r = call(Method::GET, "/get/a").cookie(&pair).send(&app).await;
    assert_eq!(r.json(), serde_json::json!({ "x": 2 }));
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
