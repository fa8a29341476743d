//! The webhook outbox in Redis ([`sessiond_core::hooks`]). Per app, in the app's slot:
//! `hooks` (a hash, delivery id → its JSON), `hooks:due` (pending ids scored by when each
//! is due) and `hooks:dead` (dead letters). A session write adds what it owes in its
//! own `COMMIT` group ([`crate::commit`]), so only if the record's revision checks; the
//! scripts here claim (moving the score to the lease's end), settle, resend, push and
//! list. The JSON's `due` is not kept current: the score is the truth, and what is read
//! back takes it (a dead letter's JSON is rewritten whole when it dies).

use redis::Script;
use sessiond_core::hooks::{
    resent, Delivery, DeliveryQuery, HookId, HookRoutes, OutboxCounts, Settle,
};
use sessiond_core::Timestamp;

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::keys::{AppKeys, Keys};
use crate::scripts::{HOOK_CLAIM, HOOK_FORGET_DEAD, HOOK_LIST, HOOK_PUSH, HOOK_SETTLE};

fn decode(json: &str, due: Option<&str>) -> Result<Delivery> {
    let mut d: Delivery = serde_json::from_str(json)
        .map_err(|e| Error::Corrupt(format!("a webhook delivery: {e}")))?;
    if let Some(ms) = due.filter(|s| !s.is_empty()) {
        d.due = Timestamp(
            ms.parse::<f64>()
                .map_err(|_| Error::Corrupt(format!("a webhook due time {ms:?}")))?
                as u64,
        );
    }
    Ok(d)
}

fn json(d: &Delivery) -> String {
    serde_json::to_string(d).expect("plain data serialises")
}

fn invoke<'a>(script: &'a Script, keys: &[String]) -> redis::ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    inv
}

fn app_keys(k: &AppKeys, dead: bool) -> Vec<String> {
    let mut v = vec![k.rev(), k.hooks(), k.hooks_due()];
    if dead {
        v.push(k.hooks_dead());
    }
    v
}

/// The apps a query or a claim covers: the one named, or every app with hooks.
fn apps(keys: &Keys, only: Option<&str>) -> Result<Vec<AppKeys>> {
    let names: Vec<String> = match only {
        Some(a) => vec![a.to_string()],
        None => keys.routes().apps().iter().map(|a| a.to_string()).collect(),
    };
    names.iter().map(|a| keys.app(a)).collect()
}

/// [`sessiond_core::hooks::Outbox::push`].
pub(crate) async fn push(conn: &mut Conn, keys: &Keys, owed: Vec<Delivery>) -> Result<()> {
    let mut by_app: std::collections::BTreeMap<String, Vec<Delivery>> = Default::default();
    for d in owed {
        by_app.entry(d.app.to_string()).or_default().push(d);
    }
    for (app, ds) in by_app {
        let k = keys.app(&app)?;
        let mut inv = invoke(&HOOK_PUSH, &app_keys(&k, false));
        for d in &ds {
            inv.arg(d.id.to_string())
                .arg(json(d))
                .arg(d.due.as_millis());
        }
        crate::outcome::commit(async { Ok(inv.invoke_async::<i64>(conn).await?) }, |_| true)
            .await?;
    }
    Ok(())
}

/// [`sessiond_core::hooks::Outbox::claim`]: app by app, up to `limit` in all.
pub(crate) async fn claim(
    conn: &mut Conn,
    keys: &Keys,
    now: Timestamp,
    until: Timestamp,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for k in apps(keys, None)? {
        if out.len() >= limit {
            break;
        }
        let mut inv = invoke(&HOOK_CLAIM, &app_keys(&k, false));
        inv.arg(now.as_millis())
            .arg(until.as_millis())
            .arg(limit - out.len());
        let found: Vec<String> = crate::outcome::commit(
            async { Ok(inv.invoke_async::<Vec<String>>(conn).await?) },
            |_| true,
        )
        .await?;
        for j in found {
            let mut d = decode(&j, None)?;
            d.due = until;
            out.push(d);
        }
    }
    Ok(out)
}

/// One app's deliveries: (pending with their due times, dead), and how many of each.
async fn read(
    conn: &mut Conn,
    k: &AppKeys,
    which: &str,
    n: usize,
) -> Result<(Vec<Delivery>, OutboxCounts)> {
    let mut inv = invoke(&HOOK_LIST, &app_keys(k, true));
    inv.arg(which).arg(n.max(1));
    let (flat, pending, dead): (Vec<String>, u64, u64) = inv.invoke_async(conn).await?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2) {
        out.push(decode(&pair[0], Some(&pair[1]))?);
    }
    Ok((out, OutboxCounts { pending, dead }))
}

/// The delivery `id` of `app`, as stored (due from its score), if any.
async fn find(conn: &mut Conn, k: &AppKeys, id: HookId) -> Result<Option<Delivery>> {
    let (j, score): (Option<String>, Option<String>) = redis::pipe()
        .hget(k.hooks(), id.to_string())
        .zscore(k.hooks_due(), id.to_string())
        .query_async(conn)
        .await?;
    j.map(|j| decode(&j, score.as_deref())).transpose()
}

async fn apply(
    conn: &mut Conn,
    k: &AppKeys,
    id: HookId,
    action: &str,
    claimed_until: Timestamp,
    d: Option<&Delivery>,
) -> Result<bool> {
    let mut inv = invoke(&HOOK_SETTLE, &app_keys(k, true));
    inv.arg(id.to_string())
        .arg(action)
        .arg(claimed_until.as_millis())
        .arg(d.map(json).unwrap_or_default())
        .arg(d.map_or(0, |d| d.due.as_millis()));
    let n: i64 =
        crate::outcome::commit(async { Ok(inv.invoke_async::<i64>(conn).await?) }, |_| true)
            .await?;
    Ok(n == 1)
}

/// [`sessiond_core::hooks::Outbox::settle`].
pub(crate) async fn settle(
    conn: &mut Conn,
    keys: &Keys,
    app: &str,
    id: HookId,
    claimed_until: Timestamp,
    outcome: &Settle,
) -> Result<()> {
    let k = keys.app(app)?;
    if *outcome == Settle::Delivered {
        apply(conn, &k, id, "del", claimed_until, None).await?;
        return Ok(());
    }
    let Some(d) = find(conn, &k, id).await? else {
        return Ok(());
    };
    match d.settled(claimed_until, outcome) {
        None => {
            apply(conn, &k, id, "del", claimed_until, None).await?;
        }
        Some(next) if next != d => {
            let action = if next.dead { "dead" } else { "retry" };
            apply(conn, &k, id, action, claimed_until, Some(&next)).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// [`sessiond_core::hooks::Outbox::resend`].
pub(crate) async fn resend(
    conn: &mut Conn,
    keys: &Keys,
    app: &str,
    id: HookId,
    now: Timestamp,
) -> Result<bool> {
    let k = keys.app(app)?;
    let Some(d) = find(conn, &k, id).await? else {
        return Ok(false);
    };
    let d = resent(&d, now);
    apply(conn, &k, id, "resend", now, Some(&d)).await
}

/// [`sessiond_core::hooks::Outbox::deliveries`]: oldest first by id, per app read
/// from the fronts of its due and dead sets.
pub(crate) async fn list(conn: &mut Conn, keys: &Keys, q: &DeliveryQuery) -> Result<Vec<Delivery>> {
    let which = match q.dead {
        None => "a",
        Some(false) => "p",
        Some(true) => "d",
    };
    let mut out = Vec::new();
    for k in apps(keys, q.app.as_deref())? {
        out.extend(read(conn, &k, which, q.limit()).await?.0);
    }
    out.retain(|d| q.matches(d));
    out.sort_by_key(|d| d.id);
    out.truncate(q.limit());
    Ok(out)
}

/// [`sessiond_core::hooks::Outbox::tally`]: over the apps with hooks.
pub(crate) async fn tally(conn: &mut Conn, keys: &Keys) -> Result<OutboxCounts> {
    let mut t = OutboxCounts::default();
    for k in apps(keys, None)? {
        let c = read(conn, &k, "n", 0).await?.1;
        t.pending += c.pending;
        t.dead += c.dead;
    }
    Ok(t)
}

/// [`sessiond_core::hooks::Outbox::forget_dead`]: over the apps with hooks. The dead
/// set's scores are all 0, so it is in id order, which is time order (UUIDv7).
pub(crate) async fn forget_dead(
    conn: &mut Conn,
    keys: &Keys,
    before: Timestamp,
    limit: usize,
) -> Result<usize> {
    let bound = format!("({}", HookId::first_at(before));
    let mut gone = 0;
    for k in apps(keys, None)? {
        if gone >= limit {
            break;
        }
        let mut inv = invoke(&HOOK_FORGET_DEAD, &app_keys(&k, true));
        inv.arg(&bound).arg(limit - gone);
        let n: usize =
            crate::outcome::commit(async { Ok(inv.invoke_async::<usize>(conn).await?) }, |_| {
                true
            })
            .await?;
        gone += n;
    }
    Ok(gone)
}

/// The routes of a store's keys.
pub(crate) fn routes(keys: &Keys) -> &HookRoutes {
    keys.routes()
}
