//! What a session token may do with its own session: read it (and count as activity),
//! heartbeat, suspend or retune the heartbeat, patch its storage, log out; and with the
//! other open sessions of its own user in its own app ("my sessions"): list them, close
//! one, close all but itself.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use sessiond_core::{Lookup, Resolve, Session};
use utoipa::{IntoParams, ToSchema};

use super::{Json, Query};
use crate::auth::{ClientAddr, SessionToken};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::{HeartbeatAnswer, SessionView, Status};

/// A session answer with its `ETag`. The body is written into a buffer sized for the
/// session at once (the hot path of every resolve).
pub fn session_response(status: StatusCode, s: &Session) -> Response {
    let mut body = Vec::with_capacity(640 + s.data.as_str().len() + s.info.as_str().len());
    if let Err(e) = serde_json::to_writer(&mut body, &crate::views::SessionJson(s)) {
        tracing::error!(error = %e, session = %s.id, "a session could not be written as JSON");
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
        .into_response();
    }
    let json = HeaderValue::from_static("application/json");
    let mut resp = (status, [(axum::http::header::CONTENT_TYPE, json)], body).into_response();
    tag(&mut resp, s.version);
    resp
}

/// Sets `ETag: "<version>"`.
pub fn tag(resp: &mut Response, version: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
}

/// `GET /v1/session` options.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TouchQuery {
    /// Count this read as activity (default true).
    pub touch: Option<bool>,
}

/// The caller's own session; counts as activity unless `touch=false`.
#[utoipa::path(get, path = "/v1/session", tag = "session", params(TouchQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Bad query, or a request from another address than the session's (bind_ip)", body = crate::views::ErrorBody),
        (status = 401, description = "No token, or a token that matches no session", body = crate::views::ErrorBody),
        (status = 410, description = "The session is closed; `reason` says why", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn get_session(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
    Query(q): Query<TouchQuery>,
) -> ApiResult<Response> {
    let touch = q.touch.unwrap_or(true);
    let s = st.manager.resolve(&token, Resolve { touch, ip }).await?;
    Ok(session_response(StatusCode::OK, &s))
}

/// Records a heartbeat. Never counts as activity.
#[utoipa::path(post, path = "/v1/session/heartbeat", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Alive; beat again within `next_heartbeat_s`", body = HeartbeatAnswer),
        (status = 400, description = "bind_ip refused the address", body = crate::views::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::views::ErrorBody),
        (status = 410, description = "The session is closed; `reason` says why", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn heartbeat(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
) -> ApiResult<Json<HeartbeatAnswer>> {
    let s = st.manager.heartbeat(&token, ip).await?;
    st.metrics.heartbeat();
    Ok(Json(HeartbeatAnswer {
        status: Status::Open,
        next_heartbeat_s: s.heartbeat.filter(|h| h.active).map(|h| h.interval_s),
    }))
}

/// Heartbeat settings to apply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatChange {
    /// On (resume) or off (suspend: only the idle timeout applies meanwhile).
    pub active: bool,
    /// New interval in seconds.
    pub interval_s: Option<u32>,
    /// New grace in seconds.
    pub grace_s: Option<u32>,
}

/// Suspends, resumes or retunes this session's heartbeat, within the app's heartbeat
/// policy: `heartbeat.allow_suspend` (by default false for an app with seats) and
/// `heartbeat.max_interval_s`.
#[utoipa::path(put, path = "/v1/session/heartbeat", tag = "session", request_body = HeartbeatChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session with its new heartbeat", body = SessionView),
        (status = 400, description = "Bad values, or a change the app's heartbeat policy refuses (`bad_request`; the message names `heartbeat.allow_suspend`, `heartbeat.max_interval_s` or `heartbeat.grace_s`)", body = crate::views::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::views::ErrorBody),
        (status = 410, description = "The session is closed", body = crate::views::ErrorBody),
        (status = 413, description = "The body is over the size limit", body = crate::views::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::views::ErrorBody),
        (status = 422, description = "Wrong fields or types", body = crate::views::ErrorBody)))]
pub async fn set_heartbeat(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
    Json(body): Json<HeartbeatChange>,
) -> ApiResult<Response> {
    let s = st
        .manager
        .set_heartbeat(
            Lookup::Token(token.hash()),
            body.active,
            body.interval_s,
            body.grace_s,
            ip,
        )
        .await?;
    Ok(session_response(StatusCode::OK, &s))
}

/// Parses `If-Match`: a quoted or bare version; `*` means any.
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        ApiError::bad_request("If-Match must be a session version, quoted (\"3\") or bare (3)")
    })
}

/// Applies a JSON merge patch (RFC 7396) to the storage; with `If-Match`, only if the
/// session is still at that version. Counts as activity.
#[utoipa::path(patch, path = "/v1/session/data", tag = "session",
    request_body(content = Object, description = "JSON merge patch: keys set to null are removed"),
    params(("If-Match" = Option<String>, Header, description = "Expected version, quoted or bare")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session after the patch (ETag: new version)", body = SessionView),
        (status = 400, description = "Invalid JSON, a patch that is not an object, or a bad If-Match", body = crate::views::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::views::ErrorBody),
        (status = 410, description = "The session is closed", body = crate::views::ErrorBody),
        (status = 412, description = "The session is at another version; `version` is the current one", body = crate::views::ErrorBody),
        (status = 413, description = "The body or the resulting storage is over its limit", body = crate::views::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::views::ErrorBody),
        (status = 422, description = "Wrong types", body = crate::views::ErrorBody)))]
pub async fn patch_data(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Json(patch): Json<Value>,
) -> ApiResult<Response> {
    let expect = if_match(&headers)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "the patch must be a JSON object (RFC 7396 merge patch)",
        ));
    }
    let s = st
        .manager
        .update_data(Lookup::Token(token.hash()), patch, expect, ip)
        .await?;
    Ok(session_response(StatusCode::OK, &s))
}

/// Logs out: closes the session as `logout`.
#[utoipa::path(delete, path = "/v1/session", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The closed session", body = SessionView),
        (status = 400, description = "bind_ip refused the address; the session stays open", body = crate::views::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::views::ErrorBody),
        (status = 410, description = "Already closed", body = crate::views::ErrorBody)))]
pub async fn logout(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
) -> ApiResult<Response> {
    let s = st.manager.logout(&token, ip).await?;
    Ok(session_response(StatusCode::OK, &s))
}

/// "My sessions": the other open sessions of the caller's user in the caller's app,
/// oldest first (client label, address, user agent, times; never a token). A guest has
/// none. Counts as activity.
#[utoipa::path(get, path = "/v1/session/others", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The other sessions", body = crate::views::OtherSessions),
        (status = 400, description = "bind_ip refused the address", body = crate::views::ErrorBody),
        (status = 401, description = "No token, or a token that matches no session", body = crate::views::ErrorBody),
        (status = 410, description = "The caller's session is closed", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn my_other_sessions(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
) -> ApiResult<Json<crate::views::OtherSessions>> {
    let (_, others) = st.manager.my_other_sessions(&token, ip).await?;
    Ok(Json(crate::views::OtherSessions {
        sessions: others.iter().map(SessionView::from).collect(),
    }))
}

/// Closes one of the caller's other sessions (same user, same app) as `logout`, by the
/// caller's session (`closed_by: "session:<id>"`). Any other id, the caller's own
/// included, answers exactly as an unknown id does.
#[utoipa::path(delete, path = "/v1/session/others/{id}", tag = "session",
    params(("id" = String, Path, description = "Id of one of the caller's other sessions")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The closed session", body = SessionView),
        (status = 400, description = "bind_ip refused the address", body = crate::views::ErrorBody),
        (status = 401, description = "No token, or a token that matches no session", body = crate::views::ErrorBody),
        (status = 404, description = "Not one of the caller's other sessions (the same answer as an unknown id)", body = crate::views::ErrorBody),
        (status = 410, description = "The caller's session, or that one, is closed", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn close_my_other(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    let id = super::scope::session_id(&id)?;
    let s = st.manager.close_my_other(&token, ip, id).await?;
    tracing::info!(session = %s.id, app = %s.app, by = %s.closed.map_or_else(String::new, |c| c.by.to_string()), "session closed by its user from another session");
    Ok(session_response(StatusCode::OK, &s))
}

/// Closes every other open session of the caller's user in the caller's app ("log out
/// everywhere but here"), as `logout` by the caller's session; the caller's stays open.
/// They are closed one by one: one opened meanwhile may stay open.
#[utoipa::path(post, path = "/v1/session/others/close-all", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were closed", body = crate::views::ClosedCount),
        (status = 400, description = "bind_ip refused the address", body = crate::views::ErrorBody),
        (status = 401, description = "No token, or a token that matches no session", body = crate::views::ErrorBody),
        (status = 410, description = "The caller's session is closed", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn close_my_others(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
) -> ApiResult<Json<crate::views::ClosedCount>> {
    let closed = st.manager.close_my_others(&token, ip).await?;
    Ok(Json(crate::views::ClosedCount {
        closed: closed.len(),
    }))
}
