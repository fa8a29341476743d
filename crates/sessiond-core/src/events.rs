//! Events the [`crate::Manager`] publishes: a session opened, closed (with reason and
//! actor), changed privileges, changed heartbeat. Subscribers (SSE streams, hooks,
//! metrics) get them through a broadcast channel.
//!
//! Across nodes, events travel over the store's [`EventBus`] (Redis pub/sub,
//! PostgreSQL LISTEN/NOTIFY): [`crate::Manager::start_relay`] publishes this node's
//! events and feeds the other nodes' into the local channel, so an SSE client on any
//! node hears a close made on any other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::SessionId;
use crate::session::{Actor, CloseReason, Session};
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    #[serde(rename = "event")]
    pub kind: EventKind,
    /// The session.
    pub id: SessionId,
    /// Its app.
    pub app: Arc<str>,
    /// Its user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Box<str>>,
    /// Why it closed (closed events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CloseReason>,
    /// Who closed it (closed events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Publish/subscribe of opaque text messages between the nodes sharing a store.
/// Delivery is at most once and best effort: it makes pushes fast, while the store
/// stays the truth (a client that missed a push learns the state at its next request).
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Sends `payload` to every subscriber on every node (this one included).
    async fn publish(&self, payload: String) -> Result<(), crate::StoreError>;
    /// Messages from now on, until the returned receiver is dropped. A bus that loses
    /// its connection reconnects by itself; messages sent meanwhile are lost.
    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<String>, crate::StoreError>;
}

/// What the relay sends over a bus: an event and the node it comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusMessage {
    /// Random id of the sending node (a node skips its own messages).
    pub origin: u64,
    /// The event.
    pub event: Event,
}
