//! What a session is: [`Session`] and its parts (client, heartbeat settings, privileges,
//! close reasons and who closed it), as stored and as serialised. The rules that move a
//! session live beside it: its deadlines in `deadline.rs`, the step rule in `step.rs`,
//! the fast JSON encoder in `encode.rs`.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{SessionId, TokenHash};
use crate::json::JsonObject;
use crate::time::Timestamp;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The session's holder logged out.
    Logout,
    /// No activity for longer than the idle timeout.
    IdleTimeout,
    /// The session reached its absolute lifetime.
    AbsoluteTimeout,
    /// Heartbeats stopped for longer than interval + grace.
    HeartbeatLost,
    /// An administrator or the app closed it.
    Killed,
    /// Closed by "disconnect everyone except me".
    ClosedAll,
    /// Another client took its seat over.
    TakenOver,
    /// Heartbeats stopped, and the seat's lease ran out too (`heartbeat.lease_s`).
    LeaseExpired,
    /// Closed to make room when the app was full (`on_full = evict_idlest`).
    Evicted,
    /// Closed because the same user opened a new session (`replace_oldest`).
    Replaced,
    /// Closed because another user signed in on the same browser: the web layer starts
    /// them a new session rather than hand them this one's storage.
    UserChanged,
}

impl CloseReason {
    /// Every reason, in a stable order (metrics, docs).
    pub const ALL: [CloseReason; 11] = [
        CloseReason::Logout,
        CloseReason::IdleTimeout,
        CloseReason::AbsoluteTimeout,
        CloseReason::HeartbeatLost,
        CloseReason::LeaseExpired,
        CloseReason::Killed,
        CloseReason::ClosedAll,
        CloseReason::TakenOver,
        CloseReason::Evicted,
        CloseReason::Replaced,
        CloseReason::UserChanged,
    ];

    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
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
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a person or tool holding an operator credential of its own, as the
/// history and the logs record it: 1 to [`OperatorName::MAX`] ASCII lower-case letters,
/// digits, `_`, `-` or `.`. Held inline, so an [`Actor`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OperatorName {
    len: u8,
    bytes: [u8; OperatorName::MAX],
}

impl OperatorName {
    /// The longest name.
    pub const MAX: usize = 32;

    /// The name `s`, if it is one.
    ///
    /// ```
    /// use sessiond_core::OperatorName;
    /// assert_eq!(OperatorName::new("alice").unwrap().as_str(), "alice");
    /// assert!(OperatorName::new("Alice Smith").is_none());
    /// assert!(OperatorName::new("").is_none());
    /// ```
    pub fn new(s: &str) -> Option<OperatorName> {
        let ok = (1..=Self::MAX).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
            });
        if !ok {
            return None;
        }
        let mut bytes = [0u8; Self::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(OperatorName {
            len: s.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII was copied in.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for OperatorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorName({:?})", self.as_str())
    }
}

impl fmt::Display for OperatorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who closed a session. Serialised as text: `admin`, `operator:<name>`, `app`, `user`,
/// `expiry`, `system` or `session:<id>` (the session that took its seat over or asked
/// for close-all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The admin token.
    Admin,
    /// A named operator's own credential.
    Operator(OperatorName),
    /// The app's key.
    App,
    /// The session's own holder.
    User,
    /// The engine, when a timeout passed.
    Expiry,
    /// Another session (take-over, close-all from a session).
    Session(SessionId),
    /// The engine for another cause (eviction, replacement).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::App => f.write_str("app"),
            Actor::User => f.write_str("user"),
            Actor::Expiry => f.write_str("expiry"),
            Actor::System => f.write_str("system"),
            Actor::Session(id) => write!(f, "session:{id}"),
            Actor::Operator(name) => write!(f, "operator:{name}"),
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "admin" => Actor::Admin,
            "app" => Actor::App,
            "user" => Actor::User,
            "expiry" => Actor::Expiry,
            "system" => Actor::System,
            other => {
                if let Some(id) = other.strip_prefix("session:") {
                    Actor::Session(id.parse().map_err(|_| format!("bad actor {s:?}"))?)
                } else if let Some(name) = other.strip_prefix("operator:") {
                    Actor::Operator(OperatorName::new(name).ok_or(format!("bad actor {s:?}"))?)
                } else {
                    return Err(format!("bad actor {s:?}"));
                }
            }
        })
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How and when a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// When it closed.
    pub at: Timestamp,
    /// Why.
    pub reason: CloseReason,
    /// Who closed it.
    pub by: Actor,
}

/// Where a session's client is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// A label the client gave itself (machine name, app version...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Box<str>>,
    /// The address that opened the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Box<str>>,
}

/// A session's heartbeat: the client promises a beat every `interval_s`; once
/// `interval_s + grace_s` pass without one (while `active`), the session is closed
/// `heartbeat_lost`, or, with a lease, is *away* for `lease_s` more seconds (its seat
/// held, its own client free to resume it with a beat) and then closed `lease_expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds allowed before the session counts as lost.
    pub grace_s: u32,
    /// False while suspended (say, the user is on an external payment page): then only
    /// the idle timeout and the absolute lifetime apply.
    pub active: bool,
    /// Seconds a silent session keeps its seat after `interval_s + grace_s` (a network
    /// cut should not cost a desktop client its seat); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A sorted set of privilege names.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct Privileges(Box<[Box<str>]>);

impl Privileges {
    /// A set from any names (sorted, duplicates dropped).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v: Vec<Box<str>> = names.into_iter().map(|s| Box::from(s.as_ref())).collect();
        v.sort();
        v.dedup();
        Privileges(v.into_boxed_slice())
    }

    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|p| (**p).cmp(name)).is_ok()
    }

    /// Whether any of `names` is in the set.
    pub fn any_of<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> bool {
        names.into_iter().any(|n| self.contains(n))
    }

    /// No privileges at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }
}

impl fmt::Debug for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl From<Vec<String>> for Privileges {
    fn from(v: Vec<String>) -> Self {
        Privileges::new(v)
    }
}

impl From<Privileges> for Vec<String> {
    fn from(p: Privileges) -> Self {
        p.iter().map(String::from).collect()
    }
}

/// One session, open or closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Public, time-ordered handle.
    pub id: SessionId,
    /// Hash of the current token (changes when privileges change).
    pub token_hash: TokenHash,
    /// The app (namespace) it belongs to.
    pub app: Arc<str>,
    /// The user, if signed in; none for a guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Box<str>>,
    /// What the session may do.
    #[serde(default)]
    pub privileges: Privileges,
    /// Public facts about the holder (display name...).
    #[serde(default)]
    pub info: JsonObject,
    /// The session storage.
    #[serde(default)]
    pub data: JsonObject,
    /// Where the client is.
    #[serde(default)]
    pub client: Client,
    /// When it opened.
    pub created_at: Timestamp,
    /// Last activity (request, touch, data change); heartbeats do not count.
    pub last_activity_at: Timestamp,
    /// Last heartbeat (the open time until the first beat).
    pub last_heartbeat_at: Timestamp,
    /// Seconds without activity before it closes `idle_timeout`.
    pub idle_timeout_s: u32,
    /// Seconds after opening before it closes `absolute_timeout`, whatever happens.
    pub lifetime_s: u32,
    /// Heartbeat settings, if the session heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
    /// Seconds the session is kept as history once closed.
    pub retention_s: u32,
    /// Whether it takes one of the app's seats (false for reserved privileges).
    pub counts_seat: bool,
    /// Whether requests must come from `client.ip` (the app's `bind_ip` when it opened).
    #[serde(default)]
    pub bind_ip: bool,
    /// How it ended, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closure>,
    /// Increases on every change of data, privileges or policy (not on touches or beats).
    pub version: u64,
}

impl Session {
    /// Whether the session is still open.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Closes the session. Returns false (and changes nothing) if it was already closed.
    pub fn close(&mut self, reason: CloseReason, by: Actor, now: Timestamp) -> bool {
        if self.closed.is_some() {
            return false;
        }
        self.closed = Some(Closure {
            at: now,
            reason,
            by,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_round_trips_as_text() {
        let id = SessionId::new();
        for a in [
            Actor::Admin,
            Actor::App,
            Actor::User,
            Actor::Expiry,
            Actor::System,
            Actor::Session(id),
        ] {
            let t = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Actor>(&t).unwrap(), a);
        }
    }
}
