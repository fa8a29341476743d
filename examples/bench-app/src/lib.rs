//! Run with: `cargo run --release -p bench-app -- --store file` (then load it with
//! `cargo run --release -p sessiond-bench --bin webload`).
//!
//! The app measured by `webload`: the cost of sessiond-axum on top of a bare axum route.
//! `GET /bare` answers `ok` and never touches the session; `GET /read` reads the integer
//! `n` from the session; `GET /counter` increments `n` atomically, creating the session
//! (and setting its cookie) on the first call. Every increment is durable on the file
//! store before it is answered.

use std::path::Path;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use sessiond_axum::{Session, SessionError, SessionLayer};
use sessiond_core::{Manager, MemoryStore, Policy, Store, StoreError};
use sessiond_file::{FileOptions, FileStore};

/// The app name (and token prefix) of the benchmark's sessions.
pub const APP: &str = "bench";

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded durable store (journal + snapshots in the data directory).
    File,
    /// In memory only.
    Memory,
    /// A Redis server (see `--redis-url`), as web apps sharing sessions across nodes use.
    Redis,
    /// A PostgreSQL server (see `--postgres-url`), the other shared store.
    Postgres,
}

/// Opens the store and a Manager with the benchmark app configured. `fsync` false is a
/// diagnostic only (writes then survive a process crash but not a power loss).
pub fn manager(kind: StoreKind, data_dir: &Path, fsync: bool) -> Result<Arc<Manager>, StoreError> {
    let store: Arc<dyn Store> = match kind {
        StoreKind::Redis | StoreKind::Postgres => {
            return Err(StoreError::Unavailable(
                "open the shared stores with manager_on_redis or manager_on_postgres".into(),
            ))
        }
        StoreKind::File => {
            let options = FileOptions {
                sync: fsync,
                ..Default::default()
            };
            Arc::new(FileStore::open_with(data_dir, options)?)
        }
        StoreKind::Memory => Arc::new(MemoryStore::new()),
    };
    manager_on(store)
}

/// A Manager with the benchmark app over a Redis store at `url` (a fresh key prefix per
/// run, so runs never collide), reading from memory when `read_cache` says for how long.
pub async fn manager_on_redis(
    url: &str,
    read_cache: Option<std::time::Duration>,
) -> Result<Arc<Manager>, StoreError> {
    let prefix = format!("bench-app-{}", std::process::id());
    let options = sessiond_redis::RedisOptions {
        prefix,
        read_cache,
        ..Default::default()
    };
    manager_on(Arc::new(
        sessiond_redis::RedisStore::connect(url, options).await?,
    ))
}

/// A Manager with the benchmark app over a PostgreSQL store at `url`, in a schema of
/// this run's own (so runs never collide), reading from memory when `read_cache` says
/// for how long.
pub async fn manager_on_postgres(
    url: &str,
    read_cache: Option<std::time::Duration>,
) -> Result<Arc<Manager>, StoreError> {
    let options = sessiond_postgres::PostgresOptions {
        schema: format!("bench_app_{}", std::process::id()),
        read_cache,
        ..Default::default()
    };
    manager_on(Arc::new(
        sessiond_postgres::PostgresStore::connect(url, options).await?,
    ))
}

fn manager_on(store: Arc<dyn Store>) -> Result<Arc<Manager>, StoreError> {
    let m = Manager::new(store);
    m.set_policy(APP, Policy::default())
        .map_err(|e| StoreError::Backend(e.into()))?;
    Ok(Arc::new(m))
}

/// The router: `/bare`, `/read`, `/counter`, under the session layer.
pub fn app(manager: Arc<Manager>) -> Result<Router, sessiond_core::Error> {
    let layer = SessionLayer::new(manager, APP)?.with_heartbeat(false);
    Ok(Router::new()
        .route("/bare", get(|| async { "ok" }))
        .route("/read", get(read))
        .route("/counter", get(counter))
        .layer(layer))
}

async fn read(session: Session) -> Result<String, SessionError> {
    Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
}

async fn counter(session: Session) -> Result<String, SessionError> {
    let n = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}
