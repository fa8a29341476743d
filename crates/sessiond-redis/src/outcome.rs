//! Whether a failed operation may have changed anything: the line between
//! [`StoreError::Unavailable`] (nothing was changed, a retry is safe) and
//! [`StoreError::OutcomeUnknown`] (a write was sent and its answer never came).
//!
//! Every change this store makes to a session goes through one `COMMIT` or `PUT`
//! script ([`crate::commit::Commit::run`]); the index entries written before it point
//! to nothing until it lands, so they change nothing a client can see. An operation
//! therefore runs with a [`Writes`] record, set by the commit when its script is sent
//! and settled when its answer comes. [`RedisStore::bounded`](crate::RedisStore) reads
//! it when the operation fails for want of an answer: if a commit was in flight, or one
//! had already been applied (a close-all applies its batches one by one), the outcome is
//! unknown.
//!
//! The record travels as a task-local value rather than as an argument, so no write
//! path can forget to pass it: the commit finds the record of whatever operation it
//! runs in (none outside [`track`], when nothing is recorded).

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use sessiond_core::StoreError;

use crate::error::Error;

tokio::task_local! {
    static WRITES: Arc<Writes>;
}

/// A commit was sent and no answer has come yet.
const IN_FLIGHT: u8 = 1;
/// A commit was applied (a later failure leaves the operation half done).
const APPLIED: u8 = 2;

/// What one operation's commits did so far.
#[derive(Debug, Default)]
pub(crate) struct Writes(AtomicU8);

impl Writes {
    /// Whether some change of this operation may have landed.
    fn uncertain(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// The [`StoreError`] for `e`, the error the operation failed with: a failure for
    /// want of an answer (a timeout, a lost connection) after a commit was sent is
    /// [`StoreError::OutcomeUnknown`].
    pub(crate) fn classify(&self, e: Error) -> StoreError {
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

/// Sends a commit (`send`), noting it in the record of the operation it runs in.
/// `applied` tells from the answer whether anything was changed.
pub(crate) async fn commit<T>(
    send: impl Future<Output = Result<T, Error>>,
    applied: impl FnOnce(&T) -> bool,
) -> Result<T, Error> {
    let note = |f: &dyn Fn(&Writes)| {
        let _ = WRITES.try_with(|w| f(w));
    };
    note(&|w| {
        w.0.fetch_or(IN_FLIGHT, Ordering::AcqRel);
    });
    let out = send.await;
    match &out {
        Ok(answer) => {
            let done = applied(answer);
            note(&|w| {
                w.0.fetch_and(!IN_FLIGHT, Ordering::AcqRel);
                if done {
                    w.0.fetch_or(APPLIED, Ordering::AcqRel);
                }
            });
        }
        // Nothing reached the server.
        Err(Error::Redis(e)) if e.is_connection_refusal() => note(&|w| {
            w.0.fetch_and(!IN_FLIGHT, Ordering::AcqRel);
        }),
        // Anything else: the script may have run (a lost connection, a timeout).
        Err(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn timed_out() -> Error {
        Error::TimedOut(Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_timeout_is_unknown_only_once_a_commit_was_sent() {
        let w = Arc::new(Writes::default());
        assert!(matches!(
            w.classify(timed_out()),
            StoreError::Unavailable(_)
        ));
        // A commit whose answer never comes.
        let pending = track(
            w.clone(),
            commit(std::future::pending::<Result<(), Error>>(), |_| true),
        );
        assert!(tokio::time::timeout(Duration::from_millis(10), pending)
            .await
            .is_err());
        assert!(matches!(
            w.classify(timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
        // Not for errors that are not about a missing answer.
        assert!(matches!(
            w.classify(Error::Corrupt("x".into())),
            StoreError::Corrupt(_)
        ));
    }

    #[tokio::test]
    async fn an_answered_commit_settles_the_record() {
        let w = Arc::new(Writes::default());
        let conflict = track(w.clone(), commit(async { Ok(false) }, |applied| *applied));
        assert!(!conflict.await.unwrap());
        assert!(matches!(
            w.classify(timed_out()),
            StoreError::Unavailable(_)
        ));
        let applied = track(w.clone(), commit(async { Ok(true) }, |applied| *applied));
        assert!(applied.await.unwrap());
        assert!(matches!(
            w.classify(timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_sent_nothing() {
        let w = Arc::new(Writes::default());
        let refused = Error::Redis(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let out = track(w.clone(), commit(async { Err::<(), _>(refused) }, |_| true)).await;
        let e = out.unwrap_err();
        assert!(matches!(w.classify(e), StoreError::Unavailable(_)));
    }
}
