//! Unix's calls for the server (see [`crate::private_file`]): the only module of this
//! crate that names `std::os::unix`, compiled on Unix alone.

use std::os::unix::fs::OpenOptionsExt;

/// New files from `opts` get mode 0600.
pub(crate) fn owner_only(opts: &mut std::fs::OpenOptions) {
    opts.mode(0o600);
}
