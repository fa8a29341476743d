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
use sessiond_bench::load::{connect_to, drive, Outcome, Rounds, Tls};

struct Args {
    server: String,
    token: String,
    seconds: u64,
    connections: usize,
    scenarios: Vec<String>,
    app: String,
    rounds: usize,
    server_pid: Option<u32>,
    tls_server: Option<String>,
    ca_cert: Option<std::path::PathBuf>,
    proxy: Option<String>,
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
        tls_server: None,
        ca_cert: None,
        proxy: None,
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
            "--tls-server" => a.tls_server = Some(val()),
            "--ca-cert" => a.ca_cert = Some(val().into()),
            "--proxy" => a.proxy = Some(val()),
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "loadgen [--server URL] [--token ADMIN_TOKEN] [--seconds 5] [--connections 32] \
                     [--scenarios bare,resolve,heartbeat,open] [--app default] [--rounds 3] \
                     [--server-pid PID] [--tls-server https://HOST:PORT --ca-cert PEM] \
                     [--proxy http://HOST:PORT]\n\n\
                     Scenarios run interleaved, round after round; figures are medians, \
                     ratios are medians of each round's ratio to that round's bare. With \
                     --server-pid, the server's CPU time per request is reported too.\n\n\
                     bare: GET /healthz (no session work, the baseline)\n\
                     resolve: GET /v1/session (resolve + touch) with one session per connection\n\
                     heartbeat: POST /v1/session/heartbeat\n\
                     open: POST /v1/apps/APP/sessions (a new session per request)\n\
                     open-cart: the same, each session with its own user and a small \
                     cart in its storage (as a shop's signed-in visitors)\n\
                     forward-auth: GET /v1/apps/APP/forward-auth with the session cookie \
                     (SESSION=<token>), one session per connection, as a reverse proxy \
                     asks before every request\n\
                     tls:SCENARIO: the same over HTTPS (--tls-server, trusting --ca-cert), \
                     on connections kept open (the handshake is paid once per connection)\n\
                     proxy:bare, proxy:forward-auth: through a reverse proxy (--proxy) that \
                     serves the server's /healthz at /bare, and at /checked after asking \
                     forward-auth (scripts/bench-proxy writes such an nginx)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other} (see --help)"),
        }
    }
    a
}

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Where the scenarios go: the plain server, the HTTPS one for `tls:` scenarios, and
/// the reverse proxy for `proxy:` ones.
struct Target {
    host: String,
    tls: Option<(String, Tls)>,
    proxy: Option<String>,
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

async fn open_session(host: &str, tls: Option<&Tls>, app: &str, token: &str) -> String {
    let mut c: Conn = connect_to(host, tls).await;
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

async fn run(args: &Args, target: &Target, scenario: &str) -> Outcome {
    let (host, tls, scenario) = match scenario.strip_prefix("tls:") {
        Some(s) => {
            let t = target
                .tls
                .as_ref()
                .expect("tls: scenarios need --tls-server and --ca-cert");
            (t.0.as_str(), Some(&t.1), s)
        }
        None => (target.host.as_str(), None, scenario),
    };
    // Through the proxy: sessions are opened at the server, requests go to the proxy.
    let (via, scenario) = match scenario.strip_prefix("proxy:") {
        Some(s) => (
            target
                .proxy
                .as_deref()
                .expect("proxy: scenarios need --proxy"),
            match s {
                "bare" => "proxy-bare",
                "forward-auth" => "proxy-checked",
                other => panic!("no proxy:{other} scenario (proxy:bare, proxy:forward-auth)"),
            },
        ),
        None => (host, scenario),
    };
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let session = match scenario {
            "resolve" | "heartbeat" | "forward-auth" | "proxy-checked" => {
                open_session(host, tls, &args.app, &args.token).await
            }
            _ => String::new(),
        };
        let tls = if via == host { tls } else { None };
        workers.push((connect_to::<Full<Bytes>>(via, tls).await, session));
    }
    let host = via;
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
                    "open-cart" => {
                        static USERS: std::sync::atomic::AtomicU64 =
                            std::sync::atomic::AtomicU64::new(0);
                        let n = USERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let body = format!(
                            r#"{{"user":"user-{n}@example.com","data":{{"cart":[{{"sku":"A-{}","qty":2}},{{"sku":"B-7","qty":1}}],"currency":"EUR"}}}}"#,
                            n % 1000
                        );
                        request(
                            "POST",
                            &host,
                            &format!("/v1/apps/{app}/sessions"),
                            &admin,
                            Some(&body),
                        )
                    }
                    "forward-auth" | "proxy-checked" => Request::builder()
                        .method("GET")
                        .uri(if scenario == "forward-auth" {
                            format!("/v1/apps/{app}/forward-auth")
                        } else {
                            "/checked".to_string()
                        })
                        .header("host", &host)
                        .header("cookie", format!("SESSION={session}"))
                        .body(Full::new(Bytes::new()))
                        .expect("request"),
                    "proxy-bare" => request("GET", &host, "/bare", "", None),
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
    let tls = args.tls_server.as_ref().map(|url| {
        let host = url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let name = host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n);
        let ca = args
            .ca_cert
            .as_deref()
            .expect("--tls-server needs --ca-cert");
        let tls = Tls::new(ca, name);
        (host, tls)
    });
    let proxy = args.proxy.as_ref().map(|p| {
        p.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    });
    let target = Target { host, tls, proxy };
    println!(
        "{} connections, {} s per scenario, {} interleaved rounds (medians), server {}\n",
        args.connections, args.seconds, args.rounds, args.server
    );
    let bare = args.scenarios.iter().position(|s| s == "bare").unwrap_or(0);
    let mut table = Rounds::new(args.scenarios.clone(), bare);
    for _ in 0..args.rounds.max(1) {
        let mut round = Vec::new();
        for s in &args.scenarios {
            round.push(run(&args, &target, s).await);
        }
        table.add(round);
    }
    print!("{}", table.markdown());
}
