//! Reading: finding a session by id or token (through the node-local cache, then the
//! global indexes), reading records, listing pages in id order, and counting.

use std::sync::Arc;

use crate::conn::Conn;
use sessiond_core::store::{AppCounts, ListQuery, StatusFilter};
use sessiond_core::{Lookup, Session, SessionId};

use crate::cache::Hint;
use crate::commit::{BadRecord, Stored};
use crate::error::{Error, Result};
use crate::keys::AppKeys;
use crate::RedisStore;

/// Largest number of ids a list reads from each index per round trip.
const LIST_CHUNK_MAX: usize = 500;

/// What becomes of an unreadable record an operation on its own session met.
const NOT_READ: &str = "not read (closing the session by id removes it)";
/// What becomes of an unreadable record an operation over many sessions met.
pub(crate) const SKIPPED: &str = "skipped";

impl RedisStore {
    /// The app and id `lookup` names, from the cache or the global index.
    pub(crate) async fn locate(&self, lookup: Lookup) -> Result<Option<(Arc<str>, SessionId)>> {
        let inner = &self.inner;
        match lookup {
            Lookup::Id(id) => {
                if let Some(app) = inner.ids.get(&id) {
                    return Ok(Some((app, id)));
                }
                let app: Option<String> = redis::cmd("GET")
                    .arg(inner.keys.id(id))
                    .query_async(&mut self.conn())
                    .await?;
                Ok(app.map(|a| {
                    let app: Arc<str> = Arc::from(a);
                    inner.ids.insert(id, app.clone());
                    (app, id)
                }))
            }
            Lookup::Token(h) => {
                if let Some(found) = inner.tokens.get(&h) {
                    return Ok(Some(found));
                }
                let entry: Option<String> = redis::cmd("GET")
                    .arg(inner.keys.token(h))
                    .query_async(&mut self.conn())
                    .await?;
                let Some(entry) = entry else { return Ok(None) };
                let (app, id) = entry
                    .split_once('\n')
                    .and_then(|(a, i)| Some((Arc::<str>::from(a), i.parse().ok()?)))
                    .ok_or_else(|| Error::Corrupt("a token index entry is malformed".into()))?;
                inner.tokens.insert(h, (app.clone(), id));
                inner.ids.insert(id, app.clone());
                Ok(Some((app, id)))
            }
        }
    }

    /// Reads the record of `id` in `keys`' app. One that does not decode is an
    /// [`Error::Unreadable`].
    pub(crate) async fn read_record(
        &self,
        keys: &AppKeys,
        id: SessionId,
    ) -> Result<Option<Stored>> {
        let (rev, json) = self.read_raw(keys, id).await?;
        self.decode_read(keys, id, rev.as_deref(), json.as_deref(), NOT_READ)
            .map_err(|b| b.into_error(keys))
    }

    async fn read_raw(
        &self,
        keys: &AppKeys,
        id: SessionId,
    ) -> Result<(Option<String>, Option<String>)> {
        Ok(redis::cmd("HMGET")
            .arg(keys.record(id))
            .arg("rev")
            .arg("json")
            .query_async(&mut self.conn())
            .await?)
    }

    /// Decodes the fields of the record of `id` as read: none when it is not there. A
    /// record that does not decode is reported as met (`what` says what becomes of it)
    /// and handed back.
    fn decode_read(
        &self,
        keys: &AppKeys,
        id: SessionId,
        rev: Option<&str>,
        json: Option<&str>,
        what: &str,
    ) -> Result<Option<Stored>, BadRecord> {
        if rev.is_none() && json.is_none() {
            return Ok(None);
        }
        Stored::decode_fields(id, rev, json)
            .map(Some)
            .inspect_err(|b| self.report(keys, b, what))
    }

    /// Counts and logs an unreadable record met in `keys`' app; `what` says what
    /// becomes of it.
    pub(crate) fn report(&self, keys: &AppKeys, bad: &BadRecord, what: &str) {
        self.inner
            .unreadable
            .met(bad.id, &keys.record(bad.id), &bad.why, what);
    }

    /// Reads the record of `id` like [`RedisStore::read_record`], and keeps it as the
    /// session's hint with its text. A record equal, revision and text, to the hint
    /// already held is not decoded again.
    async fn read_shared(&self, keys: &AppKeys, id: SessionId) -> Result<Option<Arc<Stored>>> {
        let (rev, json) = self.read_raw(keys, id).await?;
        if let (Some(rev), Some(json)) = (&rev, &json) {
            if let Some(known) = self.inner.records.get(&id) {
                if let Some(same) = known.same_record(rev, json) {
                    // Read again just now: the hint is as fresh as a new one.
                    self.keep_hint(same.clone(), known.json);
                    return Ok(Some(same));
                }
            }
        }
        let stored = match self.decode_read(keys, id, rev.as_deref(), json.as_deref(), NOT_READ) {
            Ok(Some(s)) => Arc::new(s),
            Ok(None) => return Ok(None),
            Err(b) => return Err(b.into_error(keys)),
        };
        self.keep_hint(stored.clone(), json.map(Arc::from));
        Ok(Some(stored))
    }

    /// Reads the records of `ids` in one round trip; missing ones are `None`, and so
    /// are unreadable ones (reported as skipped).
    pub(crate) async fn read_records(
        &self,
        keys: &AppKeys,
        ids: &[SessionId],
    ) -> Result<Vec<Option<Stored>>> {
        let recs: Vec<(&AppKeys, SessionId)> = ids.iter().map(|id| (keys, *id)).collect();
        self.read_keys(&recs).await
    }

    /// Reads the records of `recs` (app keys and id) in one round trip; missing ones
    /// are `None`, and so are unreadable ones (reported as skipped).
    async fn read_keys(&self, recs: &[(&AppKeys, SessionId)]) -> Result<Vec<Option<Stored>>> {
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = recs
            .iter()
            .map(|(keys, id)| {
                let mut c = redis::cmd("HMGET");
                c.arg(keys.record(*id)).arg("rev").arg("json");
                c
            })
            .collect();
        // The records may be of several apps (a list across apps): several slots.
        let rows: Vec<(Option<String>, Option<String>)> = self.conn().query_all(cmds).await?;
        Ok(recs
            .iter()
            .zip(rows)
            .map(|((keys, id), (rev, json))| {
                self.decode_read(keys, *id, rev.as_deref(), json.as_deref(), SKIPPED)
                    .unwrap_or(None)
            })
            .collect())
    }

    /// The session `lookup` names, with its app's keys. A token is accepted only if the
    /// record still holds its hash (the index and cache are hints; the record decides).
    pub(crate) async fn fetch(&self, lookup: Lookup) -> Result<Option<(AppKeys, Arc<Stored>)>> {
        let Some((app, id)) = self.locate(lookup).await? else {
            return Ok(None);
        };
        if let Some(found) = self.fetch_located(lookup, &app, id).await? {
            return Ok(Some(found));
        }
        match self.relocate(lookup, &app).await? {
            Some((app, id)) => self.fetch_located(lookup, &app, id).await,
            None => Ok(None),
        }
    }

    /// Keeps `stored` as the write hint of its session.
    pub(crate) fn hint(&self, stored: Arc<Stored>) {
        self.keep_hint(stored, None);
    }

    fn keep_hint(&self, stored: Arc<Stored>, json: Option<Arc<str>>) {
        let id = stored.session.id;
        match Hint::of(stored, json) {
            Some(h) => self.inner.records.insert(id, h),
            None => self.inner.records.remove(&id),
        }
    }

    /// The record this node read or wrote for `id` within the last second, if it still
    /// answers to `lookup`: a base for a revision-checked write, never for a read.
    pub(crate) fn hinted(&self, lookup: Lookup, id: SessionId) -> Option<Arc<Stored>> {
        let h = self.inner.records.get(&id).filter(Hint::fresh)?;
        match lookup {
            Lookup::Token(t) if h.stored.session.token_hash != t => None,
            _ => Some(h.stored),
        }
    }

    /// After [`RedisStore::fetch_located`] found nothing in `app`: where the global index
    /// puts `lookup` now, if that is another app. A cached place is stale only when an
    /// import moved the session to another app; the miss dropped it from the cache, so
    /// this reads the index (one more round trip, on misses only).
    pub(crate) async fn relocate(
        &self,
        lookup: Lookup,
        app: &str,
    ) -> Result<Option<(Arc<str>, SessionId)>> {
        Ok(self.locate(lookup).await?.filter(|(a, _)| **a != *app))
    }

    /// [`RedisStore::fetch`] once [`RedisStore::locate`] found `lookup` in `app` as `id`.
    /// On a miss the cached place of `lookup` is forgotten: the token's when the record
    /// is gone or holds another token, the id's when the record is gone.
    pub(crate) async fn fetch_located(
        &self,
        lookup: Lookup,
        app: &str,
        id: SessionId,
    ) -> Result<Option<(AppKeys, Arc<Stored>)>> {
        let keys = self.inner.keys.app(app)?;
        let found = self.read_shared(&keys, id).await?;
        if found.is_none() {
            self.inner.ids.remove(&id);
        }
        let found = match (found, lookup) {
            (Some(s), Lookup::Token(h)) if s.session.token_hash != h => None,
            (found, _) => found,
        };
        if found.is_none() {
            self.inner.records.remove(&id);
        }
        if found.is_none() {
            if let Lookup::Token(h) = lookup {
                self.inner.tokens.remove(&h);
            }
        }
        Ok(found.map(|s| (keys, s)))
    }

    /// A page of sessions, as [`sessiond_core::MemoryStore`] pages: ids after the cursor
    /// in id order (or reverse), filtered, at most `limit`.
    pub(crate) async fn list_sessions(&self, q: &ListQuery) -> Result<Vec<Session>> {
        let apps: Vec<String> = match &q.app {
            Some(a) => vec![a.clone()],
            None => {
                redis::cmd("SMEMBERS")
                    .arg(self.inner.keys.apps())
                    .query_async(&mut self.conn())
                    .await?
            }
        };
        let mut streams: Vec<(usize, String)> = Vec::new();
        let mut app_keys: Vec<AppKeys> = Vec::new();
        for app in &apps {
            let Ok(k) = self.inner.keys.app(app) else {
                continue;
            };
            let i = app_keys.len();
            match (q.status, &q.user) {
                (StatusFilter::Open, Some(u)) => streams.push((i, k.user(u))),
                (StatusFilter::Open, None) => streams.push((i, k.open())),
                (StatusFilter::Closed, _) => streams.push((i, k.closed())),
                (StatusFilter::Any, _) => {
                    streams.push((i, k.open()));
                    streams.push((i, k.closed()));
                }
            }
            app_keys.push(k);
        }
        let chunk = q.limit.clamp(16, LIST_CHUNK_MAX);
        let mut cursor = q.after;
        let mut out = Vec::new();
        while out.len() < q.limit && !streams.is_empty() {
            let mut cmds = Vec::with_capacity(streams.len());
            for (_, key) in &streams {
                let mut c;
                if q.newest_first {
                    let from = cursor.map_or_else(|| "+".to_string(), |c| format!("({c}"));
                    c = redis::cmd("ZREVRANGEBYLEX");
                    c.arg(key).arg(from).arg("-");
                } else {
                    let from = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
                    c = redis::cmd("ZRANGEBYLEX");
                    c.arg(key).arg(from).arg("+");
                }
                c.arg("LIMIT").arg(0).arg(chunk);
                cmds.push(c);
            }
            // One stream per app (two for any status): several slots on a cluster.
            let found: Vec<Vec<String>> = self.conn().query_all(cmds).await?;
            let mut candidates: Vec<(SessionId, usize)> = Vec::new();
            for ((app, key), ids) in streams.iter().zip(&found) {
                for id in ids {
                    match id.parse() {
                        Ok(id) => candidates.push((id, *app)),
                        Err(_) => {
                            tracing::warn!(index = %key, entry = %id, "an index entry is not a session id; skipped");
                        }
                    }
                }
            }
            let last_round = candidates.len() < chunk;
            candidates.sort_unstable();
            if q.newest_first {
                candidates.reverse();
            }
            candidates.truncate(chunk);
            let Some(&(last, _)) = candidates.last() else {
                break;
            };
            let recs: Vec<(&AppKeys, SessionId)> = candidates
                .iter()
                .map(|(id, app)| (&app_keys[*app], *id))
                .collect();
            for s in self.read_keys(&recs).await?.into_iter().flatten() {
                if out.len() < q.limit && q.matches(&s.session) {
                    out.push(s.session);
                }
            }
            if last_round {
                break;
            }
            cursor = Some(last);
        }
        Ok(out)
    }

    /// Open sessions and seats taken in `app`, read together.
    pub(crate) async fn app_counts(&self, app: &str) -> Result<AppCounts> {
        let keys = self.inner.keys.app(app)?;
        let (open, seats_used): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("ZCARD")
            .arg(keys.open())
            .cmd("ZCARD")
            .arg(keys.seated())
            .query_async(&mut self.conn())
            .await?;
        Ok(AppCounts { open, seats_used })
    }
}

/// Deletes every key under `prefix` (on every primary of a cluster); returns how many.
pub(crate) async fn delete_prefix(mut conn: Conn, prefix: &str) -> Result<usize> {
    let pattern = format!("{}:*", escape_glob(prefix));
    let mut deleted = 0;
    for key in conn.scan_all(&pattern).await? {
        // One key per DEL: keys of different apps live in different cluster slots.
        let n: usize = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
        deleted += n;
    }
    Ok(deleted)
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
