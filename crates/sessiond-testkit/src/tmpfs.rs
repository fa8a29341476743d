//! [`Tmpfs`]: a small file system of its own for a test that needs a disk to fill up.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted for one test (it needs root), unmounted and removed
/// when dropped.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount`'s spelling: `4m`) on a new directory named
    /// after `name` and this process; `Err(why)` when it cannot (not root).
    pub fn mount(name: &str, size: &str) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("sessiond-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return Err("mounting a tmpfs needs root (run as root)".into());
        }
        Ok(Tmpfs(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Fills the file system with a file at `path` until it refuses another byte.
    pub fn fill(path: &Path) {
        use std::io::Write;
        let Ok(mut f) = std::fs::File::create(path) else {
            return;
        };
        let block = vec![7u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[7]).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
