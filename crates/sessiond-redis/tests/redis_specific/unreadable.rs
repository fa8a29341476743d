//! A session record that no longer decodes (JSON nested deeper than the decoder
//! allows, or plain garbage) harms only itself: listing, counts, expiry, admission,
//! close-all and closes of the other sessions of its app go on around it, its seat
//! stays counted, and closing it by id removes it.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::store::{CloseOutcome, ListQuery, StatusFilter};
use sessiond_core::{
    Actor, CloseReason, Error, Lookup, Manager, ManualClock, OpenRequest, Policy, Session,
    SessionId, Store,
};

use super::{fresh_store, indexed, raw_connection, server_url, T0};

/// How the planted record is broken.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The session's JSON, with storage nested 200 levels deep.
    TooDeep,
    /// Neither the revision nor the JSON parse.
    Garbage,
}

/// `json` (a session's JSON) with a value nested `depth` arrays deep in its storage.
fn nested_too_deep(json: &str, depth: usize) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["data"] = serde_json::json!({ "k": "@DEEP@" });
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    v.to_string().replace("\"@DEEP@\"", &deep)
}

/// A fresh store, a raw connection to its server, a manual clock and a manager of
/// app `shop` under `policy`.
struct Scene {
    _store: crate::TestStore,
    prefix: String,
    raw: redis::aio::MultiplexedConnection,
    clock: Arc<ManualClock>,
    m: Manager,
}

async fn scene(policy: Policy) -> Option<Scene> {
    let test_store = fresh_store().await?;
    let store = test_store.0.clone();
    let prefix = store.prefix().to_string();
    let client = redis::Client::open(server_url()).unwrap();
    let raw = raw_connection(&client).await;
    let clock = Arc::new(ManualClock::new(T0));
    let m = Manager::with_clock(Arc::new(store), clock.clone());
    m.set_policy("shop", policy).unwrap();
    Some(Scene {
        _store: test_store,
        prefix,
        raw,
        clock,
        m,
    })
}

fn request(user: Option<&str>, admin: bool) -> OpenRequest {
    OpenRequest {
        user: user.map(String::from),
        privileges: if admin { vec!["admin".into()] } else { vec![] },
        ..Default::default()
    }
}

fn ids(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id).collect()
}

async fn a_bad_record_harms_only_itself(damage: Damage) {
    let Some(Scene {
        _store: held,
        prefix,
        mut raw,
        clock,
        m,
    }) = scene(Policy {
        idle_timeout_s: 60,
        seats: Some(2),
        max_per_user: Some(1),
        reserved_privileges: vec!["admin".into()],
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let store = held.0.clone();

    // bob's session (a seat, due at T0+60) is the one that will go bad; an admin
    // session (no seat) is due just after it; ann (a seat) and another admin are not
    // due at T0+70.
    let bad = m.open("shop", request(Some("bob"), false)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let due = m.open("shop", request(None, true)).await.unwrap().session;
    clock.advance(Duration::from_secs(39));
    let good = m.open("shop", request(Some("ann"), false)).await.unwrap();
    let admin = m.open("shop", request(None, true)).await.unwrap().session;
    let bad_id = bad.session.id;

    let record = format!("{prefix}:{{shop}}:s:{bad_id}");
    let (rev, json): (String, String) = redis::cmd("HMGET")
        .arg(&record)
        .arg("rev")
        .arg("json")
        .query_async(&mut raw)
        .await
        .unwrap();
    let (rev, json) = match damage {
        Damage::TooDeep => (rev, nested_too_deep(&json, 200)),
        Damage::Garbage => ("x".to_string(), "\u{1}not json {".to_string()),
    };
    let () = redis::cmd("HSET")
        .arg(&record)
        .arg("rev")
        .arg(rev)
        .arg("json")
        .arg(json)
        .query_async(&mut raw)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));

    let open = ListQuery {
        app: Some("shop".into()),
        status: StatusFilter::Open,
        ..Default::default()
    };
    let listed = m.list(open.clone()).await.expect("list");
    assert_eq!(ids(&listed), vec![due.id, good.session.id, admin.id]);
    let seats = m.seats("shop").await.expect("counts");
    assert_eq!(
        (seats.used, seats.open),
        (2, 4),
        "the bad record keeps its seat"
    );

    let swept = m.expire_due(100).await.expect("expiry");
    assert_eq!(ids(&swept.closed), vec![due.id]);

    // bob's only session is unreadable: it does not count against his limit, but its
    // seat does.
    match m.open("shop", request(Some("bob"), false)).await {
        Err(Error::SeatsExhausted {
            used: 2,
            total: 2,
            holders,
        }) => assert_eq!(ids(&holders), vec![good.session.id]),
        other => panic!("expected seats_exhausted, got {other:?}"),
    }

    let closed = m
        .close_all("shop", &[good.session.id], Actor::Admin)
        .await
        .expect("close-all");
    assert_eq!(ids(&closed), vec![admin.id]);
    m.close(
        Lookup::Id(good.session.id),
        CloseReason::Killed,
        Actor::Admin,
    )
    .await
    .expect("close of a good session");
    let seats = m.seats("shop").await.unwrap();
    assert_eq!((seats.used, seats.open), (1, 1));

    let out = store
        .close(bad_id, CloseReason::Killed, Actor::Admin, m.now())
        .await;
    assert!(
        matches!(out, Ok(CloseOutcome::Discarded)),
        "closing the bad record: {out:?}"
    );
    let seats = m.seats("shop").await.unwrap();
    assert_eq!((seats.used, seats.open), (0, 0), "its seat is free");
    for name in ["open", "seated", "due", "closed", "purge"] {
        assert!(
            !indexed(&mut raw, &prefix, "shop", name, bad_id).await,
            "{name}"
        );
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg(&record)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists, "the record is gone");
    assert!(matches!(
        m.close(Lookup::Id(bad_id), CloseReason::Killed, Actor::Admin)
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store.unreadable_records() >= 1,
        "the records met were counted"
    );
    // The token of the removed session resolves to nothing.
    assert!(matches!(
        m.resolve(&bad.token, Default::default()).await,
        Err(Error::InvalidToken)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_nested_too_deep_harms_only_itself() {
    a_bad_record_harms_only_itself(Damage::TooDeep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_record_harms_only_itself() {
    a_bad_record_harms_only_itself(Damage::Garbage).await;
}

/// A closed record that went bad is removed by the purge once its retention ended (the
/// index says when), and an open one that went bad does not hold the sweep up, even
/// with a batch of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_goes_past_bad_records() {
    let Some(Scene {
        _store,
        prefix,
        mut raw,
        clock,
        m,
    }) = scene(Policy {
        idle_timeout_s: 60,
        retention_s: 60,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let closed = m.open("shop", request(None, false)).await.unwrap().session;
    m.close(Lookup::Id(closed.id), CloseReason::Logout, Actor::User)
        .await
        .unwrap();
    let bad = m.open("shop", request(None, false)).await.unwrap().session;
    clock.advance(Duration::from_secs(1));
    let due = m.open("shop", request(None, false)).await.unwrap().session;
    for id in [closed.id, bad.id] {
        let () = redis::cmd("HSET")
            .arg(format!("{prefix}:{{shop}}:s:{id}"))
            .arg("json")
            .arg("[")
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(120));
    let out = m.expire_due(1).await.expect("expiry");
    assert_eq!(ids(&out.closed), vec![due.id]);
    assert_eq!(out.purged, 1, "the closed bad record is purged");
    assert!(!indexed(&mut raw, &prefix, "shop", "closed", closed.id).await);
    assert!(indexed(&mut raw, &prefix, "shop", "seated", bad.id).await);
}

/// With `evict_idlest`, a bad record that is the idlest seat holder is passed over:
/// the idlest readable one is evicted and the seats stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_passes_over_a_bad_record() {
    let Some(Scene {
        _store,
        prefix,
        mut raw,
        clock,
        m,
    }) = scene(Policy {
        seats: Some(2),
        on_full: sessiond_core::OnFull::EvictIdlest,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let bad = m.open("shop", request(None, false)).await.unwrap().session;
    clock.advance(Duration::from_secs(1));
    let idle = m.open("shop", request(None, false)).await.unwrap().session;
    clock.advance(Duration::from_secs(1));
    let () = redis::cmd("HSET")
        .arg(format!("{prefix}:{{shop}}:s:{}", bad.id))
        .arg("json")
        .arg("{}")
        .query_async(&mut raw)
        .await
        .unwrap();
    let new = m
        .open("shop", request(None, false))
        .await
        .expect("admitted");
    assert_eq!(ids(&new.displaced), vec![idle.id]);
    assert_eq!(m.seats("shop").await.unwrap().used, 2);
}

/// Index entries that name no record by the key a script builds from them (another
/// spelling of a live session's id, text that is no id at all) are dropped, as any
/// entry of a record gone: admission and expiry go on, and neither loops nor fails.
#[tokio::test]
async fn index_entries_in_another_spelling_or_no_id_are_dropped() {
    let Some(Scene {
        _store,
        prefix,
        mut raw,
        clock,
        m,
    }) = scene(Policy {
        idle_timeout_s: 60,
        max_per_user: Some(2),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let live = m
        .open("shop", request(Some("ann"), false))
        .await
        .unwrap()
        .session;
    let upper = live.id.to_string().to_uppercase();
    for (index, member) in [
        ("u:ann", upper.as_str()),
        ("u:ann", "not-an-id"),
        ("due", upper.as_str()),
        ("due", "not-an-id"),
    ] {
        let () = redis::cmd("ZADD")
            .arg(format!("{prefix}:{{shop}}:{index}"))
            .arg(0)
            .arg(member)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    // Admission reads ann's index: the junk is no session of hers and goes.
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        m.open("shop", request(Some("ann"), false)),
    )
    .await
    .expect("admission does not loop")
    .expect("ann's second session is admitted");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:{{shop}}:u:ann"))
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut want = vec![live.id.to_string(), second.session.id.to_string()];
    want.sort();
    let mut got = members.clone();
    got.sort();
    assert_eq!(got, want, "only the real entries are left");
    // Expiry meets the junk in `due` first: it drops it and closes what is due.
    clock.advance(Duration::from_secs(120));
    let out = tokio::time::timeout(Duration::from_secs(5), m.expire_due(10))
        .await
        .expect("expiry does not loop")
        .expect("expiry");
    assert_eq!(out.closed.len(), 2, "both sessions idled out");
    let junk: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:{{shop}}:due"))
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(junk.is_empty(), "the junk left the due index: {junk:?}");
}
