//! The browser heartbeat: script and endpoint, and the WEBDEV rules on a manual clock
//! (beats keep an open page's session, never extend the idle timeout; a silent page
//! ends `heartbeat_lost` after interval + grace; turned off, only the idle timeout).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use serde_json::json;
use sessiond_axum::SessionLayer;
use sessiond_core::{CloseReason, Manager, ManualClock, MemoryStore, Policy, SessionId, Timestamp};

use crate::common::*;

#[tokio::test]
async fn the_script_is_served_with_the_endpoint_beside_it() {
    let m = memory_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let r = call(Method::GET, "/_sessiond/heartbeat.js")
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(r.body.contains("window.sessiondHeartbeat"));

    let moved = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_heartbeat_path("/hb"),
    );
    assert_eq!(
        call(Method::GET, "/hb/heartbeat.js")
            .send(&moved)
            .await
            .status,
        StatusCode::OK
    );
    let off = routes(SessionLayer::new(m, APP).unwrap().with_heartbeat(false));
    assert_eq!(
        call(Method::GET, "/_sessiond/heartbeat.js")
            .send(&off)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_endpoint_checks_its_input_and_answers_without_a_session() {
    let m = memory_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());
    let r = call(Method::POST, "/_sessiond/heartbeat")
        .json("{}")
        .send(&app)
        .await;
    assert_eq!(r.json(), json!({"status": "none"}));
    assert!(r.set_cookies().is_empty(), "a beat never creates a session");
    let r = call(Method::POST, "/_sessiond/heartbeat").send(&app).await;
    assert_eq!(
        r.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a cross-site form cannot beat"
    );
    let r = call(Method::GET, "/_sessiond/heartbeat").send(&app).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let pair = new_session(&app).await;
    let r = call(Method::PUT, "/_sessiond/heartbeat")
        .cookie(&pair)
        .json(r#"{"on": 1}"#)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An interval no engine takes is the page's mistake: 400, not a server error.
    let r = call(Method::PUT, "/_sessiond/heartbeat")
        .cookie(&pair)
        .json(r#"{"active": true, "interval_s": 4000000000}"#)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json());
    assert_eq!(r.json()["error"], json!("bad_request"));
}

struct Clocked {
    clock: Arc<ManualClock>,
    m: Arc<Manager>,
    app: Router,
}

fn clocked(idle_timeout_s: u32) -> Clocked {
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let m = Manager::with_clock(Arc::new(MemoryStore::new()), clock.clone());
    m.set_policy(
        APP,
        Policy {
            idle_timeout_s,
            ..Default::default()
        },
    )
    .unwrap();
    let m = Arc::new(m);
    let layer = SessionLayer::new(m.clone(), APP)
        .unwrap()
        .with_heartbeat_interval(Duration::from_secs(10))
        .with_heartbeat_grace(Duration::from_secs(5));
    Clocked {
        clock,
        app: routes(layer),
        m,
    }
}

impl Clocked {
    async fn beat(&self, pair: &str) -> serde_json::Value {
        call(Method::POST, "/_sessiond/heartbeat")
            .cookie(pair)
            .json("{}")
            .send(&self.app)
            .await
            .json()
    }

    async fn page(&self, pair: &str, settings: &str) -> serde_json::Value {
        call(Method::PUT, "/_sessiond/heartbeat")
            .cookie(pair)
            .json(settings)
            .send(&self.app)
            .await
            .json()
    }

    fn advance(&self, s: u64) {
        self.clock.advance(Duration::from_secs(s));
    }

    async fn reason(&self, id: SessionId) -> Option<CloseReason> {
        self.m.expire_due(100).await.unwrap();
        self.m.get(id).await.unwrap().closed.map(|c| c.reason)
    }
}

#[tokio::test]
async fn an_open_page_keeps_its_session_but_never_past_the_idle_timeout() {
    let t = clocked(60);
    let pair = new_session(&t.app).await;
    let id = id_of(&t.app, &pair).await.unwrap();
    let v = t.page(&pair, r#"{"active": true}"#).await;
    assert_eq!(
        v,
        json!({"status": "open", "active": true, "interval_s": 10, "grace_s": 5})
    );
    let version = t.m.get(id).await.unwrap().version;
    t.page(&pair, r#"{"active": true}"#).await;
    assert_eq!(
        t.m.get(id).await.unwrap().version,
        version,
        "same settings: no write"
    );

    // Beats every 10 s for 50 s: well past interval + grace, still open.
    for _ in 0..5 {
        t.advance(10);
        assert_eq!(t.beat(&pair).await["status"], "open");
    }
    assert_eq!(t.reason(id).await, None);
    // Beats go on, but there was no activity for 60 s: the idle timeout wins.
    t.advance(11);
    t.beat(&pair).await;
    assert_eq!(t.reason(id).await, Some(CloseReason::IdleTimeout));
    let r = call(Method::POST, "/_sessiond/heartbeat")
        .cookie(&pair)
        .json("{}")
        .send(&t.app)
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(
        r.json(),
        json!({"status": "closed", "reason": "idle_timeout"})
    );
}

#[tokio::test]
async fn a_closed_page_ends_its_session_after_interval_plus_grace() {
    let t = clocked(3600);
    let pair = new_session(&t.app).await;
    let id = id_of(&t.app, &pair).await.unwrap();
    t.page(&pair, r#"{"active": true, "interval_s": 20}"#).await;
    t.advance(20);
    t.beat(&pair).await;
    // The page closes: no more beats. Activity alone does not keep it.
    t.advance(25);
    assert_eq!(t.reason(id).await, None, "interval + grace not yet passed");
    t.advance(1);
    assert_eq!(t.reason(id).await, Some(CloseReason::HeartbeatLost));
}

#[tokio::test]
async fn a_page_that_turns_the_heartbeat_off_falls_back_to_the_idle_timeout() {
    let t = clocked(300);
    let pair = new_session(&t.app).await;
    let id = id_of(&t.app, &pair).await.unwrap();
    t.page(&pair, r#"{"active": true}"#).await;
    let v = t.page(&pair, r#"{"active": false}"#).await;
    assert_eq!(v["active"], false);
    t.advance(299);
    assert_eq!(t.reason(id).await, None, "no beat for 299 s and still open");
    t.advance(2);
    assert_eq!(t.reason(id).await, Some(CloseReason::IdleTimeout));
}

#[tokio::test]
async fn handlers_can_switch_the_heartbeat_too() {
    let t = clocked(3600);
    let r = call(Method::POST, "/heartbeat/true").send(&t.app).await;
    assert_eq!(r.body, "false", "no stored session: nothing to switch");
    let pair = new_session(&t.app).await;
    let id = id_of(&t.app, &pair).await.unwrap();
    let r = call(Method::POST, "/heartbeat/true")
        .cookie(&pair)
        .send(&t.app)
        .await;
    assert_eq!(r.body, "true");
    let h = t.m.get(id).await.unwrap().heartbeat.unwrap();
    assert_eq!((h.active, h.interval_s, h.grace_s), (true, 10, 5));
    t.advance(16);
    assert_eq!(t.reason(id).await, Some(CloseReason::HeartbeatLost));
}

/// Two apps on one store with the same cookie name: requests and beats sent to one
/// never count for the other's session.
#[tokio::test]
async fn another_apps_requests_and_beats_leave_a_session_alone() {
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let m = Manager::with_clock(Arc::new(MemoryStore::new()), clock.clone());
    m.set_policy(APP, Policy::default()).unwrap();
    m.set_policy("other", Policy::default()).unwrap();
    let m = Arc::new(m);
    let mine = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let other = routes(SessionLayer::new(m.clone(), "other").unwrap());
    let pair = new_session(&mine).await;
    call(Method::PUT, "/_sessiond/heartbeat")
        .cookie(&pair)
        .json(r#"{"active": true, "interval_s": 30}"#)
        .send(&mine)
        .await;
    let id = id_of(&mine, &pair).await.unwrap();
    let before = m.get(id).await.unwrap();
    clock.advance(Duration::from_secs(20));
    let r = call(Method::GET, "/whoami")
        .cookie(&pair)
        .send(&other)
        .await;
    assert_eq!(r.json()["guest"], json!(true), "a guest there: {}", r.body);
    let r = call(Method::POST, "/_sessiond/heartbeat")
        .cookie(&pair)
        .json("{}")
        .send(&other)
        .await;
    assert_eq!(r.json(), json!({"status": "none"}));
    let after = m.get(id).await.unwrap();
    assert_eq!(
        after.last_activity_at, before.last_activity_at,
        "not touched"
    );
    assert_eq!(
        after.last_heartbeat_at, before.last_heartbeat_at,
        "not beaten"
    );
}
