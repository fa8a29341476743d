//! The session model: [`Session`] and what it is made of (client, heartbeat settings,
//! privileges, close reasons), its deadlines, and [`Session::step`], the one function that
//! applies a [`Change`] to a session. Every store calls `step` inside its own atomic
//! section, so the rules are written once and each store only provides atomicity.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Closed to make room when the app was full (`on_full = evict_idlest`).
    Evicted,
    /// Closed because the same user opened a new session (`replace_oldest`).
    Replaced,
}

impl CloseReason {
    /// Every reason, in a stable order (metrics, docs).
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Logout,
        CloseReason::IdleTimeout,
        CloseReason::AbsoluteTimeout,
        CloseReason::HeartbeatLost,
        CloseReason::Killed,
        CloseReason::ClosedAll,
        CloseReason::TakenOver,
        CloseReason::Evicted,
        CloseReason::Replaced,
    ];

    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Logout => "logout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::AbsoluteTimeout => "absolute_timeout",
            CloseReason::HeartbeatLost => "heartbeat_lost",
            CloseReason::Killed => "killed",
            CloseReason::ClosedAll => "closed_all",
            CloseReason::TakenOver => "taken_over",
            CloseReason::Evicted => "evicted",
            CloseReason::Replaced => "replaced",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who closed a session. Serialised as text: `admin`, `app`, `user`, `expiry`, `system`
/// or `session:<id>` (the session that took its seat over or asked for close-all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The admin token.
    Admin,
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
            other => match other.strip_prefix("session:") {
                Some(id) => Actor::Session(id.parse().map_err(|_| format!("bad actor {s:?}"))?),
                None => return Err(format!("bad actor {s:?}")),
            },
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
/// `heartbeat_lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds allowed before the session counts as lost.
    pub grace_s: u32,
    /// False while suspended (say, the user is on an external payment page): then only
    /// the idle timeout and the absolute lifetime apply.
    pub active: bool,
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

/// A change to apply to an open session, atomically, through [`Session::step`].
#[derive(Debug, Clone)]
pub enum Change {
    /// Nothing: only check the session (and close it if a timeout passed).
    Read,
    /// Count as user activity.
    Touch,
    /// A heartbeat from the client.
    Heartbeat,
    /// Suspend, resume or retune the heartbeat.
    SetHeartbeat {
        /// On or off.
        active: bool,
        /// New interval, or keep the current one (or the app default when there is none).
        interval_s: Option<u32>,
        /// New grace, or keep.
        grace_s: Option<u32>,
        /// The interval to use when the session had no heartbeat yet.
        default_interval_s: u32,
        /// The grace to use when the session had no heartbeat yet.
        default_grace_s: u32,
    },
    /// Restart the heartbeat window now, if the client missed a beat: the service was
    /// down (a restart, a store outage), so the client could not beat. The other
    /// timeouts still apply. Changes no version.
    RenewHeartbeat,
    /// JSON merge patch of the storage; counts as activity.
    PatchData {
        /// The RFC 7396 patch (an object).
        patch: Value,
        /// Largest allowed size of the resulting storage, in bytes of JSON.
        max_bytes: usize,
    },
    /// New privileges (and a new token: session fixation).
    SetPrivileges {
        /// The new set.
        privileges: Privileges,
        /// New info, or keep.
        info: Option<JsonObject>,
        /// New user, or keep.
        user: Option<Box<str>>,
        /// Hash of the new token.
        token_hash: TokenHash,
        /// Whether it takes a seat with these privileges.
        counts_seat: bool,
    },
}

impl Change {
    /// Whether the caller must wait for this change to be durable before answering.
    /// Touches are not waited for: losing one in a crash only makes a session look idler.
    pub fn needs_durability(&self) -> bool {
        !matches!(self, Change::Read | Change::Touch)
    }
}

/// Preconditions of a change.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// The version the caller last saw (`If-Match`).
    pub expect_version: Option<u64>,
    /// The caller's address, checked when the session is bound to its IP.
    pub bound_ip: Option<IpAddr>,
    /// Only a session of this app: one of another app is left untouched, as if the
    /// token were unknown (apps that share a cookie name and a store).
    pub app: Option<Arc<str>>,
    /// Where the heartbeat clock restarted after a downtime (the server or its store
    /// was down, so clients could not beat): a missed heartbeat counts from here, not
    /// from the last beat. Set by the Manager (see `Manager::mark_downtime`).
    pub heartbeat_floor: Option<Timestamp>,
}

/// What [`Session::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The session changed; the store must persist it.
    Changed,
    /// Nothing to persist.
    Unchanged,
    /// A timeout had passed: the session is now closed; the store must persist it.
    Expired(CloseReason),
}

/// Why a change was refused. The session is left as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    /// The session is closed.
    #[error("the session is closed ({})", .0.reason)]
    Closed(Closure),
    /// `If-Match` did not match.
    #[error("the session is at version {current}, not the expected one")]
    VersionMismatch {
        /// The session's current version.
        current: u64,
    },
    /// A request from another address than the session's.
    #[error("this session is bound to the address that opened it")]
    IpMismatch,
    /// The storage would grow past its limit.
    #[error("the session storage would take {size} bytes, over the limit of {limit}")]
    DataTooLarge {
        /// Size it would have.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The patch was not a JSON object.
    #[error("{0}")]
    BadPatch(String),
    /// The session belongs to another app than [`Conditions::app`].
    #[error("the session belongs to another app")]
    OtherApp,
}

impl Session {
    /// The session as JSON text, as [`Session::write_json`] writes it.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256 + self.data.as_str().len() + self.info.as_str().len());
        self.write_json(&mut out);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// Appends the session as JSON to `out`: byte for byte what `serde_json::to_writer`
    /// writes (a test holds it to that), at a fraction of the cost. Stores encode every
    /// session they write; through serde's field-by-field machinery that was an eighth of
    /// the server's instructions for a durable web write. Field names are literals, ids
    /// are written from stack buffers, `info` and `data` are already compact JSON text;
    /// the rarer parts go through serde. A field added to `Session` must be added here
    /// too, and to the test's sessions.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let s = self;
        /// Serialising plain data into memory cannot fail.
        fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            serde_json::to_writer(&mut *out, v).expect("plain data serialises");
        }
        fn int(out: &mut Vec<u8>, key: &[u8], n: u64) {
            out.extend_from_slice(key);
            json(out, &n);
        }
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(s.id.encode(&mut [0; 36]).as_bytes());
        out.extend_from_slice(b"\",\"token_hash\":\"");
        out.extend_from_slice(s.token_hash.encode(&mut [0; 32]).as_bytes());
        out.extend_from_slice(b"\",\"app\":");
        json(out, &*s.app);
        if let Some(user) = &s.user {
            out.extend_from_slice(b",\"user\":");
            json(out, user);
        }
        out.extend_from_slice(b",\"privileges\":");
        if s.privileges.is_empty() {
            out.extend_from_slice(b"[]");
        } else {
            json(out, &s.privileges);
        }
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(s.info.as_str().as_bytes());
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(s.data.as_str().as_bytes());
        out.extend_from_slice(b",\"client\":");
        json(out, &s.client);
        int(out, b",\"created_at\":", s.created_at.0);
        int(out, b",\"last_activity_at\":", s.last_activity_at.0);
        int(out, b",\"last_heartbeat_at\":", s.last_heartbeat_at.0);
        int(out, b",\"idle_timeout_s\":", s.idle_timeout_s.into());
        int(out, b",\"lifetime_s\":", s.lifetime_s.into());
        if let Some(h) = &s.heartbeat {
            out.extend_from_slice(b",\"heartbeat\":");
            json(out, h);
        }
        int(out, b",\"retention_s\":", s.retention_s.into());
        out.extend_from_slice(if s.counts_seat {
            b",\"counts_seat\":true"
        } else {
            b",\"counts_seat\":false"
        });
        out.extend_from_slice(if s.bind_ip {
            b",\"bind_ip\":true"
        } else {
            b",\"bind_ip\":false"
        });
        if let Some(c) = &s.closed {
            out.extend_from_slice(b",\"closed\":");
            json(out, c);
        }
        int(out, b",\"version\":", s.version);
        out.push(b'}');
    }

    /// Whether the session is still open.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// When the idle timeout passes.
    pub fn idle_deadline(&self) -> Timestamp {
        self.last_activity_at.plus_secs(self.idle_timeout_s as u64)
    }

    /// When the absolute lifetime ends.
    pub fn absolute_deadline(&self) -> Timestamp {
        self.created_at.plus_secs(self.lifetime_s as u64)
    }

    /// When the heartbeat counts as lost, if it is on.
    pub fn heartbeat_deadline(&self) -> Option<Timestamp> {
        self.heartbeat_deadline_after(None)
    }

    /// [`Session::heartbeat_deadline`], the window counted from `floor` when that is
    /// later than the last beat ([`Conditions::heartbeat_floor`]).
    pub fn heartbeat_deadline_after(&self, floor: Option<Timestamp>) -> Option<Timestamp> {
        let from = floor.map_or(self.last_heartbeat_at, |f| f.max(self.last_heartbeat_at));
        self.heartbeat
            .filter(|h| h.active)
            .map(|h| from.plus_secs(h.interval_s as u64 + h.grace_s as u64))
    }

    /// The time this session needs attention: for an open session the first timeout,
    /// for a closed one the end of its retention. Stores index sessions by it.
    pub fn deadline(&self) -> Timestamp {
        match &self.closed {
            Some(c) => c.at.plus_secs(self.retention_s as u64),
            None => {
                let d = self.idle_deadline().min(self.absolute_deadline());
                self.heartbeat_deadline().map_or(d, |h| d.min(h))
            }
        }
    }

    /// Which timeout has passed at `now`, if any (a session is due once `now` is past
    /// its deadline). When several have, the earliest wins.
    pub fn due_reason(&self, now: Timestamp) -> Option<CloseReason> {
        self.due_reason_after(now, None)
    }

    /// [`Session::due_reason`] with the heartbeat window counted from `floor` when that
    /// is later than the last beat ([`Conditions::heartbeat_floor`]).
    pub fn due_reason_after(
        &self,
        now: Timestamp,
        floor: Option<Timestamp>,
    ) -> Option<CloseReason> {
        if self.closed.is_some() {
            return None;
        }
        let mut due: Option<(Timestamp, CloseReason)> = None;
        let mut consider = |t: Timestamp, r: CloseReason| {
            if now > t && due.is_none_or(|(best, _)| t < best) {
                due = Some((t, r));
            }
        };
        consider(self.absolute_deadline(), CloseReason::AbsoluteTimeout);
        if let Some(h) = self.heartbeat_deadline_after(floor) {
            consider(h, CloseReason::HeartbeatLost);
        }
        consider(self.idle_deadline(), CloseReason::IdleTimeout);
        due.map(|(_, r)| r)
    }

    /// For [`Change::RenewHeartbeat`]: an active heartbeat that missed a beat (the last
    /// one is more than an interval old) counts from `now`. Returns whether it did.
    fn renew_heartbeat(&mut self, now: Timestamp) -> bool {
        match self.heartbeat {
            Some(h)
                if h.active
                    && now.millis_since(self.last_heartbeat_at)
                        > u64::from(h.interval_s) * 1000 =>
            {
                self.last_heartbeat_at = now;
                true
            }
            _ => false,
        }
    }

    /// Whether a closed session's retention has ended at `now`.
    pub fn is_past_retention(&self, now: Timestamp) -> bool {
        self.closed.is_some() && now > self.deadline()
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

    /// With `bind_ip`, refuses a request from `ip` when it is not the address that
    /// opened the session (no address known, on either side: nothing to compare).
    pub fn check_bound_ip(&self, ip: Option<IpAddr>) -> Result<(), ChangeError> {
        match (self.bind_ip, ip, self.client.ip) {
            (true, Some(ip), Some(mine)) if ip != mine => Err(ChangeError::IpMismatch),
            _ => Ok(()),
        }
    }

    /// How long touches are coalesced: a touch closer than this to the last recorded
    /// activity is not written. At most one second, and at most 1/60 of the idle timeout,
    /// so coalescing can shorten a session's idle life by that much and never lengthen it.
    pub fn touch_granularity_ms(&self) -> u64 {
        (self.idle_timeout_s as u64 * 1000 / 60).min(1000)
    }

    /// Applies `change` at `now` under `cond`. Stores call this inside their atomic
    /// section and persist the session when the answer is `Changed` or `Expired`.
    ///
    /// Order of checks: a session of another app than asked for is refused as if it did
    /// not exist; a closed session refuses everything; a session whose timeout has
    /// passed is closed now (`Expired`); then the address binding, then the version.
    pub fn step(
        &mut self,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> Result<Step, ChangeError> {
        if cond.app.as_deref().is_some_and(|app| app != &*self.app) {
            return Err(ChangeError::OtherApp);
        }
        if let Some(c) = self.closed {
            return Err(ChangeError::Closed(c));
        }
        let renewed = matches!(change, Change::RenewHeartbeat) && self.renew_heartbeat(now);
        if let Some(reason) = self.due_reason_after(now, cond.heartbeat_floor) {
            self.close(reason, Actor::Expiry, now);
            return Ok(Step::Expired(reason));
        }
        if renewed {
            return Ok(Step::Changed);
        }
        self.check_bound_ip(cond.bound_ip)?;
        if let Some(v) = cond.expect_version {
            if v != self.version {
                return Err(ChangeError::VersionMismatch {
                    current: self.version,
                });
            }
        }
        match change {
            Change::Read | Change::RenewHeartbeat => Ok(Step::Unchanged),
            Change::Touch => {
                if now.millis_since(self.last_activity_at) < self.touch_granularity_ms().max(1) {
                    return Ok(Step::Unchanged);
                }
                self.last_activity_at = now;
                Ok(Step::Changed)
            }
            Change::Heartbeat => {
                // Coalesced like touches: a beat within the granularity of the recorded one
                // writes nothing (the deadline then counts from the earlier beat: never later).
                let granularity = self
                    .heartbeat
                    .map_or(1000, |h| (u64::from(h.interval_s) * 1000 / 30).min(1000));
                if now.millis_since(self.last_heartbeat_at) < granularity.max(1) {
                    return Ok(Step::Unchanged);
                }
                self.last_heartbeat_at = now;
                Ok(Step::Changed)
            }
            Change::SetHeartbeat {
                active,
                interval_s,
                grace_s,
                default_interval_s,
                default_grace_s,
            } => {
                let cur = self.heartbeat.unwrap_or(Heartbeat {
                    interval_s: *default_interval_s,
                    grace_s: *default_grace_s,
                    active: false,
                });
                let next = Heartbeat {
                    interval_s: interval_s.unwrap_or(cur.interval_s).max(1),
                    grace_s: grace_s.unwrap_or(cur.grace_s),
                    active: *active,
                };
                // Resuming starts a fresh heartbeat window: the client is beating now.
                if next.active && !cur.active {
                    self.last_heartbeat_at = now;
                }
                self.heartbeat = Some(next);
                self.version += 1;
                Ok(Step::Changed)
            }
            Change::PatchData { patch, max_bytes } => {
                let data = self
                    .data
                    .merge_patch(patch)
                    .map_err(|e| ChangeError::BadPatch(e.to_string()))?;
                if data.byte_len() > *max_bytes {
                    return Err(ChangeError::DataTooLarge {
                        size: data.byte_len(),
                        limit: *max_bytes,
                    });
                }
                self.data = data;
                // Activity is recorded at the granularity of touches: a write soon after
                // the recorded activity leaves it (and so the deadline indexes) alone.
                if now.millis_since(self.last_activity_at) >= self.touch_granularity_ms() {
                    self.last_activity_at = now;
                }
                self.version += 1;
                Ok(Step::Changed)
            }
            Change::SetPrivileges {
                privileges,
                info,
                user,
                token_hash,
                counts_seat,
            } => {
                self.privileges = privileges.clone();
                if let Some(info) = info {
                    self.info = info.clone();
                }
                if let Some(user) = user {
                    self.user = Some(user.clone());
                }
                self.token_hash = *token_hash;
                self.counts_seat = *counts_seat;
                self.last_activity_at = now;
                self.version += 1;
                Ok(Step::Changed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session() -> Session {
        Session {
            id: SessionId::new(),
            token_hash: TokenHash(1),
            app: Arc::from("app"),
            user: None,
            privileges: Privileges::default(),
            info: JsonObject::empty(),
            data: JsonObject::empty(),
            client: Client::default(),
            created_at: Timestamp(0),
            last_activity_at: Timestamp(0),
            last_heartbeat_at: Timestamp(0),
            idle_timeout_s: 60,
            lifetime_s: 3600,
            heartbeat: Some(Heartbeat {
                interval_s: 30,
                grace_s: 60,
                active: true,
            }),
            retention_s: 10,
            counts_seat: true,
            bind_ip: false,
            closed: None,
            version: 1,
        }
    }

    #[test]
    fn write_json_writes_exactly_what_serde_writes() {
        let bare = Session {
            heartbeat: None,
            ..session()
        };
        let full = Session {
            user: Some("zoé\\\"q\u{7f}".into()),
            privileges: Privileges::new(["admin", "sales"]),
            info: JsonObject::from_value(&json!({"name": "Zoé \"Z\"", "tags": ["a", 1]})).unwrap(),
            data: JsonObject::from_value(&json!({"cart": {"items": [1, 2]}, "s": "é\u{1}\n"}))
                .unwrap(),
            client: Client {
                label: Some("pos-7 \u{263a}".into()),
                ip: Some("2001:db8::1".parse().unwrap()),
                user_agent: Some("Mozilla/5.0 (X11)".into()),
            },
            heartbeat: Some(Heartbeat {
                interval_s: 30,
                grace_s: 15,
                active: false,
            }),
            counts_seat: false,
            bind_ip: true,
            closed: Some(Closure {
                at: Timestamp(u64::MAX),
                reason: CloseReason::HeartbeatLost,
                by: Actor::Session(SessionId::new()),
            }),
            version: u64::MAX,
            ..session()
        };
        for s in [bare, session(), full] {
            let mut ours = Vec::new();
            s.write_json(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }

    #[test]
    fn heartbeat_never_counts_as_activity() {
        let mut s = session();
        let c = Conditions::default();
        assert_eq!(
            s.step(&Change::Heartbeat, &c, Timestamp(50_000)),
            Ok(Step::Changed)
        );
        // Idle deadline is still 60 s after the last activity at 0.
        assert_eq!(
            s.step(&Change::Read, &c, Timestamp(60_001)),
            Ok(Step::Expired(CloseReason::IdleTimeout))
        );
    }

    #[test]
    fn activity_never_revives_a_lost_heartbeat() {
        let mut s = session();
        s.idle_timeout_s = 3600;
        let c = Conditions::default();
        for t in (10_000..=90_000).step_by(10_000) {
            assert_eq!(s.step(&Change::Touch, &c, Timestamp(t)), Ok(Step::Changed));
        }
        assert_eq!(
            s.step(&Change::Touch, &c, Timestamp(90_001)),
            Ok(Step::Expired(CloseReason::HeartbeatLost))
        );
        assert!(matches!(
            s.step(&Change::Touch, &c, Timestamp(90_002)),
            Err(ChangeError::Closed(_))
        ));
    }

    #[test]
    fn touches_are_coalesced_within_the_granularity() {
        let mut s = session();
        let c = Conditions::default();
        assert_eq!(
            s.step(&Change::Touch, &c, Timestamp(500)),
            Ok(Step::Unchanged)
        );
        assert_eq!(
            s.step(&Change::Touch, &c, Timestamp(1000)),
            Ok(Step::Changed)
        );
        assert_eq!(s.version, 1, "a touch does not change the version");
    }

    #[test]
    fn heartbeats_are_coalesced_within_the_granularity() {
        let mut s = session();
        let c = Conditions::default();
        assert_eq!(
            s.step(&Change::Heartbeat, &c, Timestamp(999)),
            Ok(Step::Unchanged)
        );
        assert_eq!(s.last_heartbeat_at, Timestamp(0));
        assert_eq!(
            s.step(&Change::Heartbeat, &c, Timestamp(1000)),
            Ok(Step::Changed)
        );
        assert_eq!(s.last_heartbeat_at, Timestamp(1000));
    }

    #[test]
    fn version_and_ip_conditions_refuse_without_change() {
        let mut s = session();
        s.bind_ip = true;
        s.client.ip = Some("10.0.0.1".parse().unwrap());
        let patch = Change::PatchData {
            patch: json!({"a": 1}),
            max_bytes: 100,
        };
        let before = s.clone();
        let wrong_ip = Conditions {
            bound_ip: Some("10.0.0.2".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            s.step(&patch, &wrong_ip, Timestamp(1)),
            Err(ChangeError::IpMismatch)
        );
        let stale = Conditions {
            expect_version: Some(7),
            ..Default::default()
        };
        assert_eq!(
            s.step(&patch, &stale, Timestamp(1)),
            Err(ChangeError::VersionMismatch { current: 1 })
        );
        assert_eq!(s, before);
        let big = Change::PatchData {
            patch: json!({"a": "x".repeat(200)}),
            max_bytes: 100,
        };
        assert!(matches!(
            s.step(&big, &Conditions::default(), Timestamp(1)),
            Err(ChangeError::DataTooLarge { .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn suspended_heartbeat_leaves_only_the_idle_timeout() {
        let mut s = session();
        s.idle_timeout_s = 600;
        let c = Conditions::default();
        let off = Change::SetHeartbeat {
            active: false,
            interval_s: None,
            grace_s: None,
            default_interval_s: 30,
            default_grace_s: 60,
        };
        s.step(&off, &c, Timestamp(1)).unwrap();
        assert_eq!(s.due_reason(Timestamp(300_000)), None);
        assert_eq!(
            s.due_reason(Timestamp(600_001)),
            Some(CloseReason::IdleTimeout)
        );
    }

    #[test]
    fn closed_sessions_are_due_for_purge_after_retention() {
        let mut s = session();
        assert!(s.close(CloseReason::Logout, Actor::User, Timestamp(5_000)));
        assert!(!s.close(CloseReason::Killed, Actor::Admin, Timestamp(6_000)));
        assert_eq!(s.deadline(), Timestamp(15_000));
        assert!(!s.is_past_retention(Timestamp(15_000)));
        assert!(s.is_past_retention(Timestamp(15_001)));
    }

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
