//! Events the [`crate::Manager`] publishes: a session opened, closed (with reason and
//! actor), changed privileges, changed heartbeat. Subscribers (SSE streams, hooks,
//! metrics) get them through a broadcast channel.

use std::sync::Arc;

use serde::Serialize;

use crate::id::SessionId;
use crate::session::{Actor, CloseReason, Session};
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session opened.
    Opened,
    /// A session closed.
    Closed,
    /// A session's privileges (and token) changed.
    PrivilegesChanged,
    /// A session's heartbeat was suspended, resumed or retuned.
    HeartbeatChanged,
}

impl EventKind {
    /// The snake_case name (the SSE `event:` field).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Closed => "closed",
            EventKind::PrivilegesChanged => "privileges_changed",
            EventKind::HeartbeatChanged => "heartbeat_changed",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// What happened.
    #[serde(rename = "event")]
    pub kind: EventKind,
    /// The session.
    pub id: SessionId,
    /// Its app.
    pub app: Arc<str>,
    /// Its user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Box<str>>,
    /// Why it closed (closed events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CloseReason>,
    /// Who closed it (closed events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<Actor>,
    /// When.
    pub at: Timestamp,
}

impl Event {
    /// An event about `s` at `at`; closed events take reason and actor from the session.
    pub fn of(kind: EventKind, s: &Session, at: Timestamp) -> Event {
        let closure = s.closed.filter(|_| kind == EventKind::Closed);
        Event {
            kind,
            id: s.id,
            app: s.app.clone(),
            user: s.user.clone(),
            reason: closure.map(|c| c.reason),
            by: closure.map(|c| c.by),
            at: closure.map_or(at, |c| c.at),
        }
    }
}
