//! Hostile clients: slow bodies, forged proxy headers, guessed console tokens, too many
//! connections, streams or header bytes, and event streams that outlive their token.
//! Each test states the bound it checks; none depends on how fast the machine is
//! beyond a generous wait for an answer that must come.

use std::time::Duration;

use reqwest::{header, Method};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Reads what the server answers on `conn` until `until` appears or the connection
/// closes; None when nothing complete came within 10 s.
async fn read_until(conn: &mut TcpStream, until: &str) -> Option<String> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&answer).contains(until) {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// The console sits behind the API's layers: a body that never finishes is cut at the
/// request timeout (it used to hold the connection forever), a declared oversize body
/// gets 413 at once, and every answer is `no-store`.
#[tokio::test]
async fn the_console_has_the_apis_protections() {
    let mut c = config(None);
    c.request_timeout_s = 1;
    let s = Server::start(c).await;
    let a = addr(&s);
    let mut conn = TcpStream::connect(&a).await.unwrap();
    let head = format!(
        "POST /admin/login HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 100\r\n\r\ntoken=abc"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let text = read_until(&mut conn, "\"timeout\"")
        .await
        .expect("the slow sign-in is answered at the request timeout");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");

    let mut conn = TcpStream::connect(&a).await.unwrap();
    let head = format!(
        "POST /admin/login HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 99999999\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let text = read_until(&mut conn, "payload_too_large").await.unwrap();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    for path in ["/admin", "/admin/whoami", "/admin/assets/console.js"] {
        let resp = s.req(Method::GET, path, None).send().await.unwrap();
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store", "{path}");
    }
    // A malformed sign-in form is a JSON error, its message cut.
    let resp = s
        .req(Method::POST, "/admin/login", None)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("{}=1", "x".repeat(3000)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().len() < 300, "{v}");
    s.stop().await;
}

async fn sign_in(s: &Server, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = client
        .post(format!("{}/admin/login", s.base))
        .form(&[("token", token)]);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn secure(resp: &reqwest::Response) -> bool {
    assert_eq!(resp.status(), 303);
    let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').any(|a| a.trim() == "Secure")
}

/// The console cookie is `Secure` when the browser came over HTTPS, as a trusted
/// proxy says in the rightmost `X-Forwarded-Proto`; nobody else is believed.
#[tokio::test]
async fn the_console_cookie_is_secure_behind_an_https_proxy() {
    // The test config trusts 127.0.0.1, the test's own address.
    let s = Server::memory().await;
    assert!(secure(
        &sign_in(&s, ADMIN, &[("x-forwarded-proto", "https")]).await
    ));
    assert!(secure(
        &sign_in(&s, ADMIN, &[("x-forwarded-proto", "http, https")]).await
    ));
    assert!(!secure(&sign_in(&s, ADMIN, &[]).await));
    assert!(
        !secure(&sign_in(&s, ADMIN, &[("x-forwarded-proto", "https, http")]).await),
        "the first value is the client's"
    );
    s.stop().await;
    let mut c = config(None);
    c.trusted_proxies.clear();
    let s = Server::start(c).await;
    assert!(
        !secure(&sign_in(&s, ADMIN, &[("x-forwarded-proto", "https")]).await),
        "from a peer that is no trusted proxy, the header is not believed"
    );
    s.stop().await;
}

/// Failed console sign-ins are throttled per client address (read behind trusted
/// proxies like every client address).
#[tokio::test]
async fn console_sign_in_is_throttled_per_address() {
    let mut c = config(None);
    c.console_login_attempts_per_minute = 3;
    let s = Server::start(c).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..3 {
        let r = sign_in(&s, "guess-0123456789abcdef", &from("198.51.100.7")).await;
        assert_eq!(r.status(), 401);
    }
    let r = sign_in(&s, ADMIN, &from("198.51.100.7")).await;
    assert_eq!(r.status(), 429, "even the right token waits out the minute");
    assert_eq!(r.headers()[header::RETRY_AFTER], "60");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], json!("too_many_attempts"));
    let r = sign_in(&s, ADMIN, &from("198.51.100.8")).await;
    assert_eq!(r.status(), 303, "another address is not held back");
    s.stop().await;
}

/// Over `max_connections`, a new connection is answered 503 and closed; when one
/// closes, connections are served again.
#[tokio::test]
async fn connections_are_bounded() {
    let mut c = config(None);
    c.max_connections = 2;
    let s = Server::start(c).await;
    let a = addr(&s);
    // A connection that is served holds a place until it closes. (Retried: the start-up
    // probe's connection may not be closed yet.)
    let held = || async {
        for _ in 0..100 {
            let mut conn = TcpStream::connect(&a).await.unwrap();
            let get = format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\n\r\n");
            conn.write_all(get.as_bytes()).await.unwrap();
            if read_until(&mut conn, "\"ok\"")
                .await
                .is_some_and(|t| t.starts_with("HTTP/1.1 200"))
            {
                return conn;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no connection was served");
    };
    let first = held().await;
    let second = held().await;
    let mut third = TcpStream::connect(&a).await.unwrap();
    let text = read_until(&mut third, "too_many_connections")
        .await
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    drop(first);
    drop(second);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(r) = s.http.get(format!("{}/healthz", s.base)).send().await {
            if r.status() == 200 {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "served again once connections closed");
    s.stop().await;
}

/// A request head over `max_header_bytes` is refused with 431.
#[tokio::test]
async fn request_heads_are_bounded() {
    let s = Server::memory().await;
    let resp = s
        .req(Method::GET, "/healthz", None)
        .header("x-junk", "j".repeat(32 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    s.stop().await;
}

/// Event streams are counted per session, per app and in all.
#[tokio::test]
async fn event_streams_are_bounded() {
    let mut c = config(None);
    c.max_streams_per_session = 2;
    c.max_streams_per_app = 3;
    c.max_streams = 4;
    let s = Server::start(c).await;
    let open = |secret: String, path: &'static str| {
        let r = s.req(Method::GET, path, Some(&secret));
        async move { r.send().await.unwrap() }
    };
    let t = token(&s.open("shop", SHOP_KEY, json!({})).await);
    let a = open(t.clone(), "/v1/session/events").await;
    let b = open(t.clone(), "/v1/session/events").await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let refused = open(t.clone(), "/v1/session/events").await;
    assert_eq!(refused.status(), 429);
    let v: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(v["error"], json!("too_many_streams"));
    assert!(
        v["message"].as_str().unwrap().contains("this session"),
        "{v}"
    );
    let c3 = open(SHOP_KEY.to_string(), "/v1/apps/shop/events").await;
    assert_eq!(c3.status(), 200);
    let refused = open(SHOP_KEY.to_string(), "/v1/apps/shop/events").await;
    assert_eq!(refused.status(), 429, "shop has 3 streams");
    let d = open(DESK_KEY.to_string(), "/v1/apps/desk/events").await;
    assert_eq!(d.status(), 200);
    let refused = open(DESK_KEY.to_string(), "/v1/apps/desk/events").await;
    assert_eq!(refused.status(), 429, "4 streams in all");
    let v: serde_json::Value = refused.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("this server"),
        "{v}"
    );
    // A stream whose client goes gives its place back.
    drop(a);
    let mut again = None;
    for _ in 0..100 {
        let r = open(t.clone(), "/v1/session/events").await;
        if r.status() == 200 {
            again = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the place came back");
    drop((b, c3, d));
    s.stop().await;
}

/// Reads a stream to its end; answers its frames as (event, data). Fails if it does not
/// end within 10 s.
async fn read_to_end(mut resp: reqwest::Response) -> Vec<(String, String)> {
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end: {text}");
    text.split("\n\n")
        .filter_map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            Some((field("event:")?, field("data:").unwrap_or_default()))
        })
        .collect()
}

/// A session's stream lives as long as the token that opened it: rotated by a
/// privilege change, the stream says so and ends (it used to run on forever).
#[tokio::test]
async fn a_session_stream_ends_when_its_token_is_rotated() {
    let s = Server::memory().await;
    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let stream = s
        .req(Method::GET, "/v1/session/events", Some(&token(&opened)))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/sessions/{}/privileges", id(&opened)),
            Some(SHOP_KEY),
            Some(json!({"privileges": ["admin"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let frames = read_to_end(stream).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].0, "privileges_changed");
    let data: serde_json::Value = serde_json::from_str(&frames[0].1).unwrap();
    assert_eq!(data["id"], opened["id"]);
    // The new token's stream ends on a close, with `closed`.
    let stream = s
        .req(Method::GET, "/v1/session/events", Some(&token(&v)))
        .send()
        .await
        .unwrap();
    s.call(Method::DELETE, "/v1/session", Some(&token(&v)), None)
        .await;
    let frames = read_to_end(stream).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].0, "closed");
    s.stop().await;
}
