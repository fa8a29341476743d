//! Forward-auth (`GET /v1/apps/{app}/forward-auth`) through the real server: what a
//! reverse proxy learns from the browser's cookie or a bearer token, and what it is told
//! to do with a dead cookie. The end-to-end run behind a real nginx is
//! `tests/proxy/run.sh`.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, id, token, Server, SHOP_KEY};

const PATH: &str = "/v1/apps/shop/forward-auth";

/// (status, the headers, the JSON body or Null) of a forward-auth check.
async fn check(
    s: &Server,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut r = s.req(Method::GET, &format!("{PATH}{query}"), None);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, h, body)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_live_cookie_names_the_session_user_and_privileges_for_the_upstream() {
    let s = Server::memory().await;
    let opened = s
        .open(
            "shop",
            SHOP_KEY,
            json!({"user": "ann", "privileges": ["sales", "WebAdmin"]}),
        )
        .await;
    let cookie = format!("SESSION={}", token(&opened));
    let (status, h, _) = check(&s, "", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-sessiond-session"), Some(id(&opened).as_str()));
    assert_eq!(header(&h, "x-sessiond-user"), Some("ann"));
    assert_eq!(header(&h, "x-sessiond-privileges"), Some("WebAdmin,sales"));
    assert_eq!(header(&h, "x-sessiond-guest"), Some("false"));
    assert!(h.get("set-cookie").is_none());

    // The __Host- form, and a bearer token, name the same session.
    let host = format!("__Host-SESSION={}", token(&opened));
    assert_eq!(check(&s, "", &[("cookie", &host)]).await.0, 200);
    let bearer = format!("Bearer {}", token(&opened));
    assert_eq!(check(&s, "", &[("authorization", &bearer)]).await.0, 200);

    // A guest: the user header is there, empty (a proxy copying a missing header could
    // pass the client's own on).
    let guest = s.open("shop", SHOP_KEY, json!({})).await;
    let (status, h, _) = check(&s, "", &[("cookie", &format!("SESSION={}", token(&guest)))]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-sessiond-user"), Some(""));
    assert_eq!(header(&h, "x-sessiond-guest"), Some("true"));

    // A page's own query is not the check's business; a lower-case scheme is a bearer.
    assert_eq!(
        check(&s, "?page=2&sort=x", &[("cookie", &cookie)]).await.0,
        200
    );
    let lower = format!("bearer {}", token(&opened));
    assert_eq!(check(&s, "", &[("authorization", &lower)]).await.0, 200);

    // Over HTTPS (the trusted proxy says so), only the __Host- cookie counts: a plain one
    // may have been planted by a sibling subdomain.
    let https = [("x-forwarded-proto", "https"), ("cookie", cookie.as_str())];
    assert_eq!(check(&s, "", &https).await.0, 401);
    let https = [("x-forwarded-proto", "https"), ("cookie", host.as_str())];
    assert_eq!(check(&s, "", &https).await.0, 200);

    // A required privilege.
    assert_eq!(
        check(&s, "?privilege=sales", &[("cookie", &cookie)])
            .await
            .0,
        200
    );
    let (status, _, body) = check(&s, "?privilege=billing", &[("cookie", &cookie)]).await;
    assert_error(status, &body, 403, "privilege_required");
    s.stop().await;
}

#[tokio::test]
async fn no_or_a_dead_cookie_is_401_and_a_dead_one_is_cleared() {
    let s = Server::memory().await;
    let (status, h, body) = check(&s, "", &[]).await;
    assert_error(status, &body, 401, "invalid_token");
    assert!(h.get("set-cookie").is_none(), "nothing to clear");

    let opened = s.open("shop", SHOP_KEY, json!({"user": "bob"})).await;
    let cookie = format!("SESSION={}", token(&opened));
    assert_eq!(check(&s, "", &[("cookie", &cookie)]).await.0, 200);
    let (killed, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", id(&opened)),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(killed, 200);
    let (status, h, body) = check(&s, "", &[("cookie", &cookie)]).await;
    assert_error(status, &body, 401, "invalid_token");
    let clear = header(&h, "set-cookie").expect("the dead cookie is cleared");
    assert!(
        clear.starts_with("SESSION=; Path=/;") && clear.contains("Max-Age=0"),
        "{clear}"
    );
    let host = format!("__Host-SESSION={}", token(&opened));
    let (_, h, _) = check(&s, "", &[("cookie", &host)]).await;
    let clear = header(&h, "set-cookie").unwrap();
    assert!(
        clear.starts_with("__Host-SESSION=;") && clear.contains("; Secure"),
        "{clear}"
    );

    // A token that is nothing: refused, and cleared when it carries this app's prefix;
    // another app's (same cookie name, same host) is left alone.
    let (status, h, _) = check(&s, "", &[("cookie", "SESSION=shop:0123")]).await;
    assert_eq!(status, 401);
    assert!(header(&h, "set-cookie").is_some());
    let (status, h, _) = check(&s, "", &[("cookie", "SESSION=desk:0123")]).await;
    assert_eq!(status, 401);
    assert!(header(&h, "set-cookie").is_none(), "not this app's cookie");
    // Two cookies of the name (one planted): refused.
    let live = s.open("shop", SHOP_KEY, json!({"user": "cid"})).await;
    let two = format!("SESSION={}; SESSION={}", token(&live), token(&opened));
    assert_eq!(check(&s, "", &[("cookie", &two)]).await.0, 401);
    s.stop().await;
}

#[tokio::test]
async fn bind_ip_uses_the_address_the_trusted_proxy_forwarded() {
    let s = Server::memory().await;
    // shop binds sessions to their address; 127.0.0.1 is a trusted proxy.
    let opened = s
        .open(
            "shop",
            SHOP_KEY,
            json!({"user": "dan", "client": {"ip": "198.51.100.7"}}),
        )
        .await;
    let cookie = format!("SESSION={}", token(&opened));
    let from = |ip: &'static str| {
        [
            ("cookie", cookie.clone()),
            ("x-forwarded-for", ip.to_string()),
        ]
    };
    let call = |h: [(&'static str, String); 2]| {
        let s = &s;
        async move {
            let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            check(s, "", &hs).await
        }
    };
    assert_eq!(call(from("198.51.100.7")).await.0, 200);
    let (status, _, body) = call(from("203.0.113.9")).await;
    assert_error(status, &body, 403, "ip_mismatch");
    // The session is intact for its own address.
    assert_eq!(call(from("198.51.100.7")).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_app_is_404() {
    let s = Server::memory().await;
    let r = s
        .req(Method::GET, "/v1/apps/nope/forward-auth", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = s
        .req(Method::GET, "/v1/apps/@console/forward-auth", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "the console's own app is not one");
    s.stop().await;
}
