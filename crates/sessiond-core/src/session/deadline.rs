//! When a session is due: its idle, absolute and heartbeat deadlines, the one deadline
//! stores index it by, which timeout has passed at a given time, and when a closed
//! session's retention ends. The step rule (`step.rs`) closes a session by these; the
//! stores' expiry sweeps find due sessions by [`Session::deadline`].

use crate::session::{CloseReason, Session};
use crate::time::Timestamp;

impl Session {
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

    /// [`Session::heartbeat_deadline`], with interval + grace counted from `floor` at
    /// the least (see
    /// [`Conditions::heartbeat_floor`](crate::Conditions::heartbeat_floor)). With a
    /// lease, the window ends when the lease does; a downtime gives the client
    /// interval + grace from its end to beat again, never a new lease.
    pub fn heartbeat_deadline_after(&self, floor: Option<Timestamp>) -> Option<Timestamp> {
        self.heartbeat.filter(|h| h.active).map(|h| {
            let window = h.interval_s as u64 + h.grace_s as u64;
            let leased = self.last_heartbeat_at.plus_secs(window + h.lease_s as u64);
            floor.map_or(leased, |f| leased.max(f.plus_secs(window)))
        })
    }

    /// Since when an open session whose heartbeat has a lease is *away* at `now`: its
    /// beats stopped for longer than interval + grace, and its seat is held for it
    /// until the lease ends. `None` when it is not away.
    pub fn away_since(&self, now: Timestamp) -> Option<Timestamp> {
        let h = self.heartbeat.filter(|h| h.active && h.lease_s > 0)?;
        let lost = self
            .last_heartbeat_at
            .plus_secs(h.interval_s as u64 + h.grace_s as u64);
        (self.closed.is_none() && now > lost).then_some(lost)
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
    /// is later than the last beat (see
    /// [`Conditions::heartbeat_floor`](crate::Conditions::heartbeat_floor)).
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
            let leased = self.heartbeat.is_some_and(|h| h.lease_s > 0);
            let reason = if leased {
                CloseReason::LeaseExpired
            } else {
                CloseReason::HeartbeatLost
            };
            consider(h, reason);
        }
        consider(self.idle_deadline(), CloseReason::IdleTimeout);
        due.map(|(_, r)| r)
    }

    /// Whether a closed session's retention has ended at `now`.
    pub fn is_past_retention(&self, now: Timestamp) -> bool {
        self.closed.is_some() && now > self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use crate::session::tests::session;
    use crate::session::{Actor, Change, CloseReason, Conditions};
    use crate::time::Timestamp;

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
    fn a_lease_keeps_a_silent_session_away_then_closes_it_as_lease_expired() {
        let mut s = session();
        s.idle_timeout_s = 3600;
        s.heartbeat = Some(crate::session::Heartbeat {
            interval_s: 10,
            grace_s: 5,
            active: true,
            lease_s: 60,
        });
        let beat = s.last_heartbeat_at;
        let at = |secs: u64| beat.plus_secs(secs);
        assert_eq!(s.away_since(at(15)), None, "within interval + grace");
        assert_eq!(s.away_since(at(16)), Some(at(15)));
        assert_eq!(s.due_reason(at(75)), None, "the lease holds");
        assert_eq!(s.due_reason(at(76)), Some(CloseReason::LeaseExpired));
        // A beat while away brings it back.
        s.step(&Change::Heartbeat, &Conditions::default(), at(40))
            .unwrap();
        assert_eq!(s.away_since(at(41)), None);
        assert_eq!(s.due_reason(at(76)), None);
        // Without a lease: lost after interval + grace, never away.
        s.heartbeat = s
            .heartbeat
            .map(|h| crate::session::Heartbeat { lease_s: 0, ..h });
        assert_eq!(s.away_since(at(60)), None);
        assert_eq!(s.due_reason(at(56)), Some(CloseReason::HeartbeatLost));
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
}
