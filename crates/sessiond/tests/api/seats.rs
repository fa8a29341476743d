//! The seat-licensing flow: signed licenses (valid, expired, forged, tampered, wrong
//! app, replaced on disk), the take-over race, `Last-Event-ID` replay, history actors.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sessiond::license::{self, License};

use crate::common::*;

const GESTAN_KEY: &str = "gestan-key-0123456789abcdef";

fn lic(app: &str, seats: u32, expires: &str) -> License {
    License {
        app: app.into(),
        expires: expires.into(),
        issued: "2026-11-21".into(),
        licensee: "ACME Corp".into(),
        seats,
    }
}

/// A server whose app `gestan` is licensed by the file at the returned path.
async fn licensed(text: &str) -> (Server, std::path::PathBuf, String, String) {
    let (secret, public) = license::keygen();
    let dir = temp_dir("license");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gestan.license");
    let text = if text.is_empty() {
        license::issue(&lic("gestan", 2, "2099-12-31"), &secret).unwrap()
    } else {
        text.to_string()
    };
    std::fs::write(&path, text).unwrap();
    let config = sessiond::Config::from_toml(&format!(
        r#"
        admin_token = "{ADMIN}"
        store = "memory:"
        license_public_key = "{public}"
        [apps.gestan]
        key = "{GESTAN_KEY}"
        license = "{}"
        heartbeat = {{ interval_s = 30 }}
        "#,
        path.display()
    ))
    .unwrap();
    (Server::start(config).await, path, secret, public)
}

#[tokio::test]
async fn a_valid_license_sets_the_seats_and_shows_in_the_app() {
    let (s, _, _, _) = licensed("").await;
    let (_, app) = s
        .call(Method::GET, "/v1/apps/gestan", Some(GESTAN_KEY), None)
        .await;
    assert_eq!(app["seats"], json!({"used": 0, "total": 2}));
    assert_eq!(app["license"]["status"], json!("valid"));
    assert_eq!(app["license"]["licensee"], json!("ACME Corp"));
    assert_eq!(app["license"]["expires"], json!("2099-12-31"));
    s.open("gestan", GESTAN_KEY, json!({"user": "a"})).await;
    s.open("gestan", GESTAN_KEY, json!({"user": "b"})).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/gestan/sessions",
            Some(GESTAN_KEY),
            Some(json!({"user": "c"})),
        )
        .await;
    assert_error(st, &v, 409, "seats_exhausted");
    s.stop().await;
}

#[tokio::test]
async fn expired_forged_tampered_and_wrong_app_licenses_refuse_opens() {
    let (other_secret, _) = license::keygen();
    let forged = license::issue(&lic("gestan", 99, "2099-12-31"), &other_secret).unwrap();
    let (s, path, secret, _) = licensed(&forged).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/gestan/sessions",
            Some(GESTAN_KEY),
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 403, "license_invalid");
    assert!(
        v["message"].as_str().unwrap().contains("without a restart"),
        "{v}"
    );
    let (_, app) = s
        .call(Method::GET, "/v1/apps/gestan", Some(GESTAN_KEY), None)
        .await;
    assert_eq!(app["license"]["status"], json!("invalid"));

    let cases = [
        (
            license::issue(&lic("gestan", 5, "2020-01-01"), &secret).unwrap(),
            "license_expired",
        ),
        (
            license::issue(&lic("gestan", 5, "2099-12-31"), &secret)
                .unwrap()
                .replace("\"seats\":5", "\"seats\":500"),
            "license_invalid",
        ),
        (
            license::issue(&lic("shop", 5, "2099-12-31"), &secret).unwrap(),
            "license_invalid",
        ),
        (
            license::issue(&lic("gestan", 5, "2099-12-31"), &secret).unwrap(),
            "",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&path, text).unwrap();
        // Picked up without a restart (the server polls every 2 s).
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let (st, v) = s
                .call(
                    Method::POST,
                    "/v1/apps/gestan/sessions",
                    Some(GESTAN_KEY),
                    Some(json!({})),
                )
                .await;
            let got = if st == 201 {
                ""
            } else {
                v["error"].as_str().unwrap_or("?")
            };
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "wanted {want:?}, still {st} {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (_, app) = s
        .call(Method::GET, "/v1/apps/gestan", Some(GESTAN_KEY), None)
        .await;
    assert_eq!(
        app["seats"]["total"],
        json!(5),
        "the new license's seats apply"
    );
    s.stop().await;
}

#[tokio::test]
async fn two_callers_racing_to_take_over_one_holder_exactly_one_wins() {
    let (s, _, _, _) = licensed("").await;
    s.open("gestan", GESTAN_KEY, json!({"user": "a"})).await;
    let holder = s.open("gestan", GESTAN_KEY, json!({"user": "b"})).await;
    let s = std::sync::Arc::new(s);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let target = holder["id"].clone();
            tokio::spawn(async move {
                s.call(
                    Method::POST,
                    "/v1/apps/gestan/sessions",
                    Some(GESTAN_KEY),
                    Some(json!({"user": format!("t{i}"), "take_over": target})),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        let (st, v) = t.await.unwrap();
        match st {
            201 => wins += 1,
            409 => assert!(
                ["take_over_target", "seats_exhausted"].contains(&v["error"].as_str().unwrap()),
                "{v}"
            ),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(wins, 1);
    let (_, app) = s
        .call(Method::GET, "/v1/apps/gestan", Some(GESTAN_KEY), None)
        .await;
    assert_eq!(app["seats"]["used"], json!(2));
}

/// Reads SSE frames from `resp` until `n` events arrived; returns (id, event, data).
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(3), resp.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), Value::Null);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap_or(Value::Null);
                }
            }
            if !event.is_empty() {
                out.push((id, event, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn app_events_replay_from_last_event_id() {
    let s = Server::memory().await;
    let mut stream = s
        .req(Method::GET, "/v1/apps/shop/events", Some(SHOP_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(id(&s
            .open("shop", SHOP_KEY, json!({"user": format!("u{i}")}))
            .await));
    }
    let got = read_events(&mut stream, 3).await;
    assert_eq!(
        got.iter()
            .map(|g| g.2["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        ids
    );
    let first = got[0].0.clone();
    drop(stream);
    // Missed while disconnected: a kill and an open.
    s.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", ids[0]),
        Some(SHOP_KEY),
        None,
    )
    .await;
    let late = id(&s.open("shop", SHOP_KEY, json!({})).await);
    let mut again = s
        .req(Method::GET, "/v1/apps/shop/events", Some(SHOP_KEY))
        .header("Last-Event-ID", first)
        .send()
        .await
        .unwrap();
    let got = read_events(&mut again, 4).await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|g| (g.1.clone(), g.2["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("opened".into(), ids[1].clone()),
            ("opened".into(), ids[2].clone()),
            ("closed".into(), ids[0].clone()),
            ("opened".into(), late),
        ]
    );
    assert_eq!(got[2].2["reason"], json!("killed"));
    s.stop().await;
}

#[tokio::test]
async fn history_records_who_closed_each_session() {
    let mut config = config(None);
    config.expiry_interval_ms = 100;
    let s = Server::start(config).await;
    let killed = s.open("shop", SHOP_KEY, json!({})).await;
    s.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", id(&killed)),
        Some(SHOP_KEY),
        None,
    )
    .await;
    let logout = s.open("shop", SHOP_KEY, json!({})).await;
    s.call(Method::DELETE, "/v1/session", Some(&token(&logout)), None)
        .await;
    let expired = s.open("shop", SHOP_KEY, json!({"idle_timeout_s": 1})).await;
    let swept = s.open("desk", DESK_KEY, json!({"user": "a"})).await;
    s.call(
        Method::POST,
        "/v1/apps/desk/sessions/close-all",
        Some(ADMIN),
        None,
    )
    .await;
    let holder = s.open("desk", DESK_KEY, json!({"user": "h"})).await;
    let taker = s
        .open(
            "desk",
            DESK_KEY,
            json!({"user": "t", "take_over": holder["id"]}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let by = |v: &Value| {
        (
            v["reason"].as_str().unwrap_or("").to_string(),
            v["closed_by"].as_str().unwrap_or("").to_string(),
        )
    };
    for (session, want) in [
        (&killed, ("killed".to_string(), "app".to_string())),
        (&logout, ("logout".into(), "user".into())),
        (&expired, ("idle_timeout".into(), "expiry".into())),
        (&swept, ("closed_all".into(), "admin".into())),
        (
            &holder,
            ("taken_over".into(), format!("session:{}", id(&taker))),
        ),
    ] {
        let (_, v) = s
            .call(
                Method::GET,
                &format!("/v1/sessions/{}", id(session)),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(by(&v), want, "{v}");
    }
    let (_, v) = s
        .call(
            Method::GET,
            "/v1/apps/shop/sessions?status=closed&order=desc",
            Some(SHOP_KEY),
            None,
        )
        .await;
    let reasons: Vec<_> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("idle_timeout"), json!("logout"), json!("killed")]
    );
    s.stop().await;
}
