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
