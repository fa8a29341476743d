//! The file store on a disk that fills up and empties again: a real tmpfs of 4 MiB,
//! mounted by the test (it needs root, as CI has; elsewhere it says so and skips, and
//! with `CI=true` a skip is a failure).
//!
//! What must hold: every acknowledged write is there after the disk refused writes and
//! after a restart; a refused write leaves nothing behind, not even until a restart (no
//! phantom session or seat); the store takes writes again by itself once space is
//! freed; and a store closed while the disk is full closes at once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_core::store::{ListQuery, StatusFilter};
use sessiond_core::{Error, JsonObject, Manager, OpenRequest, Policy, Resolve, StoreError};
use sessiond_file::FileStore;
use sessiond_testkit::Tmpfs;

/// A tmpfs of `size` for this test, or a skip (which fails under `CI=true`).
fn tmpfs(name: &str, size: &str) -> Option<Tmpfs> {
    Tmpfs::mount(name, size)
        .map_err(|why| sessiond_core::skip::skip("disk-full test", &why))
        .ok()
}

/// A 4 MiB tmpfs of the test's own: the store's directory and the file that fills it
/// on it, and a runtime.
struct Disk {
    _fs: Tmpfs,
    dir: std::path::PathBuf,
    filler: std::path::PathBuf,
    rt: tokio::runtime::Runtime,
}

fn disk(name: &str) -> Option<Disk> {
    let fs = tmpfs(name, "4m")?;
    Some(Disk {
        dir: fs.path().join("store"),
        filler: fs.path().join("filler"),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        _fs: fs,
    })
}

fn open_manager(dir: &Path) -> Manager {
    let m = Manager::new(Arc::new(FileStore::open(dir).expect("open the store")));
    m.set_policy(
        "app",
        Policy {
            seats: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    m
}

fn open_sessions(m: &Manager, rt: &tokio::runtime::Runtime) -> usize {
    let q = ListQuery {
        app: Some("app".into()),
        status: StatusFilter::Open,
        limit: 1000,
        ..Default::default()
    };
    rt.block_on(m.list(q)).unwrap().len()
}

#[test]
fn a_full_disk_loses_no_acknowledged_write_leaves_no_phantom_and_heals_by_itself() {
    let Some(Disk {
        _fs,
        dir,
        filler,
        rt,
    }) = disk("diskfull")
    else {
        return;
    };
    let m = open_manager(&dir);
    // 24 KiB of storage a session: the journal must keep growing.
    let data = JsonObject::from_value(&json!({ "pad": "x".repeat(24 << 10) })).unwrap();
    let open = |m: &Manager| {
        rt.block_on(m.open(
            "app",
            OpenRequest {
                data: Some(data.clone()),
                ..Default::default()
            },
        ))
    };
    let mut acknowledged = vec![open(&m).unwrap().token];
    Tmpfs::fill(&filler);

    // Writes go on into the journal's preallocated room, then the disk refuses one.
    let refused = loop {
        match open(&m) {
            Ok(o) => acknowledged.push(o.token),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 1000, "the disk never filled up");
    };
    assert!(
        matches!(refused, Error::Store(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    // The refused open is not visible, not even until a restart: its seat is free.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_sessions(&m, &rt) != acknowledged.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        open_sessions(&m, &rt),
        acknowledged.len(),
        "no phantom session"
    );
    assert_eq!(
        rt.block_on(m.seats("app")).unwrap().used,
        acknowledged.len() as u64,
        "no phantom seat"
    );
    assert!(
        rt.block_on(m.store().ping()).is_err(),
        "not ready while full"
    );
    for t in &acknowledged {
        rt.block_on(m.resolve(t, Resolve::default()))
            .expect("acknowledged sessions are readable while the disk is full");
    }

    // Space comes back: the store takes writes again, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while rt.block_on(m.store().ping()).is_err() {
        assert!(Instant::now() < deadline, "the store did not heal");
        std::thread::sleep(Duration::from_millis(50));
    }
    acknowledged.push(open(&m).expect("writes are accepted again").token);
    drop(m);

    let m = open_manager(&dir);
    assert_eq!(open_sessions(&m, &rt), acknowledged.len());
    for t in &acknowledged {
        rt.block_on(m.resolve(t, Resolve::default()))
            .expect("every acknowledged session survives the restart");
    }
}

#[test]
fn a_store_closed_while_the_disk_is_full_closes_at_once() {
    let Some(fs) = tmpfs("diskfull-close", "2m") else {
        return;
    };
    let dir = fs.path().join("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = open_manager(&dir);
    let data = JsonObject::from_value(&json!({ "pad": "x".repeat(24 << 10) })).unwrap();
    let open = |m: &Manager| {
        rt.block_on(m.open(
            "app",
            OpenRequest {
                data: Some(data.clone()),
                ..Default::default()
            },
        ))
    };
    let kept = open(&m).unwrap().token;
    Tmpfs::fill(&fs.path().join("filler"));
    for _ in 0..200 {
        if open(&m).is_err() {
            break;
        }
    }
    assert!(rt.block_on(m.store().ping()).is_err(), "the disk is full");
    rt.block_on(m.store().flush())
        .expect("a shutdown after a failure flushes cleanly: nothing acknowledged is pending");
    // Closing stops the writer in its healing pause (a hang here is the failure).
    drop(m);
    let m = open_manager(&dir);
    rt.block_on(m.resolve(&kept, Resolve::default()))
        .expect("the store reopens on the full disk with what it had");
}

/// A version once seen names one state for good. A change is visible before it is
/// durable; when the disk then refuses it, the store goes back to what the disk holds,
/// and the version that change had must not be given to other data: a client that read
/// it and writes with `If-Match` on it is refused, after the store heals and after a
/// restart (the continued version is made durable before writes come back).
#[test]
fn a_version_seen_before_a_refused_write_never_names_other_data() {
    use std::collections::hash_map::{Entry, HashMap};

    use sessiond_core::{Lookup, Session};

    let Some(Disk {
        _fs,
        dir,
        filler,
        rt,
    }) = disk("diskfull-versions")
    else {
        return;
    };
    let m = open_manager(&dir);
    let id = rt
        .block_on(m.open("app", OpenRequest::default()))
        .unwrap()
        .session
        .id;
    // Every state seen, by version.
    let mut seen: HashMap<u64, Option<serde_json::Value>> = HashMap::new();
    let mut record = |s: &Session| {
        let n = s.data.to_map().get("n").cloned();
        match seen.entry(s.version) {
            Entry::Occupied(e) => assert_eq!(
                e.get(),
                &n,
                "version {} named two states of the session",
                s.version
            ),
            Entry::Vacant(e) => {
                e.insert(n);
            }
        }
    };
    Tmpfs::fill(&filler);
    let pad = "x".repeat(24 << 10);
    let mut last_acknowledged = None;
    let mut undone = None;
    for n in 0..1000 {
        let patch = json!({ "n": n, "pad": pad });
        let outcome = rt.block_on(async {
            let applied = m
                .update_data_ordered(Lookup::Id(id), patch, None, None)
                .await?;
            // Visible before it is durable, as another request would see it.
            let visible = m.get(id).await?;
            Ok::<_, Error>((visible, applied.finish().await))
        });
        let (visible, written) = outcome.expect("the change is made in memory");
        record(&visible);
        match written {
            Ok(s) => {
                record(&s);
                last_acknowledged = Some(s);
            }
            Err(e) => {
                assert!(matches!(e, Error::Store(_)), "{e:?}");
                undone = Some(visible);
                break;
            }
        }
    }
    let undone = undone.expect("the disk never refused a write");
    let last = last_acknowledged.expect("the journal's room took some writes");
    // The read above almost always sees the refused change (the store goes back to
    // its disk only after cutting and reading its files); on a machine so loaded that
    // it did not, what follows still holds, for the state it saw.
    let refused_n = json!(last.data.to_map()["n"].as_u64().unwrap() + 1);
    if undone.data.to_map().get("n") != Some(&refused_n) {
        eprintln!("the refused change was undone before it could be read; checking the rest");
    }

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while rt.block_on(m.store().ping()).is_err() {
        assert!(Instant::now() < deadline, "the store did not heal");
        std::thread::sleep(Duration::from_millis(50));
    }
    let healed = rt.block_on(m.get(id)).unwrap();
    record(&healed);
    assert_eq!(healed.data.to_map().get("n"), last.data.to_map().get("n"));
    assert!(
        healed.version > undone.version,
        "the version went on above the undone change ({} after {})",
        healed.version,
        undone.version
    );
    let late = |m: &Manager| {
        rt.block_on(m.update_data(
            Lookup::Id(id),
            json!({ "n": "late" }),
            Some(undone.version),
            None,
        ))
    };
    let refused = late(&m);
    assert!(
        matches!(refused, Err(Error::VersionMismatch { .. })),
        "a write on the undone state must be refused: {refused:?}"
    );
    drop(m);

    // The continued version was made durable when the store healed.
    let m = open_manager(&dir);
    let restarted = rt.block_on(m.get(id)).unwrap();
    record(&restarted);
    assert_eq!(restarted.version, healed.version);
    let refused = late(&m);
    assert!(
        matches!(refused, Err(Error::VersionMismatch { .. })),
        "after a restart too: {refused:?}"
    );
    let after = rt
        .block_on(m.update_data(Lookup::Id(id), json!({ "n": "after" }), None, None))
        .expect("writes are accepted");
    record(&after);
}

/// Webhooks on a disk that fills up: a change the disk refused owes no delivery (none
/// is ever claimed for it), every acknowledged change's delivery is claimed once the
/// disk heals, and an idle store's claims are not held up by the frames the failure
/// dropped.
#[test]
fn a_refused_change_is_never_reported_and_claims_go_on_after_the_heal() {
    use sessiond_core::hooks::{HookKinds, Route};
    let Some(Disk {
        _fs,
        dir,
        filler,
        rt,
    }) = disk("diskfull-hooks")
    else {
        return;
    };
    let m = open_manager(&dir);
    let outbox = m.store().outbox().expect("the file store keeps an outbox");
    outbox.routes().set([(
        "app".to_string(),
        vec![Route {
            hook: "h".into(),
            kinds: HookKinds::ALL,
        }],
    )]);
    let data = JsonObject::from_value(&json!({ "pad": "x".repeat(24 << 10) })).unwrap();
    let open = |m: &Manager| {
        rt.block_on(m.open(
            "app",
            OpenRequest {
                data: Some(data.clone()),
                ..Default::default()
            },
        ))
    };
    let mut acknowledged = vec![open(&m).unwrap().session.id];
    Tmpfs::fill(&filler);
    loop {
        match open(&m) {
            Ok(o) => acknowledged.push(o.session.id),
            Err(_) => break,
        }
        assert!(acknowledged.len() < 1000, "the disk never filled up");
    }
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while rt.block_on(m.store().ping()).is_err() {
        assert!(Instant::now() < deadline, "the store did not heal");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing was written since the heal: the claim must not wait for a write.
    let now = m.now();
    let claimed = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                outbox.claim(now, now.plus_secs(60), 10_000),
            )
            .await
        })
        .expect("a claim on an idle healed store does not hang")
        .expect("the claim succeeds");
    let mut reported: Vec<String> = claimed
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            body["session"].as_str().unwrap().to_string()
        })
        .collect();
    reported.sort();
    let mut want: Vec<String> = acknowledged.iter().map(|id| id.to_string()).collect();
    want.sort();
    assert_eq!(
        reported, want,
        "exactly the acknowledged opens are reported"
    );
}
