//! `POST /v1/reload`: what SIGHUP does, as a call: the server reads its configuration
//! again and applies what can change live ([`crate::reload`]).

use axum::http::StatusCode;
use axum::Json;

use super::scope::AdminScope;
use crate::error::{ApiError, ApiResult};
use crate::reload::{ReloadError, Reloaded};

/// Reads the configuration file (and the `SESSIOND__*` variables) again: apps, their
/// policies and the credentials change at once; a file that cannot be used changes
/// nothing (400 with the reason); settings that take a restart are named.
#[utoipa::path(post, path = "/v1/reload", tag = "ops",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Reloaded: what changed, and what takes a restart", body = Reloaded),
        (status = 400, description = "`invalid_configuration`: the file cannot be used; nothing changed", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "Not the admin token (or an operator of every app that may write)", body = crate::views::ErrorBody),
        (status = 409, description = "`no_configuration_file`: the server was started without one", body = crate::views::ErrorBody)))]
pub async fn reload(AdminScope { st }: AdminScope) -> ApiResult<Json<Reloaded>> {
    let done = st.reloader.reload(&st.licenses).await;
    crate::serve::log_reload(&done);
    match done {
        Ok(r) => Ok(Json(r)),
        Err(e @ ReloadError::NoFile) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_configuration_file",
            e.to_string(),
        )),
        Err(ReloadError::Invalid(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_configuration",
            format!("the configuration was not reloaded, nothing changed: {e}"),
        )),
    }
}
