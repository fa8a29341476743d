//! [`SessionLocks`]: one async lock per session with writes in flight in this process,
//! and the newest copy of that session written under it.
//!
//! Read-modify-write of session storage is a version-conditional update with retry, which
//! is correct on its own across any number of nodes. But requests of one session hitting
//! one node (a page firing parallel XHRs) would mostly lose that race to each other and
//! retry: queueing them here makes them succeed first time, and the cached copy spares
//! each one a re-read. An entry lives only while someone holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sessiond_core::{Session as Record, SessionId};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<Option<Record>>>;

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
    guard: Option<OwnedMutexGuard<Option<Record>>>,
}

impl SessionLock<'_> {
    /// The newer of `mine` and the copy last written under this lock.
    pub fn newest(&self, mine: Record) -> Record {
        match self.guard.as_deref().and_then(|c| c.as_ref()) {
            Some(c) if c.version > mine.version && c.id == mine.id => c.clone(),
            _ => mine,
        }
    }

    /// Records the session as just written.
    pub fn remember(&mut self, s: &Record) {
        if let Some(g) = self.guard.as_deref_mut() {
            *g = Some(s.clone());
        }
    }
}

impl Drop for SessionLock<'_> {
    fn drop(&mut self) {
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
