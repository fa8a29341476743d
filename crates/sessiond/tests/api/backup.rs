//! Online backups through the API and the CLI: written while the server serves,
//! refused where they cannot be taken, and restored by starting a server on the copy.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// Sessions opened and changed, a backup through the API and one through the CLI, then
/// a second server started on the first backup answers every session's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_every_session() {
    let dir = temp_dir("backup");
    let s = Server::start(config(Some(&dir))).await;
    let mut opened = Vec::new();
    for i in 0..40 {
        let v = s
            .open(
                "shop",
                SHOP_KEY,
                json!({"user": format!("u{i}"), "data": {"cart": [i]}}),
            )
            .await;
        opened.push(v);
    }
    let killed = id(&opened[0]);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{killed}"),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(st, 200);

    // Only an operator of every app that may write asks for one.
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/backups",
            Some(SHOP_KEY),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/backups",
            Some(ADMIN),
            Some(json!({"name": "../escape"})),
        )
        .await;
    assert_error(st, &v, 400, "bad_request");

    let (st, b) = s
        .call(
            Method::POST,
            "/v1/backups",
            Some(ADMIN),
            Some(json!({"name": "nightly"})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let path = std::path::PathBuf::from(b["path"].as_str().unwrap());
    assert!(path.is_absolute(), "{b}");
    assert!(
        path.starts_with(dir.canonicalize().unwrap().join("backups")),
        "{b}"
    );
    assert_eq!(b["sessions"], json!(40), "{b}");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/backups",
            Some(ADMIN),
            Some(json!({"name": "nightly"})),
        )
        .await;
    assert_error(st, &v, 409, "backup_exists");

    // The CLI asks the same server, with a name from the time.
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(["backup", "--json", "--server", &base, "--token", ADMIN])
            .env_remove("SESSIOND_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        cli["path"].as_str().unwrap().contains("/backups/backup-"),
        "{cli}"
    );
    assert!(std::path::Path::new(cli["path"].as_str().unwrap())
        .join("snapshot-0.dat")
        .exists());
    s.stop().await;

    // Restore: a server whose store is the backup.
    let mut c = config(Some(&temp_dir("backup-restored")));
    c.store = format!("file://{}", path.display()).parse().unwrap();
    let r = Server::start(c).await;
    for (i, o) in opened.iter().enumerate() {
        let (st, v) = r
            .call(Method::GET, "/v1/session", Some(&token(o)), None)
            .await;
        if i == 0 {
            assert_error(st, &v, 410, "session_closed");
        } else {
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["data"], json!({"cart": [i]}));
        }
    }
    r.stop().await;
}

/// A server on a store that is not the embedded one says how to back it up instead.
#[tokio::test]
async fn a_shared_or_memory_store_refuses_with_the_way_to_back_it_up() {
    let s = Server::memory().await;
    let (st, v) = s.call(Method::POST, "/v1/backups", Some(ADMIN), None).await;
    assert_error(st, &v, 409, "backup_unsupported");
    assert!(v["message"].as_str().unwrap().contains("own tools"), "{v}");
    s.stop().await;
}
