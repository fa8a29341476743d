//! The step rule: [`Session::step`], the one pure function that applies a [`Change`] to
//! a session under its [`Conditions`] and says what happened ([`Step`]) or why it was
//! refused ([`ChangeError`]). Every store calls it inside its own atomic section, so the
//! rules (expiry first, then the address binding, then the version; touch and heartbeat
//! coalescing; what counts as activity) are written once and each store only provides
//! atomicity.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::admission::{Admission, Refusal};
use crate::id::TokenHash;
use crate::json::JsonObject;
use crate::session::{Actor, CloseReason, Closure, Heartbeat, Privileges, Session};
use crate::time::Timestamp;

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
        /// The rules the change is admitted under when it makes the session take a
        /// seat or moves it to a user ([`Admission::for_change`]): the store runs
        /// admission in the same atomic step as the change
        /// ([`crate::admission`]), and refuses it with [`ChangeError::NotAdmitted`].
        admission: Admission,
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
    /// Admission refused the change (the seats are taken, the user is at the limit).
    #[error("admission refused the change: {0:?}")]
    NotAdmitted(Refusal),
}

impl Session {
    /// For [`Change::RenewHeartbeat`]: an active heartbeat that missed a beat (the last
    /// one is more than an interval old) gets a fresh interval + grace from `now`. A
    /// lease is not renewed: a session away before the downtime keeps the end of its
    /// lease when that is later (the window counts from `now - lease_s`, or from its
    /// last beat if later). Returns whether it changed anything.
    fn renew_heartbeat(&mut self, now: Timestamp) -> bool {
        match self.heartbeat {
            Some(h)
                if h.active
                    && now.millis_since(self.last_heartbeat_at)
                        > u64::from(h.interval_s) * 1000 =>
            {
                let lease_ms = u64::from(h.lease_s) * 1000;
                let from =
                    Timestamp(now.as_millis().saturating_sub(lease_ms)).max(self.last_heartbeat_at);
                let renewed = from != self.last_heartbeat_at;
                self.last_heartbeat_at = from;
                renewed
            }
            _ => false,
        }
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
                    lease_s: 0,
                });
                let next = Heartbeat {
                    interval_s: interval_s.unwrap_or(cur.interval_s).max(1),
                    grace_s: grace_s.unwrap_or(cur.grace_s),
                    active: *active,
                    lease_s: cur.lease_s,
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
                admission: _,
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
    use crate::session::tests::session;
    use serde_json::json;

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
}
