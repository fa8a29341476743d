//! An app's slot moved between the primaries of a real Redis Cluster while three nodes
//! open, write and close its sessions against a seat limit: every acknowledged write
//! is there afterwards, the seats are exact, and the keys are on the new primary.
//! (The conformance suite and the node races run on a cluster too: `on_cluster`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sessiond_core::store::{ListQuery, StatusFilter};
use sessiond_core::{Actor, CloseReason, Error, Lookup, Manager, OpenRequest, Policy, SessionId};
use sessiond_redis::{RedisOptions, RedisStore};

/// Seats of the app whose slot moves.
const SEATS: u32 = 24;

/// What one writer was told about one of its sessions.
#[derive(Debug, Default, Clone)]
struct Told {
    /// The last value of `n` acknowledged, and the last one sent.
    acked_n: u64,
    sent_n: u64,
    /// The close was acknowledged, or sent without an answer.
    closed: bool,
    close_unknown: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apps_slot_moves_under_load_and_no_acknowledged_write_is_lost() {
    let Some(cluster) = crate::cluster("moving a slot of a Redis Cluster under load") else {
        return;
    };
    let prefix = crate::random_prefix();
    let app = format!("moving-{}", &prefix[prefix.len() - 8..]);
    let mut managers = Vec::new();
    for _ in 0..3 {
        let options = RedisOptions::default()
            .with_prefix(&prefix)
            .with_op_timeout(Duration::from_secs(10));
        let store = RedisStore::connect(&cluster.url(), options)
            .await
            .expect("connect to the cluster");
        let m = Manager::new(Arc::new(store));
        m.set_policy(
            &app,
            Policy {
                seats: Some(SEATS),
                ..Default::default()
            },
        )
        .unwrap();
        managers.push(Arc::new(m));
    }

    // Writers: each opens sessions (refused past the seats), writes a counter into its
    // newest one, and closes its oldest every few rounds, through the nodes in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let told: Arc<Mutex<HashMap<SessionId, Told>>> = Arc::default();
    let (acknowledged, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut writers = Vec::new();
    for w in 0..6usize {
        let (managers, stop, told, acknowledged, failed, app) = (
            managers.clone(),
            stop.clone(),
            told.clone(),
            acknowledged.clone(),
            failed.clone(),
            app.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<SessionId> = Vec::new();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let m = &managers[(w + round) % managers.len()];
                let req = OpenRequest {
                    user: Some(format!("writer-{w}")),
                    ..Default::default()
                };
                match m.open(&app, req).await {
                    Ok(o) => {
                        told.lock().unwrap().insert(o.session.id, Told::default());
                        mine.push(o.session.id);
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::SeatsExhausted { .. }) => {}
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("open failed: {e}");
                    }
                }
                if let Some(&id) = mine.last() {
                    let n = told.lock().unwrap()[&id].sent_n + 1;
                    told.lock().unwrap().get_mut(&id).unwrap().sent_n = n;
                    match m
                        .update_data(Lookup::Id(id), json!({ "n": n }), None, None)
                        .await
                    {
                        Ok(_) => {
                            told.lock().unwrap().get_mut(&id).unwrap().acked_n = n;
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("write failed: {e}");
                        }
                    }
                }
                if round.is_multiple_of(3) || mine.len() > 3 {
                    let id = mine.remove(0);
                    let done = m
                        .close(Lookup::Id(id), CloseReason::Logout, Actor::User)
                        .await;
                    let mut t = told.lock().unwrap();
                    let entry = t.get_mut(&id).unwrap();
                    match done {
                        Ok(_) => {
                            entry.closed = true;
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            entry.close_unknown = true;
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("close failed: {e}");
                        }
                    }
                }
            }
        }));
    }

    // Let the load run, move the app's slot in small batches under it, let it run on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slot = cluster.slot_of(&format!("{{{app}}}")).unwrap();
    let from = cluster.owner(slot).unwrap();
    let to = *cluster.ports().iter().find(|p| **p != from).unwrap();
    let before_move = acknowledged.load(Ordering::Relaxed);
    let move_started = std::time::Instant::now();
    let mover = {
        let cluster = Arc::new(cluster);
        let c = cluster.clone();
        let moved = tokio::task::spawn_blocking(move || {
            c.move_slot(slot, to, 4, Duration::from_millis(25))
        })
        .await
        .unwrap();
        (cluster, moved)
    };
    let (cluster, moved) = mover;
    moved.expect("the slot moved");
    let during_move = acknowledged.load(Ordering::Relaxed) - before_move;
    let move_took = move_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(
        cluster.owner(slot).unwrap(),
        to,
        "the slot is on its new primary"
    );
    assert!(
        during_move > 0,
        "the load ran during the move ({during_move} acknowledged)"
    );

    // Every acknowledged write is there, read through a node of its own.
    let reader = &managers[0];
    let told = told.lock().unwrap().clone();
    let mut open_now = 0;
    for (id, t) in &told {
        let s = reader
            .get(*id)
            .await
            .expect("every acknowledged session is there");
        let n = s.data.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
        assert!(
            t.acked_n <= n && n <= t.sent_n,
            "session {id}: n = {n}, acknowledged {}, sent {}",
            t.acked_n,
            t.sent_n
        );
        if t.closed {
            assert!(
                s.closed.is_some(),
                "session {id}: its close was acknowledged"
            );
        } else if !t.close_unknown {
            assert!(s.closed.is_none(), "session {id} was never closed");
        }
        if s.closed.is_none() {
            open_now += 1;
        }
    }
    let open = reader
        .list(ListQuery {
            app: Some(app.clone()),
            status: StatusFilter::Open,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        open.len(),
        open_now,
        "the open index holds exactly the open sessions"
    );
    let seats = reader.seats(&app).await.unwrap();
    assert_eq!(
        seats.used as usize, open_now,
        "the seats count exactly the open sessions"
    );
    assert!(
        seats.used <= u64::from(SEATS),
        "never more than the seats: {}",
        seats.used
    );
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "slot {slot} moved from :{from} to :{to} in {move_took:?}; {} sessions, {} \
         acknowledged operations ({during_move} during the move), {failed} failed",
        told.len(),
        acknowledged.load(Ordering::Relaxed)
    );
}
