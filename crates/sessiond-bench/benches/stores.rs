#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Per-operation cost of the Manager on each store, with SQLite doing the equivalent
//! single-row work as the baseline.
//!
//! Run with: `cargo bench -p sessiond-bench --bench stores`

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use sessiond_bench::{manager, sqlite, store};
use sessiond_core::{Lookup, OpenRequest, Resolve};

fn ops(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for kind in ["memory", "file"] {
        let m = manager(store(kind));
        let opened = rt
            .block_on(m.open(
                "bench",
                OpenRequest {
                    user: Some("u".into()),
                    ..Default::default()
                },
            ))
            .unwrap();
        let token = opened.token.clone();
        let mut g = c.benchmark_group(kind);
        g.bench_function("resolve_touch", |b| {
            b.iter(|| {
                rt.block_on(m.resolve(
                    &token,
                    Resolve {
                        touch: true,
                        ip: None,
                    },
                ))
                .unwrap()
            })
        });
        g.bench_function("resolve_read", |b| {
            b.iter(|| {
                rt.block_on(m.resolve(
                    &token,
                    Resolve {
                        touch: false,
                        ip: None,
                    },
                ))
                .unwrap()
            })
        });
        g.bench_function("heartbeat", |b| {
            b.iter(|| rt.block_on(m.heartbeat(&token, None)).unwrap())
        });
        let n = AtomicU64::new(0);
        g.bench_function("patch", |b| {
            b.iter(|| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                rt.block_on(m.update_data(
                    Lookup::Token(token.hash()),
                    json!({ "n": i }),
                    None,
                    None,
                ))
                .unwrap()
            })
        });
        g.bench_function("open_with_admission", |b| {
            b.iter(|| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                rt.block_on(m.open(
                    "bench",
                    OpenRequest {
                        user: Some(format!("u{}", i % 1000)),
                        ..Default::default()
                    },
                ))
                .unwrap()
            })
        });
        g.finish();
    }

    let mut g = c.benchmark_group("sqlite_baseline");
    let db = sqlite("stores");
    let body = r#"{"app":"bench","data":{"n":1},"version":1}"#;
    let n = AtomicU64::new(0);
    let key = 7u128.to_be_bytes();
    db.execute(
        "INSERT INTO sessions VALUES (?1, ?1, 'bench', ?2, 0)",
        rusqlite::params![key, body],
    )
    .unwrap();
    g.bench_function(BenchmarkId::new("read_by_token", "wal"), |b| {
        let mut st = db
            .prepare_cached("SELECT body FROM sessions WHERE token_hash = ?1")
            .unwrap();
        b.iter(|| st.query_row([key], |r| r.get::<_, String>(0)).unwrap())
    });
    g.bench_function(BenchmarkId::new("insert_durable", "one_per_txn"), |b| {
        let mut st = db
            .prepare_cached("INSERT INTO sessions VALUES (?1, ?1, 'bench', ?2, ?3)")
            .unwrap();
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) as u128 + 1000;
            st.execute(rusqlite::params![i.to_be_bytes(), body, i as i64])
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = ops
}
criterion_main!(benches);
