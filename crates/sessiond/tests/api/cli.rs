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

/// `license issue` names the flag at fault and signs nothing for a public key, an
/// impossible date, no seats or no licensee; a date already past is signed with a
/// warning.
#[test]
fn license_issue_refuses_bad_arguments() {
    let dir = temp_dir("license-args");
    let keys = dir.join("keys");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .arg("license")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["keygen", "--dir", keys.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let secret = keys.join("license-signing.key");
    let public = keys.join("license-signing.pub");
    let issue = |key: &std::path::Path, seats: &str, expires: &str, licensee: &str| {
        run(&[
            "issue",
            "--key",
            key.to_str().unwrap(),
            "--app",
            "gestan",
            "--seats",
            seats,
            "--expires",
            expires,
            "--licensee",
            licensee,
        ])
    };
    let refused = [
        (issue(&public, "1", "2099-12-31", "ACME"), "public key"),
        (issue(&secret, "1", "2099-02-30", "ACME"), "--expires"),
        (issue(&secret, "1", "31/12/2099", "ACME"), "--expires"),
        (issue(&secret, "1", "2099-12-31", " "), "--licensee"),
        (issue(&secret, "0", "2099-12-31", "ACME"), "--seats"),
    ];
    for ((code, out, err), names) in refused {
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(names), "{names}: {err}");
        assert!(out.is_empty(), "nothing signed: {out}");
    }
    let (code, out, err) = issue(&secret, "1", "2020-01-01", "ACME");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("already past"), "{err}");
    assert!(out.contains("ed25519:"), "{out}");
    let (code, out, err) = issue(&secret, "3", "2099-12-31", "ACME");
    assert_eq!(code, Some(0), "{err}");
    let file = dir.join("ok.license");
    std::fs::write(&file, out).unwrap();
    let (code, out, _) = run(&[
        "verify",
        file.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\nseats:     3\n"), "{out}");
    let (code, _, err) = run(&["verify", file.to_str().unwrap(), "--public-key", "abc"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--public-key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sessiond connect` stopped by SIGTERM (`kill`, systemd, `timeout`) gives its seat
/// back at once, as Ctrl-C does; a `--take-over` that names no session is refused.
#[tokio::test]
async fn connect_logs_out_on_sigterm_and_refuses_a_bad_take_over() {
    let s = Server::memory().await;
    let connect = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(["connect", "--app", "desk", "--user", "tess"])
            .args(["--server", &s.base, "--token", DESK_KEY])
            .args(extra)
            .env_remove("SESSIOND_TOKEN")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for bad in ["junk", "0192f0c1-7a3b-7cde-8f01-23456789abcd"] {
        // Waited for off the runtime: the server answering it runs on this one.
        let child = connect(&["--take-over", bad]);
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--take-over"), "{err}");
    }
    let child = connect(&[]);
    let open = |status: &'static str| {
        let s = &s;
        async move {
            let (_, v) = s
                .call(
                    Method::GET,
                    &format!("/v1/apps/desk/sessions?user=tess&status={status}"),
                    Some(DESK_KEY),
                    None,
                )
                .await;
            v["sessions"].as_array().cloned().unwrap_or_default()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while open("open").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Logged out."), "{stdout}");
    assert!(open("open").await.is_empty(), "the seat was given back");
    let closed = open("closed").await;
    assert_eq!(closed[0]["reason"], json!("logout"));
    s.stop().await;
}

/// The CLI's hints: where it looked for a token, a server that does not answer, an
/// operator's words for a session already closed.
#[tokio::test]
async fn refusals_come_with_a_hint_that_says_what_to_do() {
    let s = Server::memory().await;
    let empty = temp_dir("cli-hints");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
                .args(&args)
                .env_remove("SESSIOND_TOKEN")
                .env_remove("SESSIOND_SERVER")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let data_dir = empty.display().to_string();
    let (ok, err) = run(vec![
        "sessions".into(),
        "list".into(),
        "--server".into(),
        s.base.clone(),
        "--data-dir".into(),
        data_dir.clone(),
    ])
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("(unauthorized)"), "{err}");
    assert!(
        err.contains("no --token, no SESSIOND_TOKEN, and no"),
        "{err}"
    );
    // A port nobody listens on (this server's, once stopped).
    let gone = s.base.clone();
    let v = s.open("shop", SHOP_KEY, json!({})).await;
    let (ok, _) = run(vec![
        "sessions".into(),
        "kill".into(),
        id(&v),
        "--server".into(),
        s.base.clone(),
        "--token".into(),
        ADMIN.into(),
    ])
    .await
    .unwrap();
    assert!(ok);
    let (ok, err) = run(vec![
        "sessions".into(),
        "kill".into(),
        id(&v),
        "--server".into(),
        s.base.clone(),
        "--token".into(),
        ADMIN.into(),
    ])
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("that session is already closed"), "{err}");
    assert!(!err.contains("open a new one"), "{err}");
    s.stop().await;
    let (ok, err) = run(vec![
        "sessions".into(),
        "list".into(),
        "--server".into(),
        gone.clone(),
        "--token".into(),
        ADMIN.into(),
    ])
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains(&format!("is sessiond running at {gone}?")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&empty);
}

/// Every command's `--help` lists its exit codes, from the one table.
#[test]
fn every_command_lists_its_exit_codes() {
    for cmd in [
        "serve", "sessions", "apps", "connect", "migrate", "license", "repair",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}");
        for code in ["\n  0  ", "\n  1  ", "\n  2  "] {
            assert!(
                help.contains("Exit codes:\n") && help.contains(code),
                "{cmd} --help lacks {code:?}:\n{help}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_user_logs_one_person_out_everywhere() {
    let s = Server::memory().await;
    let ann1 = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let ann2 = s.open("shop", SHOP_KEY, json!({"user": "ann"})).await;
    let bob = s.open("shop", SHOP_KEY, json!({"user": "bob"})).await;
    let ann_desk = s.open("desk", DESK_KEY, json!({"user": "ann"})).await;
    let base = s.base.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        sessiond(
            &base,
            &["sessions", "kill", "--user", "ann", "--app", "shop"],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out, "closed 2 sessions of user ann in app shop\n");
    for (session, open) in [
        (&ann1, false),
        (&ann2, false),
        (&bob, true),
        (&ann_desk, true),
    ] {
        let (st, v) = s
            .call(
                Method::GET,
                &format!("/v1/sessions/{}", id(session)),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(v["status"] == "open", open, "{v}");
        if !open {
            assert_eq!(
                (&v["reason"], &v["closed_by"]),
                (&json!("closed_all"), &json!("admin"))
            );
        }
    }
    // An id and --user together are refused by the command line.
    let base = s.base.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        sessiond(&base, &["sessions", "kill", "some-id", "--user", "ann"])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    s.stop().await;
}

/// Shell completions and the manual come from the same definitions as `--help`: every
/// subcommand is in them, and `man --dir` writes a page per subcommand.
#[test]
fn completions_and_man_pages_name_every_subcommand() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = [
        "serve", "sessions", "connect", "migrate", "repair", "license", "apps", "backup",
    ];
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        for sub in subcommands {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let page = run(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH sessiond"),
        "{page}"
    );
    for sub in subcommands {
        assert!(page.contains(sub), "the manual lacks {sub}");
    }
    let dir = temp_dir("man");
    run(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "sessiond.1",
        "sessiond-serve.1",
        "sessiond-backup.1",
        "sessiond-sessions.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
