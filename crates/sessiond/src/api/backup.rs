//! `POST /v1/backups`: an online backup of the embedded store, written by the server
//! into `<data_dir>/backups/<name>` while it keeps serving (see
//! [`sessiond_file::FileStore::backup`] for how it stays consistent). A shared store
//! (Redis, PostgreSQL) is backed up with that server's own tools; the call says so.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sessiond_file::{BackupError, FileStore};
use utoipa::ToSchema;

use super::scope::AdminScope;
use super::OptionalJson;
use crate::error::{ApiError, ApiResult};

/// Where the server writes backups of its embedded store, when it has one.
#[derive(Clone)]
pub struct Backups {
    /// The store.
    pub store: Arc<FileStore>,
    /// The directory backups go into, one subdirectory each.
    pub dir: PathBuf,
}

/// What to back up into.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// The backup's directory name under `<data_dir>/backups/`: 1 to 64 letters,
    /// digits, `-`, `_` or `.`, not starting with `.`. Default: `backup-` and the
    /// time (UTC).
    pub name: Option<String>,
}

/// A backup written.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupView {
    /// Its directory on the server: a store directory; a server started with it as
    /// its store restores it.
    pub path: String,
    /// Sessions copied (open, and closed ones still in their retention).
    pub sessions: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

/// Whether `name` may name a backup directory: no path separators, no `..`, nothing
/// hidden.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Writes a consistent copy of the embedded store while the server keeps serving.
///
/// Every change acknowledged before the call is in the copy, which holds the store as
/// it was at one moment during the call. The copy is a store directory: to restore,
/// stop the server and start it with the copy as its store (docs/OPERATIONS.md).
#[utoipa::path(post, path = "/v1/backups", tag = "ops",
    request_body(content = Option<BackupBody>, description = "Optional name"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The backup, written and synced", body = BackupView),
        (status = 400, description = "Bad JSON, or a name that cannot name a directory", body = crate::views::ErrorBody),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "Not the admin token (or an operator of every app that may write)", body = crate::views::ErrorBody),
        (status = 413, description = "The body is over the size limit", body = crate::views::ErrorBody),
        (status = 415, description = "A body that is not sent as JSON", body = crate::views::ErrorBody),
        (status = 422, description = "Wrong fields or types", body = crate::views::ErrorBody),
        (status = 409, description = "`backup_exists` (that name is taken), `backup_running` (one at a time) or `backup_unsupported` (the store is Redis or PostgreSQL: back it up with its own tools)", body = crate::views::ErrorBody),
        (status = 503, description = "The backup could not be written (the journal failed meanwhile, the disk refused, or more changes were made during the copy than it keeps aside); nothing is left half-written; retry", body = crate::views::ErrorBody)))]
pub async fn backup(
    AdminScope { st }: AdminScope,
    OptionalJson(body): OptionalJson<BackupBody>,
) -> ApiResult<Response> {
    let Some(backups) = st.backups.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_unsupported",
            "this server's store is not the embedded one: back up Redis or PostgreSQL \
             with their own tools (docs/OPERATIONS.md)",
        ));
    };
    let name = match body.name {
        Some(n) if valid_name(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "name: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
            ))
        }
        None => format!("backup-{}", st.manager.now().to_rfc3339().replace(':', "")),
    };
    let dest = backups.dir.join(&name);
    let store = backups.store.clone();
    let to = dest.clone();
    let done = tokio::task::spawn_blocking(move || store.backup(&to))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the backup stopped unexpectedly",
            )
        })?;
    match done {
        Ok(b) => Ok((
            StatusCode::CREATED,
            axum::Json(BackupView {
                path: std::fs::canonicalize(&b.dir)
                    .unwrap_or(b.dir)
                    .display()
                    .to_string(),
                sessions: b.sessions as u64,
                bytes: b.bytes,
                took_ms: u64::try_from(b.took.as_millis()).unwrap_or(u64::MAX),
            }),
        )
            .into_response()),
        Err(BackupError::Exists(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_exists",
            format!("a backup named {name:?} exists already; choose another name"),
        )),
        Err(e @ BackupError::Running) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_running",
            e.to_string(),
        )),
        Err(e @ BackupError::Failed { .. }) => {
            tracing::warn!(error = %e, dest = %dest.display(), "backup failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backup_failed",
                format!("{e}; nothing was left behind, retry"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_cannot_leave_the_backup_directory() {
        for ok in ["nightly", "backup-2026-12-07T101200.123Z", "a.b_c-1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
