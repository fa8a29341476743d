//! The operator CLI against a running server: tables, JSON, kill, close-all, errors.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

fn sessiond(base: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(args)
        .args(["--server", base, "--token", ADMIN])
        .env_remove("SESSIOND_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn list_show_kill_close_all_and_apps() {
    let s = Server::memory().await;
    let a = s
        .open(
            "desk",
            DESK_KEY,
            json!({"user": "ann", "client": {"label": "pc-ann"}}),
        )
        .await;
    let b = s.open("desk", DESK_KEY, json!({"user": "bob"})).await;
    let base = s.base.clone();
    let run = move |args: Vec<&'static str>| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || sessiond(&base, &args))
    };

    let (ok, out, err) = run(vec!["sessions", "list", "--app", "desk"])
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("USER")
            && out.contains("ann")
            && out.contains("pc-ann")
            && out.contains("bob"),
        "{out}"
    );
    assert!(!out.contains(&token(&a)), "no token in a listing");

    let (ok, out, _) = run(vec!["sessions", "list", "--app", "desk", "--json"])
        .await
        .unwrap();
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);

    let id_a: &'static str = Box::leak(id(&a).into_boxed_str());
    let (ok, out, err) = run(vec!["sessions", "kill", id_a]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains(id_a), "{out}");
    let (st, v) = s
        .call(Method::GET, "/v1/session", Some(&token(&a)), None)
        .await;
    assert_error(st, &v, 410, "session_closed");

    let (ok, out, _) = run(vec!["sessions", "history", "--app", "desk"])
        .await
        .unwrap();
    assert!(ok);
    assert!(out.contains("killed") && out.contains("admin"), "{out}");

    let id_b: &'static str = Box::leak(id(&b).into_boxed_str());
    s.open("desk", DESK_KEY, json!({"user": "cid"})).await;
    let (ok, out, err) = run(vec![
        "sessions",
        "close-all",
        "--app",
        "desk",
        "--except",
        id_b,
    ])
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains('1'), "{out}");
    let (st, _) = s
        .call(Method::GET, "/v1/session", Some(&token(&b)), None)
        .await;
    assert_eq!(st, 200, "kept");

    let (ok, out, _) = run(vec!["apps", "show", "desk"]).await.unwrap();
    assert!(ok);
    assert!(out.contains("desk") && out.contains("1/2"), "{out}");

    let (ok, _, err) = run(vec![
        "sessions",
        "show",
        "0192f0c1-7a3b-7cde-8f01-23456789abcd",
    ])
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("not_found"), "{err}");
    s.stop().await;
}
