//! The browser heartbeat, served by the layer itself: the script pages load
//! (`<path>/heartbeat.js`, no build step) and the endpoint it talks to
//! (`<path>/heartbeat`). WEBDEV semantics, enforced by the core's two clocks: a beat
//! proves the page is open and never counts as activity; a closed page's session ends
//! `heartbeat_lost` after interval + grace; a page that turns the heartbeat off leaves
//! only the idle timeout.
//!
//! - `POST <path>/heartbeat`: one beat. `{"status":"open","active","interval_s","grace_s"}`,
//!   `{"status":"none"}` without a session, 410 `{"status":"closed","reason"}`.
//! - `PUT <path>/heartbeat` `{"active": bool, "interval_s"?: n}`: this page's settings
//!   (written only when they differ from the session's; otherwise it is a beat).
//!
//! Both need `Content-Type: application/json`, which a cross-site form cannot send.

use std::net::IpAddr;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_core::{Error, Heartbeat, Lookup, Resolve, Session as Record, Token};

use crate::config::Config;
use crate::error::SessionError;

/// The script, embedded at build time.
const SCRIPT: &str = include_str!("../heartbeat.js");

/// Largest settings body accepted.
const MAX_BODY: usize = 1024;

/// Which heartbeat route a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Script,
    Endpoint,
}

/// The heartbeat route `path` names, if any.
pub(crate) fn route(cfg: &Config, path: &str) -> Option<Route> {
    if !cfg.heartbeat.enabled {
        return None;
    }
    let rest = path.strip_prefix(cfg.heartbeat.path.as_str())?;
    match rest {
        "/heartbeat.js" => Some(Route::Script),
        "/heartbeat" => Some(Route::Endpoint),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    active: bool,
    #[serde(default)]
    interval_s: Option<u32>,
}

/// Answers a heartbeat route.
pub(crate) async fn handle(
    cfg: &Config,
    route: Route,
    req: Request<Body>,
    token: Option<Token>,
    ip: Option<IpAddr>,
) -> Response {
    let mut res = match route {
        Route::Script => script(req.method()),
        Route::Endpoint => endpoint(cfg, req, token, ip).await,
    };
    if route == Route::Endpoint {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn script(method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return not_allowed("GET, HEAD");
    }
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        SCRIPT,
    )
        .into_response()
}

fn not_allowed(allow: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allow)],
        axum::Json(json!({"error": "method_not_allowed", "message": format!("use {allow}")})),
    )
        .into_response()
}

fn bad_request(code: &str, status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

async fn endpoint(
    cfg: &Config,
    req: Request<Body>,
    token: Option<Token>,
    ip: Option<IpAddr>,
) -> Response {
    let method = req.method().clone();
    if method != Method::POST && method != Method::PUT {
        return not_allowed("POST, PUT");
    }
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return bad_request(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json",
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return bad_request(
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "the heartbeat body is limited to 1 KiB",
            )
        }
    };
    let Some(token) = token else {
        return axum::Json(json!({"status": "none"})).into_response();
    };
    let res = if method == Method::PUT {
        match parse(&body) {
            Ok(s) => configure(cfg, &token, s, ip).await,
            Err(m) => return bad_request("bad_request", StatusCode::BAD_REQUEST, &m),
        }
    } else {
        cfg.manager
            .heartbeat_in(Some(cfg.app.clone()), &token, ip)
            .await
    };
    answer(cfg, res)
}

fn parse(body: &Bytes) -> Result<Settings, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("send {\"active\": true|false, \"interval_s\"?: n}".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("bad heartbeat settings: {e}"))
}

/// Applies a page's settings, writing only when they change anything.
async fn configure(
    cfg: &Config,
    token: &Token,
    s: Settings,
    ip: Option<IpAddr>,
) -> Result<Record, Error> {
    let app = Some(cfg.app.clone());
    let current = cfg
        .manager
        .resolve_in(app.clone(), token, Resolve { touch: false, ip })
        .await?;
    let interval_s = s.interval_s.unwrap_or(cfg.heartbeat.interval_s).max(1);
    let want = Heartbeat {
        interval_s,
        grace_s: cfg.heartbeat.grace_s,
        active: s.active,
    };
    let same = match current.heartbeat {
        Some(h) => h == want || (!h.active && !want.active),
        None => !want.active,
    };
    if same {
        return cfg.manager.heartbeat_in(app, token, ip).await;
    }
    cfg.manager
        .set_heartbeat(
            Lookup::Token(token.hash()),
            want.active,
            Some(want.interval_s),
            Some(want.grace_s),
            ip,
        )
        .await
}

fn answer(cfg: &Config, res: Result<Record, Error>) -> Response {
    match res {
        Ok(s) => {
            let h = s.heartbeat;
            let body: Value = json!({
                "status": "open",
                "active": h.is_some_and(|h| h.active),
                "interval_s": h.map_or(cfg.heartbeat.interval_s, |h| h.interval_s),
                "grace_s": h.map_or(cfg.heartbeat.grace_s, |h| h.grace_s),
            });
            axum::Json(body).into_response()
        }
        Err(Error::InvalidToken) => axum::Json(json!({"status": "none"})).into_response(),
        Err(Error::SessionClosed(c)) => (
            StatusCode::GONE,
            axum::Json(json!({"status": "closed", "reason": c.reason})),
        )
            .into_response(),
        Err(e) => SessionError::from(e).into_response(),
    }
}
