//! The JSON shapes of the API: what a session, an app and the small answers look like
//! on the wire. Views never carry a token hash; only the open and privilege answers
//! carry the token itself, once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessiond_core::{CloseReason, Policy, Session, Timestamp};
use utoipa::ToSchema;

/// Where a session's client is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientView {
    /// A label the client gave itself (machine name, app version...).
    #[serde(default)]
    pub label: Option<String>,
    /// The client's address.
    #[serde(default)]
    pub ip: Option<String>,
    /// The client's user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// A session's heartbeat settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeartbeatView {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds before the session is lost.
    pub grace_s: u32,
    /// False while suspended.
    pub active: bool,
    /// Seconds its seat is held, *away*, once beats stop for longer than interval +
    /// grace (absent: no lease). Away while now is past `last_heartbeat_at` + interval +
    /// grace; then it closes `lease_expired` at `expires_at`.
    #[serde(skip_serializing_if = "is_zero")]
    pub lease_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Open.
    Open,
    /// Closed.
    Closed,
}

/// Why a session closed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonView {
    /// Logged out.
    Logout,
    /// Idle timeout.
    IdleTimeout,
    /// Absolute lifetime.
    AbsoluteTimeout,
    /// Heartbeats stopped.
    HeartbeatLost,
    /// Heartbeats stopped and the seat's lease ran out.
    LeaseExpired,
    /// Closed by an admin or the app.
    Killed,
    /// Disconnect everyone except me.
    ClosedAll,
    /// Another client took the seat over.
    TakenOver,
    /// Evicted from a full house.
    Evicted,
    /// Replaced by the same user's newer session.
    Replaced,
    /// Another user signed in on the same browser (web sessions).
    UserChanged,
}

impl From<CloseReason> for ReasonView {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::Logout => ReasonView::Logout,
            CloseReason::IdleTimeout => ReasonView::IdleTimeout,
            CloseReason::AbsoluteTimeout => ReasonView::AbsoluteTimeout,
            CloseReason::HeartbeatLost => ReasonView::HeartbeatLost,
            CloseReason::LeaseExpired => ReasonView::LeaseExpired,
            CloseReason::Killed => ReasonView::Killed,
            CloseReason::ClosedAll => ReasonView::ClosedAll,
            CloseReason::TakenOver => ReasonView::TakenOver,
            CloseReason::Evicted => ReasonView::Evicted,
            CloseReason::Replaced => ReasonView::Replaced,
            CloseReason::UserChanged => ReasonView::UserChanged,
        }
    }
}

/// A session as the API shows it (never its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// Public id (UUIDv7).
    pub id: String,
    /// App.
    pub app: String,
    /// User, none for a guest.
    pub user: Option<String>,
    /// Privileges.
    pub privileges: Vec<String>,
    /// Public facts about the holder.
    #[schema(value_type = Object)]
    pub info: sessiond_core::JsonObject,
    /// The session storage.
    #[schema(value_type = Object)]
    pub data: sessiond_core::JsonObject,
    /// Client.
    pub client: ClientView,
    /// Open or closed.
    pub status: Status,
    /// Why it closed.
    pub reason: Option<ReasonView>,
    /// Who closed it: admin, app, user, expiry, system or `session:<id>`.
    pub closed_by: Option<String>,
    /// When it opened (RFC 3339).
    pub created_at: String,
    /// Last activity.
    pub last_activity_at: String,
    /// Last heartbeat.
    pub last_heartbeat_at: String,
    /// When it closed.
    pub closed_at: Option<String>,
    /// When it will close if nothing happens (open sessions).
    pub expires_at: Option<String>,
    /// Idle timeout in seconds.
    pub idle_timeout_s: u32,
    /// Heartbeat settings.
    pub heartbeat: Option<HeartbeatView>,
    /// Whether it takes a seat.
    pub counts_seat: bool,
    /// Version (changes on data, privilege or policy changes).
    pub version: u64,
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339()
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        let closed = s.closed;
        SessionView {
            id: s.id.to_string(),
            app: s.app.to_string(),
            user: s.user.as_deref().map(String::from),
            privileges: s.privileges.iter().map(String::from).collect(),
            info: s.info.clone(),
            data: s.data.clone(),
            client: ClientView {
                label: s.client.label.as_deref().map(String::from),
                ip: s.client.ip.map(|i| i.to_string()),
                user_agent: s.client.user_agent.as_deref().map(String::from),
            },
            status: if closed.is_some() {
                Status::Closed
            } else {
                Status::Open
            },
            reason: closed.map(|c| c.reason.into()),
            closed_by: closed.map(|c| c.by.to_string()),
            created_at: time(s.created_at),
            last_activity_at: time(s.last_activity_at),
            last_heartbeat_at: time(s.last_heartbeat_at),
            closed_at: closed.map(|c| time(c.at)),
            expires_at: closed.is_none().then(|| time(s.deadline())),
            idle_timeout_s: s.idle_timeout_s,
            heartbeat: s.heartbeat.map(|h| HeartbeatView {
                interval_s: h.interval_s,
                grace_s: h.grace_s,
                active: h.active,
                lease_s: h.lease_s,
            }),
            counts_seat: s.counts_seat,
            version: s.version,
        }
    }
}

/// The wire form of a session, serialised straight from the [`Session`] with no
/// intermediate strings (the hot path of every resolve). Its shape is [`SessionView`]'s,
/// which documents it in the OpenAPI schema; the tests compare the two.
pub struct SessionJson<'a>(pub &'a Session);

impl serde::Serialize for SessionJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Shown<T>(T);
        impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_str(&self.0)
            }
        }
        struct Ts(sessiond_core::Timestamp);
        impl serde::Serialize for Ts {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.serialize_str(self.0.rfc3339().as_str())
            }
        }
        struct Client<'a>(&'a sessiond_core::Client);
        impl serde::Serialize for Client<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(Some(3))?;
                m.serialize_entry("label", &self.0.label)?;
                m.serialize_entry("ip", &self.0.ip.map(Shown))?;
                m.serialize_entry("user_agent", &self.0.user_agent)?;
                m.end()
            }
        }
        let s = self.0;
        let closed = s.closed;
        let mut m = ser.serialize_map(Some(19))?;
        m.serialize_entry("id", &Shown(s.id))?;
        m.serialize_entry("app", &*s.app)?;
        m.serialize_entry("user", &s.user)?;
        m.serialize_entry("privileges", &s.privileges)?;
        m.serialize_entry("info", &s.info)?;
        m.serialize_entry("data", &s.data)?;
        m.serialize_entry("client", &Client(&s.client))?;
        m.serialize_entry("status", if closed.is_some() { "closed" } else { "open" })?;
        m.serialize_entry("reason", &closed.map(|c| c.reason))?;
        m.serialize_entry("closed_by", &closed.map(|c| Shown(c.by)))?;
        m.serialize_entry("created_at", &Ts(s.created_at))?;
        m.serialize_entry("last_activity_at", &Ts(s.last_activity_at))?;
        m.serialize_entry("last_heartbeat_at", &Ts(s.last_heartbeat_at))?;
        m.serialize_entry("closed_at", &closed.map(|c| Ts(c.at)))?;
        m.serialize_entry("expires_at", &closed.is_none().then(|| Ts(s.deadline())))?;
        m.serialize_entry("idle_timeout_s", &s.idle_timeout_s)?;
        m.serialize_entry("heartbeat", &s.heartbeat)?;
        m.serialize_entry("counts_seat", &s.counts_seat)?;
        m.serialize_entry("version", &s.version)?;
        m.end()
    }
}

/// A session with its secret token (open and privilege answers only).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionWithToken {
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
    /// The secret bearer token; shown once, keep it safe.
    pub token: String,
}

/// The caller's other sessions ("my sessions").
#[derive(Debug, Serialize, ToSchema)]
pub struct OtherSessions {
    /// The other open sessions of the same user in the same app, oldest first (never
    /// a token).
    pub sessions: Vec<SessionView>,
}

/// A page of sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    /// The sessions.
    pub sessions: Vec<SessionView>,
    /// Cursor of the next page (pass as `after`), none at the end.
    pub next: Option<String>,
}

/// Seats of an app.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatsView {
    /// Seats taken.
    pub used: u64,
    /// Seats in all, null when unlimited.
    pub total: Option<u32>,
}

/// An app: policy and seats.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    /// Name.
    pub name: String,
    /// Seats used and total.
    pub seats: SeatsView,
    /// Open sessions (including those that take no seat).
    pub open: u64,
    /// The app's policy.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// The license in force, if any.
    #[schema(value_type = Option<Object>)]
    pub license: Option<Value>,
}

impl AppView {
    /// The view of app `name`.
    pub fn new(name: &str, policy: &Policy, seats: sessiond_core::Seats) -> Self {
        AppView {
            name: name.to_string(),
            seats: SeatsView {
                used: seats.used,
                total: seats.total,
            },
            open: seats.open,
            policy: serde_json::to_value(policy).unwrap_or_default(),
            license: None,
        }
    }
}

/// The apps.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppList {
    /// Every configured app.
    pub apps: Vec<AppView>,
}

/// Answer to a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Always `open` (a closed session answers 410).
    pub status: Status,
    /// Seconds until the next beat is due, null if the session has no heartbeat.
    pub next_heartbeat_s: Option<u32>,
}

/// Answer to close-all.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClosedCount {
    /// Sessions closed.
    pub closed: usize,
}

/// The error body every failure carries. Of the 503 codes, `store_unavailable` means
/// nothing was changed (retry shortly) and `outcome_unknown` that a change was sent to
/// the store without an answer, so it may or may not have been made (read again before
/// retrying).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `session_closed`, `store_unavailable`,
    /// `outcome_unknown`.
    pub error: String,
    /// What happened and what to do.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{
        Actor, Client, CloseReason, Closure, Heartbeat, JsonObject, Privileges, SessionId,
        Timestamp, TokenHash,
    };

    #[test]
    fn the_fast_wire_form_matches_the_documented_view() {
        let mut s = Session {
            id: SessionId::new(),
            token_hash: TokenHash(7),
            app: std::sync::Arc::from("desk"),
            user: Some("ann".into()),
            privileges: Privileges::new(["b", "a"]),
            info: JsonObject::parse(r#"{"name":"Ann"}"#).unwrap(),
            data: JsonObject::parse(r#"{"n":1}"#).unwrap(),
            client: Client {
                label: Some("pc".into()),
                ip: Some("10.0.0.1".parse().unwrap()),
                user_agent: None,
            },
            created_at: Timestamp(1_800_000_000_000),
            last_activity_at: Timestamp(1_800_000_001_000),
            last_heartbeat_at: Timestamp(1_800_000_002_000),
            idle_timeout_s: 60,
            lifetime_s: 3600,
            heartbeat: Some(Heartbeat {
                interval_s: 30,
                grace_s: 60,
                active: true,
                lease_s: 0,
            }),
            retention_s: 10,
            counts_seat: true,
            bind_ip: false,
            closed: None,
            version: 3,
        };
        for _ in 0..2 {
            let fast = serde_json::to_value(SessionJson(&s)).unwrap();
            let view = serde_json::to_value(SessionView::from(&s)).unwrap();
            assert_eq!(fast, view);
            s.closed = Some(Closure {
                at: Timestamp(1_800_000_003_000),
                reason: CloseReason::TakenOver,
                by: Actor::Session(SessionId::new()),
            });
            s.heartbeat = None;
            s.client = Client::default();
        }
    }
}
