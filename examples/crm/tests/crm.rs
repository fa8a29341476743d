//! Run with: `cargo nextest run -p crm`
//!
//! The CRM through its real router on the real file store: login and the top 3 loaded
//! once into session storage, wrong passwords, the WebAdmin guard, logout, the heartbeat
//! script on every page, the debug endpoint, and the safe sign-in findings (another
//! user's storage, login CSRF and cross-site logout, hostile `next`, a throttled
//! password check, the headers of signed-in pages).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use crm::{Settings, StoreKind};
use serde_json::{json, Value};
use sessiond_core::{CloseReason, Lookup, Manager, SessionId};
use tower::ServiceExt;

struct Crm {
    app: Router,
    manager: Arc<Manager>,
    dir: std::path::PathBuf,
}

impl Drop for Crm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn crm(debug_endpoints: bool) -> Crm {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "crm-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let settings = Settings {
        store: StoreKind::File,
        data_dir: dir.clone(),
        debug_endpoints,
        ..Default::default()
    };
    let manager = crm::manager(&settings).unwrap();
    let app = crm::app(manager.clone(), &settings).unwrap();
    Crm { app, manager, dir }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn cookie(&self) -> Option<String> {
        self.headers
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
    }

    fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }
}

async fn send(app: &Router, method: Method, uri: &str, cookie: &str, form: Option<&str>) -> Reply {
    send_with(app, method, uri, cookie, form, &[], None).await
}

/// [`send`] with extra headers and, when `peer` is given, the TCP peer's address.
async fn send_with(
    app: &Router,
    method: Method,
    uri: &str,
    cookie: &str,
    form: Option<&str>,
    extra: &[(&str, &str)],
    peer: Option<[u8; 4]>,
) -> Reply {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    if let Some(ip) = peer {
        b = b.extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 50000,
        ))));
    }
    if !cookie.is_empty() {
        b = b.header(header::COOKIE, cookie);
    }
    let body = match form {
        Some(f) => {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(f.to_string())
        }
        None => Body::empty(),
    };
    let res = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `POST /authenticate` with `form`, extra headers and the TCP peer, without a cookie.
async fn sign_in(app: &Router, form: &str, extra: &[(&str, &str)], peer: Option<[u8; 4]>) -> Reply {
    send_with(
        app,
        Method::POST,
        "/authenticate",
        "",
        Some(form),
        extra,
        peer,
    )
    .await
}

async fn login(app: &Router, cookie: &str, user: u32, password: &str) -> Reply {
    let form = format!("userId={user}&password={password}");
    send(app, Method::POST, "/authenticate", cookie, Some(&form)).await
}

fn session_id(page: &str) -> SessionId {
    let start = page.find("id=\"session-id\">").unwrap() + "id=\"session-id\">".len();
    page[start..start + 36].parse().unwrap()
}

#[tokio::test]
async fn login_loads_the_top_3_into_session_storage_once() {
    let c = crm(false);
    let r = login(&c.app, "", 1, "ann-demo-pass").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/home");
    let cookie = r.cookie().unwrap();
    assert!(cookie.starts_with("4DSID_CRM=crm:"), "{cookie}");

    let home = send(&c.app, Method::GET, "/home", &cookie, None).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Welcome, Ann Martin"));
    let at = |name: &str| home.body.find(name).unwrap();
    assert!(at("Cobalt Systems") < at("Acme Industries"));
    assert!(at("Acme Industries") < at("Blue Ocean Travel"));
    assert!(!home.body.contains("Étoile SA"), "only three");
    assert!(home.body.contains("/_sessiond/heartbeat.js"));

    let id = session_id(&home.body);
    let s = c.manager.get(id).await.unwrap();
    assert_eq!(s.user.as_deref(), Some("1"));
    assert_eq!(s.info.get("userName"), Some(json!("Ann Martin")));
    assert_eq!(
        s.data.get(crm::TOP3_KEY).unwrap()[0]["name"],
        "Cobalt Systems"
    );

    // Loaded once: signing in again in the same session keeps what storage holds.
    let marker = json!({crm::TOP3_KEY: [{"name": "Kept", "city": "X", "totalPurchase": 1}]});
    c.manager
        .update_data(Lookup::Id(id), marker, None, None)
        .await
        .unwrap();
    let r = login(&c.app, &cookie, 1, "ann-demo-pass").await;
    let cookie = r.cookie().unwrap();
    let home = send(&c.app, Method::GET, "/home", &cookie, None).await;
    assert!(home.body.contains("Kept") && !home.body.contains("Cobalt"));
    assert_eq!(session_id(&home.body), id, "same session, new token");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_ids_get_the_same_refusal() {
    let c = crm(false);
    for (user, password) in [(1, "bruno-demo-pass"), (42, "ann-demo-pass")] {
        let r = login(&c.app, "", user, password).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("Unknown user id or wrong password."));
        assert!(r.cookie().is_none(), "no session for a failed login");
    }
    let r = send(
        &c.app,
        Method::POST,
        "/authenticate",
        "",
        Some("userId=abc"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn webadmin_is_for_webadmins_only() {
    let c = crm(false);
    let r = send(&c.app, Method::GET, "/admin", "", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/authenticate.shtml?next=/admin");

    let bruno = login(&c.app, "", 2, "bruno-demo-pass")
        .await
        .cookie()
        .unwrap();
    let r = send(&c.app, Method::GET, "/admin", &bruno, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let home = send(&c.app, Method::GET, "/home", &bruno, None).await;
    assert!(!home.body.contains("id=\"admin-link\""));

    let form = "userId=1&password=ann-demo-pass&next=%2Fadmin";
    let r = send(&c.app, Method::POST, "/authenticate", "", Some(form)).await;
    assert_eq!(r.location(), "/admin", "back where the guard sent us from");
    let r = send(&c.app, Method::GET, "/admin", &r.cookie().unwrap(), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("WebAdmin: open sessions"));
    assert!(r.body.contains("Bruno Petit") && r.body.contains("Ann Martin"));
}

#[tokio::test]
async fn logout_ends_the_session_and_removes_the_cookie() {
    let c = crm(false);
    let cookie = login(&c.app, "", 3, "chloe-demo-pass")
        .await
        .cookie()
        .unwrap();
    let id = session_id(&send(&c.app, Method::GET, "/home", &cookie, None).await.body);
    let r = send(&c.app, Method::POST, "/logout", &cookie, None).await;
    assert_eq!(r.location(), "/authenticate.shtml");
    let removal = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(removal.starts_with("4DSID_CRM=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"));
    assert_eq!(
        c.manager.get(id).await.unwrap().closed.unwrap().reason,
        CloseReason::Logout
    );
    let r = send(&c.app, Method::GET, "/home", &cookie, None).await;
    assert_eq!(r.location(), "/authenticate.shtml?next=/home");
}

#[tokio::test]
async fn the_payment_page_turns_the_heartbeat_off_and_debug_shows_status() {
    let c = crm(true);
    let cookie = login(&c.app, "", 1, "ann-demo-pass")
        .await
        .cookie()
        .unwrap();
    let page = send(&c.app, Method::GET, "/payment", &cookie, None).await;
    assert!(page.body.contains("heartbeat.js\" data-active=\"false\""));
    let id = session_id(&page.body);

    let r = send(
        &c.app,
        Method::GET,
        &format!("/debug/sessions/{id}"),
        "",
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_null()),
        (Some("open"), Some(()))
    );
    send(&c.app, Method::POST, "/logout", &cookie, None).await;
    let r = send(
        &c.app,
        Method::GET,
        &format!("/debug/sessions/{id}"),
        "",
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("closed"), Some("logout"))
    );

    let off = crm(false);
    let r = send(
        &off.app,
        Method::GET,
        &format!("/debug/sessions/{id}"),
        "",
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "debug endpoints are off by default"
    );
}

#[tokio::test]
async fn another_user_signing_in_does_not_see_the_previous_users_storage() {
    let c = crm(false);
    // Ann signs in and never logs out; Bruno signs in on the same browser.
    let ann = login(&c.app, "", 1, "ann-demo-pass")
        .await
        .cookie()
        .unwrap();
    let ann_home = send(&c.app, Method::GET, "/home", &ann, None).await;
    let ann_id = session_id(&ann_home.body);
    let bruno = login(&c.app, &ann, 2, "bruno-demo-pass")
        .await
        .cookie()
        .unwrap();
    let home = send(&c.app, Method::GET, "/home", &bruno, None).await;
    assert!(home.body.contains("Welcome, Bruno"), "{}", home.body);
    assert!(
        !home.body.contains("Cobalt Systems"),
        "Bruno sees his customers, not Ann's"
    );
    assert_ne!(session_id(&home.body), ann_id);
    let old = c.manager.get(ann_id).await.unwrap();
    assert_eq!(old.closed.unwrap().reason, CloseReason::UserChanged);
}

#[tokio::test]
async fn sign_in_and_logout_from_another_site_are_refused() {
    let c = crm(false);
    let form = "userId=1&password=ann-demo-pass";
    for site in ["cross-site", "same-site"] {
        let r = sign_in(&c.app, form, &[("sec-fetch-site", site)], None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{site}");
        assert!(r.cookie().is_none(), "no session planted");
    }
    let r = sign_in(
        &c.app,
        form,
        &[("origin", "http://evil.example"), ("host", "crm.example")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Signed in from the CRM's own page, a sibling cannot log the user out.
    let r = sign_in(&c.app, form, &[("sec-fetch-site", "same-origin")], None).await;
    let cookie = r.cookie().unwrap();
    let r = send_with(
        &c.app,
        Method::POST,
        "/logout",
        &cookie,
        None,
        &[("sec-fetch-site", "same-site")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let home = send(&c.app, Method::GET, "/home", &cookie, None).await;
    assert_eq!(home.status, StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn hostile_next_values_land_on_home_and_never_fail() {
    let c = crm(false);
    for next in [
        "%2F%09%2Fevil.example%2F",
        "%2F%5Cevil.example",
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2Fhome%0D%0ASet-Cookie%3A%20a%3D1",
        "%2F%7F",
        "%2Fa%0Ab",
    ] {
        let form = format!("userId=1&password=ann-demo-pass&next={next}");
        let r = send(&c.app, Method::POST, "/authenticate", "", Some(&form)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{next}: {}", r.body);
        assert_eq!(r.location(), "/home", "{next}");
        let page = send(
            &c.app,
            Method::GET,
            &format!("/authenticate.shtml?next={next}"),
            "",
            None,
        )
        .await;
        assert_eq!(page.status, StatusCode::OK, "{next}");
        assert!(
            page.body.contains("name=\"next\" value=\"/home\""),
            "{next}"
        );
    }
    let form = "userId=1&password=ann-demo-pass&next=%2Fadmin%3Fx%3D1";
    let r = send(&c.app, Method::POST, "/authenticate", "", Some(form)).await;
    assert_eq!(r.location(), "/admin?x=1");
}

#[tokio::test]
async fn repeated_bad_passwords_from_one_address_are_throttled() {
    let c = crm(false);
    let attacker = Some([192, 0, 2, 66]);
    let bad = "userId=1&password=guess";
    for _ in 0..6 {
        let r = sign_in(&c.app, bad, &[], attacker).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = sign_in(&c.app, bad, &[], attacker).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert!(r.body.contains("Too many sign-in attempts"));
    // Ann, from her own address, signs in at once.
    let good = "userId=1&password=ann-demo-pass";
    let r = sign_in(&c.app, good, &[], Some([198, 51, 100, 7])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn signed_in_pages_are_not_cached_framed_or_open_to_injected_scripts() {
    let c = crm(false);
    let cookie = login(&c.app, "", 1, "ann-demo-pass")
        .await
        .cookie()
        .unwrap();
    for path in ["/home", "/payment", "/authenticate.shtml"] {
        let r = send(&c.app, Method::GET, path, &cookie, None).await;
        let h = &r.headers;
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert!(h.contains_key(header::REFERRER_POLICY), "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(
            !r.body.contains("<script>") && !r.body.contains("style="),
            "{path}: nothing inline"
        );
    }
    let css = send(&c.app, Method::GET, "/static/crm.css", "", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css");
}

#[tokio::test]
async fn your_sessions_lists_and_signs_out_only_the_users_own_others() {
    let c = crm(false);
    let a = login(&c.app, "", 1, "ann-demo-pass")
        .await
        .cookie()
        .unwrap();
    let b = login(&c.app, "", 1, "ann-demo-pass")
        .await
        .cookie()
        .unwrap();
    let x = login(&c.app, "", 1, "ann-demo-pass")
        .await
        .cookie()
        .unwrap();
    let bruno = login(&c.app, "", 2, "bruno-demo-pass")
        .await
        .cookie()
        .unwrap();
    let id_of = |page: &Reply| session_id(&page.body);
    let b_id = id_of(&send(&c.app, Method::GET, "/home", &b, None).await);
    let bruno_id = id_of(&send(&c.app, Method::GET, "/home", &bruno, None).await);

    let page = send(&c.app, Method::GET, "/sessions", &a, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("class=\"session\"").count(),
        3,
        "this one and two others"
    );
    assert!(page.body.contains(&b_id.to_string()));
    assert!(
        !page.body.contains(&bruno_id.to_string()),
        "never another user's"
    );
    assert!(!page.body.contains("crm:"), "never a token");

    // Bruno's session, an unknown id and garbage all answer the same.
    for id in [
        bruno_id.to_string(),
        SessionId::new().to_string(),
        "x".into(),
    ] {
        let r = send(
            &c.app,
            Method::POST,
            &format!("/sessions/{id}/close"),
            &a,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(r.body, "no such session of yours");
    }
    assert!(c.manager.get(bruno_id).await.unwrap().is_open());

    let r = send(
        &c.app,
        Method::POST,
        &format!("/sessions/{b_id}/close"),
        &a,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/sessions?closed=1");
    assert_eq!(
        c.manager.get(b_id).await.unwrap().closed.unwrap().reason,
        CloseReason::Logout
    );
    let gone = send(&c.app, Method::GET, "/home", &b, None).await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER, "B is signed out");

    let r = send(&c.app, Method::POST, "/sessions/close-others", &a, None).await;
    assert_eq!(r.location(), "/sessions?closed=1", "X was the last other");
    let gone = send(&c.app, Method::GET, "/home", &x, None).await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    let page = send(&c.app, Method::GET, "/sessions?closed=1", &a, None).await;
    assert!(page.body.contains("1 session signed out."));
    assert!(page.body.contains("You are signed in nowhere else."));
    assert!(
        c.manager.get(bruno_id).await.unwrap().is_open(),
        "Bruno untouched"
    );
}
