//! A small HTTP load generator for sessiond: keeps N HTTP/1.1 connections busy against
//! one scenario for a fixed time and reports requests per second and latency
//! percentiles, each scenario beside the server's bare `/healthz` in the same run.
//!
//! Run with (server already running, admin token known):
//! `cargo run --release -p sessiond-bench --bin loadgen -- --server http://127.0.0.1:7420 --token "$TOKEN"`
//!
//! Every request loop is bounded by `--seconds`; only loopback or given servers are hit.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use sessiond_bench::load::{connect, drive, Outcome, Rounds};

struct Args {
    server: String,
    token: String,
    seconds: u64,
    connections: usize,
    scenarios: Vec<String>,
    app: String,
    rounds: usize,
    server_pid: Option<u32>,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "http://127.0.0.1:7420".into(),
        token: std::env::var("SESSIOND_TOKEN").unwrap_or_default(),
        seconds: 5,
        connections: 32,
        scenarios: vec![
            "bare".into(),
            "resolve".into(),
            "heartbeat".into(),
            "open".into(),
        ],
        app: "default".into(),
        rounds: 3,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = val(),
            "--token" => a.token = val(),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--connections" => a.connections = val().parse().expect("--connections N"),
            "--scenarios" => a.scenarios = val().split(',').map(String::from).collect(),
            "--app" => a.app = val(),
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--server-pid" => a.server_pid = Some(val().parse().expect("--server-pid PID")),
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "loadgen [--server URL] [--token ADMIN_TOKEN] [--seconds 5] [--connections 32] \
                     [--scenarios bare,resolve,heartbeat,open] [--app default] [--rounds 3] \
                     [--server-pid PID]\n\n\
                     Scenarios run interleaved, round after round; figures are medians, \
                     ratios are medians of each round's ratio to that round's bare. With \
                     --server-pid, the server's CPU time per request is reported too.\n\n\
                     bare: GET /healthz (no session work, the baseline)\n\
                     resolve: GET /v1/session (resolve + touch) with one session per connection\n\
                     heartbeat: POST /v1/session/heartbeat\n\
                     open: POST /v1/apps/APP/sessions (a new session per request)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other} (see --help)"),
        }
    }
    a
}

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn request(
    method: &str,
    host: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("request")
}

async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    conn.ready().await.expect("connection ready");
    let resp = conn.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

async fn open_session(host: &str, app: &str, token: &str) -> String {
    let mut c: Conn = connect(host).await;
    let (status, body) = send(
        &mut c,
        request(
            "POST",
            host,
            &format!("/v1/apps/{app}/sessions"),
            token,
            Some("{}"),
        ),
    )
    .await;
    assert_eq!(status, 201, "open: {}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["token"].as_str().expect("token").to_string()
}

async fn run(args: &Args, host: &str, scenario: &str) -> Outcome {
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let session = match scenario {
            "resolve" | "heartbeat" => open_session(host, &args.app, &args.token).await,
            _ => String::new(),
        };
        workers.push((connect::<Full<Bytes>>(host).await, session));
    }
    let (host, admin, app, scenario) = (
        host.to_string(),
        args.token.clone(),
        args.app.clone(),
        scenario.to_string(),
    );
    drive(
        workers,
        args.seconds,
        args.server_pid,
        move |(mut c, session): (Conn, String)| {
            let (host, admin, app, scenario) =
                (host.clone(), admin.clone(), app.clone(), scenario.clone());
            async move {
                let req = match scenario.as_str() {
                    "bare" => request("GET", &host, "/healthz", "", None),
                    "resolve" => request("GET", &host, "/v1/session", &session, None),
                    "heartbeat" => request("POST", &host, "/v1/session/heartbeat", &session, None),
                    "open" => request(
                        "POST",
                        &host,
                        &format!("/v1/apps/{app}/sessions"),
                        &admin,
                        Some("{}"),
                    ),
                    other => panic!("unknown scenario {other}"),
                };
                let (status, _) = send(&mut c, req).await;
                ((c, session), status < 400)
            }
        },
    )
    .await
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
        "{} connections, {} s per scenario, {} interleaved rounds (medians), server {}\n",
        args.connections, args.seconds, args.rounds, args.server
    );
    let bare = args.scenarios.iter().position(|s| s == "bare").unwrap_or(0);
    let mut table = Rounds::new(args.scenarios.clone(), bare);
    for _ in 0..args.rounds.max(1) {
        let mut round = Vec::new();
        for s in &args.scenarios {
            round.push(run(&args, &host, s).await);
        }
        table.add(round);
    }
    print!("{}", table.markdown());
}
