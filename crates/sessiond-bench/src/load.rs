//! What the HTTP load generators (`loadgen`, `webload`) share: keep-alive HTTP/1.1
//! connections on loopback, a time-bounded driver that keeps every connection busy and
//! collects latencies, and the statistics they report.

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
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to the server");
    stream.set_nodelay(true).ok();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    send
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
}

/// The median of `v` (which must not be empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `step` on every worker state in a loop for `seconds`, all concurrently. `step`
/// takes the state and gives it back with whether the answer was the expected one.
pub async fn drive<S, F, Fut>(workers: Vec<S>, seconds: u64, step: F) -> Outcome
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
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
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
