//! Per-app [`Policy`]: timeouts, heartbeat, seats, per-user limits, address binding,
//! retention, token prefix and limits. Every field has a default (see the `DEFAULT_*`
//! constants), so an app with an empty config table is usable.

use serde::{Deserialize, Serialize};

/// Default idle timeout: 60 minutes (4D scalable sessions).
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 60 * 60;
/// Default absolute lifetime: 12 hours.
pub const DEFAULT_ABSOLUTE_LIFETIME_S: u32 = 12 * 60 * 60;
/// Default heartbeat interval for client applications: 30 s (Gestan).
pub const DEFAULT_HEARTBEAT_INTERVAL_S: u32 = 30;
/// Default browser heartbeat interval: 5 minutes (WEBDEV).
pub const DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S: u32 = 5 * 60;
/// Default heartbeat grace: 60 s (WEBDEV's extra minute).
pub const DEFAULT_HEARTBEAT_GRACE_S: u32 = 60;
/// Default retention of closed sessions: 7 days.
pub const DEFAULT_RETENTION_S: u32 = 7 * 24 * 60 * 60;
/// Default cookie name (Gambas).
pub const DEFAULT_COOKIE_NAME: &str = "SESSION";

/// What to do when every seat is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Refuse, answering with the seat holders so the caller can pick one to take over.
    #[default]
    Reject,
    /// Close the longest-idle session (`evicted`) to make room.
    EvictIdlest,
}

/// What to do when a user already has `max_per_user` open sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUserLimit {
    /// Refuse the new session.
    #[default]
    Reject,
    /// Close the user's oldest session (`replaced`): Gambas `Unique`.
    ReplaceOldest,
}

/// Heartbeat defaults of an app, and what a session may change of its own heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatPolicy {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds before a silent session is lost.
    #[serde(default = "default_grace")]
    pub grace_s: u32,
    /// The longest interval a session may give itself with its own token; none: no
    /// bound but the input limits. Operators are not bound by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval_s: Option<u32>,
    /// Whether a session may suspend its own heartbeat with its own token; none: only
    /// in an app without seats ([`Policy::heartbeat_suspend_allowed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_suspend: Option<bool>,
    /// Seconds a session whose beats stopped keeps its seat after interval + grace,
    /// *away*, for its own client to resume it (a network cut); then it closes
    /// `lease_expired`. 0 (the default): no lease, it closes `heartbeat_lost`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The longest seat lease: a week.
pub const MAX_LEASE_S: u32 = 7 * 24 * 3600;

impl HeartbeatPolicy {
    /// A heartbeat every `interval_s` seconds, the default grace, no bound of its own.
    pub fn every(interval_s: u32) -> Self {
        HeartbeatPolicy {
            interval_s,
            grace_s: DEFAULT_HEARTBEAT_GRACE_S,
            max_interval_s: None,
            allow_suspend: None,
            lease_s: 0,
        }
    }
}

fn default_grace() -> u32 {
    DEFAULT_HEARTBEAT_GRACE_S
}

/// How tokens of an app are prefixed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPrefix {
    /// The app's name.
    #[default]
    AppName,
    /// The client's IP address (Gambas without a prefix).
    ClientIp,
    /// A fixed text.
    #[serde(untagged)]
    Fixed(String),
}

/// The rules of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Seconds without activity before a session closes.
    pub idle_timeout_s: u32,
    /// Seconds after opening before a session closes whatever happens.
    pub absolute_lifetime_s: u32,
    /// Heartbeat given to sessions that don't ask for their own; none means sessions
    /// heartbeat only when they open with one.
    pub heartbeat: Option<HeartbeatPolicy>,
    /// Seats (concurrent sessions that count); none means unlimited.
    pub seats: Option<u32>,
    /// What a full house does.
    pub on_full: OnFull,
    /// Privileges whose sessions take no seat (an administrator can always get in).
    pub reserved_privileges: Vec<String>,
    /// Most open sessions per user; none means unlimited.
    pub max_per_user: Option<u32>,
    /// What reaching `max_per_user` does.
    pub on_user_limit: OnUserLimit,
    /// Refuse requests from another address than the one that opened the session.
    pub bind_ip: bool,
    /// Seconds a closed session is kept as history.
    pub retention_s: u32,
    /// Token prefix.
    pub prefix: TokenPrefix,
    /// Cookie name for web sessions.
    pub cookie_name: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            absolute_lifetime_s: DEFAULT_ABSOLUTE_LIFETIME_S,
            heartbeat: None,
            seats: None,
            on_full: OnFull::Reject,
            reserved_privileges: Vec::new(),
            max_per_user: None,
            on_user_limit: OnUserLimit::Reject,
            bind_ip: false,
            retention_s: DEFAULT_RETENTION_S,
            prefix: TokenPrefix::AppName,
            cookie_name: DEFAULT_COOKIE_NAME.to_string(),
        }
    }
}

/// A policy value that makes no sense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct InvalidPolicy(pub String);

impl Policy {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let bad = |m: &str| Err(InvalidPolicy(m.to_string()));
        if self.idle_timeout_s == 0 {
            return bad("idle_timeout_s must be at least 1");
        }
        if self.absolute_lifetime_s == 0 {
            return bad("absolute_lifetime_s must be at least 1");
        }
        if let Some(h) = self.heartbeat {
            if h.interval_s == 0 {
                return bad("heartbeat.interval_s must be at least 1");
            }
            if h.max_interval_s.is_some_and(|m| m < h.interval_s) {
                return bad("heartbeat.max_interval_s must be at least heartbeat.interval_s");
            }
            if h.lease_s > MAX_LEASE_S {
                return bad("heartbeat.lease_s must be at most 604800 (a week)");
            }
        }
        if self.seats == Some(0) {
            return bad("seats must be at least 1 (leave it out for no limit)");
        }
        if self.max_per_user == Some(0) {
            return bad("max_per_user must be at least 1 (leave it out for no limit)");
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return bad("cookie_name must be letters, digits, '_', '-' or '.'");
        }
        Ok(())
    }

    /// Whether a session may suspend its own heartbeat: `heartbeat.allow_suspend`, by
    /// default only in an app without seats. A seat's heartbeat is how the seat of a
    /// client that died comes back; a client that suspends it keeps its seat for as
    /// long as the idle timeout allows.
    pub fn heartbeat_suspend_allowed(&self) -> bool {
        self.heartbeat
            .and_then(|h| h.allow_suspend)
            .unwrap_or(self.seats.is_none())
    }

    /// Checks a change a session asks of its own heartbeat (with its own token):
    /// suspending needs [`Policy::heartbeat_suspend_allowed`], an interval may not pass
    /// `heartbeat.max_interval_s`, and where suspending is refused a grace may not pass
    /// the app's (a long grace is a suspension by another name). The message names
    /// the setting that refused. Operators' changes are not checked.
    pub fn check_own_heartbeat(
        &self,
        active: bool,
        interval_s: Option<u32>,
        grace_s: Option<u32>,
    ) -> Result<(), String> {
        let suspend_allowed = self.heartbeat_suspend_allowed();
        if !active && !suspend_allowed {
            return Err(
                "the app's heartbeat policy refuses this: a session may not suspend its own \
                 heartbeat (heartbeat.allow_suspend is false, the default for an app with seats)"
                    .into(),
            );
        }
        let max = self.heartbeat.and_then(|h| h.max_interval_s);
        if let (Some(i), Some(max)) = (interval_s, max) {
            if i > max {
                return Err(format!(
                    "the app's heartbeat policy refuses this: interval_s {i} is over \
                     heartbeat.max_interval_s ({max} s)"
                ));
            }
        }
        let app_grace = self
            .heartbeat
            .map_or(DEFAULT_HEARTBEAT_GRACE_S, |h| h.grace_s);
        if let Some(g) = grace_s.filter(|g| *g > app_grace && !suspend_allowed) {
            return Err(format!(
                "the app's heartbeat policy refuses this: grace_s {g} is over the app's \
                 heartbeat.grace_s ({app_grace} s), and the app does not let a session \
                 suspend its heartbeat (heartbeat.allow_suspend)"
            ));
        }
        Ok(())
    }

    /// Whether a session with `privileges` takes a seat.
    pub fn counts_seat(&self, privileges: &crate::session::Privileges) -> bool {
        !privileges.any_of(&self.reserved_privileges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(h: Option<HeartbeatPolicy>) -> Policy {
        Policy {
            seats: Some(5),
            heartbeat: h,
            ..Policy::default()
        }
    }

    #[test]
    fn suspending_ones_own_heartbeat_is_off_by_default_where_there_are_seats() {
        assert!(Policy::default().heartbeat_suspend_allowed());
        assert!(!seats(None).heartbeat_suspend_allowed());
        let e = seats(None)
            .check_own_heartbeat(false, None, None)
            .unwrap_err();
        assert!(e.contains("heartbeat.allow_suspend"), "{e}");
        let allowed = HeartbeatPolicy {
            allow_suspend: Some(true),
            ..HeartbeatPolicy::every(30)
        };
        assert!(seats(Some(allowed))
            .check_own_heartbeat(false, None, None)
            .is_ok());
        assert!(seats(None)
            .check_own_heartbeat(true, Some(60), Some(60))
            .is_ok());
    }

    #[test]
    fn an_interval_over_the_max_and_a_long_grace_are_refused() {
        let h = HeartbeatPolicy {
            max_interval_s: Some(120),
            ..HeartbeatPolicy::every(30)
        };
        let p = seats(Some(h));
        assert!(p.check_own_heartbeat(true, Some(120), None).is_ok());
        let e = p
            .check_own_heartbeat(true, Some(31_536_000), None)
            .unwrap_err();
        assert!(e.contains("heartbeat.max_interval_s (120 s)"), "{e}");
        let e = p
            .check_own_heartbeat(true, None, Some(31_536_000))
            .unwrap_err();
        assert!(e.contains("grace_s"), "{e}");
        // Without seats the grace is the session's to choose, the max still holds.
        let p = Policy {
            heartbeat: Some(h),
            ..Policy::default()
        };
        assert!(p.check_own_heartbeat(true, None, Some(31_536_000)).is_ok());
        assert!(p.check_own_heartbeat(true, Some(121), None).is_err());
    }

    #[test]
    fn the_max_interval_is_at_least_the_interval() {
        let p = Policy {
            heartbeat: Some(HeartbeatPolicy {
                max_interval_s: Some(10),
                ..HeartbeatPolicy::every(30)
            }),
            ..Policy::default()
        };
        assert!(p.validate().is_err());
    }
}
