//! Admission: whether a session may start to count against the app's seats or a user's
//! limit (an open, a take-over, a privilege change that makes it take a seat or moves it
//! to a user), and which sessions it displaces.
//!
//! Every store admits the same way, inside its own atomic section (a lock, a
//! transaction, a script):
//!
//! 1. [`Admission::wants`] says what to read, from the session before the change (none
//!    for an open) and after it;
//! 2. the store reads exactly that into a [`Gathered`] (each session as a [`Seen`]);
//! 3. [`plan`] turns it into a [`Plan`]: refuse, or admit after these [`Close`]s
//!    (timed-out sessions first, then those [`decide`] displaces);
//! 4. the store applies the closes and writes the session, or on a refusal writes
//!    nothing at all.
//!
//! The rules ([`decide`], a pure function over an [`AdmissionContext`]) and the
//! building of that context ([`plan`]: which timed-out sessions free their seats, who
//! is a candidate to be displaced) live here once; stores only fetch and commit rows.

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
    /// The rules a privilege change is admitted under: the app's seats and user limit,
    /// but a full house refuses whatever `on_full` says (a change never evicts anyone)
    /// and there is no take-over.
    pub fn for_change(policy: &Policy) -> Self {
        Admission {
            on_full: OnFull::Reject,
            ..Self::from_policy(policy, None)
        }
    }

    /// What a store must read to admit the session `after` (as it is about to be
    /// written) that was `before` (`None` for an open): the seats when it starts to
    /// take one, its user's sessions when it joins a user with a limit, the take-over
    /// target when one is named. A change that does none of these needs no admission
    /// ([`Wants::anything`] is false) and is a plain write.
    pub fn wants<'a>(&self, before: Option<&Session>, after: &'a Session) -> Wants<'a> {
        let open = after.is_open();
        let had_seat = before.is_some_and(|b| b.is_open() && b.counts_seat);
        let seats = self
            .seats
            .filter(|_| open && after.counts_seat && !had_seat);
        let user = after.user.as_deref().filter(|u| {
            open && self.max_per_user.is_some()
                && before.is_none_or(|b| !b.is_open() || b.user.as_deref() != Some(*u))
        });
        Wants {
            seats,
            user,
            take_over: self.take_over.filter(|_| open),
        }
    }

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

/// What a store reads for one admission, from [`Admission::wants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants<'a> {
    /// The seats check applies, with this many seats: read how many open sessions of
    /// the app take a seat; when that is at least this many (full on paper, see
    /// [`Wants::full_on_paper`]), also read the app's open sessions whose timeout
    /// passed ([`Gathered::due`]) and the longest-idle seat holders
    /// ([`Wants::idlest`] of them, [`Gathered::idlest`]).
    pub seats: Option<u32>,
    /// The user limit applies: read this user's open sessions of the app.
    pub user: Option<&'a str>,
    /// Read this session if it is an open session of the app (the take-over target).
    pub take_over: Option<SessionId>,
}

impl Wants<'_> {
    /// Whether admission has anything to check; if not, the write needs no reads.
    pub fn anything(&self) -> bool {
        self.seats.is_some() || self.user.is_some() || self.take_over.is_some()
    }

    /// Whether `seats_used` seat holders fill the seats, before timed-out ones are
    /// counted out: then the store reads the due sessions and the idlest holders.
    pub fn full_on_paper(&self, seats_used: u64) -> bool {
        self.seats.is_some_and(|t| seats_used >= u64::from(t))
    }

    /// How many of the longest-idle seat holders to read when full on paper, given
    /// how many sessions of the user were read: enough for [`decide`] to find one that
    /// is not already being displaced, plus `skipped` for holders the store may have
    /// to pass over (due ones, records it cannot read). Zero when nobody can be
    /// evicted.
    pub fn idlest(&self, adm: &Admission, user_sessions: usize, skipped: usize) -> usize {
        match adm.idlest_wanted(user_sessions) {
            0 => 0,
            n if self.seats.is_some() => n + skipped,
            _ => 0,
        }
    }
}

/// An open session as admission reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// What [`decide`] looks at.
    pub holder: Holder,
    /// The timeout that has passed, if one has: such a session is closed first and
    /// holds nothing.
    pub due: Option<CloseReason>,
}

impl Seen {
    /// `s` as admission reads it at `now`, or `None` when it is closed (a closed
    /// session holds nothing).
    pub fn of(s: &Session, now: Timestamp) -> Option<Seen> {
        s.is_open().then(|| Seen {
            holder: Holder::from(s),
            due: s.due_reason(now),
        })
    }
}

/// What the store read for [`plan`], as [`Wants`] asked.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    /// Open sessions of the app that take a seat, as the store counts them (records
    /// it cannot read included), the session being admitted not among them.
    pub seats_used: u64,
    /// When full on paper: open sessions of the app whose timeout passed (as many as
    /// the store reads at once; the sweeper closes the rest).
    pub due: Vec<Seen>,
    /// When the user limit applies: the user's open sessions of the app.
    pub user_sessions: Vec<Seen>,
    /// The take-over target, when it is an open session of the app.
    pub take_over: Option<Seen>,
    /// When full on paper: seat holders, in any order, at least the
    /// [`Wants::idlest`] longest idle of them (when there are that many).
    pub idlest: Vec<Seen>,
}

/// A session to close so that another may be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Which.
    pub id: SessionId,
    /// Why: a timeout that passed, `taken_over`, `replaced` or `evicted`.
    pub reason: CloseReason,
    /// By whom: [`Actor::Expiry`](crate::session::Actor::Expiry) for a timeout, else
    /// [`displacing_actor`].
    pub by: crate::session::Actor,
}

/// What [`plan`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Refuse; write nothing (not even the expiries: the sweeper closes those, with
    /// their events, and the refusal holds with or without them).
    Refuse(Refusal),
    /// Close these (timed-out sessions first, then the displaced ones, in this order),
    /// then write the session. A store that finds one of them closed meanwhile skips it:
    /// its seat or slot is free all the same.
    Admit(Vec<Close>),
}

/// Admits `session` (`id`, as it is about to be written) under `adm` over what the store
/// read: counts out timed-out sessions, builds the [`AdmissionContext`], runs [`decide`]
/// and lists who to close.
pub fn plan(adm: &Admission, wants: &Wants<'_>, id: SessionId, got: &Gathered) -> Plan {
    if !wants.anything() {
        return Plan::Admit(Vec::new());
    }
    let full = wants.full_on_paper(got.seats_used);
    let mut closes: Vec<Close> = Vec::new();
    let mut freed: u64 = 0;
    let mut expire = |s: &Seen| {
        if let Some(reason) = s.due {
            if s.holder.id != id && !closes.iter().any(|c| c.id == s.holder.id) {
                closes.push(Close {
                    id: s.holder.id,
                    reason,
                    by: crate::session::Actor::Expiry,
                });
                freed += u64::from(s.holder.counts_seat);
            }
        }
    };
    if full {
        // The idlest may hold due sessions the store did not list as due (it lists
        // a bounded number): they are expired all the same.
        got.due.iter().chain(&got.idlest).for_each(&mut expire);
    }
    if wants.user.is_some() {
        got.user_sessions.iter().for_each(&mut expire);
    }
    // A take-over target whose timeout passed is closed for that timeout; its seat is
    // free, so the newcomer is admitted as if it had taken it over.
    let mut adm = adm.clone();
    if let Some(t) = got
        .take_over
        .as_ref()
        .filter(|t| t.due.is_some() && Some(t.holder.id) == wants.take_over)
    {
        expire(t);
        adm.take_over = None;
    }
    let adm = &adm;
    let live = |s: &&Seen| s.due.is_none() && s.holder.id != id;
    let mut ctx = AdmissionContext {
        seats_used: u32::try_from(got.seats_used.saturating_sub(freed)).unwrap_or(u32::MAX),
        ..Default::default()
    };
    if wants.user.is_some() {
        ctx.user_sessions = got
            .user_sessions
            .iter()
            .filter(live)
            .map(|s| s.holder.clone())
            .collect();
    }
    if wants.take_over.is_some() {
        ctx.take_over = got
            .take_over
            .as_ref()
            .filter(live)
            .filter(|s| Some(s.holder.id) == wants.take_over)
            .map(|s| s.holder.clone());
    }
    let mut idlest: Vec<Holder> = got
        .idlest
        .iter()
        .filter(live)
        .filter(|s| s.holder.counts_seat)
        .map(|s| s.holder.clone())
        .collect();
    idlest.sort_by_key(|h| (h.last_activity_at, h.id));
    idlest.dedup_by_key(|h| h.id);
    idlest.truncate(adm.idlest_wanted(ctx.user_sessions.len()));
    ctx.idlest = idlest;
    match decide(adm, wants.seats.is_some(), wants.user.is_some(), &ctx) {
        Decision::Refuse(r) => Plan::Refuse(r),
        Decision::Admit(displaced) => {
            closes.extend(displaced.into_iter().map(|(victim, reason)| Close {
                id: victim,
                reason,
                by: displacing_actor(reason, id),
            }));
            Plan::Admit(closes)
        }
    }
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

    fn seen(h: &Holder, due: Option<CloseReason>) -> Seen {
        Seen {
            holder: h.clone(),
            due,
        }
    }

    #[test]
    fn a_change_wants_only_what_it_changes() {
        use crate::session::tests::session;
        let policy = Policy {
            seats: Some(1),
            max_per_user: Some(1),
            ..Default::default()
        };
        let adm = Admission::for_change(&policy);
        assert_eq!(adm.on_full, OnFull::Reject, "a change never evicts");
        let mut before = session();
        before.counts_seat = false;
        before.user = Some("ann".into());
        let mut after = before.clone();
        assert!(
            !adm.wants(Some(&before), &after).anything(),
            "nothing changed"
        );
        after.counts_seat = true;
        let w = adm.wants(Some(&before), &after);
        assert_eq!(
            (w.seats, w.user),
            (Some(1), None),
            "takes a seat, same user"
        );
        after.user = Some("bob".into());
        let w = adm.wants(Some(&before), &after);
        assert_eq!((w.seats, w.user), (Some(1), Some("bob")));
        before.counts_seat = true;
        let w = adm.wants(Some(&before), &after);
        assert_eq!((w.seats, w.user), (None, Some("bob")), "kept its seat");
        after.close(
            CloseReason::Logout,
            crate::session::Actor::User,
            Timestamp(1),
        );
        assert!(
            !adm.wants(Some(&before), &after).anything(),
            "closed: holds nothing"
        );
        // An open with no limit that applies reads nothing and is admitted as it is.
        let free = Admission::default();
        let w = free.wants(None, &before);
        assert!(!w.anything());
        let full = Gathered {
            seats_used: u64::MAX,
            ..Default::default()
        };
        assert_eq!(plan(&free, &w, before.id, &full), Plan::Admit(vec![]));
    }

    #[test]
    fn plan_frees_timed_out_seats_first_and_never_displaces_the_candidate() {
        let policy = Policy {
            seats: Some(2),
            on_full: OnFull::EvictIdlest,
            ..Default::default()
        };
        let adm = Admission::from_policy(&policy, None);
        let (idle, busy, due) = (holder(1, 10), holder(2, 50), holder(3, 5));
        let me = holder(4, 4);
        let wants = Wants {
            seats: Some(2),
            user: None,
            take_over: None,
        };
        // Three holders for two seats (one timed out): closing it makes room.
        let got = Gathered {
            seats_used: 2,
            due: vec![seen(&due, Some(CloseReason::IdleTimeout))],
            idlest: vec![
                seen(&due, Some(CloseReason::IdleTimeout)),
                seen(&idle, None),
                seen(&busy, None),
            ],
            ..Default::default()
        };
        assert_eq!(
            plan(&adm, &wants, me.id, &got),
            Plan::Admit(vec![Close {
                id: due.id,
                reason: CloseReason::IdleTimeout,
                by: crate::session::Actor::Expiry,
            }])
        );
        // None timed out: the idlest live holder is evicted, never the candidate.
        let got = Gathered {
            seats_used: 2,
            idlest: vec![seen(&me, None), seen(&busy, None), seen(&idle, None)],
            ..Default::default()
        };
        assert_eq!(
            plan(&adm, &wants, me.id, &got),
            Plan::Admit(vec![Close {
                id: idle.id,
                reason: CloseReason::Evicted,
                by: crate::session::Actor::System,
            }])
        );
        // The same for a change: refused, nothing closed.
        let change = Admission::for_change(&policy);
        assert_eq!(
            plan(&change, &wants, me.id, &got),
            Plan::Refuse(Refusal::SeatsExhausted { used: 2, total: 2 })
        );
    }

    #[test]
    fn a_timed_out_take_over_target_is_closed_for_its_timeout_and_frees_its_seat() {
        let policy = Policy {
            seats: Some(1),
            ..Default::default()
        };
        let target = holder(1, 1);
        let me = holder(2, 2);
        let adm = Admission::from_policy(&policy, Some(target.id));
        let wants = Wants {
            seats: Some(1),
            user: None,
            take_over: Some(target.id),
        };
        let got = Gathered {
            seats_used: 1,
            take_over: Some(seen(&target, Some(CloseReason::HeartbeatLost))),
            ..Default::default()
        };
        assert_eq!(
            plan(&adm, &wants, me.id, &got),
            Plan::Admit(vec![Close {
                id: target.id,
                reason: CloseReason::HeartbeatLost,
                by: crate::session::Actor::Expiry,
            }])
        );
        // Not there at all: the take-over is refused.
        let gone = Gathered {
            seats_used: 1,
            ..Default::default()
        };
        assert_eq!(
            plan(&adm, &wants, me.id, &gone),
            Plan::Refuse(Refusal::TakeOverTarget)
        );
    }
}
