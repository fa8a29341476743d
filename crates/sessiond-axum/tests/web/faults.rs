//! Fail closed: with the store unavailable, requests that need the session answer 503,
//! never a fresh guest, even when the handler ignores the error.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use sessiond_axum::SessionLayer;

use crate::common::*;

#[tokio::test]
async fn an_unavailable_store_answers_503_and_never_a_fresh_guest() {
    let store = Arc::new(TestStore::default());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = call(Method::POST, "/login/admin")
        .send(&app)
        .await
        .cookie_pair();

    store.down.store(true, Ordering::SeqCst);
    for (method, path, cookie) in [
        (Method::GET, "/whoami", pair.as_str()),
        (Method::GET, "/get/a", pair.as_str()),
        (Method::GET, "/ignore-error", pair.as_str()),
        (Method::POST, "/set/a/1", pair.as_str()),
        (Method::POST, "/logout", pair.as_str()),
        (Method::GET, "/admin", pair.as_str()),
        (Method::POST, "/set/a/1", ""),
    ] {
        let r = call(method, path).cookie(cookie).send(&app).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        assert_eq!(r.json()["error"], "store_unavailable");
        assert!(
            !r.body.contains("connection refused"),
            "details stay in the log"
        );
        assert!(r.set_cookies().is_empty(), "{path}: no new cookie");
        assert_eq!(r.headers[header::RETRY_AFTER], "1");
    }
    let r = call(Method::POST, "/_sessiond/heartbeat")
        .cookie(&pair)
        .json("{}")
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Routes that never touch the session still work.
    let r = call(Method::GET, "/bare").cookie(&pair).send(&app).await;
    assert_eq!(r.status, StatusCode::OK);

    store.down.store(false, Ordering::SeqCst);
    let who = call(Method::GET, "/whoami")
        .cookie(&pair)
        .send(&app)
        .await
        .json();
    assert_eq!(
        (who["user"].as_str(), who["admin"].as_bool()),
        (Some("admin"), Some(true)),
        "the session survived the outage"
    );
}

/// A rotation committed before the store failed: the 503 still carries the new cookie,
/// since the old one no longer works.
#[tokio::test]
async fn a_failure_after_a_rotation_still_hands_over_the_new_cookie() {
    use axum::routing::post;
    use sessiond_axum::{Grant, Session, SessionError};
    let store = Arc::new(TestStore::default());
    let m = test_manager(store.clone());
    let down = store.clone();
    let app = axum::Router::new()
        .route(
            "/login-then-fail",
            post(move |s: Session| {
                let down = down.clone();
                async move {
                    s.set_privileges(Grant {
                        user: Some("ann".into()),
                        ..Default::default()
                    })
                    .await?;
                    down.down.store(true, Ordering::SeqCst);
                    s.insert("after", 1).await?;
                    Ok::<_, SessionError>("unreachable")
                }
            }),
        )
        .layer(SessionLayer::new(m.clone(), APP).unwrap());
    let guest = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let old = call(Method::POST, "/set/a/1")
        .send(&guest)
        .await
        .cookie_pair();
    let r = call(Method::POST, "/login-then-fail")
        .cookie(&old)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let new = r.cookie_pair();
    assert_ne!(new, old, "the rotated cookie is in the 503");
    store.down.store(false, Ordering::SeqCst);
    let who = call(Method::GET, "/whoami").cookie(&new).send(&guest).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(
        who.json()["user"],
        "ann",
        "the new cookie reaches the signed-in session"
    );
}
