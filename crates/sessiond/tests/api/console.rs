//! The admin console's server side: sign-in cookie, the proxy, CSRF refusals, sign-out.
//! (The pages themselves are driven in a real browser by tests/console.)

use reqwest::header;
use reqwest::redirect::Policy;
use serde_json::{json, Value};

use crate::common::*;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(s: &Server, token: &str) -> reqwest::Response {
    browser()
        .post(format!("{}/admin/login", s.base))
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
