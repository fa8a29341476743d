//! Starting servers for tests: in-process on port 0 (fast), or the real binary as a
//! child process (for signals, `kill -9` and log scans).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use sessiond::Config;
use tokio::sync::oneshot;

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const SHOP_KEY: &str = "shop-key-0123456789abcdef";
pub const DESK_KEY: &str = "desk-key-0123456789abcdef";
/// Operator `ops`: every app, read and write.
pub const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
/// Operator `desk-ops`: app `desk` only.
pub const DESK_OPS_TOKEN: &str = "desk-ops-token-0123456789abcdef";
/// Operator `auditor`: every app, read only.
pub const AUDITOR_TOKEN: &str = "auditor-token-0123456789abcdef";
/// The client credential of `shop`: may only open sessions.
pub const SHOP_CLIENT_KEY: &str = "shop-client-key-0123456789abcdef";

/// A configuration with two apps: `shop` (web, bind_ip, reserved `admin`, a client
/// credential) and `desk` (2 seats, 30 s heartbeat a session may stretch to 300 s but
/// not suspend, one session per user), admin token [`ADMIN`], and three operators:
/// `ops` (every app), `desk-ops` (desk only), `auditor` (every app, read only).
pub fn config(dir: Option<&Path>) -> Config {
    let text = format!(
        r#"
        admin_token = "{ADMIN}"
        store = "{store}"
        data_dir = "{data}"
        max_body_bytes = 4096
        trusted_proxies = ["127.0.0.1"]
        [operators.ops]
        token = "{OPS_TOKEN}"
        [operators.desk-ops]
        token = "{DESK_OPS_TOKEN}"
        apps = ["desk"]
        [operators.auditor]
        token = "{AUDITOR_TOKEN}"
        read_only = true
        [apps.shop]
        key = "{SHOP_KEY}"
        client_key = "{SHOP_CLIENT_KEY}"
        bind_ip = true
        [apps.desk]
        key = "{DESK_KEY}"
        seats = 2
        reserved_privileges = ["admin"]
        heartbeat = {{ interval_s = 30, grace_s = 60, max_interval_s = 300 }}
        max_per_user = 1
        "#,
        store = if dir.is_some() { "file:" } else { "memory:" },
        data = dir.map_or_else(|| "/nonexistent".to_string(), |d| d.display().to_string()),
    );
    Config::from_toml(&text).expect("test config")
}

pub fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "sessiond-it-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A server running in this process.
pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), sessiond::ServeError>>>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(sessiond::run(listener, config, async {
            let _ = rx.await;
        }));
        // Wait until it serves; a server that failed to start says why.
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if task.is_finished() {
                panic!("the server did not start: {:?}", task.await);
            }
            if http
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Server {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A memory-store server with the test apps.
    pub async fn memory() -> Server {
        Self::start(config(None)).await
    }

    /// Stops the server and waits for it to drain and flush.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub fn req(&self, method: Method, path: &str, secret: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match secret {
            Some(s) => r.bearer_auth(s),
            None => r,
        }
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.req(method, path, secret);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Opens a session in `app` with `body`; returns the 201 answer.
    pub async fn open(&self, app: &str, key: &str, body: Value) -> Value {
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/v1/apps/{app}/sessions"),
                Some(key),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "open failed: {v}");
        v
    }
}

pub fn token(v: &Value) -> String {
    v["token"].as_str().expect("token").to_string()
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Asserts the error shape and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], json!(want_code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The real `sessiond` binary as a child process, its output collected.
pub struct Process {
    pub child: Child,
    /// `http://<address>`, or `http://-` when the server has no plain listener.
    pub base: String,
    /// The HTTPS address (`<ip>:<port>`) when the server serves HTTPS.
    pub tls_addr: Option<String>,
    pub output: Arc<Mutex<String>>,
}

impl Process {
    pub fn start(dir: &Path) -> Process {
        Self::start_with(dir, &[])
    }

    /// Starts the binary with extra `serve` arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("SESSIOND_ADMIN_TOKEN", ADMIN)
            .env("SESSIOND_LOG", "debug")
            .env_remove("SESSIOND_CONFIG")
            .env_remove("SESSIOND_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sessiond");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let field = |name: &str| {
                    line.split(name)
                        .nth(1)
                        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
                };
                if let Some(plain) = field(" listen=") {
                    let _ = tx.send((plain, field(" listen_tls=").filter(|a| a != "-")));
                }
                out.lock().unwrap().push_str(&line);
                out.lock().unwrap().push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push_str(&line);
                out.lock().unwrap().push('\n');
            }
        });
        let (addr, tls_addr) = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not log its listen address; its output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        Process {
            child,
            base: format!("http://{addr}"),
            tls_addr,
            output,
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shared store of `kind` (`redis` or `postgres`) for `test`: its base URL and a fresh
/// namespace, or `None` (skip, said loudly; with `CI=true` a failure) when its server is
/// absent.
pub async fn shared_store(kind: &str, test: &str) -> Option<(String, String)> {
    let (url, addr) = match kind {
        "postgres" => (
            std::env::var("SESSIOND_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            "127.0.0.1:5432",
        ),
        _ => (
            std::env::var("SESSIOND_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            "127.0.0.1:6379",
        ),
    };
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        sessiond_core::skip::skip(
            &format!("{test} on {kind}"),
            &format!("nothing listens on {addr}"),
        );
        return None;
    }
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let ns: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some((url, format!("sessiond_it_{ns}")))
}
