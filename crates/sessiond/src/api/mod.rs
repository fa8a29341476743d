//! The HTTP API v1: [`router`] builds every route over a [`SharedState`], with JSON
//! errors for unknown routes, wrong methods, bad bodies, timeouts and panics.
//!
//! - [`session`]: what a session token may do with its own session;
//! - [`apps`]: what an app key (or the admin token) may do with an app's sessions;
//! - [`scope`]: how an operator route checks its caller (the only way it can);
//! - [`ops`]: health, readiness, metrics, the OpenAPI document;
//! - [`events`]: Server-Sent Event streams (the app stream's frames: `app_stream`).

mod app_stream;
pub mod apps;
pub mod backup;
pub mod events;
pub mod forward_auth;
pub mod heartbeat;
pub mod hooks;
pub mod ops;
pub mod reload;
pub mod scope;
pub mod session;
mod strict;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use self::scope::OperatorRoutes;
use crate::error::ApiError;
use crate::metrics::UNMATCHED;
use crate::state::SharedState;

/// A JSON body whose rejections are API errors; an object that repeats a key is
/// refused (400 `invalid_json`; see the `strict` module).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !json {
            return Err(crate::error::unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| crate::error::body_error(e.status()))?;
        Ok(Json(parse(&bytes)?))
    }
}

/// Reads a JSON body: a repeated key is refused before serde would keep its last value.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Some(key) = strict::repeated_key(bytes) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: an object names the key {key} twice"),
        ));
    }
    let axum::Json(v) = axum::Json::<T>::from_bytes(bytes)?;
    Ok(v)
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// An optional JSON body: an empty one (or only white space) is `T::default()`;
/// anything else must be sent as JSON (415 otherwise) and is read like [`Json`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| crate::error::body_error(e.status()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(crate::error::unsupported_media_type());
        }
        Ok(OptionalJson(parse(&bytes)?))
    }
}

/// Whether a `Content-Type` value is JSON (`application/json` or `application/*+json`,
/// parameters allowed), as axum's own JSON extractor decides.
fn is_json_media_type(v: &str) -> bool {
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Query parameters whose rejections are API errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The routes of operators (the admin token, app keys): each handler starts with the
/// scope that checks the caller against what the path names ([`scope`]).
fn operator_routes() -> Router<SharedState> {
    use axum::routing::MethodFilter as M;
    OperatorRoutes::new()
        .route(M::GET, "/v1/apps", apps::list_apps)
        .route(M::GET, "/v1/apps/{app}", apps::get_app)
        .route(M::POST, "/v1/apps/{app}/sessions", apps::open)
        .route(M::GET, "/v1/apps/{app}/sessions", apps::list_sessions)
        .route(
            M::POST,
            "/v1/apps/{app}/sessions/close-all",
            apps::close_all,
        )
        .route(M::GET, "/v1/apps/{app}/events", events::app_events)
        .route(M::GET, "/v1/sessions/{id}", apps::get_session)
        .route(M::DELETE, "/v1/sessions/{id}", apps::kill)
        .route(M::PUT, "/v1/sessions/{id}/privileges", apps::set_privileges)
        .route(M::POST, "/v1/backups", backup::backup)
        .route(M::POST, "/v1/reload", reload::reload)
        .route(M::GET, "/v1/apps/{app}/hooks", hooks::list_hooks)
        .route(
            M::GET,
            "/v1/apps/{app}/hooks/deliveries",
            hooks::list_deliveries,
        )
        .route(
            M::POST,
            "/v1/apps/{app}/hooks/deliveries/{id}/resend",
            hooks::resend,
        )
        .into_router()
}

/// The whole API.
pub fn router(state: SharedState, max_body_bytes: usize) -> Router {
    let routes = Router::new()
        .route(
            "/v1/session",
            get(session::get_session).delete(session::logout),
        )
        .route(
            "/v1/session/heartbeat",
            post(session::heartbeat).put(session::set_heartbeat),
        )
        .route(
            "/v1/session/data",
            axum::routing::patch(session::patch_data),
        )
        .route("/v1/session/events", get(events::session_events))
        .route("/v1/session/others", get(session::my_other_sessions))
        .route(
            "/v1/session/others/{id}",
            axum::routing::delete(session::close_my_other),
        )
        .route(
            "/v1/session/others/close-all",
            post(session::close_my_others),
        )
        .route(
            "/v1/apps/{app}/forward-auth",
            get(forward_auth::forward_auth),
        )
        .route("/v1/apps/{app}/heartbeat.js", get(heartbeat::script))
        .route(
            "/v1/apps/{app}/heartbeat",
            post(heartbeat::endpoint)
                .put(heartbeat::endpoint)
                .options(heartbeat::endpoint),
        )
        .merge(operator_routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    protect(routes, state, max_body_bytes)
}

/// The protections every route of the server sits behind, the API's and the admin
/// console's alike: a body limit (413 at once for a declared oversize body), a time
/// limit per request, `Cache-Control: no-store`, bounded metrics, and a panic catcher
/// that answers 500 with the API's error body.
pub fn protect(routes: Router, state: SharedState, max_body_bytes: usize) -> Router {
    routes
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            refuse_declared_oversize(max_body_bytes, req, next)
        }))
        .layer(middleware::from_fn_with_state(state, guard))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the server log has the details",
    )
    .into_response()
}

/// Answers 413 at once to a request whose `Content-Length` is over the body limit,
/// before any of the body is read (otherwise such a request would wait for bytes it
/// will never be allowed to send until the request timeout).
async fn refuse_declared_oversize(max: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return crate::error::body_error(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    }
    next.run(req).await
}

/// Times every request (metrics), bounds it in time (event streams excepted) and marks
/// every answer `Cache-Control: no-store` (sessions must not be cached) unless it says
/// otherwise (only the heartbeat script does: it is the same for everyone).
async fn guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // The matched template, never the path itself: a path is the client's to choose.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |p| p.as_str().to_string());
    let streaming = route.ends_with("/events");
    let mut resp = if streaming {
        next.run(req).await
    } else {
        match tokio::time::timeout(state.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long; retry shortly",
            )
            .into_response(),
        }
    };
    resp.headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    state.metrics.request(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}
