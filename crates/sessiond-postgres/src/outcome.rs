//! Whether a failed operation may have changed anything: the line between
//! [`StoreError::Unavailable`] (nothing was changed, a retry is safe) and
//! [`StoreError::OutcomeUnknown`] (a commit was sent and its answer never came).
//!
//! Every change this store makes is a transaction, and PostgreSQL rolls back a
//! transaction whose client goes away before `COMMIT`: until the commit is sent, a
//! timeout or a lost connection changed nothing. Each operation runs with a [`Writes`]
//! record; [`commit`] (every commit and autocommitted write goes through it) notes
//! when one is in flight or applied, and the `run!` macro of the store reads it when
//! the operation fails for want of an answer.
//!
//! The record and its rules are the shared ones of [`sessiond_core::backend`]; this
//! module says only what a PostgreSQL answer tells.

use std::future::Future;

use sessiond_core::backend::Sent;
pub(crate) use sessiond_core::backend::{track, Writes};
use sessiond_core::StoreError;

use crate::error::{PgResult, PostgresError};

/// The [`StoreError`] for `e` given what the operation's commits did.
pub(crate) fn classify(writes: &Writes, e: PostgresError) -> StoreError {
    let unanswered = e.is_unavailable();
    writes.classify(e, unanswered)
}

/// Sends a commit (or a write that commits by itself), noting it in the record of the
/// operation it runs in.
pub(crate) async fn commit<T>(send: impl Future<Output = PgResult<T>>) -> PgResult<T> {
    sessiond_core::backend::commit(send, |out| match out {
        Ok(_) => Sent::Applied,
        // The server answered with an error (a serialization failure at commit, say):
        // the transaction was rolled back.
        Err(PostgresError::Db(e)) if e.code().is_some() => Sent::NotApplied,
        // A lost connection: the commit may have been applied.
        Err(_) => Sent::Unknown,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn timed_out() -> PostgresError {
        PostgresError::Timeout {
            what: "modify",
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_timeout_is_unknown_only_once_a_commit_was_sent() {
        let w = Arc::new(Writes::default());
        assert!(matches!(
            classify(&w, timed_out()),
            StoreError::Unavailable(_)
        ));
        let pending = track(w.clone(), commit(std::future::pending::<PgResult<()>>()));
        assert!(tokio::time::timeout(Duration::from_millis(10), pending)
            .await
            .is_err());
        assert!(matches!(
            classify(&w, timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            classify(&w, PostgresError::Corrupt("x".into())),
            StoreError::Corrupt(_)
        ));
    }

    #[tokio::test]
    async fn an_applied_commit_makes_a_later_failure_unknown() {
        let w = Arc::new(Writes::default());
        track(w.clone(), commit(async { Ok(()) })).await.unwrap();
        assert!(matches!(
            classify(&w, timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
    }
}
