//! The JSON shapes of HTTP API v1 answers as Rust types: sessions, pages, apps, heartbeat
//! acknowledgements. (What the client sends is in [`crate::request`].)
//!
//! These mirror the server's wire format instead of reusing `sessiond-core`, so the client
//! stays a light dependency for applications that only talk HTTP. Answer types derive
//! `Serialize` as well, and serialize back to the same JSON, so a tool can print what it
//! received. Unknown fields are ignored and unknown close reasons or closers are kept as
//! text, so an older client keeps working against a newer server.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A secret credential (a session token from an open or privilege answer).
///
/// Its `Debug` output never shows the value, so a secret cannot leak through a log line
/// that prints a whole answer; call [`Secret::expose`] where the value is really needed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for an `Authorization` header or a cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret itself, by value.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    /// Serializes the real value: an open answer printed as JSON must stay usable.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Whether a session is open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// The session is live.
    Open,
    /// The session ended; its `reason` says why.
    Closed,
}

impl SessionStatus {
    /// The wire name: `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Closed => "closed",
        }
    }
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum CloseReason {
    /// The holder logged out (`DELETE /v1/session`).
    Logout,
    /// No activity for the idle timeout.
    IdleTimeout,
    /// The absolute lifetime ran out.
    AbsoluteTimeout,
    /// Heartbeats stopped for longer than interval + grace.
    HeartbeatLost,
    /// Heartbeats stopped, and the seat's lease ran out too.
    LeaseExpired,
    /// An administrator or the app closed it.
    Killed,
    /// Closed by "disconnect everyone except me".
    ClosedAll,
    /// Another client took its seat over.
    TakenOver,
    /// Evicted to make room in a full house.
    Evicted,
    /// Replaced by a newer session of the same user.
    Replaced,
    /// Another user signed in on the same browser (web sessions only).
    UserChanged,
    /// A reason this client does not know yet (a newer server), kept as sent.
    Other(String),
}

impl CloseReason {
    /// The wire name, e.g. `heartbeat_lost`.
    pub fn as_str(&self) -> &str {
        match self {
            CloseReason::Logout => "logout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::AbsoluteTimeout => "absolute_timeout",
            CloseReason::HeartbeatLost => "heartbeat_lost",
            CloseReason::LeaseExpired => "lease_expired",
            CloseReason::Killed => "killed",
            CloseReason::ClosedAll => "closed_all",
            CloseReason::TakenOver => "taken_over",
            CloseReason::Evicted => "evicted",
            CloseReason::Replaced => "replaced",
            CloseReason::UserChanged => "user_changed",
            CloseReason::Other(s) => s,
        }
    }
}

impl From<String> for CloseReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "logout" => CloseReason::Logout,
            "idle_timeout" => CloseReason::IdleTimeout,
            "absolute_timeout" => CloseReason::AbsoluteTimeout,
            "heartbeat_lost" => CloseReason::HeartbeatLost,
            "lease_expired" => CloseReason::LeaseExpired,
            "killed" => CloseReason::Killed,
            "closed_all" => CloseReason::ClosedAll,
            "taken_over" => CloseReason::TakenOver,
            "evicted" => CloseReason::Evicted,
            "replaced" => CloseReason::Replaced,
            "user_changed" => CloseReason::UserChanged,
            _ => CloseReason::Other(s),
        }
    }
}

impl From<CloseReason> for String {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who closed a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ClosedBy {
    /// An administrator (admin token).
    Admin,
    /// The app (app key).
    App,
    /// The session's own holder.
    User,
    /// A timeout.
    Expiry,
    /// The server itself.
    System,
    /// Another session, by its id (take-over, close-all, replace).
    Session(String),
    /// A closer this client does not know yet, kept as sent.
    Other(String),
}

impl From<String> for ClosedBy {
    fn from(s: String) -> Self {
        match s.as_str() {
            "admin" => ClosedBy::Admin,
            "app" => ClosedBy::App,
            "user" => ClosedBy::User,
            "expiry" => ClosedBy::Expiry,
            "system" => ClosedBy::System,
            _ => match s.strip_prefix("session:") {
                Some(id) => ClosedBy::Session(id.to_string()),
                None => ClosedBy::Other(s),
            },
        }
    }
}

impl From<ClosedBy> for String {
    fn from(c: ClosedBy) -> Self {
        c.to_string()
    }
}

impl fmt::Display for ClosedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClosedBy::Admin => f.write_str("admin"),
            ClosedBy::App => f.write_str("app"),
            ClosedBy::User => f.write_str("user"),
            ClosedBy::Expiry => f.write_str("expiry"),
            ClosedBy::System => f.write_str("system"),
            ClosedBy::Session(id) => write!(f, "session:{id}"),
            ClosedBy::Other(s) => f.write_str(s),
        }
    }
}

/// Where a session's client is. Also the `client` part of an
/// [`OpenRequest`](crate::OpenRequest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// A label the client gave itself (machine name, app version...).
    #[serde(default)]
    pub label: Option<String>,
    /// The client's IP address.
    #[serde(default)]
    pub ip: Option<String>,
    /// The client's user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// A session's heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds after a missed beat before the session is closed `heartbeat_lost`.
    pub grace_s: u32,
    /// False while the heartbeat is suspended (only the idle timeout applies then).
    pub active: bool,
    /// Seconds the seat is held, *away*, after interval + grace without a beat; 0: no
    /// lease (the session closes `heartbeat_lost` at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A session as the API shows it. Never carries the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Public, non-secret id (UUIDv7); never grants access.
    pub id: String,
    /// The app (namespace) it belongs to.
    pub app: String,
    /// The user, `None` for a guest.
    pub user: Option<String>,
    /// Privileges.
    #[serde(default)]
    pub privileges: Vec<String>,
    /// Public facts about the holder (a JSON object).
    #[serde(default)]
    pub info: Map<String, Value>,
    /// The session storage (a JSON object).
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Where the client is.
    #[serde(default)]
    pub client: ClientInfo,
    /// Open or closed.
    pub status: SessionStatus,
    /// Why it closed (closed sessions only).
    pub reason: Option<CloseReason>,
    /// Who closed it (closed sessions only).
    pub closed_by: Option<ClosedBy>,
    /// When it opened (RFC 3339).
    pub created_at: String,
    /// Last activity (RFC 3339).
    pub last_activity_at: String,
    /// Last heartbeat (RFC 3339).
    pub last_heartbeat_at: String,
    /// When it closed (RFC 3339), closed sessions only.
    pub closed_at: Option<String>,
    /// When it closes if nothing happens (RFC 3339), open sessions only.
    pub expires_at: Option<String>,
    /// Idle timeout in seconds.
    pub idle_timeout_s: u32,
    /// Heartbeat settings, `None` when the session has no heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// Whether it takes one of the app's seats.
    pub counts_seat: bool,
    /// Version; changes on data, privilege or policy changes (not on a touch).
    pub version: u64,
}

impl Session {
    /// Whether the session is open.
    pub fn is_open(&self) -> bool {
        self.status == SessionStatus::Open
    }
}

/// A session with its secret token: the answer to an open or a privilege change.
///
/// The token is shown once; keep it safe. `Debug` redacts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedSession {
    /// The session.
    #[serde(flatten)]
    pub session: Session,
    /// The secret bearer token of the session.
    pub token: Secret,
}

/// What `DELETE /v1/sessions/{id}` did ([`crate::Client::kill`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Killed {
    /// The stored record of the session could not be read, so the server removed it
    /// (admin token only): `{"id", "discarded": true}`. There is no session to show.
    Discarded {
        /// The session id.
        id: String,
        /// Always true.
        discarded: bool,
    },
    /// The session, now closed as `killed`.
    Closed(Box<Session>),
}

/// One page of a session list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPage {
    /// The sessions of this page.
    pub sessions: Vec<Session>,
    /// Cursor of the next page (pass as [`ListQuery::after`](crate::ListQuery::after));
    /// `None` on the last page.
    pub next: Option<String>,
}

/// Seats of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seats {
    /// Seats taken.
    pub used: u64,
    /// Seats in all, `None` when unlimited.
    pub total: Option<u32>,
}

/// A backup the server wrote of its embedded store (`POST /v1/backups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Its directory on the server's machine: a store directory.
    pub path: String,
    /// Sessions copied.
    pub sessions: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

/// An app: its policy, seats and license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// The app's name.
    pub name: String,
    /// Seats used and total.
    pub seats: Seats,
    /// Open sessions, including those that take no seat.
    pub open: u64,
    /// The app's policy (a JSON object; its fields are the server's configuration keys).
    #[serde(default)]
    pub policy: Map<String, Value>,
    /// The license in force, if any.
    #[serde(default)]
    pub license: Option<Map<String, Value>>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// Always `open`: a closed session answers 410 `session_closed` instead.
    pub status: SessionStatus,
    /// Seconds until the next beat is due, `None` when the session has no heartbeat.
    pub next_heartbeat_s: Option<u32>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn view(id: &str) -> Value {
        json!({
            "id": id, "app": "default", "user": "ann", "privileges": ["admin"],
            "info": {"name": "Ann"}, "data": {"cart": [1, 2]},
            "client": {"label": "desk-7", "ip": "10.0.0.7", "user_agent": null},
            "status": "closed", "reason": "taken_over",
            "closed_by": "session:0192aaaa-0000-7000-8000-000000000001",
            "created_at": "2026-05-01T08:00:00.000Z",
            "last_activity_at": "2026-05-01T09:00:00.000Z",
            "last_heartbeat_at": "2026-05-01T09:00:30.000Z",
            "closed_at": "2026-05-01T09:01:00.000Z", "expires_at": null,
            "idle_timeout_s": 3600,
            "heartbeat": {"interval_s": 30, "grace_s": 60, "active": true},
            "counts_seat": true, "version": 4
        })
    }

    #[test]
    fn session_view_round_trips() {
        let json = view("0192aaaa-0000-7000-8000-000000000002");
        let s: Session = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(s.reason, Some(CloseReason::TakenOver));
        assert_eq!(
            s.closed_by,
            Some(ClosedBy::Session(
                "0192aaaa-0000-7000-8000-000000000001".into()
            ))
        );
        assert_eq!(s.client.label.as_deref(), Some("desk-7"));
        assert_eq!(s.heartbeat.map(|h| h.interval_s), Some(30));
        assert_eq!(serde_json::to_value(&s).unwrap(), json);
    }

    #[test]
    fn unknown_reason_and_closer_are_kept() {
        let mut json = view("x");
        json["reason"] = json!("moon_phase");
        json["closed_by"] = json!("robot");
        json["a_future_field"] = json!(1);
        let s: Session = serde_json::from_value(json).unwrap();
        assert_eq!(s.reason, Some(CloseReason::Other("moon_phase".into())));
        assert_eq!(s.closed_by.unwrap().to_string(), "robot");
    }

    #[test]
    fn opened_session_reads_the_token_and_redacts_it() {
        let mut json = view("x");
        json["token"] = json!("app:0123456789abcdef0123456789abcdef");
        let opened: OpenedSession = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            opened.token.expose(),
            "app:0123456789abcdef0123456789abcdef"
        );
        assert_eq!(opened.session.version, 4);
        let debug = format!("{opened:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert_eq!(serde_json::to_value(&opened).unwrap(), json);
    }

    #[test]
    fn app_view_reads_unlimited_seats() {
        let app: App = serde_json::from_value(json!({
            "name": "default", "seats": {"used": 2, "total": null}, "open": 3,
            "policy": {"idle_timeout_s": 3600}, "license": null
        }))
        .unwrap();
        assert_eq!(
            app.seats,
            Seats {
                used: 2,
                total: None
            }
        );
        assert_eq!(app.license, None);
    }
}
