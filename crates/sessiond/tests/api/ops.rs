//! Health, readiness, metrics and the OpenAPI document.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn health_readiness_metrics_openapi() {
    let s = Server::memory().await;
    let (st, v) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((st, v), (200, json!({"status": "ok"})));
    let (st, v) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((st, v["status"].clone()), (200, json!("ready")));
    let t = token(&s.open("desk", DESK_KEY, json!({})).await);
    s.call(Method::POST, "/v1/session/heartbeat", Some(&t), None)
        .await;
    s.call(Method::DELETE, "/v1/session", Some(&t), None).await;
    s.open("desk", DESK_KEY, json!({})).await;
    s.open("desk", DESK_KEY, json!({})).await;
    s.call(
        Method::POST,
        "/v1/apps/desk/sessions",
        Some(DESK_KEY),
        Some(json!({})),
    )
    .await;
    let text = s
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "sessiond_open_sessions{app=\"desk\"} 2",
        "sessiond_seats_used{app=\"desk\"} 2",
        "sessiond_seats_total{app=\"desk\"} 2",
        "sessiond_closes_total{app=\"desk\",reason=\"logout\"} 1",
        "sessiond_admission_refusals_total{app=\"desk\",reason=\"seats_exhausted\"} 1",
        "sessiond_heartbeats_total 1",
        "sessiond_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/session/heartbeat\",le=\"+Inf\"} 1",
        "sessiond_store_operation_duration_seconds_count{op=\"open\"}",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    let (st, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    for path in [
        "/v1/apps/{app}/sessions",
        "/v1/session",
        "/v1/session/data",
        "/v1/sessions/{id}/privileges",
        "/v1/apps/{app}/sessions/close-all",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    s.stop().await;
}

/// The metric series of the exposition text: its sample lines, without the values.
async fn series(s: &Server) -> std::collections::BTreeSet<String> {
    let text = s
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

/// Sends `n` requests whose methods and paths are all different and made up.
async fn junk(s: &Server, from: usize, n: usize) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (http, base) = (s.http.clone(), s.base.clone());
            tokio::spawn(async move {
                for i in (from + t..from + n).step_by(8) {
                    let method = Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
                    let (method, path) = match i % 4 {
                        0 => (method, format!("/junk/{i}")),
                        1 => (method, "/v1/session".to_string()),
                        2 => (Method::GET, format!("/v1/nothing/{i}")),
                        _ => (method, format!("/admin/junk{i}")),
                    };
                    let resp = http
                        .request(method, format!("{base}{path}"))
                        .bearer_auth(format!("junk:{i}"))
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Metric labels come from fixed sets: junk methods and paths fall into `other` and
/// `unmatched`, so no number of them grows the exposition (it did by 2 series each).
#[tokio::test]
async fn junk_requests_add_no_metric_series() {
    let s = Server::memory().await;
    junk(&s, 0, 64).await;
    // The first read of /metrics adds its own series.
    series(&s).await;
    let before = series(&s).await;
    assert!(
        before
            .iter()
            .any(|l| l.contains("method=\"other\",route=\"unmatched\"")),
        "{before:#?}"
    );
    junk(&s, 64, 10_000).await;
    let after = series(&s).await;
    let added: Vec<_> = after.difference(&before).collect();
    assert!(added.is_empty(), "10,000 junk requests added {added:#?}");
    s.stop().await;
}
