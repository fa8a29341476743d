//! Pieces every networked store (Redis, PostgreSQL) needs alike, kept in one place:
//!
//! - [`Unreadable`]: counting and reporting the records a store cannot decode (see
//!   "Unreadable records" in [`crate::store`]), never logging their content;
//! - [`ReadCache`]: a node's copies of the sessions it read, for answering reads from
//!   memory while the store's channel of changes proves them current;
//! - [`Writes`], [`track`] and [`commit`]: whether a failed operation may have changed
//!   anything, the line between [`StoreError::Unavailable`] (nothing was changed, a
//!   retry is safe) and [`StoreError::OutcomeUnknown`] (a write was sent and its answer
//!   never came). The record travels as a task-local value rather than as an argument,
//!   so no write path can forget to pass it: a commit finds the record of whatever
//!   operation it runs in (none outside [`track`], when nothing is recorded).

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::id::SessionId;
use crate::store::StoreError;

mod read_cache;
pub use read_cache::{Effect, ReadCache, Seen};

/// Records warned about at most once each (later meetings log at `debug`); past this
/// many the set starts over, so memory stays bounded and a long-lived bad record is
/// warned about again now and then.
const REPORTED_MAX: usize = 10_000;

/// Counts and reports the unreadable records a store meets.
#[derive(Debug, Default)]
pub struct Unreadable {
    met: AtomicU64,
    reported: Mutex<HashSet<SessionId>>,
}

impl Unreadable {
    /// How many times an operation met a record it could not decode.
    pub fn count(&self) -> u64 {
        self.met.load(Ordering::Relaxed)
    }

    /// Notes that the record of session `id`, stored at `place`, could not be decoded
    /// because `why`, and that `what` happens to it: counted every time, warned about
    /// the first time this process meets it.
    pub fn met(&self, id: SessionId, place: &str, why: &str, what: &str) {
        self.met.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= REPORTED_MAX {
                seen.clear();
            }
            seen.insert(id)
        };
        if first {
            tracing::warn!(session = %id, record = place, error = why, "unreadable session record {what}");
        } else {
            tracing::debug!(session = %id, record = place, error = why, "unreadable session record {what}");
        }
    }
}

/// What is wrong with a JSON text, without quoting it: a syntax error (which names no
/// input, only a position) as serde_json says it, a well-formed text that is not a
/// session only by position, since serde_json's data errors may quote stored values.
pub fn describe(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => e.to_string(),
        serde_json::error::Category::Data | serde_json::error::Category::Io => format!(
            "the JSON is not a session (at line {} column {})",
            e.line(),
            e.column()
        ),
    }
}

tokio::task_local! {
    static WRITES: Arc<Writes>;
}

/// A commit was sent and no answer has come yet.
const IN_FLIGHT: u8 = 1;
/// A commit was applied (a later failure leaves the operation half done: a close-all
/// or an expiry sweep commits batch by batch).
const APPLIED: u8 = 2;

/// What one operation's commits did so far.
#[derive(Debug, Default)]
pub struct Writes(AtomicU8);

impl Writes {
    /// Whether some change of this operation may have landed.
    pub fn uncertain(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// The [`StoreError`] for `e`, the error the operation failed with: a failure for
    /// want of an answer (`unanswered`: a timeout, a lost connection) after a commit
    /// was sent is [`StoreError::OutcomeUnknown`].
    pub fn classify<E: Into<StoreError> + Display>(&self, e: E, unanswered: bool) -> StoreError {
        if unanswered && self.uncertain() {
            StoreError::OutcomeUnknown(e.to_string())
        } else {
            e.into()
        }
    }
}

/// Runs `fut` with `writes` as the record of its commits.
pub async fn track<F: Future>(writes: Arc<Writes>, fut: F) -> F::Output {
    WRITES.scope(writes, fut).await
}

/// What the answer to a commit says it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It changed something.
    Applied,
    /// It changed nothing (refused, rolled back, or never reached the server).
    NotApplied,
    /// No answer that says: it may have been applied.
    Unknown,
}

/// Sends a commit (`send`), noting it in the record of the operation it runs in;
/// `sent` tells from the answer what it did.
pub async fn commit<T, E>(
    send: impl Future<Output = Result<T, E>>,
    sent: impl FnOnce(&Result<T, E>) -> Sent,
) -> Result<T, E> {
    let note = |set: u8, clear: u8| {
        let _ = WRITES.try_with(|w| {
            w.0.fetch_and(!clear, Ordering::AcqRel);
            w.0.fetch_or(set, Ordering::AcqRel);
        });
    };
    note(IN_FLIGHT, 0);
    let out = send.await;
    match sent(&out) {
        Sent::Applied => note(APPLIED, IN_FLIGHT),
        Sent::NotApplied => note(0, IN_FLIGHT),
        Sent::Unknown => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug)]
    struct Timeout;
    impl Display for Timeout {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("timed out")
        }
    }
    impl From<Timeout> for StoreError {
        fn from(_: Timeout) -> Self {
            StoreError::Unavailable("timed out".into())
        }
    }

    fn sent(r: &Result<bool, Timeout>) -> Sent {
        match r {
            Ok(true) => Sent::Applied,
            Ok(false) => Sent::NotApplied,
            Err(_) => Sent::Unknown,
        }
    }

    #[tokio::test]
    async fn a_failure_is_unknown_only_once_a_commit_was_sent_unanswered_or_applied() {
        let w = Arc::new(Writes::default());
        assert!(matches!(
            w.classify(Timeout, true),
            StoreError::Unavailable(_)
        ));
        let pending = track(
            w.clone(),
            commit(std::future::pending::<Result<bool, Timeout>>(), sent),
        );
        assert!(tokio::time::timeout(Duration::from_millis(10), pending)
            .await
            .is_err());
        assert!(matches!(
            w.classify(Timeout, true),
            StoreError::OutcomeUnknown(_)
        ));
        assert!(
            matches!(w.classify(Timeout, false), StoreError::Unavailable(_)),
            "not for an error that is not about a missing answer"
        );

        let w = Arc::new(Writes::default());
        assert!(!track(w.clone(), commit(async { Ok(false) }, sent))
            .await
            .unwrap());
        assert!(!w.uncertain(), "a refused commit settles the record");
        assert!(track(w.clone(), commit(async { Ok(true) }, sent))
            .await
            .unwrap());
        assert!(
            w.uncertain(),
            "after an applied commit a later failure is unknown"
        );
    }
}
