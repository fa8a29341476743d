//! Records this store cannot decode (see "Unreadable records" in
//! [`sessiond_core::store`]): counting them for the metrics and warning about each one
//! without ever logging its content (a record may hold storage values a client chose).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sessiond_core::SessionId;

/// Records warned about at most once each (later meetings log at `debug`); past this
/// many the set starts over, so memory stays bounded and a long-lived bad record is
/// warned about again now and then.
const REPORTED_MAX: usize = 10_000;

/// Counts and reports the unreadable records this store meets.
#[derive(Debug, Default)]
pub(crate) struct Unreadable {
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
pub(crate) fn describe(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => e.to_string(),
        serde_json::error::Category::Data | serde_json::error::Category::Io => format!(
            "the JSON is not a session (at line {} column {})",
            e.line(),
            e.column()
        ),
    }
}
