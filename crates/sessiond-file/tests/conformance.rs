//! The store conformance suite on the file store, each test in its own directory.

use sessiond_file::FileStore;

fn fresh_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sessiond-file-conformance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

sessiond_core::conformance_tests!(async { FileStore::open(fresh_dir()).expect("open file store") });
