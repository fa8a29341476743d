//! Operations endpoints: liveness, readiness (the store answers), Prometheus metrics,
//! and the OpenAPI 3.1 document generated from the handlers' annotations.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::state::SharedState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = Object)))]
pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = Object),
    (status = 503, description = "The store is unreachable", body = crate::views::ErrorBody)))]
pub async fn readyz(State(st): State<SharedState>) -> Response {
    match st.manager.store().ping().await {
        Ok(()) => axum::Json(json!({"status": "ready", "store": st.manager.store().kind()}))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the session store is unreachable",
            )
            .into_response()
        }
    }
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<SharedState>) -> Response {
    let mut text = st.metrics.render(&st.manager).await;
    text.push_str(&st.webhooks.stats.render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "sessiond", description = "Session manager HTTP API v1: sessions, seats, storage, heartbeats, events."),
    paths(
        crate::api::session::get_session, crate::api::session::heartbeat, crate::api::session::set_heartbeat,
        crate::api::session::patch_data, crate::api::session::logout, crate::api::events::session_events,
        crate::api::session::my_other_sessions, crate::api::session::close_my_other,
        crate::api::session::close_my_others, crate::api::forward_auth::forward_auth,
        crate::api::heartbeat::script, crate::api::heartbeat::endpoint,
        crate::api::apps::open, crate::api::apps::list_sessions, crate::api::apps::get_session,
        crate::api::apps::kill, crate::api::apps::set_privileges, crate::api::apps::close_all,
        crate::api::apps::get_app, crate::api::apps::list_apps, crate::api::events::app_events,
        crate::api::backup::backup, crate::api::reload::reload,
        crate::api::hooks::list_hooks, crate::api::hooks::list_deliveries, crate::api::hooks::resend,
        healthz, readyz, metrics, openapi,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
