//! Connections and time limits: the pool, the per-operation deadline, the guard that
//! keeps an abandoned operation from poisoning the pool, and the retry of transactions
//! that PostgreSQL aborted to resolve a conflict.
//!
//! Every store operation runs inside [`Db::bounded`]: waiting for a pooled connection
//! and every round trip count against one deadline (`op_timeout`). When the deadline
//! passes, the operation's future is dropped and with it its [`Conn`], still armed: the
//! guard takes the connection out of the pool for good (so the pool makes a fresh one
//! instead of handing out a connection with a statement in flight), asks the server to
//! cancel what it was running, and closes it. The server-side `statement_timeout` and
//! `idle_in_transaction_session_timeout` (set on every pooled connection) bound the
//! rest, so no lock outlives its owner by much.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::error::{PgResult, PostgresError};
use crate::schema::Sql;
use crate::tls::Tls;

/// How often a transaction aborted by a serialization failure or deadlock is retried.
const MAX_ATTEMPTS: u32 = 8;

/// The pool, the statements and the time limit shared by the store and its event bus.
#[derive(Debug)]
pub(crate) struct Db {
    pub pool: Pool,
    pub sql: Sql,
    pub op_timeout: Duration,
    /// What every connection is made with (also the bus's and cancel requests).
    pub tls: Tls,
}

impl Db {
    /// Runs `op` within the operation deadline; past it, the operation is abandoned and
    /// reported as [`PostgresError::Timeout`].
    pub async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = PgResult<T>>,
    ) -> PgResult<T> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(PostgresError::Timeout {
                what,
                timeout: self.op_timeout,
            }),
        }
    }

    /// A pooled connection, guarded (see [`Conn`]).
    pub async fn conn(&self) -> PgResult<Conn> {
        let obj = self.pool.get().await?;
        Ok(Conn {
            obj: Some(obj),
            armed: true,
            tls: self.tls.clone(),
        })
    }
}

/// A pooled connection that must be [`Conn::release`]d once its operation finished.
/// Dropped while still armed (its operation was abandoned mid-flight, say by a
/// timeout), it leaves the pool for good: the server is asked to cancel whatever runs
/// on it and the connection is closed.
pub(crate) struct Conn {
    obj: Option<Object>,
    armed: bool,
    tls: Tls,
}

impl Conn {
    /// Hands the connection back to the pool: its operation ran to completion (with or
    /// without an error), so nothing is left in flight on it.
    pub fn release(mut self) {
        self.armed = false;
    }
}

impl Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        // Present from construction until drop.
        self.obj.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.obj.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(obj) = self.obj.take() else { return };
        let client = Object::take(obj);
        let cancel = client.cancel_token();
        let tls = self.tls.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    // Best effort: the statement timeout ends it anyway.
                    let _ = tokio::time::timeout(Duration::from_secs(5), cancel.cancel_query(tls))
                        .await;
                    drop(client);
                });
            }
            Err(_) => drop(client),
        }
    }
}

/// Evaluates `$attempt` (an expression that awaits one transaction) again while
/// PostgreSQL aborts it with a serialization failure or a deadlock, with short
/// randomised pauses in between; the caller's deadline still bounds the whole.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut n = 0u32;
        loop {
            n += 1;
            match $attempt {
                Err(e) if $crate::db::should_retry(&e, n) => $crate::db::pause(n).await,
                other => break other,
            }
        }
    }};
}
pub(crate) use retrying;

/// Whether attempt `n`, which failed with `e`, is to be run again.
pub(crate) fn should_retry(e: &PostgresError, n: u32) -> bool {
    let again = n < MAX_ATTEMPTS && e.is_retryable();
    if again {
        tracing::debug!(error = %e, attempt = n, "retrying a PostgreSQL transaction");
    }
    again
}

/// Sleeps 1 to 2^n milliseconds, jittered so that the parties of a deadlock do not
/// collide again in step.
pub(crate) async fn pause(n: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let cap = 1u64 << n.min(6);
    tokio::time::sleep(Duration::from_millis(1 + u64::from(nanos) % cap)).await;
}
