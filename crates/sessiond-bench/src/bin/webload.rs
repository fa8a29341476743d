//! A load generator for the sessiond-axum benchmark app (`examples/bench-app`): keeps N
//! HTTP/1.1 connections busy against one route for a fixed time and reports requests
//! per second, latency percentiles and the ratio to the bare route measured in the same
//! run, as a markdown table.
//!
//! Run with (bench-app already running, e.g. `cargo run --release -p bench-app`):
//! `cargo run --release -p sessiond-bench --bin webload -- --server http://127.0.0.1:8045`
//!
//! Scenarios:
//! - `bare`: `GET /bare`, no session work (the baseline)
//! - `read`: `GET /read` with a cookie (one session per connection): resolve + read
//! - `counter`: `GET /counter` with a cookie: an atomic, durable increment per request
//! - `counter-new`: `GET /counter` without a cookie: a new session per request
//! - `counter-hot`: `GET /counter` with one cookie shared by every connection: the
//!   parallel requests of one page on one session
//!
//! After each `counter` and `counter-hot` run every session's counter is read back
//! (`GET /read`) and must equal the increments answered 200 (plus at most the ones
//! that failed, whose outcome is unknown): a lost update stops the run.
//!
//! With `--rounds N` every scenario runs N times, interleaved, and medians are reported
//! (a ratio is the median of each round's ratio to that round's `/bare`), which steadies
//! the ratios on a busy machine. With `--server-pid PID` the table also gives the CPU
//! time the server spent per request (all its threads, from `/proc`): a figure that does
//! not depend on what else shares the machine. Every request loop is bounded by
//! `--seconds`; only the given (loopback) server is hit.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{COOKIE, HOST, SET_COOKIE};
use hyper::Request;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sessiond_bench::load::{connect, drive, Outcome, Rounds};

struct Args {
    server: String,
    seconds: u64,
    connections: usize,
    rounds: usize,
    scenarios: Vec<String>,
    server_pid: Option<u32>,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "http://127.0.0.1:8045".into(),
        seconds: 5,
        connections: 32,
        rounds: 1,
        scenarios: vec![
            "bare".into(),
            "read".into(),
            "counter".into(),
            "counter-hot".into(),
            "counter-new".into(),
        ],
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = val(),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--connections" => a.connections = val().parse().expect("--connections N"),
            "--rounds" => a.rounds = val().parse::<usize>().expect("--rounds N").max(1),
            "--scenarios" => a.scenarios = val().split(',').map(String::from).collect(),
            "--server-pid" => a.server_pid = Some(val().parse().expect("--server-pid PID")),
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "webload [--server http://127.0.0.1:8045] [--seconds 5] [--connections 32] \
                     [--rounds 1] [--scenarios bare,read,counter,counter-hot,counter-new] [--server-pid PID]\n\n\
                     Scenarios run interleaved, round after round; figures are medians, ratios \
                     are medians of each round's ratio to that round's bare. With --server-pid, \
                     the server's CPU time per request is reported too.\n\n\
                     bare: GET /bare (no session work, the baseline)\n\
                     read: GET /read with a cookie (one session per connection)\n\
                     counter: GET /counter with a cookie (atomic durable increment)\n\
                     counter-new: GET /counter without a cookie (a new session per request)\n\
                     counter-hot: GET /counter with one cookie shared by every connection\n\n\
                     After counter and counter-hot, each session's counter is read back and \
                     must equal the increments acknowledged: a lost update stops the run."
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other} (see --help)"),
        }
    }
    if !a.scenarios.iter().any(|s| s == "bare") {
        a.scenarios.insert(0, "bare".into());
    }
    a
}

type Conn = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Sends `GET path`; answers the status and the cookie pair set, if any.
async fn get(conn: &mut Conn, host: &str, path: &str, cookie: &str) -> (u16, Option<String>) {
    let (status, set, _) = get_body(conn, host, path, cookie).await;
    (status, set)
}

/// [`get`], with the body.
async fn get_body(
    conn: &mut Conn,
    host: &str,
    path: &str,
    cookie: &str,
) -> (u16, Option<String>, Bytes) {
    let mut b = Request::get(path).header(HOST, host);
    if !cookie.is_empty() {
        b = b.header(COOKIE, cookie);
    }
    conn.ready().await.expect("connection ready");
    let resp = conn
        .send_request(b.body(Empty::new()).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let set = resp
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(String::from);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, set, body)
}

/// What one session's increments came to, as the loader saw them.
#[derive(Default)]
struct Tally {
    /// Answered 200 (the first, which made the session, included).
    acked: AtomicU64,
    /// Answered otherwise: applied or not, nobody knows.
    failed: AtomicU64,
}

/// Reads each session's counter back and checks it against its tally; panics on a lost
/// (or invented) increment, else prints the totals.
async fn check_counters(host: &str, scenario: &str, sessions: &[(String, Arc<Tally>)]) {
    let mut conn: Conn = connect(host).await;
    let (mut acked, mut counted) = (0, 0);
    for (cookie, tally) in sessions {
        let (status, _, body) = get_body(&mut conn, host, "/read", cookie).await;
        assert_eq!(status, 200, "reading a counter back");
        let n: u64 = std::str::from_utf8(&body)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .expect("/read answers a number");
        let (a, f) = (
            tally.acked.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed),
        );
        assert!(
            a <= n && n <= a + f,
            "{scenario}: a session's counter is {n}, but {a} increments were acknowledged \
             (and {f} failed): updates were lost"
        );
        acked += a;
        counted += n;
    }
    eprintln!(
        "{scenario}: {} session(s), {acked} increments acknowledged, counters sum to {counted}: none lost",
        sessions.len()
    );
}

async fn run(args: &Args, host: &str, scenario: &str) -> Outcome {
    let (path, with_cookie, shared) = match scenario {
        "bare" => ("/bare", false, false),
        "read" => ("/read", true, false),
        "counter" => ("/counter", true, false),
        "counter-new" => ("/counter", false, false),
        "counter-hot" => ("/counter", true, true),
        other => panic!("unknown scenario {other} (see --help)"),
    };
    let mut workers = Vec::new();
    let mut sessions: Vec<(String, Arc<Tally>)> = Vec::new();
    for _ in 0..args.connections {
        let mut conn: Conn = connect(host).await;
        let (cookie, tally) = match sessions.last() {
            Some(s) if shared => s.clone(),
            _ if with_cookie => {
                let (status, set) = get(&mut conn, host, "/counter", "").await;
                assert_eq!(status, 200, "creating a session");
                let cookie = set.expect("the first /counter sets the session cookie");
                let tally = Arc::new(Tally::default());
                tally.acked.store(1, Ordering::Relaxed);
                sessions.push((cookie.clone(), tally.clone()));
                (cookie, tally)
            }
            _ => (String::new(), Arc::new(Tally::default())),
        };
        workers.push((conn, cookie, tally));
    }
    let counting = with_cookie && path == "/counter";
    let h = host.to_string();
    let outcome = drive(
        workers,
        args.seconds,
        args.server_pid,
        move |(mut conn, cookie, tally): (Conn, String, Arc<Tally>)| {
            let host = h.clone();
            async move {
                let (status, _) = get(&mut conn, &host, path, &cookie).await;
                let counter = match status {
                    200 => &tally.acked,
                    _ => &tally.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                ((conn, cookie, tally), status == 200)
            }
        },
    )
    .await;
    if counting {
        check_counters(host, scenario, &sessions).await;
    }
    outcome
}

fn label(scenario: &str) -> &'static str {
    match scenario {
        "bare" => "`/bare`",
        "read" => "`/read` with a cookie",
        "counter" => "`/counter` with a cookie",
        "counter-new" => "`/counter` without a cookie (new session)",
        "counter-hot" => "`/counter`, one cookie on every connection",
        _ => "?",
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let host = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    println!(
        "{} connections, {} s per scenario, {} round(s), server {}\n",
        args.connections, args.seconds, args.rounds, args.server
    );
    let labels = args
        .scenarios
        .iter()
        .map(|s| label(s).to_string())
        .collect();
    let bare = args.scenarios.iter().position(|s| s == "bare").unwrap_or(0);
    let mut table = Rounds::new(labels, bare);
    for _ in 0..args.rounds {
        let mut round = Vec::new();
        for s in &args.scenarios {
            round.push(run(&args, &host, s).await);
        }
        table.add(round);
    }
    print!("{}", table.markdown());
}
