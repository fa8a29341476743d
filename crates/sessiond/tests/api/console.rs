//! The admin console's server side: sign-in cookie, the proxy, CSRF refusals, sign-out;
//! sign-ins as sessions of the internal app `@console` (kept across a restart, shared
//! by the nodes of one store, hidden from app keys, `/v1/apps` and the metrics).
//! (The pages themselves are driven in a real browser by tests/console.)

use reqwest::header;
use reqwest::redirect::Policy;
use serde_json::{json, Value};

use crate::common::*;

/// A client that does not follow redirects, as the console's pages are tested.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Signs in to the console with `token` (the form post); answers the raw response.
pub(crate) async fn sign_in(s: &Server, token: &str) -> reqwest::Response {
    sign_in_at(&s.base, token).await
}

async fn sign_in_at(base: &str, token: &str) -> reqwest::Response {
    browser()
        .post(format!("{base}/admin/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

fn console_cookie(resp: &reqwest::Response) -> String {
    let set = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn sign_in_proxy_csrf_and_sign_out() {
    let s = Server::memory().await;
    let page = browser()
        .get(format!("{}/admin", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Admin token or app key"));

    let refused = sign_in(&s, "not-a-token").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("not the admin token or an app key"));

    let ok = sign_in(&s, SHOP_KEY).await;
    assert_eq!(ok.status(), 303);
    let cookie = console_cookie(&ok);
    assert!(
        !cookie.contains(SHOP_KEY),
        "the cookie is an id, not the key"
    );
    let c = browser();
    let get = |path: &str| {
        c.get(format!("{}{path}", s.base))
            .header(header::COOKIE, &cookie)
    };
    let who = get("/admin/whoami").send().await.unwrap();
    let (st, text) = (who.status(), who.text().await.unwrap());
    let who: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{st} {text:?} cookie={cookie}"));
    assert_eq!(who, json!({"role": "app", "app": "shop"}));
    assert!(get("/admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("console.js"));
    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let list: Value = get("/admin/api/v1/apps/shop/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"][0]["id"], opened["id"]);
    let other = get("/admin/api/v1/apps/desk").send().await.unwrap();
    assert_eq!(
        other.status(),
        403,
        "an app key's console sees its app only"
    );

    // A change without the console header, or from another origin, is refused.
    let kill = |extra: Option<(&'static str, &'static str)>| {
        let mut r = c
            .delete(format!("{}/admin/api/v1/sessions/{}", s.base, id(&opened)))
            .header(header::COOKIE, &cookie);
        if let Some((k, v)) = extra {
            r = r.header(k, v);
        }
        r
    };
    assert_eq!(kill(None).send().await.unwrap().status(), 403);
    let cross = kill(Some(("x-sessiond-console", "1")))
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let (st, _) = s
        .call(
            reqwest::Method::GET,
            "/v1/session",
            Some(&token(&opened)),
            None,
        )
        .await;
    assert_eq!(st, 200, "still open after the refused kills");
    let done = kill(Some(("x-sessiond-console", "1")))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let (st, v) = s
        .call(
            reqwest::Method::GET,
            "/v1/session",
            Some(&token(&opened)),
            None,
        )
        .await;
    assert_error(st, &v, 410, "session_closed");
    assert_eq!(v["closed_by"], json!("app"));

    let out = c
        .post(format!("{}/admin/logout", s.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(get("/admin/whoami").send().await.unwrap().status(), 401);
    assert_eq!(
        get("/admin/api/v1/apps/shop")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    s.stop().await;
}

/// `GET path` on the console at `base` with the console `cookie`: (status, JSON or Null).
async fn console_get(base: &str, cookie: &str, path: &str) -> (u16, Value) {
    let r = browser()
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The console session of each role, as the admin token lists them.
async fn console_sessions(base: &str) -> Vec<Value> {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/apps/@console/sessions"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["sessions"].as_array().unwrap().clone()
}

fn console_session_of<'a>(sessions: &'a [Value], user: &str) -> &'a Value {
    sessions
        .iter()
        .find(|s| s["user"] == json!(user))
        .unwrap_or_else(|| panic!("no console session of {user} in {sessions:?}"))
}

/// A sign-in is a session in the configured store: after a restart over the same file
/// store, the browser is still signed in, with the same role, and the proxy works. A
/// sign-in whose credential changed in the meantime (a new app key) signs no one in.
#[tokio::test]
async fn a_sign_in_survives_a_restart() {
    let dir = temp_dir("console-restart");
    let s = Server::start(config(Some(&dir))).await;
    let admin = console_cookie(&sign_in(&s, ADMIN).await);
    let shop = console_cookie(&sign_in(&s, SHOP_KEY).await);
    let desk = console_cookie(&sign_in(&s, DESK_KEY).await);
    s.stop().await;

    let mut c = config(Some(&dir));
    c.apps.get_mut("desk").unwrap().key =
        Some(sessiond::Secret::new("desk-key-changed-0123456789"));
    let s = Server::start(c).await;
    assert_eq!(
        console_get(&s.base, &admin, "/admin/whoami").await,
        (200, json!({"role": "admin", "app": null}))
    );
    assert_eq!(
        console_get(&s.base, &shop, "/admin/whoami").await,
        (200, json!({"role": "app", "app": "shop"}))
    );
    let (st, apps) = console_get(&s.base, &admin, "/admin/api/v1/apps").await;
    assert_eq!(st, 200, "{apps}");
    assert_eq!(apps["apps"].as_array().unwrap().len(), 3);
    let (st, v) = console_get(&s.base, &desk, "/admin/whoami").await;
    assert_eq!(st, 401, "desk's key changed: {v}");
    let (st, _) = console_get(&s.base, &desk, "/admin/api/v1/apps/desk").await;
    assert_eq!(st, 401);

    // Signing out closes the session: after another restart it is still signed out.
    let out = browser()
        .post(format!("{}/admin/logout", s.base))
        .header(header::COOKIE, &shop)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    s.stop().await;
    let s = Server::start(config(Some(&dir))).await;
    assert_eq!(console_get(&s.base, &shop, "/admin/whoami").await.0, 401);
    assert_eq!(console_get(&s.base, &admin, "/admin/whoami").await.0, 200);
    let sessions = console_sessions(&s.base).await;
    assert_eq!(
        sessions.len(),
        2,
        "admin's and desk's are still open: {sessions:?}"
    );
    let (st, history) = s
        .call(
            reqwest::Method::GET,
            "/v1/apps/@console/sessions?status=closed",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(history["sessions"][0]["user"], json!("app:shop"));
    assert_eq!(history["sessions"][0]["reason"], json!("logout"));
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The console's timeouts are the console's settings: the session's idle timeout and
/// the cookie's lifetime.
#[tokio::test]
async fn console_sessions_follow_the_console_settings() {
    let mut c = config(None);
    c.console_idle_timeout_s = 120;
    c.console_lifetime_s = 900;
    let s = Server::start(c).await;
    let ok = sign_in(&s, ADMIN).await;
    let set = ok.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.contains("Max-Age=900"), "{set}");
    let sessions = console_sessions(&s.base).await;
    let mine = console_session_of(&sessions, "admin");
    assert_eq!(mine["idle_timeout_s"], json!(120));
    assert_eq!(mine["app"], json!("@console"));
    assert!(mine.get("token").is_none(), "{mine}");
    assert!(
        !mine.to_string().contains(ADMIN),
        "the credential is not in the session: {mine}"
    );
    s.stop().await;
}

/// The internal app does not show to app keys, in `GET /v1/apps`, in seat counts or
/// in the metrics; an app key cannot reach its sessions (404 as for an unknown id),
/// and the admin token can list and kill them.
#[tokio::test]
async fn the_console_app_is_invisible_but_to_the_admin_token() {
    use reqwest::Method;
    let s = Server::memory().await;
    let admin = console_cookie(&sign_in(&s, ADMIN).await);
    let shop = console_cookie(&sign_in(&s, SHOP_KEY).await);
    let sessions = console_sessions(&s.base).await;
    assert_eq!(sessions.len(), 2);
    let shops = id(console_session_of(&sessions, "app:shop"));

    let (st, apps) = s.call(Method::GET, "/v1/apps", Some(ADMIN), None).await;
    assert_eq!(st, 200);
    let names: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("console")), "{names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
    for a in apps["apps"].as_array().unwrap() {
        assert_eq!(a["seats"]["used"], json!(0), "{a}");
    }
    // The metrics count events in order: once shop's open is counted, the console's
    // sign-ins before it have been seen too.
    s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = s
            .req(Method::GET, "/metrics", None)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("sessiond_opens_total{app=\"shop\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        metrics.contains("sessiond_opens_total{app=\"shop\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessiond_open_sessions{app=\"shop\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("@console"), "{metrics}");

    // An app key: the session is what an unknown id is.
    let unknown = "01a20031-c8e7-779b-9e42-9de7687e5bf9";
    for (method, path, body) in [
        (Method::GET, "/v1/sessions/{}", None),
        (Method::DELETE, "/v1/sessions/{}", None),
        (
            Method::PUT,
            "/v1/sessions/{}/privileges",
            Some(json!({"privileges": ["admin"]})),
        ),
    ] {
        let (st, v) = s
            .call(
                method.clone(),
                &path.replace("{}", &shops),
                Some(SHOP_KEY),
                body.clone(),
            )
            .await;
        let (ust, uv) = s
            .call(method, &path.replace("{}", unknown), Some(SHOP_KEY), body)
            .await;
        assert_error(st, &v, 404, "not_found");
        assert_eq!((ust, uv["error"].clone()), (st, v["error"].clone()));
    }
    for (method, path) in [
        (Method::GET, "/v1/apps/@console"),
        (Method::GET, "/v1/apps/@console/sessions"),
        (Method::POST, "/v1/apps/@console/sessions"),
        (Method::POST, "/v1/apps/@console/sessions/close-all"),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let (st, v) = s.call(method, path, Some(SHOP_KEY), body).await;
        assert_error(st, &v, 403, "forbidden");
    }
    // Through the console, an app key's sign-in cannot reach them either.
    let (st, _) = console_get(&s.base, &shop, "/admin/api/v1/apps/@console/sessions").await;
    assert_eq!(st, 403);
    assert_eq!(
        console_get(&s.base, &shop, "/admin/whoami").await.0,
        200,
        "untouched"
    );

    // Nobody opens a console session through the API, not even the admin token.
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/@console/sessions",
            Some(ADMIN),
            Some(json!({"user": "admin"})),
        )
        .await;
    assert_error(st, &v, 404, "unknown_app");
    assert_eq!(console_sessions(&s.base).await.len(), 2);

    // The admin token kills a console session: that browser is signed out.
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{shops}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["reason"], json!("killed"));
    assert_eq!(console_get(&s.base, &shop, "/admin/whoami").await.0, 401);
    assert_eq!(console_get(&s.base, &admin, "/admin/whoami").await.0, 200);
    s.stop().await;
}

/// A cookie holding another app's session token signs no one in, and signing out with
/// it leaves that session open.
#[tokio::test]
async fn only_a_console_session_signs_in() {
    let s = Server::memory().await;
    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let cookie = format!("sessiond_console={}", token(&opened));
    assert_eq!(console_get(&s.base, &cookie, "/admin/whoami").await.0, 401);
    let out = browser()
        .post(format!("{}/admin/logout", s.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let (st, _) = s
        .call(
            reqwest::Method::GET,
            "/v1/session",
            Some(&token(&opened)),
            None,
        )
        .await;
    assert_eq!(st, 200, "the app's session is still open");
    s.stop().await;
}

/// Two server processes on one Redis: a sign-in on one node works on the other; a kill
/// on one ends the sign-in, and the console's event stream, on the other.
#[tokio::test]
async fn a_sign_in_works_on_every_node_of_a_redis_store() {
    across_nodes("redis").await;
}

/// [`a_sign_in_works_on_every_node_of_a_redis_store`] on PostgreSQL.
#[tokio::test]
async fn a_sign_in_works_on_every_node_of_a_postgres_store() {
    across_nodes("postgres").await;
}

async fn across_nodes(kind: &str) {
    let Some((url, ns)) = shared_store(kind, "console across nodes").await else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let dirs = [
        temp_dir(&format!("console-{kind}-1")),
        temp_dir(&format!("console-{kind}-2")),
    ];
    let mut nodes = Vec::new();
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("sessiond.toml");
        std::fs::write(
            &file,
            format!("store = \"{url}{sep}namespace={ns}\"\n[apps.shop]\nkey = \"{SHOP_KEY}\"\n"),
        )
        .unwrap();
        nodes.push(Process::start_with(
            dir,
            &["--config", file.to_str().unwrap()],
        ));
    }
    let (one, two) = (nodes[0].base.clone(), nodes[1].base.clone());
    let admin = console_cookie(&sign_in_at(&one, ADMIN).await);
    let shop = console_cookie(&sign_in_at(&one, SHOP_KEY).await);
    assert_eq!(
        console_get(&two, &admin, "/admin/whoami").await,
        (200, json!({"role": "admin", "app": null}))
    );
    let (st, apps) = console_get(&two, &admin, "/admin/api/v1/apps").await;
    assert_eq!(st, 200, "{apps}");
    assert_eq!(
        console_get(&two, &shop, "/admin/whoami").await,
        (200, json!({"role": "app", "app": "shop"}))
    );

    // The shop console's event stream on node 2 ends when node 1 kills the sign-in.
    let mut stream = browser()
        .get(format!("{two}/admin/api/v1/apps/shop/events"))
        .header(header::COOKIE, &shop)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let shops = id(console_session_of(
        &console_sessions(&one).await,
        "app:shop",
    ));
    let killed = reqwest::Client::new()
        .delete(format!("{one}/v1/sessions/{shops}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 200);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(_chunk) = stream.chunk().await.unwrap() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream on node 2 outlived its sign-in"
    );
    assert_eq!(console_get(&two, &shop, "/admin/whoami").await.0, 401);

    // Signing out on node 2 signs out on node 1.
    let out = browser()
        .post(format!("{two}/admin/logout"))
        .header(header::COOKIE, &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(console_get(&one, &admin, "/admin/whoami").await.0, 401);
    drop(nodes);
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
