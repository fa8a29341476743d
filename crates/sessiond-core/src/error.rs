//! [`Error`]: everything a [`crate::Manager`] operation can refuse or fail with. Each
//! variant maps to one API error code ([`Error::code`]); messages say what happened and
//! what to do, and never contain a token.

use crate::admission::Refusal;
use crate::id::SessionId;
use crate::session::{ChangeError, Closure, Session};
use crate::store::StoreError;

/// A refused or failed operation. Refusals change nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No app of that name is configured.
    #[error("no app named {} is configured", quoted(.0))]
    UnknownApp(String),
    /// The token matches no session.
    #[error("the token matches no session; open a new one")]
    InvalidToken,
    /// No session has that id.
    #[error("no session has id {0}")]
    NotFound(SessionId),
    /// The session is closed.
    #[error("the session was closed ({}); open a new one", .0.reason)]
    SessionClosed(Closure),
    /// Every seat is taken.
    #[error("all {total} seats are taken; close or take over one of the open sessions")]
    SeatsExhausted {
        /// Seats taken.
        used: u32,
        /// Seats in all.
        total: u32,
        /// The seat holders, so a caller can pick one to take over.
        holders: Vec<Session>,
    },
    /// The user has as many sessions as allowed.
    #[error("this user already has {max} open session(s), the most allowed")]
    UserLimit {
        /// The limit.
        max: u32,
    },
    /// `take_over` named no open session of this app.
    #[error("the session to take over is not an open session of this app")]
    TakeOverTarget,
    /// `If-Match` did not match.
    #[error("the session changed since the version you sent; it is now at version {current}")]
    VersionMismatch {
        /// The current version.
        current: u64,
    },
    /// A request from another address than the session's.
    #[error("this session is bound to the address that opened it")]
    IpMismatch,
    /// The storage would grow past its limit.
    #[error("the session storage would take {size} bytes, over the limit of {limit}")]
    DataTooLarge {
        /// Size it would have.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Input that makes no sense.
    #[error("{0}")]
    BadInput(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// The snake_case code of the API error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownApp(_) => "unknown_app",
            Error::InvalidToken => "invalid_token",
            Error::NotFound(_) => "not_found",
            Error::SessionClosed(_) => "session_closed",
            Error::SeatsExhausted { .. } => "seats_exhausted",
            Error::UserLimit { .. } => "user_limit",
            Error::TakeOverTarget => "take_over_target",
            Error::VersionMismatch { .. } => "version_mismatch",
            Error::IpMismatch => "ip_mismatch",
            Error::DataTooLarge { .. } => "data_too_large",
            Error::BadInput(_) => "bad_request",
            Error::Store(StoreError::Unavailable(_)) => "store_unavailable",
            Error::Store(StoreError::OutcomeUnknown(_)) => "outcome_unknown",
            Error::Store(_) => "store_error",
        }
    }
}

impl Error {
    /// The HTTP status this error answers with: the one mapping, used by the server and
    /// by sessiond-axum alike (docs/API.md has the table; sessiond-axum's one intended
    /// difference is written beside its use). Every variant is named, and the lint
    /// below keeps it so: a new variant fails the build here until it has a status.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn status(&self) -> u16 {
        match self {
            Error::UnknownApp(_) | Error::NotFound(_) => 404,
            Error::InvalidToken => 401,
            Error::SessionClosed(_) => 410,
            Error::SeatsExhausted { .. } | Error::UserLimit { .. } | Error::TakeOverTarget => 409,
            Error::VersionMismatch { .. } => 412,
            Error::IpMismatch | Error::BadInput(_) => 400,
            Error::DataTooLarge { .. } => 413,
            Error::Store(StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_)) => 503,
            Error::Store(StoreError::Corrupt(_) | StoreError::Io(_) | StoreError::Backend(_)) => {
                500
            }
        }
    }
}

impl Error {
    /// Whether the operation may have changed something although it failed, so that
    /// planning it again from a fresh read could apply it twice. Refusals change nothing,
    /// and a store answers `Unavailable` only for what it never sent; any other store
    /// failure (an answer lost after the write was sent, a disk that refused halfway)
    /// may have written.
    pub fn may_have_applied(&self) -> bool {
        matches!(
            self,
            Error::Store(
                StoreError::OutcomeUnknown(_)
                    | StoreError::Corrupt(_)
                    | StoreError::Io(_)
                    | StoreError::Backend(_)
            )
        )
    }
}

impl From<ChangeError> for Error {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Closed(c) => Error::SessionClosed(c),
            ChangeError::VersionMismatch { current } => Error::VersionMismatch { current },
            ChangeError::IpMismatch => Error::IpMismatch,
            ChangeError::DataTooLarge { size, limit } => Error::DataTooLarge { size, limit },
            ChangeError::BadPatch(m) => Error::BadInput(m),
            ChangeError::OtherApp => Error::InvalidToken,
            ChangeError::NotAdmitted(r) => Error::from(r),
        }
    }
}

impl From<crate::json::JsonError> for Error {
    fn from(e: crate::json::JsonError) -> Self {
        Error::BadInput(e.to_string())
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::SeatsExhausted { used, total } => Error::SeatsExhausted {
                used,
                total,
                holders: Vec::new(),
            },
            Refusal::UserLimit { max } => Error::UserLimit { max },
            Refusal::TakeOverTarget => Error::TakeOverTarget,
        }
    }
}

/// Result of a Manager operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `text` quoted for an error message, cut to 64 characters: a message names what it
/// refuses without echoing a huge input back.
pub fn quoted(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        None => format!("{text:?}"),
        Some((at, _)) => format!("{:?}... ({} bytes)", &text[..at], text.len()),
    }
}

/// A message that may carry input (a parser's, say) cut to 200 characters.
pub(crate) fn cut(message: &str) -> String {
    const MAX: usize = 200;
    match message.char_indices().nth(MAX) {
        None => message.to_string(),
        Some((at, _)) => format!("{}... ({} bytes)", &message[..at], message.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_of_unknown_outcome_has_its_own_code() {
        let unknown = Error::Store(StoreError::OutcomeUnknown("timed out".into()));
        let unavailable = Error::Store(StoreError::Unavailable("refused".into()));
        assert_eq!(unknown.code(), "outcome_unknown");
        assert_eq!(unavailable.code(), "store_unavailable");
    }

    #[test]
    fn every_error_has_the_status_of_the_table_in_api_md() {
        let cases: Vec<(Error, u16)> = vec![
            (Error::UnknownApp("a".into()), 404),
            (Error::NotFound(SessionId::from_u128(1)), 404),
            (Error::InvalidToken, 401),
            (
                Error::SeatsExhausted {
                    used: 1,
                    total: 1,
                    holders: Vec::new(),
                },
                409,
            ),
            (Error::UserLimit { max: 1 }, 409),
            (Error::TakeOverTarget, 409),
            (Error::VersionMismatch { current: 2 }, 412),
            (Error::IpMismatch, 400),
            (Error::BadInput("x".into()), 400),
            (Error::DataTooLarge { size: 2, limit: 1 }, 413),
            (Error::Store(StoreError::Unavailable("x".into())), 503),
            (Error::Store(StoreError::OutcomeUnknown("x".into())), 503),
            (Error::Store(StoreError::Corrupt("x".into())), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e:?}");
        }
    }
}
