//! What the client puts on the wire and how it reads answers, against a canned HTTP/1.1
//! server on 127.0.0.1:0 (no sessiond needed): methods, paths, query strings, the bearer
//! header, `If-Match`, JSON bodies, error bodies, an event stream split across writes,
//! and event streams that reconnect.

use std::time::Duration;

use serde_json::{json, Value};
use sessiond_client::{
    Client, CloseReason, Error, HeartbeatRequest, ListQuery, OpenRequest, Order, Reconnect,
    StatusFilter, StreamItem,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    /// Request line and headers, lowercased.
    head: String,
    /// The body.
    body: String,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// One canned answer: status line + headers, then body pieces written separately.
struct Answer {
    status: &'static str,
    content_type: &'static str,
    chunks: Vec<String>,
    /// Keep the connection open and silent after the chunks, until the server ends.
    hold: bool,
}

fn json_answer(status: &'static str, body: Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        chunks: vec![body.to_string()],
        hold: false,
    }
}

/// Serves `answers` in order, one connection each, and reports what it received.
async fn serve(answers: Vec<Answer>) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before sending a request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
            let _ = tx.send(Seen { head, body });

            let single = answer.chunks.len() == 1;
            let mut out = format!(
                "HTTP/1.1 {}\r\ncontent-type: {}\r\nconnection: close\r\n",
                answer.status, answer.content_type
            );
            if single {
                out.push_str(&format!("content-length: {}\r\n", answer.chunks[0].len()));
            }
            out.push_str("\r\n");
            socket.write_all(out.as_bytes()).await.unwrap();
            for chunk in &answer.chunks {
                socket.write_all(chunk.as_bytes()).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if answer.hold {
                held.push(socket);
            } else {
                let _ = socket.shutdown().await;
            }
        }
    });
    (url, rx)
}

fn view(status: &str) -> Value {
    json!({
        "id": "0192aaaa-0000-7000-8000-000000000001", "app": "default", "user": "ann",
        "privileges": [], "info": {}, "data": {"n": 1},
        "client": {"label": null, "ip": "127.0.0.1", "user_agent": null},
        "status": status, "reason": if status == "closed" { json!("killed") } else { json!(null) },
        "closed_by": if status == "closed" { json!("admin") } else { json!(null) },
        "created_at": "2026-05-01T08:00:00.000Z", "last_activity_at": "2026-05-01T08:00:00.000Z",
        "last_heartbeat_at": "2026-05-01T08:00:00.000Z", "closed_at": null,
        "expires_at": "2026-05-01T09:00:00.000Z", "idle_timeout_s": 3600,
        "heartbeat": {"interval_s": 30, "grace_s": 60, "active": true},
        "counts_seat": true, "version": 3
    })
}

#[tokio::test]
async fn open_sends_the_app_key_and_reads_the_token() {
    let mut answer = view("open");
    answer["token"] = json!("default:00112233445566778899aabbccddeeff");
    let (url, mut seen) = serve(vec![json_answer("201 Created", answer)]).await;
    let client = Client::new(&url, Some("app-key-1".into())).unwrap();
    let opened = client
        .open_session(
            "default",
            &OpenRequest {
                user: Some("ann".into()),
                heartbeat: Some(HeartbeatRequest {
                    interval_s: 30,
                    grace_s: None,
                }),
                ..OpenRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        opened.token.expose(),
        "default:00112233445566778899aabbccddeeff"
    );
    assert_eq!(opened.session.user.as_deref(), Some("ann"));

    let req = seen.recv().await.unwrap();
    assert_eq!(
        req.request_line(),
        "post /v1/apps/default/sessions http/1.1"
    );
    assert_eq!(req.header("authorization"), Some("bearer app-key-1"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({"user": "ann", "heartbeat": {"interval_s": 30}})
    );
}

#[tokio::test]
async fn session_calls_use_their_paths_and_headers() {
    let (url, mut seen) = serve(vec![
        json_answer("200 OK", view("open")),
        json_answer("200 OK", view("open")),
        json_answer("200 OK", json!({"status": "open", "next_heartbeat_s": 30})),
        json_answer("200 OK", json!({"closed": 4})),
        json_answer(
            "200 OK",
            json!({"sessions": [view("closed")], "next": "0192b"}),
        ),
    ])
    .await;
    let client = Client::new(&url, Some("tok".into())).unwrap();

    client.read_session().await.unwrap();
    let req = seen.recv().await.unwrap();
    assert_eq!(req.request_line(), "get /v1/session?touch=false http/1.1");

    let s = client
        .patch_data(&json!({"n": 1, "gone": null}), Some(2))
        .await
        .unwrap();
    assert_eq!(s.version, 3);
    let req = seen.recv().await.unwrap();
    assert_eq!(req.request_line(), "patch /v1/session/data http/1.1");
    assert_eq!(req.header("if-match"), Some("\"2\""));
    assert_eq!(req.json(), json!({"n": 1, "gone": null}));

    let ack = client.heartbeat().await.unwrap();
    assert_eq!(ack.next_heartbeat_s, Some(30));
    assert_eq!(
        seen.recv().await.unwrap().request_line(),
        "post /v1/session/heartbeat http/1.1"
    );

    let closed = client
        .close_all("default", &["0192a".to_string()])
        .await
        .unwrap();
    assert_eq!(closed, 4);
    let req = seen.recv().await.unwrap();
    assert_eq!(
        req.request_line(),
        "post /v1/apps/default/sessions/close-all http/1.1"
    );
    assert_eq!(req.json(), json!({"except": ["0192a"]}));

    let query = ListQuery {
        status: Some(StatusFilter::Closed),
        order: Some(Order::Desc),
        limit: Some(5),
        ..ListQuery::default()
    };
    let page = client.list_sessions("default", &query).await.unwrap();
    assert_eq!(page.next.as_deref(), Some("0192b"));
    assert_eq!(page.sessions[0].reason, Some(CloseReason::Killed));
    let req = seen.recv().await.unwrap();
    assert_eq!(
        req.request_line(),
        "get /v1/apps/default/sessions?status=closed&limit=5&order=desc http/1.1"
    );
}

#[tokio::test]
async fn refusals_become_api_errors() {
    let (url, mut seen) = serve(vec![json_answer(
        "410 Gone",
        json!({"error": "session_closed", "message": "the session is closed", "reason": "killed"}),
    )])
    .await;
    let client = Client::new(&url, None).unwrap();
    let err = client.heartbeat().await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 410, .. }), "{err:?}");
    assert_eq!(err.close_reason(), Some(CloseReason::Killed));
    let req = seen.recv().await.unwrap();
    assert_eq!(
        req.header("authorization"),
        None,
        "no credential, no header"
    );
}

#[tokio::test]
async fn undecodable_success_is_a_decode_error() {
    let (url, _seen) = serve(vec![json_answer("200 OK", json!({"id": 5}))]).await;
    let client = Client::new(&url, None).unwrap();
    let err = client.get_session("x").await.unwrap_err();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn event_stream_reads_frames_split_across_writes() {
    let (url, mut seen) = serve(vec![Answer {
        status: "200 OK",
        content_type: "text/event-stream",
        chunks: vec![
            ": connected\n\n".into(),
            "event: clo".into(),
            "sed\ndata: {\"event\":\"closed\",\"id\":\"0192\",\"app\":\"default\",".into(),
            "\"reason\":\"taken_over\",\"by\":\"session:0193\",\"at\":\"2026-05-01T09:00:00.000Z\"}\r\n\r".into(),
            "\n".into(),
        ],
        hold: false,
    }])
    .await;
    let client = Client::new(&url, Some("tok".into())).unwrap();
    let mut events = client.session_events().await.unwrap();
    let Some(StreamItem::Event(event)) = events.next_item().await.unwrap() else {
        panic!("one event");
    };
    assert!(event.is_closed());
    assert_eq!(event.session_id(), Some("0192"));
    assert_eq!(event.close_reason(), Some(CloseReason::TakenOver));
    assert_eq!(event.data["by"], "session:0193");
    assert!(events.next_item().await.unwrap().is_none(), "stream ended");

    let req = seen.recv().await.unwrap();
    assert_eq!(req.request_line(), "get /v1/session/events http/1.1");
    assert_eq!(req.header("accept"), Some("text/event-stream"));
    assert_eq!(req.header("last-event-id"), None);
    // `closed` is a session stream's last event: no reconnection follows.
    assert!(seen.try_recv().is_err());
}

fn stream_answer(chunks: &[&str]) -> Answer {
    Answer {
        status: "200 OK",
        content_type: "text/event-stream",
        chunks: chunks.iter().map(|c| c.to_string()).collect(),
        hold: false,
    }
}

/// Waits of a few milliseconds, so these tests do not sit through real backoff.
fn quick() -> Reconnect {
    Reconnect {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..Reconnect::default()
    }
}

/// A connection cut mid-frame, a 503 while reconnecting, then another node that cannot
/// resume: the events come once each, the cut frame never, `resync` as its own item,
/// and every reconnection sends the id of the last complete frame.
#[tokio::test]
async fn an_app_stream_reconnects_with_last_event_id_and_hands_over_resync() {
    let (url, mut seen) = serve(vec![
        stream_answer(&[
            "id: e-0\n\n",
            "event: opened\nid: e-1\ndata: {\"id\":\"s1\"}\n\n",
            "event: opened\nid: e-2\ndata: {\"id\":\"s2\"}\n\nevent: closed\nid: e-3\ndata: {\"id\":",
        ]),
        json_answer(
            "503 Service Unavailable",
            json!({"error": "store_unavailable", "message": "retry shortly"}),
        ),
        stream_answer(&[
            "event: resync\nid: f-9\ndata: {\"reason\":\"unknown_epoch\"}\n\n",
            "event: opened\nid: f-10\ndata: {\"id\":\"s3\"}\n\n",
        ]),
    ])
    .await;
    let client = Client::new(&url, Some("key".into()))
        .unwrap()
        .with_reconnect(quick());
    let mut events = client.app_events("shop").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(match events.next_item().await.unwrap().expect("open") {
            StreamItem::Event(e) => format!("{} {}", e.event, e.session_id().unwrap()),
            StreamItem::Resync(reason) => format!("resync {reason:?}"),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        got,
        ["opened s1", "opened s2", "resync UnknownEpoch", "opened s3"]
    );
    assert_eq!(events.last_event_id(), Some("f-10"));
    let sent: Vec<Option<String>> = [
        seen.recv().await.unwrap(),
        seen.recv().await.unwrap(),
        seen.recv().await.unwrap(),
    ]
    .iter()
    .map(|r| {
        assert_eq!(r.request_line(), "get /v1/apps/shop/events http/1.1");
        r.header("last-event-id").map(String::from)
    })
    .collect();
    assert_eq!(sent, [None, Some("e-2".into()), Some("e-2".into())]);
}

/// A refusal on reconnection that retrying cannot change ends the stream with it; a
/// stream told never to reconnect ends quietly when its connection does.
#[tokio::test]
async fn a_final_refusal_or_no_retries_end_the_stream() {
    let (url, _seen) = serve(vec![
        stream_answer(&["event: opened\nid: e-1\ndata: {\"id\":\"s1\"}\n\n"]),
        json_answer(
            "401 Unauthorized",
            json!({"error": "invalid_token", "message": "unknown credential"}),
        ),
        stream_answer(&["event: opened\nid: e-1\ndata: {\"id\":\"s1\"}\n\n"]),
    ])
    .await;
    let client = Client::new(&url, Some("key".into()))
        .unwrap()
        .with_reconnect(quick());
    let mut events = client.app_events("shop").await.unwrap();
    assert!(matches!(
        events.next_item().await,
        Ok(Some(StreamItem::Event(_)))
    ));
    let err = events.next_item().await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_token"));
    assert!(
        events.next_item().await.unwrap().is_none(),
        "over after an error"
    );

    let once = client.with_reconnect(Reconnect {
        max_attempts: Some(0),
        ..quick()
    });
    let mut events = once.app_events("shop").await.unwrap();
    assert!(matches!(
        events.next_item().await,
        Ok(Some(StreamItem::Event(_)))
    ));
    assert!(events.next_item().await.unwrap().is_none());
}

#[tokio::test]
async fn event_stream_refusal_is_an_api_error() {
    let (url, _seen) = serve(vec![json_answer(
        "404 Not Found",
        json!({"error": "unknown_app", "message": "no app named nope"}),
    )])
    .await;
    let client = Client::new(&url, Some("admin".into())).unwrap();
    let err = client.app_events("nope").await.unwrap_err();
    assert_eq!(err.code(), Some("unknown_app"));
    assert_eq!(err.to_string(), "no app named nope (unknown_app)");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error_without_the_secret() {
    // Bind then drop, so the port is (very likely) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(format!("http://127.0.0.1:{port}"), Some("s3cr3t".into())).unwrap();
    let err = client.list_apps().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cr3t"));
    let message = err.to_string();
    assert!(
        message.starts_with("cannot talk to the sessiond server: "),
        "{message}"
    );
    assert!(
        message.to_lowercase().contains("refused"),
        "the cause is spelled out: {message}"
    );
    assert!(
        std::error::Error::source(&err).is_none(),
        "not repeated as source"
    );
}

/// A connection that goes silent (no event, no keep-alive) is taken for dead after the
/// idle timeout and replaced, resuming from the last id.
#[tokio::test]
async fn a_silent_connection_is_replaced() {
    // Two chunks: no Content-Length, so only the silence can end it.
    let mut silent = stream_answer(&[
        ": hello\n\n",
        "event: opened\nid: e-1\ndata: {\"id\":\"s1\"}\n\n",
    ]);
    silent.hold = true;
    let (url, mut seen) = serve(vec![
        silent,
        stream_answer(&["event: opened\nid: e-2\ndata: {\"id\":\"s2\"}\n\n"]),
    ])
    .await;
    let client = Client::new(&url, Some("key".into()))
        .unwrap()
        .with_reconnect(Reconnect {
            idle_timeout: Duration::from_millis(200),
            ..quick()
        });
    let mut events = client.app_events("shop").await.unwrap();
    for want in ["s1", "s2"] {
        let item = tokio::time::timeout(Duration::from_secs(10), events.next_item())
            .await
            .expect("in time (a hung test stops here)");
        let Ok(Some(StreamItem::Event(e))) = item else {
            panic!("{item:?}");
        };
        assert_eq!(e.session_id(), Some(want));
    }
    seen.recv().await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().header("last-event-id"),
        Some("e-1")
    );
}
