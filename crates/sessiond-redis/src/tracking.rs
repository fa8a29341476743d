//! Keeping a node's [`ReadCache`] current on Redis: server-assisted invalidation.
//!
//! One connection per store speaks RESP3 and asks the server to report every write
//! to a key under the store's prefix (`CLIENT TRACKING ON BCAST PREFIX <prefix>:`):
//! whoever writes, this node or another, the server pushes the key's name on this
//! connection once the write is made. A pushed session record key
//! (`<prefix>:{<app>}:s:<id>`) makes the node forget its copy of that session; a push
//! without keys (the database was flushed) makes it forget every copy; other keys
//! (indexes, counters) change no copy and are ignored.
//!
//! The connection is named `sessiond-read-cache:<prefix>` (`CLIENT LIST` shows it). When it is
//! lost (the client library reports the disconnection, or a ping every few seconds
//! fails), the node empties its copies at once and reads from the store until the
//! connection is made again and tracking is on again. Redis Cluster is not supported:
//! tracking would have to be asked of every primary, and a slot moving between them
//! would move its keys' reports too.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use sessiond_core::backend::ReadCache;
use sessiond_core::SessionId;
use tokio::sync::mpsc;

/// How often the tracking connection is checked with a ping.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First and longest pause between two attempts to connect again.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// The tracking connection's name, for `CLIENT LIST` (then `CLIENT KILL ID`): this,
/// then `:` and the store's prefix (any character Redis refuses in a name, outside
/// `!` to `~`, replaced by `_`).
pub const CLIENT_NAME: &str = "sessiond-read-cache";

/// Starts the task that keeps `cache` current (it ends once the cache is gone).
pub(crate) fn start(
    client: &redis::Client,
    prefix: &str,
    cache: &Arc<ReadCache>,
    timeout: Duration,
) {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    tokio::spawn(track(
        info,
        prefix.to_string(),
        Arc::downgrade(cache),
        timeout,
    ));
}

/// Tracks while the cache lives, connecting again after a loss.
async fn track(
    info: redis::ConnectionInfo,
    prefix: String,
    cache: Weak<ReadCache>,
    timeout: Duration,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        match track_once(&info, &prefix, &cache, timeout, &mut pause).await {
            Ok(()) => return,
            Err(e) => {
                if let Some(c) = cache.upgrade() {
                    c.listening(false);
                }
                tracing::warn!(error = %e, "the read cache's tracking connection is lost: reads go to the store");
            }
        }
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// The session ids of the record keys in an invalidation's data; `None` when it names
/// no key (a flush: everything changed).
fn record_ids(prefix: &str, data: &[Value]) -> Option<Vec<SessionId>> {
    let keys = match data.first() {
        Some(Value::Array(keys)) => keys,
        _ => return None,
    };
    let ids = keys
        .iter()
        .filter_map(|k| match k {
            Value::BulkString(b) => std::str::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s.as_str()),
            _ => None,
        })
        .filter(|k| k.starts_with(prefix))
        .filter_map(|k| k.rsplit_once(":s:"))
        .filter_map(|(_, id)| id.parse().ok())
        .collect();
    Some(ids)
}

/// One tracking connection, from connect to loss (an error) or to the cache being gone
/// (`Ok`).
async fn track_once(
    info: &redis::ConnectionInfo,
    prefix: &str,
    cache: &Weak<ReadCache>,
    timeout: Duration,
    pause: &mut Duration,
) -> redis::RedisResult<()> {
    let (lost_tx, mut lost) = mpsc::unbounded_channel::<()>();
    let (weak, ours) = (cache.clone(), format!("{prefix}:"));
    let pushed = move |push: PushInfo| -> Result<(), ()> {
        let Some(cache) = weak.upgrade() else {
            return Ok(());
        };
        match push.kind {
            PushKind::Invalidate => match record_ids(&ours, &push.data) {
                Some(ids) if ids.is_empty() => {}
                Some(ids) => cache.forget(&ids),
                None => cache.forget_all(),
            },
            PushKind::Disconnection => {
                // At once, before the task notices: no copy is used past this point.
                cache.listening(false);
                let _ = lost_tx.send(());
            }
            _ => {}
        }
        Ok(())
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(pushed);
    let client = redis::Client::open(info.clone())?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let name: String = format!("{CLIENT_NAME}:{prefix}")
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .exec_async(&mut conn)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(format!("{prefix}:"))
        .exec_async(&mut conn)
        .await?;
    match cache.upgrade() {
        Some(c) => c.listening(true),
        None => return Ok(()),
    }
    *pause = FIRST_PAUSE;
    loop {
        tokio::select! {
            _ = lost.recv() => {
                return Err(redis::RedisError::from((redis::ErrorKind::Io, "disconnected")));
            }
            _ = tokio::time::sleep(PING_EVERY) => {
                if cache.strong_count() == 0 {
                    return Ok(());
                }
                // A half-open connection shows up here rather than never.
                let _: Value = conn.req_packed_command(&redis::cmd("PING")).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_name_their_sessions_and_others_are_ignored() {
        let id = SessionId::new();
        let key = |k: String| Value::BulkString(k.into_bytes());
        let data = vec![Value::Array(vec![
            key(format!("sessiond:{{shop}}:s:{id}")),
            key("sessiond:{shop}:seats".into()),
            key(format!("other:{{shop}}:s:{id}")),
            key(format!("sessiond:t:{id}")),
        ])];
        assert_eq!(record_ids("sessiond:", &data), Some(vec![id]));
        // A flush names no key: everything changed.
        assert_eq!(record_ids("sessiond:", &[Value::Nil]), None);
    }
}
