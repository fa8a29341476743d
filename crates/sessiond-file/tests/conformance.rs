//! The store conformance suite on the file store, each test in its own directory, and
//! the model check with a restart at the end of every case.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sessiond_core::conformance::model::{check_against_model, CaseStores};
use sessiond_core::Store;
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
sessiond_core::hooks_conformance_tests!(async {
    FileStore::open(fresh_dir()).expect("open file store")
});

/// The suite again with the journal written by the standard library's portable calls
/// (`FileOptions::portable_io`: what platforms without their own calls use).
mod portable_io {
    use sessiond_file::{FileOptions, FileStore};

    sessiond_core::conformance_tests!(async {
        let options = FileOptions {
            portable_io: true,
            ..FileOptions::default()
        };
        FileStore::open_with(super::fresh_dir(), options).expect("open file store")
    });
}

/// A fresh directory per case; a restart closes the store and opens its directory
/// again. Directories of passing cases are removed.
#[derive(Default)]
struct FreshDirs {
    last: Mutex<Option<PathBuf>>,
}

#[async_trait::async_trait]
impl CaseStores for FreshDirs {
    async fn store(&self) -> Arc<dyn Store> {
        let dir = fresh_dir();
        let store = FileStore::open(&dir).expect("open file store");
        if let Some(old) = self.last.lock().unwrap().replace(dir) {
            let _ = std::fs::remove_dir_all(old);
        }
        Arc::new(store)
    }

    async fn restart(&self, store: Arc<dyn Store>) -> Option<Arc<dyn Store>> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the store is closed by the restart"
        );
        drop(store);
        let dir = self.last.lock().unwrap().clone().expect("a store was made");
        Some(Arc::new(FileStore::open(&dir).expect("reopen file store")))
    }
}

/// The model check, each case on a store of its own, restarted and read back again at
/// its end: whatever was acknowledged is there after a restart, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_with_the_model_across_restarts() {
    let dirs = FreshDirs::default();
    check_against_model(&dirs).await;
    let last = dirs.last.lock().unwrap().take();
    if let Some(dir) = last {
        let _ = std::fs::remove_dir_all(dir);
    }
}
