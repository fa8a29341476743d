//! A `redis-server` of the test's own that speaks TLS only (`--port 0`), with a
//! certificate from a [`TestCa`], on a free loopback port; stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ca::{Issued, TestCa};
use crate::scratch::{free_port, Scratch};

/// How long a server may take to listen before the start is abandoned.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A TLS-only Redis server for one test. Dropping it kills the server and removes its
/// directory.
pub struct TlsRedis {
    child: Child,
    port: u16,
    ca_path: PathBuf,
    // Dropped after the child is reaped (fields drop in order; `Drop::drop` runs first).
    dir: Scratch,
}

impl TlsRedis {
    /// Starts a server whose certificate `ca` issues for `names` (e.g. `["127.0.0.1"]`
    /// or `["localhost"]`). Clients need not present a certificate. `Err` says why
    /// this machine cannot run one (no `redis-server`, or one built without TLS).
    pub fn start(ca: &TestCa, names: &[&str]) -> Result<TlsRedis, String> {
        Self::start_with(ca, names, &[])
    }

    /// [`TlsRedis::start`] with more `redis-server` arguments (e.g.
    /// `["--requirepass", "..."]`).
    pub fn start_with(ca: &TestCa, names: &[&str], extra: &[&str]) -> Result<TlsRedis, String> {
        let dir = Scratch::new("tls-redis");
        let Issued {
            cert_pem, key_pem, ..
        } = ca.issue(names);
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(&key, key_pem).map_err(|e| e.to_string())?;
        let ca_path = ca.write_pem(dir.path(), "ca.pem");
        let mut last = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(dir.path(), port, &cert, &key, &ca_path, extra)?;
            match wait_listening(&mut child, port) {
                Ok(()) => {
                    return Ok(TlsRedis {
                        child,
                        port,
                        ca_path,
                        dir,
                    })
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("{why}; its log: {}", log_tail(dir.path()));
                }
            }
        }
        Err(format!("redis-server with TLS did not start: {last}"))
    }

    /// The TLS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The issuing CA's certificate, as a PEM file.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The server's directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    dir: &Path,
    port: u16,
    cert: &Path,
    key: &Path,
    ca: &Path,
    extra: &[&str],
) -> Result<Child, String> {
    Command::new("redis-server")
        .arg("--port")
        .arg("0")
        .arg("--tls-port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .arg("--tls-ca-cert-file")
        .arg(ca)
        .args(["--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server ({e})"))
}

/// Waits until something accepts TCP connections on `port`, or the server exits.
fn wait_listening(child: &mut Child, port: u16) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < START_LIMIT {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited ({status})"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "nothing listened on port {port} within {START_LIMIT:?}"
    ))
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
