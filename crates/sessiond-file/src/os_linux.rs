//! Linux's calls for the file store (see [`crate::os`]): the only module of this crate
//! that names `std::os::unix` or `libc`, compiled on Linux alone.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

/// `pwrite` until all of `buf` is written at `offset`.
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    file.write_all_at(buf, offset)
}

/// `pread` until `buf` is full.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Opens `path` for direct, synchronous writes (`O_DIRECT | O_DSYNC`); fails where the
/// file system refuses direct I/O.
pub(crate) fn open_direct(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
}

/// Creates the directory `path` readable by its owner only (0700), whatever the umask.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(path)
}
