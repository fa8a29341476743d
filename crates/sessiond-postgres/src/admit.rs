//! Admission in one transaction, for an open and for a privilege change. The app's row
//! in `apps` is locked first (`SELECT ... FOR UPDATE`), which serialises every
//! admission, close-all and privilege change of that app across all nodes; then the
//! store reads with fresh reads what the core's [`Admission::wants`] asks, runs the
//! core's [`plan`], closes whom it displaces and writes the session before committing.
//!
//! An open that no rule can refuse (no seat to take, no user limit that applies, no
//! take-over: [`Wants::anything`] is false) is a plain insert: it needs no lock and
//! never waits behind another app's admissions.

use deadpool_postgres::{GenericClient, Object};
use sessiond_core::admission::{plan, Admission, Close, Gathered, Plan, Refusal, Seen, Wants};
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

/// The `want` longest-idle seat holders of `app` whose rows decode. Unreadable ones
/// keep their seats (they are counted) but are never picked to be evicted: each one
/// met makes the next read take one more row, up to [`EXTRA_IDLEST_MAX`] more.
async fn idlest(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    app: &str,
    want: usize,
    now: Timestamp,
) -> PgResult<Vec<Seen>> {
    let mut extra = 0;
    loop {
        let limit = i64::try_from(want + extra).unwrap_or(i64::MAX);
        let found = rows::query(c, &sql.idlest, &[&app, &limit]).await?;
        let mut readable = Vec::with_capacity(found.len());
        let mut unreadable = 0;
        for row in &found {
            match rows::decode_row(sql, bad, row, "skipped")? {
                Decoded::Session(s) => readable.extend(Seen::of(&s, now)),
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
    crate::outbox::keep(c, sql, &sql.routes.closes(&closed, now)).await?;
    Ok(closed)
}

async fn seats_used(c: &impl GenericClient, sql: &Sql, app: &str) -> PgResult<u64> {
    let rows = rows::query(c, &sql.seats_used, &[&app]).await?;
    let n: i64 = match rows.first() {
        Some(r) => r.try_get(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What admission sees of decoded rows.
fn seen(sessions: &[Session], now: Timestamp) -> Vec<Seen> {
    sessions.iter().filter_map(|s| Seen::of(s, now)).collect()
}

/// Reads what `wants` asks of `app`, in a transaction that holds the app's lock.
async fn gather(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    app: &str,
    adm: &Admission,
    wants: &Wants<'_>,
    now: Timestamp,
) -> PgResult<Gathered> {
    let mut got = Gathered::default();
    if wants.seats.is_some() {
        got.seats_used = seats_used(c, sql, app).await?;
    }
    let full = wants.full_on_paper(got.seats_used);
    if full {
        let due = rows::query(c, &sql.due_in_app, &[&app, &ts(now)]).await?;
        got.due = seen(&rows::decode_rows(sql, bad, &due)?, now);
    }
    if let Some(user) = wants.user {
        let mine = rows::query(c, &sql.user_holders, &[&app, &user]).await?;
        got.user_sessions = seen(&rows::decode_rows(sql, bad, &mine)?, now);
    }
    if let Some(target) = wants.take_over {
        let row = rows::query(c, &sql.take_over_holder, &[&uuid(target), &app]).await?;
        got.take_over = seen(&rows::decode_rows(sql, bad, &row)?, now).pop();
    }
    let want = wants.idlest(adm, got.user_sessions.len(), got.due.len());
    if full && want > 0 {
        got.idlest = idlest(c, sql, bad, app, want, now).await?;
    }
    Ok(got)
}

/// Closes what [`plan`] listed, locking the rows first (in id order); a session
/// closed meanwhile by someone else is skipped (its seat is free all the same).
async fn close_planned(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    closes: Vec<Close>,
    now: Timestamp,
) -> PgResult<Vec<Session>> {
    if closes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = closes.iter().map(|c| uuid(c.id)).collect();
    let locked = rows::query(c, &sql.lock_many, &[&ids]).await?;
    let mut victims = rows::decode_rows(sql, bad, &locked)?;
    let mut closed = Vec::with_capacity(closes.len());
    for close in closes {
        if let Some(i) = victims.iter().position(|s| s.id == close.id) {
            let mut s = victims.swap_remove(i);
            if s.close(close.reason, close.by, now) {
                closed.push(s);
            }
        }
    }
    rows::update_many(c, sql, &closed).await?;
    Ok(closed)
}

/// Admits `after` (the state a privilege change is about to write over `before`) in
/// a transaction that holds the app's lock and the session's row: nothing to check
/// gives no closes; a refusal is the caller's to roll back; otherwise the sessions it
/// displaces are closed here and the caller writes `after` and commits.
pub(crate) async fn admit_change(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    adm: &Admission,
    before: &Session,
    after: &Session,
    now: Timestamp,
) -> PgResult<Result<Vec<Session>, Refusal>> {
    let wants = adm.wants(Some(before), after);
    if !wants.anything() {
        return Ok(Ok(Vec::new()));
    }
    let got = gather(c, sql, bad, &after.app, adm, &wants, now).await?;
    match plan(adm, &wants, after.id, &got) {
        Plan::Refuse(r) => Ok(Err(r)),
        Plan::Admit(closes) => Ok(Ok(close_planned(c, sql, bad, closes, now).await?)),
    }
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
    let wants = adm.wants(None, session);
    let owed = sql.routes.derive(None, session, now);
    if !wants.anything() && owed.is_empty() {
        rows::insert(&*c, sql, session).await?;
        return Ok(OpenOutcome::Opened {
            session: session.clone(),
            displaced: Vec::new(),
        });
    }
    if !wants.anything() {
        // The open and what it owes the app's hooks, as one.
        let tx = c.transaction().await?;
        rows::insert(&tx, sql, session).await?;
        crate::outbox::keep(&tx, sql, &owed).await?;
        crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
        return Ok(OpenOutcome::Opened {
            session: session.clone(),
            displaced: Vec::new(),
        });
    }

    let tx = c.transaction().await?;
    lock_app(&tx, sql, &session.app).await?;
    let got = gather(&tx, sql, bad, &session.app, adm, &wants, now).await?;
    let closes = match plan(adm, &wants, session.id, &got) {
        Plan::Refuse(r) => {
            // Nothing changes on a refusal, not even the expiries: the sweeper closes
            // those sessions later, with their events.
            tx.rollback().await?;
            return Ok(OpenOutcome::Refused(r));
        }
        Plan::Admit(closes) => closes,
    };
    let displaced = close_planned(&tx, sql, bad, closes, now).await?;
    rows::insert(&tx, sql, session).await?;
    let mut owed = sql.routes.closes(&displaced, now);
    owed.extend(sql.routes.derive(None, session, now));
    crate::outbox::keep(&tx, sql, &owed).await?;
    crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
    Ok(OpenOutcome::Opened {
        session: session.clone(),
        displaced,
    })
}
