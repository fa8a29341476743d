//! Client addresses: `bind_ip` (4D: another address gets 400, the session is left
//! intact) and `X-Forwarded-For` from trusted proxies only.

use axum::http::{Method, StatusCode};
use sessiond_axum::SessionLayer;
use sessiond_core::Policy;

use crate::common::*;

#[tokio::test]
async fn bind_ip_refuses_another_address_with_400_and_leaves_the_session_intact() {
    let (m, _dir) = file_manager(Policy {
        bind_ip: true,
        ..Default::default()
    });
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    let r = call(Method::POST, "/set/a/1")
        .peer([10, 0, 0, 1])
        .send(&app)
        .await;
    let pair = r.cookie_pair();
    let id = id_of(&app, &pair).await;
    assert!(
        id.is_none(),
        "127.0.0.1 is not the session's address either"
    );
    let before = call(Method::GET, "/whoami")
        .cookie(&pair)
        .peer([10, 0, 0, 1])
        .send(&app)
        .await;
    let id = before.json()["id"].as_str().unwrap().parse().unwrap();
    let version = m.get(id).await.unwrap().version;

    for (method, path) in [
        (Method::GET, "/get/a"),
        (Method::POST, "/set/a/2"),
        (Method::GET, "/ignore-error"),
        (Method::POST, "/logout"),
    ] {
        let r = call(method, path)
            .cookie(&pair)
            .peer([10, 0, 0, 2])
            .send(&app)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "ip_mismatch");
        assert!(r.set_cookies().is_empty(), "{path}: no cookie change");
    }
    let s = m.get(id).await.unwrap();
    assert!(s.is_open());
    assert_eq!(s.version, version);
    assert_eq!(s.data.get("a"), Some(serde_json::json!("1")));

    let r = call(Method::GET, "/get/a")
        .cookie(&pair)
        .peer([10, 0, 0, 1])
        .send(&app)
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "\"1\""));
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let m = memory_manager(Policy::default());
    let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let inner: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let behind_two = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_trusted_proxies([proxy, inner]),
    );
    let behind_one = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_trusted_proxies([proxy]),
    );
    let direct = routes(SessionLayer::new(m.clone(), APP).unwrap());

    // The hops are read from the right, up to the first one no trusted proxy wrote:
    // behind one proxy, 10.0.0.1 is the client, and whatever it put to its left (here
    // 203.0.113.9) is its own claim.
    for (app, want) in [
        (&behind_two, "203.0.113.9"),
        (&behind_one, "10.0.0.1"),
        (&direct, "127.0.0.1"),
    ] {
        let r = call(Method::POST, "/set/a/1")
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
            .send(app)
            .await;
        let id = id_of(app, &r.cookie_pair()).await.unwrap();
        let ip = m.get(id).await.unwrap().client.ip.unwrap();
        assert_eq!(ip.to_string(), want);
    }
}

/// A client's bytes that are not text, in the part of the line a proxy appends to
/// (nginx's `$proxy_add_x_forwarded_for`), do not make the client look like the proxy.
#[tokio::test]
async fn a_forwarded_line_with_bytes_that_are_not_text_still_names_the_client() {
    let m = memory_manager(Policy::default());
    let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let app = routes(
        SessionLayer::new(m.clone(), APP)
            .unwrap()
            .with_trusted_proxies([proxy]),
    );
    let r = call(Method::POST, "/set/a/1")
        .header_bytes("x-forwarded-for", b"\x80\xfe, 198.51.100.2")
        .send(&app)
        .await;
    let id = id_of(&app, &r.cookie_pair()).await.unwrap();
    let ip = m.get(id).await.unwrap().client.ip.unwrap();
    assert_eq!(ip.to_string(), "198.51.100.2");
}
