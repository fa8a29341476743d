//! The webhook outbox in PostgreSQL ([`sessiond_core::hooks`]): the `deliveries` table,
//! written in the same transaction as the session change each delivery reports, and
//! the statements that claim, settle, list and resend them.
//!
//! A row is `id`, `app`, `dead`, `due` (copies of what queries filter and sort on) and
//! `body`, the whole [`Delivery`] in the core's serde form, which is the truth. A claim
//! is one statement: it moves the due time of the oldest due rows to the end of the
//! lease with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never get the same
//! delivery. Settling and resending lock the row and apply the core's rule
//! ([`Delivery::settled`], [`resent`]).

use deadpool_postgres::{GenericClient, Object};
use sessiond_core::hooks::{resent, Delivery, DeliveryQuery, HookId, OutboxCounts, Settle};
use sessiond_core::Timestamp;
use uuid::Uuid;

use crate::error::{PgResult, PostgresError};
use crate::rows::{self, ts};
use crate::schema::Sql;

fn id(h: HookId) -> Uuid {
    Uuid::from_u128(h.as_u128())
}

fn decode(row: &tokio_postgres::Row) -> PgResult<Delivery> {
    let text: String = row.try_get(0)?;
    serde_json::from_str(&text)
        .map_err(|e| PostgresError::Corrupt(format!("a webhook delivery row: {e}")))
}

fn encode(d: &Delivery) -> String {
    serde_json::to_string(d).expect("plain data serialises")
}

/// Inserts `owed` in the transaction of the change that owes them (nothing for none).
pub(crate) async fn keep(c: &impl GenericClient, sql: &Sql, owed: &[Delivery]) -> PgResult<()> {
    if owed.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = owed.iter().map(|d| id(d.id)).collect();
    let apps: Vec<&str> = owed.iter().map(|d| &*d.app).collect();
    let dead: Vec<bool> = owed.iter().map(|d| d.dead).collect();
    let due: Vec<i64> = owed.iter().map(|d| ts(d.due)).collect();
    let bodies: Vec<String> = owed.iter().map(encode).collect();
    rows::execute(c, &sql.hook_insert, &[&ids, &apps, &dead, &due, &bodies]).await?;
    Ok(())
}

/// [`sessiond_core::hooks::Outbox::claim`].
pub(crate) async fn claim(
    c: &Object,
    sql: &Sql,
    now: Timestamp,
    until: Timestamp,
    limit: usize,
) -> PgResult<Vec<Delivery>> {
    let n = i64::try_from(limit).unwrap_or(i64::MAX);
    let found =
        crate::outcome::commit(rows::query(c, &sql.hook_claim, &[&ts(now), &ts(until), &n]))
            .await?;
    let mut out = found.iter().map(decode).collect::<PgResult<Vec<_>>>()?;
    out.sort_by_key(|d| (d.due, d.id));
    Ok(out)
}

/// [`sessiond_core::hooks::Outbox::settle`].
pub(crate) async fn settle(
    c: &mut Object,
    sql: &Sql,
    hid: HookId,
    claimed_until: Timestamp,
    outcome: &Settle,
) -> PgResult<()> {
    let tx = c.transaction().await?;
    let Some(row) = rows::query_opt(&tx, &sql.hook_lock, &[&id(hid)]).await? else {
        tx.rollback().await?;
        return Ok(());
    };
    let d = decode(&row)?;
    match d.settled(claimed_until, outcome) {
        None => {
            rows::execute(&tx, &sql.hook_delete, &[&id(hid)]).await?;
        }
        Some(next) if next != d => put(&tx, sql, &next).await?,
        Some(_) => {
            tx.rollback().await?;
            return Ok(());
        }
    }
    crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
    Ok(())
}

async fn put(c: &impl GenericClient, sql: &Sql, d: &Delivery) -> PgResult<()> {
    rows::execute(
        c,
        &sql.hook_put,
        &[&id(d.id), &d.dead, &ts(d.due), &encode(d)],
    )
    .await?;
    Ok(())
}

/// [`sessiond_core::hooks::Outbox::resend`].
pub(crate) async fn resend(
    c: &mut Object,
    sql: &Sql,
    app: &str,
    hid: HookId,
    now: Timestamp,
) -> PgResult<bool> {
    let tx = c.transaction().await?;
    let Some(row) = rows::query_opt(&tx, &sql.hook_lock, &[&id(hid)]).await? else {
        tx.rollback().await?;
        return Ok(false);
    };
    let d = decode(&row)?;
    if *d.app != *app {
        tx.rollback().await?;
        return Ok(false);
    }
    put(&tx, sql, &resent(&d, now)).await?;
    crate::outcome::commit(async { Ok(tx.commit().await?) }).await?;
    Ok(true)
}

/// [`sessiond_core::hooks::Outbox::deliveries`].
pub(crate) async fn list(c: &Object, sql: &Sql, q: &DeliveryQuery) -> PgResult<Vec<Delivery>> {
    let n = i64::try_from(q.limit()).unwrap_or(i64::MAX);
    let found = rows::query(c, &sql.hook_list, &[&q.app, &q.dead, &n]).await?;
    found.iter().map(decode).collect()
}

/// [`sessiond_core::hooks::Outbox::tally`].
pub(crate) async fn tally(c: &Object, sql: &Sql) -> PgResult<OutboxCounts> {
    let row = rows::query_opt(c, &sql.hook_tally, &[]).await?;
    let (pending, dead): (i64, i64) = match row {
        Some(r) => (r.try_get(0)?, r.try_get(1)?),
        None => (0, 0),
    };
    Ok(OutboxCounts {
        pending: u64::try_from(pending).unwrap_or(0),
        dead: u64::try_from(dead).unwrap_or(0),
    })
}

/// [`sessiond_core::hooks::Outbox::forget_dead`]: ids are UUIDv7, so "older than" is
/// "below the first id of that time".
pub(crate) async fn forget_dead(
    c: &Object,
    sql: &Sql,
    before: Timestamp,
    limit: usize,
) -> PgResult<usize> {
    let n = i64::try_from(limit).unwrap_or(i64::MAX);
    let bound = id(HookId::first_at(before));
    let gone =
        crate::outcome::commit(rows::execute(c, &sql.hook_forget_dead, &[&bound, &n])).await?;
    Ok(usize::try_from(gone).unwrap_or(usize::MAX))
}
