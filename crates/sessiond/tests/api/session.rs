//! What a session token may do: resolve, heartbeat, retune the heartbeat, patch its
//! storage with versions, log out, and hear its close over SSE.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn client_seat_flow_open_heartbeat_kill_410() {
    let s = Server::memory().await;
    let opened = s
        .open(
            "desk",
            DESK_KEY,
            json!({"user": "ann", "client": {"label": "desk-1"}}),
        )
        .await;
    assert_eq!(
        opened["heartbeat"],
        json!({"interval_s": 30, "grace_s": 60, "active": true})
    );
    assert_eq!(opened["client"]["ip"], json!("127.0.0.1"));
    let t = token(&opened);
    let (st, v) = s
        .call(Method::POST, "/v1/session/heartbeat", Some(&t), None)
        .await;
    assert_eq!(
        (st, v),
        (200, json!({"status": "open", "next_heartbeat_s": 30}))
    );
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", id(&opened)),
            Some(DESK_KEY),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        (
            v["status"].clone(),
            v["reason"].clone(),
            v["closed_by"].clone()
        ),
        (json!("closed"), json!("killed"), json!("app"))
    );
    let (st, v) = s
        .call(Method::POST, "/v1/session/heartbeat", Some(&t), None)
        .await;
    assert_error(st, &v, 410, "session_closed");
    assert_eq!(v["reason"], json!("killed"));
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
    assert_error(st, &v, 410, "session_closed");
    s.stop().await;
}

#[tokio::test]
async fn resolve_touches_unless_asked_not_to() {
    let s = Server::memory().await;
    let t = token(&s.open("desk", DESK_KEY, json!({})).await);
    let resp = s
        .req(Method::GET, "/v1/session?touch=false", Some(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "\"1\"");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let (st, v) = s
        .call(Method::GET, "/v1/session?touch=maybe", Some(&t), None)
        .await;
    assert_error(st, &v, 400, "invalid_query");
    let (st, v) = s
        .call(Method::GET, "/v1/session", Some("desk:0000"), None)
        .await;
    assert_error(st, &v, 401, "invalid_token");
    let (st, v) = s.call(Method::GET, "/v1/session", None, None).await;
    assert_error(st, &v, 401, "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn storage_flow_patch_if_match_412() {
    let s = Server::memory().await;
    let t = token(
        &s.open("desk", DESK_KEY, json!({"data": {"cart": {"a": 1}}}))
            .await,
    );
    let resp = s
        .req(Method::PATCH, "/v1/session/data", Some(&t))
        .header("If-Match", "\"1\"")
        .json(&json!({"cart": {"b": 2, "a": null}, "n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "\"2\"");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["data"], json!({"cart": {"b": 2}, "n": 1}));
    let resp = s
        .req(Method::PATCH, "/v1/session/data", Some(&t))
        .header("If-Match", "1")
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_error(412, &v, 412, "version_mismatch");
    assert_eq!(v["version"], json!(2));
    let (st, v) = s
        .call(
            Method::PATCH,
            "/v1/session/data",
            Some(&t),
            Some(json!([1, 2])),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");
    let (_, v) = s
        .call(Method::GET, "/v1/session?touch=false", Some(&t), None)
        .await;
    assert_eq!(
        (v["version"].clone(), v["data"]["n"].clone()),
        (json!(2), json!(1)),
        "refusals changed nothing"
    );
    let bad = s
        .req(Method::PATCH, "/v1/session/data", Some(&t))
        .header("If-Match", "abc")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn heartbeat_suspend_resume_and_logout() {
    let s = Server::memory().await;
    // shop has no seats: its sessions may suspend their heartbeat.
    let t = token(&s.open("shop", SHOP_KEY, json!({})).await);
    let (st, v) = s
        .call(
            Method::PUT,
            "/v1/session/heartbeat",
            Some(&t),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["heartbeat"]["active"], json!(false));
    let (_, v) = s
        .call(Method::POST, "/v1/session/heartbeat", Some(&t), None)
        .await;
    assert_eq!(v["next_heartbeat_s"], json!(null));
    let (st, v) = s
        .call(
            Method::PUT,
            "/v1/session/heartbeat",
            Some(&t),
            Some(json!({"active": true, "interval_s": 10, "grace_s": 5})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        v["heartbeat"],
        json!({"interval_s": 10, "grace_s": 5, "active": true})
    );
    let (st, v) = s
        .call(
            Method::PUT,
            "/v1/session/heartbeat",
            Some(&t),
            Some(json!({"active": "yes"})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_body");
    let (st, v) = s.call(Method::DELETE, "/v1/session", Some(&t), None).await;
    assert_eq!(
        (st, v["reason"].clone(), v["closed_by"].clone()),
        (200, json!("logout"), json!("user"))
    );
    let (st, v) = s.call(Method::DELETE, "/v1/session", Some(&t), None).await;
    assert_error(st, &v, 410, "session_closed");
    s.stop().await;
}

#[tokio::test]
async fn bind_ip_refuses_another_address_and_keeps_the_session() {
    let s = Server::memory().await;
    let t = token(&s.open("shop", SHOP_KEY, json!({})).await);
    // The test client is 127.0.0.1, a trusted proxy: X-Forwarded-For names the client.
    // Every request of the holder is refused from there: reading, heartbeats, storage,
    // the event stream, and logging out.
    let from_elsewhere = [
        (Method::GET, "/v1/session", None),
        (Method::POST, "/v1/session/heartbeat", None),
        (Method::PATCH, "/v1/session/data", Some(json!({"k": 1}))),
        (Method::GET, "/v1/session/events", None),
        (Method::DELETE, "/v1/session", None),
    ];
    // The second header names the session's own address first, as a thief would: the
    // hops are read from the right, so the thief's address (appended by the proxy) is
    // the one compared.
    for forwarded in ["203.0.113.9, 127.0.0.1", "127.0.0.1, 203.0.113.9"] {
        for (method, path, body) in from_elsewhere.clone() {
            let mut r = s
                .req(method.clone(), path, Some(&t))
                .header("X-Forwarded-For", forwarded);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_error(status, &v, 400, "ip_mismatch");
        }
    }
    let (st, v) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
    assert_eq!((st, v["status"].clone()), (200, json!("open")));
    assert_eq!(v["data"], json!({}), "the refused patch changed nothing");
    assert_eq!(v["version"], json!(1));
    // From its own address the holder logs out.
    let (st, v) = s.call(Method::DELETE, "/v1/session", Some(&t), None).await;
    assert_eq!((st, v["reason"].clone()), (200, json!("logout")));
    s.stop().await;
}

/// Reads SSE frames until one with `event: closed`; returns its data line.
async fn wait_closed(resp: reqwest::Response, within: Duration) -> String {
    let mut resp = resp;
    let mut buf = String::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("closed event in time")
            .unwrap();
        let Some(chunk) = chunk else {
            panic!("stream ended without closed: {buf}")
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(pos) = buf.find("event: closed\n") {
            let rest = &buf[pos..];
            if let Some(data) = rest.lines().find_map(|l| l.strip_prefix("data: ")) {
                return data.to_string();
            }
        }
    }
}

#[tokio::test]
async fn events_push_closed_within_a_second_of_a_kill() {
    let s = Server::memory().await;
    let opened = s.open("desk", DESK_KEY, json!({"user": "ann"})).await;
    let t = token(&opened);
    let stream = s
        .req(Method::GET, "/v1/session/events", Some(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let killed = Instant::now();
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", id(&opened)),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let data = wait_closed(stream, Duration::from_secs(1)).await;
    assert!(killed.elapsed() < Duration::from_secs(1));
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (v["reason"].clone(), v["by"].clone(), v["id"].clone()),
        (json!("killed"), json!("admin"), opened["id"].clone())
    );
    // Connecting after the close still tells why, at once.
    let again = s
        .req(Method::GET, "/v1/session/events", Some(&t))
        .send()
        .await
        .unwrap();
    let data = wait_closed(again, Duration::from_secs(1)).await;
    assert!(data.contains("killed"));
    s.stop().await;
}

/// A session of an app with seats may not suspend its own heartbeat, nor stretch it
/// past `heartbeat.max_interval_s` or its grace past the app's: it would keep its seat
/// after its client died. The refusal says which policy refused, and changes nothing.
#[tokio::test]
async fn a_seat_session_is_held_to_the_apps_heartbeat_policy() {
    let s = Server::memory().await;
    let t = token(&s.open("desk", DESK_KEY, json!({})).await);
    for (body, names) in [
        (json!({"active": false}), "heartbeat.allow_suspend"),
        (
            json!({"active": true, "interval_s": 31_536_000}),
            "heartbeat.max_interval_s",
        ),
        (
            json!({"active": true, "grace_s": 31_536_000}),
            "heartbeat.grace_s",
        ),
    ] {
        let (st, v) = s
            .call(
                Method::PUT,
                "/v1/session/heartbeat",
                Some(&t),
                Some(body.clone()),
            )
            .await;
        assert_error(st, &v, 400, "bad_request");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains("heartbeat policy") && m.contains(names),
            "{body}: {m}"
        );
    }
    let (_, v) = s
        .call(Method::GET, "/v1/session?touch=false", Some(&t), None)
        .await;
    assert_eq!(
        v["heartbeat"],
        json!({"interval_s": 30, "grace_s": 60, "active": true})
    );
    let (st, v) = s
        .call(
            Method::PUT,
            "/v1/session/heartbeat",
            Some(&t),
            Some(json!({"active": true, "interval_s": 300})),
        )
        .await;
    assert_eq!(
        (st, v["heartbeat"]["interval_s"].clone()),
        (200, json!(300))
    );
    s.stop().await;
}

#[tokio::test]
async fn my_sessions_lists_and_closes_only_my_other_sessions() {
    let s = Server::memory().await;
    let ann: Vec<Value> = {
        let mut v = Vec::new();
        for label in ["laptop", "phone", "tablet"] {
            v.push(
                s.open(
                    "shop",
                    SHOP_KEY,
                    json!({"user": "ann", "client": {"label": label}}),
                )
                .await,
            );
        }
        v
    };
    let bob = s.open("shop", SHOP_KEY, json!({"user": "bob"})).await;
    let me = token(&ann[0]);

    let (st, v) = s
        .call(Method::GET, "/v1/session/others", Some(&me), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let listed: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["client"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["phone", "tablet"], "{v}");
    assert!(
        !v.to_string().contains("token"),
        "no token is ever listed: {v}"
    );

    // Another user's session, and my own, answer as an unknown id.
    let stranger = sessiond_core::SessionId::new().to_string();
    let (_, unknown) = s
        .call(
            Method::DELETE,
            &format!("/v1/session/others/{stranger}"),
            Some(&me),
            None,
        )
        .await;
    for other in [id(&bob), id(&ann[0])] {
        let (st, v) = s
            .call(
                Method::DELETE,
                &format!("/v1/session/others/{other}"),
                Some(&me),
                None,
            )
            .await;
        assert_error(st, &v, 404, "not_found");
        assert_eq!(
            v["message"].as_str().unwrap().replace(&other, "ID"),
            unknown["message"]
                .as_str()
                .unwrap()
                .replace(&stranger, "ID"),
            "the same words as for an unknown id"
        );
    }

    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/session/others/{}", id(&ann[1])),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["reason"], "logout");
    assert_eq!(v["closed_by"], format!("session:{}", id(&ann[0])));

    let (st, v) = s
        .call(
            Method::POST,
            "/v1/session/others/close-all",
            Some(&me),
            None,
        )
        .await;
    assert_eq!((st, v["closed"].as_u64()), (200, Some(1)), "{v}");
    let (st, _) = s.call(Method::GET, "/v1/session", Some(&me), None).await;
    assert_eq!(st, 200, "mine stays open");
    let (st, _) = s
        .call(Method::GET, "/v1/session", Some(&token(&bob)), None)
        .await;
    assert_eq!(st, 200, "bob's is not mine to close");
    let (st, v) = s
        .call(Method::GET, "/v1/session", Some(&token(&ann[2])), None)
        .await;
    assert_error(st, &v, 410, "session_closed");
    s.stop().await;
}
