//! An app's webhooks over HTTP: the hooks in force (never their secrets), the
//! deliveries the store still holds (pending ones and dead letters), and sending a
//! delivery again (`docs/HOOKS.md`).

use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sessiond_core::hooks::{Delivery, DeliveryQuery, HookId, HookKind};
use utoipa::{IntoParams, ToSchema};

use super::scope::AppScope;
use super::Query;
use crate::error::{ApiError, ApiResult};

/// One hook, as configured (no secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    /// Its name.
    pub name: String,
    /// Where deliveries go: the origin only (`https://host:port`, then `/…` when the
    /// URL has a path or query), since a path or query may hold a secret.
    pub url: String,
    /// The kinds of event it wants.
    pub events: Vec<String>,
    /// Tries before a dead letter.
    pub max_tries: u32,
    /// Seconds before the first retry (doubled at each, at most an hour).
    pub first_retry_s: u32,
    /// Time limit of one try, in milliseconds.
    pub timeout_ms: u64,
    /// Whether it may point at a loopback, private or link-local address.
    pub allow_private: bool,
}

/// An app's hooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookList {
    /// The hooks in force on this node.
    pub hooks: Vec<HookView>,
}

/// One delivery the store holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The delivery (what `resend` takes).
    pub id: String,
    /// The event: the same in every hook's delivery of it and in every try.
    pub event_id: String,
    /// The hook.
    pub hook: String,
    /// `opened`, `closed`, `privileges_changed` or `seats_full`.
    pub event: String,
    /// When the event happened (RFC 3339).
    pub created_at: String,
    /// Tries so far.
    pub tries: u32,
    /// When the next try is due (RFC 3339); none for a dead letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Given up on after the hook's last try.
    pub dead: bool,
    /// What went wrong with the last try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The body sent.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// A delivery made due again (the rest of it is in `GET .../deliveries`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResentView {
    /// The delivery.
    pub id: String,
    /// Tries, from zero again.
    pub tries: u32,
    /// Due now (RFC 3339).
    pub due: String,
    /// No longer a dead letter.
    pub dead: bool,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            hook: d.hook.to_string(),
            event: d.kind.as_str().to_string(),
            created_at: d.created_at.to_rfc3339(),
            tries: d.tries,
            due: (!d.dead).then(|| d.due.to_rfc3339()),
            dead: d.dead,
            error: d.error.map(String::from),
            body: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Oldest first.
    pub deliveries: Vec<DeliveryView>,
}

/// Which deliveries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `dead` or `any` (the default).
    pub state: Option<String>,
    /// At most this many (1 to 1000; default 100).
    pub limit: Option<usize>,
}

/// The app's hooks (never their secrets).
#[utoipa::path(get, path = "/v1/apps/{app}/hooks", tag = "hooks",
    params(("app" = String, Path, description = "App name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The hooks", body = HookList),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "A credential of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody)))]
pub async fn list_hooks(AppScope { st, app, .. }: AppScope) -> ApiResult<Json<HookList>> {
    let hooks = st
        .webhooks
        .hooks_of(&app)
        .into_iter()
        .map(|h| HookView {
            name: h.name.clone(),
            url: shown(&h.url),
            events: HookKind::ALL
                .into_iter()
                .filter(|k| h.kinds.contains(*k))
                .map(|k| k.as_str().to_string())
                .collect(),
            max_tries: h.max_tries,
            first_retry_s: h.first_retry_s,
            timeout_ms: h.timeout_ms,
            allow_private: h.allow_private,
        })
        .collect();
    Ok(Json(HookList { hooks }))
}

/// The app's deliveries the store still holds: pending ones and dead letters.
#[utoipa::path(get, path = "/v1/apps/{app}/hooks/deliveries", tag = "hooks",
    params(("app" = String, Path, description = "App name"), DeliveryParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page, oldest first", body = DeliveryPage),
        (status = 400, description = "Bad parameters", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "A credential of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app, or a store without webhooks", body = crate::views::ErrorBody)))]
pub async fn list_deliveries(
    AppScope { st, app, .. }: AppScope,
    Query(p): Query<DeliveryParams>,
) -> ApiResult<Json<DeliveryPage>> {
    let dead = match p.state.as_deref().unwrap_or("any") {
        "any" => None,
        "pending" => Some(false),
        "dead" => Some(true),
        other => {
            return Err(ApiError::invalid_query(format!(
                "state {}: use pending, dead or any",
                sessiond_core::quoted(other)
            )))
        }
    };
    let limit = match p.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(ApiError::invalid_query("limit must be from 1 to 1000")),
    };
    let store = st.manager.store();
    let Some(outbox) = store.outbox() else {
        return Err(no_outbox(store.kind()));
    };
    let found = outbox
        .deliveries(&DeliveryQuery {
            app: Some(app),
            dead,
            limit,
        })
        .await
        .map_err(sessiond_core::Error::from)?;
    Ok(Json(DeliveryPage {
        deliveries: found.into_iter().map(DeliveryView::from).collect(),
    }))
}

/// Makes a delivery (a dead letter, or one waiting for its next try) due now, its tries
/// counted from zero again.
#[utoipa::path(post, path = "/v1/apps/{app}/hooks/deliveries/{id}/resend", tag = "hooks",
    params(("app" = String, Path, description = "App name"), ("id" = String, Path, description = "Delivery id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Due now", body = ResentView),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "A credential of another app, or a read-only operator", body = crate::views::ErrorBody),
        (status = 404, description = "No such delivery in this app (delivered already, or never)", body = crate::views::ErrorBody)))]
pub async fn resend(
    AppScope { st, app, .. }: AppScope,
    axum::extract::Path((_, id)): axum::extract::Path<(String, String)>,
) -> ApiResult<Json<ResentView>> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("app {app} holds no delivery {}", sessiond_core::quoted(&id)),
        )
    };
    let Ok(hid) = id.parse::<HookId>() else {
        return Err(unknown());
    };
    let store = st.manager.store();
    let Some(outbox) = store.outbox() else {
        return Err(no_outbox(store.kind()));
    };
    // Only a delivery of this app: another app's answers as an unknown one.
    let now = st.manager.now();
    if !outbox
        .resend(&app, hid, now)
        .await
        .map_err(sessiond_core::Error::from)?
    {
        return Err(unknown());
    }
    Ok(Json(ResentView {
        id: hid.to_string(),
        tries: 0,
        due: now.to_rfc3339(),
        dead: false,
    }))
}

/// A hook's URL as the API shows it: its origin, and `/…` for the rest.
fn shown(url: &reqwest::Url) -> String {
    let origin = url.origin().ascii_serialization();
    let rest = url.path() != "/" || url.query().is_some();
    if rest {
        format!("{origin}/…")
    } else {
        origin
    }
}

fn no_outbox(kind: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("the {kind} store keeps no webhook outbox"),
    )
}
