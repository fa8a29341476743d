//! Run with: `cargo run -p crm` (then open http://127.0.0.1:8044/authenticate.shtml).
//!
//! Parses flags (each also read from a `CRM_*` environment variable), binds, and serves
//! until Ctrl-C or SIGTERM. `crm hash-password` prints an Argon2 hash of each
//! whitespace-separated password read from stdin (how the demo hashes were made).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use crm::{Settings, StoreKind};

/// The CRM example of 4D scalable sessions, on sessiond-axum.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// Address to listen on.
    #[arg(long, env = "CRM_LISTEN", default_value = "127.0.0.1:8044")]
    listen: SocketAddr,
    /// Session store.
    #[arg(long, env = "CRM_STORE", value_enum, default_value = "file")]
    store: Store,
    /// Directory of the file store.
    #[arg(long, env = "CRM_DATA_DIR", default_value = "./crm-data")]
    data_dir: PathBuf,
    /// Seconds without activity before a session ends.
    #[arg(long, env = "CRM_IDLE_TIMEOUT_S", default_value_t = sessiond_core::policy::DEFAULT_IDLE_TIMEOUT_S)]
    idle_timeout_s: u32,
    /// Seconds between browser heartbeats.
    #[arg(long, env = "CRM_HEARTBEAT_INTERVAL_S", default_value_t = sessiond_core::policy::DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S)]
    heartbeat_interval_s: u32,
    /// Seconds past a missed heartbeat before the session ends.
    #[arg(long, env = "CRM_HEARTBEAT_GRACE_S", default_value_t = sessiond_core::policy::DEFAULT_HEARTBEAT_GRACE_S)]
    heartbeat_grace_s: u32,
    /// Milliseconds between sweeps that close timed-out sessions.
    #[arg(long, env = "CRM_EXPIRY_EVERY_MS", default_value_t = 1000)]
    expiry_every_ms: u64,
    /// Serve GET /debug/sessions/{id} (a session's status and close reason by id).
    #[arg(long, env = "CRM_DEBUG_ENDPOINTS")]
    debug_endpoints: bool,
    /// Mark the session cookie Secure (when served over TLS).
    #[arg(long, env = "CRM_SECURE_COOKIE")]
    secure_cookie: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Store {
    /// The embedded durable store (default).
    File,
    /// In memory only.
    Memory,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print Argon2 hashes of passwords read from stdin (one hash per word).
    HashPassword,
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Some(Command::HashPassword) = flags.command {
        return hash_passwords();
    }
    let settings = Settings {
        store: match flags.store {
            Store::File => StoreKind::File,
            Store::Memory => StoreKind::Memory,
        },
        data_dir: flags.data_dir,
        idle_timeout_s: flags.idle_timeout_s,
        heartbeat_interval_s: flags.heartbeat_interval_s,
        heartbeat_grace_s: flags.heartbeat_grace_s,
        expiry_every: Duration::from_millis(flags.expiry_every_ms.max(10)),
        debug_endpoints: flags.debug_endpoints,
        secure_cookie: flags.secure_cookie,
    };
    let listener = match tokio::net::TcpListener::bind(flags.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crm: cannot listen on {}: {e}", flags.listen);
            return ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().map_or(flags.listen, |a| a);
    println!("crm listening on http://{addr}/authenticate.shtml");
    match crm::run(listener, settings, shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_passwords() -> ExitCode {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        for word in line.split_whitespace() {
            match crm::hash_password(word) {
                Ok(h) => println!("{h}"),
                Err(e) => {
                    eprintln!("crm: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
