//! The webhook outbox's part of the conformance suite ([`crate::hooks`]): every store
//! that keeps an outbox runs these, with one line:
//!
//! ```ignore
//! sessiond_core::hooks_conformance_tests!(async { MyStore::connect(...).await });
//! ```
//!
//! They check that each change owes exactly its events (and a refused change none),
//! that deliveries survive as the store's data does, and that claims hand each delivery
//! to one claimer at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{setup, user, T0};
use crate::hooks::{Delivery, DeliveryQuery, HookKind, HookKinds, Outbox, Route, Settle};
use crate::policy::{OnUserLimit, Policy};
use crate::session::{Actor, CloseReason};
use crate::store::{Lookup, Store};
use crate::time::Timestamp;
use crate::{Error, OpenRequest};

/// Generates one `#[tokio::test]` per outbox conformance test, each on a store made
/// by `$make` (as [`crate::conformance_tests`]).
#[macro_export]
macro_rules! hooks_conformance_tests {
    ($make:expr) => {
        $crate::hooks_conformance_tests!(@tests $make;
            hooks_owe_each_change_its_events, a_refused_change_owes_no_event,
            deliveries_are_retried_then_dead_then_resent, claims_give_each_delivery_to_one_claimer);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(store) = $crate::conformance::IntoTestStore::into_test_store($make.await) else {
                    return;
                };
                $crate::conformance::hooks::$name(store).await;
            }
        )*
    };
}

fn outbox(store: &Arc<dyn Store>) -> &dyn Outbox {
    store.outbox().expect("this store keeps a webhook outbox")
}

/// Hook `all` wants every kind of event of app `app`, hook `closes` only closes; app
/// `other` has none.
fn route(store: &Arc<dyn Store>) {
    outbox(store).routes().set([(
        "app".to_string(),
        vec![
            Route {
                hook: "all".into(),
                kinds: HookKinds::ALL,
            },
            Route {
                hook: "closes".into(),
                kinds: HookKinds::of([HookKind::Closed]),
            },
        ],
    )]);
}

async fn everything(store: &Arc<dyn Store>) -> Vec<Delivery> {
    outbox(store)
        .deliveries(&DeliveryQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

fn kinds(ds: &[Delivery], hook: &str) -> Vec<HookKind> {
    ds.iter()
        .filter(|d| &*d.hook == hook)
        .map(|d| d.kind)
        .collect()
}

/// An open, a sign-in, a kill, a refused open, a replacement and an expiry each owe
/// their event to the hooks that want it, and nothing else does.
pub async fn hooks_owe_each_change_its_events(store: Arc<dyn Store>) {
    route(&store);
    let (m, clock) = setup(
        store.clone(),
        Policy {
            seats: Some(2),
            max_per_user: Some(1),
            on_user_limit: OnUserLimit::ReplaceOldest,
            idle_timeout_s: 60,
            ..Default::default()
        },
    );
    let guest = m.open("app", OpenRequest::default()).await.unwrap();
    m.open("other", user("x")).await.unwrap();
    let (_, _) = m
        .set_privileges(
            Lookup::Id(guest.session.id),
            vec![],
            None,
            Some("ann".into()),
        )
        .await
        .unwrap();
    let bob = m.open("app", user("bob")).await.unwrap();
    let refused = m.open("app", user("cid")).await;
    assert!(
        matches!(refused, Err(Error::SeatsExhausted { .. })),
        "{refused:?}"
    );
    // A storm of refusals makes one event every few seconds, counting them.
    for _ in 0..3 {
        assert!(m.open("app", user("cid")).await.is_err());
    }
    clock.advance(Duration::from_millis(crate::manager::SEATS_FULL_EVERY_MS));
    assert!(m.open("app", user("cid")).await.is_err());
    // Ann again: her first session is replaced (closed by the system).
    clock.advance(Duration::from_secs(1));
    let ann2 = m.open("app", user("ann")).await.unwrap();
    assert_eq!(ann2.displaced.len(), 1);
    m.close(
        Lookup::Id(bob.session.id),
        CloseReason::Killed,
        Actor::Admin,
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(61));
    m.expire_due(100).await.unwrap();
    let ds = everything(&store).await;
    use HookKind::*;
    assert_eq!(
        kinds(&ds, "all"),
        [
            Opened,
            PrivilegesChanged,
            Opened,
            SeatsFull,
            SeatsFull,
            Closed,
            Opened,
            Closed,
            Closed
        ],
        "{ds:#?}"
    );
    assert_eq!(kinds(&ds, "closes"), [Closed, Closed, Closed]);
    assert!(
        ds.iter().all(|d| &*d.app == "app"),
        "app `other` has no hooks"
    );
    let bodies: Vec<serde_json::Value> = ds
        .iter()
        .filter(|d| &*d.hook == "closes")
        .map(|d| serde_json::from_str(&d.body).unwrap())
        .collect();
    let why: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (b["reason"].as_str().unwrap(), b["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        why,
        [
            ("replaced", "system"),
            ("killed", "admin"),
            ("idle_timeout", "expiry")
        ]
    );
    // One event, one id, whichever hook it goes to.
    let all_closes: Vec<&Delivery> = ds.iter().filter(|d| d.kind == Closed).collect();
    let events: HashSet<_> = all_closes.iter().map(|d| d.event_id).collect();
    assert_eq!((all_closes.len(), events.len()), (6, 3));
    let full: Vec<serde_json::Value> = ds
        .iter()
        .filter(|d| d.kind == SeatsFull)
        .map(|d| serde_json::from_str(&d.body).unwrap())
        .collect();
    assert_eq!(
        (full[0]["limit"].as_str(), full[0]["user"].as_str()),
        (Some("seats"), Some("cid"))
    );
    assert_eq!(
        (full[0]["refusals"].as_u64(), full[1]["refusals"].as_u64()),
        (Some(1), Some(4)),
        "the second reports the three held back and its own"
    );
    assert!(ds
        .iter()
        .all(|d| d.tries == 0 && !d.dead && d.due <= m.now()));
}

/// A change the store refuses (admission, a stale version, a closed session) owes no
/// event; a change that moves nothing a hook hears of (a storage write) owes none.
pub async fn a_refused_change_owes_no_event(store: Arc<dyn Store>) {
    route(&store);
    let (m, _) = setup(
        store.clone(),
        Policy {
            max_per_user: Some(1),
            ..Default::default()
        },
    );
    let ann = m.open("app", user("ann")).await.unwrap();
    let guest = m.open("app", OpenRequest::default()).await.unwrap();
    let before = everything(&store).await.len();
    let login = m
        .set_privileges(
            Lookup::Id(guest.session.id),
            vec![],
            None,
            Some("ann".into()),
        )
        .await;
    assert!(matches!(login, Err(Error::UserLimit { .. })), "{login:?}");
    m.update_data(
        Lookup::Token(ann.token.hash()),
        serde_json::json!({"cart": [1]}),
        None,
        None,
    )
    .await
    .unwrap();
    let stale = m
        .update_data(
            Lookup::Token(ann.token.hash()),
            serde_json::json!({"cart": [2]}),
            Some(1),
            None,
        )
        .await;
    assert!(stale.is_err(), "{stale:?}");
    m.close(
        Lookup::Id(guest.session.id),
        CloseReason::Logout,
        Actor::User,
    )
    .await
    .unwrap();
    let again = m
        .close(
            Lookup::Id(guest.session.id),
            CloseReason::Logout,
            Actor::User,
        )
        .await;
    assert!(again.is_err(), "{again:?}");
    let after = everything(&store).await;
    assert_eq!(
        after.len(),
        before + 2,
        "one close, for both hooks: {after:#?}"
    );
}

/// A failed try comes back after its delay, the last one leaves a dead letter that is
/// never claimed, and an operator's resend makes it due again; a delivered one is gone.
pub async fn deliveries_are_retried_then_dead_then_resent(store: Arc<dyn Store>) {
    route(&store);
    let (m, _) = setup(store.clone(), Policy::default());
    let s = m.open("app", user("ann")).await.unwrap();
    m.close(Lookup::Id(s.session.id), CloseReason::Logout, Actor::User)
        .await
        .unwrap();
    let out = outbox(&store);
    let now = m.now();
    let lease = now.plus_secs(30);
    let claimed = out.claim(now, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 3, "opened to `all`, closed to both");
    assert!(claimed.iter().all(|d| d.due == lease));
    assert!(
        out.claim(now, lease, 10).await.unwrap().is_empty(),
        "all leased"
    );
    let (done, failing) = (&claimed[0], &claimed[1]);
    out.settle("app", done.id, lease, Settle::Delivered)
        .await
        .unwrap();
    let retry = now.plus_secs(10);
    let fail = |retry_at| Settle::Failed {
        retry_at,
        error: "HTTP 503".into(),
    };
    out.settle("app", failing.id, lease, fail(Some(retry)))
        .await
        .unwrap();
    // A stale claimer's failure changes nothing.
    out.settle("app", failing.id, lease, fail(None))
        .await
        .unwrap();
    let list = everything(&store).await;
    assert!(list.iter().all(|d| d.id != done.id), "delivered is gone");
    let f = list.iter().find(|d| d.id == failing.id).unwrap();
    assert_eq!((f.tries, f.due, f.dead), (1, retry, false));
    assert_eq!(f.error.as_deref(), Some("HTTP 503"));
    assert!(out.claim(now, lease, 10).await.unwrap().is_empty());
    let later = out.claim(retry, retry.plus_secs(30), 10).await.unwrap();
    assert_eq!(later.len(), 1);
    out.settle("app", failing.id, retry.plus_secs(30), fail(None))
        .await
        .unwrap();
    let tally = out.tally().await.unwrap();
    assert_eq!((tally.pending, tally.dead), (1, 1));
    let far = Timestamp(T0.0 + 86_400_000);
    let rest = out.claim(far, far.plus_secs(30), 10).await.unwrap();
    assert_eq!(
        rest.len(),
        1,
        "the third, leased till now; never the dead letter"
    );
    assert_ne!(rest[0].id, failing.id);
    let dead = out
        .deliveries(&DeliveryQuery {
            dead: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].tries), (failing.id, 2));
    assert!(
        !out.resend("other", failing.id, far).await.unwrap(),
        "not app other's"
    );
    assert!(out.resend("app", failing.id, far).await.unwrap());
    assert!(!out.resend("app", done.id, far).await.unwrap(), "gone");
    let again = out.claim(far, far.plus_secs(30), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id, again[0].tries, again[0].dead),
        (failing.id, 0, false)
    );
    assert_eq!(again[0].event_id, failing.event_id, "the same event");
    // Dead letters are kept for an operator, not forever.
    out.settle("app", failing.id, far.plus_secs(30), fail(None))
        .await
        .unwrap();
    assert_eq!(out.tally().await.unwrap().dead, 1);
    assert_eq!(
        out.forget_dead(T0, 100).await.unwrap(),
        0,
        "not older than T0"
    );
    assert_eq!(out.forget_dead(T0.plus_secs(1), 100).await.unwrap(), 1);
    assert_eq!(out.tally().await.unwrap().dead, 0);
    assert!(!out.resend("app", failing.id, far).await.unwrap(), "gone");
}

/// Claimers racing over many due deliveries each get distinct ones, and together all.
pub async fn claims_give_each_delivery_to_one_claimer(store: Arc<dyn Store>) {
    route(&store);
    let (m, _) = setup(store.clone(), Policy::default());
    for i in 0..30 {
        m.open("app", user(&format!("u{i}"))).await.unwrap();
    }
    let now = m.now();
    let claimers = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = outbox(&store)
                    .claim(now, now.plus_secs(60), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|d| d.id));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for c in claimers {
        for id in c.await.unwrap() {
            total += 1;
            seen.insert(id);
        }
    }
    assert_eq!((total, seen.len()), (30, 30));
}
