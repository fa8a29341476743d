//! Every store operation but admission: reads, changes through [`Session::step`],
//! closes, lists, counts and expiry. Each takes a connection and runs either one
//! statement or one transaction; retries and deadlines are the caller's
//! ([`crate::db`]).
//!
//! Locks: a change locks its session's row (`SELECT ... FOR UPDATE`) and nothing else,
//! except a privilege change, which can take a seat and so locks the app row first,
//! like admission and close-all; an import locks the rows of the apps it writes to and
//! takes a session from, then the session's. Expiry locks with `SKIP LOCKED` and never waits, so
//! several nodes sweeping at once split the due sessions between them.

use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Object};
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, StatusFilter,
};
use sessiond_core::{
    Actor, Change, ChangeError, CloseReason, Conditions, Lookup, Session, SessionId, Step,
    Timestamp,
};
use tokio_postgres::types::ToSql;

use crate::admit::{admit_change, expire_rows, lock_app};
use crate::error::{PgResult, PostgresError};
use crate::rows::{self, hash_bytes, ts, uuid, Decoded};
use crate::schema::Sql;
use crate::unreadable::Unreadable;

/// What becomes of an unreadable row an operation on its own session met.
const NOT_READ: &str = "not read (closing the session by id removes it)";

/// Reads the row `lookup` names, locking it (`lock`) or not.
async fn fetch_row(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    lookup: Lookup,
    lock: bool,
) -> PgResult<Option<Decoded>> {
    let row = match lookup {
        Lookup::Id(id) => {
            let text = if lock {
                &sql.lock_by_id
            } else {
                &sql.get_by_id
            };
            rows::query_opt(c, text, &[&uuid(id)]).await?
        }
        Lookup::Token(h) => {
            let text = if lock {
                &sql.lock_by_token
            } else {
                &sql.get_by_token
            };
            rows::query_opt(c, text, &[&hash_bytes(h)]).await?
        }
    };
    row.map(|r| rows::decode_row(sql, bad, &r, NOT_READ))
        .transpose()
}

/// Reads a session by `lookup`, locking its row (`lock`) or not. A row whose body
/// does not decode is [`PostgresError::Corrupt`].
async fn fetch(
    c: &impl GenericClient,
    sql: &Sql,
    bad: &Unreadable,
    lookup: Lookup,
    lock: bool,
) -> PgResult<Option<Session>> {
    match fetch_row(c, sql, bad, lookup, lock).await? {
        None => Ok(None),
        Some(Decoded::Session(s)) => Ok(Some(s)),
        Some(Decoded::Unreadable { id, why }) => Err(PostgresError::Corrupt(format!(
            "the body of session {id} in {}.sessions cannot be read ({why}); closing the \
             session by id removes it",
            sql.schema
        ))),
    }
}

/// A session as stored, in one statement.
pub(crate) async fn get(
    c: &Object,
    sql: &Sql,
    bad: &Unreadable,
    lookup: Lookup,
) -> PgResult<Option<Session>> {
    fetch(c, sql, bad, lookup, false).await
}

/// Applies `change` through [`Session::step`].
///
/// Reads and touches first read the row without a transaction: when the step reports
/// nothing to write (a read, a coalesced touch, a refusal) that one statement is the
/// whole operation. Otherwise the row is locked, the step runs again on the locked
/// state and the result is written in the same transaction. Touches commit with
/// `synchronous_commit = off` when `async_touches` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn modify(
    c: &mut Object,
    sql: &Sql,
    bad: &Unreadable,
    lookup: Lookup,
    change: &Change,
    cond: &Conditions,
    now: Timestamp,
    async_touches: bool,
) -> PgResult<ModifyOutcome> {
    let mut lock_app_of = None;
    match change {
        Change::Read | Change::Touch => {
            let Some(mut s) = fetch(&*c, sql, bad, lookup, false).await? else {
                return Ok(ModifyOutcome::NotFound);
            };
            match s.step(change, cond, now) {
                Ok(Step::Unchanged) => {
                    return Ok(ModifyOutcome::Done {
                        session: s,
                        step: Step::Unchanged,
                        displaced: Vec::new(),
                    })
                }
                Err(e) => return Ok(ModifyOutcome::Refused(e)),
                // Something to write: redo it under the row lock.
                Ok(_) => {}
            }
        }
        Change::SetPrivileges { .. } => {
            // It can make the session take a seat: serialise with admission.
            let Some(s) = fetch(&*c, sql, bad, lookup, false).await? else {
                return Ok(ModifyOutcome::NotFound);
            };
            lock_app_of = Some(s.app);
        }
        _ => {}
    }

    let (tx, mut s) = loop {
        let tx = c.transaction().await?;
        if let Some(app) = &lock_app_of {
            lock_app(&tx, sql, app).await?;
        }
        let Some(s) = fetch(&tx, sql, bad, lookup, true).await? else {
            tx.rollback().await?;
            return Ok(ModifyOutcome::NotFound);
        };
        match &lock_app_of {
            // An import moved it to another app since it was read: lock that one.
            Some(app) if **app != *s.app => {
                tx.rollback().await?;
                lock_app_of = Some(s.app.clone());
            }
            _ => break (tx, s),
        }
    };
    let hooked = sql.routes.of(&s.app).is_some();
    let before = match change {
        Change::SetPrivileges { .. } => Some(s.clone()),
        _ if hooked => Some(s.clone()),
        _ => None,
    };
    match s.step(change, cond, now) {
        Err(e) => {
            tx.rollback().await?;
            Ok(ModifyOutcome::Refused(e))
        }
        Ok(Step::Unchanged) => {
            tx.rollback().await?;
            Ok(ModifyOutcome::Done {
                session: s,
                step: Step::Unchanged,
                displaced: Vec::new(),
            })
        }
        Ok(step) => {
            let mut displaced = Vec::new();
            if let (Change::SetPrivileges { admission, .. }, Some(before)) = (change, &before) {
                match admit_change(&tx, sql, bad, admission, before, &s, now).await? {
                    Ok(closed) => displaced = closed,
                    Err(refusal) => {
                        tx.rollback().await?;
                        return Ok(ModifyOutcome::Refused(ChangeError::NotAdmitted(refusal)));
                    }
                }
            }
            let mut owed = sql.routes.closes(&displaced, now);
            if let Some(before) = before.as_ref().filter(|_| hooked) {
                owed.extend(sql.routes.derive(Some(before), &s, now));
            }
            crate::outbox::keep(&tx, sql, &owed).await?;
            if async_touches && matches!(change, Change::Touch) && step == Step::Changed {
                // Losing a touch in a server crash only makes the session look idler.
                let (set, write) = tokio::join!(
                    tx.batch_execute("SET LOCAL synchronous_commit TO OFF"),
                    rows::update(&tx, sql, &s)
                );
                set?;
                write?;
            } else {
                rows::update(&tx, sql, &s).await?;
            }
            crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
            Ok(ModifyOutcome::Done {
                session: s,
                step,
                displaced,
            })
        }
    }
}

/// Closes one open session. A row whose body does not decode is deleted instead
/// (the row is the session and all its index entries).
pub(crate) async fn close(
    c: &mut Object,
    sql: &Sql,
    bad: &Unreadable,
    id: SessionId,
    reason: CloseReason,
    by: Actor,
    now: Timestamp,
) -> PgResult<CloseOutcome> {
    let tx = c.transaction().await?;
    let mut s = match fetch_row(&tx, sql, bad, Lookup::Id(id), true).await? {
        Some(Decoded::Session(s)) => s,
        Some(Decoded::Unreadable { .. }) => {
            rows::execute(&tx, &sql.delete_one, &[&uuid(id)]).await?;
            crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
            tracing::warn!(session = %id, record = %format!("{}.sessions row {id}", sql.schema), "unreadable session row removed by a close");
            return Ok(CloseOutcome::Discarded);
        }
        None => {
            tx.rollback().await?;
            return Ok(CloseOutcome::NotFound);
        }
    };
    if !s.close(reason, by, now) {
        tx.rollback().await?;
        return Ok(CloseOutcome::AlreadyClosed(s));
    }
    rows::update(&tx, sql, &s).await?;
    crate::outbox::keep(&tx, sql, &sql.routes.closes([&s], now)).await?;
    crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
    Ok(CloseOutcome::Closed(s))
}

/// Closes every open session of `app` (of `user` only, when given) but those in
/// `except`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn close_all(
    c: &mut Object,
    sql: &Sql,
    bad: &Unreadable,
    app: &str,
    except: &[SessionId],
    user: Option<&str>,
    reason: CloseReason,
    by: Actor,
    now: Timestamp,
) -> PgResult<Vec<Session>> {
    let tx = c.transaction().await?;
    lock_app(&tx, sql, app).await?;
    let except: Vec<uuid::Uuid> = except.iter().map(|id| uuid(*id)).collect();
    let locked = rows::query(&tx, &sql.lock_open_except, &[&app, &except]).await?;
    let mut closed = rows::decode_rows(sql, bad, &locked)?;
    closed.retain_mut(|s| {
        user.is_none_or(|u| s.user.as_deref() == Some(u)) && s.close(reason, by, now)
    });
    rows::update_many(&tx, sql, &closed).await?;
    crate::outbox::keep(&tx, sql, &sql.routes.closes(&closed, now)).await?;
    crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
    Ok(closed)
}

/// Stores `s` exactly as given, replacing the session with its id, without admission
/// (what [`sessiond_core::Store::import`] promises).
///
/// Locks as admission does, so an import and an admission never interleave: the row of
/// `s`'s app in `apps` (created if need be) and, when the stored session belongs to
/// another app, that app's row too (an admission there may have picked it as a holder
/// to displace), both in name order; then the session's row. Should the session move
/// to yet another app between the first read and its row lock (another import), the
/// transaction starts over. The write itself is one upsert of every column.
pub(crate) async fn import(c: &mut Object, sql: &Sql, s: &Session) -> PgResult<()> {
    let id = uuid(s.id);
    let app_of = |row: Option<tokio_postgres::Row>| -> PgResult<Option<String>> {
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    };
    loop {
        let tx = c.transaction().await?;
        let was = app_of(rows::query_opt(&tx, &sql.app_of, &[&id]).await?)?;
        let mut apps: Vec<&str> = vec![&*s.app];
        if let Some(old) = was.as_deref().filter(|old| *old != &*s.app) {
            apps.push(old);
        }
        apps.sort_unstable();
        for app in &apps {
            lock_app(&tx, sql, app).await?;
        }
        let is = app_of(rows::query_opt(&tx, &sql.lock_app_of, &[&id]).await?)?;
        if is.as_deref().is_some_and(|app| !apps.contains(&app)) {
            tx.rollback().await?;
            continue;
        }
        rows::upsert(&tx, sql, s).await?;
        crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
        return Ok(());
    }
}

/// A page of sessions, exactly as [`ListQuery`] describes it. Rows whose body does
/// not decode are left out (reported as skipped) and the page is filled from the rows
/// after them, so a short page still means the last one.
pub(crate) async fn list(
    c: &Object,
    sql: &Sql,
    bad: &Unreadable,
    q: &ListQuery,
) -> PgResult<Vec<Session>> {
    let mut out = Vec::new();
    let mut after = q.after;
    while out.len() < q.limit {
        let want = q.limit - out.len();
        let found = list_rows(c, sql, q, after, want).await?;
        for row in &found {
            let id: uuid::Uuid = row.try_get(1)?;
            after = Some(SessionId::from_u128(id.as_u128()));
            if let Decoded::Session(s) = rows::decode_row(sql, bad, row, "skipped")? {
                out.push(s);
            }
        }
        if found.len() < want {
            break;
        }
    }
    Ok(out)
}

/// The `body, id` rows of up to `limit` sessions `q` lists, after `after`.
async fn list_rows(
    c: &Object,
    sql: &Sql,
    q: &ListQuery,
    after: Option<SessionId>,
    limit: usize,
) -> PgResult<Vec<tokio_postgres::Row>> {
    let mut text = format!(
        "SELECT body::text, id FROM {}.sessions WHERE true",
        sql.schema
    );
    let after = after.map(uuid);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(app) = &q.app {
        params.push(app);
        text += &format!(" AND app = ${}", params.len());
    }
    if let Some(user) = &q.user {
        params.push(user);
        text += &format!(" AND user_name = ${}", params.len());
    }
    match q.status {
        StatusFilter::Any => {}
        StatusFilter::Open => text += " AND open",
        StatusFilter::Closed => text += " AND NOT open",
    }
    let order = if q.newest_first { "DESC" } else { "ASC" };
    if let Some(after) = &after {
        params.push(after);
        let op = if q.newest_first { "<" } else { ">" };
        text += &format!(" AND id {op} ${}", params.len());
    }
    params.push(&limit);
    text += &format!(" ORDER BY id {order} LIMIT ${}", params.len());
    rows::query(c, &text, &params).await
}

/// Open sessions and seats taken in `app`.
pub(crate) async fn counts(c: &Object, sql: &Sql, app: &str) -> PgResult<AppCounts> {
    let found = rows::query(c, &sql.counts, &[&app]).await?;
    let Some(row) = found.first() else {
        return Ok(AppCounts::default());
    };
    let (open, seats): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(AppCounts {
        open: u64::try_from(open).unwrap_or(0),
        seats_used: u64::try_from(seats).unwrap_or(0),
    })
}

/// Rows one expiry transaction takes at most.
const EXPIRY_BATCH: usize = 500;

/// Most unreadable due rows one sweep passes over (beyond that, the next sweep goes on).
const UNREADABLE_SKIP_MAX: usize = 10_000;

/// Closes up to `limit` open sessions whose timeout passed and deletes up to `limit`
/// closed ones past retention. Both read the deadline index from its low end and skip
/// rows another node holds, so each due session is closed once, by one node.
///
/// The work goes in batches of [`EXPIRY_BATCH`], each its own transaction, and stops
/// early once `budget` is spent: a large backlog then drains over several calls
/// instead of one call that never fits in the operation's time limit. Purging runs
/// first: if closing then fails, no closed session goes unreported (its event would be
/// lost), while a purge that goes unreported loses nothing.
pub(crate) async fn expire_due(
    c: &mut Object,
    sql: &Sql,
    bad: &Unreadable,
    now: Timestamp,
    limit: usize,
    budget: Duration,
) -> PgResult<Expired> {
    let started = Instant::now();
    let now_ms = ts(now);
    let mut out = Expired::default();
    while out.purged < limit {
        let batch = EXPIRY_BATCH.min(limit - out.purged);
        let n = i64::try_from(batch).unwrap_or(i64::MAX);
        let purged = crate::outcome::commit(rows::execute(&*c, &sql.purge, &[&now_ms, &n])).await?;
        out.purged += usize::try_from(purged).unwrap_or(usize::MAX);
        if purged < n.unsigned_abs() || started.elapsed() > budget {
            break;
        }
    }
    // Due rows whose body does not decode stay open and first in line: the batches
    // after the one that met them read past them.
    let mut passed_over: Vec<uuid::Uuid> = Vec::new();
    while out.closed.len() < limit && started.elapsed() <= budget {
        let batch = EXPIRY_BATCH.min(limit - out.closed.len());
        let n = i64::try_from(batch).unwrap_or(i64::MAX);
        let tx = c.transaction().await?;
        let due = rows::query(&tx, &sql.due_open, &[&now_ms, &n, &passed_over]).await?;
        let closed = expire_rows(&tx, sql, bad, &due, now).await?;
        crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
        if closed.len() < due.len() && passed_over.len() < UNREADABLE_SKIP_MAX {
            for row in &due {
                let id: uuid::Uuid = row.try_get(1)?;
                if !closed.iter().any(|s| uuid(s.id) == id) {
                    passed_over.push(id);
                }
            }
        }
        out.closed.extend(closed);
        if due.len() < batch {
            break;
        }
    }
    Ok(out)
}
