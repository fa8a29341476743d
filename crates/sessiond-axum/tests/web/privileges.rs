//! Privileges: token rotation on login, requests in flight across it, logout, and the
//! guard layer.

use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use sessiond_axum::SessionLayer;
use sessiond_core::{CloseReason, Policy, SessionId};

use crate::common::*;

/// With the opt-out that carries a guest's storage into the account (signin.rs has the
/// default, a new session), a login rotates the token of the same session.
#[tokio::test]
async fn set_privileges_rotates_the_token_and_keeps_id_and_storage() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_storage_across_users(true),
    );
    let old = new_session(&app).await;
    let id = id_of(&app, &old).await.unwrap();

    let r = call(Method::POST, "/login/admin")
        .cookie(&old)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let new = r.cookie_pair();
    assert_ne!(new, old);

    let who = call(Method::GET, "/whoami")
        .cookie(&new)
        .send(&app)
        .await
        .json();
    assert_eq!(who["id"], id.to_string(), "same session");
    assert_eq!(
        (
            who["user"].as_str(),
            who["guest"].as_bool(),
            who["admin"].as_bool()
        ),
        (Some("admin"), Some(false), Some(true))
    );
    let r = call(Method::GET, "/get/a").cookie(&new).send(&app).await;
    assert_eq!(r.body, "\"1\"", "storage kept across login");

    let who = call(Method::GET, "/whoami")
        .cookie(&old)
        .send(&app)
        .await
        .json();
    assert_eq!(who["guest"], true, "the old token is dead");
    assert!(who["id"].is_null());
    let s = m.get(id).await.unwrap();
    assert_eq!(s.info.get("userName"), Some(serde_json::json!("ADMIN")));
}

#[tokio::test]
async fn a_guest_that_logs_in_gets_its_first_cookie_at_login() {
    let m = memory_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());
    let r = call(Method::POST, "/login/bob").send(&app).await;
    let pair = r.cookie_pair();
    let who = call(Method::GET, "/whoami")
        .cookie(&pair)
        .send(&app)
        .await
        .json();
    assert_eq!(
        (
            who["user"].as_str(),
            who["guest"].as_bool(),
            who["admin"].as_bool()
        ),
        (Some("bob"), Some(false), Some(false))
    );
}

#[tokio::test]
async fn requests_in_flight_survive_a_rotation_and_do_not_clobber_the_new_cookie() {
    let (m, _dir) = file_manager(Policy::default());
    let gate = Arc::new(Gate::default());
    let layer = SessionLayer::new(m, APP)
        .unwrap()
        .with_storage_across_users(true);
    let app = routes_with_gate(layer, gate.clone());
    let old = new_session(&app).await;

    let slow = {
        let (app, old) = (app.clone(), old.clone());
        tokio::spawn(async move {
            call(Method::POST, "/slow-write")
                .cookie(&old)
                .send(&app)
                .await
        })
    };
    gate.loaded.notified().await;
    let new = call(Method::POST, "/login/ann")
        .cookie(&old)
        .send(&app)
        .await
        .cookie_pair();
    gate.resume.notify_one();
    let r = slow.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "written"));
    assert!(
        r.set_cookies().is_empty(),
        "the slow request must not reset the cookie"
    );

    let r = call(Method::GET, "/get/late").cookie(&new).send(&app).await;
    assert_eq!(r.body, "1", "its write landed in the rotated session");
}

/// A request sent with the pre-login cookie that arrives after the login (a parallel
/// XHR): it reads as a guest and cannot create a session, so no guest cookie replaces
/// the signed-in one; the old cookie gives no access to the signed-in session.
#[tokio::test]
async fn a_late_request_with_the_pre_login_cookie_does_not_log_the_user_out() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());
    let old = new_session(&app).await;
    let new = call(Method::POST, "/login/ann")
        .cookie(&old)
        .send(&app)
        .await
        .cookie_pair();
    let r = call(Method::POST, "/set/cart/1")
        .cookie(&old)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.json()["error"], "session_rotated");
    assert!(
        r.set_cookies().is_empty(),
        "no guest cookie over the new one"
    );
    let r = call(Method::GET, "/whoami").cookie(&old).send(&app).await;
    assert_eq!(
        r.json()["guest"],
        serde_json::json!(true),
        "no access with the old one"
    );
    assert!(r.set_cookies().is_empty());
    let r = call(Method::GET, "/whoami").cookie(&new).send(&app).await;
    assert_eq!(
        r.json()["user"],
        serde_json::json!("ann"),
        "still signed in"
    );
    // A request without a cookie is a plain new guest.
    let r = call(Method::POST, "/set/cart/1").send(&app).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn abandon_closes_as_logout_and_the_removal_repeats_the_cookie_scope() {
    let (m, _dir) = file_manager(Policy::default());
    let layer = SessionLayer::new(m.clone(), APP)
        .unwrap()
        .with_cookie_path("/app")
        .with_cookie_domain("example.com")
        .with_secure(true);
    let app = routes(layer);
    let pair = new_session(&app).await;
    let id = id_of(&app, &pair).await.unwrap();

    let r = call(Method::POST, "/logout").cookie(&pair).send(&app).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.set_cookie(),
        "SESSION=; Path=/app; Domain=example.com; HttpOnly; SameSite=Lax; Secure; \
         Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let closed = m.get(id).await.unwrap().closed.unwrap();
    assert_eq!(closed.reason, CloseReason::Logout);

    let who = call(Method::GET, "/whoami")
        .cookie(&pair)
        .send(&app)
        .await
        .json();
    assert_eq!(who["guest"], true);
}

#[tokio::test]
async fn the_guard_answers_403_or_sends_guests_to_log_in() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());

    let r = call(Method::GET, "/admin").send(&app).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "forbidden");
    let r = call(Method::GET, "/admin")
        .header("accept", "text/html")
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("WebAdmin privilege"));

    let r = call(Method::GET, "/admin-login?tab=2").send(&app).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers[header::LOCATION],
        "/login?next=/admin-login%3Ftab%3D2"
    );
    // Inside a nested router, `next` keeps the nest's prefix.
    let r = call(Method::GET, "/area/page?x=1").send(&app).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers[header::LOCATION],
        "/login?next=/area/page%3Fx%3D1"
    );

    // Signed in without the privilege: 403 even where guests are redirected.
    let user = call(Method::POST, "/login/bob")
        .send(&app)
        .await
        .cookie_pair();
    for path in ["/admin", "/admin-login"] {
        let r = call(Method::GET, path).cookie(&user).send(&app).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }

    let admin = call(Method::POST, "/login/admin")
        .send(&app)
        .await
        .cookie_pair();
    for path in ["/admin", "/admin-login"] {
        let r = call(Method::GET, path).cookie(&admin).send(&app).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "admin page"),
            "{path}"
        );
    }
}

/// A `Session` kept past its response (a spawned task) cannot create a session or
/// rotate the token, whose cookie could no longer reach the browser; it can still
/// change an existing session's storage.
#[tokio::test]
async fn a_session_kept_past_its_response_refuses_what_needs_a_cookie() {
    use axum::routing::post;
    use sessiond_axum::{Grant, Session, SessionError};
    use std::sync::Mutex;
    let m = memory_manager(Policy::default());
    let kept: Arc<Mutex<Option<Session>>> = Arc::default();
    let keep = kept.clone();
    let app = axum::Router::new()
        .route(
            "/keep",
            post(move |s: Session| {
                let keep = keep.clone();
                async move {
                    *keep.lock().unwrap() = Some(s);
                    "kept"
                }
            }),
        )
        .layer(SessionLayer::new(m.clone(), APP).unwrap());
    let guest = routes(SessionLayer::new(m.clone(), APP).unwrap());

    // A guest's handle, after its response: nothing may be created.
    let r = call(Method::POST, "/keep").send(&app).await;
    assert!(r.set_cookies().is_empty());
    let s = kept.lock().unwrap().take().unwrap();
    assert!(matches!(
        s.insert("k", 1).await,
        Err(SessionError::Answered)
    ));
    let grant = Grant {
        user: Some("ann".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.set_privileges(grant.clone()).await,
        Err(SessionError::Answered)
    ));

    // A stored session's handle: storage still changes, the token does not.
    let pair = call(Method::POST, "/set/a/1")
        .send(&guest)
        .await
        .cookie_pair();
    call(Method::POST, "/keep").cookie(&pair).send(&app).await;
    let s = kept.lock().unwrap().take().unwrap();
    s.insert("late", 2).await.unwrap();
    assert!(matches!(
        s.set_privileges(grant).await,
        Err(SessionError::Answered)
    ));
    let r = call(Method::GET, "/get/late")
        .cookie(&pair)
        .send(&guest)
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!(2),
        "the browser's cookie still works"
    );
}

/// A signed-in person sees and closes their other sessions (same user, same app), never
/// another user's or their own current one; a guest has none.
#[tokio::test]
async fn my_sessions_are_my_users_other_sessions() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let sign_in = |user: &'static str| {
        let app = app.clone();
        async move {
            let guest = new_session(&app).await;
            let r = call(Method::POST, &format!("/login/{user}"))
                .cookie(&guest)
                .send(&app)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let cookie = r.cookie_pair();
            let id = id_of(&app, &cookie).await.unwrap();
            (cookie, id)
        }
    };
    let (ann1, ann1_id) = sign_in("ann").await;
    let (_ann2, ann2_id) = sign_in("ann").await;
    let (ann3, ann3_id) = sign_in("ann").await;
    let (bob, bob_id) = sign_in("bob").await;
    let guest = new_session(&app).await;

    let listed = call(Method::GET, "/others")
        .cookie(&ann1)
        .send(&app)
        .await
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ann2_id.to_string(), ann3_id.to_string()]);
    let none = call(Method::GET, "/others")
        .cookie(&guest)
        .send(&app)
        .await
        .json();
    assert_eq!(none, serde_json::json!([]), "a guest has no other sessions");

    for not_mine in [bob_id, ann1_id, SessionId::new()] {
        let r = call(Method::POST, &format!("/others/{not_mine}/close"))
            .cookie(&ann1)
            .send(&app)
            .await;
        assert_eq!(r.json()["closed"], false, "{not_mine}");
    }
    let r = call(Method::POST, &format!("/others/{ann2_id}/close"))
        .cookie(&ann1)
        .send(&app)
        .await;
    assert_eq!(r.json()["closed"], true);
    let c = m.get(ann2_id).await.unwrap().closed.unwrap();
    assert_eq!(
        (c.reason, c.by),
        (CloseReason::Logout, sessiond_core::Actor::Session(ann1_id))
    );
    let r = call(Method::POST, "/others/close-all")
        .cookie(&ann1)
        .send(&app)
        .await;
    assert_eq!(r.json()["closed"], 1);
    assert!(m.get(ann3_id).await.unwrap().closed.is_some());
    for (cookie, who) in [(&ann1, "ann"), (&bob, "bob")] {
        let w = call(Method::GET, "/whoami")
            .cookie(cookie)
            .send(&app)
            .await
            .json();
        assert_eq!(w["user"], who, "still signed in");
    }
    let w = call(Method::GET, "/whoami")
        .cookie(&ann3)
        .send(&app)
        .await
        .json();
    assert_eq!(w["guest"], true, "closed from elsewhere");
}
