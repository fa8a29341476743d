//! Index entries whose record a gather script did not find: a record truly gone (an
//! unreadable one closed by id, whose user's entry could not be named; one deleted by
//! hand), or, on a cluster, one the slot move in progress has already carried to the
//! other primary, which a script cannot see (see the `scripts` module). Each is asked
//! for by its own key, which the cluster client follows to wherever it is now; if any
//! exists the slot is moving and the caller reads again; the others' entries are
//! dropped by `DROP_GHOSTS`, which declares every key it touches.

use std::collections::BTreeMap;

use crate::conn::Conn;
use crate::error::Result;
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

/// Sorts out `missing` (index key and member, as a gather script reported them). The
/// member is used as it is, never parsed: the record key is the one the script built
/// from it (`record prefix + member`), and the entry removed is that member, so an
/// entry in any spelling, or one that is no id at all, is judged like any other.
pub(crate) async fn sort_out(
    conn: &mut Conn,
    keys: &AppKeys,
    missing: &[(String, String)],
) -> Result<Missing> {
    if missing.is_empty() {
        return Ok(Missing::Gone);
    }
    let prefix = keys.record_prefix();
    let exists = missing
        .iter()
        .map(|(_, member)| {
            let mut c = redis::cmd("EXISTS");
            c.arg(format!("{prefix}{member}"));
            c
        })
        .collect();
    let found: Vec<u64> = conn.query_all(exists).await?;
    if found.iter().any(|n| *n > 0) {
        return Ok(Missing::Moving);
    }
    let mut by_index: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (index, member) in missing {
        by_index.entry(index).or_default().push(member);
    }
    for (index, members) in by_index {
        let mut inv = DROP_GHOSTS.prepare_invoke();
        inv.key(keys.rev()).key(index);
        for member in &members {
            inv.key(format!("{prefix}{member}"));
        }
        for member in &members {
            inv.arg(*member);
        }
        let dropped: u64 = inv.invoke_async(conn).await?;
        if dropped > 0 {
            tracing::info!(app = %keys.app(), index, dropped, "dropped index entries of sessions whose record is gone");
        }
    }
    Ok(Missing::Gone)
}
