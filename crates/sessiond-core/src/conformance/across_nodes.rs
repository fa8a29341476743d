//! Reads from memory across nodes: what every store with a read cache
//! ([`crate::backend::ReadCache`]) must show on three nodes sharing one backend, as
//! three servers would. Each store's tests build the nodes (and cut its own channel
//! of change reports, which only it knows how to do) and call these.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::manager::{Manager, OpenRequest, Resolve};
use crate::policy::Policy;
use crate::session::{Actor, CloseReason, Session};
use crate::store::{Lookup, Store};
use crate::{Error, Token};

/// One node: its store, and how many reads it answered from memory so far.
pub struct Node {
    /// The node's store (its read cache on).
    pub store: Arc<dyn Store>,
    /// The store's count of reads answered from memory.
    pub hits: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// Delays, sorted, with their percentiles.
#[derive(Debug)]
pub struct Delays(Vec<Duration>);

impl Delays {
    /// The delay at quantile `q` (0 to 1).
    pub fn at(&self, q: f64) -> Duration {
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }
}

impl std::fmt::Display for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reads on other nodes: p50 {:?}, p99 {:?}, max {:?}",
            self.0.len(),
            self.at(0.5),
            self.at(0.99),
            self.at(1.0)
        )
    }
}

/// A manager with the app `app` (default policy) over `store`.
pub fn manager(store: Arc<dyn Store>) -> Manager {
    let m = Manager::new(store);
    m.set_policy("app", Policy::default())
        .expect("the default policy is valid");
    m
}

/// Reads `token` on `m` until `done` says the answer shows the change; how long that
/// took from `since`. Fails after 5 s.
pub async fn seen_after(
    m: &Manager,
    token: &Token,
    since: Instant,
    done: impl Fn(&Result<Session, Error>) -> bool,
) -> Duration {
    loop {
        let r = m.resolve(token, Resolve::default()).await;
        if done(&r) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "a change on another node was never seen: {r:?}"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A kill, a rotation and a storage write on node 1, in turn for 60 rounds, each read
/// on nodes 2 and 3 that had the session in memory: every one is seen, never later
/// than `max_age` (and half a second of slack) whatever happens to the reports, and at
/// the median well before it (the reports arrive: without them every change would be
/// seen only as the copies aged out). Gives the delays, for the store's docs.
pub async fn changes_on_one_node_are_seen_on_the_others(
    nodes: &[Node; 3],
    max_age: Duration,
) -> Delays {
    let managers: Vec<Manager> = nodes.iter().map(|n| manager(n.store.clone())).collect();
    let mut delays = Vec::new();
    for round in 0..60 {
        let opened = managers[0]
            .open(
                "app",
                OpenRequest {
                    user: Some(format!("user-{round}")),
                    ..Default::default()
                },
            )
            .await
            .expect("open on node 1");
        let (id, token) = (opened.session.id, opened.token);
        // Nodes 2 and 3 read it (the second read of each is from memory, unless a
        // change report, such as the open's own, raced the first).
        for m in &managers[1..] {
            for _ in 0..2 {
                m.resolve(&token, Resolve::default()).await.expect("read");
            }
        }
        let t0 = Instant::now();
        match round % 3 {
            0 => {
                managers[0]
                    .close(Lookup::Id(id), CloseReason::Killed, Actor::Admin)
                    .await
                    .expect("kill on node 1");
                for m in &managers[1..] {
                    let refused = |r: &Result<_, Error>| matches!(r, Err(Error::SessionClosed(_)));
                    delays.push(seen_after(m, &token, t0, refused).await);
                }
            }
            1 => {
                managers[0]
                    .set_privileges(Lookup::Id(id), vec!["admin".into()], None, None)
                    .await
                    .expect("rotation on node 1");
                for m in &managers[1..] {
                    let refused = |r: &Result<_, Error>| matches!(r, Err(Error::InvalidToken));
                    delays.push(seen_after(m, &token, t0, refused).await);
                }
            }
            _ => {
                managers[0]
                    .update_data(Lookup::Id(id), json!({ "cart": [round] }), None, None)
                    .await
                    .expect("write on node 1");
                for m in &managers[1..] {
                    let written = |r: &Result<Session, Error>| {
                        r.as_ref()
                            .is_ok_and(|s| s.data.to_map().get("cart") == Some(&json!([round])))
                    };
                    delays.push(seen_after(m, &token, t0, written).await);
                }
            }
        }
    }
    let hits: u64 = nodes[1..].iter().map(|n| (n.hits)()).sum();
    assert!(
        hits >= 60,
        "nodes 2 and 3 answered from memory ({hits} reads)"
    );
    delays.sort();
    let delays = Delays(delays);
    let median = delays.at(0.5);
    assert!(
        median < max_age / 4,
        "changes were seen after {median:?} (median): the change reports do not arrive"
    );
    let worst = delays.at(1.0);
    assert!(
        worst < max_age + Duration::from_millis(500),
        "a change was seen only after {worst:?}, past the maximum age"
    );
    delays
}

/// Reads `token` on `m` until one is answered from memory (`hits` grows past
/// `before`); fails after 100 reads.
pub async fn read_until_from_memory(
    m: &Manager,
    token: &Token,
    hits: impl Fn() -> u64,
    before: u64,
) {
    for tries in 0.. {
        m.resolve(token, Resolve::default()).await.expect("read");
        if hits() > before {
            return;
        }
        assert!(tries < 100, "never answered from memory");
    }
}
