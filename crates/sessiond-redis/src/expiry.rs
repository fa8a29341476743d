//! Expiry: closing sessions whose timeout passed and purging closed ones past their
//! retention. Each known app costs one round trip to read what is due (`GATHER_DUE`),
//! plus one commit when something is; nothing else is read, so the cost grows with what
//! is due.
//!
//! Several nodes may sweep at once. Every close and purge is a revision-checked write
//! applied per session (`each` mode): of two nodes that read the same due session, one
//! writes it and the other's write is skipped and not reported, so each session is
//! closed (and its event published) exactly once.

use sessiond_core::store::Expired;
use sessiond_core::{Actor, Session, SessionId, Timestamp, TokenHash};

use crate::commit::{Commit, Committed, Stored};
use crate::error::Result;
use crate::ghosts::{self, Missing};
use crate::keys::AppKeys;
use crate::read::SKIPPED;
use crate::scripts::GATHER_DUE;
use crate::{backoff, RedisStore};

/// Most unreadable due records one sweep of an app passes over beyond its batch.
const UNREADABLE_SKIP_MAX: usize = 1000;

impl RedisStore {
    pub(crate) async fn expire(&self, now: Timestamp, limit: usize) -> Result<Expired> {
        let apps: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.inner.keys.apps())
            .query_async(&mut self.conn())
            .await?;
        let mut out = Expired::default();
        for app in apps {
            if out.closed.len() >= limit && out.purged >= limit {
                break;
            }
            let keys = match self.inner.keys.app(&app) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an app name unusable in keys");
                    continue;
                }
            };
            self.expire_app(&keys, now, limit, &mut out).await?;
        }
        Ok(out)
    }

    /// Expires and purges what is due in one app, adding to `out` up to `limit` each.
    ///
    /// Unreadable records cannot be closed: those found due are passed over (reads
    /// start after them, up to [`UNREADABLE_SKIP_MAX`] beyond `limit`), so they never
    /// hold up the sessions due behind them. Those found past retention are removed,
    /// as retention promises.
    async fn expire_app(
        &self,
        keys: &AppKeys,
        now: Timestamp,
        limit: usize,
        out: &mut Expired,
    ) -> Result<()> {
        let mut attempt = 0;
        // Unreadable due records met so far, at the front of what is still due.
        let mut passed_over = 0;
        loop {
            let to_close = limit.saturating_sub(out.closed.len());
            let to_purge = limit.saturating_sub(out.purged);
            if to_close == 0 && to_purge == 0 {
                return Ok(());
            }
            type Raw = (
                Vec<String>,
                Vec<String>,
                usize,
                usize,
                Vec<String>,
                Vec<String>,
            );
            let (due, purge, due_scanned, _, due_missing, purge_missing): Raw = GATHER_DUE
                .key(keys.rev())
                .key(keys.due())
                .key(keys.purge())
                .arg(keys.record_prefix())
                .arg(now.as_millis())
                .arg(to_close)
                .arg(to_purge)
                .arg(passed_over)
                .invoke_async(&mut self.conn())
                .await?;
            let missing: Vec<(String, String)> = due_missing
                .into_iter()
                .map(|m| (keys.due(), m))
                .chain(purge_missing.into_iter().map(|m| (keys.purge(), m)))
                .collect();
            if ghosts::sort_out(&mut self.conn(), keys, &missing).await? == Missing::Moving {
                // The app's slot is moving: its due work waits for the next sweep.
                return Ok(());
            }
            let mut commit = Commit::new(keys, false, now);
            // Per group: the session closed, or the (token, id) of the one purged
            // (no token for an unreadable one).
            let mut planned: Vec<Result<Session, (Option<TokenHash>, SessionId)>> = Vec::new();
            let (due, bad_due) = Stored::decode_triples(&due)?;
            for bad in &bad_due {
                self.report(keys, bad, SKIPPED);
            }
            for before in due {
                if let Some(reason) = before.session.due_reason(now) {
                    let mut after = before.session.clone();
                    after.close(reason, Actor::Expiry, now);
                    commit.write(keys, Some(&before), Some(&after))?;
                    planned.push(Ok(after));
                }
            }
            let (purge, bad_purge) = Stored::decode_triples(&purge)?;
            for before in purge {
                if before.session.is_past_retention(now) {
                    commit.write(keys, Some(&before), None)?;
                    planned.push(Err((Some(before.session.token_hash), before.session.id)));
                }
            }
            for bad in &bad_purge {
                // The index says its retention ended; what it held no longer matters.
                self.report(keys, bad, "removed (past retention)");
                commit.discard(keys, bad.id, &bad.rev);
                planned.push(Err((None, bad.id)));
            }
            let mut conflicts = false;
            if !commit.is_empty() {
                let Committed::Applied(flags) = commit.run(&mut self.conn()).await? else {
                    continue;
                };
                let (mut tokens, mut ids) = (Vec::new(), Vec::new());
                for (p, applied) in planned.into_iter().zip(flags) {
                    match (p, applied) {
                        (_, false) => conflicts = true,
                        (Ok(closed), true) => out.closed.push(closed),
                        (Err((token, id)), true) => {
                            out.purged += 1;
                            tokens.extend(token);
                            ids.push(id);
                        }
                    }
                }
                self.unindex(&tokens, &ids).await;
            }
            if conflicts {
                // Another node wrote some of these meanwhile: read again, and take only
                // what is still due.
                attempt += 1;
                backoff(attempt).await;
                continue;
            }
            passed_over += bad_due.len();
            let more_behind = !bad_due.is_empty() && due_scanned >= to_close;
            if !more_behind || passed_over >= limit + UNREADABLE_SKIP_MAX {
                return Ok(());
            }
        }
    }
}
