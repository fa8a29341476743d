//! What the client puts on the wire and how it reads answers, against a canned HTTP/1.1
//! server on 127.0.0.1:0 (no sessiond needed): methods, paths, query strings, the bearer
//! header, `If-Match`, JSON bodies, error bodies and an event stream split across writes.

use std::time::Duration;

use serde_json::{json, Value};
use sessiond_client::{
    Client, CloseReason, Error, HeartbeatRequest, ListQuery, OpenRequest, Order, StatusFilter,
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
}

fn json_answer(status: &'static str, body: Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        chunks: vec![body.to_string()],
    }
}

/// Serves `answers` in order, one connection each, and reports what it received.
async fn serve(answers: Vec<Answer>) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
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
            let _ = socket.shutdown().await;
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
    }])
    .await;
    let client = Client::new(&url, Some("tok".into())).unwrap();
    let mut events = client.session_events().await.unwrap();
    let event = events.next_event().await.unwrap().expect("one event");
    assert!(event.is_closed());
    assert_eq!(event.session_id(), Some("0192"));
    assert_eq!(event.close_reason(), Some(CloseReason::TakenOver));
    assert_eq!(event.data["by"], "session:0193");
    assert!(events.next_event().await.unwrap().is_none(), "stream ended");

    let req = seen.recv().await.unwrap();
    assert_eq!(req.request_line(), "get /v1/session/events http/1.1");
    assert_eq!(req.header("accept"), Some("text/event-stream"));
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
