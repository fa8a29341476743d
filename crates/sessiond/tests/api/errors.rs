//! Bad input gets a clear JSON error and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn malformed_and_mistyped_bodies() {
    let s = Server::memory().await;
    let send = |body: &'static str, ctype: Option<&'static str>| {
        let mut r = s
            .req(Method::POST, "/v1/apps/shop/sessions", Some(SHOP_KEY))
            .body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        async move {
            let resp = r.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (st, v) = send("{\"user\": ", Some("application/json")).await;
    assert_error(st, &v, 400, "invalid_json");
    let (st, v) = send("{\"user\": 5}", Some("application/json")).await;
    assert_error(st, &v, 422, "invalid_body");
    let (st, v) = send("{\"usr\": \"a\"}", Some("application/json")).await;
    assert_error(st, &v, 422, "invalid_body");
    let (st, v) = send("{}", None).await;
    assert_error(st, &v, 415, "unsupported_media_type");
    let (st, v) = send("{\"data\": [1]}", Some("application/json")).await;
    assert_error(st, &v, 422, "invalid_body");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(json!({"user": ""})),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(json!({"heartbeat": {"interval_s": 0}})),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(json!({"client": {"ip": "nope"}})),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    let (_, v) = s
        .call(Method::GET, "/v1/apps/shop", Some(SHOP_KEY), None)
        .await;
    assert_eq!(v["open"], json!(0), "nothing was opened by bad requests");
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s = Server::memory().await;
    let big = json!({"data": {"x": "y".repeat(8000)}});
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(big),
        )
        .await;
    assert_error(st, &v, 413, "payload_too_large");
    let t = token(&s.open("shop", SHOP_KEY, json!({})).await);
    let (st, v) = s
        .call(
            Method::PATCH,
            "/v1/session/data",
            Some(&t),
            Some(json!({"x": "y".repeat(8000)})),
        )
        .await;
    assert_error(st, &v, 413, "payload_too_large");
    s.stop().await;
}

#[tokio::test]
async fn credentials_are_checked_per_app() {
    let s = Server::memory().await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            None,
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some("wrong-key-0123456789"),
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(DESK_KEY),
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let shop = s.open("shop", SHOP_KEY, json!({})).await;
    for (m, path) in [
        (Method::GET, format!("/v1/sessions/{}", id(&shop))),
        (Method::DELETE, format!("/v1/sessions/{}", id(&shop))),
        (Method::GET, "/v1/apps/shop".to_string()),
        (Method::GET, "/v1/apps/shop/sessions".to_string()),
    ] {
        let (st, v) = s.call(m, &path, Some(DESK_KEY), None).await;
        assert_error(st, &v, 403, "forbidden");
    }
    // A session token is not an operator credential.
    let (st, v) = s
        .call(Method::GET, "/v1/apps/shop", Some(&token(&shop)), None)
        .await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s
        .call(Method::GET, "/v1/session", Some(&token(&shop)), None)
        .await;
    assert_eq!(
        (st, v["status"].clone()),
        (200, json!("open")),
        "still open after the refused kill"
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_things_are_404_and_wrong_methods_405() {
    let s = Server::memory().await;
    let (st, v) = s.call(Method::GET, "/v1/nope", None, None).await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s.call(Method::PUT, "/v1/session", Some("x"), None).await;
    assert_error(st, &v, 405, "method_not_allowed");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/nope/sessions",
            Some(ADMIN),
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 404, "unknown_app");
    let (st, v) = s
        .call(Method::GET, "/v1/sessions/not-an-id", Some(ADMIN), None)
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .call(
            Method::GET,
            "/v1/sessions/0192f0c1-7a3b-7cde-8f01-23456789abcd",
            Some(ADMIN),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    s.stop().await;
}
