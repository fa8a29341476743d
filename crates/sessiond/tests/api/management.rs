//! What app keys and the admin token may do: open with admission (full house, user
//! limit, take-over, reserved seats), list and page, read, kill, change privileges,
//! close everyone but some, read apps.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn full_house_lists_holders_and_take_over_admits() {
    let s = Server::memory().await;
    let a = s
        .open(
            "desk",
            DESK_KEY,
            json!({"user": "a", "client": {"label": "pc-a"}}),
        )
        .await;
    let b = s.open("desk", DESK_KEY, json!({"user": "b"})).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/desk/sessions",
            Some(DESK_KEY),
            Some(json!({"user": "c"})),
        )
        .await;
    assert_error(st, &v, 409, "seats_exhausted");
    assert_eq!(v["seats"], json!({"used": 2, "total": 2}));
    let holders: Vec<_> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].clone())
        .collect();
    assert_eq!(holders, vec![a["id"].clone(), b["id"].clone()]);
    assert!(v["sessions"][0].get("token").is_none(), "never tokens");
    assert_eq!(v["sessions"][0]["client"]["label"], json!("pc-a"));
    // Reserved privilege gets in anyway.
    let admin = s
        .open(
            "desk",
            DESK_KEY,
            json!({"user": "root", "privileges": ["admin"]}),
        )
        .await;
    assert_eq!(admin["counts_seat"], json!(false));
    // Take over a's seat.
    let c = s
        .open("desk", DESK_KEY, json!({"user": "c", "take_over": a["id"]}))
        .await;
    let (_, v) = s
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", id(&a)),
            Some(DESK_KEY),
            None,
        )
        .await;
    assert_eq!(
        (v["reason"].clone(), v["closed_by"].clone()),
        (json!("taken_over"), json!(format!("session:{}", id(&c))))
    );
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/desk/sessions",
            Some(DESK_KEY),
            Some(json!({"take_over": a["id"]})),
        )
        .await;
    assert_error(st, &v, 409, "take_over_target");
    let (_, app) = s
        .call(Method::GET, "/v1/apps/desk", Some(DESK_KEY), None)
        .await;
    assert_eq!(app["seats"], json!({"used": 2, "total": 2}));
    assert_eq!(app["open"], json!(3));
    assert_eq!(app["policy"]["heartbeat"]["interval_s"], json!(30));
    // Dropping the reserved privilege would take a third seat of two: refused like an
    // open, with the holders, and the session keeps its privilege and its token.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/sessions/{}/privileges", id(&admin)),
            Some(DESK_KEY),
            Some(json!({"privileges": []})),
        )
        .await;
    assert_error(st, &v, 409, "seats_exhausted");
    assert_eq!(v["seats"], json!({"used": 2, "total": 2}));
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    let (st, v) = s
        .call(Method::GET, "/v1/session", Some(&token(&admin)), None)
        .await;
    assert_eq!((st, v["privileges"].clone()), (200, json!(["admin"])));
    // Renaming a session to a user at the limit (one per user, reject) is refused too.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/sessions/{}/privileges", id(&admin)),
            Some(DESK_KEY),
            Some(json!({"privileges": ["admin"], "user": "c"})),
        )
        .await;
    assert_error(st, &v, 409, "user_limit");
    s.stop().await;
}

#[tokio::test]
async fn user_limit_refuses_a_second_session() {
    let s = Server::memory().await;
    s.open("desk", DESK_KEY, json!({"user": "ann"})).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/desk/sessions",
            Some(DESK_KEY),
            Some(json!({"user": "ann"})),
        )
        .await;
    assert_error(st, &v, 409, "user_limit");
    s.stop().await;
}

#[tokio::test]
async fn list_pages_and_filters() {
    let s = Server::memory().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(id(&s
            .open("shop", SHOP_KEY, json!({"user": format!("u{}", i % 2)}))
            .await));
    }
    let (st, v) = s
        .call(
            Method::GET,
            "/v1/apps/shop/sessions?limit=2",
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let page: Vec<_> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(page, ids[..2]);
    let next = v["next"].as_str().unwrap().to_string();
    let (_, v) = s
        .call(
            Method::GET,
            &format!("/v1/apps/shop/sessions?limit=2&after={next}"),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(v["sessions"][0]["id"], json!(ids[2]));
    let (_, v) = s
        .call(
            Method::GET,
            "/v1/apps/shop/sessions?user=u1",
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], json!(null));
    s.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", ids[0]),
        Some(SHOP_KEY),
        None,
    )
    .await;
    let (_, v) = s
        .call(
            Method::GET,
            "/v1/apps/shop/sessions?status=closed",
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(v["sessions"][0]["reason"], json!("killed"));
    let (_, v) = s
        .call(
            Method::GET,
            "/v1/apps/shop/sessions?status=any&order=desc&limit=1",
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(v["sessions"][0]["id"], json!(ids[4]));
    for bad in [
        "status=gone",
        "order=up",
        "limit=0",
        "limit=5000",
        "after=nope",
        "colour=red",
    ] {
        let (st, v) = s
            .call(
                Method::GET,
                &format!("/v1/apps/shop/sessions?{bad}"),
                Some(SHOP_KEY),
                None,
            )
            .await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    s.stop().await;
}

#[tokio::test]
async fn privileges_rotate_the_token_and_keep_the_id() {
    let s = Server::memory().await;
    let o = s.open("shop", SHOP_KEY, json!({})).await;
    let old = token(&o);
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/sessions/{}/privileges", id(&o)),
            Some(SHOP_KEY),
            Some(json!({"privileges": ["WebAdmin"], "info": {"name": "Ann"}, "user": "ann"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], o["id"]);
    assert_eq!(v["version"], json!(2));
    let new = token(&v);
    assert_ne!(new, old);
    let (st, _) = s.call(Method::GET, "/v1/session", Some(&old), None).await;
    assert_eq!(st, 401);
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&new), None).await;
    assert_eq!(
        (st, v["privileges"].clone(), v["info"]["name"].clone()),
        (200, json!(["WebAdmin"]), json!("Ann"))
    );
    s.stop().await;
}

#[tokio::test]
async fn close_all_except_me() {
    let s = Server::memory().await;
    let me = s.open("shop", SHOP_KEY, json!({"user": "me"})).await;
    for i in 0..4 {
        s.open("shop", SHOP_KEY, json!({"user": format!("u{i}")}))
            .await;
    }
    let other_app = s.open("desk", DESK_KEY, json!({})).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions/close-all",
            Some(SHOP_KEY),
            Some(json!({"except": [me["id"]]})),
        )
        .await;
    assert_eq!((st, v), (200, json!({"closed": 4})));
    let (st, _) = s
        .call(Method::GET, "/v1/session", Some(&token(&me)), None)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .call(Method::GET, "/v1/session", Some(&token(&other_app)), None)
        .await;
    assert_eq!(st, 200);
    // An empty body closes everyone.
    let resp = s
        .req(
            Method::POST,
            "/v1/apps/shop/sessions/close-all",
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"closed": 1})
    );
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions/close-all",
            Some(SHOP_KEY),
            Some(json!({"except": ["x"]})),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    s.stop().await;
}

#[tokio::test]
async fn apps_list_needs_the_admin_token() {
    let s = Server::memory().await;
    let (st, v) = s.call(Method::GET, "/v1/apps", Some(ADMIN), None).await;
    assert_eq!(st, 200);
    let names: Vec<_> = v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("default"), json!("desk"), json!("shop")]);
    assert_eq!(v["apps"][1]["seats"]["total"], json!(2));
    assert_eq!(v["apps"][0]["seats"]["total"], json!(null));
    let (st, v) = s.call(Method::GET, "/v1/apps", Some(SHOP_KEY), None).await;
    assert_error(st, &v, 403, "forbidden");
    s.stop().await;
}
