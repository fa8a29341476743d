//! App event streams that resume: `sessiond-client` behind a TCP balancer that can cut
//! its connections and send the next ones elsewhere. A cut connection resumes with
//! exactly the events missed; a restart of the server (file store) and a move to
//! another node (Redis) answer `resync`, then live events; a `Last-Event-ID` the node
//! cannot honour is never refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::json;
use sessiond_client::{Client, EventStream, Reconnect, StreamItem};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::common::*;

/// A TCP load balancer, as far as a client can tell: each connection goes to the node
/// it points at when the connection is made; [`Balancer::cut`] ends every connection at
/// once; pointing at no node closes new connections at once.
struct Balancer {
    addr: SocketAddr,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

impl Balancer {
    async fn start(base: &str) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(Some(addr_of(base))));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (to, open) = (backend.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let Some(node) = *to.lock().unwrap() else {
                    continue; // dropped: closed at once
                };
                let forward = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(node).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = open.lock().unwrap();
                open.retain(|c| !c.is_finished());
                open.push(forward.abort_handle());
            }
        })
        .abort_handle();
        Balancer {
            addr,
            backend,
            conns,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to `base` (None: they are closed at once).
    fn point(&self, base: Option<&str>) {
        *self.backend.lock().unwrap() = base.map(addr_of);
    }

    /// Ends every open connection, both ways.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Backoff of a few milliseconds, so these tests do not sit through real waits.
fn quick() -> Reconnect {
    Reconnect {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        ..Reconnect::default()
    }
}

/// The next item, as `opened <session id>`, `closed <id>`, `resync <reason>`. The
/// time limit only stops a hung test.
async fn next(events: &mut EventStream) -> String {
    let item = tokio::time::timeout(Duration::from_secs(20), events.next_item())
        .await
        .expect("an item in time")
        .expect("no error")
        .expect("the stream goes on");
    match item {
        StreamItem::Event(e) => format!("{} {}", e.event, e.session_id().unwrap_or("?")),
        StreamItem::Resync(reason) => format!("resync {reason:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

async fn open_shop(base: &Server) -> String {
    id(&base.open("shop", SHOP_KEY, json!({})).await)
}

/// Held away while a session is killed, two open and another app's opens, the client
/// gets exactly those of its app, in order; then, cut again and again while sessions
/// open, every event once, in order, and never a `resync`.
#[tokio::test]
async fn a_cut_connection_resumes_with_exactly_the_events_missed() {
    let s = Server::memory().await;
    let lb = Balancer::start(&s.base).await;
    let client = Client::new(lb.url(), Some(SHOP_KEY.into()))
        .unwrap()
        .with_reconnect(quick());
    let mut events = client.app_events("shop").await.unwrap();
    let a = open_shop(&s).await;
    assert_eq!(next(&mut events).await, format!("opened {a}"));

    lb.point(None);
    lb.cut();
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{a}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let b = open_shop(&s).await;
    s.open("desk", DESK_KEY, json!({"user": "elsewhere"})).await;
    let c = open_shop(&s).await;
    lb.point(Some(&s.base));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut events).await);
    }
    assert_eq!(
        got,
        [
            format!("closed {a}"),
            format!("opened {b}"),
            format!("opened {c}")
        ]
    );
    let d = open_shop(&s).await;
    assert_eq!(next(&mut events).await, format!("opened {d}"), "then live");

    // Cuts while events flow: some land before a cut, some while reconnecting.
    let mut opened = Vec::new();
    for i in 0..60 {
        opened.push(format!("opened {}", open_shop(&s).await));
        if i % 6 == 5 {
            lb.cut();
        }
    }
    let mut got = Vec::new();
    while got.len() < opened.len() {
        got.push(next(&mut events).await);
    }
    assert_eq!(got, opened, "every event once, in order, no resync");
    drop(events);
    s.stop().await;
}

/// A restart (same data dir, a new epoch): the resumed stream gets `resync`, then the
/// new run's live events, sessions from before the restart included.
#[tokio::test]
async fn a_restarted_server_answers_resync_then_live_events() {
    let dir = temp_dir("resume-restart");
    let s = Server::start(config(Some(&dir))).await;
    let lb = Balancer::start(&s.base).await;
    let client = Client::new(lb.url(), Some(SHOP_KEY.into()))
        .unwrap()
        .with_reconnect(quick());
    let mut events = client.app_events("shop").await.unwrap();
    let a = open_shop(&s).await;
    assert_eq!(next(&mut events).await, format!("opened {a}"));
    let before = events.last_event_id().unwrap().to_string();

    s.stop().await;
    let s = Server::start(config(Some(&dir))).await;
    lb.point(Some(&s.base));
    assert_eq!(next(&mut events).await, "resync UnknownEpoch");
    let after = events.last_event_id().unwrap().to_string();
    assert_ne!(
        before.split('-').next(),
        after.split('-').next(),
        "a new run, a new epoch: {before} then {after}"
    );
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{a}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200, "the session survived the restart");
    let b = open_shop(&s).await;
    assert_eq!(next(&mut events).await, format!("closed {a}"));
    assert_eq!(next(&mut events).await, format!("opened {b}"));
    drop(events);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two nodes on one Redis store: the balancer sends the reconnection to the other
/// node, which answers `resync`, then its live events (made on it, and relayed from
/// the first node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_answers_resync_then_its_live_events() {
    let Some(store) = crate::multinode::shared_store_url("redis").await else {
        return;
    };
    let one = Server::start(crate::multinode::node_config(&store)).await;
    let two = Server::start(crate::multinode::node_config(&store)).await;
    let lb = Balancer::start(&one.base).await;
    let client = Client::new(lb.url(), Some(SHOP_KEY.into()))
        .unwrap()
        .with_reconnect(quick());
    let mut events = client.app_events("shop").await.unwrap();
    let a = open_shop(&one).await;
    assert_eq!(next(&mut events).await, format!("opened {a}"));

    lb.point(Some(&two.base));
    lb.cut();
    assert_eq!(next(&mut events).await, "resync UnknownEpoch");
    let b = open_shop(&two).await;
    assert_eq!(next(&mut events).await, format!("opened {b}"));
    let (st, _) = one
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{a}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(next(&mut events).await, format!("closed {a}"), "relayed");
    drop(events);
    one.stop().await;
    two.stop().await;
}

/// The first frame of a raw app stream, up to its blank line.
async fn first_frame(s: &Server, last_event_id: Option<HeaderValue>) -> String {
    let mut req = s.req(Method::GET, "/v1/apps/shop/events", Some(SHOP_KEY));
    if let Some(v) = last_event_id {
        req = req.header("last-event-id", v);
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "a Last-Event-ID is never refused");
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n").next().unwrap().to_string()
}

/// What a client that cannot be trusted sends: any header gets 200 and the frames the
/// contract says; the session stream's frames carry no id.
#[tokio::test]
async fn any_last_event_id_gets_a_stream_and_the_documented_frames() {
    let s = Server::memory().await;
    let fresh = first_frame(&s, None).await;
    let (epoch, seq) = fresh
        .strip_prefix("id: ")
        .and_then(|id| id.split_once('-'))
        .unwrap_or_else(|| panic!("an id-only frame: {fresh:?}"));
    assert!(epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(seq, "0", "no event yet");
    let here = |seq: u64| format!("id: {epoch}-{seq}");

    let resync = |reason: &str, seq: u64| {
        format!(
            "event: resync\n{}\ndata: {{\"reason\":\"{reason}\"}}",
            here(seq)
        )
    };
    let other_epoch = if epoch == "0000000000000001" {
        "2"
    } else {
        "1"
    };
    for (header, reason) in [
        (format!("{other_epoch:0>16}-0"), "unknown_epoch"),
        ("0".to_string(), "unknown_epoch"),
        (format!("{epoch}-1"), "malformed"), // never sent
        ("x".repeat(1000), "malformed"),
        (String::new(), "malformed"),
        ("g000000000000000-1".to_string(), "malformed"),
    ] {
        let value = HeaderValue::from_str(&header).unwrap();
        assert_eq!(
            first_frame(&s, Some(value)).await,
            resync(reason, 0),
            "{header:?}"
        );
    }
    let binary = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
    assert_eq!(first_frame(&s, Some(binary)).await, resync("malformed", 0));

    // An honoured id: the app's events after it, each with its id.
    let a = open_shop(&s).await;
    let frame = first_frame(
        &s,
        Some(HeaderValue::from_str(&format!("{epoch}-0")).unwrap()),
    )
    .await;
    assert!(
        frame.starts_with(&format!(
            "event: opened\ndata: {{\"event\":\"opened\",\"id\":\"{a}\""
        )),
        "{frame}"
    );
    assert!(frame.ends_with(&format!("\n{}", here(1))), "{frame}");

    // The session stream: `closed`, no id.
    let o = s.open("shop", SHOP_KEY, json!({})).await;
    s.call(Method::DELETE, "/v1/session", Some(&token(&o)), None)
        .await;
    let body = s
        .req(Method::GET, "/v1/session/events", Some(&token(&o)))
        .header("last-event-id", "whatever")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("event: closed\ndata: {"), "{body}");
    assert!(!body.contains("\nid:"), "{body}");
    s.stop().await;
}

/// An id kept from an earlier stream (say, across a restart of the client's program)
/// resumes a new one: it gets what followed.
#[tokio::test]
async fn a_kept_id_resumes_a_new_stream() {
    let s = Server::memory().await;
    let client = Client::new(&s.base, Some(SHOP_KEY.into())).unwrap();
    let mut events = client.app_events("shop").await.unwrap();
    let a = open_shop(&s).await;
    assert_eq!(next(&mut events).await, format!("opened {a}"));
    let kept = events.last_event_id().unwrap().to_string();
    drop(events);
    let b = open_shop(&s).await;
    let mut events = client.app_events_after("shop", Some(&kept)).await.unwrap();
    assert_eq!(next(&mut events).await, format!("opened {b}"));
    drop(events);
    s.stop().await;
}

/// A seat with a lease (heartbeat 1 s, grace 1 s, lease 3 s) held by the real `sessiond
/// connect` behind the balancer: cut off for less than interval + grace + lease, the
/// client comes back to the same session by itself, its seat held meanwhile (another
/// open is refused); cut off for longer, the session closes `lease_expired`, the seat is
/// free, and the client, back on the network, ends with the heartbeat_lost code (13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_cut_off_within_its_lease_resumes_and_after_it_is_freed() {
    let mut c = config(None);
    c.expiry_interval_ms = 100;
    let desk = c.apps.get_mut("desk").unwrap();
    desk.policy.seats = Some(1);
    desk.policy.heartbeat = Some(sessiond_core::HeartbeatPolicy {
        lease_s: 3,
        grace_s: 1,
        ..sessiond_core::HeartbeatPolicy::every(1)
    });
    let server = Server::start(c).await;
    let lb = Balancer::start(&server.base).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["connect", "--server", &lb.url(), "--token", DESK_KEY])
        .args(["--app", "desk", "--user", "ann", "--label", "pos-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let open_ones = || async {
        let (_, v) = server
            .call(Method::GET, "/v1/apps/desk/sessions", Some(DESK_KEY), None)
            .await;
        v["sessions"].as_array().cloned().unwrap_or_default()
    };
    let mut sessions = Vec::new();
    for _ in 0..100 {
        sessions = open_ones().await;
        if !sessions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sessions.len(), 1, "connect took the seat");
    let sid = id(&sessions[0]);
    assert_eq!(sessions[0]["heartbeat"]["lease_s"], 3);
    let session = || async {
        server
            .call(
                Method::GET,
                &format!("/v1/sessions/{sid}"),
                Some(DESK_KEY),
                None,
            )
            .await
            .1
    };
    let bob = || async {
        server
            .call(
                Method::POST,
                "/v1/apps/desk/sessions",
                Some(DESK_KEY),
                Some(json!({"user": "bob"})),
            )
            .await
            .0
    };

    // A cut shorter than interval + grace + lease (5 s): away, seat held, then back.
    lb.point(None);
    lb.cut();
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let away = session().await;
    assert_eq!(away["status"], "open", "{away}");
    assert_eq!(bob().await, 409, "the away seat is still held");
    lb.point(Some(&server.base));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let back = session().await;
    assert_eq!(back["status"], "open", "{back}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "connect is still running"
    );
    assert!(
        back["last_heartbeat_at"].as_str() > away["last_heartbeat_at"].as_str(),
        "it beats again: {away} then {back}"
    );

    // A cut longer than the lease: closed lease_expired, the seat free.
    lb.point(None);
    lb.cut();
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let gone = session().await;
    assert_eq!(
        (gone["status"].as_str(), gone["reason"].as_str()),
        (Some("closed"), Some("lease_expired")),
        "{gone}"
    );
    assert_eq!(bob().await, 201, "the seat is free");
    lb.point(Some(&server.base));
    let mut code = None;
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(13), "connect ends as for a lost heartbeat");
    server.stop().await;
}
