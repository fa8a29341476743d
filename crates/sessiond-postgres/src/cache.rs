//! Keeping a node's [`ReadCache`] current on PostgreSQL: the other nodes' notices
//! (`LISTEN`/`NOTIFY` on `<schema>_changes`), read by a [`CacheListener`], and this
//! node's own, sent by a [`Notifier`].
//!
//! A resolve (a read, or a touch that has nothing to write yet) is the most frequent
//! operation of a web app, and on a shared store each is a round trip. With the cache on
//! ([`crate::PostgresOptions::read_cache`]) a node keeps the sessions it read, by token
//! hash, and answers such a resolve from that copy when all of these hold:
//!
//! - the copy is younger than the cache's maximum age (default 1 s): this bounds how
//!   stale an answer can be whatever else fails (a notice lost, a node that writes
//!   without the cache, a half-open listening connection not yet noticed);
//! - the listening connection is up: when it is lost the cache is emptied at once and
//!   stays off until it listens again (notices sent meanwhile are lost);
//! - no notice of a change arrived between the read that filled the entry and its
//!   insertion (a generation counter: a read that raced a change is not kept);
//! - the step of the change on the copy writes nothing ([`Step::Unchanged`]): a touch
//!   that is due, an expiry, a refusal, all go to the store as without the cache.
//!
//! Every change a node makes to a session is announced after it commits: the ids go to
//! a notifier task that sends them in as few `pg_notify` calls as fit (ids are 36
//! characters, a payload 7999 bytes), outside the writer's transaction. A `NOTIFY` in
//! the writer's transaction would serialise every commit behind a database-wide lock
//! held through the WAL flush: measured with pgbench on this machine (32 clients, one
//! row update each), 21 860 transactions/s alone, 3 746 with a `NOTIFY` in the same
//! transaction, 9 249 with one after it. The node that made a change forgets its own
//! copy at once; the others when the notice arrives (the delay is measured and
//! published in docs/BENCHMARKS.md).
//!
//! Every node sharing a store must have the cache on
//! ([`crate::PostgresOptions::read_cache`]): a node without it announces nothing, and
//! leaves the others' copies stale for up to their maximum age.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use sessiond_core::backend::ReadCache;
use sessiond_core::SessionId;
use tokio::sync::mpsc;

use crate::bus::{Listens, MAX_PAYLOAD};
use crate::db::Db;
use crate::rows;

/// Ids announced in one `pg_notify` (each 36 characters and a separator).
const IDS_PER_NOTICE: usize = MAX_PAYLOAD / 37;

/// Ids waiting to be announced; past it one notice tells every node to forget
/// everything (the announcing cannot keep up, or the store is unreachable).
const MAX_WAITING: usize = 1 << 16;

/// The notice that tells every node to forget every copy (not an id).
const FORGET_ALL: &str = "*";

/// The cache's listening side: holds the cache weakly, and stops once the store that
/// owns it is gone.
pub(crate) struct CacheListener {
    pub(crate) cache: Weak<ReadCache>,
    pub(crate) channel: String,
}

impl Listens for CacheListener {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn message(&self, payload: &str) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        let ids: Vec<SessionId> = payload
            .split(',')
            .filter_map(|id| id.parse().ok())
            .collect();
        if ids.is_empty() {
            // FORGET_ALL, or a notice this version does not know: forget everything
            // rather than guess.
            cache.forget_all();
        } else {
            cache.forget(&ids);
        }
    }

    fn ready(&self, up: bool) {
        if let Some(cache) = self.cache.upgrade() {
            if !up {
                tracing::warn!(channel = %self.channel,
                    "the read cache's listening connection is lost: reads go to the store");
            }
            cache.listening(up);
        }
    }

    fn wanted(&self) -> bool {
        self.cache.strong_count() > 0
    }
}

/// Where a node's changes are announced: a task that sends the ids it is given in as
/// few notices as fit, on a pooled connection, outside any writer's transaction.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: mpsc::Sender<Notice>,
    /// Set when a notice could not wait: the next one tells every node to forget all.
    overflowed: Arc<AtomicBool>,
}

/// What the announcing task is given.
enum Notice {
    Changed(SessionId),
    /// Sessions changed that no list of ids can name (an unknown outcome, say).
    Everything,
}

impl Notifier {
    /// Starts the task (it ends once every clone of the notifier is gone).
    pub(crate) fn start(db: Arc<Db>, channel: String) -> Notifier {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        let overflowed = Arc::new(AtomicBool::new(false));
        tokio::spawn(announce(db, channel, rx, overflowed.clone()));
        Notifier { tx, overflowed }
    }

    /// Announces that `ids` changed.
    pub(crate) fn changed(&self, ids: &[SessionId]) {
        for id in ids {
            self.send(Notice::Changed(*id));
        }
    }

    /// Announces that sessions changed that no list of ids can name: every node
    /// forgets every copy.
    pub(crate) fn everything(&self) {
        self.send(Notice::Everything);
    }

    fn send(&self, n: Notice) {
        if self.tx.try_send(n).is_err() {
            // Full: the flag turns the next notice into FORGET_ALL.
            self.overflowed.store(true, Ordering::Release);
        }
    }
}

/// Sends what comes in on `rx`, batched: whatever queued while a notice was sent goes
/// in the next one. A notice that fails is logged and dropped (the other nodes' copies
/// then age out within their maximum age).
async fn announce(
    db: Arc<Db>,
    channel: String,
    mut rx: mpsc::Receiver<Notice>,
    overflowed: Arc<AtomicBool>,
) {
    let mut notices = Vec::new();
    while rx.recv_many(&mut notices, IDS_PER_NOTICE).await > 0 {
        let all = overflowed.swap(false, Ordering::AcqRel)
            || notices.iter().any(|n| matches!(n, Notice::Everything));
        let payload = if all {
            FORGET_ALL.to_string()
        } else {
            notices
                .iter()
                .filter_map(|n| match n {
                    Notice::Changed(id) => Some(id.to_string()),
                    Notice::Everything => None,
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        notices.clear();
        let sent = db
            .bounded("NOTIFY", async {
                let conn = db.conn().await?;
                let out =
                    rows::execute(&*conn, "SELECT pg_notify($1, $2)", &[&channel, &payload]).await;
                conn.release();
                out
            })
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "changes not announced to the other nodes' read caches; their copies age out");
        }
    }
}
