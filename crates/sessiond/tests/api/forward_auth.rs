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
    // Redirects are the answer under test, never followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = http.get(format!("{}{PATH}{query}", s.base));
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

/// A memory server whose shop answers forward-auth under its own header names.
async fn renamed() -> Server {
    let mut config = crate::common::config(None);
    config.apps.get_mut("shop").unwrap().web = sessiond::web::WebConfig::from_toml(
        "shop",
        toml::from_str(
            r#"
            session_header = "X-Session-Id"
            user_header = "Remote-User"
            privileges_header = "Remote-Groups"
            guest_header = "X-Anonymous"
            "#,
        )
        .unwrap(),
    )
    .unwrap();
    Server::start(config).await
}

#[tokio::test]
async fn an_app_may_name_the_headers_itself() {
    let s = renamed().await;
    let opened = s
        .open(
            "shop",
            SHOP_KEY,
            json!({"user": "ann", "privileges": ["sales"]}),
        )
        .await;
    let cookie = format!("SESSION={}", token(&opened));
    let (status, h, _) = check(&s, "", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-session-id"), Some(id(&opened).as_str()));
    assert_eq!(header(&h, "remote-user"), Some("ann"));
    assert_eq!(header(&h, "remote-groups"), Some("sales"));
    assert_eq!(header(&h, "x-anonymous"), Some("false"));
    for default in [
        "x-sessiond-session",
        "x-sessiond-user",
        "x-sessiond-privileges",
    ] {
        assert!(h.get(default).is_none(), "{default} is not sent");
    }
    // Another app keeps the defaults.
    let desk = s
        .open("desk", crate::common::DESK_KEY, json!({"user": "bob"}))
        .await;
    let r = s
        .req(Method::GET, "/v1/apps/desk/forward-auth", None)
        .header("cookie", format!("SESSION={}", token(&desk)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-sessiond-user"), Some("bob"));
    s.stop().await;
}

#[tokio::test]
async fn with_login_a_page_navigation_is_sent_to_the_sign_in_page() {
    let s = Server::memory().await;
    let navigate = [
        ("sec-fetch-mode", "navigate"),
        ("x-forwarded-uri", "/orders?page=2"),
    ];
    let (status, h, _) = check(&s, "?login=/login", &navigate).await;
    assert_eq!(status, 302);
    assert_eq!(
        header(&h, "location"),
        Some("/login?next=/orders%3Fpage%3D2")
    );

    // On the site's own host when the (trusted) proxy names it: Traefik would resolve a
    // relative address against sessiond's.
    let (_, h, _) = check(
        &s,
        "?login=/login",
        &[
            navigate[0],
            ("x-forwarded-host", "shop.example:8443"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        header(&h, "location"),
        Some("https://shop.example:8443/login")
    );
    for bad in ["evil.example/x", "a b", ""] {
        let (_, h, _) = check(
            &s,
            "?login=/login",
            &[navigate[0], ("x-forwarded-host", bad)],
        )
        .await;
        assert_eq!(header(&h, "location"), Some("/login"), "{bad:?}");
    }

    // A login page with its own query, and a proxy that names no page.
    let (status, h, _) = check(
        &s,
        "?login=/signin%3Fapp%3Dshop",
        &[("sec-fetch-mode", "navigate")],
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(header(&h, "location"), Some("/signin?app=shop"));

    // A browser without Sec-Fetch-Mode: a GET accepting HTML is a navigation, a POST is
    // not (the proxy says the method).
    let html = ("accept", "text/html,application/xhtml+xml");
    assert_eq!(check(&s, "?login=/login", &[html]).await.0, 302);
    let (status, _, body) =
        check(&s, "?login=/login", &[html, ("x-forwarded-method", "POST")]).await;
    assert_error(status, &body, 401, "invalid_token");

    // A script's fetch needs the 401, as does a page that is not the browser's own.
    let (status, _, body) = check(&s, "?login=/login", &[("sec-fetch-mode", "cors")]).await;
    assert_error(status, &body, 401, "invalid_token");

    // A dead cookie is cleared on the way to the sign-in page.
    let opened = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    s.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", id(&opened)),
        Some(SHOP_KEY),
        None,
    )
    .await;
    let cookie = format!("SESSION={}", token(&opened));
    let (status, h, _) = check(&s, "?login=/login", &[("cookie", &cookie), navigate[0]]).await;
    assert_eq!(status, 302);
    assert!(header(&h, "set-cookie").is_some_and(|c| c.starts_with("SESSION=;")));

    // A live session goes through; a missing privilege is still 403, not a redirect.
    let live = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let cookie = format!("SESSION={}", token(&live));
    assert_eq!(
        check(&s, "?login=/login", &[("cookie", &cookie), navigate[0]])
            .await
            .0,
        200
    );
    let (status, _, body) = check(
        &s,
        "?login=/login&privilege=WebAdmin",
        &[("cookie", &cookie), navigate[0]],
    )
    .await;
    assert_error(status, &body, 403, "privilege_required");
    s.stop().await;
}

#[tokio::test]
async fn login_must_be_a_path_of_the_site_and_given_once() {
    let s = Server::memory().await;
    // A next= that is not a local path is left out, never echoed.
    let (status, h, _) = check(
        &s,
        "?login=/login",
        &[
            ("sec-fetch-mode", "navigate"),
            ("x-forwarded-uri", "//evil.example/"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(header(&h, "location"), Some("/login"));
    for bad in [
        "?login=https://evil.example/",
        "?login=//evil.example",
        "?login=/%5Cevil.example",
        "?login=login",
        "?login=/a%0d%0aSet-Cookie:%20x=1",
        "?login=/login&login=/other",
    ] {
        let (status, _, body) = check(&s, bad, &[("sec-fetch-mode", "navigate")]).await;
        assert_error(status, &body, 400, "invalid_query");
    }
    s.stop().await;
}

#[tokio::test]
async fn only_a_trusted_proxy_names_the_site_of_the_sign_in_page() {
    let mut config = crate::common::config(None);
    config.trusted_proxies.clear();
    let s = Server::start(config).await;
    let (status, h, _) = check(
        &s,
        "?login=/login",
        &[
            ("sec-fetch-mode", "navigate"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(header(&h, "location"), Some("/login"));
    s.stop().await;
}
