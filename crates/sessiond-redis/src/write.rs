//! The write operations: open, modify, close, close-all, and import. Each one reads,
//! runs the core's logic (an import has none: it writes what it is given), and commits
//! through the revision-checked script, starting over on a conflict (bounded by the
//! operation timeout, see [`RedisStore::bounded`]).
//!
//! Global index entries (token → app and id, id → app) are written before the record
//! they point to and removed after it, so an entry never points to a session that
//! exists and is not its own; a stale entry only ever points to nothing.

use std::sync::Arc;

use sessiond_core::admission::Admission;
use sessiond_core::store::{CloseOutcome, ModifyOutcome, OpenOutcome};
use sessiond_core::{
    Actor, Change, ChangeError, CloseReason, Conditions, Lookup, Session, SessionId, Step,
    Timestamp, TokenHash,
};

use crate::commit::{Commit, Committed, Stored};
use crate::error::{Error, Result};
use crate::open::{gather, plan, Plan};
use crate::read::SKIPPED;
use crate::{backoff, RedisStore};

/// Extra life of index entries past the session's own, so a late sweep still finds them.
const INDEX_SLACK_MS: u64 = 24 * 3600 * 1000;

/// Sessions closed by close-all per commit.
const CLOSE_ALL_BATCH: usize = 128;

/// Most idlest seat holders an open reads beyond what admission needs, to find
/// readable ones behind unreadable records.
const EXTRA_IDLEST_MAX: usize = 64;

/// How long index entries of `s` must live from `now` (ms): until its absolute lifetime
/// and retention have both passed, plus slack.
fn index_ttl_ms(s: &Session, now: Timestamp) -> u64 {
    let end = s
        .created_at
        .plus_secs(u64::from(s.lifetime_s) + u64::from(s.retention_s));
    end.millis_since(now).saturating_add(INDEX_SLACK_MS)
}

impl RedisStore {
    /// Writes the global entries of a new session: its app among the known apps, its
    /// token and its id.
    async fn index_new(&self, s: &Session, now: Timestamp) -> Result<()> {
        let keys = &self.inner.keys;
        let ttl = index_ttl_ms(s, now);
        let mut apps = redis::cmd("SADD");
        apps.arg(keys.apps()).arg(&*s.app);
        let mut token = redis::cmd("SET");
        token
            .arg(keys.token(s.token_hash))
            .arg(format!("{}\n{}", s.app, s.id))
            .arg("PX")
            .arg(ttl);
        let mut id = redis::cmd("SET");
        id.arg(keys.id(s.id)).arg(&*s.app).arg("PX").arg(ttl);
        self.conn().each(vec![apps, token, id]).await?;
        Ok(())
    }

    /// Writes the token entry of `s` under `token` (a rotation).
    async fn index_token(&self, s: &Session, token: TokenHash, now: Timestamp) -> Result<()> {
        let () = redis::cmd("SET")
            .arg(self.inner.keys.token(token))
            .arg(format!("{}\n{}", s.app, s.id))
            .arg("PX")
            .arg(index_ttl_ms(s, now))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Removes global entries, best effort: a leftover entry points to nothing (or to a
    /// record that no longer holds that token) and expires by itself.
    pub(crate) async fn unindex(&self, tokens: &[TokenHash], ids: &[SessionId]) {
        for h in tokens {
            self.inner.tokens.remove(h);
        }
        if tokens.is_empty() && ids.is_empty() {
            return;
        }
        let mut dels = Vec::with_capacity(tokens.len() + ids.len());
        for h in tokens {
            let mut del = redis::cmd("DEL");
            del.arg(self.inner.keys.token(*h));
            dels.push(del);
        }
        for id in ids {
            let mut del = redis::cmd("DEL");
            del.arg(self.inner.keys.id(*id));
            dels.push(del);
        }
        let done = self.conn().each(dels).await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "stale session index entries left to expire");
        }
    }

    fn remember(&self, s: &Session) {
        self.inner.ids.insert(s.id, s.app.clone());
        self.inner
            .tokens
            .insert(s.token_hash, (s.app.clone(), s.id));
    }

    pub(crate) async fn open_session(
        &self,
        session: Session,
        adm: &Admission,
        now: Timestamp,
    ) -> Result<OpenOutcome> {
        let keys = self.inner.keys.app(&session.app)?;
        let wants = adm.wants(None, &session);
        let _turn = match wants.anything() {
            true => Some(self.inner.stripes.app(&session.app).await),
            false => None,
        };
        let mut indexed = false;
        let mut attempt = 0;
        // Idlest holders read beyond what admission needs, as many as were unreadable.
        let mut extra_idlest = 0;
        loop {
            let (mut commit, displaced) = if wants.anything() {
                let snap = gather(&mut self.conn(), &keys, adm, &wants, now, extra_idlest).await?;
                for bad in &snap.unreadable {
                    self.report(&keys, bad, SKIPPED);
                }
                if snap.unreadable_idlest > extra_idlest && extra_idlest < EXTRA_IDLEST_MAX {
                    extra_idlest = snap.unreadable_idlest.min(EXTRA_IDLEST_MAX);
                    continue;
                }
                match plan(&keys, adm, &wants, session.id, now, snap)? {
                    Plan::Admit { commit, displaced } => (commit, displaced),
                    Plan::Refuse(r) => {
                        if indexed {
                            self.unindex(&[session.token_hash], &[session.id]).await;
                        }
                        return Ok(OpenOutcome::Refused(r));
                    }
                }
            } else {
                (Commit::new(&keys, true, now), Vec::new())
            };
            commit.write(&keys, None, Some(&session))?;
            if !indexed {
                self.index_new(&session, now).await?;
                indexed = true;
            }
            match commit.run(&mut self.conn()).await? {
                Committed::Applied(_) => {
                    self.remember(&session);
                    self.hint(Arc::new(Stored {
                        rev: 1,
                        session: session.clone(),
                    }));
                    return Ok(OpenOutcome::Opened { session, displaced });
                }
                Committed::Conflict => {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
    }

    pub(crate) async fn modify_session(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> Result<ModifyOutcome> {
        let new_token = match change {
            Change::SetPrivileges { token_hash, .. } => Some(*token_hash),
            _ => None,
        };
        let Some((mut app, id)) = self.locate(lookup).await? else {
            return Ok(ModifyOutcome::NotFound);
        };
        // A privilege change may need admission: it takes the node's turn for the app,
        // as an open that needs admission does (the session's turn comes first; an open
        // takes no session turn, so no two wait on each other).
        let admission = match change {
            Change::SetPrivileges { admission, .. } => Some(admission),
            _ => None,
        };
        // Writers take turns in the node's queue for this session. Reads, touches (which
        // rarely write) and conditional writes (which a concurrent write dooms anyway,
        // and whose caller wants to know at once) take a turn only once they lost a race.
        // A privilege change takes its session's turn before its app's, always (taking
        // the session's later, after a conflict, would invert that order).
        let mut turn = match change {
            Change::Read | Change::Touch => None,
            _ if cond.expect_version.is_some() && admission.is_none() => None,
            _ => Some(self.inner.stripes.session(id).await),
        };
        let _app_turn = match admission {
            Some(_) => Some(self.inner.stripes.app(&app).await),
            None => None,
        };
        let mut new_token_indexed = false;
        let drop_new_token = |indexed: bool| async move {
            if let (true, Some(h)) = (indexed, new_token) {
                self.unindex(&[h], &[]).await;
            }
        };
        // A write first tries the record this node just read or wrote, if any (one
        // round trip instead of two); anything but a change made from it, or a commit
        // the revision check refuses, reads the record as usual.
        let mut hint = match change {
            Change::Read | Change::Touch => None,
            _ => self.hinted(lookup, id).filter(|h| *h.session.app == *app),
        };
        let mut attempt = 0;
        loop {
            let hinted = hint.is_some();
            let (keys, before) = match hint.take() {
                Some(h) => (self.inner.keys.app(&app)?, h),
                None => match self.fetch_located(lookup, &app, id).await? {
                    Some(found) => found,
                    None => {
                        // An import may have moved it since this node cached its place.
                        if let Some((moved, _)) = self.relocate(lookup, &app).await? {
                            app = moved;
                            continue;
                        }
                        drop_new_token(new_token_indexed).await;
                        return Ok(ModifyOutcome::NotFound);
                    }
                },
            };
            let mut after = before.session.clone();
            let step = match after.step(change, cond, now) {
                // A refusal or a no-op is decided on the record as stored.
                Err(_) | Ok(Step::Unchanged) if hinted => continue,
                Err(e) => {
                    drop_new_token(new_token_indexed).await;
                    return Ok(ModifyOutcome::Refused(e));
                }
                Ok(Step::Unchanged) => {
                    return Ok(ModifyOutcome::Done {
                        session: after,
                        step: Step::Unchanged,
                        displaced: Vec::new(),
                    })
                }
                Ok(step) => step,
            };
            let wants = admission.map(|adm| (adm, adm.wants(Some(&before.session), &after)));
            let (mut commit, displaced) = match wants.filter(|(_, w)| w.anything()) {
                None => (Commit::new(&keys, true, now), Vec::new()),
                Some((adm, wants)) => {
                    let snap = gather(&mut self.conn(), &keys, adm, &wants, now, 0).await?;
                    for bad in &snap.unreadable {
                        self.report(&keys, bad, SKIPPED);
                    }
                    match plan(&keys, adm, &wants, after.id, now, snap)? {
                        Plan::Admit { commit, displaced } => (commit, displaced),
                        // Decided on the record as stored, as any refusal.
                        Plan::Refuse(_) if hinted => continue,
                        Plan::Refuse(r) => {
                            drop_new_token(new_token_indexed).await;
                            return Ok(ModifyOutcome::Refused(ChangeError::NotAdmitted(r)));
                        }
                    }
                }
            };
            let rotated = after.token_hash != before.session.token_hash;
            if rotated && !new_token_indexed {
                self.index_token(&after, after.token_hash, now).await?;
                new_token_indexed = true;
            }
            commit.write(&keys, Some(&before), Some(&after))?;
            match commit.run(&mut self.conn()).await? {
                Committed::Applied(_) => {
                    drop(turn);
                    self.hint(Arc::new(Stored {
                        rev: before.rev + 1,
                        session: after.clone(),
                    }));
                    if rotated {
                        self.unindex(&[before.session.token_hash], &[]).await;
                        self.remember(&after);
                    } else {
                        // Say the session timed out on a retry: the new token is unused.
                        drop_new_token(new_token_indexed).await;
                    }
                    for d in &displaced {
                        self.inner.records.remove(&d.id);
                    }
                    return Ok(ModifyOutcome::Done {
                        session: after,
                        step,
                        displaced,
                    });
                }
                // The hint was stale: read the record, no race lost yet.
                Committed::Conflict if hinted => self.inner.records.remove(&id),
                Committed::Conflict => {
                    if turn.is_none() {
                        turn = Some(self.inner.stripes.session(id).await);
                    }
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
    }

    pub(crate) async fn close_session(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> Result<CloseOutcome> {
        let _turn = self.inner.stripes.session(id).await;
        let mut attempt = 0;
        loop {
            let found = match self.fetch(Lookup::Id(id)).await {
                Ok(found) => found,
                Err(Error::Unreadable { app, rev, .. }) => {
                    if self.discard(&app, id, &rev).await? {
                        return Ok(CloseOutcome::Discarded);
                    }
                    attempt += 1;
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((keys, before)) = found else {
                return Ok(CloseOutcome::NotFound);
            };
            if !before.session.is_open() {
                return Ok(CloseOutcome::AlreadyClosed(
                    Arc::unwrap_or_clone(before).session,
                ));
            }
            let mut after = before.session.clone();
            after.close(reason, by, now);
            let mut commit = Commit::new(&keys, true, now);
            commit.write(&keys, Some(&before), Some(&after))?;
            match commit.run(&mut self.conn()).await? {
                Committed::Applied(_) => {
                    self.inner.records.remove(&id);
                    return Ok(CloseOutcome::Closed(after));
                }
                Committed::Conflict => {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
    }

    /// Removes the unreadable record of `id` in `app` if it is still at revision `rev`,
    /// with its entries in the app's indexes and its id entry; false when the record
    /// moved meanwhile (read it again). The token entry cannot be named without the
    /// record: it points to nothing now and expires by its TTL.
    async fn discard(&self, app: &str, id: SessionId, rev: &str) -> Result<bool> {
        let keys = self.inner.keys.app(app)?;
        let mut commit = Commit::new(&keys, true, Timestamp::default());
        commit.discard(&keys, id, rev);
        match commit.run(&mut self.conn()).await? {
            Committed::Applied(_) => {
                self.inner.records.remove(&id);
                self.inner.ids.remove(&id);
                self.unindex(&[], &[id]).await;
                tracing::warn!(session = %id, record = %keys.record(id), "unreadable session record removed by a close");
                Ok(true)
            }
            Committed::Conflict => Ok(false),
        }
    }

    /// Stores `session` exactly as given, replacing the session with its id, without
    /// admission (what [`sessiond_core::Store::import`] promises).
    ///
    /// The global entries go first, as for an open (the app among the known apps, the
    /// token, the id), with a TTL counted from the session's creation, so they last its
    /// whole lifetime and retention whenever the import runs. Then the record, through
    /// the `COMMIT` script: checked against the revision of the record it replaces (a
    /// concurrent write makes it read again), moving that revision, and moving the
    /// app's revision whatever changed, so every write and admission in flight on any
    /// node reads again. The index entries follow from the difference between the two
    /// states, as for any write. A session that lived in another app (the id index
    /// named it) is then deleted there, by a revision-checked commit of that app. A
    /// token the replaced session held and the new one does not is unindexed last.
    pub(crate) async fn import_session(&self, session: Session) -> Result<()> {
        let keys = self.inner.keys.app(&session.app)?;
        let id = session.id;
        let _turn = self.inner.stripes.session(id).await;
        self.inner.records.remove(&id);
        // From the index, not the cache: where the session lives before it is rewritten.
        let was: Option<String> = redis::cmd("GET")
            .arg(self.inner.keys.id(id))
            .query_async(&mut self.conn())
            .await?;
        self.index_new(&session, session.created_at).await?;
        let mut stale = Vec::new();
        let mut attempt = 0;
        loop {
            let before = self.read_record(&keys, id).await?;
            let mut commit = Commit::new(&keys, true, Timestamp::default());
            commit.overwrite(&keys, before.as_ref(), Some(&session))?;
            match commit.run(&mut self.conn()).await? {
                Committed::Applied(_) => {
                    stale.extend(before.map(|b| b.session.token_hash));
                    break;
                }
                Committed::Conflict => {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
        let elsewhere = was.filter(|app| *app != *session.app);
        if let Some(old) = elsewhere.and_then(|app| self.inner.keys.app(&app).ok()) {
            while let Some(before) = self.read_record(&old, id).await? {
                let mut commit = Commit::new(&old, true, Timestamp::default());
                commit.overwrite(&old, Some(&before), None)?;
                if let Committed::Applied(_) = commit.run(&mut self.conn()).await? {
                    stale.push(before.session.token_hash);
                    break;
                }
                attempt += 1;
                backoff(attempt).await;
            }
        }
        stale.retain(|h| *h != session.token_hash);
        self.unindex(&stale, &[]).await;
        self.remember(&session);
        Ok(())
    }

    /// Closes the sessions open when it starts (but `except`), in batches; each session
    /// is closed by a revision-checked write, so one closed meanwhile by someone else is
    /// skipped, never closed twice.
    pub(crate) async fn close_all_sessions(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> Result<Vec<Session>> {
        let keys = self.inner.keys.app(app)?;
        let open: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.open())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?;
        let ids: Vec<SessionId> = open
            .iter()
            .filter_map(|id| id.parse().ok())
            .filter(|id| !except.contains(id))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(CLOSE_ALL_BATCH) {
            let mut pending = batch.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                let mut commit = Commit::new(&keys, false, now);
                let mut planned = Vec::new();
                for before in self
                    .read_records(&keys, &pending)
                    .await?
                    .into_iter()
                    .flatten()
                    .filter(|s| {
                        s.session.is_open()
                            && user.is_none_or(|u| s.session.user.as_deref() == Some(u))
                    })
                {
                    let mut after = before.session.clone();
                    after.close(reason, by, now);
                    commit.write(&keys, Some(&before), Some(&after))?;
                    planned.push(after);
                }
                let Committed::Applied(flags) = commit.run(&mut self.conn()).await? else {
                    continue;
                };
                pending.clear();
                for (after, applied) in planned.into_iter().zip(flags) {
                    if applied {
                        out.push(after);
                    } else {
                        pending.push(after.id);
                    }
                }
                if !pending.is_empty() {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
        Ok(out)
    }
}
