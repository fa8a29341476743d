//! A vendor build's licensing, served in process: the configuration's
//! [`Licensing`] is pinned to a key made here, as a vendor build pins its own at compile
//! time (`scripts/test-vendor` runs the real vendor binary). A pinned app opens sessions
//! only under a license of the pinned key, whatever `seats` the configuration says; a
//! configuration naming another key does not start.

use reqwest::Method;
use serde_json::json;
use sessiond::license::{self, License};
use sessiond::licensing::{Licensing, Pin};

use crate::common::*;

const GESTAN_KEY: &str = "gestan-key-0123456789abcdef";

/// The configuration of a customer: `gestan` claims 5 seats, with the license file
/// `license` if given; `shop` names no license and claims 1 seat. Pinned to `public`
/// and the app `gestan`; `license_public_key` is `configured_key` when given.
fn config(public: &str, configured_key: Option<&str>, license: Option<&str>) -> sessiond::Config {
    let mut text = format!("admin_token = \"{ADMIN}\"\nstore = \"memory:\"\n");
    if let Some(k) = configured_key {
        text += &format!("license_public_key = \"{k}\"\n");
    }
    text += &format!("[apps.gestan]\nkey = \"{GESTAN_KEY}\"\nseats = 5\n");
    text += &format!("[apps.shop]\nkey = \"{SHOP_KEY}\"\nseats = 1\n");
    let mut config = sessiond::Config::from_toml(&text).unwrap();
    // Set after parsing: the ordinary build's parser wants `license_public_key` beside a
    // `license` line, which a vendor build does not.
    if let Some(l) = license {
        let dir = temp_dir("pinned");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gestan.license");
        std::fs::write(&path, l).unwrap();
        config.apps.get_mut("gestan").unwrap().license = Some(path);
    }
    config.licensing = Licensing::Pinned(Box::new(Pin::new(public, ["gestan"]).unwrap()));
    config
}

fn lic(app: &str, seats: u32, expires: &str) -> License {
    License {
        app: app.into(),
        expires: expires.into(),
        issued: "2026-11-21".into(),
        licensee: "ACME Corp".into(),
        seats,
    }
}

async fn open_gestan(s: &Server, user: &str) -> (u16, serde_json::Value) {
    s.call(
        Method::POST,
        "/v1/apps/gestan/sessions",
        Some(GESTAN_KEY),
        Some(json!({ "user": user })),
    )
    .await
}

#[tokio::test]
async fn a_pinned_app_without_a_license_refuses_opens_whatever_its_seats() {
    let (_, public) = license::keygen();
    let s = Server::start(config(&public, None, None)).await;
    let (st, v) = open_gestan(&s, "ann").await;
    assert_error(st, &v, 403, "license_invalid");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("apps.gestan.license"),
        "{v}"
    );
    let (_, app) = s
        .call(Method::GET, "/v1/apps/gestan", Some(GESTAN_KEY), None)
        .await;
    assert_eq!(app["license"]["status"], json!("invalid"), "{app}");
    // An app the build does not pin keeps the configuration's seats.
    s.open("shop", SHOP_KEY, json!({"user": "bob"})).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/shop/sessions",
            Some(SHOP_KEY),
            Some(json!({"user": "cid"})),
        )
        .await;
    assert_error(st, &v, 409, "seats_exhausted");
    s.stop().await;
}

#[tokio::test]
async fn a_license_of_the_pinned_key_sets_the_seats() {
    let (secret, public) = license::keygen();
    let text = license::issue(&lic("gestan", 2, "2099-12-31"), &secret).unwrap();
    // The configuration may repeat the pinned key.
    for configured_key in [None, Some(public.as_str())] {
        let s = Server::start(config(&public, configured_key, Some(&text))).await;
        for user in ["ann", "bob"] {
            let (st, v) = open_gestan(&s, user).await;
            assert_eq!(st, 201, "{v}");
        }
        let (st, v) = open_gestan(&s, "cid").await;
        assert_error(st, &v, 409, "seats_exhausted");
        assert_eq!(
            v["seats"],
            json!({"used": 2, "total": 2}),
            "the license's seats, not the config's 5"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn a_pinned_app_refuses_other_keys_other_apps_and_expired_licenses() {
    let (secret, public) = license::keygen();
    let (other_secret, _) = license::keygen();
    let cases = [
        (
            license::issue(&lic("gestan", 9, "2099-12-31"), &other_secret).unwrap(),
            "license_invalid",
        ),
        (
            license::issue(&lic("shop", 9, "2099-12-31"), &secret).unwrap(),
            "license_invalid",
        ),
        (
            license::issue(&lic("gestan", 9, "2020-01-01"), &secret).unwrap(),
            "license_expired",
        ),
    ];
    for (text, code) in cases {
        let s = Server::start(config(&public, None, Some(&text))).await;
        let (st, v) = open_gestan(&s, "ann").await;
        assert_error(st, &v, 403, code);
        s.stop().await;
    }
}

#[tokio::test]
async fn a_pinned_server_does_not_start_with_another_key_in_its_config() {
    let (_, public) = license::keygen();
    let (_, foreign) = license::keygen();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ended = sessiond::run(
        listener,
        config(&public, Some(&foreign), None),
        std::future::pending(),
    )
    .await;
    match ended {
        Err(sessiond::ServeError::Config(m)) => {
            assert!(m.starts_with("license_public_key: "), "{m}");
            assert!(m.contains(&public), "{m}");
        }
        other => panic!("wanted a configuration error, got {other:?}"),
    }
}
