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
//!   (written only when they differ from the session's; otherwise it is a beat). Each
//!   change is a durable write: at most one per second per session, in bursts of five;
//!   beyond, 429 `too_many_requests` with `Retry-After`, and nothing is written.
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
            Ok(s) => match configure(cfg, &token, s, ip).await {
                Configured::Done(res) => *res,
                Configured::Throttled(wait) => return throttled(cfg, wait),
            },
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

/// What a settings request came to.
enum Configured {
    /// Applied (or a beat, when nothing changed), or refused by the Manager.
    Done(Box<Result<Record, Error>>),
    /// The session changed its settings too often: nothing written; retry after this.
    Throttled(std::time::Duration),
}

/// Applies a page's settings, writing only when they change anything, and only as often
/// as the layer's throttle allows.
async fn configure(cfg: &Config, token: &Token, s: Settings, ip: Option<IpAddr>) -> Configured {
    let app = Some(cfg.app.clone());
    let current = match cfg
        .manager
        .resolve_in(app.clone(), token, Resolve { touch: false, ip })
        .await
    {
        Ok(c) => c,
        Err(e) => return Configured::Done(Box::new(Err(e))),
    };
    let interval_s = s.interval_s.unwrap_or(cfg.heartbeat.interval_s).max(1);
    let want = Heartbeat {
        interval_s,
        grace_s: cfg.heartbeat.grace_s,
        active: s.active,
        // The app's lease stays what the session opened with.
        lease_s: current.heartbeat.map_or(0, |h| h.lease_s),
    };
    let same = match current.heartbeat {
        Some(h) => h == want || (!h.active && !want.active),
        None => !want.active,
    };
    if same {
        return Configured::Done(Box::new(cfg.manager.heartbeat_in(app, token, ip).await));
    }
    if let Err(wait) = cfg.settings_throttle.take(current.id) {
        return Configured::Throttled(wait);
    }
    Configured::Done(Box::new(
        cfg.manager
            .set_heartbeat(
                Lookup::Token(token.hash()),
                want.active,
                Some(want.interval_s),
                Some(want.grace_s),
                ip,
            )
            .await,
    ))
}

/// 429 for a settings change over the throttle, with `Retry-After` in whole seconds.
fn throttled(cfg: &Config, wait: std::time::Duration) -> Response {
    cfg.stats.count_settings_throttled();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut res = bad_request(
        "too_many_requests",
        StatusCode::TOO_MANY_REQUESTS,
        "heartbeat settings change at most once a second; try again shortly",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
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
