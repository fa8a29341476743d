//! Files only their owner may read (the admin token, license signing keys): created new,
//! never over an existing file. On Unix they get mode 0600 whatever the umask
//! (`os_unix.rs`, the only module of this crate that names `std::os::unix`);
//! elsewhere they are as private as their directory makes them.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a new file at `path`, readable by its owner only, and syncs it.
/// Fails if the file exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    crate::os_unix::owner_only(&mut opts);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
