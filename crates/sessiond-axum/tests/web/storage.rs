//! Typed storage semantics: insert replaces (objects included), remove answers what it
//! removed, null removes, keys are sorted.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sessiond_axum::SessionLayer;
use sessiond_core::Policy;

use crate::common::*;

#[tokio::test]
async fn insert_replaces_objects_whole_and_remove_answers_the_value() {
    let (m, _dir) = file_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());
    let r = call(Method::POST, "/json/cart")
        .json(r#"{"a": 1, "b": {"x": 2}}"#)
        .send(&app)
        .await;
    let pair = r.cookie_pair();
    call(Method::POST, "/json/cart")
        .cookie(&pair)
        .json(r#"{"b": {"y": 3}}"#)
        .send(&app)
        .await;
    let r = call(Method::GET, "/get/cart")
        .cookie(&pair)
        .send(&app)
        .await;
    assert_eq!(r.json(), json!({"b": {"y": 3}}), "replaced, not merged");

    call(Method::POST, "/json/list")
        .cookie(&pair)
        .json("[1, null, 3]")
        .send(&app)
        .await;
    let r = call(Method::GET, "/get/list")
        .cookie(&pair)
        .send(&app)
        .await;
    assert_eq!(r.json(), json!([1, null, 3]));

    let r = call(Method::GET, "/keys").cookie(&pair).send(&app).await;
    assert_eq!(r.json(), json!(["cart", "list"]));

    let r = call(Method::POST, "/remove/cart")
        .cookie(&pair)
        .send(&app)
        .await;
    assert_eq!(r.json(), json!({"b": {"y": 3}}));
    let r = call(Method::POST, "/remove/cart")
        .cookie(&pair)
        .send(&app)
        .await;
    assert_eq!(r.json(), json!(null));

    call(Method::POST, "/json/list")
        .cookie(&pair)
        .json("null")
        .send(&app)
        .await;
    let r = call(Method::GET, "/keys").cookie(&pair).send(&app).await;
    assert_eq!(r.json(), json!([]), "null removes");
}

#[tokio::test]
async fn storing_nothing_creates_nothing() {
    let m = memory_manager(Policy::default());
    let app = routes(SessionLayer::new(m.clone(), APP).unwrap());
    for path in ["/remove/a", "/logout"] {
        let r = call(Method::POST, path).send(&app).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.set_cookies().is_empty(), "{path}");
    }
    let r = call(Method::POST, "/json/a").json("null").send(&app).await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(m.seats(APP).await.unwrap().open, 0);
}

#[tokio::test]
async fn too_much_data_is_413_and_changes_nothing() {
    let m = memory_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());
    let pair = new_session(&app).await;
    let big = format!("\"{}\"", "x".repeat(70 * 1024));
    let r = call(Method::POST, "/json/big")
        .cookie(&pair)
        .json(&big)
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let r = call(Method::GET, "/keys").cookie(&pair).send(&app).await;
    assert_eq!(r.json(), json!(["a"]));
}

/// Storage at the JSON depth limit is kept; one level more is 400 and changes nothing
/// (a value the stores could write but never read back).
#[tokio::test]
async fn json_past_the_depth_limit_is_400_and_changes_nothing() {
    let m = memory_manager(Policy::default());
    let app = routes(SessionLayer::new(m, APP).unwrap());
    let pair = new_session(&app).await;
    // Under the key, inside the storage object (level 1): `levels` more levels.
    let nested = |levels: usize| {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    };
    let limit = sessiond_core::Limits::MAX_JSON_DEPTH;
    let r = call(Method::POST, "/json/deep")
        .cookie(&pair)
        .json(&nested(limit - 1).to_string())
        .send(&app)
        .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    let r = call(Method::POST, "/json/deeper")
        .cookie(&pair)
        .json(&nested(limit).to_string())
        .send(&app)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = call(Method::GET, "/keys").cookie(&pair).send(&app).await;
    assert_eq!(r.json(), json!(["a", "deep"]));
}
