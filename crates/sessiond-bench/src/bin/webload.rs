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
                     [--rounds 1] [--scenarios bare,read,counter,counter-new] [--server-pid PID]\n\n\
                     Scenarios run interleaved, round after round; figures are medians, ratios \
                     are medians of each round's ratio to that round's bare. With --server-pid, \
                     the server's CPU time per request is reported too.\n\n\
                     bare: GET /bare (no session work, the baseline)\n\
                     read: GET /read with a cookie (one session per connection)\n\
                     counter: GET /counter with a cookie (atomic durable increment)\n\
                     counter-new: GET /counter without a cookie (a new session per request)"
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
    resp.into_body().collect().await.expect("body");
    (status, set)
}

async fn run(args: &Args, host: &str, scenario: &str) -> Outcome {
    let (path, with_cookie) = match scenario {
        "bare" => ("/bare", false),
        "read" => ("/read", true),
        "counter" => ("/counter", true),
        "counter-new" => ("/counter", false),
        other => panic!("unknown scenario {other} (see --help)"),
    };
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let mut conn: Conn = connect(host).await;
        let cookie = if with_cookie {
            let (status, set) = get(&mut conn, host, "/counter", "").await;
            assert_eq!(status, 200, "creating a session");
            set.expect("the first /counter sets the session cookie")
        } else {
            String::new()
        };
        workers.push((conn, cookie));
    }
    let host = host.to_string();
    drive(
        workers,
        args.seconds,
        args.server_pid,
        move |(mut conn, cookie): (Conn, String)| {
            let host = host.clone();
            async move {
                let (status, _) = get(&mut conn, &host, path, &cookie).await;
                ((conn, cookie), status == 200)
            }
        },
    )
    .await
}

fn label(scenario: &str) -> &'static str {
    match scenario {
        "bare" => "`/bare`",
        "read" => "`/read` with a cookie",
        "counter" => "`/counter` with a cookie",
        "counter-new" => "`/counter` without a cookie (new session)",
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
