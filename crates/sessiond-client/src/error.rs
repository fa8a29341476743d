//! [`Error`]: everything a call can fail with, from an API refusal (the server's
//! `{"error", "message", ...}` body, kept whole) to a connection that could not be made or
//! an answer that could not be read. No variant ever holds the client's credential.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{CloseReason, Seats, Session};

/// Longest piece of a non-API error body kept in [`Error::Status`].
const BODY_SNIPPET_CHARS: usize = 200;

/// An error from a sessiond API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the call with an API error body.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status, e.g. 410.
        status: u16,
        /// Machine-readable code, e.g. `session_closed`.
        code: String,
        /// What happened and what to do.
        message: String,
        /// The whole error body, with any extra fields (`reason`, `seats`, `version`...).
        body: Value,
    },
    /// The server (or a proxy in front of it) answered an error status without an API
    /// error body.
    #[error("the server answered HTTP {status} without an API error body: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body, as text.
        body: String,
    },
    /// The base URL given to [`Client::new`](crate::Client::new) is not usable.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The request could not be sent or the answer could not be received.
    ///
    /// The message already spells out the whole cause chain (down to e.g. "Connection
    /// refused"), so the `reqwest` error is kept in the variant but not repeated as
    /// `source()`: printing the chain with `{:#}` shows each cause once.
    #[error("cannot talk to the sessiond server: {}", causes(.0))]
    Transport(reqwest::Error),
    /// A success answer whose body is not the expected JSON.
    #[error("unexpected answer from the sessiond server (HTTP {status}): {error}")]
    Decode {
        /// HTTP status of the answer.
        status: u16,
        /// What did not match (in the message, so not repeated as `source()`).
        error: serde_json::Error,
    },
    /// An event stream broke its framing (e.g. a line over the size limit).
    #[error("malformed event stream: {0}")]
    EventStream(String),
    /// A CA certificate given to [`Client::with_ca_cert`](crate::Client::with_ca_cert)
    /// cannot be used.
    #[error("CA certificate: {0}")]
    CaCert(String),
}

/// The extra fields of a 409 `seats_exhausted` refusal: who holds the seats, so the
/// caller can offer to take one over.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct SeatsExhausted {
    /// Seats used and total.
    pub seats: Seats,
    /// The open sessions holding the seats.
    pub sessions: Vec<Session>,
}

/// An error and its sources on one line, `: `-separated, each once (hyper's errors repeat
/// their source's text in their own message at times).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

impl Error {
    /// Builds the error for a non-success answer from its status and body.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Error {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            if let (Some(Value::String(code)), Some(Value::String(message))) =
                (map.get("error"), map.get("message"))
            {
                return Error::Api {
                    status,
                    code: code.clone(),
                    message: message.clone(),
                    body: Value::Object(map.clone()),
                };
            }
        }
        let text = String::from_utf8_lossy(body);
        let mut snippet: String = text.trim().chars().take(BODY_SNIPPET_CHARS).collect();
        if text.trim().chars().count() > BODY_SNIPPET_CHARS {
            snippet.push('…');
        }
        Error::Status {
            status,
            body: snippet,
        }
    }

    /// The HTTP status, for errors that come with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. }
            | Error::Status { status, .. }
            | Error::Decode { status, .. } => Some(*status),
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
            Error::InvalidUrl(_) | Error::EventStream(_) | Error::CaCert(_) => None,
        }
    }

    /// The API error code (`session_closed`, `seats_exhausted`...), for API refusals.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the call was refused because the session is closed (410). The client
    /// should stop and tell its user why: see [`Error::close_reason`].
    pub fn is_session_closed(&self) -> bool {
        self.code() == Some("session_closed")
    }

    /// Why the session closed, from a 410 `session_closed` refusal.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.field("reason")
    }

    /// Who holds the seats, from a 409 `seats_exhausted` refusal.
    pub fn seats_exhausted(&self) -> Option<SeatsExhausted> {
        match self {
            Error::Api { code, body, .. } if code == "seats_exhausted" => {
                serde_json::from_value(body.clone()).ok()
            }
            _ => None,
        }
    }

    /// The session's current version, from a 412 `version_mismatch` refusal.
    pub fn current_version(&self) -> Option<u64> {
        self.field("version")
    }

    /// An extra field of an API error body, decoded.
    fn field<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        match self {
            Error::Api { body, .. } => body
                .get(name)
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_error_body_is_decoded_whole() {
        let body = br#"{"error":"session_closed","message":"the session is closed","reason":"heartbeat_lost","closed_by":"expiry"}"#;
        let err = Error::from_response(410, body);
        match &err {
            Error::Api {
                status,
                code,
                message,
                body,
            } => {
                assert_eq!(*status, 410);
                assert_eq!(code, "session_closed");
                assert_eq!(message, "the session is closed");
                assert_eq!(body["closed_by"], "expiry");
            }
            other => panic!("not an API error: {other:?}"),
        }
        assert!(err.is_session_closed());
        assert_eq!(err.close_reason(), Some(CloseReason::HeartbeatLost));
        assert_eq!(err.status(), Some(410));
        assert_eq!(err.to_string(), "the session is closed (session_closed)");
    }

    #[test]
    fn seats_exhausted_lists_the_holders() {
        let mut holder = crate::model::tests::view("0192aaaa-0000-7000-8000-000000000003");
        holder["status"] = json!("open");
        holder["reason"] = json!(null);
        holder["closed_by"] = json!(null);
        let body = json!({
            "error": "seats_exhausted", "message": "all 1 seats are taken",
            "seats": {"used": 1, "total": 1}, "sessions": [holder]
        });
        let err = Error::from_response(409, body.to_string().as_bytes());
        let full = err.seats_exhausted().expect("seats_exhausted details");
        assert_eq!(
            full.seats,
            Seats {
                used: 1,
                total: Some(1)
            }
        );
        assert_eq!(full.sessions.len(), 1);
        assert!(full.sessions[0].is_open());
        assert_eq!(err.close_reason(), None);
    }

    #[test]
    fn version_mismatch_carries_the_current_version() {
        let err = Error::from_response(
            412,
            br#"{"error":"version_mismatch","message":"stale","version":7}"#,
        );
        assert_eq!(err.code(), Some("version_mismatch"));
        assert_eq!(err.current_version(), Some(7));
        assert!(err.seats_exhausted().is_none());
    }

    #[test]
    fn non_api_bodies_become_status_errors() {
        let err = Error::from_response(502, b"<html>Bad Gateway</html>\n");
        assert!(
            matches!(&err, Error::Status { status: 502, body } if body == "<html>Bad Gateway</html>")
        );
        assert_eq!(err.code(), None);

        // JSON, but not the API error shape.
        let err = Error::from_response(500, br#"{"error": 5}"#);
        assert!(matches!(err, Error::Status { status: 500, .. }));

        let long = "x".repeat(1000);
        match Error::from_response(503, long.as_bytes()) {
            Error::Status { body, .. } => assert_eq!(body.chars().count(), BODY_SNIPPET_CHARS + 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_error_body() {
        let err = Error::from_response(404, b"");
        assert_eq!(err.status(), Some(404));
        assert!(err.to_string().contains("HTTP 404"));
    }
}
