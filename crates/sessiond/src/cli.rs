//! The operator commands (`sessiond sessions ...`, `sessiond apps ...`): list, show, kill
//! and close sessions and look at apps on a running server, through its HTTP API with
//! `sessiond-client`. They print aligned plain-text tables (drawn by [`crate::table`]),
//! or the API's JSON with `--json`. This module owns the flags, the calls and what each
//! table shows; `main` only dispatches, e.g.:
//!
//! ```ignore
//! Command::Sessions { #[command(flatten)] remote: cli::Remote, #[command(subcommand)] cmd: cli::SessionsCmd }
//! Command::Sessions { remote, cmd } => cli::run_sessions(&remote, cmd).await,
//! ```
//!
//! API refusals are printed here as `error: <message> (<code>)`; the returned error then
//! wraps the [`sessiond_client::Error::Api`], so `main` can recognise it and not print it
//! twice.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use sessiond_client::{App, Client, Killed, ListQuery, Order, Session, StatusFilter};

use crate::table::{self, dash, short_time};

/// The server the commands talk to unless told otherwise (`sessiond serve`'s default).
const DEFAULT_SERVER: &str = "http://127.0.0.1:7420";
/// Where `sessiond serve` keeps its data (and the admin token) by default.
const DEFAULT_DATA_DIR: &str = "./sessiond-data";
/// The admin token file `sessiond serve` writes into the data directory.
const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Page size of `sessions list`.
const DEFAULT_LIMIT: &str = "100";
/// Rows of `sessions history`.
const DEFAULT_HISTORY_LIMIT: &str = "20";
/// Longest JSON shown in a detail view; `--json` shows everything.
const MAX_JSON_CHARS: usize = 200;

/// How to reach the server: address, credential and output format.
#[derive(Args, Clone)]
#[command(next_help_heading = "Connection")]
pub struct Remote {
    /// URL of the sessiond server.
    #[arg(long, global = true, env = "SESSIOND_SERVER", value_name = "URL", default_value = DEFAULT_SERVER)]
    pub server: String,

    /// Admin token or app key (an app key sees only its app). When absent, the admin
    /// token is read from <DATA_DIR>/admin-token, which `sessiond serve` writes on first
    /// start.
    #[arg(
        long,
        global = true,
        env = "SESSIOND_TOKEN",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Data directory of a local server, where its admin-token file is found.
    #[arg(long, global = true, env = "SESSIOND_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// For an https:// server whose certificate a private CA signed: that CA's
    /// certificate (PEM), trusted besides the system's roots.
    #[arg(long, global = true, env = "SESSIOND_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("ca_cert", &self.ca_cert)
            .field("json", &self.json)
            .finish()
    }
}

impl Remote {
    /// The credential: `--token` / `SESSIOND_TOKEN`, else the admin-token file if any.
    fn credential(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(token.to_string()));
        }
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e)
                .with_context(|| format!("cannot read the admin token from {}", path.display())),
        }
    }

    fn client(&self) -> anyhow::Result<Client> {
        client(&self.server, self.credential()?, self.ca_cert.as_deref())
    }
}

/// A client of the server at `server` with `credential`, trusting the CA certificate
/// file `ca_cert` besides the system's roots: how every command reaches a server.
pub fn client(
    server: &str,
    credential: Option<String>,
    ca_cert: Option<&Path>,
) -> anyhow::Result<Client> {
    let client = Client::new(server, credential)?;
    Ok(match ca_cert {
        None => client,
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            client
                .with_ca_cert(&pem)
                .with_context(|| format!("--ca-cert {}", path.display()))?
        }
    })
}

/// Which sessions `sessions list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Open sessions.
    Open,
    /// Closed sessions still kept as history.
    Closed,
    /// Both.
    Any,
}

impl From<StatusArg> for StatusFilter {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Open => StatusFilter::Open,
            StatusArg::Closed => StatusFilter::Closed,
            StatusArg::Any => StatusFilter::Any,
        }
    }
}

/// `sessiond sessions ...`: watch and control the sessions of a running server.
#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    /// List an app's sessions, oldest first.
    ///
    /// Shows one page of --limit sessions; --all follows the pages to the end.
    #[command(
        after_help = "Examples:\n  sessiond sessions list\n  sessiond sessions list --app erp --status any --all\n  sessiond sessions list --user ann --json"
    )]
    List {
        /// The app.
        #[arg(long, default_value = "default")]
        app: String,
        /// Which sessions: open, closed or any.
        #[arg(long, value_enum, default_value = "open")]
        status: StatusArg,
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Sessions per page.
        #[arg(long, default_value = DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Follow the pages to the end instead of showing the first one.
        #[arg(long)]
        all: bool,
    },
    /// Show one session in full, open or closed.
    #[command(
        after_help = "Example:\n  sessiond sessions show 0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e"
    )]
    Show {
        /// The session id (from `sessiond sessions list`).
        id: String,
    },
    /// Close a session as `killed`, or with --user every open session of one user in an
    /// app ("logout everywhere", as `closed_all`); their clients are told at once. With
    /// the admin token, a session whose stored record cannot be read is removed instead.
    #[command(
        after_help = "Examples:\n  sessiond sessions kill 0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e\n  sessiond sessions kill --user ann --app erp"
    )]
    Kill {
        /// The session id.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        /// Every open session of this user instead (in --app).
        #[arg(long)]
        user: Option<String>,
        /// The app of --user.
        #[arg(long, default_value = "default", requires = "user")]
        app: String,
    },
    /// Close every open session of an app, except those given with --except.
    ///
    /// The sessions close as `closed_all` and their clients are told at once.
    #[command(
        after_help = "Examples:\n  sessiond sessions close-all --app erp\n  sessiond sessions close-all --app erp --except 0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e"
    )]
    CloseAll {
        /// The app.
        #[arg(long, default_value = "default")]
        app: String,
        /// A session to keep open; repeat for several.
        #[arg(long, value_name = "ID")]
        except: Vec<String>,
    },
    /// Show recently closed sessions, newest first, with why and when they closed.
    #[command(
        after_help = "Examples:\n  sessiond sessions history\n  sessiond sessions history --app erp --user ann --limit 50"
    )]
    History {
        /// The app.
        #[arg(long, default_value = "default")]
        app: String,
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// How many sessions to show.
        #[arg(long, default_value = DEFAULT_HISTORY_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

/// `sessiond apps ...`: look at the apps of a running server.
#[derive(Debug, Subcommand)]
pub enum AppsCmd {
    /// Show an app: seats, open sessions, policy and license.
    #[command(after_help = "Example:\n  sessiond apps show default")]
    Show {
        /// The app's name.
        app: String,
    },
    /// List every app with its seats and open sessions (admin token).
    #[command(after_help = "Example:\n  sessiond apps list --json")]
    List,
}

/// `sessiond hooks ...`: an app's webhooks and what is left to deliver (docs/HOOKS.md).
#[derive(Debug, Subcommand)]
pub enum HooksCmd {
    /// List an app's webhooks: name, where they go (origin only), events, retries.
    #[command(after_help = "Example:\n  sessiond hooks list --app crm")]
    List {
        /// The app.
        #[arg(long, default_value = "default")]
        app: String,
    },
    /// Show the deliveries the store still holds for an app, oldest first: waiting for
    /// their next try (with the last error) or dead letters.
    #[command(
        after_help = "Examples:\n  sessiond hooks deliveries --app crm\n  sessiond hooks deliveries --app crm --dead --json"
    )]
    Deliveries {
        /// The app.
        #[arg(long, default_value = "default")]
        app: String,
        /// Only dead letters (given up on after the hook's last try).
        #[arg(long, conflicts_with = "pending")]
        dead: bool,
        /// Only deliveries still to be tried.
        #[arg(long)]
        pending: bool,
        /// How many at most.
        #[arg(long, default_value = DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Send a delivery again now (a dead letter, or one waiting for its next try),
    /// its tries counted from zero. The receiver gets the same event id.
    #[command(
        after_help = "Example:\n  sessiond hooks resend --app crm 019af3c1-7a1e-7c2b-9d4e-5f6a7b8c9d0e"
    )]
    Resend {
        /// The app.
        #[arg(long, default_value = "default")]
        app: String,
        /// The delivery id (from `sessiond hooks deliveries`).
        id: String,
    },
}

/// Runs a `hooks` command. Errors as for [`run_sessions`].
pub async fn run_hooks(remote: &Remote, cmd: HooksCmd) -> anyhow::Result<()> {
    let client = remote.client()?;
    let text = hooks(&client, remote.json, cmd)
        .await
        .map_err(|e| remote.report(e))?;
    print(&text)
}

async fn hooks(client: &Client, json: bool, cmd: HooksCmd) -> Answer {
    let s = |v: &Value| v.as_str().map_or_else(dash, str::to_string);
    match cmd {
        HooksCmd::List { app } => {
            let v = client.hooks(&app).await?;
            if json {
                return Ok(to_json(&v));
            }
            let hooks = v["hooks"].as_array().cloned().unwrap_or_default();
            if hooks.is_empty() {
                return Ok(format!("app {app} has no webhooks\n"));
            }
            let rows: Vec<Vec<String>> = hooks
                .iter()
                .map(|h| {
                    let events: Vec<&str> = h["events"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
                        .unwrap_or_default();
                    vec![
                        s(&h["name"]),
                        s(&h["url"]),
                        events.join(","),
                        format!("{}", h["max_tries"]),
                        format!("{}s", h["first_retry_s"]),
                    ]
                })
                .collect();
            Ok(table::with_header(
                &["HOOK", "URL", "EVENTS", "TRIES", "FIRST RETRY"],
                &rows,
            ))
        }
        HooksCmd::Deliveries {
            app,
            dead,
            pending,
            limit,
        } => {
            let state = match (dead, pending) {
                (true, _) => "dead",
                (_, true) => "pending",
                _ => "any",
            };
            let v = client.hook_deliveries(&app, state, limit).await?;
            if json {
                return Ok(to_json(&v));
            }
            let list = v["deliveries"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                return Ok(format!("no webhook deliveries waiting in app {app}\n"));
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    let state = if d["dead"].as_bool() == Some(true) {
                        "dead".to_string()
                    } else {
                        format!("next {}", short_time(d["due"].as_str().unwrap_or("")))
                    };
                    vec![
                        s(&d["id"]),
                        s(&d["hook"]),
                        s(&d["event"]),
                        short_time(d["created_at"].as_str().unwrap_or("")),
                        format!("{}", d["tries"]),
                        state,
                        s(&d["error"]),
                    ]
                })
                .collect();
            Ok(table::with_header(
                &[
                    "DELIVERY",
                    "HOOK",
                    "EVENT",
                    "AT",
                    "TRIES",
                    "STATE",
                    "LAST ERROR",
                ],
                &rows,
            ))
        }
        HooksCmd::Resend { app, id } => {
            let v = client.resend_delivery(&app, &id).await?;
            Ok(if json {
                to_json(&v)
            } else {
                format!("delivery {id} of app {app} is due now\n")
            })
        }
    }
}

/// Runs a `sessions` command. An API refusal is printed as `error: <message> (<code>)` and
/// returned as an error wrapping [`sessiond_client::Error::Api`] (already reported).
pub async fn run_sessions(remote: &Remote, cmd: SessionsCmd) -> anyhow::Result<()> {
    let client = remote.client()?;
    let text = sessions(&client, remote.json, cmd)
        .await
        .map_err(|e| remote.report(e))?;
    print(&text)
}

/// Runs an `apps` command. Errors as for [`run_sessions`].
pub async fn run_apps(remote: &Remote, cmd: AppsCmd) -> anyhow::Result<()> {
    let client = remote.client()?;
    let text = apps(&client, remote.json, cmd)
        .await
        .map_err(|e| remote.report(e))?;
    print(&text)
}

/// `sessiond backup`: asks the server for a backup of its embedded store and says
/// where it went.
pub async fn run_backup(remote: &Remote, name: Option<&str>) -> anyhow::Result<()> {
    let client = remote.client()?;
    eprintln!("backing up the store of {} ...", remote.server);
    let b = client.backup(name).await.map_err(|e| remote.report(e))?;
    let text = if remote.json {
        to_json(&json!(b))
    } else {
        format!(
            "backup written to {} on the server's machine: {} session(s), {} byte(s), in {} ms\n\
             restore: stop the server, then start it with --store file://{}\n",
            b.path, b.sessions, b.bytes, b.took_ms, b.path
        )
    };
    print(&text)
}

/// `sessiond reload`: asks the server to read its configuration again and says what
/// came of it.
pub async fn run_reload(remote: &Remote) -> anyhow::Result<()> {
    let client = remote.client()?;
    let r = client.reload().await.map_err(|e| remote.report(e))?;
    if remote.json {
        return print(&to_json(&r));
    }
    let list = |k: &str| {
        let v: Vec<&str> = r[k]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let c = &r["credentials"];
    let mut text = format!(
        "configuration reloaded\napps added:   {}\napps changed: {}\ncredentials:  {} admin, {} operator, {} app key(s), {} client key(s)\n",
        list("apps_added"),
        list("apps_changed"),
        c["admin"],
        c["operators"],
        c["app_keys"],
        c["client_keys"]
    );
    if r["restart_needed"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        text.push_str(&format!("take a restart: {}\n", list("restart_needed")));
    }
    print(&text)
}

type Answer = Result<String, sessiond_client::Error>;

async fn sessions(client: &Client, json: bool, cmd: SessionsCmd) -> Answer {
    match cmd {
        SessionsCmd::List {
            app,
            status,
            user,
            limit,
            all,
        } => {
            let mut query = ListQuery {
                status: Some(status.into()),
                user,
                limit: Some(limit),
                order: Some(Order::Asc),
                after: None,
            };
            let mut page = client.list_sessions(&app, &query).await?;
            while all && page.next.is_some() && page.next != query.after {
                query.after = page.next.take();
                let more = client.list_sessions(&app, &query).await?;
                page.sessions.extend(more.sessions);
                page.next = more.next;
            }
            if json {
                return Ok(to_json(&json!(page)));
            }
            let mut text = sessions_text(
                &page.sessions,
                false,
                &format!("no {} sessions in app {app}", status_word(status)),
            );
            if page.next.is_some() {
                text.push_str("(more sessions follow: add --all to list them all)\n");
            }
            Ok(text)
        }
        SessionsCmd::History { app, user, limit } => {
            let query = ListQuery {
                status: Some(StatusFilter::Closed),
                user,
                limit: Some(limit),
                order: Some(Order::Desc),
                after: None,
            };
            let page = client.list_sessions(&app, &query).await?;
            if json {
                return Ok(to_json(&json!(page)));
            }
            Ok(sessions_text(
                &page.sessions,
                true,
                &format!("no closed sessions kept for app {app}"),
            ))
        }
        SessionsCmd::Show { id } => {
            let session = client.get_session(&id).await?;
            Ok(if json {
                to_json(&json!(session))
            } else {
                table::fields(&session_fields(&session))
            })
        }
        SessionsCmd::Kill {
            id: None,
            user,
            app,
        } => {
            // clap requires --user without an id; an empty one is refused by the server.
            let user = user.unwrap_or_default();
            let closed = client.close_user(&app, &user, &[]).await?;
            Ok(if json {
                to_json(&json!({ "closed": closed }))
            } else {
                let s = if closed == 1 { "" } else { "s" };
                format!("closed {closed} session{s} of user {user} in app {app}\n")
            })
        }
        SessionsCmd::Kill { id: Some(id), .. } => match client.kill(&id).await? {
            Killed::Closed(session) => Ok(if json {
                to_json(&json!(session))
            } else {
                format!("session {} {}\n", session.id, status_text(&session))
            }),
            discarded @ Killed::Discarded { .. } => Ok(if json {
                to_json(&json!(discarded))
            } else {
                format!("session {id}: its record could not be read and was removed\n")
            }),
        },
        SessionsCmd::CloseAll { app, except } => {
            let closed = client.close_all(&app, &except).await?;
            Ok(if json {
                to_json(&json!({ "closed": closed }))
            } else {
                let s = if closed == 1 { "" } else { "s" };
                format!("closed {closed} session{s} of app {app}\n")
            })
        }
    }
}

async fn apps(client: &Client, json: bool, cmd: AppsCmd) -> Answer {
    match cmd {
        AppsCmd::Show { app } => {
            let app = client.get_app(&app).await?;
            Ok(if json {
                to_json(&json!(app))
            } else {
                table::fields(&app_fields(&app))
            })
        }
        AppsCmd::List => {
            let apps = client.list_apps().await?;
            if json {
                return Ok(to_json(&json!({ "apps": apps })));
            }
            let rows: Vec<Vec<String>> = apps
                .iter()
                .map(|a| vec![a.name.clone(), seats_text(a), a.open.to_string()])
                .collect();
            Ok(table::with_header(&["NAME", "SEATS", "OPEN"], &rows))
        }
    }
}

impl Remote {
    /// Prints an API refusal the way operators read it, with a hint where one helps;
    /// every error then goes back to `main` (the others unprinted: their message names
    /// the server and the cause, and `main` adds the hint of a server that does not
    /// answer).
    fn report(&self, err: sessiond_client::Error) -> anyhow::Error {
        match &err {
            sessiond_client::Error::Api {
                status,
                code,
                message,
                ..
            } => {
                let message = if code == "session_closed" {
                    // The server's words are for the session's client ("open a new one").
                    "that session is already closed".to_string()
                } else {
                    message.clone()
                };
                eprintln!("error: {message} ({code})");
                if *status == 401 {
                    let file = self.data_dir.join(ADMIN_TOKEN_FILE);
                    let looked = match self.token.as_deref().map(str::trim) {
                        Some(t) if !t.is_empty() => "the token given was refused".to_string(),
                        _ if file.exists() => {
                            format!("the token in {} was refused", file.display())
                        }
                        _ => format!("no --token, no SESSIOND_TOKEN, and no {}", file.display()),
                    };
                    eprintln!(
                        "hint: pass the admin token or an app key with --token or SESSIOND_TOKEN, or the server's --data-dir ({looked})"
                    );
                }
            }
            sessiond_client::Error::Transport(_) => {
                eprintln!(
                    "hint: is sessiond running at {}? Name it with --server or SESSIOND_SERVER",
                    self.server
                );
            }
            _ => {}
        }
        err.into()
    }
}

/// Writes the output; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

/// Pretty JSON of an answer (callers turn typed answers into a `Value` with `json!`, which
/// cannot fail for these plain trees with string keys).
fn to_json(value: &Value) -> String {
    let mut text = format!("{value:#}");
    text.push('\n');
    text
}

fn status_word(status: StatusArg) -> &'static str {
    match status {
        StatusArg::Open => "open",
        StatusArg::Closed => "closed",
        StatusArg::Any => "kept",
    }
}

/// The session table, or `empty` when there is none. History adds when and by whom.
fn sessions_text(sessions: &[Session], history: bool, empty: &str) -> String {
    if sessions.is_empty() {
        return format!("{empty}\n");
    }
    let mut headers = vec![
        "ID",
        "USER",
        "CLIENT",
        "IP",
        "STATUS",
        "OPENED",
        "LAST ACTIVITY",
        "LAST HEARTBEAT",
    ];
    if history {
        headers.extend(["CLOSED", "BY"]);
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let mut row = session_row(s);
            if history {
                row.push(s.closed_at.as_deref().map_or_else(dash, short_time));
                row.push(s.closed_by.as_ref().map_or_else(dash, ToString::to_string));
            }
            row
        })
        .collect();
    table::with_header(&headers, &rows)
}

/// One row of the session table.
fn session_row(s: &Session) -> Vec<String> {
    let heartbeat = match s.heartbeat {
        None => dash(),
        Some(h) if !h.active => format!("{} (paused)", short_time(&s.last_heartbeat_at)),
        Some(_) => short_time(&s.last_heartbeat_at),
    };
    vec![
        s.id.clone(),
        s.user.clone().unwrap_or_else(|| "(guest)".to_string()),
        s.client.label.clone().unwrap_or_else(dash),
        s.client.ip.clone().unwrap_or_else(dash),
        status_text(s),
        short_time(&s.created_at),
        short_time(&s.last_activity_at),
        heartbeat,
    ]
}

/// `open`, or `closed: <reason>`.
fn status_text(s: &Session) -> String {
    match &s.reason {
        Some(reason) if !s.is_open() => format!("{}: {reason}", s.status.as_str()),
        _ => s.status.as_str().to_string(),
    }
}

/// A JSON value on one line, cut to `MAX_JSON_CHARS`.
fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_JSON_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_JSON_CHARS).collect();
    cut.push_str("… (--json shows all)");
    cut
}

fn session_fields(s: &Session) -> Vec<(String, String)> {
    let or_dash = |v: &Option<String>| v.as_deref().map_or_else(dash, str::to_string);
    let time = |v: &Option<String>| v.as_deref().map_or_else(dash, short_time);
    let heartbeat = match s.heartbeat {
        None => "off".to_string(),
        Some(h) => format!(
            "every {} s, grace {} s{}",
            h.interval_s,
            h.grace_s,
            if h.active { "" } else { " (paused)" }
        ),
    };
    let privileges = if s.privileges.is_empty() {
        dash()
    } else {
        s.privileges.join(", ")
    };
    let fields = [
        ("ID", s.id.clone()),
        ("App", s.app.clone()),
        (
            "User",
            s.user.clone().unwrap_or_else(|| "(guest)".to_string()),
        ),
        ("Privileges", privileges),
        ("Status", status_text(s)),
        (
            "Closed by",
            s.closed_by.as_ref().map_or_else(dash, ToString::to_string),
        ),
        ("Client", or_dash(&s.client.label)),
        ("IP", or_dash(&s.client.ip)),
        ("User agent", or_dash(&s.client.user_agent)),
        ("Opened", short_time(&s.created_at)),
        ("Last activity", short_time(&s.last_activity_at)),
        ("Last heartbeat", short_time(&s.last_heartbeat_at)),
        ("Heartbeat", heartbeat),
        ("Idle timeout", format!("{} s", s.idle_timeout_s)),
        ("Expires", time(&s.expires_at)),
        ("Closed", time(&s.closed_at)),
        (
            "Takes a seat",
            if s.counts_seat { "yes" } else { "no" }.to_string(),
        ),
        ("Version", s.version.to_string()),
        ("Info", short_json(&Value::Object(s.info.clone()))),
        ("Data", short_json(&Value::Object(s.data.clone()))),
    ];
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// `used/total`, or `used/unlimited`.
fn seats_text(app: &App) -> String {
    match app.seats.total {
        Some(total) => format!("{}/{total}", app.seats.used),
        None => format!("{}/unlimited", app.seats.used),
    }
}

fn app_fields(app: &App) -> Vec<(String, String)> {
    let mut fields = vec![
        ("Name".to_string(), app.name.clone()),
        ("Seats".to_string(), seats_text(app)),
        ("Open sessions".to_string(), app.open.to_string()),
        (
            "License".to_string(),
            app.license.as_ref().map_or_else(
                || "none".to_string(),
                |l| short_json(&Value::Object(l.clone())),
            ),
        ),
        ("Policy".to_string(), String::new()),
    ];
    fields.extend(app.policy.iter().map(|(k, v)| {
        let v = match v {
            Value::String(s) => s.clone(),
            other => short_json(other),
        };
        (format!("  {k}"), v)
    }));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(clap::Subcommand)]
    enum TestCommand {
        Sessions {
            #[command(flatten)]
            remote: Remote,
            #[command(subcommand)]
            cmd: SessionsCmd,
        },
        Apps {
            #[command(flatten)]
            remote: Remote,
            #[command(subcommand)]
            cmd: AppsCmd,
        },
    }

    fn session(json: Value) -> Session {
        let mut view = json!({
            "id": "0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e", "app": "default", "user": "ann",
            "privileges": [], "info": {}, "data": {},
            "client": {"label": "desk-7", "ip": "10.0.0.7", "user_agent": null},
            "status": "open", "reason": null, "closed_by": null,
            "created_at": "2026-05-01T08:00:00.000Z", "last_activity_at": "2026-05-01T08:30:00.250Z",
            "last_heartbeat_at": "2026-05-01T08:31:00.000Z", "closed_at": null,
            "expires_at": "2026-05-01T09:30:00.000Z", "idle_timeout_s": 3600,
            "heartbeat": {"interval_s": 30, "grace_s": 60, "active": true},
            "counts_seat": true, "version": 1
        });
        if let (Value::Object(view), Value::Object(patch)) = (&mut view, json) {
            view.extend(patch);
        }
        serde_json::from_value(view).unwrap()
    }

    #[test]
    fn session_rows() {
        let open = session(json!({}));
        assert_eq!(
            session_row(&open),
            [
                "0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e",
                "ann",
                "desk-7",
                "10.0.0.7",
                "open",
                "2026-05-01 08:00:00Z",
                "2026-05-01 08:30:00Z",
                "2026-05-01 08:31:00Z",
            ]
        );
        let closed = session(json!({
            "user": null, "client": {}, "status": "closed", "reason": "heartbeat_lost",
            "closed_by": "expiry", "closed_at": "2026-05-01T08:32:30.000Z", "heartbeat": null
        }));
        let row = session_row(&closed);
        assert_eq!(row[1..5], ["(guest)", "-", "-", "closed: heartbeat_lost"]);
        assert_eq!(row[7], "-");
        let text = sessions_text(&[open, closed], true, "none");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  "), "{text}");
        assert!(lines[0].ends_with("CLOSED                BY"), "{text}");
        assert!(lines[2].ends_with("2026-05-01 08:32:30Z  expiry"), "{text}");
        assert_eq!(
            sessions_text(&[], false, "no open sessions"),
            "no open sessions\n"
        );
    }

    #[test]
    fn details_show_everything_an_operator_needs() {
        let s =
            session(json!({"privileges": ["admin", "sales"], "data": {"cart": "x".repeat(500)}}));
        let text = table::fields(&session_fields(&s));
        assert!(text.contains("Privileges:      admin, sales\n"), "{text}");
        assert!(
            text.contains("Heartbeat:       every 30 s, grace 60 s\n"),
            "{text}"
        );
        assert!(text.contains("(--json shows all)"), "{text}");
    }

    #[test]
    fn apps_render() {
        let app: App = serde_json::from_value(json!({
            "name": "erp", "seats": {"used": 3, "total": null}, "open": 4,
            "policy": {"idle_timeout_s": 3600, "on_full": "reject"}, "license": null
        }))
        .unwrap();
        assert_eq!(seats_text(&app), "3/unlimited");
        let text = table::fields(&app_fields(&app));
        assert!(text.contains("Seats:             3/unlimited\n"), "{text}");
        assert!(
            text.contains("Policy:\n  idle_timeout_s:  3600\n  on_full:         reject\n"),
            "{text}"
        );
    }

    #[test]
    fn flags_parse_after_the_subcommand() {
        TestCli::command().debug_assert();
        let cli = TestCli::try_parse_from([
            "sessiond",
            "sessions",
            "list",
            "--json",
            "--status",
            "any",
            "--all",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        let TestCommand::Sessions { remote, cmd } = cli.command else {
            panic!("not sessions")
        };
        assert!(remote.json);
        assert_eq!(remote.server, "http://h:1");
        assert!(matches!(
            cmd,
            SessionsCmd::List {
                status: StatusArg::Any,
                all: true,
                limit: 100,
                ..
            }
        ));

        let cli = TestCli::try_parse_from([
            "sessiond",
            "sessions",
            "close-all",
            "--app",
            "erp",
            "--except",
            "a",
            "--except",
            "b",
        ])
        .unwrap();
        let TestCommand::Sessions { cmd, .. } = cli.command else {
            panic!("not sessions")
        };
        assert!(matches!(cmd, SessionsCmd::CloseAll { ref except, .. } if except == &["a", "b"]));

        assert!(TestCli::try_parse_from(["sessiond", "sessions", "list", "--limit", "0"]).is_err());
        let cli = TestCli::try_parse_from(["sessiond", "apps", "show", "erp"]).unwrap();
        assert!(matches!(
            cli.command,
            TestCommand::Apps {
                cmd: AppsCmd::Show { .. },
                ..
            }
        ));
    }

    #[test]
    fn token_comes_from_the_flag_then_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("sessiond-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut remote = Remote {
            server: DEFAULT_SERVER.to_string(),
            token: None,
            data_dir: dir.clone(),
            ca_cert: None,
            json: false,
        };
        assert_eq!(remote.credential().unwrap(), None);
        std::fs::write(dir.join(ADMIN_TOKEN_FILE), "admin:0123456789abcdef\n").unwrap();
        assert_eq!(
            remote.credential().unwrap().as_deref(),
            Some("admin:0123456789abcdef")
        );
        remote.token = Some("app-key".to_string());
        assert_eq!(remote.credential().unwrap().as_deref(), Some("app-key"));
        assert!(!format!("{remote:?}").contains("app-key"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
