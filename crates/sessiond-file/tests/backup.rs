//! Online backups of the file store ([`FileStore::backup`]): taken while writers keep
//! writing, restored by opening the backup directory, and checked against what each
//! writer had acknowledged before the backup began and attempted before it ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sessiond_core::{Lookup, Manager, OpenRequest, Policy, SessionId};
use sessiond_file::FileStore;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sessiond-backup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn counter(s: &sessiond_core::Session) -> u64 {
    s.data.get("n").and_then(|v| v.as_u64()).unwrap_or(0)
}

/// Sessions being counted up by 8 writers, and new ones opened, during a backup. In
/// the restored copy each counter lies between what was acknowledged before the backup
/// began and what was attempted before it ended, every open acknowledged before it
/// began is there, and the copy opens like any store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_holds_every_acknowledged_write() {
    let dir = fresh_dir("load");
    let store = Arc::new(FileStore::open(dir.join("store")).unwrap());
    let m = Arc::new(Manager::new(store.clone()));
    m.set_policy("app", Policy::default()).unwrap();

    // 8 000 sessions with a little storage each, so the copy takes a while.
    let pad = "x".repeat(512);
    let mut ids = Vec::new();
    for _ in 0..8_000 {
        let req = OpenRequest {
            data: Some(serde_json::from_value(json!({"n": 0, "pad": pad})).unwrap()),
            ..Default::default()
        };
        ids.push(m.open("app", req).await.unwrap().session.id);
    }
    let ids = Arc::new(ids);
    let acked: Arc<Vec<AtomicU64>> = Arc::new(ids.iter().map(|_| AtomicU64::new(0)).collect());
    let tried: Arc<Vec<AtomicU64>> = Arc::new(ids.iter().map(|_| AtomicU64::new(0)).collect());
    let opened: Arc<Mutex<Vec<SessionId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (m, ids, acked, tried, opened, stop) = (
            m.clone(),
            ids.clone(),
            acked.clone(),
            tried.clone(),
            opened.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Writer `w` owns the sessions `w`, `w + 8`, `w + 16`...: each counter
                // has one writer, so it only ever grows.
                let per = ids.len() / 8;
                for k in 0..20 {
                    let i = w + 8 * ((k * 50 + round as usize) % per);
                    let n = tried[i].fetch_add(1, Ordering::SeqCst) + 1;
                    m.update_data(Lookup::Id(ids[i]), json!({"n": n}), None, None)
                        .await
                        .unwrap();
                    acked[i].fetch_max(n, Ordering::SeqCst);
                }
                let o = m.open("app", OpenRequest::default()).await.unwrap();
                opened.lock().unwrap().push(o.session.id);
            }
        }));
    }
    // Let the load run, then back up in the middle of it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let opened_before = opened.lock().unwrap().clone();
    let dest = dir.join("backup");
    let b = {
        let (store, dest) = (store.clone(), dest.clone());
        tokio::task::spawn_blocking(move || store.backup(&dest))
            .await
            .unwrap()
            .unwrap()
    };
    let after: Vec<u64> = tried.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(b.sessions >= 8_000, "{b:?}");
    let moved: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>();
    assert!(moved > 0, "the writers wrote while the backup ran");

    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a backup is its owner's only");
    }
    let during = std::fs::metadata(dest.join("journal-0.log")).unwrap().len();
    assert!(
        during > 0,
        "changes made during the copy were kept beside it"
    );

    let restored = FileStore::open(&dest).expect("the backup opens as a store");
    let r = Manager::new(Arc::new(restored));
    r.set_policy("app", Policy::default()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let n = counter(&r.get(*id).await.unwrap());
        assert!(
            before[i] <= n && n <= after[i],
            "session {i}: {n} outside [{}, {}]",
            before[i],
            after[i]
        );
    }
    for id in &opened_before {
        r.get(*id)
            .await
            .expect("an open acknowledged before the backup is in it");
    }
    // The live store went on: its counters are at least what was acknowledged.
    for (i, id) in ids.iter().enumerate() {
        assert!(counter(&m.get(*id).await.unwrap()) >= acked[i].load(Ordering::SeqCst));
    }
    drop(r);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A backup never writes over an existing directory, leaves nothing behind when it
/// fails, and a second one while the first runs is refused.
#[tokio::test]
async fn a_backup_never_overwrites_and_leaves_nothing_when_refused() {
    let dir = fresh_dir("refuse");
    let store = FileStore::open(dir.join("store")).unwrap();
    let m = Manager::new(Arc::new(FileStore::open(dir.join("other")).unwrap()));
    m.set_policy("app", Policy::default()).unwrap();
    let existing = dir.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("keep"), b"mine").unwrap();
    let err = store.backup(&existing).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(existing.join("keep")).unwrap(), b"mine");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".partial")),
        "nothing half-built is left: {names:?}"
    );
    // After a refusal the next backup works.
    let ok = store.backup(dir.join("fine")).unwrap();
    assert_eq!(ok.sessions, 0);
    FileStore::open(dir.join("fine")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
