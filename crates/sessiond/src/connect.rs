//! `sessiond connect`: the reference seat client, behaving like the Gestan client.
//!
//! It opens a seat; when the house is full it shows the holders and asks which to take
//! over (or quits); it heartbeats at the interval the server gives; it listens to its
//! event stream; when its session is closed it prints why and exits with a code per
//! reason; Ctrl-C logs out cleanly. Flags make it usable in scripts.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use crate::exit::Exit;
use crate::table;
use sessiond_client::{CloseReason, Error, OpenRequest, Session, StreamItem};

/// The exit code for a session closed for `reason` (listed in `--help`).
fn explain(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::Killed => "an administrator closed this session",
        CloseReason::ClosedAll => "an administrator disconnected everyone",
        CloseReason::TakenOver => "another client took this seat over",
        CloseReason::HeartbeatLost => "the server stopped hearing from this client",
        CloseReason::LeaseExpired => {
            "the server stopped hearing from this client, and its seat's lease ran out"
        }
        CloseReason::IdleTimeout => "the session was idle too long",
        CloseReason::AbsoluteTimeout => "the session reached its maximum lifetime",
        CloseReason::Evicted => "the session was evicted to make room",
        CloseReason::Replaced => "the same user connected elsewhere",
        CloseReason::UserChanged => "another user signed in",
        CloseReason::Logout => "the session was logged out",
        CloseReason::Other(_) => "the session was closed",
    }
}

/// What to do when every seat is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFull {
    /// Show the holders and ask which to take over (the default on a terminal).
    Ask,
    /// Quit with exit code 3 (the default when not on a terminal).
    Quit,
    /// Take over the seat idle the longest.
    TakeOverIdlest,
}

/// `sessiond connect` flags.
#[derive(Debug, clap::Args)]
#[command(
    after_help = crate::exit::help(
        "logged out (Ctrl-C, SIGTERM or SIGHUP: the seat is given back)",
        &crate::exit::Exit::ALL,
        "Examples:\n  sessiond connect --app gestan --user ann --label desk-1 --token \"$GESTAN_KEY\"\n  sessiond connect --app gestan --user bob --on-full take-over-idlest",
    )
)]
pub struct ConnectArgs {
    /// URL of the sessiond server.
    #[arg(long, env = "SESSIOND_SERVER", default_value = "http://127.0.0.1:7420")]
    pub server: String,
    /// The app's client credential (`client_key`, made for programs on users'
    /// machines: it can only take a seat), or its app key, or the admin token.
    #[arg(long, env = "SESSIOND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of a local server, to read its admin token when --token is absent.
    #[arg(long, env = "SESSIOND_DATA_DIR", default_value = "./sessiond-data")]
    pub data_dir: std::path::PathBuf,
    /// For an https:// server whose certificate a private CA signed: that CA's
    /// certificate (PEM), trusted besides the system's roots.
    #[arg(long, env = "SESSIOND_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The app to take a seat in.
    #[arg(long)]
    pub app: String,
    /// The user.
    #[arg(long)]
    pub user: String,
    /// A label for this client (machine name...).
    #[arg(long)]
    pub label: Option<String>,
    /// Heartbeat interval in seconds (default: the app's, else 30).
    #[arg(long)]
    pub heartbeat: Option<u32>,
    /// What to do when every seat is taken.
    #[arg(long, value_enum)]
    pub on_full: Option<OnFull>,
    /// Take over this session's seat right away (non-interactive).
    #[arg(long)]
    pub take_over: Option<String>,
}

/// The seat holders of a full house, numbered from 1 as the take-over prompt asks.
fn holders_text(holders: &[Session]) -> String {
    let rows: Vec<Vec<String>> = holders
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                format!("[{}]", i + 1),
                s.user.clone().unwrap_or_else(|| "(guest)".to_string()),
                s.client.label.clone().unwrap_or_else(table::dash),
                s.client.ip.clone().unwrap_or_else(table::dash),
                format!("opened {}", table::short_time(&s.created_at)),
                format!("last activity {}", table::short_time(&s.last_activity_at)),
                format!("last heartbeat {}", table::short_time(&s.last_heartbeat_at)),
            ]
        })
        .collect();
    table::rows("  ", &rows)
}

async fn ask(prompt: String) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim().to_string()),
        }
    })
    .await
    .ok()
    .flatten()
}

/// Runs the seat client to its end; the exit code says how it ended.
pub async fn run(args: ConnectArgs) -> Exit {
    let token = args.token.clone().or_else(|| {
        std::fs::read_to_string(args.data_dir.join("admin-token"))
            .ok()
            .map(|s| s.trim().to_string())
    });
    let app_client = match crate::cli::client(&args.server, token, args.ca_cert.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sessiond: {e:#}");
            return Exit::Failed;
        }
    };
    let interactive = std::io::stdin().is_terminal();
    let on_full = args.on_full.unwrap_or(if interactive {
        OnFull::Ask
    } else {
        OnFull::Quit
    });
    if let Some(t) = &args.take_over {
        if t.parse::<sessiond_core::SessionId>().is_err() {
            eprintln!(
                "sessiond: --take-over {}: not a session id (see `sessiond sessions list`)",
                sessiond_core::quoted(t)
            );
            return Exit::Usage;
        }
    }
    let mut take_over = args.take_over.clone();
    // Whether the take-over being tried is the one the flag asked for (not a holder
    // picked after a full house, which may have left meanwhile).
    let mut asked = take_over.is_some();
    let opened = loop {
        let asked_now = std::mem::take(&mut asked);
        let req = OpenRequest {
            user: Some(args.user.clone()),
            client: Some(sessiond_client::ClientInfo {
                label: args.label.clone(),
                ip: None,
                user_agent: Some(format!("sessiond-connect/{}", env!("CARGO_PKG_VERSION"))),
            }),
            heartbeat: args.heartbeat.map(|i| sessiond_client::HeartbeatRequest {
                interval_s: i,
                grace_s: None,
            }),
            take_over: take_over.take(),
            ..Default::default()
        };
        match app_client.open_session(&args.app, &req).await {
            Ok(o) => break o,
            Err(e) => {
                if let Some(full) = e.seats_exhausted() {
                    match full.seats.total {
                        Some(1) => println!("The only seat of {} is taken:", args.app),
                        Some(n) => println!("All {n} seats of {} are taken:", args.app),
                        None => println!("Every seat of {} is taken:", args.app),
                    }
                    print!("{}", holders_text(&full.sessions));
                    let choice = match on_full {
                        OnFull::Quit => None,
                        OnFull::TakeOverIdlest => full
                            .sessions
                            .iter()
                            .min_by(|a, b| a.last_activity_at.cmp(&b.last_activity_at))
                            .map(|s| s.id.clone()),
                        OnFull::Ask => {
                            let answer = ask(
                                "Take over which seat? Enter its number, or q to quit: ".into(),
                            )
                            .await;
                            answer
                                .and_then(|a| a.parse::<usize>().ok())
                                .and_then(|n| full.sessions.get(n.wrapping_sub(1)))
                                .map(|s| s.id.clone())
                        }
                    };
                    match choice {
                        Some(id) => {
                            println!("Taking over seat {id}...");
                            take_over = Some(id);
                            continue;
                        }
                        None => {
                            println!("No seat taken; quitting.");
                            return Exit::HouseFull;
                        }
                    }
                }
                if e.code() == Some("take_over_target") {
                    if asked_now {
                        eprintln!(
                            "sessiond: --take-over: no open session of {} has that id",
                            args.app
                        );
                        return Exit::Usage;
                    }
                    println!("That seat was freed or taken meanwhile; trying again.");
                    continue;
                }
                eprintln!("sessiond: cannot connect: {e}");
                let refused = matches!(
                    e.code(),
                    Some("user_limit" | "license_expired" | "license_invalid")
                );
                return if refused { Exit::Refused } else { Exit::Failed };
            }
        }
    };
    let session = opened.session;
    // The session's own credential over the same connection pool (and trusted roots).
    let me = app_client
        .clone()
        .with_credential(Some(opened.token.expose().to_string()));
    let mut interval = session
        .heartbeat
        .as_ref()
        .map_or(30, |h| h.interval_s)
        .max(1);
    // Listening for the stop signals before saying "Press Ctrl-C": one sent right after
    // that line still gives the seat back.
    let mut stop = std::pin::pin!(stop_requested());
    println!(
        "Connected to {} as {} (session {}). Heartbeat every {interval} s. Press Ctrl-C to disconnect.",
        args.app, args.user, session.id
    );
    let closed = |reason: CloseReason, by: Option<String>| -> Exit {
        let by = by.map(|b| format!(", by {b}")).unwrap_or_default();
        println!("Disconnected: {} ({reason}{by}).", explain(&reason));
        Exit::closed(&reason)
    };
    let mut events = me.session_events().await.ok();
    let mut beat = tokio::time::interval(Duration::from_secs(u64::from(interval)));
    beat.tick().await;
    loop {
        tokio::select! {
            _ = beat.tick() => match me.heartbeat().await {
                Ok(ack) => {
                    if let Some(next) = ack.next_heartbeat_s.filter(|n| *n != interval && *n > 0) {
                        interval = next;
                        beat = tokio::time::interval(Duration::from_secs(u64::from(next)));
                        beat.tick().await;
                    }
                }
                Err(e) if e.is_session_closed() => {
                    let by = match &e { Error::Api { body, .. } => body["closed_by"].as_str().map(String::from), _ => None };
                    return closed(e.close_reason().unwrap_or(CloseReason::Other("unknown".into())), by);
                }
                // The server no longer knows the token (a restart on a store that keeps
                // nothing, a token replaced): beating it again cannot help.
                Err(e) if e.code() == Some("invalid_token") => {
                    println!("Disconnected: the server no longer knows this session (it restarted without keeping its sessions, or the session's token was replaced); start again to take a seat.");
                    return Exit::Failed;
                }
                Err(e) => eprintln!("heartbeat failed (will retry): {e}"),
            },
            ev = async { match events.as_mut() { Some(s) => s.next_item().await, None => std::future::pending().await } } => match ev {
                Ok(Some(StreamItem::Event(ev))) if ev.is_closed() => {
                    let by = ev.data["by"].as_str().map(String::from);
                    return closed(ev.close_reason().unwrap_or(CloseReason::Other("unknown".into())), by);
                }
                Ok(Some(_)) => {}
                // The stream reconnects by itself across drops and server restarts; it is
                // over only when its token stopped working (rotated, refused). The
                // heartbeat still tells us if the session closes.
                Ok(None) | Err(_) => events = None,
            },
            _ = &mut stop => {
                match me.logout().await {
                    Ok(_) => println!("Logged out."),
                    Err(e) => eprintln!("logout failed: {e}"),
                }
                return Exit::Done;
            }
        }
    }
}

/// Resolves when the client is asked to stop: Ctrl-C (SIGINT), SIGTERM (`kill`,
/// systemd, `timeout`) or SIGHUP (its terminal closed). Each gives the seat back with
/// a logout; otherwise the seat stays taken until interval + grace. The signals are
/// caught from the call on, before the future is first polled.
fn stop_requested() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        )
    };
    async move {
        #[cfg(unix)]
        if let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holder(user: Option<&str>, label: Option<&str>, opened: &str) -> Session {
        serde_json::from_value(json!({
            "id": "0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e", "app": "gestan", "user": user,
            "privileges": [], "info": {}, "data": {},
            "client": {"label": label, "ip": "10.0.0.7", "user_agent": null},
            "status": "open", "reason": null, "closed_by": null,
            "created_at": opened, "last_activity_at": "2026-05-01T08:30:00.250Z",
            "last_heartbeat_at": "2026-05-01T08:31:00.000Z", "closed_at": null,
            "expires_at": null, "idle_timeout_s": 3600, "heartbeat": null,
            "counts_seat": true, "version": 1
        }))
        .unwrap()
    }

    #[test]
    fn holders_are_numbered_from_one_in_aligned_columns() {
        let text = holders_text(&[
            holder(Some("ann"), Some("pc-ann"), "2026-05-01T08:00:00.000Z"),
            holder(None, None, "2026-04-30T23:59:59.999Z"),
        ]);
        assert_eq!(
            text,
            "  [1]  ann      pc-ann  10.0.0.7  opened 2026-05-01 08:00:00Z  \
             last activity 2026-05-01 08:30:00Z  last heartbeat 2026-05-01 08:31:00Z\n  \
             [2]  (guest)  -       10.0.0.7  opened 2026-04-30 23:59:59Z  \
             last activity 2026-05-01 08:30:00Z  last heartbeat 2026-05-01 08:31:00Z\n"
        );
    }
}
