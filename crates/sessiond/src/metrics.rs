//! Prometheus metrics, rendered by hand in the text exposition format (no registry
//! crate needed for a dozen series): open sessions and seats per app, opens and closes
//! by reason, heartbeats, admission refusals, request latency by route, and store
//! latency by operation (through [`MeteredStore`], a decorator over any store).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sessiond_core::admission::Admission;
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, Ordered, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, EventKind, Lookup, Manager, Session, SessionId, Store,
    Timestamp,
};

const BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// A latency histogram with fixed buckets (seconds).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// A family of series keyed by their label text.
#[derive(Default)]
struct Family<T>(RwLock<BTreeMap<String, Arc<T>>>);

impl<T: Default> Family<T> {
    fn get(&self, labels: String) -> Arc<T> {
        if let Some(v) = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&labels)
        {
            return v.clone();
        }
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels)
            .or_default()
            .clone()
    }

    fn snapshot(&self) -> Vec<(String, Arc<T>)> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Where the counts of session records the store could not read come from (and, for a
/// store with a read cache, the count of reads it answered from memory). The
/// server holds its store as `Arc<dyn Store>` behind [`MeteredStore`]; these counts
/// live on the concrete store, so a handle to them is taken when the store is opened
/// (`serve::open_store_counted`) rather than added to the `Store` trait, where
/// every decorator would have to remember to forward it.
#[derive(Clone, Default)]
pub struct UnreadableRecords {
    met: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    quarantined: u64,
    /// The reads the store answered from memory (its read cache), when it has one.
    read_cache_hits: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

impl UnreadableRecords {
    /// Records met by operations, read from `count` (Redis, PostgreSQL: each meeting
    /// counts).
    pub fn met_by(count: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        UnreadableRecords {
            met: Some(Arc::new(count)),
            quarantined: 0,
            read_cache_hits: None,
        }
    }

    /// With the count of reads the store answered from memory, read from `count`
    /// (Redis, PostgreSQL with `read_cache_ms`); it lives on the concrete store too.
    pub fn with_read_cache_hits(mut self, count: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.read_cache_hits = Some(Arc::new(count));
        self
    }

    /// Records set aside when the store started (the file store's quarantine).
    pub fn quarantined(n: u64) -> Self {
        UnreadableRecords {
            met: None,
            quarantined: n,
            read_cache_hits: None,
        }
    }

    fn met(&self) -> u64 {
        self.met.as_ref().map_or(0, |f| f())
    }
}

/// Every series the server exports.
#[derive(Default)]
pub struct Metrics {
    unreadable: std::sync::OnceLock<UnreadableRecords>,
    opens: Family<AtomicU64>,
    closes: Family<AtomicU64>,
    refusals: Family<AtomicU64>,
    heartbeats: AtomicU64,
    requests: Family<AtomicU64>,
    request_latency: Family<Histogram>,
    store_latency: Family<Histogram>,
}

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The method label: one of the methods the API knows, else `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The status label: a status code HTTP defines (one with a reason phrase), else
/// `other`.
pub fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match axum::http::StatusCode::from_u16(status) {
        Ok(s) if s.canonical_reason().is_some() => s.as_u16().to_string().into(),
        _ => "other".into(),
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a heartbeat.
    pub fn heartbeat(&self) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an admission refusal.
    pub fn refusal(&self, app: &str, code: &str) {
        self.refusals
            .get(format!("app=\"{}\",reason=\"{code}\"", esc(app)))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished request. Every label comes from a fixed set, whatever the
    /// client sent: the method from [`method_label`], the route from the router's
    /// templates (`route` must be a matched template or [`UNMATCHED`]), the status from
    /// [`status_label`]. Anything a client chooses freely would otherwise grow a new
    /// series per request.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let method = method_label(method);
        let status = status_label(status);
        let route = esc(route);
        self.requests
            .get(format!(
                "method=\"{method}\",route=\"{route}\",status=\"{status}\""
            ))
            .fetch_add(1, Ordering::Relaxed);
        self.request_latency
            .get(format!("method=\"{method}\",route=\"{route}\""))
            .observe(took);
    }

    /// Exports the counts of `records` (set once, when the store is opened; later
    /// calls are ignored).
    pub fn watch_unreadable(&self, records: UnreadableRecords) {
        let _ = self.unreadable.set(records);
    }

    fn store_op(&self, op: &'static str, took: Duration) {
        self.store_latency.get(format!("op=\"{op}\"")).observe(took);
    }

    /// Counts opens and closes from the Manager's events until the channel closes;
    /// internal apps' events are not counted.
    pub async fn follow(self: Arc<Self>, manager: Arc<Manager>) {
        let mut rx = manager.subscribe();
        loop {
            match rx.recv().await {
                // Per-app series show the declared apps only, as `Manager::apps` does.
                Ok(e) if manager.is_internal(&e.app) => {}
                Ok(e) => match e.kind {
                    EventKind::Opened => {
                        self.opens
                            .get(format!("app=\"{}\"", esc(&e.app)))
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    EventKind::Closed => {
                        let reason = e.reason.map_or("unknown", |r| r.as_str());
                        self.closes
                            .get(format!("app=\"{}\",reason=\"{reason}\"", esc(&e.app)))
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "metrics fell behind the event stream");
                }
                Err(_) => return,
            }
        }
    }

    /// The exposition text; per-app gauges are read from the Manager now, for the
    /// declared apps ([`Manager::apps`]).
    pub async fn render(&self, manager: &Manager) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP sessiond_open_sessions Open sessions per app.\n# TYPE sessiond_open_sessions gauge\n");
        let mut seats = String::from(
            "# HELP sessiond_seats_used Seats taken per app.\n# TYPE sessiond_seats_used gauge\n\
             # HELP sessiond_seats_total Seats per app (absent when unlimited).\n# TYPE sessiond_seats_total gauge\n",
        );
        for app in manager.apps() {
            if let Ok(s) = manager.seats(&app).await {
                let a = esc(&app);
                let _ = writeln!(out, "sessiond_open_sessions{{app=\"{a}\"}} {}", s.open);
                let _ = writeln!(seats, "sessiond_seats_used{{app=\"{a}\"}} {}", s.used);
                if let Some(t) = s.total {
                    let _ = writeln!(seats, "sessiond_seats_total{{app=\"{a}\"}} {t}");
                }
            }
        }
        out.push_str(&seats);
        let counters: [(&str, &str, &Family<AtomicU64>); 4] = [
            ("sessiond_opens_total", "Sessions opened.", &self.opens),
            (
                "sessiond_closes_total",
                "Sessions closed, by reason.",
                &self.closes,
            ),
            (
                "sessiond_admission_refusals_total",
                "Opens refused, by reason.",
                &self.refusals,
            ),
            (
                "sessiond_http_requests_total",
                "HTTP requests, by route and status.",
                &self.requests,
            ),
        ];
        for (name, help, fam) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in fam.snapshot() {
                let _ = writeln!(out, "{name}{{{labels}}} {}", v.load(Ordering::Relaxed));
            }
        }
        let _ = writeln!(
            out,
            "# HELP sessiond_heartbeats_total Heartbeats received.\n# TYPE sessiond_heartbeats_total counter\nsessiond_heartbeats_total {}",
            self.heartbeats.load(Ordering::Relaxed)
        );
        // Both series always, from a fixed label set: a dashboard can alert on either.
        let unreadable = self.unreadable.get().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP sessiond_store_unreadable_records_total Session records the store could not read: \
             met by operations (Redis, PostgreSQL; each meeting counts until an administrator \
             removes the record), or quarantined when the store started (file store).\n\
             # TYPE sessiond_store_unreadable_records_total counter\n\
             sessiond_store_unreadable_records_total{{event=\"met\"}} {}\n\
             sessiond_store_unreadable_records_total{{event=\"quarantined\"}} {}",
            unreadable.met(),
            unreadable.quarantined
        );
        if let Some(hits) = &unreadable.read_cache_hits {
            let _ = writeln!(
                out,
                "# HELP sessiond_store_read_cache_hits_total Session reads answered from this \
                 node's memory (read_cache_ms on a Redis or PostgreSQL store).\n\
                 # TYPE sessiond_store_read_cache_hits_total counter\n\
                 sessiond_store_read_cache_hits_total {}",
                hits()
            );
        }
        let hists: [(&str, &str, &Family<Histogram>); 2] = [
            (
                "sessiond_http_request_duration_seconds",
                "HTTP request latency.",
                &self.request_latency,
            ),
            (
                "sessiond_store_operation_duration_seconds",
                "Store operation latency.",
                &self.store_latency,
            ),
        ];
        for (name, help, fam) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (labels, h) in fam.snapshot() {
                h.render(&mut out, name, &labels);
            }
        }
        out
    }
}

/// A store that times every operation of the store it wraps.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let start = Instant::now();
        let out = $call.await;
        $self.metrics.store_op($op, start.elapsed());
        out
    }};
}

#[async_trait]
impl Store for MeteredStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn open(
        &self,
        session: Session,
        admission: &Admission,
        now: Timestamp,
    ) -> StoreResult<OpenOutcome> {
        timed!(self, "open", self.inner.open(session, admission, now))
    }
    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Session>> {
        timed!(self, "get", self.inner.get(lookup))
    }
    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        timed!(self, "modify", self.inner.modify(lookup, change, cond, now))
    }
    /// Timed from the call until the change is durable, as `modify` is.
    async fn modify_ordered(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<Ordered<ModifyOutcome>> {
        let start = Instant::now();
        match self.inner.modify_ordered(lookup, change, cond, now).await {
            Ok(ordered) => {
                let metrics = self.metrics.clone();
                Ok(ordered.on_settled(move || metrics.store_op("modify", start.elapsed())))
            }
            Err(e) => {
                self.metrics.store_op("modify", start.elapsed());
                Err(e)
            }
        }
    }
    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        timed!(self, "close", self.inner.close(id, reason, by, now))
    }
    async fn close_all(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        timed!(
            self,
            "close_all",
            self.inner.close_all(app, except, user, reason, by, now)
        )
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<Session>> {
        timed!(self, "list", self.inner.list(query))
    }
    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        timed!(self, "counts", self.inner.counts(app))
    }
    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        timed!(self, "expire_due", self.inner.expire_due(now, limit))
    }
    async fn import(&self, session: Session) -> StoreResult<()> {
        timed!(self, "import", self.inner.import(session))
    }
    async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    fn event_bus(&self) -> Option<Arc<dyn sessiond_core::events::EventBus>> {
        self.inner.event_bus()
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        self.inner.outbox()
    }

    fn write_hint(&self, lookup: Lookup) -> Option<Session> {
        self.inner.write_hint(lookup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str, event: &str) -> Option<u64> {
        let prefix = format!("sessiond_store_unreadable_records_total{{event=\"{event}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn unreadable_records_are_exported_with_fixed_labels() {
        let m = Manager::new(Arc::new(sessiond_core::MemoryStore::new()));
        let metrics = Metrics::default();
        let text = metrics.render(&m).await;
        assert_eq!(series(&text, "met"), Some(0), "{text}");
        assert_eq!(series(&text, "quarantined"), Some(0), "{text}");

        let quarantined = Metrics::default();
        quarantined.watch_unreadable(UnreadableRecords::quarantined(2));
        let text = quarantined.render(&m).await;
        assert_eq!(series(&text, "quarantined"), Some(2), "{text}");

        let met = Metrics::default();
        let n = Arc::new(AtomicU64::new(3));
        let seen = n.clone();
        met.watch_unreadable(UnreadableRecords::met_by(move || {
            seen.load(Ordering::Relaxed)
        }));
        n.fetch_add(1, Ordering::Relaxed);
        let text = met.render(&m).await;
        assert_eq!(series(&text, "met"), Some(4), "read when rendered: {text}");
        assert!(
            !text.contains("read_cache_hits"),
            "no cache, no series: {text}"
        );

        let cached = Metrics::default();
        cached.watch_unreadable(UnreadableRecords::met_by(|| 0).with_read_cache_hits(|| 42));
        let text = cached.render(&m).await;
        assert!(
            text.lines()
                .any(|l| l == "sessiond_store_read_cache_hits_total 42"),
            "{text}"
        );
    }
}
