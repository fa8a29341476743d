//! Shared set-up for the sessiond benchmarks: stores, managers and a SQLite baseline
//! built the same way in every bench, so figures compare like with like.
//!
//! Run with: `cargo bench -p sessiond-bench` (see `docs/BENCHMARKS.md`).

pub mod load;

use std::path::PathBuf;
use std::sync::Arc;

use sessiond_core::{Manager, MemoryStore, Policy, Store};
use sessiond_file::FileStore;

/// A fresh temporary directory for one benchmark.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sessiond-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The stores under test, by name: `memory` and `file` (durable: every write synced).
pub fn store(kind: &str) -> Arc<dyn Store> {
    match kind {
        "memory" => Arc::new(MemoryStore::new()),
        "file" => Arc::new(FileStore::open(temp_dir("file")).expect("open file store")),
        other => panic!("unknown store {other}"),
    }
}

/// A Manager over `store` with app `bench` (seats and a per-user limit, so opens run
/// the full admission).
pub fn manager(store: Arc<dyn Store>) -> Arc<Manager> {
    let m = Manager::new(store);
    m.set_policy(
        "bench",
        Policy {
            seats: Some(u32::MAX),
            max_per_user: Some(u32::MAX),
            ..Default::default()
        },
    )
    .expect("valid policy");
    m.set_policy("plain", Policy::default())
        .expect("valid policy");
    Arc::new(m)
}

/// A SQLite database set up as a durable session table would be: WAL journal,
/// `synchronous = FULL`, a primary key on the token hash.
pub fn sqlite(name: &str) -> rusqlite::Connection {
    let dir = temp_dir(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let c = rusqlite::Connection::open(dir.join("sessions.db")).expect("open sqlite");
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE sessions (token_hash BLOB PRIMARY KEY, id BLOB NOT NULL, app TEXT NOT NULL,
            body TEXT NOT NULL, deadline INTEGER NOT NULL) WITHOUT ROWID;
         CREATE INDEX sessions_deadline ON sessions (deadline);",
    )
    .expect("schema");
    c
}
