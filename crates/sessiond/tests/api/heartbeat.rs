//! The browser heartbeat the server serves for pages of apps behind a proxy
//! (`/v1/apps/{app}/heartbeat.js`, `/v1/apps/{app}/heartbeat`): the script, beats and
//! settings with the app's cookie, the cross-site rule, and CORS for the app's allowed
//! origins. The run in Chromium behind nginx is `tests/proxy/heartbeat.test.mjs`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, id, token, Server, SHOP_KEY};

const ENDPOINT: &str = "/v1/apps/shop/heartbeat";
const ALLOWED: &str = "http://pages.shop.test:8080";

/// A memory server whose shop lets pages of [`ALLOWED`] call the heartbeat.
async fn server() -> Server {
    let mut config = crate::common::config(None);
    config.apps.get_mut("shop").unwrap().web = sessiond::web::WebConfig::from_toml(
        "shop",
        toml::from_str(&format!(
            "allowed_origins = [\"{ALLOWED}\"]\nheartbeat_interval_s = 20\nheartbeat_grace_s = 5"
        ))
        .unwrap(),
    )
    .unwrap();
    Server::start(config).await
}

/// Sends `method` to the endpoint with `headers` and an optional JSON body.
async fn send(
    s: &Server,
    method: Method,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = s.req(method, ENDPOINT, None);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.json().await.unwrap_or(Value::Null))
}

async fn session(s: &Server, opened: &Value) -> Value {
    let (status, v) = s
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", id(opened)),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn the_script_is_served_and_may_be_cached() {
    let s = server().await;
    let r = s
        .req(Method::GET, "/v1/apps/shop/heartbeat.js", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(h["cache-control"], "public, max-age=300");
    assert!(r.text().await.unwrap().contains("sessiondHeartbeat"));
    let (status, v) = s
        .call(Method::GET, "/v1/apps/nope/heartbeat.js", None, None)
        .await;
    assert_error(status, &v, 404, "unknown_app");
    s.stop().await;
}

#[tokio::test]
async fn a_page_beats_and_sets_its_heartbeat_with_the_cookie_never_as_activity() {
    let s = server().await;
    let json_ct = ("content-type", "application/json");
    // No cookie: nothing to keep alive.
    let (status, _, v) = send(&s, Method::POST, &[json_ct], Some(json!({}))).await;
    assert_eq!((status, &v), (200, &json!({"status": "none"})));

    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let cookie = format!("SESSION={}", token(&opened));
    let own = [
        ("cookie", cookie.as_str()),
        json_ct,
        ("sec-fetch-site", "same-origin"),
    ];
    let before = session(&s, &opened).await["last_activity_at"].clone();
    let (status, h, v) = send(&s, Method::PUT, &own, Some(json!({"active": true}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "open", "active": true, "interval_s": 20, "grace_s": 5})
    );
    assert_eq!(h["cache-control"], "no-store");
    let (status, _, v) = send(&s, Method::POST, &own, Some(json!({}))).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("open")));
    let (status, _, v) = send(
        &s,
        Method::PUT,
        &own,
        Some(json!({"active": true, "interval_s": 60})),
    )
    .await;
    assert_eq!((status, v["interval_s"].as_u64()), (200, Some(60)));
    let after = session(&s, &opened).await;
    assert_eq!(after["last_activity_at"], before, "a beat is not activity");
    assert_eq!(after["heartbeat"]["interval_s"], 60);

    // Only JSON; a body that is not the settings is refused and changes nothing.
    let (status, _, v) = send(&s, Method::POST, &[("cookie", cookie.as_str())], None).await;
    assert_error(status, &v, 415, "unsupported_media_type");
    let (status, _, v) = send(&s, Method::PUT, &own, Some(json!({"active": "yes"}))).await;
    assert_error(status, &v, 400, "bad_request");

    // Closed: the page is told why.
    s.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", id(&opened)),
        Some(SHOP_KEY),
        None,
    )
    .await;
    let (status, _, v) = send(&s, Method::POST, &own, Some(json!({}))).await;
    assert_eq!(
        (status, &v),
        (410, &json!({"status": "closed", "reason": "killed"}))
    );
    s.stop().await;
}

#[tokio::test]
async fn another_sites_page_cannot_change_it() {
    let s = server().await;
    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let cookie = format!("SESSION={}", token(&opened));
    let json_ct = ("content-type", "application/json");
    let short = json!({"active": true, "interval_s": 1});
    for site in [
        vec![("sec-fetch-site", "cross-site")],
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "http://other.shop.test:8080"),
        ],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        let mut headers = vec![("cookie", cookie.as_str()), json_ct];
        headers.extend(site.iter().copied());
        for method in [Method::PUT, Method::POST] {
            let (status, h, v) = send(&s, method, &headers, Some(short.clone())).await;
            assert_error(status, &v, 403, "cross_site_request");
            assert!(h.get("access-control-allow-origin").is_none());
        }
    }
    assert!(
        session(&s, &opened).await["heartbeat"].is_null(),
        "nothing was written"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_with_credentials_and_no_other_does() {
    let s = server().await;
    // The preflight.
    let preflight = |origin: &'static str, method: &'static str| {
        s.req(Method::OPTIONS, ENDPOINT, None)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight(ALLOWED, "PUT").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["access-control-allow-methods"], "POST, PUT");
    for (origin, method) in [("http://evil.example", "PUT"), (ALLOWED, "DELETE")] {
        let r = preflight(origin, method).await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }

    // The request itself, from a page of the allowed origin (same site, another origin).
    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let cookie = format!("SESSION={}", token(&opened));
    let (status, h, v) = send(
        &s,
        Method::PUT,
        &[
            ("cookie", cookie.as_str()),
            ("content-type", "application/json"),
            ("sec-fetch-site", "same-site"),
            ("origin", "HTTP://Pages.Shop.Test:8080"),
        ],
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(h["access-control-allow-origin"], ALLOWED);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h.get_all("vary").iter().any(|v| v == "Origin"));
    assert_eq!(session(&s, &opened).await["heartbeat"]["active"], true);
    s.stop().await;
}

#[tokio::test]
async fn bind_ip_holds_for_the_heartbeat() {
    let s = server().await;
    // Opened for 203.0.113.7; the trusted proxy (127.0.0.1) forwards another client.
    let opened = s
        .open(
            "shop",
            SHOP_KEY,
            json!({"user": "ann", "client": {"ip": "203.0.113.7"}}),
        )
        .await;
    let cookie = format!("SESSION={}", token(&opened));
    let json_ct = ("content-type", "application/json");
    let (status, _, v) = send(
        &s,
        Method::POST,
        &[
            ("cookie", cookie.as_str()),
            json_ct,
            ("x-forwarded-for", "198.51.100.1"),
        ],
        Some(json!({})),
    )
    .await;
    assert_error(status, &v, 400, "ip_mismatch");
    let (status, _, v) = send(
        &s,
        Method::POST,
        &[
            ("cookie", cookie.as_str()),
            json_ct,
            ("x-forwarded-for", "203.0.113.7"),
        ],
        Some(json!({})),
    )
    .await;
    assert_eq!((status, v["status"].as_str()), (200, Some("open")));
    s.stop().await;
}
