//! HTTPS through the real binary: the server serves a certificate a private CA signed
//! (made here by the test kit's CA), renews it without a restart (SIGHUP, or by watching the
//! files), keeps the old one when the new files are bad, and with `--tls-only` leaves no
//! plain listener; the CLI and `sessiond connect` reach it with `--ca-cert`, and refuse
//! a server whose certificate another CA signed or that names another host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessiond_testkit::TestCa;

use crate::common::{temp_dir, Process, ADMIN};

/// A certificate authority made for a test (the test kit's, shared with the stores'
/// TLS tests).
struct Ca(TestCa);

impl Ca {
    fn new(name: &str) -> Ca {
        Ca(TestCa::new(name))
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A server certificate for `localhost` (only: 127.0.0.1 is another name), with
    /// its key, both PEM, and the certificate's DER to recognise it when served.
    fn issue(&self) -> (String, String, Vec<u8>) {
        let i = self.0.issue(&["localhost"]);
        (i.cert_pem, i.key_pem, i.der)
    }
}

/// Writes a file whole, as certificate renewal tools do (a new file renamed over).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn files(name: &str, ca: &Ca, cert: &str, key: &str) -> Files {
    let dir = temp_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let f = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
        dir,
    };
    replace(&f.cert, cert);
    replace(&f.key, key);
    replace(&f.ca, &ca.pem());
    f
}

fn start(f: &Files, extra: &[&str]) -> Process {
    let data = f.dir.join("data");
    let mut args = vec![
        "--tls-cert",
        f.cert.to_str().unwrap(),
        "--tls-key",
        f.key.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Process::start_with(&data, &args)
}

/// The port of the server's HTTPS listener.
fn tls_port(p: &Process) -> u16 {
    let addr = p.tls_addr.as_deref().expect("the server serves HTTPS");
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A fresh client (a new connection, so it sees the certificate served now) that
/// trusts only `ca_pem`.
fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .build()
        .unwrap()
}

/// The certificate served to a new connection (after a successful `/healthz`).
async fn served(port: u16, ca_pem: &str) -> Vec<u8> {
    let resp = client(ca_pem)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("an HTTPS request to the server");
    assert_eq!(resp.status(), 200);
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the peer certificate")
        .to_vec()
}

/// Polls until the certificate served is `want`, for at most `limit`.
async fn until_served(port: u16, ca_pem: &str, want: &[u8], limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if served(port, ca_pem).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn signal(p: &Process, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_and_renews_its_certificate_without_a_restart() {
    let ca = Ca::new("sessiond test CA");
    let (cert_a, key_a, der_a) = ca.issue();
    let f = files("tls-renew", &ca, &cert_a, &key_a);
    let server = start(&f, &[]);
    let port = tls_port(&server);
    let ca_pem = ca.pem();

    assert_eq!(
        served(port, &ca_pem).await,
        der_a,
        "the configured certificate"
    );
    // The plain listener serves as well (no --tls-only).
    let plain = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);

    // Renewed, then SIGHUP: new connections get the new certificate.
    let (cert_b, key_b, der_b) = ca.issue();
    replace(&f.key, &key_b);
    replace(&f.cert, &cert_b);
    signal(&server, "HUP");
    assert!(
        until_served(port, &ca_pem, &der_b, Duration::from_secs(5)).await,
        "SIGHUP loads the renewed certificate"
    );

    // Renewed without a signal: the files are watched (the contract says 10 s).
    let (cert_c, key_c, der_c) = ca.issue();
    replace(&f.key, &key_c);
    replace(&f.cert, &cert_c);
    assert!(
        until_served(port, &ca_pem, &der_c, Duration::from_secs(10)).await,
        "a renewed certificate is picked up within 10 s without a signal"
    );

    // A bad certificate file keeps the one in use, and the log says why.
    let refusals = || {
        server
            .output
            .lock()
            .unwrap()
            .matches("cannot be used")
            .count()
    };
    let wait_for_refusals = |n: usize| {
        let start = Instant::now();
        async move {
            while refusals() < n {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "refusal {n} of bad certificate files is logged"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    replace(
        &f.cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    signal(&server, "HUP");
    wait_for_refusals(1).await;
    assert_eq!(served(port, &ca_pem).await, der_c, "still the previous one");
    // And a key that is not the certificate's: refused the same way.
    let (_, other_key, _) = ca.issue();
    replace(&f.cert, &cert_c);
    replace(&f.key, &other_key);
    signal(&server, "HUP");
    wait_for_refusals(2).await;
    assert_eq!(
        served(port, &ca_pem).await,
        der_c,
        "a mismatched key is refused"
    );
    let log = server.output.lock().unwrap().clone();
    assert!(!log.contains("BEGIN"), "no PEM in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_leaves_no_plain_listener() {
    let ca = Ca::new("sessiond test CA");
    let (cert, key, _) = ca.issue();
    let f = files("tls-only", &ca, &cert, &key);
    let server = start(&f, &["--tls-only"]);
    assert_eq!(server.base, "http://-", "no plain listener is logged");
    let port = tls_port(&server);
    served(port, &ca.pem()).await;
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // The server still answers HTTPS after that.
    served(port, &ca.pem()).await;
}

#[test]
fn tls_only_without_a_certificate_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["serve", "--tls-only", "--store", "memory:"])
        .env_remove("SESSIOND_CONFIG")
        .env("SESSIOND_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_only needs tls_cert and tls_key"), "{err}");
}

/// Runs the CLI and returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(args)
        .env_remove("SESSIOND_SERVER")
        .env_remove("SESSIOND_TOKEN")
        .env_remove("SESSIOND_CA_CERT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_connect_speak_https_with_a_private_ca_and_refuse_the_wrong_one() {
    let ca = Ca::new("sessiond test CA");
    let (cert, key, _) = ca.issue();
    let f = files("tls-cli", &ca, &cert, &key);
    let server = start(&f, &["--tls-only"]);
    let port = tls_port(&server);
    let url = format!("https://localhost:{port}");
    let ca_file = f.ca.to_str().unwrap();

    let (code, out, err) = cli(&[
        "apps",
        "list",
        "--server",
        &url,
        "--token",
        ADMIN,
        "--ca-cert",
        ca_file,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let apps: Value = serde_json::from_str(&out).unwrap();
    assert!(out.contains("default"), "{apps}");

    // Not trusted without the CA, nor with another CA.
    let (code, _, err) = cli(&["apps", "list", "--server", &url, "--token", ADMIN]);
    assert_eq!(code, 1);
    assert!(err.contains("certificate"), "{err}");
    let other = f.dir.join("other-ca.pem");
    std::fs::write(&other, Ca::new("another CA").pem()).unwrap();
    let (code, _, err) = cli(&[
        "apps",
        "list",
        "--server",
        &url,
        "--token",
        ADMIN,
        "--ca-cert",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("certificate"), "{err}");
    // The right CA, but the certificate names localhost, not 127.0.0.1.
    let by_ip = format!("https://127.0.0.1:{port}");
    let (code, _, err) = cli(&[
        "apps",
        "list",
        "--server",
        &by_ip,
        "--token",
        ADMIN,
        "--ca-cert",
        ca_file,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("certificate"), "{err}");
    // A CA file that is not PEM is named in the error.
    let junk = f.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let (code, _, err) = cli(&[
        "apps",
        "list",
        "--server",
        &url,
        "--token",
        ADMIN,
        "--ca-cert",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("junk.pem"), "{err}");

    // The seat client takes its seat over HTTPS, and learns of a kill.
    let connect = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "connect",
            "--server",
            &url,
            "--ca-cert",
            ca_file,
            "--token",
            ADMIN,
            "--app",
            "default",
            "--user",
            "ann",
            "--heartbeat",
            "5",
        ])
        .env_remove("SESSIOND_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let admin = client(&ca.pem());
    let start = Instant::now();
    let id = loop {
        let page: Value = admin
            .get(format!("{url}/v1/apps/default/sessions?user=ann"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = page["sessions"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "connect opened no session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let killed = admin
        .delete(format!("{url}/v1/sessions/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 200);
    let status = tokio::task::spawn_blocking(move || connect.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(10),
        "connect ends with the kill's exit code: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}
