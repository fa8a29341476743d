//! The cookie: its attributes, its name, lazy and eager creation, and what happens to a
//! cookie the store no longer knows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use sessiond_axum::SessionLayer;
use sessiond_core::{Actor, CloseReason, Lookup, Policy};

use crate::common::*;

#[tokio::test]
async fn no_cookie_until_something_is_stored_then_every_default_attribute() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());

    let r = call(Method::GET, "/whoami").send(&app).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookies().is_empty(), "reading a guest sets no cookie");
    assert_eq!(r.json()["guest"], true);
    assert!(r.json()["id"].is_null());
    assert_eq!(m.seats(APP).await.unwrap().open, 0, "nothing stored");

    let r = call(Method::POST, "/set/a/1").send(&app).await;
    let line = r.set_cookie();
    let (pair, attrs) = line.split_once("; ").unwrap();
    let (name, token) = pair.split_once('=').unwrap();
    assert_eq!(name, "SESSION");
    assert!(
        token.starts_with("web:") && token.len() == "web:".len() + 32,
        "{token}"
    );
    assert_eq!(attrs, "Path=/; HttpOnly; SameSite=Lax");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(m.seats(APP).await.unwrap().open, 1);

    let r = call(Method::GET, "/get/a").cookie(pair).send(&app).await;
    assert_eq!(r.body, "\"1\"");
    assert!(
        r.set_cookies().is_empty(),
        "a known cookie is not set again"
    );
    // A signed-in page is never cached, and carries the security headers.
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test]
async fn secure_path_domain_max_age_and_host_prefix() {
    let m = memory_manager(Policy::default());
    let base = || SessionLayer::new(m.clone(), APP).unwrap();

    let app = routes(base().with_secure(true));
    let line = call(Method::POST, "/set/a/1").send(&app).await.set_cookie();
    assert!(line.ends_with("; HttpOnly; SameSite=Lax; Secure"), "{line}");

    let app = routes(
        base()
            .with_cookie_path("/shop")
            .with_cookie_domain("example.com")
            .with_cookie_max_age(Duration::from_secs(3600)),
    );
    let first = call(Method::POST, "/set/a/1").send(&app).await;
    let line = first.set_cookie();
    assert!(
        line.ends_with("; Path=/shop; Domain=example.com; HttpOnly; SameSite=Lax; Max-Age=3600"),
        "{line}"
    );
    // The cookie rolls: each request that uses the session renews its Max-Age; one
    // that never looks at the session does not, nor does an unknown cookie's guest.
    let pair = first.cookie_pair();
    let again = call(Method::GET, "/get/a").cookie(&pair).send(&app).await;
    assert_eq!(again.set_cookie(), line, "the same cookie, a fresh Max-Age");
    assert_eq!(again.headers[header::CACHE_CONTROL], "no-store");
    let bare = call(Method::GET, "/bare").cookie(&pair).send(&app).await;
    assert!(bare.set_cookies().is_empty());
    let stranger = call(Method::GET, "/get/a")
        .cookie("SESSION=web:00000000000000000000000000000000")
        .send(&app)
        .await;
    assert!(
        stranger.set_cookies().is_empty(),
        "a guest that stores nothing"
    );

    // __Host- forces Secure and Path=/ and drops the domain.
    let app = routes(
        base()
            .with_host_prefix(true)
            .with_cookie_path("/shop")
            .with_cookie_domain("example.com"),
    );
    let r = call(Method::POST, "/set/a/1").send(&app).await;
    let line = r.set_cookie();
    assert!(line.starts_with("__Host-SESSION=web:"), "{line}");
    assert!(
        line.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{line}"
    );
    // The prefixed name is the one read back.
    let r = call(Method::GET, "/get/a")
        .cookie(&r.cookie_pair())
        .send(&app)
        .await;
    assert_eq!(r.body, "\"1\"");
}

#[tokio::test]
async fn forwarded_proto_counts_only_when_trusted() {
    let m = memory_manager(Policy::default());
    let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let trusting = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_trusted_proxies([proxy])
            .with_trust_forwarded_proto(true),
    );
    let flag_only = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_trust_forwarded_proto(true),
    );
    let plain = routes(SessionLayer::new(m.clone(), APP).unwrap());

    let via = |app, from: [u8; 4], xff: &'static str, xfp: &'static str| async move {
        let mut c = call(Method::POST, "/set/a/1").peer(from);
        if !xff.is_empty() {
            c = c.header("x-forwarded-for", xff);
        }
        c.header("x-forwarded-proto", xfp)
            .send(app)
            .await
            .set_cookie()
    };
    let line = via(&trusting, [127, 0, 0, 1], "198.51.100.2", "https").await;
    assert!(
        line.starts_with("__Host-SESSION=") && line.ends_with("; Secure"),
        "{line}"
    );
    // The proxy wrote no client address: its value speaks of its own client.
    assert!(via(&trusting, [127, 0, 0, 1], "", "https")
        .await
        .ends_with("; Secure"));
    // The client wrote "https" itself; the proxy appended what it saw.
    let line = via(&trusting, [127, 0, 0, 1], "198.51.100.2", "https, http").await;
    assert!(!line.contains("Secure"), "{line}");
    // From a peer that is not a trusted proxy, or with no proxy trusted at all.
    let line = via(&trusting, [198, 51, 100, 9], "", "https").await;
    assert!(!line.contains("Secure"), "{line}");
    let line = via(&flag_only, [127, 0, 0, 1], "", "https").await;
    assert!(!line.contains("Secure"), "{line}");
    let line = via(&plain, [127, 0, 0, 1], "", "https").await;
    assert!(!line.contains("Secure"), "untrusted header ignored: {line}");
    let line = call(Method::POST, "/set/a/1")
        .send(&trusting)
        .await
        .set_cookie();
    assert!(!line.contains("Secure"), "plain http stays plain: {line}");
}

#[tokio::test]
async fn cookie_name_comes_from_the_policy_unless_overridden() {
    let m = memory_manager(Policy {
        cookie_name: "4DSID_MyApp".into(),
        ..Default::default()
    });
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let r = call(Method::POST, "/set/a/1").send(&app).await;
    assert!(r.set_cookie().starts_with("4DSID_MyApp=web:"));
    // A cookie of the default name means nothing to this app.
    let stray = r.cookie_pair().replace("4DSID_MyApp", "SESSION");
    let r2 = call(Method::GET, "/get/a").cookie(&stray).send(&app).await;
    assert_eq!(r2.body, "null");

    let app = routes(
        SessionLayer::new(m, APP)
            .unwrap()
            .with_cookie_name("shop_sid"),
    );
    let r = call(Method::POST, "/set/a/1").send(&app).await;
    assert!(r.set_cookie().starts_with("shop_sid=web:"));
}

#[tokio::test]
async fn eager_mode_creates_the_session_on_the_first_request() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap().with_eager(true));
    let r = call(Method::GET, "/bare").send(&app).await;
    assert_eq!(r.body, "ok");
    let pair = r.cookie_pair();
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(m.seats(APP).await.unwrap().open, 1);

    let r = call(Method::GET, "/whoami").cookie(&pair).send(&app).await;
    assert!(r.set_cookies().is_empty());
    assert!(r.json()["id"].is_string());
    assert_eq!(m.seats(APP).await.unwrap().open, 1, "the cookie found it");
}

#[tokio::test]
async fn requests_that_never_use_the_session_never_reach_the_store() {
    let store = Arc::new(TestStore::default());
    let app = routes(SessionLayer::new(test_manager(store.clone()), APP).unwrap());
    let pair = new_session(&app).await;

    let before = store.calls.load(Ordering::SeqCst);
    for path in ["/bare", "/unused"] {
        let r = call(Method::GET, path).cookie(&pair).send(&app).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(
        store.calls.load(Ordering::SeqCst),
        before,
        "no store call at all"
    );

    call(Method::GET, "/get/a").cookie(&pair).send(&app).await;
    assert_eq!(
        store.calls.load(Ordering::SeqCst),
        before + 1,
        "one resolve"
    );
}

#[tokio::test]
async fn a_closed_or_unknown_cookie_gives_a_fresh_guest_with_a_new_cookie() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let pair = new_session(&app).await;
    let r = call(Method::POST, "/login/ann")
        .cookie(&pair)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let pair = r.cookie_pair();
    let id = id_of(&app, &pair).await.unwrap();
    m.close(Lookup::Id(id), CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();

    let r = call(Method::GET, "/whoami").cookie(&pair).send(&app).await;
    assert_eq!(r.json()["guest"], true, "closed: a guest, not ann");
    assert!(r.json()["id"].is_null());
    let r = call(Method::POST, "/set/b/2")
        .cookie(&pair)
        .send(&app)
        .await;
    let fresh = r.cookie_pair();
    assert_ne!(fresh, pair);
    let new_id = id_of(&app, &fresh).await.unwrap();
    assert_ne!(new_id, id);
    let r = call(Method::GET, "/keys").cookie(&fresh).send(&app).await;
    assert_eq!(
        r.json(),
        serde_json::json!(["b"]),
        "nothing of the old storage"
    );

    let r = call(Method::POST, "/set/c/3")
        .cookie("SESSION=web:0123456789abcdef0123456789abcdef")
        .send(&app)
        .await;
    assert!(r.set_cookie().starts_with("SESSION=web:"));

    // Eager: a new cookie at once.
    let eager = routes(SessionLayer::new(m.clone(), APP).unwrap().with_eager(true));
    let r = call(Method::GET, "/bare").cookie(&pair).send(&eager).await;
    let eager_pair = r.cookie_pair();
    assert_ne!(eager_pair, pair);
    assert_ne!(id_of(&eager, &eager_pair).await.unwrap(), id);
}
