//! A session row whose body no longer decodes (JSON nested deeper than the decoder
//! allows, or JSON that is not a session) harms only itself: listing, counts, expiry
//! (of its app and of the others), admission, close-all and closes of the other
//! sessions go on around it, its seat stays counted, and closing it by id removes it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::store::{CloseOutcome, ListQuery, StatusFilter};
use sessiond_core::{
    Actor, CloseReason, Error, Lookup, Manager, ManualClock, OnFull, OpenRequest, Policy, Session,
    SessionId, Store, Timestamp,
};

const T0: Timestamp = Timestamp(1_800_000_000_000);

/// How the planted body is broken.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The session's JSON, with storage nested 200 levels deep.
    TooDeep,
    /// JSON, but not a session.
    NotASession,
}

/// `json` (a session's JSON) with a value nested `depth` arrays deep in its storage.
fn nested_too_deep(json: &str, depth: usize) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["data"] = serde_json::json!({ "k": "@DEEP@" });
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    v.to_string().replace("\"@DEEP@\"", &deep)
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

/// Replaces the body of session `id` with `damage` applied, behind the store's back.
async fn plant(store: &common::TestStore, s: &Session, damage: Damage) {
    let raw = common::raw_client(&store.url).await;
    let body = match damage {
        Damage::TooDeep => nested_too_deep(&s.to_json(), 200),
        Damage::NotASession => r#"{"not": "a session"}"#.to_string(),
    };
    let n = raw
        .execute(
            &format!(
                "UPDATE \"{}\".sessions SET body = $2::text::json WHERE id = $1",
                store.schema
            ),
            &[&uuid::Uuid::from_u128(s.id.as_u128()), &body],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn a_bad_row_harms_only_itself(damage: Damage) {
    let Some(test_store) = common::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let clock = Arc::new(ManualClock::new(T0));
    let m = Manager::with_clock(Arc::new(store.clone()), clock.clone());
    m.set_policy(
        "shop",
        Policy {
            idle_timeout_s: 60,
            seats: Some(2),
            max_per_user: Some(1),
            reserved_privileges: vec!["admin".into()],
            ..Default::default()
        },
    )
    .unwrap();

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
    plant(&test_store, &bad.session, damage).await;
    clock.advance(Duration::from_secs(30));

    let open = ListQuery {
        app: Some("shop".into()),
        status: StatusFilter::Open,
        ..Default::default()
    };
    let listed = m.list(open.clone()).await.expect("list");
    assert_eq!(ids(&listed), vec![due.id, good.session.id, admin.id]);
    // A page as long as asked for, the bad row notwithstanding.
    let page = m
        .list(ListQuery {
            limit: 2,
            ..open.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&page), vec![due.id, good.session.id]);
    let seats = m.seats("shop").await.expect("counts");
    assert_eq!(
        (seats.used, seats.open),
        (2, 4),
        "the bad row keeps its seat"
    );

    let swept = m.expire_due(1).await.expect("expiry");
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
        "closing the bad row: {out:?}"
    );
    let seats = m.seats("shop").await.unwrap();
    assert_eq!((seats.used, seats.open), (0, 0), "its seat is free");
    assert!(matches!(store.get(Lookup::Id(bad_id)).await, Ok(None)));
    assert!(matches!(
        m.close(Lookup::Id(bad_id), CloseReason::Killed, Actor::Admin)
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(store.unreadable_records() >= 1, "the rows met were counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_nested_too_deep_harms_only_itself() {
    a_bad_row_harms_only_itself(Damage::TooDeep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_is_not_a_session_harms_only_itself() {
    a_bad_row_harms_only_itself(Damage::NotASession).await;
}

/// With `evict_idlest`, a bad row that is the idlest seat holder is passed over: the
/// idlest readable one is evicted and the seats stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_passes_over_a_bad_row() {
    let Some(test_store) = common::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let clock = Arc::new(ManualClock::new(T0));
    let m = Manager::with_clock(Arc::new(store.clone()), clock.clone());
    m.set_policy(
        "shop",
        Policy {
            seats: Some(2),
            on_full: OnFull::EvictIdlest,
            ..Default::default()
        },
    )
    .unwrap();
    let bad = m.open("shop", request(None, false)).await.unwrap().session;
    clock.advance(Duration::from_secs(1));
    let idle = m.open("shop", request(None, false)).await.unwrap().session;
    clock.advance(Duration::from_secs(1));
    plant(&test_store, &bad, Damage::TooDeep).await;
    let new = m
        .open("shop", request(None, false))
        .await
        .expect("admitted");
    assert_eq!(ids(&new.displaced), vec![idle.id]);
    let seats = m.seats("shop").await.unwrap();
    assert_eq!(seats.used, 2);
}
