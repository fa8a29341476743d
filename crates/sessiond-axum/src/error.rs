//! [`SessionError`]: what a session operation in a handler can fail with, and the
//! response each failure becomes. Store failures are 503 (fail closed: never a silent
//! fresh guest), a request from the wrong address under `bind_ip` is 400 (4D), anything
//! that is the app's own bug is 500. Bodies are `{"error","message"}` like the server's
//! API; details of 5xx go to the log, not the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A session operation that failed. Handlers can `?` it: it is an [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session engine refused or failed (store unavailable, wrong address, storage
    /// too large...).
    #[error(transparent)]
    Manager(#[from] sessiond_core::Error),
    /// A stored value is not of the type asked for.
    #[error("session value {key:?} does not have the type asked for: {source}")]
    Decode {
        /// The key read.
        key: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be turned into JSON.
    #[error("the value for session key {key:?} cannot be stored as JSON: {source}")]
    Encode {
        /// The key written.
        key: String,
        /// Why it did not encode.
        #[source]
        source: serde_json::Error,
    },
    /// Other nodes kept changing the session faster than this request could update it.
    #[error("the session kept changing under concurrent requests; try again")]
    Contention,
    /// The handler asked for a [`crate::Session`] on a route without a
    /// [`crate::SessionLayer`].
    #[error("no SessionLayer is installed on this route")]
    MissingLayer,
    /// The request's response has gone: a new session or a new token could no longer
    /// reach the browser (a [`crate::Session`] kept past its request, e.g. in a spawned
    /// task). Changes to an existing session's storage still work then.
    #[error("the response has been sent: a new session or token could not reach the browser")]
    Answered,
    /// The request carries a cookie that a concurrent request (a login) just replaced:
    /// it reads as a guest but creates nothing, so its cookie cannot replace the new
    /// one. The browser's next request carries the new cookie; retry then.
    #[error("this cookie was just replaced by a concurrent request (a login); retry")]
    Rotated,
}

impl SessionError {
    /// The HTTP status this failure answers with.
    pub fn status(&self) -> StatusCode {
        use sessiond_core::Error as E;
        match self {
            // The core's one mapping, with two intended differences for a web page:
            // a full house is 503 (a visitor cannot take a seat over: the site is full,
            // come back later), and a store that failed is 503 whatever the failure
            // (fail closed: never a 500 that a proxy would retry as a server bug).
            SessionError::Manager(E::SeatsExhausted { .. } | E::Store(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SessionError::Manager(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            SessionError::Contention | SessionError::Rotated => StatusCode::CONFLICT,
            SessionError::Decode { .. }
            | SessionError::Encode { .. }
            | SessionError::MissingLayer
            | SessionError::Answered => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The snake_case code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Manager(e) => e.code(),
            SessionError::Decode { .. } => "session_value_type",
            SessionError::Encode { .. } => "session_value_encoding",
            SessionError::Contention => "session_contention",
            SessionError::MissingLayer => "session_layer_missing",
            SessionError::Answered => "session_answered",
            SessionError::Rotated => "session_rotated",
        }
    }

    /// Whether the whole request must fail with this error even if the handler chose to
    /// ignore it: the store failed (fail closed) or the request came from the wrong
    /// address.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            SessionError::Manager(sessiond_core::Error::Store(_))
                | SessionError::Manager(sessiond_core::Error::IpMismatch)
        )
    }

    /// A cheap copy of what the response needs, kept by the layer for fatal errors.
    pub(crate) fn to_failure(&self) -> Failure {
        Failure {
            status: self.status(),
            code: self.code(),
            message: self.public_message(),
        }
    }

    fn public_message(&self) -> String {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "session operation failed");
            match (self.status(), self) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    SessionError::Manager(sessiond_core::Error::Store(
                        sessiond_core::StoreError::OutcomeUnknown(_),
                    )),
                ) => "the session store did not confirm a change, which may or may not have \
                      been made; reload before trying again"
                    .to_string(),
                (StatusCode::SERVICE_UNAVAILABLE, _) => {
                    "sessions are unavailable right now; try again shortly".to_string()
                }
                _ => "the session could not be handled; see the server log".to_string(),
            }
        } else {
            self.to_string()
        }
    }
}

/// A failure ready to become a response.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            axum::Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        self.to_failure().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::StoreError;

    #[test]
    fn store_failures_are_503_and_hide_details() {
        let e = SessionError::from(sessiond_core::Error::Store(StoreError::Unavailable(
            "db at 10.0.0.7 refused".into(),
        )));
        assert!(e.is_fatal());
        let f = e.to_failure();
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.code, "store_unavailable");
        assert!(!f.message.contains("10.0.0.7"));
    }

    #[test]
    fn a_write_of_unknown_outcome_is_503_fatal_with_its_own_code() {
        let e = SessionError::from(sessiond_core::Error::Store(StoreError::OutcomeUnknown(
            "no answer from 10.0.0.7".into(),
        )));
        assert!(e.is_fatal());
        let f = e.to_failure();
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.code, "outcome_unknown");
        assert!(f.message.contains("may or may not"), "{}", f.message);
        assert!(!f.message.contains("10.0.0.7"));
    }

    #[test]
    fn wrong_address_is_400_and_fatal() {
        let e = SessionError::from(sessiond_core::Error::IpMismatch);
        assert!(e.is_fatal());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(!SessionError::Contention.is_fatal());
    }
}
