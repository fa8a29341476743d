//! Admission: reading an app's snapshot with `GATHER_OPEN`, turning it into the core's
//! [`AdmissionContext`], and planning the commit that closes the displaced sessions and
//! inserts the new one, guarded by the app's revision.
//!
//! The context is built as [`sessiond_core::MemoryStore`] builds it: when the seats are
//! all taken on paper, sessions whose timeout passed are expired first so they hold no
//! seat; when a user limit applies, the user's timed-out sessions are expired first.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use sessiond_core::admission::{
    decide, displacing_actor, Admission, AdmissionContext, Decision, Holder, Refusal,
};
use sessiond_core::{Actor, Session, SessionId, Timestamp};

use crate::commit::{BadRecord, Commit, Stored};
use crate::error::{Error, Result};
use crate::keys::AppKeys;
use crate::scripts::GATHER_OPEN;

/// Most timed-out sessions one open expires to free seats (the sweeper does the rest).
const DUE_PER_OPEN: usize = 256;

/// An app's state as admission sees it, read atomically.
#[derive(Debug)]
pub(crate) struct Snapshot {
    app_rev: u64,
    seats_used: u64,
    user: Vec<Stored>,
    take_over: Option<Stored>,
    due: Vec<Stored>,
    idlest: Vec<Stored>,
    /// Records read that do not decode, left out of the lists above (their seats stay
    /// in `seats_used`).
    pub unreadable: Vec<BadRecord>,
    /// How many of them were read as idlest seat holders.
    pub unreadable_idlest: usize,
}

/// What to do with an open request.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Refused; nothing to write.
    Refuse(Refusal),
    /// Run `commit`; `displaced` are the sessions it closes, as they will be.
    Admit {
        /// The writes.
        commit: Commit,
        /// Sessions closed to admit the new one (timed out ones first).
        displaced: Vec<Session>,
    },
}

/// Whether the session's seat matters: it takes one and the app has a limit.
fn seats_matter(session: &Session, adm: &Admission) -> bool {
    session.counts_seat && adm.seats.is_some()
}

/// Whether an open needs to read the app at all; without seats, user limit or
/// take-over it is a plain insert.
pub(crate) fn needs_snapshot(session: &Session, adm: &Admission) -> bool {
    seats_matter(session, adm)
        || (session.user.is_some() && adm.max_per_user.is_some())
        || adm.take_over.is_some()
}

/// Reads the snapshot for admitting `session`, with `extra_idlest` more idlest seat
/// holders than admission needs (to make up for unreadable ones).
pub(crate) async fn gather(
    conn: &mut ConnectionManager,
    keys: &AppKeys,
    session: &Session,
    adm: &Admission,
    now: Timestamp,
    extra_idlest: usize,
) -> Result<Snapshot> {
    let user = session
        .user
        .as_deref()
        .filter(|_| adm.max_per_user.is_some());
    let user_key = user.map_or_else(|| keys.open(), |u| keys.user(u));
    let seats = match (seats_matter(session, adm), adm.seats) {
        (true, Some(n)) => n.to_string(),
        _ => String::new(),
    };
    // The script adds one per user session it reads.
    let wanted = match adm.idlest_wanted(0) {
        0 => 0,
        n => n + extra_idlest,
    };
    let mut inv = GATHER_OPEN.prepare_invoke();
    inv.key(keys.rev())
        .key(keys.open())
        .key(keys.seated())
        .key(keys.due())
        .key(user_key)
        .arg(keys.record_prefix())
        .arg(now.as_millis())
        .arg(seats)
        .arg(DUE_PER_OPEN)
        .arg(wanted)
        .arg(adm.take_over.map_or_else(String::new, |t| t.to_string()))
        .arg(if user.is_some() { "1" } else { "0" });
    type Raw = (
        String,
        u64,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    );
    let (rev, seats_used, user, take, due, idlest): Raw = inv.invoke_async(conn).await?;
    let (idlest, mut unreadable) = Stored::decode_triples(&idlest)?;
    let unreadable_idlest = unreadable.len();
    let mut decode = |flat: &[String]| -> Result<Vec<Stored>> {
        let (good, bad) = Stored::decode_triples(flat)?;
        unreadable.extend(bad);
        Ok(good)
    };
    let user = decode(&user)?;
    let take_over = decode(&take)?.pop();
    let due = decode(&due)?;
    Ok(Snapshot {
        app_rev: rev
            .parse()
            .map_err(|_| Error::Corrupt(format!("the app revision {rev:?} is not a number")))?,
        seats_used,
        user,
        take_over,
        due,
        idlest,
        unreadable,
        unreadable_idlest,
    })
}

/// Decides on `session` over `snap` and plans the writes.
pub(crate) fn plan(
    keys: &AppKeys,
    session: &Session,
    adm: &Admission,
    now: Timestamp,
    snap: Snapshot,
) -> Result<Plan> {
    let seats_matter = seats_matter(session, adm);
    let user_limited = session.user.is_some() && adm.max_per_user.is_some();
    let full = seats_matter && snap.seats_used >= u64::from(adm.seats.unwrap_or(0));

    // Timed-out sessions to close first, as they were read and as they will be.
    let mut expired: Vec<(Stored, Session)> = Vec::new();
    let mut expire = |s: &Stored| {
        if expired.iter().any(|(e, _)| e.session.id == s.session.id) {
            return;
        }
        if let Some(reason) = s.session.due_reason(now) {
            let mut after = s.session.clone();
            after.close(reason, Actor::Expiry, now);
            expired.push((s.clone(), after));
        }
    };
    if full {
        snap.due.iter().for_each(&mut expire);
    }
    if user_limited {
        snap.user.iter().for_each(&mut expire);
    }
    let gone = |s: &Stored| {
        !s.session.is_open() || expired.iter().any(|(e, _)| e.session.id == s.session.id)
    };
    let freed = expired
        .iter()
        .filter(|(e, _)| e.session.counts_seat)
        .count() as u64;

    let mut ctx = AdmissionContext {
        seats_used: u32::try_from(snap.seats_used.saturating_sub(freed)).unwrap_or(u32::MAX),
        ..Default::default()
    };
    if user_limited {
        ctx.user_sessions = snap
            .user
            .iter()
            .filter(|s| !gone(s))
            .map(|s| Holder::from(&s.session))
            .collect();
    }
    ctx.take_over = snap
        .take_over
        .as_ref()
        .filter(|s| !gone(s) && *s.session.app == *session.app)
        .map(|s| Holder::from(&s.session));
    ctx.idlest = snap
        .idlest
        .iter()
        .filter(|s| !gone(s) && s.session.counts_seat)
        .map(|s| Holder::from(&s.session))
        .collect();
    ctx.idlest.sort_by_key(|h| (h.last_activity_at, h.id));
    ctx.idlest
        .truncate(adm.idlest_wanted(ctx.user_sessions.len()));

    let close = match decide(adm, session.counts_seat, session.user.is_some(), &ctx) {
        // Nothing is written on a refusal, not even the expiries: the sweeper closes
        // those (with their events), and a refusal holds with or without them.
        Decision::Refuse(r) => return Ok(Plan::Refuse(r)),
        Decision::Admit(close) => close,
    };

    let mut known: HashMap<SessionId, &Stored> = HashMap::new();
    for s in snap.user.iter().chain(&snap.take_over).chain(&snap.idlest) {
        known.insert(s.session.id, s);
    }
    let mut commit = Commit::new(keys, true);
    commit.expect_app_rev(snap.app_rev);
    let mut displaced = Vec::with_capacity(expired.len() + close.len());
    for (before, after) in expired {
        commit.write(keys, Some(&before), Some(&after))?;
        displaced.push(after);
    }
    for (id, reason) in close {
        let Some(before) = known.get(&id) else {
            continue;
        };
        let mut after = before.session.clone();
        after.close(reason, displacing_actor(reason, session.id), now);
        commit.write(keys, Some(before), Some(&after))?;
        displaced.push(after);
    }
    commit.write(keys, None, Some(session))?;
    Ok(Plan::Admit { commit, displaced })
}
