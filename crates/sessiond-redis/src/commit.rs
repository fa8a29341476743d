//! Writing: how a session's new state becomes one group of a [`Commit`] (the record, its
//! expected revision, and the index entries that change), and how a commit runs through
//! the `COMMIT` script.
//!
//! The index entries of a session follow from its state alone ([`memberships`]), so a
//! write is the difference between the entries of the state before and after. That
//! keeps the indexes right for every change without a case per operation.

use std::collections::HashMap;

use crate::conn::Conn;
use sessiond_core::{Session, SessionId, Timestamp};

use crate::error::{Error, Result};
use crate::keys::AppKeys;
use crate::scripts::{COMMIT, PUT};
use crate::unreadable::describe;

/// A session as read from Redis, with the revision of its record.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Write counter of the record (starts at 1, +1 on every write).
    pub rev: u64,
    /// The session.
    pub session: Session,
}

impl Stored {
    /// Decodes the `rev` and `json` fields of the record of `id` as read (either may
    /// be missing), or says what is wrong with them.
    pub fn decode_fields(
        id: SessionId,
        rev: Option<&str>,
        json: Option<&str>,
    ) -> Result<Stored, BadRecord> {
        let bad = |why: String| BadRecord {
            id,
            rev: rev.filter(|r| !r.is_empty()).unwrap_or("0").to_string(),
            why,
        };
        let rev_num = match rev.map(str::parse::<u64>) {
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(bad("its revision is not a number".into())),
            None => return Err(bad("it has no revision".into())),
        };
        let Some(json) = json else {
            return Err(bad("it has no JSON".into()));
        };
        match serde_json::from_str::<Session>(json) {
            Ok(session) if session.id == id => Ok(Stored {
                rev: rev_num,
                session,
            }),
            Ok(session) => Err(bad(format!("it holds session {}", session.id))),
            Err(e) => Err(bad(describe(&e))),
        }
    }

    /// Decodes a flat `id, rev, json, id, rev, json, ...` list from a script (a missing
    /// field is empty), setting aside the records that do not decode.
    pub fn decode_triples(flat: &[String]) -> Result<(Vec<Stored>, Vec<BadRecord>)> {
        let mut good = Vec::with_capacity(flat.len() / 3);
        let mut bad = Vec::new();
        for t in flat.chunks_exact(3) {
            let id: SessionId = t[0].parse().map_err(|_| {
                Error::Corrupt(format!("an index holds {:?}, not a session id", t[0]))
            })?;
            let field = |f: &str| Some(f.to_string()).filter(|f| !f.is_empty());
            match Stored::decode_fields(id, field(&t[1]).as_deref(), field(&t[2]).as_deref()) {
                Ok(s) => good.push(s),
                Err(b) => bad.push(b),
            }
        }
        Ok((good, bad))
    }
}

/// A session record that is there but cannot be decoded.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    /// The session it belongs to (from its key).
    pub id: SessionId,
    /// Its `rev` field as stored (`0` when missing, as the scripts read a missing one).
    pub rev: String,
    /// What is wrong with it, without its content.
    pub why: String,
}

impl BadRecord {
    /// The error that reports it, for operations on this one session.
    pub fn into_error(self, keys: &AppKeys) -> Error {
        Error::Unreadable {
            app: keys.app().to_string(),
            id: self.id,
            rev: self.rev,
            why: self.why,
        }
    }
}

/// The index entries (key, score) a session in this state has. The member is its id.
pub(crate) fn memberships(keys: &AppKeys, s: &Session) -> Vec<(String, u64)> {
    let deadline = s.deadline().as_millis();
    if !s.is_open() {
        return vec![(keys.closed(), 0), (keys.purge(), deadline)];
    }
    let mut m = vec![(keys.open(), 0), (keys.due(), deadline)];
    if s.counts_seat {
        m.push((keys.seated(), s.last_activity_at.as_millis()));
    }
    if let Some(u) = &s.user {
        m.push((keys.user(u), 0));
    }
    m
}

/// Everything [`memberships`] depends on besides the app's keys: sessions with the
/// same view are in the same indexes with the same scores.
fn membership_view(s: &Session) -> (bool, u64, Option<u64>, Option<&str>) {
    let open = s.is_open();
    (
        open,
        s.deadline().as_millis(),
        (open && s.counts_seat).then(|| s.last_activity_at.as_millis()),
        s.user.as_deref().filter(|_| open),
    )
}

/// What admission sees of a session: whether it is open, takes a seat, and whose it is.
/// A write that changes it must move the app's revision.
fn admission_view(s: Option<&Session>) -> Option<(bool, Option<&str>)> {
    s.filter(|s| s.is_open())
        .map(|s| (s.counts_seat, s.user.as_deref()))
}

/// The answer of the `COMMIT` script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Committed {
    /// The app's revision or (in all-or-nothing mode) a record's revision moved:
    /// nothing was written.
    Conflict,
    /// Per group, whether it was written.
    Applied(Vec<bool>),
}

/// A batch of session writes for one app, applied by one script run.
#[derive(Debug)]
pub(crate) struct Commit {
    keys: Vec<String>,
    positions: HashMap<String, usize>,
    expect_app_rev: Option<u64>,
    all_or_nothing: bool,
    groups: Vec<String>,
    count: usize,
    /// When the writes happen: the time of the webhook events they owe.
    now: Timestamp,
}

impl Commit {
    /// An empty batch; `all_or_nothing` refuses it whole if any record moved, else stale
    /// groups are skipped and reported.
    ///
    /// `now` is when the writes happen: each write of a session owes its app's hooks
    /// the deliveries [`sessiond_core::hooks::HookRoutes::derive`] says, written by the
    /// same group (so only if the record's revision checks).
    pub fn new(keys: &AppKeys, all_or_nothing: bool, now: Timestamp) -> Commit {
        Commit {
            keys: vec![keys.rev()],
            positions: HashMap::new(),
            expect_app_rev: None,
            all_or_nothing,
            groups: Vec::new(),
            count: 0,
            now,
        }
    }

    /// Applies nothing unless the app's revision is still `rev`.
    pub fn expect_app_rev(&mut self, rev: u64) {
        self.expect_app_rev = Some(rev);
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn position(&mut self, key: String) -> usize {
        if let Some(p) = self.positions.get(&key) {
            return *p;
        }
        self.keys.push(key.clone());
        let p = self.keys.len();
        self.positions.insert(key, p);
        p
    }

    /// Adds a write of one session: `before` as read (none for a new session), `after`
    /// its new state (none to delete it). Applied only if the record is still at
    /// `before`'s revision.
    pub fn write(
        &mut self,
        keys: &AppKeys,
        before: Option<&Stored>,
        after: Option<&Session>,
    ) -> Result<()> {
        self.group(keys, before, after, false)
    }

    /// Adds the removal of the record of `id`, which could not be decoded, if it is
    /// still at revision `rev` (as stored), with the id's entries in every index of the
    /// app that a session's state can name (open, closed, seated, due, purge). The
    /// user's index cannot be named without the record: the admission script drops
    /// such entries when it meets them. Moves the app's revision (a seat may be freed).
    pub fn discard(&mut self, keys: &AppKeys, id: SessionId, rev: &str) {
        let rec = self.position(keys.record(id));
        let member = id.to_string();
        let mut g = vec![
            rec.to_string(),
            rev.to_string(),
            "1".to_string(),
            "del".to_string(),
        ];
        let indexes = [
            keys.open(),
            keys.closed(),
            keys.seated(),
            keys.due(),
            keys.purge(),
        ];
        g.push(indexes.len().to_string());
        for key in indexes {
            let p = self.position(key);
            g.extend(["zr".into(), p.to_string(), member.clone()]);
        }
        self.groups.extend(g);
        self.count += 1;
    }

    /// Adds a write like [`Commit::write`] that also moves the app's revision whatever
    /// it changes: for states that did not come from the core's logic (imports), so
    /// that every admission in flight reads the app again.
    pub fn overwrite(
        &mut self,
        keys: &AppKeys,
        before: Option<&Stored>,
        after: Option<&Session>,
    ) -> Result<()> {
        self.group(keys, before, after, true)
    }

    fn group(
        &mut self,
        keys: &AppKeys,
        before: Option<&Stored>,
        after: Option<&Session>,
        force_bump: bool,
    ) -> Result<()> {
        let Some(id) = after.or(before.map(|b| &b.session)).map(|s| s.id) else {
            return Ok(());
        };
        let rec = self.position(keys.record(id));
        let member = id.to_string();
        // The usual storage write moves no index entry: skip building both lists.
        let unmoved = matches!((before, after), (Some(b), Some(a))
            if membership_view(&b.session) == membership_view(a));
        let (old, new) = if unmoved {
            (Vec::new(), Vec::new())
        } else {
            (
                before.map_or_else(Vec::new, |b| memberships(keys, &b.session)),
                after.map_or_else(Vec::new, |s| memberships(keys, s)),
            )
        };
        let bump =
            force_bump || admission_view(before.map(|b| &b.session)) != admission_view(after);
        let mut g = vec![
            rec.to_string(),
            before.map_or(0, |b| b.rev).to_string(),
            if bump { "1" } else { "0" }.to_string(),
        ];
        match after {
            Some(s) => {
                g.push("put".into());
                g.push(s.to_json());
            }
            None => g.push("del".into()),
        }
        let mut ops = Vec::new();
        let mut nops = 0;
        for (key, _) in old.iter().filter(|(k, _)| !new.iter().any(|(n, _)| n == k)) {
            let p = self.position(key.clone());
            ops.extend(["zr".into(), p.to_string(), member.clone()]);
            nops += 1;
        }
        for (key, score) in new.iter().filter(|m| !old.contains(m)) {
            let p = self.position(key.clone());
            ops.extend([
                "za".into(),
                p.to_string(),
                score.to_string(),
                member.clone(),
            ]);
            nops += 1;
        }
        // An import (`force_bump`) copies a state as it was: it owes no event.
        if let (false, Some(a)) = (force_bump, after) {
            let owed = keys
                .routes()
                .derive(before.map(|b| &b.session), a, self.now);
            if !owed.is_empty() {
                let (hooks, due) = (self.position(keys.hooks()), self.position(keys.hooks_due()));
                for d in owed {
                    let id = d.id.to_string();
                    let json = serde_json::to_string(&d).expect("plain data serialises");
                    ops.extend(["hs".into(), hooks.to_string(), id.clone(), json]);
                    ops.extend([
                        "za".into(),
                        due.to_string(),
                        d.due.as_millis().to_string(),
                        id,
                    ]);
                    nops += 2;
                }
            }
        }
        g.push(nops.to_string());
        g.extend(ops);
        self.groups.extend(g);
        self.count += 1;
        Ok(())
    }

    /// The record key, expected revision and JSON when the batch is one record rewritten
    /// with nothing else to do (no index op, no app revision to check or bump): what
    /// the `PUT` script does alone.
    fn single_put(&self) -> Option<(&str, &str, &str)> {
        match (self.expect_app_rev, self.count, self.groups.as_slice()) {
            (None, 1, [rec, expect, bump, action, json, nops])
                if bump == "0" && action == "put" && nops == "0" =>
            {
                let at: usize = rec.parse().ok()?;
                Some((self.keys.get(at.checked_sub(1)?)?, expect, json))
            }
            _ => None,
        }
    }

    /// Runs the batch.
    pub async fn run(&self, conn: &mut Conn) -> Result<Committed> {
        if self.is_empty() {
            return Ok(Committed::Applied(Vec::new()));
        }
        let mode = if self.all_or_nothing { "all" } else { "each" };
        let mut inv;
        if let Some((record, expect, json)) = self.single_put() {
            inv = PUT.prepare_invoke();
            inv.key(&self.keys[0])
                .key(record)
                .arg(expect)
                .arg(json)
                .arg(mode);
        } else {
            inv = COMMIT.prepare_invoke();
            for k in &self.keys {
                inv.key(k);
            }
            inv.arg(
                self.expect_app_rev
                    .map_or_else(String::new, |r| r.to_string()),
            );
            inv.arg(mode);
            for a in &self.groups {
                inv.arg(a);
            }
        }
        let answer = crate::outcome::commit(
            async { Ok(inv.invoke_async::<Vec<i64>>(conn).await?) },
            |out| matches!(out.first(), Some(1)),
        )
        .await?;
        match answer.split_first() {
            Some((1, flags)) if flags.len() == self.count => {
                Ok(Committed::Applied(flags.iter().map(|f| *f == 1).collect()))
            }
            Some((0, _)) => Ok(Committed::Conflict),
            _ => Err(Error::Corrupt(format!(
                "unexpected answer from the commit script: {answer:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keys;
    use sessiond_core::{Actor, CloseReason};

    fn session() -> Session {
        serde_json::from_value(serde_json::json!({
            "id": sessiond_core::SessionId::new(),
            "token_hash": "0123456789abcdef0123456789abcdef",
            "app": "shop",
            "user": "ann",
            "created_at": 1000,
            "last_activity_at": 1000,
            "last_heartbeat_at": 1000,
            "idle_timeout_s": 60,
            "lifetime_s": 3600,
            "retention_s": 10,
            "counts_seat": true,
            "version": 1
        }))
        .unwrap()
    }

    fn shop_keys() -> AppKeys {
        Keys::new("p").unwrap().app("shop").unwrap()
    }

    /// The app's keys and a record of [`session`] at revision `rev`.
    fn stored(rev: u64) -> (AppKeys, Stored) {
        (
            shop_keys(),
            Stored {
                rev,
                session: session(),
            },
        )
    }

    #[test]
    fn a_touch_moves_scores_without_bumping_the_app() {
        let (keys, before) = stored(3);
        let mut after = before.session.clone();
        after.last_activity_at = Timestamp(2000);
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.write(&keys, Some(&before), Some(&after)).unwrap();
        // rec position, expected rev, no bump, put, json, 2 ops (due and seated).
        assert_eq!(&c.groups[..4], &["2", "3", "0", "put"]);
        assert_eq!(c.groups[5], "2");
        assert!(c.groups[6..].iter().all(|a| a != "zr"));
    }

    #[test]
    fn only_a_plain_rewrite_of_one_record_takes_the_put_script() {
        let (keys, before) = stored(3);
        let mut after = before.session.clone();
        after.version += 1;
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.write(&keys, Some(&before), Some(&after)).unwrap();
        let (record, expect, json) = c.single_put().expect("a storage write");
        assert_eq!((record, expect), (keys.record(after.id).as_str(), "3"));
        assert!(json.contains("\"version\":2"));

        // Scores to move, an app revision to bump or check, two records: COMMIT.
        let mut touched = after.clone();
        touched.last_activity_at = Timestamp(2000);
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.write(&keys, Some(&before), Some(&touched)).unwrap();
        assert!(c.single_put().is_none());
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.overwrite(&keys, Some(&before), Some(&after)).unwrap();
        assert!(c.single_put().is_none());
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.expect_app_rev(7);
        c.write(&keys, Some(&before), Some(&after)).unwrap();
        assert!(c.single_put().is_none());
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.write(&keys, Some(&before), Some(&after)).unwrap();
        let other = session();
        c.write(&keys, None, Some(&other)).unwrap();
        assert!(c.single_put().is_none());
    }

    #[test]
    fn sessions_with_the_same_membership_view_have_the_same_memberships() {
        let keys = shop_keys();
        let base = session();
        let variants: Vec<Session> = vec![
            base.clone(),
            Session {
                version: 9,
                ..base.clone()
            },
            Session {
                last_activity_at: Timestamp(2000),
                ..base.clone()
            },
            Session {
                last_heartbeat_at: Timestamp(2000),
                ..base.clone()
            },
            Session {
                counts_seat: false,
                ..base.clone()
            },
            Session {
                counts_seat: false,
                last_activity_at: Timestamp(2000),
                ..base.clone()
            },
            Session {
                user: None,
                ..base.clone()
            },
            Session {
                user: Some("bob".into()),
                ..base.clone()
            },
            Session {
                idle_timeout_s: 120,
                ..base.clone()
            },
            {
                let mut c = base.clone();
                c.close(CloseReason::Killed, Actor::Admin, Timestamp(5000));
                c
            },
            {
                let mut c = base.clone();
                c.user = None;
                c.close(CloseReason::Killed, Actor::Admin, Timestamp(5000));
                c
            },
        ];
        for a in &variants {
            for b in &variants {
                if membership_view(a) == membership_view(b) {
                    assert_eq!(memberships(&keys, a), memberships(&keys, b));
                }
            }
        }
        assert_ne!(membership_view(&variants[0]), membership_view(&variants[2]));
        assert_eq!(membership_view(&variants[0]), membership_view(&variants[1]));
    }

    #[test]
    fn a_close_moves_the_session_between_indexes_and_bumps() {
        let (keys, before) = stored(1);
        let mut after = before.session.clone();
        after.close(CloseReason::Killed, Actor::Admin, Timestamp(5000));
        let mut c = Commit::new(&keys, false, Timestamp(0));
        c.write(&keys, Some(&before), Some(&after)).unwrap();
        assert_eq!(&c.groups[1..4], &["1", "1", "put"]);
        let zr = c.groups.iter().filter(|a| *a == "zr").count();
        let za = c.groups.iter().filter(|a| *a == "za").count();
        // Out of open, due, seated, user; into closed, purge.
        assert_eq!((zr, za), (4, 2));
        // A purge deletes the record and its last entries.
        let mut d = Commit::new(&keys, false, Timestamp(0));
        let closed = Stored {
            rev: 2,
            session: after,
        };
        d.write(&keys, Some(&closed), None).unwrap();
        assert_eq!(&d.groups[1..5], &["2", "0", "del", "2"]);
    }

    #[test]
    fn an_overwrite_bumps_the_app_even_when_nobody_moves() {
        let (keys, before) = stored(4);
        let mut after = before.session.clone();
        after.version += 1;
        let mut c = Commit::new(&keys, true, Timestamp(0));
        c.overwrite(&keys, Some(&before), Some(&after)).unwrap();
        assert_eq!(&c.groups[..4], &["2", "4", "1", "put"]);
        // A new record: expected to be absent.
        let mut n = Commit::new(&keys, true, Timestamp(0));
        n.overwrite(&keys, None, Some(&after)).unwrap();
        assert_eq!(&n.groups[1..4], &["0", "1", "put"]);
    }
}
