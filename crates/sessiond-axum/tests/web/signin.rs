//! Safe sign-in, through the real router: a different user starts clean, cross-site
//! writes are refused, `Secure` and `__Host-` come only from what can be trusted, two
//! cookies of the session's name are neither believed, signed-in pages carry the
//! security headers, heartbeat settings are throttled, and a write whose reply was lost
//! is never applied twice. Each test failed before its fix.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use axum::Extension;
use sessiond_axum::{ServedOverTls, SessionLayer};
use sessiond_core::{Actor, CloseReason, Policy};

use crate::common::*;

fn layer(m: &Arc<sessiond_core::Manager>) -> SessionLayer {
    SessionLayer::new(m.clone(), APP).unwrap()
}

#[tokio::test]
async fn another_user_signing_in_starts_a_new_empty_session() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(layer(&m));
    // Ann signs in and keeps her top customers; she never logs out.
    let ann = call(Method::POST, "/login/ann")
        .send(&app)
        .await
        .cookie_pair();
    let r = call(Method::POST, "/set/top3/42")
        .cookie(&ann)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let ann_id = id_of(&app, &ann).await.unwrap();

    // Bruno signs in on the same browser.
    let r = call(Method::POST, "/login/bruno")
        .cookie(&ann)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let bruno = r.cookie_pair();
    assert_ne!(bruno, ann);
    let who = call(Method::GET, "/whoami")
        .cookie(&bruno)
        .send(&app)
        .await
        .json();
    assert_eq!(who["user"], "bruno");
    assert_ne!(who["id"], ann_id.to_string(), "a new session");
    let r = call(Method::GET, "/get/top3")
        .cookie(&bruno)
        .send(&app)
        .await;
    assert_eq!(r.body, "null", "Bruno does not see Ann's storage");

    // Ann's session is closed, saying why, and her cookie is dead.
    let old = m.get(ann_id).await.unwrap();
    let closed = old.closed.expect("closed");
    assert_eq!(
        (closed.reason, closed.by),
        (CloseReason::UserChanged, Actor::User)
    );
    let who = call(Method::GET, "/whoami")
        .cookie(&ann)
        .send(&app)
        .await
        .json();
    assert_eq!(who["guest"], true);

    // Bruno signing in again keeps his session and storage.
    call(Method::POST, "/set/cart/7")
        .cookie(&bruno)
        .send(&app)
        .await;
    let bruno_id = id_of(&app, &bruno).await.unwrap();
    let again = call(Method::POST, "/login/bruno")
        .cookie(&bruno)
        .send(&app)
        .await;
    let again = again.cookie_pair();
    assert_eq!(
        id_of(&app, &again).await,
        Some(bruno_id),
        "same user, same session"
    );
    let r = call(Method::GET, "/get/cart")
        .cookie(&again)
        .send(&app)
        .await;
    assert_eq!(r.body, "\"7\"");
}

/// Login CSRF planted a session: whatever the attacker stored there does not reach
/// the victim's account when the victim signs in.
#[tokio::test]
async fn a_planted_guest_session_hands_nothing_to_the_account() {
    let m = memory_manager(Policy::default());
    let app = routes(layer(&m));
    let planted = new_session(&app).await;
    let r = call(Method::POST, "/login/victim")
        .cookie(&planted)
        .send(&app)
        .await;
    let mine = r.cookie_pair();
    let r = call(Method::GET, "/get/a").cookie(&mine).send(&app).await;
    assert_eq!(r.body, "null");
    // A carried cart is the named opt-out.
    let carrying = routes(layer(&m).with_storage_across_users(true));
    let cart = new_session(&carrying).await;
    let r = call(Method::POST, "/login/shopper")
        .cookie(&cart)
        .send(&carrying)
        .await;
    let r = call(Method::GET, "/get/a")
        .cookie(&r.cookie_pair())
        .send(&carrying)
        .await;
    assert_eq!(r.body, "\"1\"");
}

/// A request of the previous user still running when another signs in neither writes
/// into the new session nor replaces its cookie.
#[tokio::test]
async fn a_request_in_flight_across_a_user_change_touches_nothing_of_the_new_user() {
    let (m, _dir) = file_manager(Policy::default());
    let gate = Arc::new(Gate::default());
    let app = routes_with_gate(layer(&m), gate.clone());
    let ann = call(Method::POST, "/login/ann")
        .send(&app)
        .await
        .cookie_pair();
    call(Method::POST, "/set/a/1").cookie(&ann).send(&app).await;
    let slow = {
        let (app, ann) = (app.clone(), ann.clone());
        tokio::spawn(async move {
            call(Method::POST, "/slow-write")
                .cookie(&ann)
                .send(&app)
                .await
        })
    };
    gate.loaded.notified().await;
    let bruno = call(Method::POST, "/login/bruno")
        .cookie(&ann)
        .send(&app)
        .await
        .cookie_pair();
    gate.resume.notify_one();
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.set_cookies().is_empty(), "no cookie over Bruno's");
    let r = call(Method::GET, "/get/late")
        .cookie(&bruno)
        .send(&app)
        .await;
    assert_eq!(r.body, "null");
}

#[tokio::test]
async fn state_changing_requests_from_other_sites_are_refused_and_change_nothing() {
    let m = memory_manager(Policy::default());
    let l = layer(&m);
    let stats = l.stats();
    let app = routes(l);
    let refused = |c: Call| {
        let app = app.clone();
        async move {
            let r = c.send(&app).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
            assert_eq!(r.json()["error"], "cross_site_request");
            assert!(r.set_cookies().is_empty());
        }
    };
    let post = || call(Method::POST, "/set/a/1").header("host", "app.example");
    refused(post().header("sec-fetch-site", "cross-site")).await;
    // A sibling subdomain or port is same-site, not same-origin: refused too.
    refused(post().header("sec-fetch-site", "same-site")).await;
    refused(post().header("origin", "https://evil.example")).await;
    refused(post().header("origin", "http://app.example:8080")).await;
    refused(post().header("origin", "null")).await;
    assert_eq!(m.seats(APP).await.unwrap().open, 0, "nothing was stored");
    assert_eq!(stats.cross_site_refused(), 5);

    for ok in [
        post().header("sec-fetch-site", "same-origin"),
        post().header("sec-fetch-site", "none"),
        post().header("origin", "http://app.example"),
        post(),
        // A safe method is never refused: links from other sites must work.
        call(Method::GET, "/whoami").header("sec-fetch-site", "cross-site"),
    ] {
        assert_eq!(ok.send(&app).await.status, StatusCode::OK);
    }

    // Logout from a sibling: refused, the session stays open.
    let pair = new_session(&app).await;
    let id = id_of(&app, &pair).await.unwrap();
    refused(
        call(Method::POST, "/logout")
            .cookie(&pair)
            .header("sec-fetch-site", "same-site"),
    )
    .await;
    assert!(m.get(id).await.unwrap().is_open());

    // Named origins pass; the check can be turned off.
    let trusting = routes(layer(&m).with_trusted_origins(["https://pay.example"]));
    let r = post()
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://pay.example")
        .send(&trusting)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let off = routes(layer(&m).with_cross_site_check(false));
    let r = post()
        .header("sec-fetch-site", "cross-site")
        .send(&off)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn secure_comes_from_the_app_never_from_the_request_line() {
    let m = memory_manager(Policy::default());
    // A client sends an absolute-form https URI over plain HTTP.
    let app = routes(layer(&m));
    let line = call(Method::POST, "https://app.example/set/a/1")
        .send(&app)
        .await
        .set_cookie();
    assert!(
        line.starts_with("SESSION=") && !line.contains("Secure"),
        "{line}"
    );

    // The app terminated TLS and says so: Secure, and the __Host- prefix.
    let tls = routes(layer(&m)).layer(Extension(ServedOverTls));
    let r = call(Method::POST, "/set/a/1").send(&tls).await;
    let line = r.set_cookie();
    assert!(line.starts_with("__Host-SESSION=web:"), "{line}");
    assert!(
        line.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{line}"
    );
    let pair = r.cookie_pair();
    let r = call(Method::GET, "/get/a").cookie(&pair).send(&tls).await;
    assert_eq!(r.body, "\"1\"", "the prefixed cookie is the one read");
    // Over TLS, a plain-named cookie (one a sibling or a plain-HTTP page could set) is
    // not the session's.
    let plain = pair.replace("__Host-SESSION", "SESSION");
    let r = call(Method::GET, "/get/a").cookie(&plain).send(&tls).await;
    assert_eq!(r.body, "null");
    // With a Domain the prefix cannot be used; the cookie is still Secure.
    let wide = routes(layer(&m).with_cookie_domain("example.com")).layer(Extension(ServedOverTls));
    let line = call(Method::POST, "/set/a/1")
        .send(&wide)
        .await
        .set_cookie();
    assert!(
        line.starts_with("SESSION=") && line.ends_with("; Secure"),
        "{line}"
    );
}

#[tokio::test]
async fn two_cookies_of_the_session_name_make_a_guest_and_are_counted() {
    let m = memory_manager(Policy::default());
    let l = layer(&m);
    let stats = l.stats();
    let app = routes(l);
    let real = new_session(&app).await;
    let planted = new_session(&app).await;
    let r = call(Method::GET, "/whoami")
        .cookie(&planted)
        .cookie(&real)
        .send(&app)
        .await;
    assert_eq!(r.json()["guest"], true, "neither cookie is believed");
    assert_eq!(stats.duplicate_cookies(), 1);
    let r = call(Method::GET, "/get/a")
        .cookie(&format!("{real}; {planted}"))
        .send(&app)
        .await;
    assert_eq!(r.body, "null");
    assert_eq!(stats.duplicate_cookies(), 2);
    // One cookie alone still works.
    let r = call(Method::GET, "/get/a").cookie(&real).send(&app).await;
    assert_eq!(r.body, "\"1\"");
}

#[tokio::test]
async fn signed_in_responses_carry_the_security_headers_and_keep_the_apps_own() {
    let m = memory_manager(Policy::default());
    let app = routes(layer(&m));
    let framable = axum::Router::new()
        .route(
            "/framable",
            axum::routing::get(|s: sessiond_axum::Session| async move {
                let _ = s.id().await;
                (
                    [
                        (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
                        (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
                    ],
                    "ok",
                )
            }),
        )
        .layer(layer(&m));
    let guest = call(Method::GET, "/bare").send(&app).await;
    assert!(
        guest.headers.get(header::X_FRAME_OPTIONS).is_none(),
        "no session, no headers"
    );
    let pair = new_session(&app).await;
    for path in ["/bare", "/whoami"] {
        let r = call(Method::GET, path).cookie(&pair).send(&app).await;
        let h = &r.headers;
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "frame-ancestors 'none'");
    }
    let r = call(Method::GET, "/framable")
        .cookie(&pair)
        .send(&framable)
        .await;
    assert_eq!(r.headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
    assert_eq!(
        r.headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'self'"
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn heartbeat_settings_change_at_most_once_a_second_in_bursts_of_five() {
    let m = memory_manager(Policy::default());
    let l = layer(&m);
    let stats = l.stats();
    let app = routes(l);
    let pair = new_session(&app).await;
    let id = id_of(&app, &pair).await.unwrap();
    let put = |active: bool| {
        call(Method::PUT, "/_sessiond/heartbeat")
            .cookie(&pair)
            .json(&format!("{{\"active\": {active}}}"))
    };
    for i in 0..5 {
        let r = put(i % 2 == 0).send(&app).await;
        assert_eq!(r.status, StatusCode::OK, "change {i}: {}", r.body);
    }
    let before = m.get(id).await.unwrap();
    let r = put(false).send(&app).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    let after = m.get(id).await.unwrap();
    assert_eq!(after.version, before.version, "nothing written");
    assert_eq!(after.heartbeat, before.heartbeat);
    assert_eq!(stats.settings_throttled(), 1);
    // The same settings again are a beat, not a change: never throttled.
    let r = put(true).send(&app).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The store commits a write and its reply is lost: the request fails closed (503
/// `outcome_unknown`) and the change is applied once, never planned again from a fresh
/// read. On the hinted first write (Redis-like stores) as on the usual path.
#[tokio::test]
async fn a_lost_reply_after_a_committed_write_never_applies_it_twice() {
    for hinting in [true, false] {
        let store = Arc::new(if hinting {
            TestStore::hinting()
        } else {
            TestStore::default()
        });
        let m = test_manager(store.clone());
        let app = routes(layer(&m));
        let pair = call(Method::POST, "/incr").send(&app).await.cookie_pair();
        let id = id_of(&app, &pair).await.unwrap();
        store.lose_next_reply.store(true, Ordering::SeqCst);
        let r = call(Method::POST, "/incr").cookie(&pair).send(&app).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert_eq!(r.json()["error"], "outcome_unknown");
        let s = m.get(id).await.unwrap();
        assert_eq!(
            s.data.get("n"),
            Some(serde_json::json!(2)),
            "applied once (hinting: {hinting})"
        );
    }
}
