//! Scratch directories removed on drop, and free loopback ports.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed (with everything
/// in it) when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Makes `sessiond-<what>-<pid>-<random>` under the temporary directory.
    pub fn new(what: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        // The pid keeps processes apart, the counter this process's parallel tests,
        // and the time a leftover of an earlier process that had the same pid.
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let hex = format!("{}-{nanos:08x}", N.fetch_add(1, Ordering::SeqCst));
        let path =
            std::env::temp_dir().join(format!("sessiond-{what}-{}-{hex}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (the system picked it for a listener we
/// then closed). Another process may take it before the server binds it; the servers
/// here retry with another port when their start fails.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
