//! Admission: whether a new session may open, and which sessions it displaces.
//!
//! [`decide`] is a pure function over an [`AdmissionContext`] that a store gathers inside
//! its atomic section (a lock, a transaction, a script). Deciding in one place keeps the
//! rules identical across stores; gathering and applying atomically is the store's job.

use serde::Serialize;

use crate::id::SessionId;
use crate::policy::{OnFull, OnUserLimit, Policy};
use crate::session::{CloseReason, Session};
use crate::time::Timestamp;

/// The admission rules for one open request.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Seats of the app, if limited.
    pub seats: Option<u32>,
    /// What a full house does.
    pub on_full: OnFull,
    /// Most open sessions per user, if limited.
    pub max_per_user: Option<u32>,
    /// What reaching the user limit does.
    pub on_user_limit: OnUserLimit,
    /// A session of the same app to close (`taken_over`) in exchange for the new one.
    pub take_over: Option<SessionId>,
}

impl Admission {
    /// The rules of `policy`, with an optional take-over.
    pub fn from_policy(policy: &Policy, take_over: Option<SessionId>) -> Self {
        Admission {
            seats: policy.seats,
            on_full: policy.on_full,
            max_per_user: policy.max_per_user,
            on_user_limit: policy.on_user_limit,
            take_over,
        }
    }

    /// How many of the longest-idle seat holders a store must gather for [`decide`]:
    /// enough to find one that is not already being displaced.
    pub fn idlest_wanted(&self, user_sessions: usize) -> usize {
        match (self.on_full, self.seats) {
            (OnFull::EvictIdlest, Some(_)) => {
                1 + usize::from(self.take_over.is_some()) + user_sessions
            }
            _ => 0,
        }
    }
}

/// What admission needs to know of an existing open session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its id.
    pub id: SessionId,
    /// When it opened.
    pub created_at: Timestamp,
    /// Its last activity.
    pub last_activity_at: Timestamp,
    /// Whether it takes a seat.
    pub counts_seat: bool,
}

impl From<&Session> for Holder {
    fn from(s: &Session) -> Self {
        Holder {
            id: s.id,
            created_at: s.created_at,
            last_activity_at: s.last_activity_at,
            counts_seat: s.counts_seat,
        }
    }
}

/// The state of the app that admission looks at, gathered atomically by the store.
#[derive(Debug, Clone, Default)]
pub struct AdmissionContext {
    /// Open sessions of the app that take a seat.
    pub seats_used: u32,
    /// Open sessions of the new session's user (when it has one and a limit applies).
    pub user_sessions: Vec<Holder>,
    /// The take-over target when it is an open session of the same app.
    pub take_over: Option<Holder>,
    /// Seat-taking open sessions, longest idle first, at least
    /// [`Admission::idlest_wanted`] of them when there are that many.
    pub idlest: Vec<Holder>,
}

/// Why admission said no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum Refusal {
    /// Every seat is taken (`on_full = reject`).
    SeatsExhausted {
        /// Seats taken.
        used: u32,
        /// Seats in all.
        total: u32,
    },
    /// The user has as many sessions as allowed (`on_user_limit = reject`).
    UserLimit {
        /// The limit.
        max: u32,
    },
    /// The session named by `take_over` is not an open session of this app.
    TakeOverTarget,
}

/// Who closes a session that admission displaces: the newcomer for a take-over, the
/// engine for a replacement or an eviction.
pub fn displacing_actor(reason: CloseReason, newcomer: SessionId) -> crate::session::Actor {
    match reason {
        CloseReason::TakenOver => crate::session::Actor::Session(newcomer),
        _ => crate::session::Actor::System,
    }
}

/// Admission's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Open the new session after closing these.
    Admit(Vec<(SessionId, CloseReason)>),
    /// Do not open it.
    Refuse(Refusal),
}

/// Decides whether a session (taking a seat or not, of `user` or not) may open.
///
/// Order: take-over first (it frees its seat), then the per-user limit (replacing the
/// user's oldest sessions frees theirs), then the seats.
pub fn decide(
    adm: &Admission,
    counts_seat: bool,
    has_user: bool,
    ctx: &AdmissionContext,
) -> Decision {
    let mut close: Vec<(SessionId, CloseReason)> = Vec::new();
    let mut freed_seats: u32 = 0;

    if adm.take_over.is_some() {
        match &ctx.take_over {
            Some(t) => {
                close.push((t.id, CloseReason::TakenOver));
                freed_seats += u32::from(t.counts_seat);
            }
            None => return Decision::Refuse(Refusal::TakeOverTarget),
        }
    }

    if let (true, Some(max)) = (has_user, adm.max_per_user) {
        let mut mine: Vec<&Holder> = ctx
            .user_sessions
            .iter()
            .filter(|h| !close.iter().any(|(id, _)| *id == h.id))
            .collect();
        if mine.len() >= max as usize {
            match adm.on_user_limit {
                OnUserLimit::Reject => return Decision::Refuse(Refusal::UserLimit { max }),
                OnUserLimit::ReplaceOldest => {
                    mine.sort_by_key(|h| (h.created_at, h.id));
                    let excess = mine.len() + 1 - max as usize;
                    for h in mine.into_iter().take(excess) {
                        close.push((h.id, CloseReason::Replaced));
                        freed_seats += u32::from(h.counts_seat);
                    }
                }
            }
        }
    }

    if let (true, Some(total)) = (counts_seat, adm.seats) {
        let used = ctx.seats_used.saturating_sub(freed_seats);
        if used >= total {
            match adm.on_full {
                OnFull::Reject => return Decision::Refuse(Refusal::SeatsExhausted { used, total }),
                OnFull::EvictIdlest => {
                    let victim = ctx
                        .idlest
                        .iter()
                        .filter(|h| h.counts_seat && !close.iter().any(|(id, _)| *id == h.id))
                        .min_by_key(|h| (h.last_activity_at, h.id));
                    match victim {
                        // Evicting one is enough unless the seats shrank under the
                        // sessions (a new license): then refuse rather than evict many.
                        Some(v) if used == total => close.push((v.id, CloseReason::Evicted)),
                        _ => return Decision::Refuse(Refusal::SeatsExhausted { used, total }),
                    }
                }
            }
        }
    }
    Decision::Admit(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(created: u64, active: u64) -> Holder {
        Holder {
            id: SessionId::new(),
            created_at: Timestamp(created),
            last_activity_at: Timestamp(active),
            counts_seat: true,
        }
    }

    #[test]
    fn full_house_rejects_or_evicts_the_idlest() {
        let a = holder(1, 50);
        let b = holder(2, 10);
        let ctx = AdmissionContext {
            seats_used: 2,
            idlest: vec![b.clone(), a.clone()],
            ..Default::default()
        };
        let mut adm = Admission {
            seats: Some(2),
            ..Default::default()
        };
        assert_eq!(
            decide(&adm, true, false, &ctx),
            Decision::Refuse(Refusal::SeatsExhausted { used: 2, total: 2 })
        );
        assert_eq!(
            decide(&adm, false, false, &ctx),
            Decision::Admit(vec![]),
            "reserved"
        );
        adm.on_full = OnFull::EvictIdlest;
        assert_eq!(
            decide(&adm, true, false, &ctx),
            Decision::Admit(vec![(b.id, CloseReason::Evicted)])
        );
    }

    #[test]
    fn take_over_frees_a_seat() {
        let a = holder(1, 1);
        let adm = Admission {
            seats: Some(1),
            take_over: Some(a.id),
            ..Default::default()
        };
        let ctx = AdmissionContext {
            seats_used: 1,
            take_over: Some(a.clone()),
            ..Default::default()
        };
        assert_eq!(
            decide(&adm, true, false, &ctx),
            Decision::Admit(vec![(a.id, CloseReason::TakenOver)])
        );
        let ctx = AdmissionContext {
            seats_used: 1,
            ..Default::default()
        };
        assert_eq!(
            decide(&adm, true, false, &ctx),
            Decision::Refuse(Refusal::TakeOverTarget)
        );
    }

    #[test]
    fn user_limit_rejects_or_replaces_the_oldest() {
        let old = holder(1, 99);
        let new = holder(5, 5);
        let ctx = AdmissionContext {
            seats_used: 2,
            user_sessions: vec![new.clone(), old.clone()],
            ..Default::default()
        };
        let mut adm = Admission {
            max_per_user: Some(2),
            ..Default::default()
        };
        assert_eq!(
            decide(&adm, true, true, &ctx),
            Decision::Refuse(Refusal::UserLimit { max: 2 })
        );
        adm.on_user_limit = OnUserLimit::ReplaceOldest;
        adm.max_per_user = Some(1);
        let Decision::Admit(closed) = decide(&adm, true, true, &ctx) else {
            panic!("refused")
        };
        assert_eq!(closed.len(), 2);
        assert_eq!(closed[0], (old.id, CloseReason::Replaced));
    }
}
