//! Run with: `cargo run --release -p bench-app -- --listen 127.0.0.1:8045 --store file --data-dir ./bench-app-data`
//!
//! Parses flags, opens the store, binds and serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bench_app::StoreKind;
use clap::Parser;

/// mimalloc rather than the system allocator: a web server's allocations are many,
/// small and freed on other threads than made them, where glibc's arenas contend (see
/// docs/BENCHMARKS.md). The sessiond server makes the same choice.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A minimal sessiond-axum app for load tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// Address to listen on.
    #[arg(long, env = "BENCH_APP_LISTEN", default_value = "127.0.0.1:8045")]
    listen: SocketAddr,
    /// Session store.
    #[arg(long, env = "BENCH_APP_STORE", value_enum, default_value = "file")]
    store: StoreKind,
    /// Directory of the file store.
    #[arg(long, env = "BENCH_APP_DATA_DIR", default_value = "./bench-app-data")]
    data_dir: PathBuf,
    /// Redis server for `--store redis`.
    #[arg(
        long,
        env = "BENCH_APP_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// PostgreSQL server for `--store postgres` (a schema of the run's own is made).
    #[arg(
        long,
        env = "BENCH_APP_POSTGRES_URL",
        default_value = "postgres://root@127.0.0.1/test"
    )]
    postgres_url: String,
    /// With `--store postgres` or `redis`: answer session reads from memory, copies kept
    /// at most this many milliseconds (0: off), kept current by change reports.
    #[arg(long, env = "BENCH_APP_READ_CACHE_MS", default_value_t = 0)]
    read_cache_ms: u64,
    /// Diagnostics only: do not sync the file store's journal (writes then survive
    /// a process crash but not a power loss). Never use it for published figures.
    #[arg(long)]
    no_fsync: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    match run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-app: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> Result<(), Box<dyn std::error::Error>> {
    let cache = (flags.read_cache_ms > 0).then(|| Duration::from_millis(flags.read_cache_ms));
    let manager = match flags.store {
        StoreKind::Redis => bench_app::manager_on_redis(&flags.redis_url, cache).await?,
        StoreKind::Postgres => bench_app::manager_on_postgres(&flags.postgres_url, cache).await?,
        kind => bench_app::manager(kind, &flags.data_dir, !flags.no_fsync)?,
    };
    let app = bench_app::app(manager.clone())?;
    let expiry = tokio::spawn(manager.run_expiry(Duration::from_secs(1)));
    let listener = tokio::net::TcpListener::bind(flags.listen).await?;
    println!(
        "bench-app listening on http://{} ({:?} store{})",
        listener.local_addr()?,
        flags.store,
        if flags.no_fsync {
            ", NO FSYNC: diagnostics only"
        } else {
            ""
        }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    expiry.abort();
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
