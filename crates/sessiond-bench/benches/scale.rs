//! Scale figures criterion cannot take: memory per open session at 1M sessions, the
//! cost of expiring 100k due sessions among 1M alive, and durable open throughput with
//! many concurrent callers (group commit), each beside its baseline in the same run.
//!
//! Run with: `cargo bench -p sessiond-bench --bench scale`
//! (`SCALE_SESSIONS=200000` for a quicker, smaller run.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_bench::{manager, sqlite, temp_dir};
use sessiond_core::{
    JsonObject, Manager, ManualClock, MemoryStore, OpenRequest, Policy, Store, Timestamp,
};
use sessiond_file::FileStore;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n: usize = std::env::var("SCALE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| measurement | value |\n|---|---|");

    // 1. Bytes per open session holding one small counter, memory store.
    {
        let counter = JsonObject::parse(r#"{"n":1}"#).unwrap();
        let store = Arc::new(MemoryStore::new());
        let m = Manager::new(store.clone());
        m.set_policy("app", Policy::default()).unwrap();
        let before = rss_bytes();
        rt.block_on(async {
            for _ in 0..n {
                m.open(
                    "app",
                    OpenRequest {
                        data: Some(counter.clone()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            }
        });
        let after = rss_bytes();
        assert_eq!(store.len(), n);
        println!(
            "| memory store: RSS per open session ({n} sessions, data {{\"n\":1}}) | {} bytes |",
            (after - before) / n as u64
        );
    }

    // 2. Expiring 100k due sessions among 1M alive (and among none, for contrast).
    for alive in [n, 0] {
        let due = n / 10;
        let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000_000)));
        let m = Manager::with_clock(Arc::new(MemoryStore::new()), clock.clone());
        m.set_policy(
            "app",
            Policy {
                idle_timeout_s: 3600,
                ..Default::default()
            },
        )
        .unwrap();
        rt.block_on(async {
            for _ in 0..alive {
                m.open("app", OpenRequest::default()).await.unwrap();
            }
            for _ in 0..due {
                m.open(
                    "app",
                    OpenRequest {
                        idle_timeout_s: Some(60),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            }
        });
        clock.advance(Duration::from_secs(61));
        let t = Instant::now();
        let out = rt.block_on(m.expire_due(due)).unwrap();
        let took = t.elapsed();
        assert_eq!(out.closed.len(), due);
        println!(
            "| memory store: expire {due} due among {alive} alive | {:.1} ms ({:.2} µs per session) |",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / due as f64
        );
    }

    // 3. Durable opens: file store, 1 and 64 concurrent callers; SQLite one txn per insert.
    for callers in [1usize, 64] {
        let total = if callers == 1 { 2_000 } else { 64 * 400 };
        let store: Arc<dyn Store> =
            Arc::new(FileStore::open(temp_dir(&format!("scale-{callers}"))).unwrap());
        let m = manager(store);
        let t = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let m = m.clone();
                    tokio::spawn(async move {
                        for _ in 0..total / callers {
                            m.open("plain", OpenRequest::default()).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let rate = total as f64 / t.elapsed().as_secs_f64();
        println!("| file store: durable opens/s, {callers} concurrent caller(s) | {rate:.0} |");
    }
    {
        let db = sqlite("scale");
        let body = r#"{"app":"plain","data":{},"version":1}"#;
        let total = 2_000u128;
        let t = Instant::now();
        let mut st = db
            .prepare("INSERT INTO sessions VALUES (?1, ?1, 'plain', ?2, ?3)")
            .unwrap();
        for i in 0..total {
            st.execute(rusqlite::params![i.to_be_bytes(), body, i as i64])
                .unwrap();
        }
        let rate = total as f64 / t.elapsed().as_secs_f64();
        println!("| baseline: SQLite WAL synchronous=FULL, one insert per transaction, inserts/s | {rate:.0} |");
    }
}
