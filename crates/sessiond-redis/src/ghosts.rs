//! Index entries whose record a gather script did not find: a record truly gone (an
//! unreadable one closed by id, whose user's entry could not be named; one deleted by
//! hand), or, on a cluster, one the slot move in progress has already carried to the
//! other primary, which a script cannot see (see the `scripts` module). Each is asked
//! for by its own key, which the cluster client follows to wherever it is now; if any
//! exists the slot is moving and the caller reads again; the others' entries are
//! dropped by `DROP_GHOSTS`, which declares every key it touches.

use std::collections::BTreeMap;

use sessiond_core::SessionId;

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::keys::AppKeys;
use crate::scripts::DROP_GHOSTS;

/// What the missing records turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// None is anywhere: their entries were dropped; what the script read stands.
    Gone,
    /// At least one exists (its slot is moving): read again.
    Moving,
}

/// Sorts out `missing` (index key and id, as a gather script reported them).
pub(crate) async fn sort_out(
    conn: &mut Conn,
    keys: &AppKeys,
    missing: &[(String, SessionId)],
) -> Result<Missing> {
    if missing.is_empty() {
        return Ok(Missing::Gone);
    }
    let exists = missing
        .iter()
        .map(|(_, id)| {
            let mut c = redis::cmd("EXISTS");
            c.arg(keys.record(*id));
            c
        })
        .collect();
    let found: Vec<u64> = conn.query_all(exists).await?;
    if found.iter().any(|n| *n > 0) {
        return Ok(Missing::Moving);
    }
    let mut by_index: BTreeMap<&str, Vec<SessionId>> = BTreeMap::new();
    for (index, id) in missing {
        by_index.entry(index).or_default().push(*id);
    }
    for (index, ids) in by_index {
        let mut inv = DROP_GHOSTS.prepare_invoke();
        inv.key(keys.rev()).key(index);
        for id in &ids {
            inv.key(keys.record(*id));
        }
        for id in &ids {
            inv.arg(id.to_string());
        }
        let dropped: u64 = inv.invoke_async(conn).await?;
        if dropped > 0 {
            tracing::info!(app = %keys.app(), index, dropped, "dropped index entries of sessions whose record is gone");
        }
    }
    Ok(Missing::Gone)
}

/// Parses a flat list of ids.
pub(crate) fn ids(flat: &[String]) -> Result<Vec<SessionId>> {
    flat.iter()
        .map(|s| {
            s.parse()
                .map_err(|_| Error::Corrupt(format!("an index holds {s:?}, not a session id")))
        })
        .collect()
}
