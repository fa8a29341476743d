//! The store conformance suite: one set of tests every [`Store`] must pass, run through
//! a [`Manager`] with a [`ManualClock`] so time-based rules run in milliseconds.
//!
//! A store crate runs it with one line in its tests:
//!
//! ```ignore
//! sessiond_core::conformance_tests!(async { MyStore::connect(...).await });
//! ```
//!
//! The expression is a future giving the store (or an `Option` of it: `None` skips the
//! suite, for stores whose server is absent; the maker must say so loudly). Each test
//! makes a fresh store, so stores must give each one its own namespace.
//!
//! Besides the tests of single rules, [`model`] holds a property test that runs
//! generated sequences of operations on the store and on a [`crate::MemoryStore`] and
//! compares every answer ([`agrees_with_the_model`], part of the suite).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::events::EventKind;
use crate::manager::{HeartbeatRequest, Manager, OpenRequest, Resolve};
use crate::policy::{HeartbeatPolicy, OnFull, OnUserLimit, Policy};
use crate::session::{Actor, Client, CloseReason};
use crate::store::{ListQuery, Lookup, StatusFilter, Store};
use crate::time::{ManualClock, Timestamp};
use crate::{Error, SessionId, Token};

pub mod across_nodes;
pub mod arbitrary;
pub mod hooks;
pub mod model;

pub use model::agrees_with_the_model;

/// A store, or none when the suite cannot run here.
pub trait IntoTestStore {
    /// The store to test, if any.
    fn into_test_store(self) -> Option<Arc<dyn Store>>;
}

impl<S: Store> IntoTestStore for S {
    fn into_test_store(self) -> Option<Arc<dyn Store>> {
        Some(Arc::new(self))
    }
}

impl<S: Store> IntoTestStore for Option<S> {
    fn into_test_store(self) -> Option<Arc<dyn Store>> {
        self.map(|s| Arc::new(s) as Arc<dyn Store>)
    }
}

/// Generates one `#[tokio::test]` per conformance test, each on a store made by
/// `$make` (a future giving a store or an `Option` of one).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@tests $make;
            open_then_resolve, unknown_token_is_invalid,
            another_apps_token_is_unknown_and_left_alone, a_reader_who_may_not_see_expires_nothing,
            my_other_sessions_are_mine_only, logout_everywhere_closes_one_users_sessions,
            idle_timeout, absolute_lifetime,
            heartbeat_and_activity_are_two_clocks, heartbeat_suspend_and_resume,
            downtime_is_not_a_lost_heartbeat, a_lease_holds_a_silent_seat_then_frees_it,
            a_downtime_gives_no_new_lease,
            expiry_sweep_closes_then_purges, seats_reject_with_holders,
            reserved_privileges_skip_seats, privilege_changes_respect_the_user_limit,
            evict_idlest, user_limit_reject,
            user_limit_replace_oldest, take_over, take_over_of_a_stranger_is_refused,
            bind_ip_refuses_and_keeps_the_session, data_patch_and_versions,
            json_at_its_limits_round_trips,
            write_never_resurrects_a_closed_session, set_privileges_rotates_the_token,
            close_and_close_all, closed_sessions_keep_their_history, list_filters_and_pages,
            timed_out_holders_free_their_seats, race_64_opens_10_seats,
            race_take_over_has_one_winner, race_logins_for_the_last_seats,
            race_logins_for_the_last_user_slots, race_logins_replacing_the_oldest,
            fewer_seats_close_nobody, race_patches_of_distinct_keys,
            race_conditional_increments, ordered_changes_chain_before_they_are_acknowledged,
            expiry_on_many_nodes_closes_each_once,
            a_refused_open_changes_nothing, import_copies_sessions_verbatim,
            events_cross_nodes, agrees_with_the_model);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(store) = $crate::conformance::IntoTestStore::into_test_store($make.await) else {
                    return;
                };
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// The suite's start time: a fixed, realistic instant.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);

fn setup(store: Arc<dyn Store>, policy: Policy) -> (Arc<Manager>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let m = Manager::with_clock(store, clock.clone());
    m.set_policy("app", policy).expect("valid policy");
    m.set_policy("other", Policy::default())
        .expect("valid policy");
    (Arc::new(m), clock)
}

fn user(u: &str) -> OpenRequest {
    OpenRequest {
        user: Some(u.to_string()),
        ..Default::default()
    }
}

const TOUCH: Resolve = Resolve {
    touch: true,
    ip: None,
};
const PEEK: Resolve = Resolve {
    touch: false,
    ip: None,
};

fn closed_reason(r: Result<crate::Session, Error>) -> CloseReason {
    match r {
        Err(Error::SessionClosed(c)) => c.reason,
        other => panic!("expected a closed session, got {other:?}"),
    }
}

/// Open, then resolve by token and read by id; only the token's hash is stored.
pub async fn open_then_resolve(store: Arc<dyn Store>) {
    let (m, _) = setup(store.clone(), Policy::default());
    let o = m
        .open(
            "app",
            OpenRequest {
                user: Some("ann".into()),
                privileges: vec!["sales".into()],
                data: Some(crate::JsonObject::parse(r#"{"n":1}"#).unwrap()),
                client: Client {
                    label: Some("desk-1".into()),
                    ip: Some("10.0.0.7".parse().unwrap()),
                    user_agent: Some("test".into()),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(o.token.expose().starts_with("app:"));
    let s = m.resolve(&o.token, TOUCH).await.unwrap();
    assert_eq!(s.id, o.session.id);
    assert_eq!(s.user.as_deref(), Some("ann"));
    assert!(s.privileges.contains("sales"));
    assert_eq!(s.data.get("n"), Some(json!(1)));
    assert_eq!(s.client.label.as_deref(), Some("desk-1"));
    let by_id = m.get(o.session.id).await.unwrap();
    assert_eq!(by_id.token_hash, o.token.hash());
    let stored = store.get(Lookup::Id(o.session.id)).await.unwrap().unwrap();
    let text = serde_json::to_string(&stored).unwrap();
    assert!(
        !text.contains(o.token.expose()),
        "the token itself must never be stored"
    );
    assert_eq!(m.seats("app").await.unwrap().open, 1);
}

/// A token that matches nothing is refused.
pub async fn unknown_token_is_invalid(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let r = m.resolve(&Token::from_client("app:00"), TOUCH).await;
    assert!(matches!(r, Err(Error::InvalidToken)), "{r:?}");
    assert!(matches!(
        m.open("nope", OpenRequest::default()).await,
        Err(Error::UnknownApp(_))
    ));
}

/// Asked for one app, a token of another app's session is unknown, and that session
/// is neither touched nor beaten (apps sharing a cookie name and a store).
pub async fn another_apps_token_is_unknown_and_left_alone(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            heartbeat: Some(HeartbeatPolicy::every(30)),
            ..Default::default()
        },
    );
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    clock.advance(Duration::from_secs(20));
    let other: Option<Arc<str>> = Some("other".into());
    let r = m.resolve_in(other.clone(), &o.token, TOUCH).await;
    assert!(matches!(r, Err(Error::InvalidToken)), "{r:?}");
    let r = m.heartbeat_in(other, &o.token, None).await;
    assert!(matches!(r, Err(Error::InvalidToken)), "{r:?}");
    let s = m.get(o.session.id).await.unwrap();
    assert_eq!(
        s.last_activity_at, o.session.last_activity_at,
        "not touched"
    );
    assert_eq!(
        s.last_heartbeat_at, o.session.last_heartbeat_at,
        "not beaten"
    );
    // Its own app sees it, and touches it.
    let s = m
        .resolve_in(Some("app".into()), &o.token, TOUCH)
        .await
        .unwrap();
    assert!(s.last_activity_at > o.session.last_activity_at);
}

/// A read by id for a caller who may not see the session ([`Manager::get_visible`],
/// what an operator route's scope does) is told "not found" and writes nothing, even
/// when the session is past its timeout: only a caller who may see it closes it.
pub async fn a_reader_who_may_not_see_expires_nothing(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store.clone(),
        Policy {
            idle_timeout_s: 60,
            ..Default::default()
        },
    );
    let o = m.open("app", user("ann")).await.unwrap();
    let id = o.session.id;
    clock.advance(Duration::from_secs(61));
    let refused = m.get_visible(id, |s| s.app.as_ref() == "other").await;
    assert!(
        matches!(refused, Err(Error::NotFound(x)) if x == id),
        "{refused:?}"
    );
    let stored = store.get(Lookup::Id(id)).await.unwrap().expect("kept");
    assert!(stored.is_open(), "a refused reader closed the session");
    assert_eq!(stored.version, o.session.version, "a refused reader wrote");
    let seen = m
        .get_visible(id, |s| s.app.as_ref() == "app")
        .await
        .unwrap();
    assert_eq!(
        seen.closed.map(|c| c.reason),
        Some(CloseReason::IdleTimeout),
        "an allowed reader gets the session as it is now"
    );
}

/// "My sessions": a holder sees and closes the other open sessions of its own user in
/// its own app, never its own, another user's or another app's (those are "not
/// found", like unknown ids); a guest has none.
pub async fn my_other_sessions_are_mine_only(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let ann1 = m.open("app", user("ann")).await.unwrap();
    let ann2 = m.open("app", user("ann")).await.unwrap();
    let ann3 = m.open("app", user("ann")).await.unwrap();
    let bob = m.open("app", user("bob")).await.unwrap();
    let ann_elsewhere = m.open("other", user("ann")).await.unwrap();
    let guest = m.open("app", OpenRequest::default()).await.unwrap();

    let (me, others) = m.my_other_sessions(&ann1.token, None).await.unwrap();
    assert_eq!(me.id, ann1.session.id);
    let ids: Vec<SessionId> = others.iter().map(|s| s.id).collect();
    assert_eq!(ids, [ann2.session.id, ann3.session.id]);
    let (_, none) = m.my_other_sessions(&guest.token, None).await.unwrap();
    assert!(none.is_empty(), "a guest has no other sessions");

    for not_mine in [
        bob.session.id,
        ann_elsewhere.session.id,
        ann1.session.id,
        guest.session.id,
        SessionId::new(),
    ] {
        let r = m.close_my_other(&ann1.token, None, not_mine).await;
        assert!(
            matches!(r, Err(Error::NotFound(id)) if id == not_mine),
            "{r:?}"
        );
    }
    let closed = m
        .close_my_other(&ann1.token, None, ann2.session.id)
        .await
        .unwrap();
    let c = closed.closed.expect("closed");
    assert_eq!(
        (c.reason, c.by),
        (CloseReason::Logout, Actor::Session(ann1.session.id))
    );
    let all = m.close_my_others(&ann1.token, None).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        [ann3.session.id]
    );
    for still_open in [&ann1, &bob, &ann_elsewhere, &guest] {
        let s = m.get(still_open.session.id).await.unwrap();
        assert!(s.is_open(), "{:?} was closed", s.user);
    }
}

/// "Logout everywhere": one call closes every open session of one user in one app (but
/// those excepted), recording reason and actor; other users and other apps are left.
pub async fn logout_everywhere_closes_one_users_sessions(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let mut ann = Vec::new();
    for _ in 0..3 {
        ann.push(m.open("app", user("ann")).await.unwrap().session.id);
    }
    let bob = m.open("app", user("bob")).await.unwrap().session.id;
    let ann_elsewhere = m.open("other", user("ann")).await.unwrap().session.id;
    let guest = m
        .open("app", OpenRequest::default())
        .await
        .unwrap()
        .session
        .id;
    let closed = m
        .close_user("app", "ann", &[ann[0]], CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    let mut ids: Vec<SessionId> = closed.iter().map(|s| s.id).collect();
    ids.sort();
    let mut want = vec![ann[1], ann[2]];
    want.sort();
    assert_eq!(ids, want);
    for s in &closed {
        let c = s.closed.expect("closed");
        assert_eq!((c.reason, c.by), (CloseReason::Killed, Actor::Admin));
        assert_eq!(m.get(s.id).await.unwrap().closed, Some(c), "stored");
    }
    for open in [ann[0], bob, ann_elsewhere, guest] {
        assert!(m.get(open).await.unwrap().is_open(), "{open} was closed");
    }
    // Nobody left to close: an empty answer, not an error.
    let again = m
        .close_user("app", "ann", &[ann[0]], CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    assert!(again.is_empty());
}

/// Activity resets the idle timeout; silence past it closes the session.
pub async fn idle_timeout(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            idle_timeout_s: 60,
            ..Default::default()
        },
    );
    let mut events = m.subscribe();
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    clock.advance(Duration::from_secs(50));
    m.resolve(&o.token, TOUCH).await.unwrap();
    clock.advance(Duration::from_secs(50));
    m.resolve(&o.token, PEEK)
        .await
        .expect("touched 50 s ago: still open");
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        closed_reason(m.resolve(&o.token, TOUCH).await),
        CloseReason::IdleTimeout
    );
    assert_eq!(
        closed_reason(m.resolve(&o.token, TOUCH).await),
        CloseReason::IdleTimeout
    );
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push((e.kind, e.reason, e.by));
    }
    assert_eq!(
        kinds,
        vec![
            (EventKind::Opened, None, None),
            (
                EventKind::Closed,
                Some(CloseReason::IdleTimeout),
                Some(Actor::Expiry)
            )
        ]
    );
}

/// No activity extends a session past its absolute lifetime.
pub async fn absolute_lifetime(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            idle_timeout_s: 60,
            absolute_lifetime_s: 300,
            ..Default::default()
        },
    );
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    for _ in 0..10 {
        clock.advance(Duration::from_secs(30));
        m.resolve(&o.token, TOUCH).await.unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        closed_reason(m.resolve(&o.token, TOUCH).await),
        CloseReason::AbsoluteTimeout
    );
}

/// A seat lease: a session whose beats stop keeps its seat for the lease after
/// interval + grace (away; the house stays full), its own beat brings it back, and once
/// the lease runs out it closes `lease_expired` (by the sweep, with its event) and the
/// seat is free.
pub async fn a_lease_holds_a_silent_seat_then_frees_it(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            seats: Some(1),
            idle_timeout_s: 3600,
            heartbeat: Some(HeartbeatPolicy {
                grace_s: 5,
                lease_s: 60,
                ..HeartbeatPolicy::every(10)
            }),
            ..Default::default()
        },
    );
    let mut events = m.subscribe();
    let a = m.open("app", user("ann")).await.unwrap();
    assert_eq!(a.session.heartbeat.map(|h| h.lease_s), Some(60));
    clock.advance(Duration::from_secs(40));
    let now = m.now();
    let away = m.get(a.session.id).await.unwrap();
    assert!(
        away.is_open() && away.away_since(now).is_some(),
        "away, not closed"
    );
    assert!(
        matches!(
            m.open("app", user("bob")).await,
            Err(Error::SeatsExhausted { .. })
        ),
        "the away seat is held"
    );
    m.expire_due(100).await.unwrap();
    m.heartbeat(&a.token, None)
        .await
        .expect("its own beat brings it back");
    assert_eq!(m.get(a.session.id).await.unwrap().away_since(m.now()), None);
    // Silent past interval + grace + lease: closed by the sweep as lease_expired.
    clock.advance(Duration::from_secs(76));
    let swept = m.expire_due(100).await.unwrap();
    assert_eq!(swept.closed.len(), 1);
    let gone = m.get(a.session.id).await.unwrap();
    assert_eq!(
        gone.closed.map(|c| c.reason),
        Some(CloseReason::LeaseExpired)
    );
    let mut closes = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::Closed {
            closes.push(e.reason);
        }
    }
    assert_eq!(closes, [Some(CloseReason::LeaseExpired)]);
    m.open("app", user("bob")).await.expect("the seat is free");
}

/// A downtime (a restart, a store outage) gives an away session interval + grace from
/// its end to beat again, not a new lease: a store that blips every few minutes must
/// not keep an away seat held for ever.
pub async fn a_downtime_gives_no_new_lease(store: Arc<dyn Store>) {
    let policy = Policy {
        seats: Some(3),
        idle_timeout_s: 3600,
        heartbeat: Some(HeartbeatPolicy {
            grace_s: 5,
            lease_s: 60,
            ..HeartbeatPolicy::every(10)
        }),
        ..Default::default()
    };
    let (m, clock) = setup(store.clone(), policy.clone());
    let away = m.open("app", user("ann")).await.unwrap();
    // Away from T0 + 15 s; its lease ends at T0 + 75 s. The server goes down at T0 + 50 s
    // and is back at T0 + 70 s.
    clock.advance(Duration::from_secs(50));
    drop(m);
    clock.advance(Duration::from_secs(20));
    let m = Arc::new(Manager::with_clock(store, clock.clone()));
    m.set_policy("app", policy).unwrap();
    m.mark_downtime();
    m.renew_heartbeats().await.unwrap();
    // Interval + grace from the restart (T0 + 85 s), not T0 + 70 s + the lease.
    clock.advance(Duration::from_secs(14));
    m.expire_due(100).await.unwrap();
    assert!(
        m.get(away.session.id).await.unwrap().is_open(),
        "still within the window"
    );
    clock.advance(Duration::from_secs(2));
    m.expire_due(100).await.unwrap();
    let s = m.get(away.session.id).await.unwrap();
    assert_eq!(
        s.closed.map(|c| c.reason),
        Some(CloseReason::LeaseExpired),
        "{s:?}"
    );
}

/// A heartbeat never counts as activity; activity never revives a lost heartbeat.
pub async fn heartbeat_and_activity_are_two_clocks(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            idle_timeout_s: 120,
            heartbeat: Some(HeartbeatPolicy::every(30)),
            ..Default::default()
        },
    );
    // Beats but no activity: idle timeout.
    let a = m.open("app", OpenRequest::default()).await.unwrap();
    for _ in 0..4 {
        clock.advance(Duration::from_secs(30));
        m.heartbeat(&a.token, None).await.unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        closed_reason(m.heartbeat(&a.token, None).await),
        CloseReason::IdleTimeout
    );
    // Activity but no beats: heartbeat lost after interval + grace.
    let b = m
        .open(
            "app",
            OpenRequest {
                heartbeat: Some(HeartbeatRequest {
                    interval_s: 10,
                    grace_s: Some(5),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    m.resolve(&b.token, TOUCH).await.unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        closed_reason(m.resolve(&b.token, TOUCH).await),
        CloseReason::HeartbeatLost
    );
}

/// A restart longer than interval + grace: every session that missed a beat gets a
/// fresh window; a client that beats within it keeps its seat, one that does not is
/// lost a window later; idle and absolute timeouts are not stretched.
pub async fn downtime_is_not_a_lost_heartbeat(store: Arc<dyn Store>) {
    let policy = Policy {
        idle_timeout_s: 600,
        seats: Some(3),
        heartbeat: Some(HeartbeatPolicy {
            interval_s: 10,
            grace_s: 5,
            ..HeartbeatPolicy::every(10)
        }),
        ..Default::default()
    };
    let (m, clock) = setup(store.clone(), policy.clone());
    let back = m.open("app", OpenRequest::default()).await.unwrap();
    let gone = m.open("app", OpenRequest::default()).await.unwrap();
    let idle = m
        .open(
            "app",
            OpenRequest {
                idle_timeout_s: Some(30),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    drop(m);

    // The server is down for a minute, then starts again on the same store.
    clock.advance(Duration::from_secs(60));
    let m = Arc::new(Manager::with_clock(store, clock.clone()));
    m.set_policy("app", policy).unwrap();
    m.mark_downtime();
    // Before the sweeper's renewal, a request counts the missed beat from now.
    let early = m
        .resolve(&back.token, PEEK)
        .await
        .expect("not lost for the downtime");
    assert!(early.is_open());
    let mut events = m.subscribe();
    assert_eq!(
        m.renew_heartbeats().await.unwrap(),
        2,
        "back and gone renewed"
    );
    assert_eq!(
        events.recv().await.unwrap().id,
        idle.session.id,
        "the idle timeout still closed its session"
    );
    let s = m.get(idle.session.id).await.unwrap();
    assert_eq!(s.closed.map(|c| c.reason), Some(CloseReason::IdleTimeout));

    clock.advance(Duration::from_secs(12));
    m.heartbeat(&back.token, None)
        .await
        .expect("a client beating within the fresh window keeps its seat");
    clock.advance(Duration::from_secs(4));
    assert_eq!(
        closed_reason(m.heartbeat(&gone.token, None).await),
        CloseReason::HeartbeatLost,
        "one that never beats is lost one window after the restart"
    );
    assert_eq!(m.seats("app").await.unwrap().used, 1);
    assert_eq!(
        m.renew_heartbeats().await.unwrap(),
        0,
        "a session that beats is not renewed"
    );
}

/// A suspended heartbeat leaves only the idle timeout; resuming starts a new window.
pub async fn heartbeat_suspend_and_resume(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            idle_timeout_s: 600,
            heartbeat: Some(HeartbeatPolicy::every(30)),
            ..Default::default()
        },
    );
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let lookup = Lookup::Token(o.token.hash());
    let s = m
        .set_heartbeat(lookup, false, None, None, None)
        .await
        .unwrap();
    assert!(!s.heartbeat.unwrap().active);
    clock.advance(Duration::from_secs(500));
    m.resolve(&o.token, TOUCH)
        .await
        .expect("no heartbeat needed while suspended");
    let s = m
        .set_heartbeat(lookup, true, Some(20), Some(5), None)
        .await
        .unwrap();
    assert_eq!(s.heartbeat.unwrap().interval_s, 20);
    clock.advance(Duration::from_secs(25));
    m.heartbeat(&o.token, None)
        .await
        .expect("within 20 + 5 s of resuming");
    clock.advance(Duration::from_secs(26));
    assert_eq!(
        closed_reason(m.resolve(&o.token, PEEK).await),
        CloseReason::HeartbeatLost
    );
}

/// The sweeper closes what timed out (one event each) and purges after retention.
pub async fn expiry_sweep_closes_then_purges(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            idle_timeout_s: 60,
            retention_s: 3600,
            ..Default::default()
        },
    );
    let mut events = m.subscribe();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            m.open("app", OpenRequest::default())
                .await
                .unwrap()
                .session
                .id,
        );
    }
    let keep = m.open("other", OpenRequest::default()).await.unwrap();
    assert_eq!(m.expire_due(100).await.unwrap().closed.len(), 0);
    clock.advance(Duration::from_secs(61));
    let out = m.expire_due(100).await.unwrap();
    assert_eq!(out.closed.len(), 5);
    assert!(out
        .closed
        .iter()
        .all(|s| s.closed.unwrap().reason == CloseReason::IdleTimeout));
    assert_eq!(
        m.expire_due(100).await.unwrap().closed.len(),
        0,
        "each closed once"
    );
    let closes = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| e.kind == EventKind::Closed)
        .count();
    assert_eq!(closes, 5);
    assert_eq!(
        m.get(ids[0]).await.unwrap().closed.unwrap().reason,
        CloseReason::IdleTimeout
    );
    assert_eq!(m.seats("app").await.unwrap().open, 0);
    clock.advance(Duration::from_secs(3601));
    let out = m.expire_due(100).await.unwrap();
    assert_eq!(out.purged, 5);
    assert!(matches!(m.get(ids[0]).await, Err(Error::NotFound(_))));
    // The "other" app's default 60-minute idle timeout passed too, then it was kept.
    assert!(m.get(keep.session.id).await.is_ok());
}

fn seats(n: u32) -> Policy {
    Policy {
        seats: Some(n),
        reserved_privileges: vec!["admin".into()],
        ..Default::default()
    }
}

/// A full house refuses and lists the seat holders.
pub async fn seats_reject_with_holders(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(2));
    let a = m.open("app", user("a")).await.unwrap();
    let b = m.open("app", user("b")).await.unwrap();
    match m.open("app", user("c")).await {
        Err(Error::SeatsExhausted {
            used,
            total,
            holders,
        }) => {
            assert_eq!((used, total), (2, 2));
            let mut got: Vec<_> = holders.iter().map(|h| h.id).collect();
            got.sort();
            assert_eq!(got, vec![a.session.id, b.session.id]);
        }
        other => panic!("expected seats_exhausted, got {other:?}"),
    }
    let s = m.seats("app").await.unwrap();
    assert_eq!((s.used, s.total, s.open), (2, Some(2), 2));
    m.close(Lookup::Id(a.session.id), CloseReason::Logout, Actor::User)
        .await
        .unwrap();
    m.open("app", user("c")).await.expect("a seat was freed");
}

/// Sessions with a reserved privilege get in when the house is full and take no seat.
pub async fn reserved_privileges_skip_seats(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(1));
    m.open("app", user("a")).await.unwrap();
    let admin = m
        .open(
            "app",
            OpenRequest {
                user: Some("root".into()),
                privileges: vec!["admin".into()],
                ..Default::default()
            },
        )
        .await
        .expect("reserved privilege gets in");
    assert!(!admin.session.counts_seat);
    let s = m.seats("app").await.unwrap();
    assert_eq!((s.used, s.open), (1, 2));
    // Losing the privilege would make the session take a seat: not while all are taken.
    let full = m
        .set_privileges(Lookup::Id(admin.session.id), vec![], None, None)
        .await;
    match full {
        Err(Error::SeatsExhausted {
            used,
            total,
            holders,
        }) => {
            assert_eq!((used, total), (1, 1));
            assert_eq!(holders.len(), 1, "the seat holder is named");
        }
        other => panic!("expected seats_exhausted, got {other:?}"),
    }
    let kept = m.get(admin.session.id).await.unwrap();
    assert_eq!(
        kept.version, admin.session.version,
        "refused: nothing changed"
    );
    assert!(!kept.counts_seat);
    m.resolve(&admin.token, TOUCH)
        .await
        .expect("old token still works");
    // Once a seat is free, the change takes it.
    let holder = m.list(ListQuery::default()).await.unwrap();
    let holder = holder.iter().find(|s| s.counts_seat).unwrap();
    m.close(Lookup::Id(holder.id), CloseReason::Logout, Actor::User)
        .await
        .unwrap();
    let (s, _) = m
        .set_privileges(Lookup::Id(admin.session.id), vec![], None, None)
        .await
        .unwrap();
    assert!(s.counts_seat);
    assert_eq!(m.seats("app").await.unwrap().used, 1);
}

/// A privilege change that moves a session to a user is admitted like an open of that
/// user: `reject` refuses it at the limit and changes nothing, `replace_oldest` closes
/// the user's oldest session as `replaced`.
pub async fn privilege_changes_respect_the_user_limit(store: Arc<dyn Store>) {
    for on_user_limit in [OnUserLimit::Reject, OnUserLimit::ReplaceOldest] {
        let (m, clock) = setup(
            store.clone(),
            Policy {
                max_per_user: Some(1),
                on_user_limit,
                ..Default::default()
            },
        );
        let app = m.open("app", user("ann")).await.unwrap();
        clock.advance(Duration::from_secs(1));
        let guest = m.open("app", OpenRequest::default()).await.unwrap();
        let login = m
            .set_privileges(
                Lookup::Id(guest.session.id),
                vec![],
                None,
                Some("ann".into()),
            )
            .await;
        let open_of_ann = || async {
            m.list(ListQuery {
                app: Some("app".into()),
                status: StatusFilter::Open,
                user: Some("ann".into()),
                ..Default::default()
            })
            .await
            .unwrap()
        };
        match on_user_limit {
            OnUserLimit::Reject => {
                assert!(
                    matches!(login, Err(Error::UserLimit { max: 1 })),
                    "{login:?}"
                );
                let g = m.get(guest.session.id).await.unwrap();
                assert_eq!(
                    (g.user.as_deref(), g.version),
                    (None, guest.session.version)
                );
                m.resolve(&app.token, TOUCH).await.unwrap();
            }
            OnUserLimit::ReplaceOldest => {
                let (s, _) = login.unwrap();
                assert_eq!(s.user.as_deref(), Some("ann"));
                assert_eq!(
                    closed_reason(m.resolve(&app.token, TOUCH).await),
                    CloseReason::Replaced
                );
                let open = open_of_ann().await;
                assert_eq!(open.len(), 1);
                assert_eq!(open[0].id, guest.session.id);
            }
        }
        // A change that keeps the user is no new login: never refused for the limit.
        let ann = open_of_ann().await[0].id;
        m.set_privileges(Lookup::Id(ann), vec!["x".into()], None, Some("ann".into()))
            .await
            .unwrap();
        m.close_all("app", &[], Actor::Admin).await.unwrap();
    }
}

/// `evict_idlest` closes the session with the oldest activity.
pub async fn evict_idlest(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            seats: Some(2),
            on_full: OnFull::EvictIdlest,
            ..Default::default()
        },
    );
    let a = m.open("app", user("a")).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let b = m.open("app", user("b")).await.unwrap();
    clock.advance(Duration::from_secs(5));
    m.resolve(&a.token, TOUCH).await.unwrap();
    let c = m.open("app", user("c")).await.unwrap();
    assert_eq!(c.displaced.len(), 1);
    assert_eq!(c.displaced[0].id, b.session.id);
    let closure = m.get(b.session.id).await.unwrap().closed.unwrap();
    assert_eq!(closure.reason, CloseReason::Evicted);
    assert_eq!(m.seats("app").await.unwrap().used, 2);
}

/// `max_per_user` with `reject`.
pub async fn user_limit_reject(store: Arc<dyn Store>) {
    let (m, _) = setup(
        store,
        Policy {
            max_per_user: Some(2),
            ..Default::default()
        },
    );
    m.open("app", user("a")).await.unwrap();
    m.open("app", user("a")).await.unwrap();
    assert!(matches!(
        m.open("app", user("a")).await,
        Err(Error::UserLimit { max: 2 })
    ));
    m.open("app", user("b"))
        .await
        .expect("other users are not limited");
    m.open("app", OpenRequest::default())
        .await
        .expect("guests are not limited");
}

/// `max_per_user` with `replace_oldest` (Gambas `Unique`).
pub async fn user_limit_replace_oldest(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            max_per_user: Some(1),
            on_user_limit: OnUserLimit::ReplaceOldest,
            ..Default::default()
        },
    );
    let first = m.open("app", user("a")).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let second = m.open("app", user("a")).await.unwrap();
    assert_eq!(second.displaced.len(), 1);
    assert_eq!(
        closed_reason(m.resolve(&first.token, TOUCH).await),
        CloseReason::Replaced
    );
    m.resolve(&second.token, TOUCH).await.unwrap();
    let open = m
        .list(ListQuery {
            app: Some("app".into()),
            status: StatusFilter::Open,
            user: Some("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
}

/// Take-over closes the holder as `taken_over`, by the newcomer, and admits it.
pub async fn take_over(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(1));
    let a = m.open("app", user("a")).await.unwrap();
    let b = m
        .open(
            "app",
            OpenRequest {
                take_over: Some(a.session.id),
                ..user("b")
            },
        )
        .await
        .unwrap();
    let closure = m.get(a.session.id).await.unwrap().closed.unwrap();
    assert_eq!(closure.reason, CloseReason::TakenOver);
    assert_eq!(closure.by, Actor::Session(b.session.id));
    assert_eq!(
        closed_reason(m.resolve(&a.token, TOUCH).await),
        CloseReason::TakenOver
    );
    assert_eq!(m.seats("app").await.unwrap().used, 1);
}

/// Taking over a closed session or one of another app is refused, changing nothing.
pub async fn take_over_of_a_stranger_is_refused(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(1));
    let a = m.open("app", user("a")).await.unwrap();
    let stranger = m.open("other", user("x")).await.unwrap();
    let r = m
        .open(
            "app",
            OpenRequest {
                take_over: Some(stranger.session.id),
                ..user("b")
            },
        )
        .await;
    assert!(matches!(r, Err(Error::TakeOverTarget)), "{r:?}");
    m.resolve(&stranger.token, PEEK).await.expect("untouched");
    m.resolve(&a.token, PEEK).await.expect("untouched");
}

/// With `bind_ip`, another address gets `IpMismatch` and the session stays as it was.
pub async fn bind_ip_refuses_and_keeps_the_session(store: Arc<dyn Store>) {
    let (m, _) = setup(
        store,
        Policy {
            bind_ip: true,
            ..Default::default()
        },
    );
    let ip = "192.0.2.1".parse().unwrap();
    let o = m
        .open(
            "app",
            OpenRequest {
                client: Client {
                    ip: Some(ip),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let other = Resolve {
        touch: true,
        ip: Some("192.0.2.2".parse().unwrap()),
    };
    assert!(matches!(
        m.resolve(&o.token, other).await,
        Err(Error::IpMismatch)
    ));
    let r = m
        .update_data(
            Lookup::Token(o.token.hash()),
            json!({"x": 1}),
            None,
            other.ip,
        )
        .await;
    assert!(matches!(r, Err(Error::IpMismatch)));
    let s = m
        .resolve(
            &o.token,
            Resolve {
                touch: true,
                ip: Some(ip),
            },
        )
        .await
        .unwrap();
    assert_eq!(s.version, 1);
    assert!(s.data.is_empty());
}

/// Merge patches, `If-Match` and the size limit; refusals change nothing.
pub async fn data_patch_and_versions(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let l = Lookup::Token(o.token.hash());
    let s = m
        .update_data(l, json!({"cart": {"a": 1, "b": 2}}), Some(1), None)
        .await
        .unwrap();
    assert_eq!(s.version, 2);
    let s = m
        .update_data(l, json!({"cart": {"a": null}, "n": 5}), None, None)
        .await
        .unwrap();
    assert_eq!(s.data.get("cart"), Some(json!({"b": 2})));
    assert_eq!(s.version, 3);
    let stale = m.update_data(l, json!({"n": 6}), Some(2), None).await;
    assert!(
        matches!(stale, Err(Error::VersionMismatch { current: 3 })),
        "{stale:?}"
    );
    let big = "x".repeat(m.limits().max_data_bytes);
    assert!(matches!(
        m.update_data(l, json!({ "big": big }), None, None).await,
        Err(Error::DataTooLarge { .. })
    ));
    assert!(matches!(
        m.update_data(l, json!([1]), None, None).await,
        Err(Error::BadInput(_))
    ));
    let s = m.resolve(&o.token, PEEK).await.unwrap();
    assert_eq!((s.version, s.data.get("n")), (3, Some(json!(5))));
    // A touch changes no version.
    assert_eq!(m.resolve(&o.token, TOUCH).await.unwrap().version, 3);
}

/// JSON `levels` deep (the outer object is level 1), objects and arrays alternating.
pub fn nested_json(levels: usize) -> serde_json::Value {
    let mut v = json!("leaf");
    for level in (2..=levels).rev() {
        v = if level % 2 == 0 {
            json!([v])
        } else {
            json!({ "k": v })
        };
    }
    json!({ "d": v })
}

/// Storage and info at the JSON limits are stored and read back whole; one level or one
/// key byte more is refused and changes nothing.
pub async fn json_at_its_limits_round_trips(store: Arc<dyn Store>) {
    use crate::{JsonObject, Limits};
    let (m, _) = setup(store, Policy::default());
    let deepest = JsonObject::from_value(&nested_json(Limits::MAX_JSON_DEPTH)).unwrap();
    let o = m
        .open(
            "app",
            OpenRequest {
                data: Some(deepest.clone()),
                info: Some(deepest.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let back = m.get(o.session.id).await.unwrap();
    assert_eq!((&back.data, &back.info), (&deepest, &deepest));
    let q = ListQuery {
        app: Some("app".into()),
        ..Default::default()
    };
    assert_eq!(m.list(q.clone()).await.unwrap()[0].data, deepest);

    let l = Lookup::Token(o.token.hash());
    let long_key = "k".repeat(Limits::MAX_JSON_KEY_BYTES);
    let at_limit =
        json!({ "d": null, "e": nested_json(Limits::MAX_JSON_DEPTH - 1), long_key.clone(): 1 });
    let s = m.update_data(l, at_limit, None, None).await.unwrap();
    assert_eq!(s.version, 2);
    let stored = m.resolve(&o.token, PEEK).await.unwrap();
    assert_eq!(stored.data, s.data);
    assert_eq!(stored.data.get(&long_key), Some(json!(1)));

    let too_deep = json!({ "e": nested_json(Limits::MAX_JSON_DEPTH) });
    let too_long = json!({ format!("{long_key}k"): 1 });
    for patch in [too_deep, too_long] {
        let r = m.update_data(l, patch, None, None).await;
        assert!(
            matches!(&r, Err(Error::BadInput(msg)) if msg.contains("max_json")),
            "{r:?}"
        );
    }
    assert_eq!(m.resolve(&o.token, PEEK).await.unwrap(), stored);
    assert_eq!(m.list(q).await.unwrap()[0].data, stored.data);
}

/// No write brings a closed session back.
pub async fn write_never_resurrects_a_closed_session(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let l = Lookup::Token(o.token.hash());
    m.close(Lookup::Id(o.session.id), CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    assert!(matches!(
        m.update_data(l, json!({"x": 1}), None, None).await,
        Err(Error::SessionClosed(_))
    ));
    assert!(matches!(
        m.heartbeat(&o.token, None).await,
        Err(Error::SessionClosed(_))
    ));
    assert!(matches!(
        m.set_heartbeat(l, true, None, None, None).await,
        Err(Error::SessionClosed(_))
    ));
    assert!(matches!(
        m.set_privileges(Lookup::Id(o.session.id), vec!["x".into()], None, None)
            .await,
        Err(Error::SessionClosed(_))
    ));
    let s = m.get(o.session.id).await.unwrap();
    assert!(!s.is_open());
    assert!(s.data.is_empty());
    assert!(s.privileges.is_empty());
}

/// New privileges: new token, same id; the old token is dead at once.
pub async fn set_privileges_rotates_the_token(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let info = crate::JsonObject::parse(r#"{"name":"Ann Lee"}"#).unwrap();
    let (s, token) = m
        .set_privileges(
            Lookup::Token(o.token.hash()),
            vec!["WebAdmin".into()],
            Some(info),
            Some("ann".into()),
        )
        .await
        .unwrap();
    assert_eq!(s.id, o.session.id);
    assert_ne!(token.expose(), o.token.expose());
    assert!(matches!(
        m.resolve(&o.token, TOUCH).await,
        Err(Error::InvalidToken)
    ));
    let s = m.resolve(&token, TOUCH).await.unwrap();
    assert!(s.privileges.contains("WebAdmin"));
    assert_eq!(s.user.as_deref(), Some("ann"));
    assert_eq!(s.info.get("name"), Some(json!("Ann Lee")));
    assert_eq!(s.version, 2);
}

/// Close one, close all but some; closing twice is refused.
pub async fn close_and_close_all(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let me = m.open("app", user("me")).await.unwrap();
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(m.open("app", user(&format!("u{i}"))).await.unwrap());
    }
    let elsewhere = m.open("other", user("z")).await.unwrap();
    let gone = m
        .close(
            Lookup::Token(others[0].token.hash()),
            CloseReason::Logout,
            Actor::User,
        )
        .await
        .unwrap();
    assert_eq!(gone.closed.unwrap().reason, CloseReason::Logout);
    assert!(matches!(
        m.close(
            Lookup::Id(others[0].session.id),
            CloseReason::Killed,
            Actor::Admin
        )
        .await,
        Err(Error::SessionClosed(_))
    ));
    let closed = m
        .close_all("app", &[me.session.id], Actor::Session(me.session.id))
        .await
        .unwrap();
    assert_eq!(closed.len(), 4);
    for o in &others[1..] {
        let c = m.get(o.session.id).await.unwrap().closed.unwrap();
        assert_eq!(
            (c.reason, c.by),
            (CloseReason::ClosedAll, Actor::Session(me.session.id))
        );
    }
    m.resolve(&me.token, TOUCH).await.expect("kept");
    m.resolve(&elsewhere.token, TOUCH)
        .await
        .expect("other apps untouched");
    assert_eq!(m.seats("app").await.unwrap().open, 1);
}

/// Closed sessions stay readable with reason, time and actor until retention ends.
pub async fn closed_sessions_keep_their_history(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            retention_s: 100,
            ..Default::default()
        },
    );
    let o = m.open("app", user("a")).await.unwrap();
    clock.advance(Duration::from_secs(3));
    m.close(Lookup::Id(o.session.id), CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    let c = m.get(o.session.id).await.unwrap().closed.unwrap();
    assert_eq!(
        (c.reason, c.by, c.at),
        (CloseReason::Killed, Actor::Admin, T0.plus_secs(3))
    );
    assert_eq!(
        closed_reason(m.resolve(&o.token, TOUCH).await),
        CloseReason::Killed
    );
    let history = m
        .list(ListQuery {
            app: Some("app".into()),
            status: StatusFilter::Closed,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    clock.advance(Duration::from_secs(101));
    m.expire_due(10).await.unwrap();
    assert!(matches!(
        m.resolve(&o.token, TOUCH).await,
        Err(Error::InvalidToken)
    ));
}

/// Filters by app, status and user; pages by cursor both ways.
pub async fn list_filters_and_pages(store: Arc<dyn Store>) {
    let (m, clock) = setup(store, Policy::default());
    let mut ids = Vec::new();
    for i in 0..7 {
        clock.advance(Duration::from_millis(2));
        let o = m
            .open("app", user(if i % 2 == 0 { "even" } else { "odd" }))
            .await
            .unwrap();
        ids.push(o.session.id);
    }
    m.open("other", user("even")).await.unwrap();
    m.close(Lookup::Id(ids[0]), CloseReason::Logout, Actor::User)
        .await
        .unwrap();
    let q = |status, user: Option<&str>, after, newest_first, limit| ListQuery {
        app: Some("app".into()),
        status,
        user: user.map(String::from),
        after,
        newest_first,
        limit,
    };
    let all = m
        .list(q(StatusFilter::Any, None, None, false, 100))
        .await
        .unwrap();
    assert_eq!(all.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    let page1 = m
        .list(q(StatusFilter::Any, None, None, false, 3))
        .await
        .unwrap();
    let page2 = m
        .list(q(StatusFilter::Any, None, Some(page1[2].id), false, 3))
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|s| s.id).collect::<Vec<_>>(),
        ids[3..6].to_vec()
    );
    let newest = m
        .list(q(StatusFilter::Any, None, None, true, 2))
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[6], ids[5]]
    );
    let older = m
        .list(q(StatusFilter::Any, None, Some(ids[5]), true, 2))
        .await
        .unwrap();
    assert_eq!(
        older.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let open_even = m
        .list(q(StatusFilter::Open, Some("even"), None, false, 100))
        .await
        .unwrap();
    assert_eq!(
        open_even.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[2], ids[4], ids[6]]
    );
    let closed = m
        .list(q(StatusFilter::Closed, None, None, false, 100))
        .await
        .unwrap();
    assert_eq!(
        closed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let everywhere = m
        .list(ListQuery {
            user: Some("even".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(everywhere.len(), 5);
}

/// A holder whose timeout passed frees its seat for the next open, even before a sweep.
pub async fn timed_out_holders_free_their_seats(store: Arc<dyn Store>) {
    let (m, clock) = setup(
        store,
        Policy {
            seats: Some(1),
            idle_timeout_s: 60,
            ..Default::default()
        },
    );
    let a = m.open("app", user("a")).await.unwrap();
    clock.advance(Duration::from_secs(61));
    m.open("app", user("b"))
        .await
        .expect("the idle holder's seat is free");
    assert_eq!(
        closed_reason(m.resolve(&a.token, PEEK).await),
        CloseReason::IdleTimeout
    );
}

/// 64 concurrent opens against 10 free seats admit exactly 10.
pub async fn race_64_opens_10_seats(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(10));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.open("app", user(&format!("u{i}"))).await })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(Error::SeatsExhausted { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(m.seats("app").await.unwrap().used, 10);
}

/// Sessions of the reserved `admin` privilege (no seat) dropping it all at once, racing
/// with opens, for the last 3 of 10 seats: exactly 3 of them get in, the others are
/// refused with `seats_exhausted` and keep their privileges, their seatless state and
/// their version.
pub async fn race_logins_for_the_last_seats(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(10));
    for i in 0..7 {
        m.open("app", user(&format!("held{i}"))).await.unwrap();
    }
    let mut admins = Vec::new();
    for i in 0..24 {
        let o = OpenRequest {
            privileges: vec!["admin".into()],
            ..user(&format!("admin{i}"))
        };
        admins.push(m.open("app", o).await.unwrap().session);
    }
    let changes: Vec<_> = admins
        .iter()
        .map(|s| {
            let (m, id) = (m.clone(), s.id);
            tokio::spawn(async move {
                m.set_privileges(Lookup::Id(id), vec![], None, None)
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let opens: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.open("app", user(&format!("late{i}"))).await.map(|_| ()) })
        })
        .collect();
    let mut admitted = 0;
    for t in changes.into_iter().chain(opens) {
        match t.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(Error::SeatsExhausted { used, total, .. }) => assert_eq!((used, total), (10, 10)),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(admitted, 3, "exactly the free seats are admitted");
    assert_eq!(m.seats("app").await.unwrap().used, 10);
    let mut kept = 0;
    for a in &admins {
        let now = m.get(a.id).await.unwrap();
        if !now.counts_seat {
            assert_eq!(now.version, a.version, "a refused change changed nothing");
            assert_eq!(now.privileges.iter().collect::<Vec<_>>(), vec!["admin"]);
            kept += 1;
        }
    }
    assert!(kept >= 24 - 3);
}

/// Guests logging in as the same user at once, racing with opens of that user, for
/// the last 2 of 3 slots (`reject`): exactly 2 get in, the others are refused with
/// `user_limit` and stay guests.
pub async fn race_logins_for_the_last_user_slots(store: Arc<dyn Store>) {
    let (m, _) = setup(
        store,
        Policy {
            max_per_user: Some(3),
            on_user_limit: OnUserLimit::Reject,
            ..Default::default()
        },
    );
    m.open("app", user("ann")).await.unwrap();
    let mut guests = Vec::new();
    for _ in 0..24 {
        guests.push(m.open("app", OpenRequest::default()).await.unwrap().session);
    }
    let logins: Vec<_> = guests
        .iter()
        .map(|g| {
            let (m, id) = (m.clone(), g.id);
            tokio::spawn(async move {
                m.set_privileges(Lookup::Id(id), vec![], None, Some("ann".into()))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.open("app", user("ann")).await.map(|_| ()) })
        })
        .collect();
    let mut admitted = 0;
    for t in logins.into_iter().chain(opens) {
        match t.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(Error::UserLimit { max: 3 }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(admitted, 2, "exactly the free slots are admitted");
    let anns = m
        .list(ListQuery {
            app: Some("app".into()),
            status: StatusFilter::Open,
            user: Some("ann".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(anns.len(), 3);
    for g in &guests {
        let now = m.get(g.id).await.unwrap();
        if now.user.is_none() {
            assert_eq!(now.version, g.version, "a refused login changed nothing");
        }
    }
}

/// Guests logging in as the same user at once under `replace_oldest` (max 2): every
/// login gets in, and however they interleave, the user ends with exactly 2 open
/// sessions, every other one closed as `replaced`, each close reported as displaced.
pub async fn race_logins_replacing_the_oldest(store: Arc<dyn Store>) {
    let (m, _) = setup(
        store,
        Policy {
            max_per_user: Some(2),
            on_user_limit: OnUserLimit::ReplaceOldest,
            ..Default::default()
        },
    );
    let mut events = m.subscribe();
    let mut guests = Vec::new();
    for _ in 0..16 {
        guests.push(m.open("app", OpenRequest::default()).await.unwrap().session);
    }
    let logins: Vec<_> = guests
        .iter()
        .map(|g| {
            let (m, id) = (m.clone(), g.id);
            tokio::spawn(async move {
                m.set_privileges(Lookup::Id(id), vec![], None, Some("bob".into()))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for t in logins {
        match t.await.unwrap() {
            // A login whose session another login replaced meanwhile finds it closed.
            Ok(()) | Err(Error::SessionClosed(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let mut open = 0;
    let mut replaced = 0;
    for g in &guests {
        let now = m.get(g.id).await.unwrap();
        match now.closed {
            None => {
                assert_eq!(now.user.as_deref(), Some("bob"));
                open += 1;
            }
            Some(c) => {
                assert_eq!((c.reason, c.by), (CloseReason::Replaced, Actor::System));
                replaced += 1;
            }
        }
    }
    assert_eq!((open, replaced), (2, 14));
    let mut closed_events = 0;
    while let Ok(e) = events.try_recv() {
        closed_events += usize::from(e.kind == EventKind::Closed);
    }
    assert_eq!(closed_events, 14, "every replaced session is reported once");
}

/// Fewer seats than holders (a license renewed for fewer seats, applied live): nobody
/// is closed; the holders keep their seats and sessions, opens and privilege changes
/// that would take a seat are refused (even under `evict_idlest`, which never evicts
/// more than one to make room) until enough holders leave.
pub async fn fewer_seats_close_nobody(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(3));
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(m.open("app", user(&format!("u{i}"))).await.unwrap());
    }
    let admin = OpenRequest {
        privileges: vec!["admin".into()],
        ..user("root")
    };
    let admin = m.open("app", admin).await.unwrap();
    m.set_policy(
        "app",
        Policy {
            on_full: OnFull::EvictIdlest,
            ..seats(1)
        },
    )
    .unwrap();
    for h in &held {
        m.resolve(&h.token, TOUCH).await.expect("still open");
    }
    let s = m.seats("app").await.unwrap();
    assert_eq!((s.used, s.total), (3, Some(1)));
    assert!(matches!(
        m.open("app", user("new")).await,
        Err(Error::SeatsExhausted {
            used: 3,
            total: 1,
            ..
        })
    ));
    assert!(matches!(
        m.set_privileges(Lookup::Id(admin.session.id), vec![], None, None)
            .await,
        Err(Error::SeatsExhausted { .. })
    ));
    for h in &held[..2] {
        m.close(Lookup::Id(h.session.id), CloseReason::Logout, Actor::User)
            .await
            .unwrap();
    }
    // One holder left for one seat: full, so the idlest is evicted for a newcomer.
    let new = m
        .open("app", user("new"))
        .await
        .expect("one seat, one holder");
    assert_eq!(new.displaced.len(), 1);
    assert_eq!(new.displaced[0].id, held[2].session.id);
    assert_eq!(m.seats("app").await.unwrap().used, 1);
}

/// Many callers taking over the same holder: exactly one wins.
pub async fn race_take_over_has_one_winner(store: Arc<dyn Store>) {
    let (m, _) = setup(store, seats(1));
    let holder = m.open("app", user("h")).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let m = m.clone();
            let target = holder.session.id;
            tokio::spawn(async move {
                m.open(
                    "app",
                    OpenRequest {
                        take_over: Some(target),
                        ..user(&format!("u{i}"))
                    },
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::TakeOverTarget) | Err(Error::SeatsExhausted { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(m.seats("app").await.unwrap().used, 1);
}

/// 20 tasks x 50 patches of distinct keys: all 1,000 keys are there.
pub async fn race_patches_of_distinct_keys(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let l = Lookup::Token(o.token.hash());
    let tasks: Vec<_> = (0..20)
        .map(|t| {
            let m = m.clone();
            tokio::spawn(async move {
                for k in 0..50 {
                    m.update_data(l, json!({ format!("k{t}_{k}"): k }), None, None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = m.resolve(&o.token, PEEK).await.unwrap();
    assert_eq!(s.data.to_map().len(), 1000);
    assert_eq!(s.version, 1001);
}

/// 1,000 increments through conditional updates from 20 tasks land at exactly 1,000.
pub async fn race_conditional_increments(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let l = Lookup::Token(o.token.hash());
    let token = o.token.clone();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let m = m.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < 50 {
                    let s = m.resolve(&token, PEEK).await.unwrap();
                    let n = s.data.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
                    match m
                        .update_data(l, json!({ "n": n + 1 }), Some(s.version), None)
                        .await
                    {
                        Ok(_) => done += 1,
                        Err(Error::VersionMismatch { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = m.resolve(&o.token, PEEK).await.unwrap();
    assert_eq!(s.data.get("n"), Some(json!(1000)));
}

/// A change the store has put in its order ([`Store::modify_ordered`]) is what the
/// session's next change builds on before the first is acknowledged: two conditional
/// patches made back to back, neither awaited, both land in order. A stale one is
/// refused at once, waiting for nothing, and changes nothing.
pub async fn ordered_changes_chain_before_they_are_acknowledged(store: Arc<dyn Store>) {
    let (m, _) = setup(store, Policy::default());
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let l = Lookup::Token(o.token.hash());
    let v = o.session.version;
    let first = m
        .update_data_ordered(l, json!({ "n": 1 }), Some(v), None)
        .await
        .unwrap();
    let second = m
        .update_data_ordered(l, json!({ "n": 2, "m": 1 }), Some(v + 1), None)
        .await
        .expect("the second change builds on the first, not yet acknowledged");
    let a = first.finish().await.unwrap();
    let b = second.finish().await.unwrap();
    assert_eq!((a.version, b.version), (v + 1, v + 2));
    assert_eq!(a.data.get("n"), Some(json!(1)));
    assert_eq!(b.data.get("n"), Some(json!(2)));

    let stale = m
        .update_data_ordered(l, json!({ "n": 3 }), Some(v + 1), None)
        .await
        .unwrap();
    assert!(stale.is_done(), "a refusal waits for nothing");
    assert!(
        matches!(stale.finish().await, Err(Error::VersionMismatch { .. })),
        "a change built on an old version is refused"
    );
    let s = m.resolve(&o.token, PEEK).await.unwrap();
    assert_eq!((s.version, s.data.get("n")), (v + 2, Some(json!(2))));
}

/// Several nodes sweeping the same store close each due session exactly once.
pub async fn expiry_on_many_nodes_closes_each_once(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(T0));
    let nodes: Vec<Arc<Manager>> = (0..3)
        .map(|_| {
            let m = Manager::with_clock(store.clone(), clock.clone());
            m.set_policy(
                "app",
                Policy {
                    idle_timeout_s: 60,
                    ..Default::default()
                },
            )
            .unwrap();
            Arc::new(m)
        })
        .collect();
    for _ in 0..30 {
        nodes[0].open("app", OpenRequest::default()).await.unwrap();
    }
    clock.advance(Duration::from_secs(61));
    let tasks: Vec<_> = nodes
        .iter()
        .map(|m| {
            let m = m.clone();
            tokio::spawn(async move { m.expire_due(1000).await.unwrap().closed.len() })
        })
        .collect();
    let mut closed = 0;
    for t in tasks {
        closed += t.await.unwrap();
    }
    assert_eq!(closed, 30);
    assert_eq!(nodes[1].seats("app").await.unwrap().open, 0);
}

/// With an event bus, a close on one node reaches the subscribers of another.
pub async fn events_cross_nodes(store: Arc<dyn Store>) {
    if store.event_bus().is_none() {
        return;
    }
    let a = Arc::new(Manager::new(store.clone()));
    let b = Arc::new(Manager::new(store.clone()));
    for m in [&a, &b] {
        m.set_policy("app", Policy::default()).unwrap();
    }
    let relays = [a.start_relay().unwrap(), b.start_relay().unwrap()];
    let mut on_b = b.subscribe();
    // Let both relays subscribe before anything happens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = a.open("app", OpenRequest::default()).await.unwrap();
    a.close(Lookup::Id(o.session.id), CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let e = on_b.recv().await.unwrap();
            if e.kind == EventKind::Closed && e.id == o.session.id {
                return e;
            }
        }
    })
    .await
    .expect("the close reached the other node within 1 s");
    assert_eq!(
        (got.reason, got.by),
        (Some(CloseReason::Killed), Some(Actor::Admin))
    );
    for r in relays {
        r.abort();
    }
}

/// A refused open changes nothing, not even the timed-out sessions it looked at: they
/// are closed once, with their event, by whoever closes them next.
pub async fn a_refused_open_changes_nothing(store: Arc<dyn Store>) {
    let (m, clock) = setup(store, seats(1));
    let mut events = m.subscribe();
    let a = m
        .open(
            "app",
            OpenRequest {
                idle_timeout_s: Some(10),
                ..user("a")
            },
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(11));
    let bogus = OpenRequest {
        take_over: Some(crate::SessionId::new()),
        ..user("b")
    };
    assert!(matches!(
        m.open("app", bogus).await,
        Err(Error::TakeOverTarget)
    ));
    let out = m.expire_due(100).await.unwrap();
    assert_eq!(
        out.closed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![a.session.id]
    );
    let closes = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| e.kind == EventKind::Closed && e.id == a.session.id)
        .count();
    assert_eq!(closes, 1, "one closed event for the timed-out session");
    // Admitted opens close timed-out holders themselves, with their event too.
    let b = m
        .open(
            "app",
            OpenRequest {
                idle_timeout_s: Some(10),
                ..user("b")
            },
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(11));
    let c = m.open("app", user("c")).await.unwrap();
    assert_eq!(
        c.displaced.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![b.session.id]
    );
    assert_eq!(
        c.displaced[0].closed.unwrap().reason,
        CloseReason::IdleTimeout
    );
}

/// `import` stores a session as given (open or closed), replaces one with the same id,
/// and keeps every index right: by token, counts, lists, expiry.
pub async fn import_copies_sessions_verbatim(store: Arc<dyn Store>) {
    let (m, clock) = setup(store.clone(), seats(5));
    m.set_policy("copy", Policy::default()).unwrap();
    let a = m
        .open(
            "app",
            OpenRequest {
                privileges: vec!["sales".into()],
                data: Some(crate::JsonObject::parse(r#"{"n":1}"#).unwrap()),
                heartbeat: Some(HeartbeatRequest {
                    interval_s: 30,
                    grace_s: Some(5),
                }),
                idle_timeout_s: Some(60),
                ..user("ann")
            },
        )
        .await
        .unwrap();
    let b = m.open("app", user("bob")).await.unwrap();
    m.close(Lookup::Id(b.session.id), CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    let copy = |s: crate::Session| crate::Session {
        id: crate::SessionId::new(),
        app: Arc::from("copy"),
        token_hash: Token::generate("x").hash(),
        ..s
    };
    let mut ca = copy(store.get(Lookup::Id(a.session.id)).await.unwrap().unwrap());
    let cb = copy(store.get(Lookup::Id(b.session.id)).await.unwrap().unwrap());
    store.import(ca.clone()).await.unwrap();
    store.import(cb.clone()).await.unwrap();
    assert_eq!(
        store.get(Lookup::Id(ca.id)).await.unwrap().as_ref(),
        Some(&ca)
    );
    assert_eq!(
        store
            .get(Lookup::Token(ca.token_hash))
            .await
            .unwrap()
            .as_ref(),
        Some(&ca)
    );
    assert_eq!(
        store.get(Lookup::Id(cb.id)).await.unwrap().as_ref(),
        Some(&cb)
    );
    let counts = store.counts("copy").await.unwrap();
    assert_eq!((counts.open, counts.seats_used), (1, 1));
    let closed = m
        .list(ListQuery {
            app: Some("copy".into()),
            status: StatusFilter::Closed,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(closed, vec![cb.clone()]);
    // Importing again replaces.
    ca.data = crate::JsonObject::parse(r#"{"n":2}"#).unwrap();
    ca.version += 1;
    store.import(ca.clone()).await.unwrap();
    assert_eq!(
        store
            .get(Lookup::Id(ca.id))
            .await
            .unwrap()
            .unwrap()
            .data
            .get("n"),
        Some(json!(2))
    );
    assert_eq!(store.counts("copy").await.unwrap().open, 1);
    // Moving a session to another app leaves nothing behind in the first.
    let mut moved = ca.clone();
    moved.app = Arc::from("app");
    store.import(moved.clone()).await.unwrap();
    assert_eq!(store.counts("copy").await.unwrap().open, 0);
    assert_eq!(store.counts("app").await.unwrap().open, 2);
    store.import(ca.clone()).await.unwrap();
    assert_eq!(store.counts("app").await.unwrap().open, 1);
    // The source is untouched, and the copy expires on its own deadline.
    assert_eq!(store.counts("app").await.unwrap().open, 1);
    clock.advance(Duration::from_secs(61));
    let out = m.expire_due(100).await.unwrap();
    let mut ids: Vec<_> = out.closed.iter().map(|s| s.id).collect();
    ids.sort();
    let mut want = vec![a.session.id, ca.id];
    want.sort();
    assert_eq!(ids, want);
}

#[cfg(test)]
mod listed {
    /// A conformance test that is not in [`crate::conformance_tests!`]'s list would never
    /// run on any store: every `pub async fn name(store: Arc<dyn Store>)` of the suite's
    /// files must be named there.
    #[test]
    fn every_conformance_test_is_run_by_the_macro() {
        let this = include_str!("conformance.rs");
        let start = this
            .find("$crate::conformance_tests!(@tests $make;")
            .expect("the macro's list");
        let list = &this[start..start + this[start..].find(");").expect("its end")];
        let listed: Vec<&str> = list
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        let sources = [this, include_str!("conformance/model.rs")];
        let mut found = 0;
        for line in sources.iter().flat_map(|s| s.lines()) {
            let Some(rest) = line.strip_prefix("pub async fn ") else {
                continue;
            };
            if !rest.contains("store: Arc<dyn Store>") {
                continue;
            }
            let name = rest.split('(').next().unwrap_or_default();
            assert!(
                listed.contains(&name),
                "{name} is not in conformance_tests!"
            );
            found += 1;
        }
        assert!(found >= 30, "the suite's tests were found ({found})");
    }
}
