//! `sessiond migrate --from URL --to URL`: copies every session, open and closed, from
//! one store to another, with a progress bar and a count check at the end.
//!
//! Sessions are copied as they are (ids, token hashes, times, history), so clients keep
//! their tokens across the move. Stop the servers using the source first: a file store
//! refuses a second user anyway, and a live source would change under the copy.

use crate::exit::Exit;
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use sessiond::config::redact_password;
use sessiond::{Config, StoreUrl};
use sessiond_core::store::{ListQuery, StatusFilter};
use sessiond_core::{SessionId, Store};

/// `sessiond migrate` flags.
#[derive(Debug, clap::Args)]
#[command(
    after_help = crate::exit::help(
        "every session copied and found in the destination",
        &[Exit::Done, Exit::Failed, Exit::Usage],
        "Store URLs: file: (the data dir's store), file:///path/to/store, postgres://user@host/db[?namespace=schema], redis://host:port[?namespace=prefix], redis+cluster://host:port,host:port (TLS: rediss://, rediss+cluster://, sslmode=verify-full; docs/OPERATIONS.md)\n\nExamples:\n  sessiond migrate --from file: --to 'postgres://postgres@127.0.0.1/sessions'\n  sessiond migrate --from redis://10.0.0.5:6379 --to file:///var/lib/sessiond/store",
    )
)]
pub struct MigrateArgs {
    /// The store to copy from.
    #[arg(long)]
    pub from: String,
    /// The store to copy into (sessions with the same id are replaced).
    #[arg(long)]
    pub to: String,
    /// Data directory that `file:` refers to.
    #[arg(long, env = "SESSIOND_DATA_DIR", default_value = "./sessiond-data")]
    pub data_dir: PathBuf,
    /// Sessions read per page.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
}

/// The configuration that opens the store at `url` (`file:` is under `data_dir`).
fn parse(url: &str, data_dir: &std::path::Path) -> Result<Config, String> {
    let store: StoreUrl = url.parse()?;
    if store == StoreUrl::Memory {
        return Err(
            "memory: holds nothing across processes; migrate from or to a durable store".into(),
        );
    }
    Ok(Config {
        store,
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    })
}

/// Refuses a source that is not there: opening a file store creates it, and copying
/// an empty new store would pass the count check while copying nothing (a typo in
/// `--from` or `--data-dir` must not look like a good backup).
fn check_source(url: &str, config: &Config) -> Result<(), String> {
    if !matches!(config.store, StoreUrl::File(_)) {
        return Ok(());
    }
    let dir = config.store_dir();
    let holds_files = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if holds_files {
        Ok(())
    } else {
        Err(format!(
            "{url:?}: no store at {} (nothing to copy); check --from and --data-dir",
            dir.display()
        ))
    }
}

/// Refuses copying a store onto itself.
fn check_distinct(from: &Config, to: &Config) -> Result<(), String> {
    let same = match (&from.store, &to.store) {
        (StoreUrl::File(_), StoreUrl::File(_)) => {
            let canon = |c: &Config| std::fs::canonicalize(c.store_dir()).ok();
            from.store_dir() == to.store_dir() || canon(from).is_some_and(|f| Some(f) == canon(to))
        }
        (a, b) => a == b,
    };
    if same {
        Err("--from and --to name the same store; nothing to migrate".into())
    } else {
        Ok(())
    }
}

async fn open(url: &str, config: &Config) -> Result<std::sync::Arc<dyn Store>, String> {
    sessiond::open_store(config)
        .await
        .map_err(|e| format!("{url:?}: {e}"))
}

/// Every session id of `store`, page by page.
async fn all_ids(
    store: &dyn Store,
    batch: usize,
    mut each: impl FnMut(&[sessiond_core::Session]),
) -> Result<u64, String> {
    let mut after: Option<SessionId> = None;
    let mut n = 0u64;
    loop {
        let page = store
            .list(&ListQuery {
                app: None,
                status: StatusFilter::Any,
                user: None,
                after,
                newest_first: false,
                limit: batch,
            })
            .await
            .map_err(|e| e.to_string())?;
        n += page.len() as u64;
        each(&page);
        match page.last() {
            Some(last) if page.len() == batch => after = Some(last.id),
            _ => return Ok(n),
        }
    }
}

struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    tty: bool,
    last_decile: u64,
}

impl Progress {
    fn show(&mut self) {
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if self.tty {
            let filled = (pct as usize * 30) / 100;
            eprint!(
                "\r[{}{}] {:>8}/{} {pct:>3}%  {rate:.0}/s ",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                self.done,
                self.total
            );
            let _ = std::io::stderr().flush();
        } else if pct / 10 > self.last_decile || self.done == self.total {
            self.last_decile = pct / 10;
            eprintln!("copied {}/{} ({pct}%, {rate:.0}/s)", self.done, self.total);
        }
    }
}

/// Runs the migration; exit 0 when every session was found in the destination.
pub async fn run(mut args: MigrateArgs) -> Exit {
    // Every check before anything is opened: opening a file store creates it.
    let configs = parse(&args.from, &args.data_dir).and_then(|from| {
        let to = parse(&args.to, &args.data_dir)?;
        check_source(&redact_password(&args.from), &from)?;
        check_distinct(&from, &to)?;
        Ok((from, to))
    });
    let (from, to) = match configs {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sessiond: {e}");
            return Exit::Usage;
        }
    };
    // From here on the URLs are only shown: never with their passwords.
    args.from = redact_password(&args.from);
    args.to = redact_password(&args.to);
    let (from, to) = match (open(&args.from, &from).await, open(&args.to, &to).await) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sessiond: {e}");
            return Exit::Usage;
        }
    };
    let batch = usize::from(args.batch);
    eprintln!(
        "counting the sessions of {} ({})...",
        args.from,
        from.kind()
    );
    let total = match all_ids(from.as_ref(), batch, |_| {}).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("sessiond: reading {}: {e}", args.from);
            return Exit::Failed;
        }
    };
    eprintln!("copying {total} sessions into {} ({})", args.to, to.kind());
    let mut progress = Progress {
        total,
        done: 0,
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        last_decile: 0,
    };
    let mut copied: HashSet<SessionId> = HashSet::new();
    let mut after: Option<SessionId> = None;
    loop {
        let page = match from
            .list(&ListQuery {
                app: None,
                status: StatusFilter::Any,
                user: None,
                after,
                newest_first: false,
                limit: batch,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("\nsessiond: reading {}: {e}", args.from);
                return Exit::Failed;
            }
        };
        for s in &page {
            if let Err(e) = to.import(s.clone()).await {
                eprintln!("\nsessiond: writing session {} into {}: {e}", s.id, args.to);
                return Exit::Failed;
            }
            copied.insert(s.id);
            progress.done += 1;
            if progress.done.is_multiple_of(100) {
                progress.show();
            }
        }
        match page.last() {
            Some(last) if page.len() == batch => after = Some(last.id),
            _ => break,
        }
    }
    progress.show();
    if progress.tty {
        eprintln!();
    }
    if let Err(e) = to.flush().await {
        eprintln!("sessiond: flushing {}: {e}", args.to);
        return Exit::Failed;
    }
    let mut found = 0u64;
    let counted = all_ids(to.as_ref(), batch, |page| {
        found += page.iter().filter(|s| copied.contains(&s.id)).count() as u64;
    })
    .await;
    if let Err(e) = counted {
        eprintln!("sessiond: checking {}: {e}", args.to);
        return Exit::Failed;
    }
    println!(
        "source: {total} sessions; copied: {}; found in the destination: {found}",
        copied.len()
    );
    if found == total && copied.len() as u64 == total {
        println!("count check passed");
        Exit::Done
    } else {
        println!(
            "count check FAILED: the destination lacks {} session(s)",
            total.saturating_sub(found)
        );
        Exit::Failed
    }
}
