//! The files of a store directory, and recovery.
//!
//! ```text
//! <dir>/LOCK                 held (flock) by the one process using the directory
//! <dir>/FORMAT               "sessiond-store <N>": the layout of the files below
//! <dir>/journal-<N>.log      frames appended since snapshot N was started
//! <dir>/snapshot-<N>.dat     every session as of some moment after journal N began
//! ```
//!
//! Recovery loads the newest complete snapshot `K` (none: empty), then replays every
//! journal numbered `K` or more, in order. A snapshot is written while the store keeps
//! changing ("fuzzy"), yet the result is exact: frames are full session states keyed by
//! id, every change made after journal `K` began is in journal `K` or later, and
//! replaying them over the snapshot ends each session in its last state. A snapshot
//! becomes visible only by an atomic rename after it is synced, so a crash mid-snapshot
//! leaves the previous snapshot and its journals in charge.
//!
//! A journal is preallocated: the writer fills it with zeros ahead of its frames (see
//! [`crate::journal`]), so a journal ends at its first zero frame header, and the zeros
//! after it are room, not damage. Recovery cuts a journal back to its last valid frame
//! either way, so what follows the frames on disk is always zeros the writer wrote.
//!
//! A whole, checksummed frame that cannot be decoded is never taken for a torn tail:
//! recovery copies it to `<dir>/quarantine/` (durably, before anything may delete the
//! file it came from), logs which session and where, leaves that session out (its token
//! stops working, its seat is free: failing closed), and reads on. Later frames of the
//! same session bring it back as they say.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sessiond_core::hooks::{Delivery, HookId};
use sessiond_core::{MemoryStore, Session, SessionId};

use crate::frame::{self, Record, Unreadable};

/// The layout this build reads and writes: journals and snapshots of the frames that
/// `frame.rs` describes, named as the module docs show. A store written before the layout was
/// recorded (no `FORMAT` file) has this layout: it is read and gets the file.
pub const FORMAT: u64 = 1;

const FORMAT_FILE: &str = "FORMAT";

/// Checks the layout of the store in `dir` (locked by the caller): refuses one a newer
/// sessiond wrote, and records [`FORMAT`] where nothing is recorded yet.
pub fn check_format(dir: &Path) -> Result<(), sessiond_core::StoreError> {
    let path = dir.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found = text
                .trim()
                .strip_prefix("sessiond-store ")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    sessiond_core::StoreError::Corrupt(format!(
                        "{} does not say the store's layout (\"sessiond-store <N>\")",
                        path.display()
                    ))
                })?;
            if found > FORMAT {
                let what = format!("the store in {}", dir.display());
                return Err(sessiond_core::store::written_by_newer(&what, found, FORMAT));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(write_format(dir)?),
        Err(e) => Err(e.into()),
    }
}

/// Records [`FORMAT`] in `dir`, durably (a temporary file renamed over).
pub fn write_format(dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join("FORMAT.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("sessiond-store {FORMAT}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(FORMAT_FILE))?;
    sync_dir(dir)
}

pub(crate) fn journal_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("journal-{n}.log"))
}

fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n}.dat"))
}

fn numbered(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates (or opens) journal `n`, durable as a directory entry. The writer writes at
/// explicit offsets (the file may hold preallocated zeros past its last frame).
pub fn create_journal(dir: &Path, n: u64) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(journal_path(dir, n))?;
    sync_dir(dir)?;
    Ok(f)
}

/// Where recovery puts the sessions and webhook deliveries it reads, in file order: a
/// later state replaces an earlier one.
pub trait Replay {
    /// A session's state as a frame gives it.
    fn put(&mut self, s: Session);
    /// A session removed, or left out (its record unreadable or damaged).
    fn remove(&mut self, id: SessionId);
    /// A delivery's state as a frame gives it.
    fn hook(&mut self, d: Delivery);
    /// A delivery done.
    fn unhook(&mut self, id: HookId);
}

/// Straight into the store: nothing else holds the sessions while they are read, so
/// memory after a restart is about what the store itself needs.
impl Replay for &MemoryStore {
    fn put(&mut self, s: Session) {
        self.load(std::iter::once(s));
    }

    fn remove(&mut self, id: SessionId) {
        self.unload(id);
    }

    fn hook(&mut self, d: Delivery) {
        self.load_hook(d);
    }

    fn unhook(&mut self, id: HookId) {
        self.unload_hook(id);
    }
}

/// What a reload reads, kept apart until every file is read.
#[derive(Default)]
pub struct Read {
    /// The sessions.
    pub sessions: HashMap<SessionId, Session>,
    /// The webhook deliveries.
    pub hooks: HashMap<HookId, Delivery>,
}

/// Into maps, for a reload that must not touch the store until it has read every file.
impl Replay for Read {
    fn put(&mut self, s: Session) {
        self.sessions.insert(s.id, s);
    }

    fn remove(&mut self, id: SessionId) {
        self.sessions.remove(&id);
    }

    fn hook(&mut self, d: Delivery) {
        self.hooks.insert(d.id, d);
    }

    fn unhook(&mut self, id: HookId) {
        self.hooks.remove(&id);
    }
}

/// What recovery found besides the sessions.
pub struct Recovered {
    /// The journal to keep appending to, its number and the length of its frames (the
    /// file is cut back to that length).
    pub journal: (File, u64, u64),
    /// Frames replayed from journals.
    pub replayed: usize,
    /// Whether a torn tail (bytes other than preallocated zeros) was cut off the last
    /// journal.
    pub torn_tail: bool,
    /// Records that could not be read, each copied to the quarantine folder.
    pub quarantined: Vec<Quarantined>,
    /// Damaged byte ranges copied to the quarantine folder by a repair.
    pub set_aside: Vec<PathBuf>,
}

/// A record recovery could not read, and where a copy of it is kept.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// The session it belonged to, when its id could be read.
    pub session: Option<SessionId>,
    /// The store file it was found in.
    pub file: String,
    /// Its offset in that file.
    pub offset: u64,
    /// The copy under `<dir>/quarantine/`.
    pub copy: PathBuf,
    /// Why it could not be read.
    pub error: String,
}

/// The folder unreadable records are copied to.
pub fn quarantine_dir(dir: &Path) -> PathBuf {
    dir.join("quarantine")
}

/// Copies an unreadable record to the quarantine folder, durably.
fn quarantine(dir: &Path, file: &str, u: Unreadable) -> std::io::Result<Quarantined> {
    let q = quarantine_dir(dir);
    fs::create_dir_all(&q)?;
    let copy = q.join(format!("{file}@{}.rec", u.offset));
    let mut f = File::create(&copy)?;
    f.write_all(&u.payload)?;
    f.sync_all()?;
    sync_dir(&q)?;
    sync_dir(dir)?;
    let error: String = u.error.chars().take(200).collect();
    tracing::error!(
        session = %u.id.map_or_else(|| "unknown".to_string(), |id| id.to_string()),
        file,
        offset = u.offset,
        copy = %copy.display(),
        error = %error,
        "a stored session record cannot be read; it is left out of the store and kept in quarantine"
    );
    Ok(Quarantined {
        session: u.id,
        file: file.to_string(),
        offset: u.offset,
        copy,
        error,
    })
}

/// Copies damaged bytes of `file` to the quarantine folder, durably.
fn keep_damaged(dir: &Path, file: &str, d: &frame::Damaged) -> std::io::Result<PathBuf> {
    let (offset, bytes) = (d.offset, &d.bytes);
    let q = quarantine_dir(dir);
    fs::create_dir_all(&q)?;
    let copy = q.join(format!(
        "{file}@{offset}-{}.damaged",
        offset + bytes.len() as u64
    ));
    let mut f = File::create(&copy)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(&q)?;
    tracing::error!(
        file,
        from = offset,
        to = offset + bytes.len() as u64,
        copy = %copy.display(),
        sessions_left_out = d.ids.len(),
        "damaged bytes set aside; every valid record around them is kept"
    );
    Ok(copy)
}

/// Reads the directory back into sessions, given to `into` as they are read, and opens
/// the journal to append to. Refuses (naming `sessiond repair`) when a file is damaged
/// with valid records after the damage, unless `repair`: then damaged bytes are copied
/// to the quarantine folder and every valid record around them kept (they are listed in
/// [`Recovered::set_aside`]). `keep`: the last journal is known to hold at least that
/// many bytes of acknowledged frames (a reload after a failed write), so damage below
/// that is never taken for a torn tail.
///
/// One file's bytes are in memory at a time, and each record goes to `into` as it is
/// decoded: a restart never holds the decoded sessions beside the store's own copy.
pub fn recover(
    dir: &Path,
    repair: bool,
    keep: u64,
    into: &mut impl Replay,
) -> std::io::Result<Recovered> {
    let snapshots = numbered(dir, "snapshot-", ".dat")?;
    let base = snapshots.last().copied().unwrap_or(0);
    let mut quarantined = Vec::new();
    let mut set_aside = Vec::new();
    let mut apply = |file: &str, r: Record| -> std::io::Result<()> {
        match r {
            Record::Put(s) => into.put(*s),
            Record::Remove(id) => into.remove(id),
            Record::PutHooked(s, ds) => {
                into.put(*s);
                ds.into_iter().for_each(|d| into.hook(d));
            }
            Record::Hook(d) => into.hook(*d),
            Record::Unhook(id) => into.unhook(id),
            Record::Unreadable(u) => {
                if let Some(id) = u.id {
                    into.remove(id);
                }
                quarantined.push(quarantine(dir, file, u)?);
            }
            Record::Commit => {}
            Record::Damaged(d) => {
                let to = d.offset + d.bytes.len() as u64;
                if !repair {
                    return Err(std::io::Error::other(format!(
                        "{file} is damaged at bytes {}..{to} and valid records follow; \
                         nothing was dropped. With the server stopped, run `sessiond \
                         repair` (same --config or --data-dir) to set the damaged bytes \
                         aside in quarantine/ and keep every other record",
                        d.offset
                    )));
                }
                for id in &d.ids {
                    into.remove(*id);
                }
                set_aside.push(keep_damaged(dir, file, &d)?);
            }
        }
        Ok(())
    };
    if snapshots.last().is_some() {
        let path = snapshot_path(dir, base);
        // A snapshot is written whole and synced before it is named: any bad byte in
        // it is damage.
        let name = format!("snapshot-{base}.dat");
        let end = frame::decode_file(&path, true, |r| apply(&name, r))?;
        if end.torn {
            let tail = frame::Damaged::tail(&path, end.valid_len)?;
            apply(&name, Record::Damaged(tail))?;
        }
    }
    let journals: Vec<u64> = numbered(dir, "journal-", ".log")?
        .into_iter()
        .filter(|n| *n >= base)
        .collect();
    let mut replayed = 0;
    let mut torn_tail = false;
    // The journal a crash can have cut short: the newest one that holds a frame (a
    // rotation that failed, or a crash right after one, leaves a newer one empty).
    let mut last_written = journals.len().saturating_sub(1);
    for (i, n) in journals.iter().enumerate().rev() {
        if frame::file_starts_with_frame(&journal_path(dir, *n))? {
            last_written = i;
            break;
        }
    }
    for (i, n) in journals.iter().enumerate() {
        let path = journal_path(dir, *n);
        let last = i >= last_written;
        let name = format!("journal-{n}.log");
        // Records go to the sessions as they are read; a refusal below drops them all
        // (the caller keeps nothing of a recovery that failed).
        let end = frame::decode_file(&path, false, |r| {
            if matches!(
                r,
                Record::Put(_)
                    | Record::PutHooked(..)
                    | Record::Remove(_)
                    | Record::Hook(_)
                    | Record::Unhook(_)
            ) {
                replayed += 1;
            }
            apply(&name, r)
        })?;
        let valid_len = end.valid_len;
        if i + 1 == journals.len() && valid_len < keep {
            return Err(std::io::Error::other(format!(
                "journal-{n}.log cannot be read past byte {valid_len} although {keep} bytes \
                 of it were acknowledged; the store stays down. With the server stopped, \
                 run `sessiond repair` to keep every valid record"
            )));
        }
        if end.torn {
            let padding = end.padding;
            if !last && !padding {
                // Only the last journal can end in a write cut short.
                let tail = frame::Damaged::tail(&path, valid_len)?;
                apply(&name, Record::Damaged(tail))?;
            }
            if last {
                // Preallocated zeros, or a write cut by a crash (never acknowledged):
                // either way the file ends at its last valid frame, so that nothing but
                // fresh zeros ever follows the frames the writer adds.
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid_len)?;
                f.sync_all()?;
                torn_tail |= !padding;
            }
        }
    }
    let current = journals.last().copied().unwrap_or(base);
    let file = create_journal(dir, current)?;
    let size = file.metadata()?.len();
    // Files older than the snapshot in use are no longer needed.
    remove_before(dir, base);
    Ok(Recovered {
        journal: (file, current, size),
        replayed,
        torn_tail,
        quarantined,
        set_aside,
    })
}

fn remove_before(dir: &Path, n: u64) {
    for (prefix, suffix, path) in [
        (
            "journal-",
            ".log",
            journal_path as fn(&Path, u64) -> PathBuf,
        ),
        ("snapshot-", ".dat", snapshot_path),
    ] {
        if let Ok(found) = numbered(dir, prefix, suffix) {
            for old in found.into_iter().filter(|m| *m < n) {
                let _ = fs::remove_file(path(dir, old));
            }
        }
    }
}

/// Writes snapshot `n` of `store`, makes it durable, and once `keep` agrees, names it
/// and removes older files (else the temporary file is removed). Returns the number of
/// sessions written.
pub fn write_snapshot(
    dir: &Path,
    n: u64,
    store: &MemoryStore,
    keep: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<usize> {
    let tmp = dir.join(format!("snapshot-{n}.tmp"));
    let count = write_sessions(&tmp, store)?;
    if let Err(e) = keep() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, snapshot_path(dir, n))?;
    sync_dir(dir)?;
    remove_before(dir, n);
    Ok(count)
}

/// Writes every session of `store` as put frames to a new file at `path` and syncs
/// it; returns how many. The copy is fuzzy (the store keeps changing): see the module
/// docs for why replaying the journal frames appended meanwhile makes it exact.
pub fn write_sessions(path: &Path, store: &MemoryStore) -> std::io::Result<usize> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut count = 0usize;
    let mut result = Ok(());
    store.for_each(|s| {
        frame::encode_put(&mut buf, s);
        count += 1;
        if buf.len() >= 1 << 16 && result.is_ok() {
            result = out.write_all(&buf);
            buf.clear();
        }
    });
    result?;
    // Then the webhook deliveries still owed (their sessions' frames come first, as in
    // the journal).
    store.for_each_hook(|d| frame::encode_hook(&mut buf, d));
    out.write_all(&buf)?;
    let f = out.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(count)
}

/// A backup never writes over anything.
fn refuse_existing(dest: &Path) -> std::io::Result<()> {
    if dest.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; a backup never overwrites",
                dest.display()
            ),
        ));
    }
    Ok(())
}

/// Writes an online backup into `dest`, a directory that must not exist: the sessions
/// copied from `store` as snapshot 0 by `copy` (fuzzy), and `journal` (the frames
/// appended while it copied, from `settle` once they are known to be durable and
/// undone by no failure) as journal 0. Recovery of `dest` loads the one and replays
/// the other, which gives the store exactly as it was when the copy ended. Built in a
/// temporary directory beside `dest` and renamed into place last, so `dest` exists
/// only once whole. Returns the number of sessions copied and the bytes written.
pub fn write_backup(
    dest: &Path,
    store: &MemoryStore,
    settle: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> std::io::Result<(usize, u64)> {
    refuse_existing(dest)?;
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = dest
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no directory", dest.display())))?;
    // A name of its own, created only if it does not exist: never another backup's
    // directory, never deleted before use. A crash leaves it behind (it says so).
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = parent.join(format!(
        ".{}.{}-{}.partial",
        name.to_string_lossy(),
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    // A backup holds every session's data and token hash: readable by its owner only,
    // whatever the umask.
    crate::os::native::create_private_dir(&tmp)?;
    let built = (|| {
        let sessions = write_sessions(&snapshot_path(&tmp, 0), store)?;
        let frames = settle()?;
        let mut j = File::create(journal_path(&tmp, 0))?;
        j.write_all(&frames)?;
        j.sync_all()?;
        File::create(tmp.join("LOCK"))?;
        write_format(&tmp)?;
        let bytes = fs::metadata(snapshot_path(&tmp, 0))?.len() + frames.len() as u64;
        Ok((sessions, bytes))
    })();
    match built.and_then(|done| {
        // rename(2) of a directory over an existing empty one would succeed: check
        // again, as late as possible (the caller holds the store's one backup slot).
        refuse_existing(dest)?;
        fs::rename(&tmp, dest)?;
        Ok(done)
    }) {
        Ok(done) => {
            // Named now: a failed sync of its parent is reported, the backup stays.
            sync_dir(parent).map_err(|e| {
                std::io::Error::other(format!(
                    "{} was written but its directory entry may not be durable: {e}",
                    dest.display()
                ))
            })?;
            Ok(done)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("sessiond-recover-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Journal 0 holding one removal frame, then `tail`.
    fn journal_with(d: &Path, tail: &[u8]) -> u64 {
        let mut bytes = Vec::new();
        frame::encode_remove(&mut bytes, SessionId::from_u128(7));
        let frames = bytes.len() as u64;
        bytes.extend_from_slice(tail);
        fs::write(journal_path(d, 0), &bytes).unwrap();
        frames
    }

    #[test]
    fn preallocated_zeros_end_a_journal_without_counting_as_damage() {
        let d = dir("zeros");
        let frames = journal_with(&d, &[0; 4096]);
        let r = recover(&d, false, 0, &mut Read::default()).unwrap();
        assert_eq!(r.replayed, 1);
        assert!(!r.torn_tail);
        assert_eq!(r.journal.2, frames, "writing goes on after the last frame");
        assert_eq!(fs::metadata(journal_path(&d, 0)).unwrap().len(), frames);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_write_among_the_zeros_is_cut_off() {
        let d = dir("torn");
        let mut tail = vec![200, 0, 0, 0, 1, 2, 3, 4, b'P'];
        tail.extend_from_slice(&[0; 4096]);
        let frames = journal_with(&d, &tail);
        let r = recover(&d, false, 0, &mut Read::default()).unwrap();
        assert_eq!(r.replayed, 1);
        assert!(r.torn_tail);
        assert_eq!(fs::metadata(journal_path(&d, 0)).unwrap().len(), frames);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_unreadable_record_is_quarantined_and_nothing_after_it_is_lost() {
        let d = dir("quarantine");
        let mut bytes = Vec::new();
        let unreadable_id = SessionId::from_u128(9);
        let mut payload = format!("P{{\"id\":\"{unreadable_id}\",").into_bytes();
        payload.extend_from_slice(&[b'['; 200]);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        frame::encode_remove(&mut bytes, SessionId::from_u128(7));
        let frames = bytes.len() as u64;
        bytes.extend_from_slice(&[0; 512]);
        fs::write(journal_path(&d, 0), &bytes).unwrap();

        let r = recover(&d, false, 0, &mut Read::default()).unwrap();
        assert_eq!(
            r.replayed, 1,
            "the frame after the unreadable one is replayed"
        );
        assert!(!r.torn_tail);
        assert_eq!(r.journal.2, frames, "nothing valid was cut");
        assert_eq!(r.quarantined.len(), 1);
        let q = &r.quarantined[0];
        assert_eq!((q.session, q.offset), (Some(unreadable_id), 0));
        assert_eq!(q.file, "journal-0.log");
        assert_eq!(fs::read(&q.copy).unwrap(), payload);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_older_journal_may_end_in_zeros_but_not_in_damage() {
        let d = dir("older");
        journal_with(&d, &[0; 512]);
        fs::write(journal_path(&d, 1), b"").unwrap();
        assert_eq!(
            recover(&d, false, 0, &mut Read::default())
                .unwrap()
                .replayed,
            1
        );
        // A newer journal that holds no frame (a rotation cut short by a crash): the
        // older one is still the one a crash could have torn.
        journal_with(&d, &[9; 16]);
        fs::write(journal_path(&d, 1), [0; 64]).unwrap();
        let r = recover(&d, false, 0, &mut Read::default()).unwrap();
        assert!(r.torn_tail);
        assert_eq!(r.journal.1, 1, "writing goes on in the newest journal");
        // Once the newer journal holds a frame, the older one's bad tail is damage.
        journal_with(&d, &[9; 16]);
        let mut frame = Vec::new();
        frame::encode_remove(&mut frame, SessionId::from_u128(8));
        fs::write(journal_path(&d, 1), &frame).unwrap();
        let Err(refused) = recover(&d, false, 0, &mut Read::default()) else {
            panic!("damage before the last journal is refused")
        };
        assert!(refused.to_string().contains("sessiond repair"), "{refused}");
        fs::remove_dir_all(&d).unwrap();
    }
}
