//! What an app key (or the admin token) may do: open sessions, list, read and close
//! them, change privileges, disconnect everyone but some, and read the app.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use sessiond_core::store::{ListQuery, StatusFilter};
use sessiond_core::{
    Client, CloseReason, ClosedById, HeartbeatRequest, JsonObject, Lookup, OpenRequest, SessionId,
};
use utoipa::{IntoParams, ToSchema};

use super::scope::{AdminScope, AppScope, OpenScope, SessionScope};
use super::session::{session_response, tag};
use super::{Json, OptionalJson, Query};
use crate::auth::ClientAddr;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use crate::views::{
    AppList, AppView, ClientView, ClosedCount, SessionPage, SessionView, SessionWithToken,
};

/// A heartbeat asked for at open.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds before the session is lost (the app's default when absent).
    pub grace_s: Option<u32>,
}

/// What to open.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenBody {
    /// The user; none for a guest.
    pub user: Option<String>,
    /// Privileges.
    #[serde(default)]
    pub privileges: Vec<String>,
    /// Public facts about the holder (an object).
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
    /// Initial storage (an object).
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
    /// The client (its IP defaults to the caller's address).
    pub client: Option<ClientView>,
    /// A heartbeat for this session (else the app's).
    pub heartbeat: Option<HeartbeatBody>,
    /// Idle timeout for this session, in seconds (else the app's).
    pub idle_timeout_s: Option<u32>,
    /// Id of an open session of this app to take over (closed as `taken_over`).
    pub take_over: Option<String>,
}

fn client(view: Option<ClientView>, addr: Option<std::net::IpAddr>) -> ApiResult<Client> {
    let view = view.unwrap_or_default();
    let ip = match view.ip {
        Some(ip) => Some(ip.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "client.ip {} is not an IP address",
                sessiond_core::quoted(&ip)
            ))
        })?),
        None => addr,
    };
    Ok(Client {
        label: view.label.map(Box::from),
        ip,
        user_agent: view.user_agent.map(Box::from),
    })
}

/// Opens a session. Admission (seats, per-user limit, take-over) is atomic.
#[utoipa::path(post, path = "/v1/apps/{app}/sessions", tag = "apps", request_body = OpenBody,
    params(("app" = String, Path, description = "App name")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Opened; `token` is the session's secret", body = SessionWithToken),
        (status = 400, description = "Bad values", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "A credential of another app or a read-only operator (`forbidden`), a client credential asking for privileges or an address (`forbidden`), or the app's license is expired (`license_expired`) or invalid (`license_invalid`)", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody),
        (status = 409, description = "`seats_exhausted` (with `seats` and the open `sessions`), `user_limit` or `take_over_target`", body = crate::views::ErrorBody),
        (status = 413, description = "Too large", body = crate::views::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::views::ErrorBody),
        (status = 422, description = "Wrong fields or types", body = crate::views::ErrorBody),
        (status = 429, description = "`too_many_opens`: the app's client credentials opened as many sessions this minute as allowed (`retry_after_s`, and `Retry-After`)", body = crate::views::ErrorBody),
        (status = 503, description = "`store_unavailable` (nothing changed; retry) or `outcome_unknown` (the open was sent to the store without an answer: list the user's sessions before retrying)", body = crate::views::ErrorBody)))]
pub async fn open(
    OpenScope {
        scope: AppScope {
            st, app, policy, ..
        },
        client: by_client,
    }: OpenScope,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<OpenBody>,
) -> ApiResult<Response> {
    if by_client {
        client_may_open(&st, &app, &policy, &body)?;
    }
    st.licenses.check_open(&app)?;
    let take_over = match body.take_over.as_deref() {
        Some(t) => Some(t.parse::<SessionId>().map_err(|_| {
            ApiError::new(
                StatusCode::CONFLICT,
                "take_over_target",
                "take_over is not the id of an open session of this app",
            )
        })?),
        None => None,
    };
    let req = OpenRequest {
        user: body.user,
        privileges: body.privileges,
        info: json_object(body.info.as_ref())?,
        data: json_object(body.data.as_ref())?,
        client: client(body.client, addr)?,
        heartbeat: body.heartbeat.map(|h| HeartbeatRequest {
            interval_s: h.interval_s,
            grace_s: h.grace_s,
        }),
        idle_timeout_s: body.idle_timeout_s,
        take_over,
    };
    match st.manager.open(&app, req).await {
        Ok(o) => {
            let mut resp = (
                StatusCode::CREATED,
                axum::Json(SessionWithToken {
                    session: SessionView::from(&o.session),
                    token: o.token.expose().to_string(),
                }),
            )
                .into_response();
            tag(&mut resp, o.session.version);
            Ok(resp)
        }
        Err(e) => {
            if matches!(
                e,
                sessiond_core::Error::SeatsExhausted { .. }
                    | sessiond_core::Error::UserLimit { .. }
                    | sessiond_core::Error::TakeOverTarget
            ) {
                st.metrics.refusal(&app, e.code());
            }
            match e {
                // A client credential sees the other holders of a full house in the
                // usual shape but only by name, label and times: enough to choose one
                // to take over, nothing of where they are or what they hold.
                sessiond_core::Error::SeatsExhausted { ref holders, .. } if by_client => {
                    let holders = holders
                        .iter()
                        .map(|s| {
                            let mut shown = s.clone();
                            shown.client.ip = None;
                            shown.client.user_agent = None;
                            shown.info = JsonObject::default();
                            shown.data = JsonObject::default();
                            shown.privileges = Default::default();
                            serde_json::json!(SessionView::from(&shown))
                        })
                        .collect();
                    let mut err = ApiError::from(e);
                    err.extra.insert("sessions".into(), Value::Array(holders));
                    Err(err)
                }
                e => Err(e.into()),
            }
        }
    }
}

/// What a client credential may not ask when it opens: privileges (a reserved one
/// would skip the seat count; the app's back end grants them with
/// `PUT /v1/sessions/{id}/privileges`), another address than its connection's, a
/// heartbeat its session could not set itself afterwards (the app's heartbeat policy),
/// a longer idle timeout than the app's, more opens than
/// [`crate::config::Config::client_opens_per_minute`].
fn client_may_open(
    st: &SharedState,
    app: &str,
    policy: &sessiond_core::Policy,
    body: &OpenBody,
) -> ApiResult<()> {
    if !body.privileges.is_empty() {
        return Err(ApiError::forbidden(
            "a client credential opens sessions without privileges; the app's back end grants them",
        ));
    }
    if body.client.as_ref().is_some_and(|c| c.ip.is_some()) {
        return Err(ApiError::forbidden(
            "a client credential cannot name the client's address: it is the connection's",
        ));
    }
    if let Some(h) = &body.heartbeat {
        policy
            .check_own_heartbeat(true, Some(h.interval_s), h.grace_s)
            .map_err(ApiError::bad_request)?;
    }
    if body
        .idle_timeout_s
        .is_some_and(|t| t > policy.idle_timeout_s)
    {
        return Err(ApiError::bad_request(format!(
            "a client credential may not ask an idle timeout over the app's ({} s)",
            policy.idle_timeout_s
        )));
    }
    if let Err(wait) = st.client_opens.take(app) {
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_opens",
            format!("this app's client credentials open at most {} sessions a minute; retry in {wait} s", st.client_opens.per_minute()),
        );
        err.extra.insert("retry_after_s".into(), Value::from(wait));
        return Err(err);
    }
    Ok(())
}

/// Which sessions to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `open` (default), `closed` (history) or `any`.
    pub status: Option<String>,
    /// Only this user.
    pub user: Option<String>,
    /// Cursor: the `next` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// `asc` (oldest first, default) or `desc` (newest first).
    pub order: Option<String>,
}

/// Lists an app's sessions (never their tokens), a page at a time.
#[utoipa::path(get, path = "/v1/apps/{app}/sessions", tag = "apps",
    params(("app" = String, Path, description = "App name"), ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page", body = SessionPage),
        (status = 400, description = "Bad parameters", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "An app key of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody)))]
pub async fn list_sessions(
    AppScope { st, app, .. }: AppScope,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<SessionPage>> {
    let status = match p.status.as_deref().unwrap_or("open") {
        "open" => StatusFilter::Open,
        "closed" => StatusFilter::Closed,
        "any" => StatusFilter::Any,
        other => {
            return Err(ApiError::invalid_query(format!(
                "status {}: use open, closed or any",
                sessiond_core::quoted(other)
            )))
        }
    };
    let newest_first = match p.order.as_deref().unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(ApiError::invalid_query(format!(
                "order {}: use asc or desc",
                sessiond_core::quoted(other)
            )))
        }
    };
    let after = match p.after.as_deref() {
        Some(a) => Some(a.parse::<SessionId>().map_err(|_| {
            ApiError::invalid_query("after must be a session id (the previous page's next)")
        })?),
        None => None,
    };
    let max = st.manager.limits().max_page;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {max}"
        )));
    }
    let page = st
        .manager
        .list(ListQuery {
            app: Some(app),
            status,
            user: p.user,
            after,
            newest_first,
            limit,
        })
        .await?;
    let next = (page.len() == limit).then(|| page[page.len() - 1].id.to_string());
    Ok(Json(SessionPage {
        sessions: page.iter().map(SessionView::from).collect(),
        next,
    }))
}

/// Reads a session by id, open or closed (until its retention ends).
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "apps",
    params(("id" = String, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 404, description = "No such session, or a session of another app (the same answer)", body = crate::views::ErrorBody)))]
pub async fn get_session(scope: SessionScope) -> ApiResult<Response> {
    Ok(session_response(StatusCode::OK, scope.session()?))
}

/// Closes a session as `killed`; its client learns it at its next request or at once
/// on its event stream.
///
/// A session whose stored record cannot be read is removed instead (with its index
/// entries, freeing its seat), and the answer says so: `{"id", "discarded": true}`.
/// Only the admin token may do that, since the app of such a record cannot be known;
/// an app key gets 404 `not_found`, as for an unknown id, and the record stays.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "apps",
    params(("id" = String, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The closed session; or, for a record that could not be read and was removed (admin token only), `{id, discarded: true}`", body = KillAnswer),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 404, description = "No such session, a session of another app, or (for an app key) a record that cannot be read: the same answer", body = crate::views::ErrorBody),
        (status = 410, description = "Already closed", body = crate::views::ErrorBody),
        (status = 503, description = "`store_unavailable` (nothing changed; retry) or `outcome_unknown` (the close was sent but not confirmed; read the session before retrying)", body = crate::views::ErrorBody)))]
pub async fn kill(SessionScope { st, caller, id, .. }: SessionScope) -> ApiResult<Response> {
    // The scope let an unreadable record through for the admin token only: a record
    // that belongs to no app anyone can name may be removed only by a caller allowed
    // on every app.
    match st
        .manager
        .close_by_id(id, CloseReason::Killed, caller.actor())
        .await?
    {
        ClosedById::Closed(s) => {
            tracing::info!(session = %s.id, app = %s.app, user = s.user.as_deref().unwrap_or(""), by = %caller.actor(), "session killed");
            Ok(session_response(StatusCode::OK, &s))
        }
        ClosedById::Discarded => {
            tracing::warn!(session = %id, by = %caller.actor(), "unreadable session record removed");
            Ok(axum::Json(Discarded {
                id: id.to_string(),
                discarded: true,
            })
            .into_response())
        }
    }
}

/// What `DELETE /v1/sessions/{id}` answers: the closed session, or the removal of a
/// record that could not be read.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum KillAnswer {
    /// The session, now closed as `killed`.
    Closed(Box<SessionView>),
    /// The record was removed.
    Discarded(Discarded),
}

/// The removal of a session record that could not be read.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Discarded {
    /// The session id.
    pub id: String,
    /// Always true.
    pub discarded: bool,
}

/// New privileges for a session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivilegesBody {
    /// The new set (replaces the old one).
    pub privileges: Vec<String>,
    /// New info (an object), or keep.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
    /// New user, or keep.
    pub user: Option<String>,
}

/// Replaces a session's privileges. The session keeps its id and gets a new token (the
/// old one stops working: no session fixation).
#[utoipa::path(put, path = "/v1/sessions/{id}/privileges", tag = "apps", request_body = PrivilegesBody,
    params(("id" = String, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session and its new token", body = SessionWithToken),
        (status = 400, description = "Bad values", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 404, description = "No such session, or a session of another app (the same answer)", body = crate::views::ErrorBody),
        (status = 409, description = "`seats_exhausted` (losing a reserved privilege would take a seat of a full house; with `seats` and the holders as `sessions`) or `user_limit` (the new user is at `max_per_user`)", body = crate::views::ErrorBody),
        (status = 410, description = "The session is closed", body = crate::views::ErrorBody),
        (status = 413, description = "The body is over the size limit", body = crate::views::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::views::ErrorBody),
        (status = 422, description = "Wrong fields or types", body = crate::views::ErrorBody)))]
pub async fn set_privileges(
    scope: SessionScope,
    Json(body): Json<PrivilegesBody>,
) -> ApiResult<Response> {
    scope.session()?;
    let SessionScope { st, caller, id, .. } = scope;
    let (s, token) = st
        .manager
        .set_privileges(
            Lookup::Id(id),
            body.privileges,
            json_object(body.info.as_ref())?,
            body.user,
        )
        .await?;
    tracing::info!(session = %s.id, app = %s.app, user = s.user.as_deref().unwrap_or(""), privileges = s.privileges.iter().count(), by = %caller.actor(), "privileges changed; token rotated");
    let mut resp = axum::Json(SessionWithToken {
        session: SessionView::from(&s),
        token: token.expose().to_string(),
    })
    .into_response();
    tag(&mut resp, s.version);
    Ok(resp)
}

/// Which sessions close-all keeps.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseAllBody {
    /// Ids of sessions to keep open (say, mine).
    #[serde(default)]
    pub except: Vec<String>,
    /// Only this user's sessions ("logout everywhere" for one person).
    pub user: Option<String>,
}

/// Disconnects everyone except some: closes every open session of the app as
/// `closed_all`, but those in `except`; with `user`, only that user's sessions ("logout
/// everywhere" for one person, in one call).
#[utoipa::path(post, path = "/v1/apps/{app}/sessions/close-all", tag = "apps",
    request_body(content = CloseAllBody, description = "Optional; an empty body closes every session"),
    params(("app" = String, Path, description = "App name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were closed", body = ClosedCount),
        (status = 400, description = "Bad JSON or ids", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "An app key of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody),
        (status = 413, description = "The body is over the size limit", body = crate::views::ErrorBody),
        (status = 415, description = "A body that is not sent as JSON", body = crate::views::ErrorBody),
        (status = 422, description = "Wrong fields or types", body = crate::views::ErrorBody)))]
pub async fn close_all(
    AppScope {
        st, caller, app, ..
    }: AppScope,
    OptionalJson(body): OptionalJson<CloseAllBody>,
) -> ApiResult<Json<ClosedCount>> {
    let except = body
        .except
        .iter()
        .map(|s| {
            s.parse::<SessionId>().map_err(|_| {
                ApiError::bad_request(format!(
                    "except: {} is not a session id",
                    sessiond_core::quoted(s)
                ))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let closed = match body.user.as_deref() {
        None => st.manager.close_all(&app, &except, caller.actor()).await?,
        Some(user) => {
            st.manager
                .close_user(&app, user, &except, CloseReason::ClosedAll, caller.actor())
                .await?
        }
    };
    tracing::info!(app = %app, user = body.user.as_deref().unwrap_or(""), closed = closed.len(), kept = except.len(), by = %caller.actor(), "close-all: sessions closed");
    Ok(Json(ClosedCount {
        closed: closed.len(),
    }))
}

async fn app_view(st: &SharedState, app: &str) -> ApiResult<AppView> {
    let policy = st.manager.policy(app)?;
    let seats = st.manager.seats(app).await?;
    let mut view = AppView::new(app, &policy, seats);
    view.license = st.licenses.view(app);
    Ok(view)
}

/// An app: its policy, seats used and total, open sessions.
#[utoipa::path(get, path = "/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "App name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The app", body = AppView),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "An app key of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody)))]
pub async fn get_app(AppScope { st, app, .. }: AppScope) -> ApiResult<Json<AppView>> {
    Ok(Json(app_view(&st, &app).await?))
}

/// Every app (admin token only).
#[utoipa::path(get, path = "/v1/apps", tag = "apps",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The apps", body = AppList),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "Not the admin token", body = crate::views::ErrorBody)))]
pub async fn list_apps(AdminScope { st }: AdminScope) -> ApiResult<Json<AppList>> {
    let mut apps = Vec::new();
    for name in st.manager.apps() {
        apps.push(app_view(&st, &name).await?);
    }
    Ok(Json(AppList { apps }))
}

/// An optional object of a request body as a [`JsonObject`]: past the JSON limits
/// (depth, key length) it is a 400 naming the limit, and nothing changes.
fn json_object(
    map: Option<&Map<String, Value>>,
) -> Result<Option<JsonObject>, sessiond_core::Error> {
    Ok(map.map(JsonObject::from_map).transpose()?)
}
