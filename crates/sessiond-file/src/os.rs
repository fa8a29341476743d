//! What the file store asks of the operating system beyond the portable standard
//! library, in one place: positioned reads and writes, direct I/O for the journal, and
//! directories only their owner may read.
//!
//! [`native`] is the best the platform offers: on Linux `pread`/`pwrite`, `O_DIRECT |
//! O_DSYNC` and modes ([`crate::os_linux`], the only module of this crate that may name
//! `std::os::unix` or `libc`; a test keeps it so); elsewhere the portable calls.
//! [`portable`] uses the standard library alone (a seek then a read or write, no direct
//! I/O, no modes) and can be chosen on Linux too (`FileOptions::portable_io`), which is
//! how its journal writer runs the conformance and crash tests here, where macOS and
//! Windows builds cannot be tested.

use std::fs::File;
use std::path::Path;

/// The platform's own calls.
#[cfg(target_os = "linux")]
pub(crate) use crate::os_linux as native;
#[cfg(not(target_os = "linux"))]
pub(crate) use portable as native;

/// The standard library's calls only.
pub(crate) mod portable {
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::path::Path;

    /// Writes all of `buf` at `offset` (moves the file's cursor: the journal writer is
    /// the file's only user).
    pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(buf)
    }

    /// Fills `buf` from `offset`.
    #[cfg_attr(target_os = "linux", allow(dead_code))] // Linux reads with its own call
    pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }

    /// No direct I/O here: the journal writes through the cache and syncs.
    pub(crate) fn open_direct(path: &Path) -> std::io::Result<File> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "direct I/O is not used for {} on this platform",
                path.display()
            ),
        ))
    }

    /// Creates the directory `path` (its parent must exist). No mode here: it is as
    /// private as its parent directory makes it.
    #[cfg_attr(target_os = "linux", allow(dead_code))] // Linux sets a mode
    pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
}

/// Which calls a journal file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    /// [`native`].
    Native,
    /// [`portable`], even where native calls exist.
    Portable,
}

impl Io {
    pub(crate) fn write_all_at(self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        match self {
            Io::Native => native::write_all_at(file, buf, offset),
            Io::Portable => portable::write_all_at(file, buf, offset),
        }
    }

    pub(crate) fn open_direct(self, path: &Path) -> std::io::Result<File> {
        match self {
            Io::Native => native::open_direct(path),
            Io::Portable => portable::open_direct(path),
        }
    }
}
