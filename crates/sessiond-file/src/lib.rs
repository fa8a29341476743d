//! The embedded durable store of sessiond, its default: sessions live in a
//! [`MemoryStore`] (so reads cost what memory costs) and every change is written ahead
//! to a journal on local disk before it is acknowledged, with snapshots that keep
//! restarts fast. One directory, one process, no server to run.
//!
//! Durability: an operation returns only after its journal frames are on stable
//! storage (a direct synchronous write, or `fdatasync` where the file system refuses
//! direct I/O), so every acknowledged write survives `kill -9` and power loss (given a
//! disk that honours cache flushes). Concurrent operations share one write (group
//! commit).
//! Touches (activity that changes nothing else) are journaled but not waited for:
//! losing one in a crash only makes a session look idler by at most a second.
//!
//! Why this design rather than SQLite or redb is in `docs/STORES.md`.
//!
//! ```
//! use std::sync::Arc;
//! use sessiond_core::{Manager, OpenRequest, Policy, Resolve};
//! use sessiond_file::FileStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("sessiond-doc-{}", std::process::id()));
//! let store = FileStore::open(&dir)?;
//! let manager = Manager::new(Arc::new(store));
//! manager.set_policy("shop", Policy::default())?;
//! let opened = manager.open("shop", OpenRequest::default()).await?;
//! drop(manager); // closes the store; reopening finds the session
//! let manager = Manager::new(Arc::new(FileStore::open(&dir)?));
//! manager.set_policy("shop", Policy::default())?;
//! manager.resolve(&opened.token, Resolve::default()).await?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<_, sessiond_core::Error>(()) }).unwrap();
//! ```

mod files;
mod frame;
mod journal;
mod journal_file;
mod os;
#[cfg(target_os = "linux")]
mod os_linux;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sessiond_core::admission::Admission;
use sessiond_core::hooks::{
    Delivery, DeliveryQuery, HookId, HookRoutes, Outbox, OutboxCounts, Settle,
};
use sessiond_core::memory::{Appended, Journaled};
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, Ordered, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, MemoryStore, Session, SessionId, Store,
    StoreError, Timestamp,
};

pub use files::{Quarantined, FORMAT};
use journal::{Hook, Writer};

/// Tuning of a [`FileStore`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Make each batch durable before acknowledging it (default true). Turning it off
    /// keeps writes safe from a process crash but not from power loss.
    pub sync: bool,
    /// Journal size after which a snapshot is taken and older files dropped
    /// (default 64 MiB).
    pub compact_after_bytes: u64,
    /// Write the journal with the standard library's portable calls only (a seek then a
    /// write, `fdatasync`, no direct I/O) even where the platform offers better: what
    /// platforms without their own calls use, selectable on Linux to test it (default
    /// false). Durability is the same; a durable write costs more.
    pub portable_io: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            sync: true,
            compact_after_bytes: 64 << 20,
            portable_io: false,
        }
    }
}

/// Takes the directory's lock file: one process at a time.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Unavailable(format!(
            "{} is in use by another process (only one sessiond may use a data directory)",
            dir.display()
        )));
    }
    Ok(lock)
}

/// What [`FileStore::repair`] did.
#[derive(Debug, Clone)]
pub struct Repaired {
    /// Sessions kept.
    pub sessions: usize,
    /// Whole records that could not be decoded, left out and copied to quarantine.
    pub quarantined: Vec<Quarantined>,
    /// Damaged byte ranges copied to quarantine (every valid record around them kept).
    pub set_aside: Vec<PathBuf>,
}

/// Why [`FileStore::backup`] wrote nothing.
#[derive(Debug)]
pub enum BackupError {
    /// Another backup of this store is running (one at a time).
    Running,
    /// The destination exists: a backup never writes over anything.
    Exists(PathBuf),
    /// The journal failed, the disk refused, or more changes came during the copy
    /// than a backup keeps aside; nothing was left behind.
    Failed {
        /// Where the backup was going.
        dest: PathBuf,
        /// What went wrong.
        why: String,
    },
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Running => f.write_str("another backup of this store is running"),
            BackupError::Exists(d) => {
                write!(
                    f,
                    "{} already exists; a backup never overwrites",
                    d.display()
                )
            }
            BackupError::Failed { dest, why } => {
                write!(
                    f,
                    "the backup to {} could not be written: {why}",
                    dest.display()
                )
            }
        }
    }
}

impl std::error::Error for BackupError {}

/// What [`FileStore::backup`] wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The backup's directory: a store directory, ready to be opened.
    pub dir: PathBuf,
    /// Sessions copied (open and closed in retention), before the changes made during
    /// the copy were added to it.
    pub sessions: usize,
    /// Bytes written.
    pub bytes: u64,
    /// How long it took.
    pub took: std::time::Duration,
}

/// The embedded durable store: a directory on local disk.
pub struct FileStore {
    mem: MemoryStore,
    quarantined: Vec<Quarantined>,
    writer: Writer,
    dir: PathBuf,
    /// An online backup is running ([`FileStore::backup`]).
    backing_up: std::sync::atomic::AtomicBool,
    _lock: File,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        Self::open_with(dir, FileOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`. Fails if another process has it
    /// open, or if its files are damaged beyond a torn last write (the message then
    /// names [`FileStore::repair`]'s command, `sessiond repair`).
    pub fn open_with(dir: impl AsRef<Path>, options: FileOptions) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let lock = lock_dir(&dir)?;
        files::check_format(&dir)?;
        // Sessions go straight into the store as the files are read; the journal hook
        // comes with the writer, after them (nothing read is written back).
        let mem = MemoryStore::new();
        let rec = files::recover(&dir, false, 0, &mut &mem)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", dir.display())))?;
        let (file, epoch, size) = rec.journal;
        tracing::info!(
            dir = %dir.display(),
            sessions = mem.len(),
            replayed = rec.replayed,
            torn_tail = rec.torn_tail,
            quarantined = rec.quarantined.len(),
            "file store opened"
        );
        let writer = Writer::start(dir.clone(), file, epoch, size, &options)?;
        let Ok(mem) = mem.journaled(Arc::new(Hook(writer.shared.clone()))) else {
            unreachable!("the store is not shared before it is journaled")
        };
        let _ = writer.shared.store.set(mem.clone());
        Ok(FileStore {
            mem,
            quarantined: rec.quarantined,
            writer,
            dir,
            backing_up: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// Repairs a store that refuses to open because a file is damaged with valid
    /// records after the damage (a bit flip, a bad sector): reads every valid record
    /// of every file, copies the damaged bytes and any undecodable record to
    /// `<dir>/quarantine/`, and writes a fresh snapshot of what was kept, which retires
    /// the damaged files. Nothing valid is dropped. The store must not be open.
    pub fn repair(dir: impl AsRef<Path>) -> Result<Repaired, StoreError> {
        let dir = dir.as_ref();
        if !dir.join("LOCK").exists() {
            return Err(StoreError::Unavailable(format!(
                "{} holds no sessiond store",
                dir.display()
            )));
        }
        let _lock = lock_dir(dir)?;
        files::check_format(dir)?;
        let mem = MemoryStore::new();
        let rec = files::recover(dir, true, 0, &mut &mem)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", dir.display())))?;
        let next = rec.journal.1 + 1;
        let sessions = mem.len();
        files::create_journal(dir, next)?;
        files::write_snapshot(dir, next, &mem, || Ok(()))?;
        tracing::info!(
            dir = %dir.display(),
            sessions,
            quarantined = rec.quarantined.len(),
            set_aside = rec.set_aside.len(),
            "store repaired: a fresh snapshot holds every valid record"
        );
        Ok(Repaired {
            sessions,
            quarantined: rec.quarantined,
            set_aside: rec.set_aside,
        })
    }

    /// Writes a consistent copy of the store into `dest` (a directory that must not
    /// exist yet) while the store keeps serving: every change acknowledged before the
    /// call is in it, and it holds the store exactly as it was at one moment during
    /// the call. A server started on `dest` (or `FileStore::open(dest)`) restores it.
    ///
    /// How: every journal frame appended from the start is copied aside while the
    /// sessions are copied from memory (fuzzy, without stopping anyone); once that
    /// copy is done and the journal is durable past it with no failure meanwhile, the
    /// frames go beside the copy as its journal. Writers never wait for it; the frames
    /// kept aside are bounded (256 MiB: a heavier write load fails the backup, and
    /// nothing else). Blocking: run it on a blocking thread. One backup at a time.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<Backup, BackupError> {
        let dest = dest.as_ref();
        let started = std::time::Instant::now();
        let shared = &self.writer.shared;
        // One at a time, for the whole backup (the tap alone ends before the backup is
        // in place).
        if self
            .backing_up
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(BackupError::Running);
        }
        /// Ends the backup however it ends (a panic included): the tap off, the flag
        /// down.
        struct Done<'a>(&'a journal::Shared, &'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let _ = self.0.tap_off();
                self.1.store(false, std::sync::atomic::Ordering::Release);
            }
        }
        let _done = Done(shared, &self.backing_up);
        let failed = |why: String| BackupError::Failed {
            dest: dest.to_path_buf(),
            why,
        };
        let Some(failures) = shared.tap_on() else {
            return Err(BackupError::Running);
        };
        // After the tap: a failure between a check and the tap would go unseen.
        shared.check().map_err(|e| failed(e.to_string()))?;
        let written = files::write_backup(dest, &self.mem, || {
            let frames = shared.tap_off().ok_or_else(|| {
                std::io::Error::other(format!(
                    "more than {} MiB of changes were made while the backup copied \
                     the sessions; try again when the load is lighter",
                    journal::TAP_MAX_BYTES >> 20
                ))
            })?;
            shared.snapshot_settled(failures)?;
            Ok(frames)
        });
        let (sessions, bytes) = written.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(dest.to_path_buf()),
            _ => failed(e.to_string()),
        })?;
        let took = started.elapsed();
        tracing::info!(dest = %dest.display(), sessions, bytes, took_ms = took.as_millis() as u64, "backup written");
        Ok(Backup {
            dir: dest.to_path_buf(),
            sessions,
            bytes,
            took,
        })
    }

    /// The records the last start could not read, each left out of the store and
    /// copied to `<dir>/quarantine/` (see `docs/STORES.md`).
    pub fn quarantined(&self) -> &[Quarantined] {
        &self.quarantined
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The in-memory view (for metrics and tools; changes made through it are journaled).
    pub fn memory(&self) -> &MemoryStore {
        &self.mem
    }

    /// Runs one operation of the memory store while the journal accepts writes, and
    /// returns its outcome with what it appended, which the caller must make durable
    /// ([`FileStore::durable`]) before acknowledging the operation.
    fn apply<T>(&self, op: impl FnOnce(&MemoryStore) -> Journaled<T>) -> StoreResult<Journaled<T>> {
        let _gate = self.writer.shared.admit()?;
        Ok(op(&self.mem))
    }

    /// A read or a touch while the journal cannot be written: answered from memory as
    /// the step would answer it, and nothing kept (a touch lost is a session that looks
    /// a little idler; a session found due is answered closed and closed for good by
    /// the sweep once the journal heals).
    fn read_only(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> ModifyOutcome {
        let _gate = self.writer.shared.gate();
        let Some(mut s) = self.mem.peek(lookup) else {
            return ModifyOutcome::NotFound;
        };
        match s.step(change, cond, now) {
            Err(e) => ModifyOutcome::Refused(e),
            Ok(step) => ModifyOutcome::Done {
                session: s,
                step,
                displaced: Vec::new(),
            },
        }
    }

    /// Waits until what an operation appended is durable, then gives its outcome.
    async fn durable<T>(&self, done: Journaled<T>) -> StoreResult<T> {
        self.writer.shared.durable(done.appended).await?;
        Ok(done.value)
    }
}

#[async_trait]
impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn event_bus(&self) -> Option<Arc<dyn sessiond_core::events::EventBus>> {
        None
    }

    fn outbox(&self) -> Option<&dyn Outbox> {
        Some(self)
    }

    async fn open(
        &self,
        session: Session,
        admission: &Admission,
        now: Timestamp,
    ) -> StoreResult<OpenOutcome> {
        let done = self.apply(|m| m.open_journaled(session, admission, now))?;
        self.durable(done).await
    }

    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        Ok(self.writer.shared.read(|| self.mem.peek(lookup)))
    }

    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        self.modify_ordered(lookup, change, cond, now)
            .await?
            .durable()
            .await
    }

    /// Answers once the change is in memory and its frames appended: visible to every
    /// later operation, which fails with it if its batch cannot be written (the
    /// journal's rule, `journal.rs`); [`Ordered::durable`] waits for the batch. A touch
    /// is journaled but not waited for (see the module doc).
    async fn modify_ordered(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<Ordered<ModifyOutcome>> {
        if !change.needs_durability() && self.writer.shared.check().is_err() {
            return Ok(Ordered::done(self.read_only(lookup, change, cond, now)));
        }
        let done = self.apply(|m| m.modify_journaled(lookup, change, cond, now))?;
        if !change.needs_durability() || done.appended == Appended::default() {
            return Ok(Ordered::done(done.value));
        }
        let shared = self.writer.shared.clone();
        Ok(Ordered::pending(done.value, async move {
            shared.durable(done.appended).await
        }))
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        let done = self.apply(|m| m.close_journaled(id, reason, by, now))?;
        self.durable(done).await
    }

    async fn close_all(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        let done = self.apply(|m| m.close_all_journaled(app, except, user, reason, by, now))?;
        self.durable(done).await
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        Ok(self.writer.shared.read(|| self.mem.list_now(query)))
    }

    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        Ok(self.writer.shared.read(|| self.mem.counts_now(app)))
    }

    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        let done = self.apply(|m| m.expire_due_journaled(now, limit))?;
        self.durable(done).await
    }

    async fn import(&self, session: Session) -> StoreResult<()> {
        let done = self.apply(|m| m.import_journaled(session))?;
        self.durable(done).await
    }

    async fn flush(&self) -> StoreResult<()> {
        let shared = &self.writer.shared;
        match shared.wait_durable(shared.last_seq()).await {
            Ok(()) => Ok(()),
            // Acknowledged changes are durable already; what a failed write dropped was
            // refused and undone (touches aside): a shutdown after a failure is clean.
            Err(e) if !shared.is_stopped() => {
                tracing::warn!(error = %e, "flushed what the journal could write; unacknowledged touches were dropped");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.writer.shared.check()
    }
}

/// The webhook outbox is the memory store's, journaled: a delivery is written in the
/// same batch as the change it reports ([`MemoryStore`]'s `put_hooked`), and a claim
/// hands out only deliveries whose batch is durable, so no hook hears of a change the
/// disk then refused.
#[async_trait]
impl Outbox for FileStore {
    fn routes(&self) -> &HookRoutes {
        self.mem.hook_routes()
    }

    async fn push(&self, deliveries: Vec<Delivery>) -> StoreResult<()> {
        let done = self.apply(|m| m.hooks_push_journaled(deliveries))?;
        self.durable(done).await
    }

    async fn claim(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let shared = &self.writer.shared;
        let (claimed, failures, upto) = {
            let _gate = shared.admit()?;
            let claimed = self.mem.hooks_claim_now(now, until, limit);
            (claimed, shared.failures(), shared.last_seq())
        };
        if claimed.is_empty() {
            return Ok(claimed);
        }
        // Every delivery claimed was appended before it could be seen, so at or before
        // `upto`: once that is durable, so are they. If a write fails meanwhile, the
        // changes may be undone (the reload puts back what the disk holds) and none is
        // sent; frames a failure healed before the claim dropped do not hold it up.
        shared.settled_since(failures, upto).await?;
        Ok(claimed)
    }

    async fn settle(
        &self,
        _app: &str,
        id: HookId,
        claimed_until: Timestamp,
        outcome: Settle,
    ) -> StoreResult<()> {
        let done = self.apply(|m| m.hooks_settle_journaled(id, claimed_until, &outcome))?;
        self.durable(done).await
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<Delivery>> {
        Ok(self.writer.shared.read(|| self.mem.hooks_list_now(query)))
    }

    async fn resend(&self, app: &str, id: HookId, now: Timestamp) -> StoreResult<bool> {
        let done = self.apply(|m| m.hooks_resend_journaled(app, id, now))?;
        self.durable(done).await
    }

    async fn tally(&self) -> StoreResult<OutboxCounts> {
        Ok(self.writer.shared.read(|| self.mem.hooks_counts_now()))
    }

    async fn forget_dead(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        let done = self.apply(|m| m.hooks_forget_dead_journaled(before, limit))?;
        self.durable(done).await
    }
}
