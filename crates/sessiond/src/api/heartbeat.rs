//! `/v1/apps/{app}/heartbeat.js` and `/v1/apps/{app}/heartbeat`: the browser heartbeat
//! for pages of apps behind a reverse proxy, served by sessiond-axum's own layer
//! ([`crate::web::Front`]), so a page gets what a Rust app's page gets: on or off and an
//! interval per page, a closed page's session ending `heartbeat_lost` after interval +
//! grace, a beat never counting as activity, the cookie read as the layer reads it, a
//! state-changing request from another site's page refused (403 `cross_site_request`),
//! settings changes throttled.
//!
//! Pages served through the proxy on the app's own origin load the script from a path
//! the proxy sends here (docs/PROXIES.md). Pages of another origin listed in the app's
//! `web.allowed_origins` may call it directly: this module answers their CORS preflight
//! and marks the answers readable by them, with the browser's cookies; any other
//! origin's preflight is refused, so its page cannot send the request at all.

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_core::Error;
use tower::ServiceExt;

use crate::auth::{OverHttps, PeerAddr};
use crate::error::ApiError;
use crate::state::SharedState;

/// The heartbeat script, for a page's `<script src>`.
#[utoipa::path(get, path = "/v1/apps/{app}/heartbeat.js", tag = "session",
    params(("app" = String, Path, description = "App name")),
    responses(
        (status = 200, description = "The browser heartbeat script (`data-interval`, `data-active` on its tag; see docs/PROXIES.md)", content_type = "text/javascript", body = String),
        (status = 404, description = "No such app", body = crate::views::ErrorBody)))]
pub async fn script(
    st: State<SharedState>,
    app: Result<Path<String>, axum::extract::rejection::PathRejection>,
    https: OverHttps,
    req: Request,
) -> Response {
    serve(st, app, https, req).await
}

/// A page's heartbeat settings (the body of `PUT /v1/apps/{app}/heartbeat`; a `POST`
/// may send it too, and it is not read there). sessiond-axum's layer reads it; this
/// type describes it.
#[derive(Debug, utoipa::ToSchema)]
pub struct PageHeartbeat {
    /// Whether this page keeps the heartbeat on.
    pub active: bool,
    /// Seconds between beats (default: the app's `web.heartbeat_interval_s`).
    pub interval_s: Option<u32>,
}

/// With the app's session cookie: `POST` is one beat of a page (never activity; the
/// JSON body is not read), `PUT` this page's settings (written only when they differ
/// from the session's, else a beat; at most once a second per session, in bursts of
/// five).
#[utoipa::path(method(post, put), path = "/v1/apps/{app}/heartbeat", tag = "session",
    params(("app" = String, Path, description = "App name")),
    request_body = PageHeartbeat,
    responses(
        (status = 200, description = "`{\"status\":\"open\",\"active\",\"interval_s\",\"grace_s\"}`, or `{\"status\":\"none\"}` without a session", body = Object),
        (status = 400, description = "Bad settings (`PUT`), or an address the session is not bound to (`ip_mismatch`)", body = crate::views::ErrorBody),
        (status = 403, description = "Sent from another site's page (`cross_site_request`)", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody),
        (status = 410, description = "`{\"status\":\"closed\",\"reason\"}`: the session has ended", body = Object),
        (status = 413, description = "A body over 1 KiB", body = crate::views::ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = crate::views::ErrorBody),
        (status = 429, description = "Settings changed more than once a second (`Retry-After`)", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn endpoint(
    st: State<SharedState>,
    app: Result<Path<String>, axum::extract::rejection::PathRejection>,
    https: OverHttps,
    req: Request,
) -> Response {
    serve(st, app, https, req).await
}

async fn serve(
    State(st): State<SharedState>,
    app: Result<Path<String>, axum::extract::rejection::PathRejection>,
    OverHttps(https): OverHttps,
    mut req: Request,
) -> Response {
    let app = app.map_or_else(|_| String::new(), |Path(a)| a);
    let Some(front) = st.fronts.get(&app) else {
        return ApiError::from(Error::UnknownApp(app)).into_response();
    };
    let origin = req
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim().to_ascii_lowercase());
    let allowed = origin
        .filter(|o| front.allowed_origins.contains(o))
        .and_then(|o| HeaderValue::from_str(&o).ok());
    let mut res = if req.method() == Method::OPTIONS {
        match preflight(allowed.is_some(), &req) {
            Some(res) => res,
            None => return preflight_refused(),
        }
    } else {
        // What the layer reads: the TCP peer (it applies the trusted-proxy rule itself,
        // with the server's proxies) and whether the server decided it was HTTPS.
        if let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>().copied() {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        if https {
            req.extensions_mut().insert(sessiond_axum::ServedOverTls);
        }
        match front.heartbeat.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    };
    let h = res.headers_mut();
    h.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    res
}

/// The answer to a CORS preflight of an allowed origin asking for `POST` or `PUT`: 204
/// naming what it may send; none otherwise.
fn preflight(allowed: bool, req: &Request) -> Option<Response> {
    let asks = req
        .headers()
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .map(HeaderValue::as_bytes);
    if !allowed || !matches!(asks, Some(b"POST" | b"PUT")) {
        return None;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PUT"),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    Some(res)
}

/// A refused preflight: 403 without the CORS headers, so the browser sends nothing.
fn preflight_refused() -> Response {
    let mut res = ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "only an origin of the app's web.allowed_origins may send POST or PUT here",
    )
    .into_response();
    res.headers_mut()
        .insert(VARY, HeaderValue::from_static("Origin"));
    res
}
