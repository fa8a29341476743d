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
//! The record travels as a task-local value rather than as an argument, so no write
//! path can forget to pass it (none outside [`track`], when nothing is recorded).

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use sessiond_core::StoreError;

use crate::error::{PgResult, PostgresError};

tokio::task_local! {
    static WRITES: Arc<Writes>;
}

/// A commit was sent and no answer has come yet.
const IN_FLIGHT: u8 = 1;
/// A commit was applied (a later failure leaves the operation half done, as an
/// expiry sweep that commits batch by batch can be).
const APPLIED: u8 = 2;

/// What one operation's commits did so far.
#[derive(Debug, Default)]
pub(crate) struct Writes(AtomicU8);

impl Writes {
    fn uncertain(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// The [`StoreError`] for `e`, the error the operation failed with: a failure for
    /// want of an answer after a commit was sent is [`StoreError::OutcomeUnknown`].
    pub(crate) fn classify(&self, e: PostgresError) -> StoreError {
        if e.is_unavailable() && self.uncertain() {
            StoreError::OutcomeUnknown(e.to_string())
        } else {
            e.into()
        }
    }
}

/// Runs `fut` with `writes` as the record of its commits.
pub(crate) async fn track<F: Future>(writes: Arc<Writes>, fut: F) -> F::Output {
    WRITES.scope(writes, fut).await
}

/// Sends a commit (or a write that commits by itself), noting it in the record of the
/// operation it runs in.
pub(crate) async fn commit<T>(send: impl Future<Output = PgResult<T>>) -> PgResult<T> {
    let note = |set: u8, clear: u8| {
        let _ = WRITES.try_with(|w| {
            w.0.fetch_and(!clear, Ordering::AcqRel);
            w.0.fetch_or(set, Ordering::AcqRel);
        });
    };
    note(IN_FLIGHT, 0);
    let out = send.await;
    match &out {
        Ok(_) => note(APPLIED, IN_FLIGHT),
        // The server answered with an error (a serialization failure at commit, say):
        // the transaction was rolled back.
        Err(PostgresError::Db(e)) if e.code().is_some() => note(0, IN_FLIGHT),
        // A lost connection: the commit may have been applied.
        Err(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
            w.classify(timed_out()),
            StoreError::Unavailable(_)
        ));
        let pending = track(w.clone(), commit(std::future::pending::<PgResult<()>>()));
        assert!(tokio::time::timeout(Duration::from_millis(10), pending)
            .await
            .is_err());
        assert!(matches!(
            w.classify(timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            w.classify(PostgresError::Corrupt("x".into())),
            StoreError::Corrupt(_)
        ));
    }

    #[tokio::test]
    async fn an_applied_commit_makes_a_later_failure_unknown() {
        let w = Arc::new(Writes::default());
        track(w.clone(), commit(async { Ok(()) })).await.unwrap();
        assert!(matches!(
            w.classify(timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
    }
}
