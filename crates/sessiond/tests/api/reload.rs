//! Changing the configuration of a running server (`POST /v1/reload`, SIGHUP): apps,
//! policies and credentials change at once while requests go on; a bad file changes
//! nothing; settings that take a restart are named.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use crate::common::*;

const NEW_DESK_KEY: &str = "desk-key-new-0123456789abcdef";
const CRM_KEY: &str = "crm-key-0123456789abcdef";

fn write(file: &std::path::Path, listen: &str, apps: &str) {
    std::fs::write(
        file,
        format!("admin_token = \"{ADMIN}\"\nstore = \"memory:\"\nlisten = \"{listen}\"\n{apps}"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_policies_and_keys_change_without_a_restart() {
    let dir = temp_dir("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessiond.toml");
    write(
        &file,
        "127.0.0.1:7420",
        &format!("[apps.desk]\nkey = \"{DESK_KEY}\"\nseats = 2\nidle_timeout_s = 600\n"),
    );
    let mut c = sessiond::Config::from_file(&file).unwrap();
    c.data_dir = dir.join("data");
    let s = Arc::new(Server::start(c).await);
    let a = s.open("desk", DESK_KEY, json!({"user": "a"})).await;
    s.open("desk", DESK_KEY, json!({"user": "b"})).await;
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/apps/desk/sessions",
            Some(DESK_KEY),
            Some(json!({})),
        )
        .await;
    assert_error(st, &v, 409, "seats_exhausted");

    // Requests go on during the reloads and never fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (s, stop, sent, failed, t) = (
            s.clone(),
            stop.clone(),
            sent.clone(),
            failed.clone(),
            token(&a),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (st, _) = s.call(Method::GET, "/v1/session", Some(&t), None).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if st != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // More seats, a shorter idle timeout for new sessions, a rotated key, a new app,
    // and a new listen address (which takes a restart).
    write(
        &file,
        "127.0.0.1:7421",
        &format!(
            "[apps.desk]\nkey = [\"{NEW_DESK_KEY}\", \"{DESK_KEY}\"]\nseats = 3\nidle_timeout_s = 300\n\
             [apps.crm]\nkey = \"{CRM_KEY}\"\n"
        ),
    );
    let (st, r) = s.call(Method::POST, "/v1/reload", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["apps_added"], json!(["crm"]), "{r}");
    assert_eq!(r["apps_changed"], json!(["desk"]), "{r}");
    assert_eq!(r["restart_needed"], json!(["listen"]), "{r}");
    assert_eq!(r["credentials"]["app_keys"], json!(3), "{r}");
    let third = s.open("desk", NEW_DESK_KEY, json!({"user": "c"})).await;
    assert_eq!(
        third["idle_timeout_s"],
        json!(300),
        "new sessions take the new timeout"
    );
    let (_, first) = s
        .call(
            Method::GET,
            "/v1/session?touch=false",
            Some(&token(&a)),
            None,
        )
        .await;
    assert_eq!(
        first["idle_timeout_s"],
        json!(600),
        "an open session keeps its own"
    );
    s.open("crm", CRM_KEY, json!({})).await;
    let (st, _) = s
        .call(Method::GET, "/v1/apps/desk", Some(DESK_KEY), None)
        .await;
    assert_eq!(st, 200, "the retiring key still works");

    // A file that cannot be used changes nothing.
    write(&file, "127.0.0.1:7421", "[apps.desk]\nseats = 0\n");
    let (st, v) = s.call(Method::POST, "/v1/reload", Some(ADMIN), None).await;
    assert_error(st, &v, 400, "invalid_configuration");
    assert!(v["message"].as_str().unwrap().contains("apps.desk"), "{v}");
    let (_, desk) = s
        .call(Method::GET, "/v1/apps/desk", Some(NEW_DESK_KEY), None)
        .await;
    assert_eq!(desk["seats"], json!({"used": 3, "total": 3}), "{desk}");
    s.open("crm", CRM_KEY, json!({})).await;

    // Fewer seats close nobody; a removed app is served until the restart.
    write(
        &file,
        "127.0.0.1:7421",
        &format!("[apps.desk]\nkey = \"{NEW_DESK_KEY}\"\nseats = 1\nidle_timeout_s = 300\n"),
    );
    let (st, r) = s.call(Method::POST, "/v1/reload", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{r}");
    assert!(
        r["restart_needed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_str().unwrap().starts_with("apps.crm")),
        "{r}"
    );
    let (_, desk) = s
        .call(Method::GET, "/v1/apps/desk", Some(NEW_DESK_KEY), None)
        .await;
    assert_eq!(desk["seats"], json!({"used": 3, "total": 1}), "{desk}");
    let (st, _) = s
        .call(Method::GET, "/v1/apps/desk", Some(DESK_KEY), None)
        .await;
    assert_eq!(st, 401, "the retired key stopped working");

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 10, "the load ran ({sent} requests)");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the reloads"
    );
    Arc::try_unwrap(s).ok().unwrap().stop().await;
}

/// SIGHUP on the real binary does the same: a new app is served without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_server() {
    let dir = temp_dir("reload-hup");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessiond.toml");
    std::fs::write(
        &file,
        format!("store = \"memory:\"\n[apps.desk]\nkey = \"{DESK_KEY}\"\n"),
    )
    .unwrap();
    let server = Process::start_with(&dir.join("data"), &["--config", file.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let open_crm = || {
        http.post(format!("{}/v1/apps/crm/sessions", server.base))
            .bearer_auth(CRM_KEY)
            .json(&json!({}))
            .send()
    };
    assert_eq!(open_crm().await.unwrap().status(), 401);
    std::fs::write(
        &file,
        format!("store = \"memory:\"\n[apps.desk]\nkey = \"{DESK_KEY}\"\n[apps.crm]\nkey = \"{CRM_KEY}\"\n"),
    )
    .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    let start = std::time::Instant::now();
    while open_crm().await.unwrap().status() != 201 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "crm served after SIGHUP"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(server
        .output
        .lock()
        .unwrap()
        .contains("configuration reloaded"));
}

/// An app a reload newly licenses is not served until a restart (it would be served
/// with no license check); a licensed app keeps its license's seats whatever the file
/// says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_licensed_app_waits_for_a_restart_and_licensed_seats_stay() {
    use sessiond::license::{self, License};
    let dir = temp_dir("reload-license");
    std::fs::create_dir_all(&dir).unwrap();
    let (secret, public) = license::keygen();
    let issued = license::issue(
        &License {
            app: "desk".into(),
            expires: "2099-12-31".into(),
            issued: "2026-11-21".into(),
            licensee: "ACME Corp".into(),
            seats: 2,
        },
        &secret,
    )
    .unwrap();
    std::fs::write(dir.join("desk.license"), issued).unwrap();
    let file = dir.join("sessiond.toml");
    let head = format!(
        "admin_token = \"{ADMIN}\"\nstore = \"memory:\"\nlicense_public_key = \"{public}\"\n\
         [apps.desk]\nkey = \"{DESK_KEY}\"\nlicense = \"desk.license\"\n"
    );
    std::fs::write(&file, &head).unwrap();
    let mut c = sessiond::Config::from_file(&file).unwrap();
    c.data_dir = dir.join("data");
    let s = Server::start(c).await;
    // The file now claims 50 seats for desk and licenses a new app.
    std::fs::write(
        &file,
        format!(
            "{}seats = 50\n[apps.crm]\nkey = \"{CRM_KEY}\"\nlicense = \"crm.license\"\n",
            head
        ),
    )
    .unwrap();
    let (st, r) = s.call(Method::POST, "/v1/reload", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{r}");
    assert!(
        r["restart_needed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_str().unwrap().starts_with("apps.crm (licensed")),
        "{r}"
    );
    assert_eq!(r["apps_added"], json!([]), "{r}");
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/apps/crm/sessions",
            Some(CRM_KEY),
            Some(json!({})),
        )
        .await;
    assert_ne!(st, 201, "not served without its license checked");
    let (_, desk) = s
        .call(Method::GET, "/v1/apps/desk", Some(DESK_KEY), None)
        .await;
    assert_eq!(
        desk["seats"]["total"],
        json!(2),
        "the license's seats: {desk}"
    );
    s.stop().await;
}

/// The web settings of an app (`[apps.<name>.web]`) change on a reload too: forward-auth's
/// header names, the heartbeat's allowed origins; a new app gets its heartbeat, a
/// removed one keeps it until the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_settings_change_without_a_restart() {
    let dir = temp_dir("reload-web");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessiond.toml");
    write(
        &file,
        "127.0.0.1:7420",
        &format!("[apps.desk]\nkey = \"{DESK_KEY}\"\n[apps.gone]\nkey = \"{CRM_KEY}\"\n"),
    );
    let mut c = sessiond::Config::from_file(&file).unwrap();
    c.data_dir = dir.join("data");
    let s = Server::start(c).await;
    let a = s.open("desk", DESK_KEY, json!({"user": "a"})).await;
    let check = || async {
        s.req(Method::GET, "/v1/apps/desk/forward-auth", None)
            .header("cookie", format!("SESSION={}", token(&a)))
            .send()
            .await
            .unwrap()
    };
    let preflight = |app: &'static str| {
        s.req(Method::OPTIONS, &format!("/v1/apps/{app}/heartbeat"), None)
            .header("origin", "https://pages.example")
            .header("access-control-request-method", "POST")
            .send()
    };
    assert_eq!(check().await.headers()["x-sessiond-user"], "a");
    assert_eq!(preflight("desk").await.unwrap().status(), 403);

    write(
        &file,
        "127.0.0.1:7420",
        &format!(
            "[apps.desk]\nkey = \"{DESK_KEY}\"\n[apps.desk.web]\nuser_header = \"Remote-User\"\n\
             allowed_origins = [\"https://pages.example\"]\n[apps.new]\nkey = \"{NEW_DESK_KEY}\"\n"
        ),
    );
    let (st, r) = s.call(Method::POST, "/v1/reload", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{r}");
    let h = check().await.headers().clone();
    assert_eq!(h["remote-user"], "a");
    assert!(h.get("x-sessiond-user").is_none());
    let r = preflight("desk").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://pages.example"
    );
    for app in ["new", "gone"] {
        let r = s
            .req(Method::GET, &format!("/v1/apps/{app}/heartbeat.js"), None)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{app}'s heartbeat is served");
    }

    // A bad web table changes nothing and names the key.
    write(
        &file,
        "127.0.0.1:7420",
        &format!(
            "[apps.desk]\nkey = \"{DESK_KEY}\"\n[apps.desk.web]\nuser_header = \"Set-Cookie\"\n"
        ),
    );
    let (st, v) = s.call(Method::POST, "/v1/reload", Some(ADMIN), None).await;
    assert_error(st, &v, 400, "invalid_configuration");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("apps.desk.web.user_header"),
        "{v}"
    );
    assert_eq!(check().await.headers()["remote-user"], "a");
    s.stop().await;
}
