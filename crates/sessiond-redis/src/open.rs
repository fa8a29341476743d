//! Admission, for an open and for a privilege change: reading what the core's
//! [`Admission::wants`] asks in one `GATHER_OPEN` script (with the app's revision),
//! running the core's [`admission::plan`] over it, and turning its closes into a commit
//! guarded by that revision, so that the admission and its writes are one atomic step:
//! any admission-relevant write on any node in between moves the revision, and the
//! commit is refused and the whole thing runs again.

use std::collections::HashMap;

use crate::conn::Conn;
use sessiond_core::admission::{self, Admission, Gathered, Refusal, Seen, Wants};
use sessiond_core::{Session, SessionId, Timestamp};

use crate::commit::{BadRecord, Commit, Stored};
use crate::error::{Error, Result};
use crate::ghosts::{self, Missing};
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
    /// Run `commit` with the session's own write added; `displaced` are the sessions
    /// it closes, as they will be.
    Admit {
        /// The writes of the closes, guarded by the app's revision.
        commit: Commit,
        /// Sessions closed to admit it (timed out ones first).
        displaced: Vec<Session>,
    },
}

/// Reads the snapshot that `wants` asks for, with `extra_idlest` more idlest seat
/// holders than admission needs (to make up for unreadable ones).
pub(crate) async fn gather(
    conn: &mut Conn,
    keys: &AppKeys,
    adm: &Admission,
    wants: &Wants<'_>,
    now: Timestamp,
    extra_idlest: usize,
) -> Result<Snapshot> {
    let user_key = wants.user.map_or_else(|| keys.open(), |u| keys.user(u));
    let seats = wants.seats.map_or_else(String::new, |n| n.to_string());
    // The script adds one per user session it reads.
    let wanted = wants.idlest(adm, 0, extra_idlest);
    let mut inv = GATHER_OPEN.prepare_invoke();
    inv.key(keys.rev())
        .key(keys.open())
        .key(keys.seated())
        .key(keys.due())
        .key(&user_key)
        .arg(keys.record_prefix())
        .arg(now.as_millis())
        .arg(seats)
        .arg(DUE_PER_OPEN)
        .arg(wanted)
        .arg(wants.take_over.map_or_else(String::new, |t| t.to_string()))
        .arg(if wants.user.is_some() { "1" } else { "0" });
    type Raw = (
        String,
        u64,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    );
    let mut attempt = 0;
    let (rev, seats_used, user, take, due, idlest) = loop {
        let (rev, seats_used, user, take, due, idlest, missing): Raw =
            inv.invoke_async(conn).await?;
        let mut named = Vec::with_capacity(missing.len() / 2);
        for pair in missing.chunks(2) {
            let [index, id] = pair else {
                return Err(Error::Corrupt("GATHER_OPEN answered an odd list".into()));
            };
            let index = match index.as_str() {
                "u" => user_key.clone(),
                "o" => keys.open(),
                "d" => keys.due(),
                _ => keys.seated(),
            };
            named.push((index, id.clone()));
        }
        match ghosts::sort_out(conn, keys, &named).await? {
            Missing::Gone => break (rev, seats_used, user, take, due, idlest),
            // A slot move is carrying the app's keys: what was read is not the app.
            Missing::Moving => {
                attempt += 1;
                crate::backoff(attempt.max(2)).await;
            }
        }
    };
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

/// Admits the session `id` over `snap` with the core's [`plan`] and turns its closes
/// into a commit guarded by the app's revision; the caller adds the session's own
/// write to it.
pub(crate) fn plan(
    keys: &AppKeys,
    adm: &Admission,
    wants: &Wants<'_>,
    id: SessionId,
    now: Timestamp,
    snap: Snapshot,
) -> Result<Plan> {
    let seen = |v: &[Stored]| -> Vec<Seen> {
        v.iter().filter_map(|s| Seen::of(&s.session, now)).collect()
    };
    let got = Gathered {
        seats_used: snap.seats_used,
        due: seen(&snap.due),
        user_sessions: seen(&snap.user),
        take_over: snap
            .take_over
            .as_ref()
            .filter(|s| *s.session.app == *keys.app())
            .and_then(|s| Seen::of(&s.session, now)),
        idlest: seen(&snap.idlest),
    };
    let closes = match admission::plan(adm, wants, id, &got) {
        admission::Plan::Refuse(r) => return Ok(Plan::Refuse(r)),
        admission::Plan::Admit(closes) => closes,
    };
    let mut known: HashMap<SessionId, &Stored> = HashMap::new();
    for s in snap
        .due
        .iter()
        .chain(&snap.user)
        .chain(&snap.take_over)
        .chain(&snap.idlest)
    {
        known.insert(s.session.id, s);
    }
    let mut commit = Commit::new(keys, true, now);
    commit.expect_app_rev(snap.app_rev);
    let mut displaced = Vec::with_capacity(closes.len());
    for close in closes {
        let Some(before) = known.get(&close.id) else {
            continue;
        };
        let mut after = before.session.clone();
        after.close(close.reason, close.by, now);
        commit.write(keys, Some(before), Some(&after))?;
        displaced.push(after);
    }
    Ok(Plan::Admit { commit, displaced })
}
