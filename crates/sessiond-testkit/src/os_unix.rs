//! Unix's calls for the test kit: the only module of this crate that names
//! `std::os::unix`, compiled on Unix alone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Makes `path` readable by its owner only (0600), as PostgreSQL demands of a key.
pub(crate) fn owner_only(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
