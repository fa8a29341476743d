//! Opening a session: admission in one transaction. The app's row in `apps` is locked
//! first (`SELECT ... FOR UPDATE`), which serialises every admission, close-all and
//! privilege change of that app across all nodes; then the store gathers the
//! [`AdmissionContext`] with fresh reads, runs the core's [`decide`], closes the
//! displaced sessions and inserts the new one before committing.
//!
//! An open that no rule can refuse (no seat to take, no user limit that applies, no
//! take-over) is a plain insert: [`decide`] admits it without looking at anything, so
//! it needs no lock and never waits behind another app's admissions.

use deadpool_postgres::{GenericClient, Object};
use sessiond_core::admission::{
    decide, displacing_actor, Admission, AdmissionContext, Decision, Holder,
};
use sessiond_core::store::OpenOutcome;
use sessiond_core::{Actor, Session, Timestamp};
use tokio_postgres::Row;

use crate::error::PgResult;
use crate::rows::{self, ts, uuid, Decoded};
use crate::schema::Sql;
use crate::unreadable::Unreadable;

/// Most idlest seat holders admission reads beyond what it needs, to find readable
/// ones behind unreadable rows.
const EXTRA_IDLEST_MAX: usize = 64;

/// What admission needs of `sessions`.
fn holders(sessions: &[Session]) -> Vec<Holder> {
    sessions.iter().map(Holder::from).collect()
}

/// The `want` longest-idle seat holders of `app` whose rows decode. Unreadable ones
/// keep their seats (they are counted) but are never picked to be evicted: each one
/// met makes the next read take one more row, up to [`EXTRA_IDLEST_MAX`] more.
async fn idlest(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    app: &str,
    want: usize,
) -> PgResult<Vec<Holder>> {
    let mut extra = 0;
    loop {
        let limit = i64::try_from(want + extra).unwrap_or(i64::MAX);
        let found = rows::query(c, &sql.idlest, &[&app, &limit]).await?;
        let mut readable = Vec::with_capacity(found.len());
        let mut unreadable = 0;
        for row in &found {
            match rows::decode_row(sql, bad, row, "skipped")? {
                Decoded::Session(s) => readable.push(Holder::from(&s)),
                Decoded::Unreadable { .. } => unreadable += 1,
            }
        }
        let short = unreadable > extra && found.len() == want + extra;
        if !short || extra >= EXTRA_IDLEST_MAX {
            return Ok(readable);
        }
        extra = unreadable.min(EXTRA_IDLEST_MAX);
    }
}

/// Locks the row of `app` in `apps` for the rest of the transaction, creating it the
/// first time. Every multi-session operation of an app takes this lock first, before
/// any session row, so they never wait on each other in a cycle.
pub(crate) async fn lock_app(c: &impl GenericClient, sql: &Sql, app: &str) -> PgResult<()> {
    if rows::query_opt(c, &sql.lock_app, &[&app]).await?.is_some() {
        return Ok(());
    }
    // A concurrent first insert makes this wait for that transaction, then do nothing;
    // the second lock attempt then finds the committed row.
    rows::execute(c, &sql.insert_app, &[&app]).await?;
    rows::query_opt(c, &sql.lock_app, &[&app]).await?;
    Ok(())
}

/// Closes the sessions among `rows` (locked `body, id` rows) whose timeout passed at
/// `now`, writes them, and returns them. Rows whose body does not decode are left as
/// they are (reported as skipped).
pub(crate) async fn expire_rows(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    rows: &[Row],
    now: Timestamp,
) -> PgResult<Vec<Session>> {
    let mut closed = Vec::new();
    for mut s in rows::decode_rows(sql, bad, rows)? {
        if let Some(reason) = s.due_reason(now) {
            s.close(reason, Actor::Expiry, now);
            closed.push(s);
        }
    }
    rows::update_many(c, sql, &closed).await?;
    Ok(closed)
}

async fn seats_used(c: &impl GenericClient, sql: &Sql, app: &str) -> PgResult<u32> {
    let rows = rows::query(c, &sql.seats_used, &[&app]).await?;
    let n: i64 = match rows.first() {
        Some(r) => r.try_get(0)?,
        None => 0,
    };
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Admits and inserts `session` (see the module docs).
pub(crate) async fn open(
    c: &mut Object,
    sql: &Sql,
    bad: &Unreadable,
    session: &Session,
    adm: &Admission,
    now: Timestamp,
) -> PgResult<OpenOutcome> {
    let seats_matter = session.counts_seat && adm.seats.is_some();
    let user_limited = session.user.is_some() && adm.max_per_user.is_some();
    if !seats_matter && !user_limited && adm.take_over.is_none() {
        rows::insert(&*c, sql, session).await?;
        return Ok(OpenOutcome::Opened {
            session: session.clone(),
            displaced: Vec::new(),
        });
    }

    let tx = c.transaction().await?;
    let app: &str = &session.app;
    let now_ms = ts(now);
    lock_app(&tx, sql, app).await?;

    let mut displaced = Vec::new();
    let mut ctx = AdmissionContext::default();
    let total = adm.seats.unwrap_or(0);
    if seats_matter {
        ctx.seats_used = seats_used(&tx, sql, app).await?;
        if ctx.seats_used >= total {
            // Full on paper: sessions whose timeout passed free their seats first.
            let due = rows::query(&tx, &sql.due_in_app, &[&app, &now_ms]).await?;
            let closed = expire_rows(&tx, sql, bad, &due, now).await?;
            if !closed.is_empty() {
                ctx.seats_used = seats_used(&tx, sql, app).await?;
            }
            displaced.extend(closed);
        }
    }
    if let (Some(user), true) = (session.user.as_deref(), user_limited) {
        let due = rows::query(&tx, &sql.due_of_user, &[&app, &user, &now_ms]).await?;
        let closed = expire_rows(&tx, sql, bad, &due, now).await?;
        if seats_matter && !closed.is_empty() {
            ctx.seats_used = seats_used(&tx, sql, app).await?;
        }
        displaced.extend(closed);
        let mine = rows::query(&tx, &sql.user_holders, &[&app, &user]).await?;
        ctx.user_sessions = holders(&rows::decode_rows(sql, bad, &mine)?);
    }
    if let Some(target) = adm.take_over {
        let row = rows::query(&tx, &sql.take_over_holder, &[&uuid(target), &app]).await?;
        ctx.take_over = holders(&rows::decode_rows(sql, bad, &row)?).pop();
    }
    let want = adm.idlest_wanted(ctx.user_sessions.len());
    if want > 0 && seats_matter && ctx.seats_used >= total {
        ctx.idlest = idlest(&tx, sql, bad, app, want).await?;
    }

    let close = match decide(adm, session.counts_seat, session.user.is_some(), &ctx) {
        Decision::Refuse(r) => {
            // Nothing changes on a refusal: expiries done above are undone too, and
            // the sweeper closes those sessions later, with their events.
            tx.rollback().await?;
            return Ok(OpenOutcome::Refused(r));
        }
        Decision::Admit(close) => close,
    };
    if !close.is_empty() {
        let ids: Vec<uuid::Uuid> = close.iter().map(|(id, _)| uuid(*id)).collect();
        let locked = rows::query(&tx, &sql.lock_many, &[&ids]).await?;
        let mut victims = rows::decode_rows(sql, bad, &locked)?;
        let mut closed = Vec::with_capacity(close.len());
        // In decide's order; a victim closed meanwhile by someone else is skipped (its
        // seat is free all the same).
        for (id, reason) in close {
            if let Some(i) = victims.iter().position(|s| s.id == id) {
                let mut s = victims.swap_remove(i);
                if s.close(reason, displacing_actor(reason, session.id), now) {
                    closed.push(s);
                }
            }
        }
        rows::update_many(&tx, sql, &closed).await?;
        displaced.extend(closed);
    }
    rows::insert(&tx, sql, session).await?;
    crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
    Ok(OpenOutcome::Opened {
        session: session.clone(),
        displaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::admission::Decision;

    /// The lock-free path relies on decide admitting such sessions unconditionally.
    #[test]
    fn unconstrained_opens_are_admitted_without_context() {
        let full = AdmissionContext {
            seats_used: u32::MAX,
            ..Default::default()
        };
        let seats = Admission {
            seats: Some(1),
            max_per_user: Some(1),
            ..Default::default()
        };
        // A reserved session (no seat) of a guest (no user) with no take-over.
        assert_eq!(decide(&seats, false, false, &full), Decision::Admit(vec![]));
        // No seats limit at all, a user with no per-user limit.
        assert_eq!(
            decide(&Admission::default(), true, true, &full),
            Decision::Admit(vec![])
        );
    }
}
