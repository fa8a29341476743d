//! `sessiond migrate`: every session (open and closed) goes from one store to another
//! and on to the next, tokens keep working, history keeps its reasons, and the count
//! check says so. The chain runs file → PostgreSQL → Redis → file when those servers
//! answer (always in CI), file → file otherwise.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::common::*;

fn migrate(from: &str, to: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["migrate", "--from", from, "--to", to, "--batch", "7"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate {from} -> {to} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn reachable(addr: &str, kind: &str) -> bool {
    if tokio::net::TcpStream::connect(addr).await.is_ok() {
        return true;
    }
    sessiond_core::skip::skip(
        &format!("migrate through {kind}"),
        &format!("nothing listens on {addr}"),
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_travel_between_every_store() {
    let (src, dst) = (temp_dir("migrate-src"), temp_dir("migrate-dst"));
    let s = Server::start(config(Some(&src))).await;
    let mut open = Vec::new();
    for n in 0..25 {
        let o = s
            .open(
                "shop",
                SHOP_KEY,
                json!({"user": format!("u{n}"), "data": {"n": n}}),
            )
            .await;
        open.push((token(&o), n));
    }
    let gone = s.open("desk", DESK_KEY, json!({"user": "gone"})).await;
    s.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", id(&gone)),
        Some(ADMIN),
        None,
    )
    .await;
    s.stop().await;

    let mut b = [0u8; 5];
    getrandom::fill(&mut b).unwrap();
    let ns: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let mut chain = vec![format!("file://{}", src.join("store").display())];
    if reachable("127.0.0.1:5432", "PostgreSQL").await {
        chain.push(format!(
            "postgres://postgres@127.0.0.1:5432/test?namespace=sessiond_migrate_{ns}"
        ));
    }
    if reachable("127.0.0.1:6379", "Redis").await {
        chain.push(format!(
            "redis://127.0.0.1:6379?namespace=sessiond-migrate-{ns}"
        ));
    }
    chain.push(format!("file://{}", dst.join("store").display()));
    for pair in chain.windows(2) {
        let out = migrate(&pair[0], &pair[1]);
        assert!(
            out.contains("source: 26 sessions; copied: 26; found in the destination: 26"),
            "{out}"
        );
        assert!(out.contains("count check passed"), "{out}");
    }

    let s = Server::start(config(Some(&dst))).await;
    for (t, n) in &open {
        let (st, v) = s
            .call(Method::GET, "/v1/session?touch=false", Some(t), None)
            .await;
        assert_eq!((st, v["data"]["n"].clone()), (200, json!(n)), "{v}");
    }
    let (_, v) = s
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", id(&gone)),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (v["reason"].clone(), v["closed_by"].clone()),
        (json!("killed"), json!("admin"))
    );
    let (_, app) = s
        .call(Method::GET, "/v1/apps/shop", Some(SHOP_KEY), None)
        .await;
    assert_eq!(app["open"], json!(25));
    s.stop().await;
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
}

/// A source that is not there is refused before anything is created, and so is a copy
/// of a store onto itself: neither may pass for a good backup.
#[test]
fn a_missing_source_or_the_same_store_twice_is_refused() {
    let dir = temp_dir("migrate-refusals");
    let missing = dir.join("typo/store");
    let run = |from: &str, to: &str| {
        Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(["migrate", "--from", from, "--to", to])
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let from = format!("file://{}", missing.display());
    let to = format!("file://{}", dir.join("copy").display());
    let out = run(&from, &to);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no store at"), "{err}");
    assert!(!missing.exists(), "the missing source was not created");
    assert!(!dir.join("copy").exists(), "nor the destination");
    // The data dir's own store, empty: nothing to copy either.
    let out = run("file:", &to);
    assert_eq!(out.status.code(), Some(2));
    // The same store on both sides.
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::write(dir.join("store/placeholder"), b"").unwrap();
    let same = format!("file://{}", dir.join("store").display());
    let out = run("file:", &same);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("same store"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
