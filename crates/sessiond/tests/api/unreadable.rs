//! A session record the store cannot read (planted behind the server's back, as the
//! store crates' own tests do) over HTTP, on Redis and PostgreSQL: an app key learns
//! nothing of it (404 `not_found`, as for an unknown id, and the record stays), the
//! admin token is told what it is and removes it with `DELETE /v1/sessions/{id}` or
//! `sessiond sessions kill`, which frees its seat.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// Replaces the stored record of session `id` (app `desk`) with text no decoder reads.
async fn plant(kind: &str, url: &str, ns: &str, id: &str) {
    if kind == "postgres" {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let n = client
            .execute(
                &format!(
                    "UPDATE \"{ns}\".sessions SET body = '{{\"not\": \"a session\"}}'::json \
                     WHERE id = $1::text::uuid"
                ),
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    } else {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let record = format!("{ns}:{{desk}}:s:{id}");
        let n: i64 = redis::cmd("EXISTS")
            .arg(&record)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "no record at {record}");
        let () = redis::cmd("HSET")
            .arg(&record)
            .arg("rev")
            .arg("x")
            .arg("json")
            .arg("\u{1}not json {")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

fn kill_with_cli(base: &str, id: &str, json: bool) -> (bool, String, String) {
    let mut args = vec!["sessions", "kill", id];
    if json {
        args.push("--json");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(&args)
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

async fn unreadable_record_over_http(kind: &str) {
    let Some((url, ns)) = shared_store(kind, "unreadable-record test").await else {
        return;
    };
    let mut c = config(None);
    let sep = if url.contains('?') { '&' } else { '?' };
    c.store = format!("{url}{sep}namespace={ns}").parse().unwrap();
    let s = Server::start(c).await;

    let bad = id(&s.open("desk", DESK_KEY, json!({"user": "bob"})).await);
    let good = id(&s.open("desk", DESK_KEY, json!({"user": "ann"})).await);
    plant(kind, &url, &ns, &bad).await;
    let path = format!("/v1/sessions/{bad}");
    let unknown = "0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e";

    // App keys, its own app's or another's, learn nothing: the answer of an unknown id.
    for key in [DESK_KEY, SHOP_KEY] {
        for method in [Method::GET, Method::DELETE] {
            let (st, v) = s.call(method.clone(), &path, Some(key), None).await;
            assert_error(st, &v, 404, "not_found");
            let (_, u) = s
                .call(method, &format!("/v1/sessions/{unknown}"), Some(key), None)
                .await;
            assert_eq!(
                v["message"].as_str().unwrap().replace(&bad, unknown),
                u["message"].as_str().unwrap(),
                "the same words as for an unknown id"
            );
        }
    }
    // The admin token is told what it is and how to remove it; the record is still there.
    let (st, v) = s.call(Method::GET, &path, Some(ADMIN), None).await;
    assert_error(st, &v, 500, "session_unreadable");
    assert!(v["message"].as_str().unwrap().contains("DELETE"), "{v}");
    // Meeting it is counted in the metrics.
    let metrics = s
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let met: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sessiond_store_unreadable_records_total{event=\"met\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no unreadable-records series: {metrics}"));
    assert!(met >= 1, "{metrics}");
    let (st, v) = s
        .call(Method::GET, "/v1/apps/desk", Some(ADMIN), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["seats"],
        json!({"used": 2, "total": 2}),
        "it keeps its seat"
    );

    let (st, v) = s.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"id": bad, "discarded": true}));
    let (st, v) = s.call(Method::GET, &path, Some(ADMIN), None).await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_error(st, &v, 404, "not_found");
    let (_, v) = s
        .call(Method::GET, "/v1/apps/desk", Some(ADMIN), None)
        .await;
    assert_eq!(
        v["seats"],
        json!({"used": 1, "total": 2}),
        "its seat is free"
    );

    // The CLI does the same, in words and in JSON; the good session is untouched.
    let again = id(&s.open("desk", DESK_KEY, json!({"user": "cy"})).await);
    plant(kind, &url, &ns, &again).await;
    let base = s.base.clone();
    let target = again.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || kill_with_cli(&base, &target, false))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains(&again) && out.contains("removed"), "{out}");
    let third = id(&s.open("desk", DESK_KEY, json!({"user": "dee"})).await);
    plant(kind, &url, &ns, &third).await;
    let base = s.base.clone();
    let target = third.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || kill_with_cli(&base, &target, true))
        .await
        .unwrap();
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"id": third, "discarded": true}));
    let (st, v) = s
        .call(
            Method::GET,
            &format!("/v1/sessions/{good}"),
            Some(DESK_KEY),
            None,
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("open")), "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_record_over_http_on_redis() {
    unreadable_record_over_http("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_record_over_http_on_postgres() {
    unreadable_record_over_http("postgres").await;
}
