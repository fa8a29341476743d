//! Store throughput through the Manager with many concurrent callers: resolve (with a
//! touch), heartbeat and open, on every store that is reachable, for the side-by-side
//! table in docs/BENCHMARKS.md (scripts/bench-stores prints the raw redis-benchmark and
//! pgbench figures of the same run next to it).
//!
//! Run with: `cargo bench -p sessiond-bench --bench throughput`
//! Env: `BENCH_SECONDS` (default 5), `BENCH_TASKS` (default 32), `BENCH_STORES`
//! (default memory,file,redis,postgres).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_bench::{manager, temp_dir};
use sessiond_core::{Manager, MemoryStore, OpenRequest, Resolve, Store, Token};
use sessiond_file::FileStore;

async fn store(kind: &str) -> Option<Arc<dyn Store>> {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).ok()?;
    let ns: String = b.iter().map(|x| format!("{x:02x}")).collect();
    match kind {
        "memory" => Some(Arc::new(MemoryStore::new())),
        "file" => Some(Arc::new(FileStore::open(temp_dir("throughput")).ok()?)),
        "redis" => {
            let o = sessiond_redis::RedisOptions {
                prefix: format!("sessiond-bench-{ns}"),
                ..Default::default()
            };
            sessiond_redis::RedisStore::connect("redis://127.0.0.1:6379", o)
                .await
                .ok()
                .map(|s| Arc::new(s) as Arc<dyn Store>)
        }
        "postgres" => {
            let o = sessiond_postgres::PostgresOptions {
                schema: format!("sessiond_bench_{ns}"),
                ..Default::default()
            };
            sessiond_postgres::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test", o)
                .await
                .ok()
                .map(|s| Arc::new(s) as Arc<dyn Store>)
        }
        _ => None,
    }
}

async fn measure(m: &Arc<Manager>, tokens: &[Token], op: &str, tasks: usize, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (m, stop, count, token, op) = (
                m.clone(),
                stop.clone(),
                count.clone(),
                tokens[i % tokens.len()].clone(),
                op.to_string(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let touch = Resolve {
                        touch: true,
                        ip: None,
                    };
                    let r = match op.as_str() {
                        "resolve" => m.resolve(&token, touch).await.map(|_| ()),
                        "heartbeat" => m.heartbeat(&token, None).await.map(|_| ()),
                        _ => m.open("plain", OpenRequest::default()).await.map(|_| ()),
                    };
                    if let Err(e) = r {
                        panic!("{op} failed: {e}");
                    }
                    // In-memory operations never wait: yield so the timer can stop the run.
                    tokio::task::yield_now().await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let secs: u64 = env("BENCH_SECONDS", "5").parse().unwrap();
    let tasks: usize = env("BENCH_TASKS", "32").parse().unwrap();
    let kinds = env("BENCH_STORES", "memory,file,redis,postgres");
    println!("{tasks} concurrent callers, {secs} s per operation\n");
    println!("| store | resolve+touch /s | heartbeat /s | open /s |\n|---|---:|---:|---:|");
    for kind in kinds.split(',') {
        let Some(s) = store(kind).await else {
            println!("| {kind} | not reachable | | |");
            continue;
        };
        let m = manager(s);
        let mut tokens = Vec::new();
        for _ in 0..tasks {
            tokens.push(
                m.open(
                    "plain",
                    OpenRequest {
                        heartbeat: Some(sessiond_core::HeartbeatRequest {
                            interval_s: 60,
                            grace_s: None,
                        }),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .token,
            );
        }
        let r = measure(&m, &tokens, "resolve", tasks, secs).await;
        let h = measure(&m, &tokens, "heartbeat", tasks, secs).await;
        let o = measure(&m, &tokens, "open", tasks, secs).await;
        println!("| {kind} | {r:.0} | {h:.0} | {o:.0} |");
    }
}
