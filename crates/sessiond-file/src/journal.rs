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
//! **When a write fails** (a full disk, an I/O error) the rule is the one a reader of
//! a database log would expect: a change is visible to other requests from the moment
//! it is made, acknowledged only once durable, and a failed write fails every operation
//! whose frames were not yet durable: the failed batch and everything appended after it
//! (each of them could only have been computed from states at least as new). At once,
//! before anything is logged, the store refuses operations and wakes every waiter; the
//! writer then cuts the journal back to its last durable frame and reloads the memory
//! store from the disk, so no refused change stays visible (no phantom session, seat or
//! data). It then probes the disk, with a growing pause (0.1 s to 5 s), by growing the
//! journal a step ahead (1 MiB of zeros, synced), and accepts operations again as soon
//! as the disk takes that: no restart needed.
//! The writer's end, by return or by panic, wakes every waiter (a drop guard), and
//! [`Shared::check`] reports a stopped writer, so nobody waits on a writer that is gone.
//!
//! When the journal outgrows its threshold the writer rotates to a new journal and a
//! background thread writes a snapshot of the store; once the snapshot is durable, the
//! older files are deleted (see [`crate::files`] for why a fuzzy snapshot is correct).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use sessiond_core::hooks::{Delivery, HookId};
use sessiond_core::memory::{Appended, Journal};
use sessiond_core::{MemoryStore, Session, SessionId, StoreError};

use crate::files;
use crate::frame;
use crate::journal_file::JournalFile;

/// Frames waiting for the writer.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// While an online backup runs: a copy of every frame appended since it began.
    tap: Option<Tap>,
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
    /// Whether the journal cannot be written now (read on every operation: a lock-free
    /// load); why is in `failure`.
    failed: AtomicBool,
    failure: Mutex<String>,
    /// How many times the journal failed (a snapshot taken across a failure may hold
    /// changes that were undone: it is dropped).
    failures: AtomicU64,
    /// Sequence numbers whose frames were dropped by a failure, as `(first, last)`
    /// ranges, and the highest of them (so the common case reads one atomic).
    lost: Mutex<Vec<(u64, u64)>>,
    lost_upto: AtomicU64,
    /// Operations hold it shared while they change the memory store and append their
    /// frames; reloading the memory store after a failure holds it exclusively.
    gate: RwLock<()>,
    /// Odd while a reload replaces the memory store (readers that saw it change read
    /// again under the gate).
    reloads: AtomicU64,
    compacting: AtomicBool,
    /// The store, set once built (the store holds the hook, the hook needs the store
    /// for snapshots).
    pub(crate) store: OnceLock<MemoryStore>,
    dir: PathBuf,
    sync: bool,
    /// The calls the journal file is written with.
    io: crate::os::Io,
    compact_after: u64,
}

/// The frames appended while an online backup copies the store
/// ([`crate::FileStore::backup`]).
#[derive(Default)]
struct Tap {
    frames: Vec<u8>,
    /// More than [`TAP_MAX_BYTES`] were appended: the copy was dropped.
    overflowed: bool,
}

/// Most bytes of frames one backup keeps in memory while it copies the store: a write
/// load that appends more in that time fails the backup rather than grow memory.
pub(crate) const TAP_MAX_BYTES: usize = 256 << 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(
        dir: PathBuf,
        sync: bool,
        io: crate::os::Io,
        compact_after: u64,
        durable_seq: u64,
    ) -> Shared {
        Shared {
            pending: Mutex::new(Pending {
                seq: durable_seq,
                ..Default::default()
            }),
            wake: Condvar::new(),
            durable: AtomicU64::new(durable_seq),
            waiting: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            failure: Mutex::default(),
            failures: AtomicU64::new(0),
            lost: Mutex::default(),
            lost_upto: AtomicU64::new(0),
            gate: RwLock::new(()),
            reloads: AtomicU64::new(0),
            compacting: AtomicBool::new(false),
            store: OnceLock::new(),
            dir,
            sync,
            io,
            compact_after,
        }
    }

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
        // `durable` first: a reload records its lost range before the writer publishes
        // anything newer, so a `durable` past `seq` read here comes with that range.
        let durable = self.durable.load(Ordering::Acquire);
        if seq <= self.lost_upto.load(Ordering::Acquire)
            && lock(&self.lost)
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&seq))
        {
            return Some(Err(StoreError::Unavailable(
                "the journal could not be written; the change was undone".into(),
            )));
        }
        if durable >= seq {
            return Some(Ok(()));
        }
        if let Err(e) = self.check() {
            return Some(Err(e));
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

    /// Whether operations are accepted: not while the journal cannot be written, nor
    /// once the writer has stopped.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(format!(
                "the journal cannot be written: {}",
                lock(&self.failure)
            )));
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the journal writer stopped".into()));
        }
        Ok(())
    }

    /// Whether the writer thread has ended.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Runs a read of the memory store that must not see a reload half done: lock-free
    /// unless a reload ran meanwhile (then again under the gate).
    pub(crate) fn read<T>(&self, f: impl Fn() -> T) -> T {
        let before = self.reloads.load(Ordering::Acquire);
        if before.is_multiple_of(2) {
            let v = f();
            if self.reloads.load(Ordering::Acquire) == before {
                return v;
            }
        }
        let _gate = self.gate();
        f()
    }

    /// The gate alone, for reads that must not see a reload half done.
    pub(crate) fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one operation: while the guard lives, the memory store is not reloaded
    /// under it. Hold it only around the synchronous memory operation, never across a
    /// wait.
    pub(crate) fn admit(&self) -> Result<RwLockReadGuard<'_, ()>, StoreError> {
        // Refused without waiting for the gate while the journal is down (a reload may
        // hold it for a while); checked again under it.
        self.check()?;
        let gate = self.gate();
        self.check()?;
        Ok(gate)
    }

    /// The journal failed: refuse operations and wake every waiter, before anything
    /// else (logging included) can go wrong.
    fn fail(&self, why: String) {
        *lock(&self.failure) = why;
        self.failures.fetch_add(1, Ordering::AcqRel);
        self.failed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn append(&self, f: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut p = lock(&self.pending);
        let start = p.buf.len();
        f(&mut p.buf);
        let Pending { buf, tap, .. } = &mut *p;
        if let Some(tap) = tap.as_mut().filter(|t| !t.overflowed) {
            if tap.frames.len() + (buf.len() - start) > TAP_MAX_BYTES {
                tap.overflowed = true;
                tap.frames = Vec::new();
            } else {
                tap.frames.extend_from_slice(&buf[start..]);
            }
        }
        p.seq += 1;
        let seq = p.seq;
        // Only the first frame for a sleeping writer wakes it: until the writer runs
        // again, later frames find it already woken.
        let idle = std::mem::take(&mut p.idle);
        drop(p);
        if idle {
            self.wake.notify_one();
        }
        seq
    }

    /// Waits until what an operation appended is durable (at once when it appended
    /// nothing). An operation waits for its own frames only, not for later writers'
    /// (which would cost an extra group-commit cycle under load).
    pub(crate) async fn durable(&self, appended: Appended) -> Result<(), StoreError> {
        if appended.0 == 0 {
            return Ok(());
        }
        self.wait_durable(appended.0).await
    }
}

/// The hook the memory store reports changes to.
pub(crate) struct Hook(pub(crate) Arc<Shared>);

impl Journal for Hook {
    fn put(&self, session: &Session) -> u64 {
        self.0.append(|buf| frame::encode_put(buf, session))
    }

    fn remove(&self, id: SessionId) -> u64 {
        self.0.append(|buf| frame::encode_remove(buf, id))
    }

    fn put_hooked(&self, session: &Session, deliveries: &[Delivery]) -> u64 {
        // One frame: a torn write keeps both or neither.
        self.0
            .append(|buf| frame::encode_put_hooked(buf, session, deliveries))
    }

    fn hook(&self, d: &Delivery) -> u64 {
        self.0.append(|buf| frame::encode_hook(buf, d))
    }

    fn unhook(&self, id: HookId) -> u64 {
        self.0.append(|buf| frame::encode_unhook(buf, id))
    }
}

/// The writer thread's handle; stopping it drains what is pending first.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer on `file` (journal number `epoch`, `size` bytes long), as
    /// `options` say.
    pub(crate) fn start(
        dir: PathBuf,
        file: File,
        epoch: u64,
        size: u64,
        options: &crate::FileOptions,
    ) -> std::io::Result<Writer> {
        let io = if options.portable_io {
            crate::os::Io::Portable
        } else {
            crate::os::Io::Native
        };
        let shared = Arc::new(Shared::new(
            dir,
            options.sync,
            io,
            options.compact_after_bytes,
            0,
        ));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sessiond-journal".into())
            .spawn(move || {
                // However the writer ends, by returning or by a panic, nobody is left
                // waiting on it.
                let _stopped = Stopped(&s);
                write_loop(&s, file, epoch, size);
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

/// Marks the writer stopped and wakes every waiter when dropped.
struct Stopped<'a>(&'a Shared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.wake_all();
    }
}

fn write_loop(shared: &Arc<Shared>, file: File, mut epoch: u64, size: u64) {
    let path = files::journal_path(&shared.dir, epoch);
    let mut journal = JournalFile::open(file, &path, size, shared.sync, shared.io);
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
            frame::encode_commit(&mut batch);
            let durable_len = journal.len;
            let result = journal.write(&batch).and_then(|_| journal.sync());
            batch.clear();
            if let Err(e) = result {
                shared.fail(e.to_string());
                tracing::error!(error = %e, "journal write failed; operations are refused until the disk takes writes again");
                match heal(shared, journal, durable_len) {
                    Some((healed, at)) => {
                        journal = healed;
                        epoch = at;
                        continue;
                    }
                    None => return,
                }
            }
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
                    journal = JournalFile::open(f, &path, 0, shared.sync, shared.io);
                }
                Err(e) => tracing::warn!(error = %e, "journal rotation failed; will retry"),
            }
        }
    }
}

/// After a failed write: cuts the journal back to its last durable frame, reloads the
/// memory store from the disk (dropping every change that was not durable), then probes
/// the disk until it takes a write, makes durable the versions the reload continued
/// above undone changes, and lets operations in again. Returns the journal to go on
/// with and its number, or `None` if the store is shutting down first.
fn heal(shared: &Shared, journal: JournalFile, durable_len: u64) -> Option<(JournalFile, u64)> {
    let mut pause = Duration::from_millis(100);
    let mut journal = Some((journal, durable_len));
    let mut healed: Option<(JournalFile, u64, Vec<u8>)> = None;
    loop {
        if healed.is_none() && !shared.compacting.load(Ordering::Acquire) {
            match reload(shared, &mut journal) {
                Ok(j) => healed = Some(j),
                Err(e) => {
                    tracing::warn!(error = %e, "the store could not be reloaded from its files; retrying")
                }
            }
        }
        if let Some((j, _, continued)) = &mut healed {
            // Room for a whole step of growth, not just one frame: a disk that takes
            // one more frame and refuses the next would fail and reload per request.
            // Then the continued versions, before any operation can build on them (a
            // write that fails after a partial write leaves a torn tail, or the same
            // full states written twice: both harmless).
            let room = crate::journal_file::GROW + continued.len() as u64;
            let start = j.len;
            let written = j.reserve(room).and_then(|()| {
                if !continued.is_empty() {
                    j.write(continued)?;
                    j.sync()?;
                    continued.clear();
                }
                Ok(())
            });
            if written.is_err() {
                // The next try writes over the same bytes: a copy whose sync failed
                // must not stay between valid frames (it could read back as zeros).
                j.len = start;
            }
            match written {
                Ok(()) => {
                    let _gate = shared.gate.write().unwrap_or_else(|e| e.into_inner());
                    shared.failed.store(false, Ordering::Release);
                    tracing::info!("the journal takes writes again; operations are accepted");
                    return healed.map(|(j, epoch, _)| (j, epoch));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the journal still refuses writes")
                }
            }
        }
        let mut p = lock(&shared.pending);
        if !p.shutdown {
            p = shared
                .wake
                .wait_timeout(p, pause)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if p.shutdown {
            drop(p);
            // Frames of the failed write must not come back at the next start.
            if let Some((j, len)) = &journal {
                let _ = j.cut(*len);
            }
            return None;
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Goes back to what the disk holds: with no operation running, drops every frame not
/// yet durable (their operations fail), cuts the failed journal back to its durable
/// frames (once), and reloads the memory store from the store's files. Returns the
/// journal, its number, and the frames (a batch) of the sessions whose version the
/// reload continued above undone changes ([`MemoryStore::replace_all`]), to be written
/// before operations come back.
fn reload(
    shared: &Shared,
    cut: &mut Option<(JournalFile, u64)>,
) -> std::io::Result<(JournalFile, u64, Vec<u8>)> {
    {
        // Waits for the operations in flight (they passed the check before the failure
        // was set), then drops every frame not yet durable: their operations fail.
        let _gate = shared.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut p = lock(&shared.pending);
        p.buf.clear();
        let first = shared.durable.load(Ordering::Acquire) + 1;
        if p.seq >= first {
            lock(&shared.lost).push((first, p.seq));
            shared.lost_upto.store(p.seq, Ordering::Release);
        }
    }
    shared.wake_all();
    // Reading the files takes no lock: while the journal is failed no operation changes
    // the memory store (reads go on meanwhile).
    let mut keep = 0;
    if let Some((journal, len)) = cut {
        // Frames a failed write may still have left on the disk were never acknowledged.
        journal.cut(*len)?;
        keep = *len;
    }
    let mut read = files::Read::default();
    let rec = files::recover(&shared.dir, false, keep, &mut read)?;
    let files::Read { sessions, hooks } = read;
    *cut = None;
    let mut frames = Vec::new();
    let mut continued_count = 0;
    if let Some(store) = shared.store.get() {
        let _gate = shared.gate.write().unwrap_or_else(|e| e.into_inner());
        shared.reloads.fetch_add(1, Ordering::AcqRel);
        let continued = store.replace_all(sessions.into_values());
        store.replace_hooks(hooks.into_values());
        shared.reloads.fetch_add(1, Ordering::AcqRel);
        continued_count = continued.len();
        for s in &continued {
            frame::encode_put(&mut frames, s);
        }
        if !frames.is_empty() {
            frame::encode_commit(&mut frames);
        }
    }
    let (file, epoch, size) = rec.journal;
    let path = files::journal_path(&shared.dir, epoch);
    tracing::info!(
        epoch,
        continued = continued_count,
        "the store was reloaded from its files after a failed write"
    );
    Ok((
        JournalFile::open(file, &path, size, shared.sync, shared.io),
        epoch,
        frames,
    ))
}

/// Starts journal `epoch + 1` and a snapshot thread for it.
fn rotate(shared: &Arc<Shared>, epoch: u64) -> std::io::Result<File> {
    let Some(store) = shared.store.get().cloned() else {
        return Err(std::io::Error::other("store not ready"));
    };
    let next = epoch + 1;
    let file = files::create_journal(&shared.dir, next)?;
    let s = shared.clone();
    let failures = shared.failures.load(Ordering::Acquire);
    shared.compacting.store(true, Ordering::Release);
    let spawned = std::thread::Builder::new()
        .name("sessiond-snapshot".into())
        .spawn(move || {
            /// Clears `compacting` however the snapshot ends.
            struct Done<'a>(&'a Shared);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.compacting.store(false, Ordering::Release);
                }
            }
            let _done = Done(&s);
            let started = std::time::Instant::now();
            match files::write_snapshot(&s.dir, next, &store, || s.snapshot_settled(failures)) {
                Ok(n) => tracing::info!(
                    sessions = n,
                    epoch = next,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot written; older journal removed"
                ),
                Err(e) => tracing::warn!(error = %e, "snapshot not kept; the journal is kept"),
            }
        });
    if let Err(e) = spawned {
        shared.compacting.store(false, Ordering::Release);
        // The writer goes on with journal `epoch`: the new one must not follow it.
        drop(file);
        let _ = std::fs::remove_file(files::journal_path(&shared.dir, next));
        return Err(e);
    }
    Ok(file)
}

impl Shared {
    /// Starts copying every frame appended from now on (at a frame boundary: under
    /// the lock that appends), for an online backup. Returns how many times the
    /// journal had failed, for [`Shared::snapshot_settled`]; `None` when a backup is
    /// already running.
    pub(crate) fn tap_on(&self) -> Option<u64> {
        let mut p = lock(&self.pending);
        if p.tap.is_some() {
            return None;
        }
        p.tap = Some(Tap::default());
        Some(self.failures.load(Ordering::Acquire))
    }

    /// Stops the copy and gives the frames appended since [`Shared::tap_on`], or
    /// `None` when they outgrew [`TAP_MAX_BYTES`].
    pub(crate) fn tap_off(&self) -> Option<Vec<u8>> {
        let tap = lock(&self.pending).tap.take()?;
        (!tap.overflowed).then_some(tap.frames)
    }

    /// How many times the journal failed so far.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Waits until what memory held when [`Shared::failures`] read `failures_before` and
    /// [`Shared::last_seq`] read `upto` (both under the gate) is durable: frames up to
    /// `upto` are durable, or were dropped by a failure healed before that read (memory
    /// was reloaded without them). A failure since makes it an error: what memory held
    /// then may have been undone.
    pub(crate) async fn settled_since(
        &self,
        failures_before: u64,
        upto: u64,
    ) -> Result<(), StoreError> {
        let waited = self.wait_durable(upto).await;
        if self.failures() != failures_before {
            return Err(StoreError::Unavailable(
                "a journal write failed meanwhile; the changes may have been undone".into(),
            ));
        }
        match waited {
            Ok(()) => Ok(()),
            Err(_) if self.lost_upto.load(Ordering::Acquire) >= upto && self.check().is_ok() => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a snapshot just copied from memory may be kept: every change it can hold
    /// was appended by now (under the session's lock, before the copy read it), so once
    /// the journal is durable up to here with no failure since the snapshot began,
    /// nothing in it was undone. A failure meanwhile drops the snapshot.
    pub(crate) fn snapshot_settled(&self, failures_before: u64) -> std::io::Result<()> {
        let upto = self.last_seq();
        loop {
            if self.failures.load(Ordering::Acquire) != failures_before {
                return Err(std::io::Error::other(
                    "a journal write failed while the snapshot was taken",
                ));
            }
            // Frames a healed failure dropped count as settled: nothing will make them
            // durable, and the copy was taken after memory was reloaded without them.
            if self.durable.load(Ordering::Acquire) >= upto
                || self.lost_upto.load(Ordering::Acquire) >= upto
            {
                return Ok(());
            }
            if self.stopped.load(Ordering::Acquire) {
                return Err(std::io::Error::other("the journal writer stopped"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
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
        Shared::new(PathBuf::new(), false, crate::os::Io::Native, u64::MAX, 0)
    }

    /// Three frames appended, the first durable, then a failure healed as a reload
    /// heals it: frames 2 and 3 were never durable.
    fn healed_after_losing_2_and_3() -> Shared {
        let s = shared();
        for _ in 0..3 {
            let _ = s.append(|b| b.push(1));
        }
        s.publish(1);
        s.fail("disk full".into());
        lock(&s.lost).push((2, 3));
        s.lost_upto.store(3, Ordering::Release);
        s.failed.store(false, Ordering::Release);
        s
    }

    /// After a healed failure, on an idle store, the dropped frames never become
    /// durable: a snapshot (or a backup) taken then must not wait for them.
    #[test]
    fn a_snapshot_after_a_healed_failure_does_not_wait_for_dropped_frames() {
        let s = healed_after_losing_2_and_3();
        let failures = s.failures.load(Ordering::Acquire);
        let (tx, rx) = std::sync::mpsc::channel();
        let s = Arc::new(s);
        let waiter = s.clone();
        std::thread::spawn(move || {
            let _ = tx.send(waiter.snapshot_settled(failures).is_ok());
        });
        // A bound only against a hang (the answer comes at once); no timing asserted.
        let settled = rx.recv_timeout(std::time::Duration::from_secs(30));
        s.stopped.store(true, Ordering::Release);
        assert_eq!(settled, Ok(true), "settled without a new write");
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

        s.fail("disk full".into());
        assert!(a.0.load(Ordering::SeqCst) >= 1);
        assert!(matches!(
            waiting.as_mut().poll(&mut ca),
            Poll::Ready(Err(StoreError::Unavailable(m))) if m.contains("disk full")
        ));
        assert!(matches!(s.check(), Err(StoreError::Unavailable(_))));
    }

    #[test]
    fn a_waiter_whose_frames_were_dropped_fails_even_once_later_frames_are_durable() {
        let s = healed_after_losing_2_and_3();
        s.publish(4);
        assert!(
            matches!(s.settled(1), Some(Ok(()))),
            "durable before the failure"
        );
        for lost in [2, 3] {
            assert!(
                matches!(s.settled(lost), Some(Err(StoreError::Unavailable(_)))),
                "frame {lost} was dropped"
            );
        }
        assert!(
            matches!(s.settled(4), Some(Ok(()))),
            "written after the heal"
        );
    }

    #[test]
    fn a_writer_that_panics_still_answers_its_waiters() {
        let s = Arc::new(shared());
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let wa = Waker::from(a.clone());
        let mut ca = Context::from_waker(&wa);
        let mut waiting = Box::pin(s.wait_durable(1));
        assert!(waiting.as_mut().poll(&mut ca).is_pending());
        let writer = s.clone();
        let ended = std::thread::spawn(move || {
            let _stopped = Stopped(&writer);
            panic!("a writer bug");
        })
        .join();
        assert!(ended.is_err(), "the writer panicked");
        assert!(a.0.load(Ordering::SeqCst) >= 1, "the waiter was woken");
        assert!(matches!(
            waiting.as_mut().poll(&mut ca),
            Poll::Ready(Err(StoreError::Unavailable(_)))
        ));
        assert!(
            s.check().is_err(),
            "a stopped writer fails the readiness check"
        );
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
