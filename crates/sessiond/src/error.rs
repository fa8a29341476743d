//! [`ApiError`]: the one error type of the HTTP API. Every failure, from a refused
//! admission to a malformed body or an unknown route, leaves as
//! `{"error": "<code>", "message": "<text>", ...}` with a fitting status. Store failures
//! are logged in full and answered with a short message: internals stay in the log.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use sessiond_core::Error;

use crate::views::SessionView;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Extra fields merged into the body.
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// 401: no or unknown credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid credential that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 400: query parameters that make no sense.
    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    /// 400: input that makes no sense.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.code.into()));
        body.insert("message".into(), Value::String(self.message));
        // An answer that says when to retry says it in the header too.
        let retry_after = self.extra.get("retry_after_s").and_then(Value::as_u64);
        body.extend(self.extra);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(s),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        let message = e.to_string();
        // The status is the core's one mapping; the arms below add each error's fields.
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match e {
            Error::UnknownApp(_) | Error::NotFound(_) => ApiError::new(status, code, message),
            Error::InvalidToken => ApiError::new(status, code, message),
            Error::SessionClosed(c) => ApiError::new(status, code, message)
                .with("reason", json!(c.reason))
                .with("closed_at", json!(c.at.to_rfc3339()))
                .with("closed_by", json!(c.by.to_string())),
            Error::SeatsExhausted {
                used,
                total,
                holders,
            } => ApiError::new(status, code, message)
                .with("seats", json!({"used": used, "total": total}))
                .with(
                    "sessions",
                    Value::Array(
                        holders
                            .iter()
                            .map(|s| json!(SessionView::from(s)))
                            .collect(),
                    ),
                ),
            Error::UserLimit { max } => {
                ApiError::new(status, code, message).with("max_per_user", json!(max))
            }
            Error::TakeOverTarget => ApiError::new(status, code, message),
            Error::VersionMismatch { current } => {
                ApiError::new(status, code, message).with("version", json!(current))
            }
            Error::IpMismatch => ApiError::new(status, code, message),
            Error::DataTooLarge { limit, .. } => {
                ApiError::new(status, code, message).with("limit", json!(limit))
            }
            Error::BadInput(_) => ApiError::new(status, code, message),
            Error::Store(sessiond_core::StoreError::Unavailable(detail)) => {
                tracing::warn!(error = %detail, "store unavailable");
                ApiError::new(
                    status,
                    code,
                    "the session store is unavailable; retry shortly",
                )
            }
            Error::Store(sessiond_core::StoreError::OutcomeUnknown(detail)) => {
                tracing::warn!(error = %detail, "a store write was not confirmed");
                ApiError::new(
                    status,
                    code,
                    "the session store did not confirm the change, which may or may not have \
                     been made; read the session again before retrying",
                )
            }
            Error::Store(
                err @ (sessiond_core::StoreError::Corrupt(_)
                | sessiond_core::StoreError::Io(_)
                | sessiond_core::StoreError::Backend(_)),
            ) => {
                tracing::error!(error = %err, "store error");
                ApiError::new(
                    status,
                    code,
                    "the session store failed; the server log has the details",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {}", cut(&inner(&e))),
            ),
            JsonRejection::JsonDataError(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!(
                    "the body does not have the expected fields and types: {}",
                    cut(&plain(inner(&e)))
                ),
            ),
            JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
            JsonRejection::BytesRejection(e) => body_error(e.status()),
            other => ApiError::new(other.status(), "bad_request", cut(&other.body_text())),
        }
    }
}

/// The longest text of a parser's message that an error message carries.
pub const MAX_QUOTED_MESSAGE: usize = 160;

/// A parser's message (serde's, which quotes the offending key or value whole, and
/// the path to it) cut to [`MAX_QUOTED_MESSAGE`] characters: an answer says what it
/// refuses without echoing a huge input back.
pub fn cut(message: &str) -> String {
    match message.char_indices().nth(MAX_QUOTED_MESSAGE) {
        None => message.to_string(),
        Some((at, _)) => format!("{}... ({} bytes)", &message[..at], message.len()),
    }
}

/// The innermost message of a rejection (serde's own words, without axum's prefix).
fn inner(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The error for a body not sent as JSON.
pub fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with Content-Type: application/json",
    )
}

/// The error for a body that could not be read.
pub fn body_error(status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            "the request body is over the size limit",
        )
    } else {
        ApiError::new(status, "bad_request", "the request body could not be read")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid_query(format!("bad query parameters: {}", cut(&inner(&r))))
    }
}

/// serde's words for a wrong type, without the server's internal type names
/// ("expected struct OpenBody" becomes "expected a JSON object").
fn plain(message: String) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(at) = rest.find("struct ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "struct ".len()..];
        let name = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name == 0 {
            out.push_str("struct ");
        } else {
            out.push_str("a JSON object");
        }
        rest = &after[name..];
    }
    out.push_str(rest);
    out
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("bad path parameter: {}", cut(&inner(&r))),
        )
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_of_unknown_outcome_is_503_and_not_store_unavailable() {
        let e = ApiError::from(Error::Store(sessiond_core::StoreError::OutcomeUnknown(
            "no answer from 10.0.0.7 within 2s".into(),
        )));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "outcome_unknown");
        assert!(
            e.message.contains("read the session again"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("10.0.0.7"), "{}", e.message);
        let e = ApiError::from(Error::Store(sessiond_core::StoreError::Unavailable(
            "refused".into(),
        )));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
    }

    #[test]
    fn cut_bounds_a_message_and_says_how_long_it_was() {
        assert_eq!(cut("short"), "short");
        let long = format!("unknown field `{}`", "é".repeat(10_000));
        let m = cut(&long);
        assert!(m.chars().count() < MAX_QUOTED_MESSAGE + 40, "{m}");
        assert!(m.ends_with(&format!("... ({} bytes)", long.len())), "{m}");
    }
}
