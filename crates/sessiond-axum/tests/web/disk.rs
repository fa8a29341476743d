//! One session's parallel writes on a file store whose disk fills up and empties again:
//! a real tmpfs, mounted by the test (as root, as CI runs; elsewhere a skip, which fails
//! under `CI=true`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use sessiond_axum::SessionLayer;
use sessiond_core::{Manager, Policy};
use sessiond_file::FileStore;
use sessiond_testkit::Tmpfs;

use crate::common::*;

fn open(dir: &std::path::Path) -> Arc<Manager> {
    let m = Manager::new(Arc::new(FileStore::open(dir).expect("open the store")));
    m.set_policy(APP, Policy::default()).unwrap();
    Arc::new(m)
}

async fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sixteen clients increment one session's counter while the disk fills up, refuses
/// writes, and frees space again. The session's writes are let in one after another
/// before they are durable (they share a sync), so a refused batch takes the writes made
/// on top of it down with it. What must hold: the increments answered 200 are exactly
/// 1, 2, ... N (none lost, none counted twice, none built on a refused one), and the
/// counter reads N, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_session_on_a_disk_that_fills_keeps_exactly_the_increments_answered() {
    let fs = match Tmpfs::mount("axum-diskfull", "8m") {
        Ok(fs) => fs,
        Err(why) => return sessiond_core::skip::skip("disk-full test", &why),
    };
    let dir = fs.path().join("store");
    let filler = fs.path().join("filler");
    let m = open(&dir);
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let pair = new_session(&app).await;
    let id = id_of(&app, &pair).await.unwrap();
    Tmpfs::fill(&filler);

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (app, pair) = (app.clone(), pair.clone());
            let (stop, refused, answered) = (stop.clone(), refused.clone(), answered.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let r = call(Method::POST, "/incr").cookie(&pair).send(&app).await;
                    match r.status {
                        StatusCode::OK => answered
                            .lock()
                            .unwrap()
                            .push(r.body.parse::<u64>().unwrap()),
                        StatusCode::SERVICE_UNAVAILABLE => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        other => panic!("{other}: {}", r.body),
                    }
                }
            })
        })
        .collect();

    until("the disk never refused a write", 60, || {
        refused.load(Ordering::SeqCst) > 0
    })
    .await;
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.store().ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not heal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let healed_at = answered.lock().unwrap().len();
    until("no write was answered after the disk healed", 30, || {
        answered.lock().unwrap().len() >= healed_at + 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let mut seen = answered.lock().unwrap().clone();
    seen.sort_unstable();
    let n = seen.len() as u64;
    assert!(
        seen.iter().copied().eq(1..=n),
        "the answers are 1..={n}, each once (first gap or repeat near {:?})",
        seen.windows(2).find(|w| w[1] != w[0] + 1)
    );
    let r = call(Method::GET, "/get/n").cookie(&pair).send(&app).await;
    assert_eq!(r.body, n.to_string());
    drop(app);
    drop(m);

    let m = open(&dir);
    let s = m.get(id).await.unwrap();
    assert_eq!(
        s.data.get("n"),
        Some(serde_json::json!(n)),
        "after a restart"
    );
}
