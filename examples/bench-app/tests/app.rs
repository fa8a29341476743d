//! Run with: `cargo nextest run -p bench-app`
//!
//! The three routes through the real router on the real file store.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use bench_app::StoreKind;
use tower::ServiceExt;

async fn get(
    app: &axum::Router,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let set = res
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    (status, set, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn bare_read_and_counter() {
    let dir = std::env::temp_dir().join(format!("bench-app-test-{}", std::process::id()));
    let app = bench_app::app(bench_app::manager(StoreKind::File, &dir, true).unwrap()).unwrap();

    assert_eq!(
        get(&app, "/bare", None).await,
        (StatusCode::OK, None, "ok".into())
    );
    assert_eq!(
        get(&app, "/read", None).await,
        (StatusCode::OK, None, "0".into())
    );

    let (status, cookie, body) = get(&app, "/counter", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"));
    let cookie = cookie.expect("the first increment sets the cookie");
    assert!(cookie.starts_with("SESSION=bench:"));
    assert_eq!(
        get(&app, "/counter", Some(&cookie)).await,
        (StatusCode::OK, None, "2".into())
    );
    assert_eq!(
        get(&app, "/read", Some(&cookie)).await,
        (StatusCode::OK, None, "2".into())
    );
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn memory_store_works_too() {
    let app = bench_app::app(
        bench_app::manager(StoreKind::Memory, std::path::Path::new("."), true).unwrap(),
    )
    .unwrap();
    let (_, cookie, _) = get(&app, "/counter", None).await;
    assert_eq!(get(&app, "/read", cookie.as_deref()).await.2, "1");
}
