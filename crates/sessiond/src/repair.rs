//! `sessiond repair`: brings a damaged embedded store back without losing a valid
//! record. The server refuses to start on a store file that is damaged where valid,
//! acknowledged records follow (a bit flip, a bad sector): dropping what follows would
//! lose acknowledged writes, and skipping the damage silently would hide it. This
//! command, run with the server stopped, copies the damaged bytes to the store's
//! `quarantine/` folder, keeps every valid record, and writes a fresh snapshot.

use crate::exit::Exit;
use std::path::PathBuf;

use sessiond::config::StoreUrl;
use sessiond::Config;
use sessiond_file::FileStore;

/// Repair a damaged embedded (file) store, keeping every valid record.
#[derive(clap::Args)]
#[command(
    after_help = crate::exit::help(
        "repaired (or nothing was damaged): the server starts again",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "Run it with the server stopped, on the data directory the server refused to start on. Damaged bytes and records that cannot be read are copied to <store>/quarantine/; the sessions they held are left out (their tokens stop working) rather than shown in an older state.\n\nExamples:\n  sessiond repair\n  sessiond repair --data-dir /var/lib/sessiond\n  sessiond repair --config /etc/sessiond/sessiond.toml",
    )
)]
pub struct RepairArgs {
    /// TOML configuration file of the server (its store and data directory).
    #[arg(long, env = "SESSIOND_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./sessiond-data, or the configuration's].
    #[arg(long, env = "SESSIOND_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Runs the repair and prints what it did.
pub fn run(args: RepairArgs) -> Exit {
    let mut config = match &args.config {
        Some(p) => match Config::from_file(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sessiond: {e}");
                return Exit::Usage;
            }
        },
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if !matches!(config.store, StoreUrl::File(_)) {
        eprintln!("sessiond: repair is for the embedded file store; this configuration uses another store");
        return Exit::Usage;
    }
    let dir = config.store_dir();
    match FileStore::repair(&dir) {
        Ok(r) => {
            println!("{}: repaired; {} sessions kept", dir.display(), r.sessions);
            for path in &r.set_aside {
                println!("  damaged bytes set aside: {}", path.display());
            }
            for q in &r.quarantined {
                println!(
                    "  unreadable record set aside: {} (session {})",
                    q.copy.display(),
                    q.session
                        .map_or_else(|| "unknown".to_string(), |id| id.to_string())
                );
            }
            if r.set_aside.is_empty() && r.quarantined.is_empty() {
                println!("  nothing was damaged");
            }
            Exit::Done
        }
        Err(e) => {
            eprintln!("sessiond: {e}");
            Exit::Failed
        }
    }
}
