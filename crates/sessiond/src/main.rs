//! The `sessiond` command: `serve` runs the server; the other subcommands are operator
//! tools that talk to a running server over its HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use exit::Exit;
use sessiond::Config;

/// mimalloc rather than the system allocator: a server's allocations are many, small
/// and often freed on another thread than made them, where glibc's arenas contend
/// (docs/BENCHMARKS.md, web sessions).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod connect;
mod exit;
mod license_cmd;
mod migrate;
mod repair;
mod table;

/// sessiond: a session manager (cookie sessions, seat-limited client sessions, admin).
#[derive(Parser)]
#[command(name = "sessiond", version = sessiond::licensing::VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API v1).
    ///
    /// With no options it listens on 127.0.0.1:7420 and keeps sessions durably under
    /// ./sessiond-data, with an app named "default"; the admin token is generated into
    /// ./sessiond-data/admin-token on first start and printed once.
    #[command(
        after_help = exit::help(
            "stopped by SIGTERM or Ctrl-C, every change flushed",
            &[Exit::Done, Exit::Failed, Exit::Usage],
            "Examples:\n  sessiond serve\n  sessiond serve --config sessiond.toml\n  sessiond serve --listen 0.0.0.0:7420 --data-dir /var/lib/sessiond\n  SESSIOND_STORE=memory: sessiond serve",
        )
    )]
    Serve(ServeArgs),
    /// List, inspect and close sessions of a running server.
    #[command(
        after_help = exit::help(
            "done",
            &[Exit::Done, Exit::Failed, Exit::Usage],
            "Examples:\n  sessiond sessions list --app default\n  sessiond sessions kill 0192f0c1-7a3b-7cde-8f01-23456789abcd\n  sessiond sessions close-all --app gestan --except <my-session-id>\n  sessiond sessions history --app gestan",
        )
    )]
    Sessions {
        #[command(flatten)]
        remote: cli::Remote,
        #[command(subcommand)]
        cmd: cli::SessionsCmd,
    },
    /// Take a seat in an app, like a desktop client: heartbeat, listen, exit when closed.
    Connect(connect::ConnectArgs),
    /// Copy every session (open and history) from one store to another.
    Migrate(migrate::MigrateArgs),
    /// Repair a damaged embedded store (server stopped), keeping every valid record.
    Repair(repair::RepairArgs),
    /// Make and check signed license files (seats and expiry per app).
    #[command(subcommand, after_help = exit::help(
        "done; for verify: the license is valid",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "verify ends with 1 for an expired license and 2 for an invalid one.",
    ))]
    License(license_cmd::LicenseCmd),
    /// Show the apps of a running server: policy, seats used and total.
    #[command(after_help = exit::help(
        "done",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "Examples:\n  sessiond apps list\n  sessiond apps show gestan --json",
    ))]
    Apps {
        #[command(flatten)]
        remote: cli::Remote,
        #[command(subcommand)]
        cmd: cli::AppsCmd,
    },
    /// Look at an app's webhooks and what is left to deliver; send a dead letter again.
    #[command(after_help = exit::help(
        "done",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "Examples:\n  sessiond hooks list --app crm\n  sessiond hooks deliveries --app crm --dead\n  sessiond hooks resend --app crm <delivery-id>\n\nHooks are configured in the configuration file ([apps.<name>.hooks.<hook>], docs/HOOKS.md).",
    ))]
    Hooks {
        #[command(flatten)]
        remote: cli::Remote,
        #[command(subcommand)]
        cmd: cli::HooksCmd,
    },
    /// Have a running server back up its embedded store, without stopping it.
    ///
    /// The server writes a consistent copy into <data_dir>/backups/<NAME> on its own
    /// machine: every change acknowledged before the command started is in it. To
    /// restore, stop the server and start it with the copy as its store
    /// (--store file:///path/to/the/backup), or copy the directory over <data_dir>/store.
    /// A server on Redis or PostgreSQL refuses: back those up with their own tools.
    #[command(after_help = exit::help(
        "the backup is written and synced",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "Examples:\n  sessiond backup\n  sessiond backup --name before-upgrade --json",
    ))]
    Backup {
        #[command(flatten)]
        remote: cli::Remote,
        /// The backup's directory name under <data_dir>/backups/ (letters, digits, '-',
        /// '_', '.') [default: backup- and the time, UTC].
        #[arg(long)]
        name: Option<String>,
    },
    /// Have a running server read its configuration again, without a restart.
    ///
    /// Apps, their policies (seats, limits, timeouts for new sessions) and credentials
    /// change at once; a file that cannot be used changes nothing and says why;
    /// settings that take a restart (listen, store, limits...) are named. The same as
    /// sending the server SIGHUP, with the answer on the terminal.
    #[command(after_help = exit::help(
        "reloaded",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "Examples:\n  sessiond reload\n  sessiond reload --server https://sessions.example.com --json",
    ))]
    Reload {
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Print a shell completion script for sessiond.
    #[command(
        after_help = "Examples:\n  sessiond completions bash > /etc/bash_completion.d/sessiond\n  sessiond completions zsh > \"${fpath[1]}/_sessiond\"\n  sessiond completions fish > ~/.config/fish/completions/sessiond.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page of sessiond (roff), from the same definitions as --help.
    #[command(
        after_help = "Examples:\n  sessiond man | man -l -\n  sessiond man --dir /usr/share/man/man1   (sessiond.1 and a page per subcommand)"
    )]
    Man {
        /// Write sessiond.1 and sessiond-<subcommand>.1 into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Prints the manual page `sessiond(1)`, or with `dir` writes it and one page per
/// subcommand (`sessiond-serve(1)`...) there.
fn man_page(dir: Option<&std::path::Path>) -> Exit {
    let cmd = <Cli as clap::CommandFactory>::command();
    let written = match dir {
        Some(d) => std::fs::create_dir_all(d).and_then(|()| clap_mangen::generate_to(cmd, d)),
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => Exit::Done,
        Err(e) => {
            eprintln!("sessiond: {e}");
            Exit::Failed
        }
    }
}

/// Runs an operator command, mapping failures to [`Exit::Failed`]. API refusals were
/// already printed by the command; other failures (connection refused) are printed here.
async fn operator(result: anyhow::Result<()>) -> Exit {
    match result {
        Ok(()) => Exit::Done,
        Err(e) => {
            if !matches!(e.downcast_ref(), Some(sessiond_client::Error::Api { .. })) {
                eprintln!("sessiond: {e:#}");
            }
            Exit::Failed
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see sessiond.example.toml). Any of its keys can also
    /// be set by a variable: SESSIOND__ and the key's path joined by "__", e.g.
    /// SESSIOND__APPS__GESTAN__SEATS=10; those go over the file, the flags over both.
    #[arg(long, env = "SESSIOND_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, an IP and a port (0.0.0.0:7420 for every interface)
    /// [default: 127.0.0.1:7420].
    #[arg(long, env = "SESSIOND_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// HTTPS: the certificate chain, PEM, the server's certificate first. With
    /// --tls-key, the server also serves HTTPS on --tls-listen; a renewed file is
    /// picked up on SIGHUP or within 10 s, without a restart.
    #[arg(
        long,
        env = "SESSIOND_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SESSIOND_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// HTTPS listen address [default: 127.0.0.1:7443].
    #[arg(long, env = "SESSIOND_TLS_LISTEN")]
    tls_listen: Option<std::net::SocketAddr>,
    /// HTTPS only: no plain HTTP listener.
    #[arg(long, env = "SESSIOND_TLS_ONLY")]
    tls_only: bool,
    /// Data directory: the embedded store and the admin token [default: ./sessiond-data].
    #[arg(long, env = "SESSIOND_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Session store: file: (default, durable, under the data dir), file:///path,
    /// postgres://user@host/db[?namespace=schema], redis://host:port[?namespace=prefix]
    /// (many nodes share those two), or memory: (lost on exit). Over TLS:
    /// rediss://host:port[?ca_cert=/path/ca.pem], and for PostgreSQL
    /// ?sslmode=verify-full[&sslrootcert=/path/ca.pem] (docs/OPERATIONS.md). On those
    /// two, &read_cache_ms=1000 answers session reads from memory (docs/OPERATIONS.md,
    /// "Reads from memory").
    #[arg(long, env = "SESSIOND_STORE")]
    store: Option<String>,
    /// Log filter, e.g. info or sessiond=debug.
    #[arg(long, env = "SESSIOND_LOG", default_value = "info")]
    log: String,
}

fn load(args: &ServeArgs) -> Result<Config, String> {
    // Any key of the file from SESSIOND__* variables (docs/OPERATIONS.md).
    let vars = sessiond::config::env_vars().map_err(|e| e.to_string())?;
    let mut config =
        Config::from_file_and_env(args.config.as_deref(), vars).map_err(|e| e.to_string())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.tls_cert.is_some() {
        config.tls = sessiond::config::tls_files(args.tls_cert.clone(), args.tls_key.clone())
            .map_err(|e| e.0)?;
    }
    if let Some(l) = args.tls_listen {
        config.tls_listen = l;
    }
    config.tls_only |= args.tls_only;
    config.check_tls().map_err(|e| e.0)?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(s) = &args.store {
        config.store = s.parse().map_err(|e| format!("--store: {e}"))?;
    }
    match std::env::var("SESSIOND_ADMIN_TOKEN") {
        Ok(t) => {
            sessiond::config::check_secret("SESSIOND_ADMIN_TOKEN", &t).map_err(|e| e.0)?;
            config.admin_token = Some(sessiond::Secret::new(t));
            config.retiring_admin_tokens.clear();
            config.admin_token_from_env = true;
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("SESSIOND_ADMIN_TOKEN must be visible ASCII characters".into())
        }
        Err(std::env::VarError::NotPresent) => {}
    }
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn serve(args: ServeArgs) -> Exit {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!(
            "sessiond: --log {:?}: {e}; logging at info instead",
            args.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (a full disk under the log) is dropped: the
        // default reports it with `eprintln!`, which panics when that write fails too,
        // and a panic there once killed the journal writer mid-failure.
        .log_internal_errors(false)
        .init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sessiond: {e}");
            return Exit::Usage;
        }
    };
    let listeners = match sessiond::Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sessiond: {e}");
            return Exit::Failed;
        }
    };
    match sessiond::run_on(listeners, config, shutdown_signal()).await {
        Ok(()) => Exit::Done,
        Err(sessiond::ServeError::Config(e)) => {
            eprintln!("sessiond: configuration: {e}");
            Exit::Usage
        }
        Err(e) => {
            eprintln!("sessiond: {e}");
            Exit::Failed
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one place a command's end becomes the process's exit code.
    let end = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Sessions { remote, cmd } => operator(cli::run_sessions(&remote, cmd).await).await,
        Command::Apps { remote, cmd } => operator(cli::run_apps(&remote, cmd).await).await,
        Command::Hooks { remote, cmd } => operator(cli::run_hooks(&remote, cmd).await).await,
        Command::Reload { remote } => operator(cli::run_reload(&remote).await).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "sessiond", &mut std::io::stdout());
            Exit::Done
        }
        Command::Man { dir } => man_page(dir.as_deref()),
        Command::Backup { remote, name } => {
            operator(cli::run_backup(&remote, name.as_deref()).await).await
        }
        Command::License(cmd) => license_cmd::run(cmd),
        Command::Connect(args) => connect::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Repair(args) => repair::run(args),
    };
    end.into()
}
