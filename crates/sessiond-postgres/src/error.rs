//! [`PostgresError`]: what can go wrong between this crate and PostgreSQL, and how each
//! failure maps into the core's [`StoreError`]. The mapping is the store's promise to
//! the Manager: a server that is down, unreachable, overloaded or too slow is
//! [`StoreError::Unavailable`] (callers fail closed and `/readyz` turns red); anything
//! else keeps its source inside [`StoreError::Backend`].

use std::time::Duration;

use sessiond_core::StoreError;

/// A failure of the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL URL: {0}")]
    BadUrl(#[source] tokio_postgres::Error),
    /// The URL's TLS settings (`sslmode`, `sslrootcert`) cannot be used.
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    /// The schema name is not usable.
    #[error(
        "invalid schema name {0:?}: use 1 to 48 lowercase ASCII letters, digits or '_', \
         not starting with a digit"
    )]
    BadSchema(String),
    /// The connection pool could not be built.
    #[error("could not build the PostgreSQL connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// PostgreSQL (or the connection to it) reported an error.
    #[error("PostgreSQL: {}", with_causes(.0))]
    Db(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("no PostgreSQL connection: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The operation did not finish in time.
    #[error("PostgreSQL did not answer {what} within {timeout:?}")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// Its time limit.
        timeout: Duration,
    },
    /// The connection ended (the event listener's, which lives outside the pool).
    #[error("the connection to PostgreSQL ended")]
    ConnectionLost,
    /// A stored row could not be read back as a session.
    #[error("a stored session cannot be read: {0}")]
    Corrupt(String),
    /// The schema records migrations this build does not know: a newer sessiond laid
    /// it out.
    #[error("{}", sessiond_core::store::newer_layout(&format!("the PostgreSQL schema {schema:?}"), u64::from(*found), u64::from(*known)))]
    NewerSchema {
        /// The schema.
        schema: String,
        /// The newest migration it records.
        found: u32,
        /// The newest this build knows.
        known: u32,
    },
    /// An event payload is over the NOTIFY limit.
    #[error("an event of {0} bytes is over the PostgreSQL NOTIFY limit of 7999 bytes")]
    PayloadTooLarge(usize),
}

/// `e`'s message followed by those of its causes: tokio-postgres's own message names
/// only the kind of failure ("error performing TLS handshake", "db error") and keeps
/// what happened in its source. A cause whose text is already there is not repeated.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

/// SQLSTATE codes that mean "the server cannot serve us right now" rather than "this
/// request is wrong": shutdowns, connection limits, resource exhaustion, our own
/// statement timeout, and contention that outlasted the retries.
const UNAVAILABLE_CODES: &[&str] = &[
    "57P01", // admin_shutdown
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now
    "57014", // query_canceled (statement_timeout, or our cancel after a timeout)
    "53000", // insufficient_resources
    "53100", // disk_full
    "53200", // out_of_memory
    "53300", // too_many_connections
    "55P03", // lock_not_available
    "40001", // serialization_failure (after retries)
    "40P01", // deadlock_detected (after retries)
];

impl PostgresError {
    /// Whether the failure means the store is unreachable, down or too slow.
    pub fn is_unavailable(&self) -> bool {
        match self {
            PostgresError::Timeout { .. } | PostgresError::ConnectionLost => true,
            PostgresError::Db(e) => db_unavailable(e),
            PostgresError::Pool(p) => match p {
                deadpool_postgres::PoolError::Backend(e) => db_unavailable(e),
                // Timeouts, a closed pool, a failed post-create hook: no connection.
                _ => true,
            },
            _ => false,
        }
    }

    /// Whether running the transaction again may succeed (serialization failure or
    /// deadlock, which PostgreSQL resolves by aborting one of the parties).
    pub(crate) fn is_retryable(&self) -> bool {
        let code = match self {
            PostgresError::Db(e) => e.code(),
            _ => None,
        };
        code.is_some_and(|c| matches!(c.code(), "40001" | "40P01"))
    }
}

fn db_unavailable(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || UNAVAILABLE_CODES.contains(&code);
    }
    if e.is_closed() {
        return true;
    }
    // Not a server error: an I/O failure (refused, reset) or a connect timeout is an
    // unreachable server; anything else (a value that does not convert) is a bug.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("timeout")
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        match e {
            PostgresError::Corrupt(m) => StoreError::Corrupt(m),
            PostgresError::NewerSchema {
                schema,
                found,
                known,
            } => sessiond_core::store::written_by_newer(
                &format!("the PostgreSQL schema {schema:?}"),
                u64::from(found),
                u64::from(known),
            ),
            e if e.is_unavailable() => StoreError::Unavailable(e.to_string()),
            e => StoreError::Backend(Box::new(e)),
        }
    }
}

/// Result of an internal operation.
pub(crate) type PgResult<T> = Result<T, PostgresError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_pool_timeouts_are_unavailable() {
        let t = PostgresError::Timeout {
            what: "open",
            timeout: Duration::from_secs(2),
        };
        assert!(matches!(StoreError::from(t), StoreError::Unavailable(_)));
        let p = PostgresError::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ));
        assert!(matches!(StoreError::from(p), StoreError::Unavailable(_)));
    }

    #[test]
    fn configuration_errors_are_backend_errors() {
        let e = PostgresError::BadSchema("Bad-Name".into());
        assert!(matches!(StoreError::from(e), StoreError::Backend(_)));
        let c = PostgresError::Corrupt("bad json".into());
        assert!(matches!(StoreError::from(c), StoreError::Corrupt(_)));
    }
}
