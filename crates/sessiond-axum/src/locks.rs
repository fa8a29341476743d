//! [`SessionLocks`]: one async lock per session with writes in flight in this process,
//! and the newest copy of that session written under it.
//!
//! Read-modify-write of session storage is a version-conditional update with retry, which
//! is correct on its own across any number of nodes. But requests of one session hitting
//! one node (a page firing parallel XHRs) would mostly lose that race to each other and
//! retry: queueing them here makes them succeed first time, and the cached copy spares
//! each one a re-read. An entry lives only while someone holds or waits for it.
//!
//! The lock is held until the store has put a write in its order, not until the write
//! is durable: a store that makes a change visible before it is durable (the file
//! store) lets the holder go with [`SessionLock::release_ordered`], so the next write of
//! the session is made while the first one's batch is being synced, and the writes of
//! one page share one sync. Such a write leaves no copy to build on, only the mark that
//! the session moved: the next holder reads the store's current state, whose rule
//! (a change that depended on a failed one fails with it) keeps it right, where a
//! remembered copy of a change the disk then refused could outlive its undoing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sessiond_core::{Session as Record, SessionId};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<Held>>;

/// What the holders of a session's lock know of it.
// As `Option<Record>` would be: boxing the copy would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub(crate) enum Held {
    /// Nothing yet: the holder's own copy is the base.
    #[default]
    Unknown,
    /// The session as last written, durably, under this lock.
    Known(Record),
    /// A write under this lock was released before it was durable: the base must be
    /// read from the store again.
    Moved,
}

/// The base a holder computes its write from.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Base {
    /// This copy.
    Copy(Record),
    /// Whatever the store holds now: read it.
    ReadAgain,
}

/// Per-session write locks of one layer.
#[derive(Debug, Default)]
pub(crate) struct SessionLocks {
    map: Mutex<HashMap<SessionId, Slot>>,
}

impl SessionLocks {
    /// Waits for the lock of session `id`.
    pub async fn lock(&self, id: SessionId) -> SessionLock<'_> {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        SessionLock {
            locks: self,
            id,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A held session lock; dropping it releases the lock and forgets the entry when no one
/// else wants it.
pub(crate) struct SessionLock<'a> {
    locks: &'a SessionLocks,
    id: SessionId,
    guard: Option<OwnedMutexGuard<Held>>,
}

impl SessionLock<'_> {
    /// What to build a write on: the newer of `mine` and the copy last written under
    /// this lock, or the store's state when a write under it moved the session on.
    pub fn newest(&self, mine: Record) -> Base {
        match self.guard.as_deref() {
            Some(Held::Known(c)) if c.version > mine.version && c.id == mine.id => {
                Base::Copy(c.clone())
            }
            Some(Held::Moved) => Base::ReadAgain,
            _ => Base::Copy(mine),
        }
    }

    /// Records the session as just written, durably.
    pub fn remember(&mut self, s: &Record) {
        if let Some(g) = self.guard.as_deref_mut() {
            *g = Held::Known(s.clone());
        }
    }

    /// Lets the next writer in once this holder's write is in the store's order, before
    /// it is durable; the next holder reads the session again. Nothing under this lock
    /// after that is remembered.
    pub fn release_ordered(&mut self) {
        if let Some(g) = self.guard.as_deref_mut() {
            *g = Held::Moved;
        }
        self.release();
    }

    fn release(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let slot = OwnedMutexGuard::mutex(&guard).clone();
        drop(guard);
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the map's and `slot`. Anyone waiting holds a third.
        if Arc::strong_count(&slot) == 2 {
            map.remove(&self.id);
        }
    }
}

impl Drop for SessionLock<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_live_only_while_wanted() {
        let locks = SessionLocks::default();
        let id = SessionId::new();
        {
            let _a = locks.lock(id).await;
            assert_eq!(locks.len(), 1);
        }
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time() {
        let locks = Arc::new(SessionLocks::default());
        let id = SessionId::new();
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(id).await;
                assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(locks.len(), 0);
    }
}
