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
//! The record and its rules are the shared ones of [`sessiond_core::backend`]; this
//! module says only what a Redis answer tells.

use std::future::Future;

use sessiond_core::backend::Sent;
pub(crate) use sessiond_core::backend::{track, Writes};
use sessiond_core::StoreError;

use crate::error::Error;

/// The [`StoreError`] for `e` given what the operation's commits did.
pub(crate) fn classify(writes: &Writes, e: Error) -> StoreError {
    let unanswered = e.is_unavailable();
    writes.classify(e, unanswered)
}

/// Sends a commit (`send`), noting it in the record of the operation it runs in.
/// `applied` tells from the answer whether anything was changed.
pub(crate) async fn commit<T>(
    send: impl Future<Output = Result<T, Error>>,
    applied: impl FnOnce(&T) -> bool,
) -> Result<T, Error> {
    sessiond_core::backend::commit(send, |out| match out {
        Ok(answer) if applied(answer) => Sent::Applied,
        Ok(_) => Sent::NotApplied,
        // Nothing reached the server.
        Err(Error::Redis(e)) if e.is_connection_refusal() => Sent::NotApplied,
        // Anything else: the script may have run (a lost connection, a timeout).
        Err(_) => Sent::Unknown,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn timed_out() -> Error {
        Error::TimedOut(Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_timeout_is_unknown_only_once_a_commit_was_sent() {
        let w = Arc::new(Writes::default());
        assert!(matches!(
            classify(&w, timed_out()),
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
            classify(&w, timed_out()),
            StoreError::OutcomeUnknown(_)
        ));
        // Not for errors that are not about a missing answer.
        assert!(matches!(
            classify(&w, Error::Corrupt("x".into())),
            StoreError::Corrupt(_)
        ));
    }

    #[tokio::test]
    async fn an_answered_commit_settles_the_record() {
        let w = Arc::new(Writes::default());
        let conflict = track(w.clone(), commit(async { Ok(false) }, |applied| *applied));
        assert!(!conflict.await.unwrap());
        assert!(matches!(
            classify(&w, timed_out()),
            StoreError::Unavailable(_)
        ));
        let applied = track(w.clone(), commit(async { Ok(true) }, |applied| *applied));
        assert!(applied.await.unwrap());
        assert!(matches!(
            classify(&w, timed_out()),
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
        assert!(matches!(classify(&w, e), StoreError::Unavailable(_)));
    }
}
