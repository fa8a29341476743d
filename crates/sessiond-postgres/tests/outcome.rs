//! A commit whose answer is lost has an unknown outcome: between the store and
//! PostgreSQL a proxy passes a `COMMIT` on to the server and withholds the answer.
//! The store says [`StoreError::OutcomeUnknown`] (not `Unavailable`), and a read
//! afterwards shows that the server did commit: exactly why a blind retry is unsafe.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_core::{Error, Lookup, Manager, OpenRequest, Policy, StoreError};
use sessiond_postgres::PostgresStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The simple-protocol message tokio-postgres sends to commit: `Q`, its length (4 + 7),
/// `COMMIT` and a NUL.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// A TCP proxy to PostgreSQL that, while armed, lets a `COMMIT` through and then
/// answers nothing more on that connection.
struct CommitEater {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl CommitEater {
    async fn start(target: String) -> CommitEater {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let arm = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let mute = Arc::new(AtomicBool::new(false));
                let (arm, mute_up) = (arm.clone(), mute.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if arm.load(Ordering::SeqCst)
                            && buf[..n].windows(COMMIT.len()).any(|w| w == COMMIT)
                        {
                            mute_up.store(true, Ordering::SeqCst);
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if mute.load(Ordering::SeqCst) {
                            continue;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CommitEater { port, armed }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_has_an_unknown_outcome() {
    // A store straight to the server makes the schema (and drops it afterwards).
    let Some(direct) = common::fresh_store().await else {
        return;
    };
    let url = common::url();
    let rest = url.split_once("@").map_or(url.as_str(), |(_, r)| r);
    let host = rest.split_once('/').map_or(rest, |(h, _)| h);
    let eater = CommitEater::start(host.to_string()).await;
    let proxied = url.replace(host, &format!("127.0.0.1:{}", eater.port));
    let mut options = common::options(&direct.schema);
    options.op_timeout = Duration::from_millis(800);
    let store = PostgresStore::connect(&proxied, options).await.unwrap();
    let m = Manager::new(Arc::new(store));
    m.set_policy("shop", Policy::default()).unwrap();
    let id = m
        .open("shop", OpenRequest::default())
        .await
        .unwrap()
        .session
        .id;

    eater.armed.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let write = m
        .update_data(Lookup::Id(id), json!({"n": 1}), None, None)
        .await;
    assert!(
        matches!(write, Err(Error::Store(StoreError::OutcomeUnknown(_)))),
        "a commit whose answer was lost: {write:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    eater.armed.store(false, Ordering::SeqCst);

    // The server did commit it; a read says so, and a retry made conditional on it
    // lands once.
    let s = m.get(id).await.unwrap();
    assert_eq!(s.version, 2, "{s:?}");
    assert_eq!(serde_json::to_value(&s.data).unwrap(), json!({"n": 1}));
    let after = m
        .update_data(Lookup::Id(id), json!({"n": 2}), Some(2), None)
        .await
        .unwrap();
    assert_eq!(after.version, 3);
}
