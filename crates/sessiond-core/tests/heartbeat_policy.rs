//! The app's heartbeat policy binds what a session changes of its own heartbeat (by
//! token), not what an operator changes (by id), whatever the entry point.

use std::sync::Arc;

use sessiond_core::{Error, HeartbeatPolicy, Lookup, Manager, MemoryStore, OpenRequest, Policy};

fn manager() -> Manager {
    let m = Manager::new(Arc::new(MemoryStore::new()));
    m.set_policy(
        "desk",
        Policy {
            seats: Some(3),
            heartbeat: Some(HeartbeatPolicy {
                max_interval_s: Some(120),
                ..HeartbeatPolicy::every(30)
            }),
            ..Policy::default()
        },
    )
    .unwrap();
    m
}

#[tokio::test]
async fn a_session_is_held_to_the_policy_and_an_operator_is_not() {
    let m = manager();
    let o = m.open("desk", OpenRequest::default()).await.unwrap();
    let own = Lookup::Token(o.token.hash());
    let year = 365 * 24 * 3600;
    for (active, interval, grace) in [
        (true, Some(year), None),
        (false, None, None),
        (true, None, Some(year)),
    ] {
        match m.set_heartbeat(own, active, interval, grace, None).await {
            Err(Error::BadInput(msg)) => assert!(msg.contains("heartbeat policy"), "{msg}"),
            other => panic!("{active} {interval:?} {grace:?}: {other:?}"),
        }
    }
    let s = m.get(o.session.id).await.unwrap();
    let h = s.heartbeat.unwrap();
    assert_eq!(
        (h.interval_s, h.active, s.version),
        (30, true, o.session.version),
        "unchanged"
    );
    // Within the policy, the session retunes itself.
    let s = m
        .set_heartbeat(own, true, Some(120), None, None)
        .await
        .unwrap();
    assert_eq!(s.heartbeat.unwrap().interval_s, 120);
    // An operator is not bound by it.
    let by_id = Lookup::Id(o.session.id);
    let s = m
        .set_heartbeat(by_id, false, Some(year), None, None)
        .await
        .unwrap();
    let h = s.heartbeat.unwrap();
    assert_eq!((h.interval_s, h.active), (year, false));
}
