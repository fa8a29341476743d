//! A small HTTP load generator for sessiond: keeps N HTTP/1.1 connections busy against
//! one scenario for a fixed time and reports requests per second and latency
//! percentiles, each scenario beside the server's bare `/healthz` in the same run.
//!
//! Run with (server already running, admin token known):
//! `cargo run --release -p sessiond-bench --bin loadgen -- --server http://127.0.0.1:7420 --token "$TOKEN"`
//!
//! Every request loop is bounded by `--seconds`; only loopback or given servers are hit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

struct Args {
    server: String,
    token: String,
    seconds: u64,
    connections: usize,
    scenarios: Vec<String>,
    app: String,
    rounds: usize,
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
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "loadgen [--server URL] [--token ADMIN_TOKEN] [--seconds 5] [--connections 32] \
                     [--scenarios bare,resolve,heartbeat,open] [--app default] [--rounds 3]\n\n\
                     Scenarios run interleaved, round after round; figures are medians, \
                     ratios are medians of each round's ratio to that round's bare.\n\n\
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

async fn connect(host: &str) -> Conn {
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to the server");
    stream.set_nodelay(true).ok();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

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
    let mut c = connect(host).await;
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

struct Outcome {
    requests: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn run(args: &Args, host: &str, scenario: &str) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let session = match scenario {
            "resolve" | "heartbeat" => open_session(host, &args.app, &args.token).await,
            _ => String::new(),
        };
        let (host, admin, app, scenario, stop) = (
            host.to_string(),
            args.token.clone(),
            args.app.clone(),
            scenario.to_string(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&host).await;
            let (mut n, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(100_000));
            while !stop.load(Ordering::Relaxed) {
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
                let t = Instant::now();
                let (status, _) = send(&mut c, req).await;
                lat.push(t.elapsed());
                n += 1;
                if status >= 400 {
                    errors += 1;
                }
            }
            (n, errors, lat)
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (n, e, l) = t.await.expect("worker");
        out.requests += n;
        out.errors += e;
        out.latencies.extend(l);
    }
    out.elapsed = start.elapsed();
    out.latencies.sort_unstable();
    out
}

fn pct(l: &[Duration], p: f64) -> f64 {
    if l.is_empty() {
        return 0.0;
    }
    l[((l.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); args.scenarios.len()];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); args.scenarios.len()];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); args.scenarios.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); args.scenarios.len()];
    let mut errors = vec![0u64; args.scenarios.len()];
    for _ in 0..args.rounds.max(1) {
        let mut bare = None;
        for (i, s) in args.scenarios.iter().enumerate() {
            let o = run(&args, &host, s).await;
            let r = o.requests as f64 / o.elapsed.as_secs_f64();
            if s == "bare" {
                bare = Some(r);
            }
            rps[i].push(r);
            if let Some(b) = bare {
                ratio[i].push(r / b);
            }
            p50[i].push(pct(&o.latencies, 0.5));
            p99[i].push(pct(&o.latencies, 0.99));
            errors[i] += o.errors;
        }
    }
    println!("| scenario | requests/s | ratio to bare | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, s) in args.scenarios.iter().enumerate() {
        let r = if ratio[i].is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", median(ratio[i].clone()))
        };
        println!(
            "| {s} | {:.0} | {r} | {:.2} | {:.2} | {} |",
            median(rps[i].clone()),
            median(p50[i].clone()),
            median(p99[i].clone()),
            errors[i]
        );
    }
}
