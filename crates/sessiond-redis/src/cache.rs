//! The node-local cache of facts that never change for a session's life: which app and
//! id a token hash belongs to, and which app an id belongs to. With it a resolve costs
//! one round trip (read the record) instead of two (index, then record).
//!
//! Caching these is safe because the record stays the truth: a token found through the
//! cache is accepted only if the record still holds that token's hash, so a rotated or
//! purged token fails at once on every node. The one write that changes a session's app
//! is an import (a migration or restore); a lookup that then misses in the cached app
//! forgets the entry and asks the global index again.
//!
//! Records are kept too, but only as [`Hint`]s for writes, never to answer a read: a
//! request that resolves its cookie and then updates the session finds the record it
//! just read and commits against that record's revision in one round trip. If another
//! node wrote in between, the revision check refuses the commit and the write reads
//! the record as usual. A hint is used for a second at most, which bounds the one case
//! a revision cannot tell apart: a record deleted (purged) and imported again under
//! the same id starts its revisions over.
//!
//! The cache is bounded with two generations: entries go into the young one; when it is
//! full it becomes the old one (dropping the previous old one); a hit in the old one is
//! promoted. Recently used entries survive, memory stays under the bound, and there is
//! no per-entry bookkeeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::commit::Stored;

/// How long a [`Hint`] may be used after it was read or written.
pub(crate) const HINT_TTL: Duration = Duration::from_secs(1);

/// Records with more data than this are not kept as hints.
pub(crate) const HINT_MAX_DATA: usize = 16 * 1024;

/// A session record as this node last read or wrote it, and when.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    pub stored: Arc<Stored>,
    pub at: Instant,
    /// The record's JSON as read from Redis, when the hint came from a read: a later
    /// read that finds the same revision and the same text reuses `stored` rather than
    /// decoding it again.
    pub json: Option<Arc<str>>,
}

impl Hint {
    /// A hint of `stored` (read as `json`, if it was read) as of now, unless its data
    /// is too large to keep.
    pub fn of(stored: Arc<Stored>, json: Option<Arc<str>>) -> Option<Hint> {
        (stored.session.data.as_str().len() <= HINT_MAX_DATA).then(|| Hint {
            stored,
            at: Instant::now(),
            json,
        })
    }

    /// `stored` again if the record read now (`rev`, `json`) is the one this hint holds.
    pub fn same_record(&self, rev: &str, json: &str) -> Option<Arc<Stored>> {
        (self.json.as_deref() == Some(json) && rev.parse() == Ok(self.stored.rev))
            .then(|| self.stored.clone())
    }

    /// Whether it is young enough to be used.
    pub fn fresh(&self) -> bool {
        self.at.elapsed() <= HINT_TTL
    }
}

/// A bounded map of at most `capacity` entries (0 disables it).
#[derive(Debug)]
pub(crate) struct Cache<K, V> {
    half: usize,
    gens: Mutex<Generations<K, V>>,
}

#[derive(Debug)]
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    /// A cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Cache {
            half: capacity / 2,
            gens: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations<K, V>> {
        self.gens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key`, if cached.
    pub fn get(&self, key: &K) -> Option<V> {
        if self.half == 0 {
            return None;
        }
        let mut g = self.lock();
        if let Some(v) = g.young.get(key) {
            return Some(v.clone());
        }
        let (k, v) = g.old.remove_entry(key)?;
        let out = v.clone();
        Self::put(&mut g, self.half, k, v);
        Some(out)
    }

    /// Remembers `key` → `value`.
    pub fn insert(&self, key: K, value: V) {
        if self.half == 0 {
            return;
        }
        let mut g = self.lock();
        Self::put(&mut g, self.half, key, value);
    }

    fn put(g: &mut Generations<K, V>, half: usize, key: K, value: V) {
        if g.young.len() >= half && !g.young.contains_key(&key) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, value);
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        if self.half == 0 {
            return;
        }
        let mut g = self.lock();
        g.young.remove(key);
        g.old.remove(key);
    }

    /// Number of entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_hint_is_reused_only_for_the_same_revision_and_text() {
        let json = r#"{"id":"0190f5c8-9a4e-7000-8000-000000000001","token_hash":"0123456789abcdef0123456789abcdef","app":"shop","privileges":[],"info":{},"data":{"n":1},"client":{},"created_at":1,"last_activity_at":1,"last_heartbeat_at":1,"idle_timeout_s":60,"lifetime_s":3600,"retention_s":0,"counts_seat":false,"bind_ip":false,"version":1}"#;
        let id = "0190f5c8-9a4e-7000-8000-000000000001".parse().unwrap();
        let stored = Arc::new(Stored::decode_fields(id, Some("3"), Some(json)).unwrap());
        let read = Hint::of(stored.clone(), Some(Arc::from(json))).unwrap();
        let same = read
            .same_record("3", json)
            .expect("same revision, same text");
        assert!(Arc::ptr_eq(&same, &stored), "not decoded again");
        assert!(read.same_record("4", json).is_none(), "another revision");
        assert!(read
            .same_record("3", &json.replace("\"n\":1", "\"n\":2"))
            .is_none());
        assert!(read.same_record("x", json).is_none());
        let written = Hint::of(stored, None).unwrap();
        assert!(
            written.same_record("3", json).is_none(),
            "no text to compare"
        );
    }

    #[test]
    fn stays_bounded_and_keeps_what_is_used() {
        let c = Cache::new(10);
        for i in 0..100 {
            c.insert(i, i * 2);
            // Key 0 is used all the time: it must survive the churn.
            assert_eq!(c.get(&0), Some(0));
            assert!(c.len() <= 10);
        }
        assert_eq!(c.get(&99), Some(198));
        assert_eq!(c.get(&1), None, "old unused entries are dropped");
        c.remove(&0);
        assert_eq!(c.get(&0), None);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = Cache::new(0);
        c.insert(1, 1);
        assert_eq!(c.get(&1), None);
    }
}
