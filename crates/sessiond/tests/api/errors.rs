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
        (Method::GET, "/v1/apps/shop".to_string()),
        (Method::GET, "/v1/apps/shop/sessions".to_string()),
    ] {
        let (st, v) = s.call(m, &path, Some(DESK_KEY), None).await;
        assert_error(st, &v, 403, "forbidden");
    }
    // Another app's session is not there for this key (see below).
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", id(&shop)),
            Some(DESK_KEY),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
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

#[tokio::test]
async fn close_all_reads_its_optional_body_like_every_other() {
    let s = Server::memory().await;
    let keep = s.open("shop", SHOP_KEY, json!({})).await;
    let path = "/v1/apps/shop/sessions/close-all";
    let body = format!(r#"{{"except": ["{}"]}}"#, id(&keep));
    // A body that is not sent as JSON is refused, and closes nothing.
    for ctype in [None, Some("text/plain")] {
        let mut r = s.req(Method::POST, path, Some(SHOP_KEY)).body(body.clone());
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        assert_error(
            st,
            &resp.json().await.unwrap(),
            415,
            "unsupported_media_type",
        );
    }
    let (_, v) = s
        .call(Method::GET, "/v1/apps/shop", Some(SHOP_KEY), None)
        .await;
    assert_eq!(v["open"], json!(1), "nothing was closed");
    // Over the body limit: the JSON 413 of every endpoint.
    let big = format!(r#"{{"except": ["{}"]}}"#, "x".repeat(8000));
    let resp = s
        .req(Method::POST, path, Some(SHOP_KEY))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    assert_error(st, &resp.json().await.unwrap(), 413, "payload_too_large");
    // As JSON (with a media type parameter) it works; an empty body needs no type.
    let resp = s
        .req(Method::POST, path, Some(SHOP_KEY))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.open("shop", SHOP_KEY, json!({})).await;
    let resp = s
        .req(Method::POST, path, Some(SHOP_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"closed": 2}));
    s.stop().await;
}

/// A request that declares a body over the limit is answered at once, before the body.
#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::memory().await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/apps/shop/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {SHOP_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The server's request timeout is 30 s; the answer must not wait for it.
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&answer).contains("payload_too_large") {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer before the body: {text}");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""error":"payload_too_large""#), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn bad_query_values_are_invalid_query() {
    let s = Server::memory().await;
    for q in [
        "status=bogus",
        "order=sideways",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "after=garbage",
        "colour=red",
    ] {
        let (st, v) = s
            .call(
                Method::GET,
                &format!("/v1/apps/shop/sessions?{q}"),
                Some(SHOP_KEY),
                None,
            )
            .await;
        assert_error(st, &v, 400, "invalid_query");
    }
    s.stop().await;
}

/// Messages name what they refuse without echoing a huge input, nor internal names.
#[tokio::test]
async fn error_messages_stay_short_and_speak_of_the_api() {
    let s = Server::memory().await;
    let long = "x".repeat(5000);
    for path in [
        format!("/v1/sessions/{long}"),
        format!("/v1/apps/{long}/sessions"),
    ] {
        let (st, v) = s.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(st, 404, "{v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.len() < 200, "{m}");
        assert!(m.contains("5000 bytes"), "{m}");
    }
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(json!([])),
        )
        .await;
    assert_error(st, &v, 422, "invalid_body");
    let m = v["message"].as_str().unwrap();
    assert!(m.contains("expected a JSON object"), "{m}");
    assert!(!m.contains("OpenBody"), "{m}");
    s.stop().await;
}

/// A parser's message quotes the offending key or value; the answer cuts it (a whole
/// request body used to come back in one message).
#[tokio::test]
async fn parser_messages_are_cut() {
    let s = Server::memory().await;
    let t = token(&s.open("shop", SHOP_KEY, json!({})).await);
    let long = "k".repeat(3000);
    let cases = [
        // A syntax error after a long key: the path to it names the key.
        (
            Method::PATCH,
            "/v1/session/data",
            t.as_str(),
            format!("{{\"{long}\": x"),
            "invalid_json",
            400,
        ),
        // An unknown field, and a value of the wrong type, quoted by serde.
        (
            Method::POST,
            "/v1/apps/shop/sessions",
            SHOP_KEY,
            format!("{{\"{long}\": 1}}"),
            "invalid_body",
            422,
        ),
        (
            Method::POST,
            "/v1/apps/shop/sessions",
            SHOP_KEY,
            format!("{{\"privileges\": \"{long}\"}}"),
            "invalid_body",
            422,
        ),
    ];
    for (m, path, secret, body, code, status) in cases {
        let resp = s
            .req(m, path, Some(secret))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = resp.status().as_u16();
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_error(st, &v, status, code);
        let msg = v["message"].as_str().unwrap();
        assert!(msg.len() < 300, "{} bytes: {msg}", msg.len());
        assert!(msg.contains("bytes)"), "says it was cut: {msg}");
    }
    // An app name in a refusal is quoted short too.
    let (st, v) = s
        .call(
            Method::GET,
            &format!("/v1/apps/{long}"),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    assert!(v["message"].as_str().unwrap().len() < 300, "{v}");
    s.stop().await;
}

/// Another app's session id answers exactly like an unknown id on every
/// `/v1/sessions/{id}` route: same status, same body but the id. (It was 403 against
/// 404, telling an app key which ids exist in other apps.)
#[tokio::test]
async fn another_apps_session_is_answered_like_an_unknown_one() {
    let s = Server::memory().await;
    let shop = s.open("shop", SHOP_KEY, json!({})).await;
    let theirs = id(&shop);
    let unknown = "0192f0c1-7a3b-7cde-8f01-23456789abcd";
    let privileges = json!({"privileges": ["x"]});
    for (m, suffix, body) in [
        (Method::GET, "", None),
        (Method::DELETE, "", None),
        (Method::PUT, "/privileges", Some(privileges)),
    ] {
        let mut answers = Vec::new();
        for target in [theirs.as_str(), unknown] {
            let path = format!("/v1/sessions/{target}{suffix}");
            let (st, v) = s.call(m.clone(), &path, Some(DESK_KEY), body.clone()).await;
            assert_error(st, &v, 404, "not_found");
            let text = v.to_string().replace(target, "<id>");
            answers.push((st, text));
        }
        assert_eq!(answers[0], answers[1], "{m} {suffix}");
    }
    // Nothing happened to it.
    let (st, v) = s
        .call(Method::GET, "/v1/session", Some(&token(&shop)), None)
        .await;
    assert_eq!((st, v["privileges"].clone()), (200, json!([])), "{v}");
    s.stop().await;
}

/// Storage and info at the JSON limits are accepted and read back; one level or one
/// key byte more is 400 naming the limit, and nothing changes.
#[tokio::test]
async fn json_at_its_limits_and_one_past_them() {
    let s = Server::memory().await;
    let limit = sessiond_core::Limits::MAX_JSON_DEPTH;
    let nested = |levels: usize| {
        let mut v = json!(1);
        for _ in 1..levels {
            v = json!([v]);
        }
        json!({ "d": v })
    };
    let o = s
        .open(
            "shop",
            SHOP_KEY,
            json!({"data": nested(limit), "info": nested(limit)}),
        )
        .await;
    let t = token(&o);
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
    assert_eq!((st, &v["data"]), (200, &nested(limit)));

    let (st, v) = s
        .call(
            Method::PATCH,
            "/v1/session/data",
            Some(&t),
            Some(json!({"e": nested(limit)})),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    assert!(
        v["message"].as_str().unwrap().contains("max_json_depth"),
        "{v}"
    );
    let long = "k".repeat(sessiond_core::Limits::MAX_JSON_KEY_BYTES + 1);
    let (st, v) = s
        .call(
            Method::PATCH,
            "/v1/session/data",
            Some(&t),
            Some(json!({ long: 1 })),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("max_json_key_bytes"),
        "{v}"
    );
    let st = s
        .req(Method::POST, "/v1/apps/shop/sessions", Some(SHOP_KEY))
        .json(&json!({"info": nested(limit + 1)}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(st, 400);
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
    assert_eq!(
        (st, &v["data"], &v["version"]),
        (200, &nested(limit), &json!(1))
    );
}
