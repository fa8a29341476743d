//! The [`Store`] trait: the atomic operations the rules need, and nothing a caller could
//! combine into a race. A store decides nothing itself: it gathers what
//! [`crate::admission::decide`] and [`Session::step`] need inside its own atomic section
//! (a lock, a transaction, a script) and persists what they produce.
//!
//! A store is done when the conformance suite (`sessiond_core::conformance`, feature
//! `conformance`) passes on it.
//!
//! # Unreadable records
//!
//! A store that keeps sessions in a format it decodes on read (JSON in Redis or
//! PostgreSQL) may meet a record it cannot decode: written by hand, by another
//! version, or nested deeper than the decoder allows. Such a record harms only its own
//! session. Operations over many sessions ([`Store::list`], [`Store::expire_due`],
//! [`Store::close_all`], the admission of [`Store::open`]) go on around it: it is
//! skipped, logged (`warn`, with its id and where it is stored, never its content) and
//! counted by the store. What the store counts from its indexes without reading records
//! still counts it: an unreadable record indexed as an open seat holder keeps its seat
//! in [`Store::counts`] and in admission, but it is never picked to be displaced
//! (taken over, replaced, evicted) and does not count against its user's limit, since
//! no one can use it. [`Store::get`] and [`Store::modify`] of that session answer
//! [`StoreError::Corrupt`]; [`Store::close`] removes it ([`CloseOutcome::Discarded`]).

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::admission::{Admission, Refusal};
use crate::id::{SessionId, TokenHash};
use crate::session::{Actor, Change, ChangeError, CloseReason, Conditions, Session, Step};
use crate::time::Timestamp;

/// How to find a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// By its public id.
    Id(SessionId),
    /// By the hash of its token.
    Token(TokenHash),
}

/// The answer to [`Store::open`].
// Outcomes live for one call; boxing the session would cost an allocation per operation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum OpenOutcome {
    /// The session is open; `displaced` were closed to make room (taken over, replaced,
    /// evicted), in the same atomic step.
    Opened {
        /// The new session as stored.
        session: Session,
        /// Sessions closed to admit it.
        displaced: Vec<Session>,
    },
    /// Admission refused; nothing changed.
    Refused(Refusal),
}

/// The answer to [`Store::modify`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ModifyOutcome {
    /// The step ran; `session` is the state after it.
    Done {
        /// The session after the step.
        session: Session,
        /// What the step did (an `Expired` step closed the session).
        step: Step,
        /// Sessions closed in the same atomic step to admit the change (timed-out
        /// ones, the user's oldest under `replace_oldest`); empty for every change but
        /// an admitted [`Change::SetPrivileges`].
        displaced: Vec<Session>,
    },
    /// The change was refused; nothing changed.
    Refused(ChangeError),
    /// No such session.
    NotFound,
}

/// The answer to [`Store::close`].
#[derive(Debug, Clone)]
pub enum CloseOutcome {
    /// It was open and is now closed.
    Closed(Session),
    /// It was already closed; nothing changed.
    AlreadyClosed(Session),
    /// No such session.
    NotFound,
    /// The stored record could not be read (decoded), so there was no session to
    /// close: the store removed the record and its index entries instead, which frees
    /// the seat it was counted as holding. See "Unreadable records" in the module docs.
    Discarded,
}

/// Which sessions [`Store::list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    /// Open and closed.
    #[default]
    Any,
    /// Open only.
    Open,
    /// Closed only (history).
    Closed,
}

/// A page of sessions, ordered by id (that is, by opening time).
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this app (all apps when none).
    pub app: Option<String>,
    /// Open, closed or both.
    pub status: StatusFilter,
    /// Only this user.
    pub user: Option<String>,
    /// Start after this id (the last one of the previous page).
    pub after: Option<SessionId>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// Page size.
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            app: None,
            status: StatusFilter::Any,
            user: None,
            after: None,
            newest_first: false,
            limit: 100,
        }
    }
}

impl ListQuery {
    /// Whether `s` passes the filters (not the cursor).
    pub fn matches(&self, s: &Session) -> bool {
        self.app.as_deref().is_none_or(|a| *s.app == *a)
            && self
                .user
                .as_deref()
                .is_none_or(|u| s.user.as_deref() == Some(u))
            && match self.status {
                StatusFilter::Any => true,
                StatusFilter::Open => s.is_open(),
                StatusFilter::Closed => !s.is_open(),
            }
    }

    /// Whether `id` lies beyond the cursor in the page order.
    pub fn after_cursor(&self, id: SessionId) -> bool {
        match self.after {
            None => true,
            Some(a) if self.newest_first => id < a,
            Some(a) => id > a,
        }
    }
}

/// Counts for one app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCounts {
    /// Open sessions.
    pub open: u64,
    /// Open sessions that take a seat.
    pub seats_used: u64,
}

/// What [`Store::expire_due`] did.
#[derive(Debug, Clone, Default)]
pub struct Expired {
    /// Sessions closed because a timeout passed, as they are now.
    pub closed: Vec<Session>,
    /// Closed sessions removed because their retention ended.
    pub purged: usize,
}

/// A store failed. Callers fail closed on it: a store error never becomes a fresh
/// session or a skipped revocation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is not answering in time, and nothing was
    /// changed: the operation failed before any write of it was sent (or the store
    /// refused it as a whole). Retrying is safe.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// A write was sent to the store and no answer came back in time (a timeout, a
    /// connection lost mid-flight): it may or may not have been applied. The caller
    /// must read the state again before retrying, since a blind retry could apply a
    /// change twice (a second open takes a second seat) or report a refusal for what
    /// in fact succeeded.
    #[error(
        "the session store did not confirm a write, which may or may not have been applied: {0}"
    )]
    OutcomeUnknown(String),
    /// Stored data could not be read back.
    #[error("the session store holds data it cannot read: {0}")]
    Corrupt(String),
    /// A file operation failed.
    #[error("session store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else a backend reports.
    #[error("session store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The refusal of a store whose data a newer sessiond laid out (a downgrade, or a
/// node older than the store it joins): `what` names the store, `found` the layout
/// version it records, `known` the newest this build reads. Every store words it the
/// same way, and none reads or writes anything of such a store.
pub fn written_by_newer(what: &str, found: u64, known: u64) -> StoreError {
    StoreError::Backend(newer_layout(what, found, known).into())
}

/// The text of [`written_by_newer`].
pub fn newer_layout(what: &str, found: u64, known: u64) -> String {
    format!(
        "{what} was laid out by a newer sessiond (layout version {found}); this one reads \
         versions up to {known}. Run the newer release (a downgrade cannot read it), or \
         restore a backup taken before the upgrade (docs/OPERATIONS.md, Upgrades)"
    )
}

/// The outcome of a change a store has made in its own order, visible to the operations
/// that follow it, but perhaps not yet durable: what [`Store::modify_ordered`] answers.
///
/// The outcome is reachable only through [`Ordered::durable`], so nothing can answer a
/// request with a change that a failing disk may still undo. What it allows is to stop
/// waiting in line: a caller that serializes the writes of one session (sessiond-axum's
/// per-session lock) lets the next write in as soon as this one is ordered, and the
/// store's order does the rest (a later write that depended on this one fails with it).
#[must_use = "a change is acknowledged only once `Ordered::durable` answers"]
pub struct Ordered<T> {
    value: T,
    wait: Option<Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>>,
}

impl<T> Ordered<T> {
    /// An outcome that is final already (durable, a refusal, or a change that needed no
    /// durability).
    pub fn done(value: T) -> Self {
        Ordered { value, wait: None }
    }

    /// An outcome that stands once `wait` answers `Ok`; an error from `wait` means the
    /// change was not kept.
    pub fn pending(value: T, wait: impl Future<Output = StoreResult<()>> + Send + 'static) -> Self {
        Ordered {
            value,
            wait: Some(Box::pin(wait)),
        }
    }

    /// Whether [`Ordered::durable`] answers without waiting.
    pub fn is_done(&self) -> bool {
        self.wait.is_none()
    }

    /// Waits until the change is durable, then gives its outcome.
    pub async fn durable(self) -> StoreResult<T> {
        if let Some(wait) = self.wait {
            wait.await?;
        }
        Ok(self.value)
    }

    /// Runs `f` once the wait is over, whatever its result (a decorator's timing).
    pub fn on_settled(self, f: impl FnOnce() + Send + 'static) -> Self {
        match self.wait {
            None => {
                f();
                Ordered::done(self.value)
            }
            Some(wait) => Ordered::pending(self.value, async move {
                let out = wait.await;
                f();
                out
            }),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Ordered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordered")
            .field("value", &self.value)
            .field("done", &self.is_done())
            .finish()
    }
}

/// Where sessions live. Every method is atomic on its own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `file`, `redis`, `postgres`).
    fn kind(&self) -> &'static str;

    /// Admits and inserts `session` (open, with its token hash) in one atomic step:
    /// gathers the app's [`crate::admission::AdmissionContext`], runs
    /// [`crate::admission::decide`], closes the displaced sessions and inserts. Sessions
    /// whose timeout passed are expired first so they hold no seat.
    async fn open(
        &self,
        session: Session,
        admission: &Admission,
        now: Timestamp,
    ) -> StoreResult<OpenOutcome>;

    /// Reads a session, open or closed, as stored (no expiry check).
    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>>;

    /// Applies `change` through [`Session::step`] atomically and persists the result.
    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome>;

    /// [`Store::modify`] in two stages: the returned value says the change is made in the
    /// store's order (every later operation sees it and, if it fails, fails with it); its
    /// [`Ordered::durable`] waits until it is durable. A store whose writes are durable
    /// when they are made answers [`Ordered::done`], which is the default; the file store
    /// answers as soon as the change is in memory and its frames appended. A decorator
    /// should forward it (or writes through it wait in line, never a correctness loss).
    async fn modify_ordered(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<Ordered<ModifyOutcome>> {
        self.modify(lookup, change, cond, now)
            .await
            .map(Ordered::done)
    }

    /// Closes an open session. A session whose record cannot be read is removed with
    /// its index entries and answered [`CloseOutcome::Discarded`], so an administrator
    /// can always get rid of it by id.
    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome>;

    /// Closes every open session of `app` (of `user` only, when given) but those in
    /// `except`; returns those closed.
    async fn close_all(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>>;

    /// A page of sessions.
    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>>;

    /// Open sessions and seats taken in `app`.
    async fn counts(&self, app: &str) -> StoreResult<AppCounts>;

    /// Closes open sessions whose timeout passed and removes closed ones past retention,
    /// at most `limit` of each. Cost grows with what is due, not with what is stored.
    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired>;

    /// Stores `session` exactly as given, open or closed, replacing any session with the
    /// same id, with no admission and no event: for migrations between stores and for
    /// restores, never for serving. Indexes (token, app, user, deadline) follow.
    async fn import(&self, session: Session) -> StoreResult<()> {
        let _ = session;
        Err(StoreError::Backend(
            format!("the {} store cannot import sessions", self.kind()).into(),
        ))
    }

    /// Makes every acknowledged change durable (no-op where writes are durable already).
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Checks the store answers.
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The state of a session as this node last read or wrote it, when the store keeps
    /// such a copy for its writes (Redis keeps one for a second): a base a caller may
    /// compute a write from and apply with [`Conditions::expect_version`] set to its
    /// version, saving the read. Never an answer to a read: the copy may be stale, and
    /// the conditional write then fails with a version mismatch. `None` by default
    /// (stores whose reads cost nothing need none); a decorator should forward it, or
    /// writes through it lose the saving (never correctness).
    fn write_hint(&self, _lookup: Lookup) -> Option<Session> {
        None
    }

    /// The bus that carries events between the nodes sharing this store, for stores
    /// that several nodes can share (none for an in-process store). Required, with no
    /// default: a decorator that forgot to forward it would silently cut nodes off
    /// from each other's events.
    fn event_bus(&self) -> Option<std::sync::Arc<dyn crate::events::EventBus>>;

    /// The store's webhook outbox ([`crate::hooks`]), for stores that keep one: each
    /// write of a session of an app with hooks keeps its deliveries in the same atomic
    /// step. Required, with no default: a decorator that forgot to forward it would
    /// silently turn an app's hooks off.
    fn outbox(&self) -> Option<&dyn crate::hooks::Outbox>;
}
