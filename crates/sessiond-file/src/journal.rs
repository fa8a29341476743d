//! The write-ahead journal: frames appended by the [`sessiond_core::memory::Journal`]
//! hook while the memory store holds the changed session's lock, written and made
//! durable by one writer thread in batches (group commit).
//!
//! Each appended frame takes a sequence number; the writer publishes the highest number
//! made durable, and an operation waits for its number before it is acknowledged. Many
//! concurrent operations share one sync, which is where the throughput comes from. A
//! sync wakes only the operations it made durable: those whose frames wait for the
//! next sync sleep on (a broadcast would wake them for nothing, once per sync).
//!
//! How a batch reaches the disk (preallocated zeros, direct synchronous writes of
//! whole blocks, or the page cache and `fdatasync`) is [`crate::journal_file`]'s part.
//!
//! The writer never waits for more frames to join a batch: whatever arrived while a
//! batch was being written goes into the next one at once. Waiting (up to the time of
//! one sync) did halve the syncs per write, but it left the CPU idle whenever every
//! client was waiting for durability, and measured 15 to 25 % fewer durable writes per
//! second on a two-core machine (docs/BENCHMARKS.md).
//!
//! When the journal outgrows its threshold the writer rotates to a new journal and a
//! background thread writes a snapshot of the store; once the snapshot is durable, the
//! older files are deleted (see [`crate::files`] for why a fuzzy snapshot is correct).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;

use sessiond_core::memory::Journal;
use sessiond_core::{MemoryStore, Session, SessionId, StoreError};

use crate::files;
use crate::frame;
use crate::journal_file::JournalFile;

/// Frames waiting for the writer.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Sequence number of the last frame appended.
    seq: u64,
    shutdown: bool,
    /// The writer sleeps on `wake` (it must be woken; otherwise it finds the frames
    /// itself when its sync returns, and a wake-up would be a wasted system call).
    idle: bool,
}

/// State shared by the hook, the writer thread and the store.
pub(crate) struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The highest sequence number made durable.
    durable: AtomicU64,
    /// Operations waiting for a sequence number to be durable, with their wakers.
    waiting: Mutex<Vec<(u64, Waker)>>,
    /// Set once the writer thread has ended (every waiter is then woken).
    stopped: AtomicBool,
    /// Why the journal cannot be written, once it cannot (read on every operation:
    /// a lock-free load).
    failed: OnceLock<String>,
    compacting: AtomicBool,
    /// The store, set once built (the store holds the hook, the hook needs the store
    /// for snapshots).
    pub(crate) store: OnceLock<MemoryStore>,
    dir: PathBuf,
    sync: bool,
    compact_after: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The last sequence number handed out.
    pub(crate) fn last_seq(&self) -> u64 {
        lock(&self.pending).seq
    }

    /// Waits until every frame up to `seq` is durable, or the journal failed.
    pub(crate) async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        std::future::poll_fn(|cx| {
            if let Some(done) = self.settled(seq) {
                return Poll::Ready(done);
            }
            let mut waiting = lock(&self.waiting);
            // Again under the lock: the writer publishes before it takes the lock to
            // wake, so a number published now is seen here or wakes this entry.
            if let Some(done) = self.settled(seq) {
                return Poll::Ready(done);
            }
            waiting.push((seq, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Whether waiting for `seq` is over, and how it ended.
    fn settled(&self, seq: u64) -> Option<Result<(), StoreError>> {
        if let Err(e) = self.check() {
            return Some(Err(e));
        }
        if self.durable.load(Ordering::Acquire) >= seq {
            return Some(Ok(()));
        }
        if self.stopped.load(Ordering::Acquire) {
            return Some(Err(StoreError::Unavailable(
                "the journal writer stopped".into(),
            )));
        }
        None
    }

    /// Publishes `seq` as durable and wakes the operations waiting for it or less.
    fn publish(&self, seq: u64) {
        self.durable.store(seq, Ordering::Release);
        let mut ready = Vec::new();
        lock(&self.waiting).retain(|(s, w)| {
            let done = *s <= seq;
            if done {
                ready.push(w.clone());
            }
            !done
        });
        ready.into_iter().for_each(Waker::wake);
    }

    /// Wakes every waiter (the journal failed or the writer ended).
    fn wake_all(&self) {
        let all = std::mem::take(&mut *lock(&self.waiting));
        all.into_iter().for_each(|(_, w)| w.wake());
    }

    /// Fails every operation from now on (the disk refused a write).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(e) => Err(StoreError::Unavailable(format!(
                "the journal cannot be written: {e}"
            ))),
            None => Ok(()),
        }
    }

    fn append(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut p = lock(&self.pending);
        f(&mut p.buf);
        p.seq += 1;
        let seq = p.seq;
        // Only the first frame for a sleeping writer wakes it: until the writer runs
        // again, later frames find it already woken.
        let idle = std::mem::take(&mut p.idle);
        drop(p);
        LAST_APPENDED.with(|l| l.set(l.get().max(seq)));
        if idle {
            self.wake.notify_one();
        }
    }
}

thread_local! {
    /// The highest sequence number this thread appended since [`take_appended`]. The
    /// memory store's operations never yield, so an operation's frames are all appended
    /// on the thread that polled it: the store waits for its own frames only, not for
    /// later writers' (which would cost an extra group-commit cycle under load).
    static LAST_APPENDED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Returns and clears this thread's highest appended sequence number (0: none).
pub(crate) fn take_appended() -> u64 {
    LAST_APPENDED.with(|l| l.replace(0))
}

/// The hook the memory store reports changes to.
pub(crate) struct Hook(pub(crate) Arc<Shared>);

impl Journal for Hook {
    fn put(&self, session: &Session) {
        self.0.append(|buf| frame::encode_put(buf, session));
    }

    fn remove(&self, id: SessionId) {
        self.0.append(|buf| frame::encode_remove(buf, id));
    }
}

/// The writer thread's handle; stopping it drains what is pending first.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer on `file` (journal number `epoch`, `size` bytes long).
    pub(crate) fn start(
        dir: PathBuf,
        file: File,
        epoch: u64,
        size: u64,
        sync: bool,
        compact_after: u64,
        durable_seq: u64,
    ) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                seq: durable_seq,
                ..Default::default()
            }),
            wake: Condvar::new(),
            durable: AtomicU64::new(durable_seq),
            waiting: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            failed: OnceLock::new(),
            compacting: AtomicBool::new(false),
            store: OnceLock::new(),
            dir,
            sync,
            compact_after,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sessiond-journal".into())
            .spawn(move || {
                write_loop(&s, file, epoch, size);
                s.stopped.store(true, Ordering::Release);
                s.wake_all();
            })?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        lock(&self.shared.pending).shutdown = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(shared: &Arc<Shared>, file: File, mut epoch: u64, size: u64) {
    let path = files::journal_path(&shared.dir, epoch);
    let mut journal = JournalFile::open(file, &path, size, shared.sync);
    tracing::debug!(
        direct = journal.is_direct(),
        sync = shared.sync,
        "journal writer started"
    );
    let mut batch = Vec::new();
    loop {
        let (seq, shutdown) = {
            let mut p = lock(&shared.pending);
            while p.buf.is_empty() && !p.shutdown {
                p.idle = true;
                p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                p.idle = false;
            }
            std::mem::swap(&mut batch, &mut p.buf);
            (p.seq, p.shutdown)
        };
        if !batch.is_empty() {
            let result = journal.write(&batch).and_then(|_| journal.sync());
            if let Err(e) = result {
                tracing::error!(error = %e, "journal write failed; the store refuses writes from now on");
                let _ = shared.failed.set(e.to_string());
                return;
            }
            batch.clear();
            shared.publish(seq);
        }
        if shutdown && lock(&shared.pending).buf.is_empty() {
            return;
        }
        if journal.len > shared.compact_after && !shared.compacting.load(Ordering::Acquire) {
            match rotate(shared, epoch) {
                Ok(f) => {
                    epoch += 1;
                    let path = files::journal_path(&shared.dir, epoch);
                    journal = JournalFile::open(f, &path, 0, shared.sync);
                }
                Err(e) => tracing::warn!(error = %e, "journal rotation failed; will retry"),
            }
        }
    }
}

/// Starts journal `epoch + 1` and a snapshot thread for it.
fn rotate(shared: &Arc<Shared>, epoch: u64) -> std::io::Result<File> {
    let Some(store) = shared.store.get().cloned() else {
        return Err(std::io::Error::other("store not ready"));
    };
    let next = epoch + 1;
    let file = files::create_journal(&shared.dir, next)?;
    shared.compacting.store(true, Ordering::Release);
    let s = shared.clone();
    std::thread::Builder::new()
        .name("sessiond-snapshot".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            match files::write_snapshot(&s.dir, next, &store) {
                Ok(n) => tracing::info!(
                    sessions = n,
                    epoch = next,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot written; older journal removed"
                ),
                Err(e) => tracing::warn!(error = %e, "snapshot failed; the journal is kept"),
            }
            s.compacting.store(false, Ordering::Release);
        })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};

    use super::*;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn shared() -> Shared {
        Shared {
            pending: Mutex::default(),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            waiting: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            failed: OnceLock::new(),
            compacting: AtomicBool::new(false),
            store: OnceLock::new(),
            dir: PathBuf::new(),
            sync: false,
            compact_after: u64::MAX,
        }
    }

    #[test]
    fn once_the_journal_failed_every_operation_and_every_waiter_is_refused() {
        let s = shared();
        assert!(s.check().is_ok());
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let wa = Waker::from(a.clone());
        let mut ca = Context::from_waker(&wa);
        let mut waiting = Box::pin(s.wait_durable(1));
        assert!(waiting.as_mut().poll(&mut ca).is_pending());

        let _ = s.failed.set("disk full".into());
        s.wake_all();
        assert!(a.0.load(Ordering::SeqCst) >= 1);
        assert!(matches!(
            waiting.as_mut().poll(&mut ca),
            Poll::Ready(Err(StoreError::Unavailable(m))) if m.contains("disk full")
        ));
        assert!(matches!(s.check(), Err(StoreError::Unavailable(_))));
    }

    #[test]
    fn a_sync_wakes_only_the_waiters_it_made_durable_and_a_stop_wakes_the_rest() {
        let s = shared();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let (mut ca, mut cb) = (Context::from_waker(&wa), Context::from_waker(&wb));
        let mut first = Box::pin(s.wait_durable(1));
        let mut second = Box::pin(s.wait_durable(2));
        assert!(first.as_mut().poll(&mut ca).is_pending());
        assert!(second.as_mut().poll(&mut cb).is_pending());

        s.publish(1);
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "frame 1 is durable: woken");
        assert_eq!(b.0.load(Ordering::SeqCst), 0, "frame 2 is not: left asleep");
        assert!(matches!(first.as_mut().poll(&mut ca), Poll::Ready(Ok(()))));
        assert!(second.as_mut().poll(&mut cb).is_pending());

        s.stopped.store(true, Ordering::Release);
        s.wake_all();
        assert!(b.0.load(Ordering::SeqCst) >= 1);
        assert!(matches!(
            second.as_mut().poll(&mut cb),
            Poll::Ready(Err(StoreError::Unavailable(_)))
        ));
    }
}
