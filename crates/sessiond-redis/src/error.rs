//! The errors of this crate and how they map into the core's [`StoreError`]: a server
//! that cannot be reached, is restarting or answers too late is `Unavailable` (callers
//! retry later), stored text that does not parse is `Corrupt`, anything else a backend
//! error that keeps its source.

use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};
use sessiond_core::StoreError;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Redis client or server reported an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The operation did not finish within the operation timeout.
    #[error("no answer from redis within {0:?}")]
    TimedOut(Duration),
    /// A stored record or index entry could not be read back.
    #[error("{0}")]
    Corrupt(String),
    /// The record of one session is there but cannot be decoded: that session cannot
    /// be read or changed, only closed by id (which removes the record).
    #[error("the record of session {id} in app {app:?} cannot be read: {why}")]
    Unreadable {
        /// The app whose keys hold it.
        app: String,
        /// The session.
        id: sessiond_core::SessionId,
        /// Its revision field as stored (`0` when missing), for a revision-checked
        /// removal.
        rev: String,
        /// What is wrong with it (never its content).
        why: String,
    },
    /// The options or a name cannot be used (bad URL, prefix or app name).
    #[error("{0}")]
    Config(String),
}

/// Result of this crate's internal calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the error means "try again later" rather than "this is broken".
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::TimedOut(_) => true,
            Error::Redis(e) => redis_unavailable(e),
            Error::Corrupt(_) | Error::Unreadable { .. } | Error::Config(_) => false,
        }
    }
}

fn redis_unavailable(e: &redis::RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_cluster_error() {
        return true;
    }
    matches!(
        e.kind(),
        ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
    )
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(format!("a stored session is not valid JSON: {e}"))
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        if e.is_unavailable() {
            // Unavailable still (the node fails closed and turns unready), with what to
            // check: a refused certificate is mended by configuration, not by waiting.
            if let Error::Redis(r) = &e {
                if let Some(why) = crate::tls::refused_certificate(r) {
                    return StoreError::Unavailable(format!(
                        "redis: the server's TLS certificate was refused ({why}): check \
                         that ca_cert names the CA that signed it (without ca_cert, that \
                         the system trusts it) and that the URL's host is a name the \
                         certificate holds"
                    ));
                }
            }
            return StoreError::Unavailable(e.to_string());
        }
        match e {
            Error::Corrupt(m) => StoreError::Corrupt(m),
            e @ Error::Unreadable { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_and_timeouts_are_unavailable() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            StoreError::from(Error::Redis(refused)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(Error::TimedOut(Duration::from_secs(2))),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(Error::Corrupt("x".into())),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            StoreError::from(Error::Config("x".into())),
            StoreError::Backend(_)
        ));
    }
}
