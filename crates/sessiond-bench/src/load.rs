//! What the HTTP load generators (`loadgen`, `webload`) share: keep-alive HTTP/1.1
//! connections on loopback, a time-bounded driver that keeps every connection busy and
//! collects latencies (and, given the server's pid, the CPU time the server spent), and
//! the table of interleaved rounds they report.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 connection (no pipelining: one request at a time, like a browser tab).
pub async fn connect<B>(host: &str) -> SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    connect_to(host, None).await
}

/// How to speak TLS to a server: the connector (with the roots it trusts) and the name
/// its certificate must carry.
#[derive(Clone)]
pub struct Tls {
    /// The connector.
    pub connector: tokio_rustls::TlsConnector,
    /// The server's name, as its certificate says.
    pub name: rustls_pki_types::ServerName<'static>,
}

impl Tls {
    /// TLS to a server named `name` whose certificate the CA of the PEM file `ca`
    /// signed (the ring provider, as the server's).
    pub fn new(ca: &std::path::Path, name: &str) -> Tls {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("read --ca-cert") {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a CA certificate");
        }
        #[allow(deprecated)] // the server's provider; see crates/sessiond/src/tls.rs
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Tls {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            name: rustls_pki_types::ServerName::try_from(name.to_string()).expect("a host name"),
        }
    }
}

/// One HTTP/1.1 connection to `host`, over TLS when `tls` says how.
pub async fn connect_to<B>(host: &str, tls: Option<&Tls>) -> SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to the server");
    stream.set_nodelay(true).ok();
    match tls {
        None => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
            tokio::spawn(conn);
            send
        }
        Some(t) => {
            let stream = t
                .connector
                .connect(t.name.clone(), stream)
                .await
                .expect("TLS handshake");
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
            tokio::spawn(conn);
            send
        }
    }
}

/// What one scenario run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Requests completed.
    pub requests: u64,
    /// Requests answered with an unexpected status.
    pub errors: u64,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// CPU time the server process spent during the run, if its pid was given.
    pub server_cpu: Option<Duration>,
}

impl Outcome {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0 to 1), in milliseconds.
    pub fn pct(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
    }

    /// Server CPU time per request, in microseconds, if measured.
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.requests > 0).then(|| cpu.as_secs_f64() * 1e6 / self.requests as f64)
    }
}

/// On-CPU time so far of every live thread of process `pid`, from
/// `/proc/PID/task/*/schedstat` (Linux; `None` elsewhere or once the process is gone).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread just ended
        };
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(ns))
}

/// The median of `v` (which must not be empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `step` on every worker state in a loop for `seconds`, all concurrently. `step`
/// takes the state and gives it back with whether the answer was the expected one.
/// With `server_pid`, the server's CPU time over the run is measured too.
pub async fn drive<S, F, Fut>(
    workers: Vec<S>,
    seconds: u64,
    server_pid: Option<u32>,
    step: F,
) -> Outcome
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (S, bool)> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut state| {
            let (stop, step) = (stop.clone(), step.clone());
            tokio::spawn(async move {
                let (mut n, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(100_000));
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (next, ok) = step(state).await;
                    state = next;
                    lat.push(t.elapsed());
                    n += 1;
                    errors += u64::from(!ok);
                }
                (n, errors, lat)
            })
        })
        .collect();
    let cpu_before = server_pid.and_then(cpu_time);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        server_cpu: None,
    };
    for t in tasks {
        let (n, e, l) = t.await.expect("worker");
        out.requests += n;
        out.errors += e;
        out.latencies.extend(l);
    }
    out.elapsed = start.elapsed();
    if let (Some(before), Some(after)) = (cpu_before, server_pid.and_then(cpu_time)) {
        out.server_cpu = Some(after.saturating_sub(before));
    }
    out.latencies.sort_unstable();
    out
}

/// Results of scenarios run in interleaved rounds, reported as one markdown table of
/// medians: requests per second, the median of each round's ratio to that round's
/// baseline, latency percentiles, errors and (when measured) server CPU per request.
#[derive(Debug)]
pub struct Rounds {
    rows: Vec<Row>,
    baseline: usize,
}

#[derive(Debug, Default)]
struct Row {
    label: String,
    rps: Vec<f64>,
    ratio: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
    errors: u64,
}

impl Rounds {
    /// A table of rows with these labels; row `baseline` is what ratios divide by.
    pub fn new(labels: Vec<String>, baseline: usize) -> Rounds {
        let rows = labels
            .into_iter()
            .map(|label| Row {
                label,
                ..Default::default()
            })
            .collect();
        Rounds { rows, baseline }
    }

    /// Adds one round: an outcome per row, in row order.
    pub fn add(&mut self, round: Vec<Outcome>) {
        let base = round.get(self.baseline).map(Outcome::rate);
        for (row, o) in self.rows.iter_mut().zip(round) {
            row.rps.push(o.rate());
            if let Some(b) = base.filter(|b| *b > 0.0) {
                row.ratio.push(o.rate() / b);
            }
            row.p50.push(o.pct(0.5));
            row.p99.push(o.pct(0.99));
            row.cpu_us.extend(o.cpu_per_request_us());
            row.errors += o.errors;
        }
    }

    /// The table, in markdown.
    pub fn markdown(&self) -> String {
        let cpu = self.rows.iter().any(|r| !r.cpu_us.is_empty());
        let base = self
            .rows
            .get(self.baseline)
            .map_or("-", |r| r.label.as_str());
        let mut out =
            format!("| scenario | requests/s | ratio to {base} | p50 ms | p99 ms | errors |");
        out.push_str(if cpu {
            " server CPU µs/request |\n"
        } else {
            "\n"
        });
        out.push_str("|---|---:|---:|---:|---:|---:|");
        out.push_str(if cpu { "---:|\n" } else { "\n" });
        let med = |v: &[f64]| (!v.is_empty()).then(|| median(v.to_vec()));
        for r in &self.rows {
            let ratio = med(&r.ratio).map_or("-".into(), |x| format!("{x:.2}"));
            out.push_str(&format!(
                "| {} | {:.0} | {ratio} | {:.2} | {:.2} | {} |",
                r.label,
                med(&r.rps).unwrap_or(0.0),
                med(&r.p50).unwrap_or(0.0),
                med(&r.p99).unwrap_or(0.0),
                r.errors
            ));
            if cpu {
                let c = med(&r.cpu_us).map_or("-".into(), |x| format!("{x:.1}"));
                out.push_str(&format!(" {c} |"));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(requests: u64, cpu_ms: Option<u64>) -> Outcome {
        Outcome {
            requests,
            errors: 0,
            latencies: vec![Duration::from_millis(1)],
            elapsed: Duration::from_secs(1),
            server_cpu: cpu_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn ratios_are_medians_of_each_rounds_ratio() {
        let mut t = Rounds::new(vec!["bare".into(), "work".into()], 0);
        // Rounds where the machine was fast, slow, and in between: each round's ratio
        // is 0.5, whatever the absolute figures.
        for bare in [1000, 400, 700] {
            t.add(vec![outcome(bare, None), outcome(bare / 2, None)]);
        }
        let md = t.markdown();
        assert!(
            md.starts_with("| scenario | requests/s | ratio to bare |"),
            "{md}"
        );
        assert!(md.contains("| work | 350 | 0.50 |"), "{md}");
        assert!(!md.contains("CPU"), "no CPU column unless measured: {md}");
    }

    #[test]
    fn server_cpu_per_request_is_reported_when_measured() {
        let mut t = Rounds::new(vec!["bare".into()], 0);
        t.add(vec![outcome(1000, Some(20))]);
        let md = t.markdown();
        assert!(md.contains("server CPU µs/request"), "{md}");
        assert!(md.contains("| 20.0 |"), "20 ms over 1,000 requests: {md}");
    }

    #[test]
    fn cpu_time_of_this_process_grows() {
        let Some(before) = cpu_time(std::process::id()) else {
            return; // not Linux: nothing to read
        };
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = cpu_time(std::process::id()).expect("still running");
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
