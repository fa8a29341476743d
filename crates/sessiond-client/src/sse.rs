//! The event-stream framing: a small line-based parser (the WHATWG rules: `event:`,
//! `data:`, `id:`, comments, blank-line dispatch, any of `\n`, `\r\n`, `\r` as line
//! end, even split across chunks) and the [`Event`] it yields. [`crate::EventStream`]
//! feeds it the chunks of [`reqwest::Response::chunk`] and reconnects around it.
//!
//! Kept here rather than taken from a crate: the maintained SSE client for `reqwest`
//! (`reqwest-eventsource`, over `eventsource-stream`) would bring `nom`,
//! `futures-timer` and a second major version of `thiserror` into a client that needs
//! none of them, and its reconnection still would not know what sessiond's streams
//! need (which events end a stream, which refusals are final, `resync`), so that part
//! would be ours anyway. The framing is 150 lines, tested byte by byte below.

use std::collections::VecDeque;

use serde_json::Value;

use crate::error::Error;
use crate::model::CloseReason;

/// Longest line, and longest event data, an event stream may send. The server's events
/// are a few hundred bytes; this only stops a broken peer from filling memory.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event type (`opened`, `closed`, `privileges_changed`...); `message` when the
    /// frame had no `event:` line.
    pub event: String,
    /// The frame's own `id:` line, if it had one. (The session id is in
    /// [`Event::session_id`].)
    pub id: Option<String>,
    /// The `data:` lines, parsed as JSON; a string when they are not JSON.
    pub data: Value,
}

impl Event {
    /// The id of the session the event is about (`data.id`).
    pub fn session_id(&self) -> Option<&str> {
        self.data.get("id").and_then(Value::as_str)
    }

    /// Why the session closed, for `closed` events (`data.reason`).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.data
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| CloseReason::from(r.to_string()))
    }

    /// Whether this is a `closed` event.
    pub fn is_closed(&self) -> bool {
        self.event == "closed"
    }
}

/// The event-stream framing state.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting this one belongs to that line end.
    after_cr: bool,
    /// Whether a line was completed yet (a UTF-8 BOM may start the first one).
    seen_line: bool,
    /// `event:` of the frame being read.
    event: Option<String>,
    /// `data:` lines of the frame being read, each followed by `\n`.
    data: String,
    /// `id:` of the frame being read.
    id: Option<String>,
    /// The last `id:` read, kept from frame to frame (the WHATWG "last event ID buffer").
    id_buffer: String,
    /// The last event id: `id_buffer` as of the last complete frame, with or without data
    /// (what a reconnection sends as `Last-Event-ID`).
    last_event_id: String,
    /// Complete events not handed out yet.
    pub(crate) ready: VecDeque<Event>,
}

impl Parser {
    /// The id to resume from, if the stream has sent one.
    pub(crate) fn last_event_id(&self) -> Option<&str> {
        Some(self.last_event_id.as_str()).filter(|id| !id.is_empty())
    }

    /// Starts with `id` as the id to resume from.
    pub(crate) fn resume_from(id: &str) -> Self {
        Parser {
            id_buffer: id.to_string(),
            last_event_id: id.to_string(),
            ..Parser::default()
        }
    }

    /// A new connection: a frame left unfinished by the old one is dropped, its `id:`
    /// with it (the SSE rules); the last event id and the events not handed out yet are
    /// kept.
    pub(crate) fn reconnected(&mut self) {
        *self = Parser {
            id_buffer: self.last_event_id.clone(),
            last_event_id: std::mem::take(&mut self.last_event_id),
            ready: std::mem::take(&mut self.ready),
            ..Parser::default()
        };
    }

    /// Reads a chunk; complete events land in `ready`.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            self.check_size()?;
            let line = std::mem::take(&mut self.line);
            self.line_done(&line)?;
            match (rest[end], rest.get(end + 1)) {
                (b'\r', Some(b'\n')) => rest = &rest[end + 2..],
                (b'\r', None) => {
                    self.after_cr = true;
                    rest = &[];
                }
                _ => rest = &rest[end + 1..],
            }
        }
        self.line.extend_from_slice(rest);
        self.check_size()
    }

    fn check_size(&self) -> Result<(), Error> {
        if self.line.len() > MAX_EVENT_BYTES || self.data.len() > MAX_EVENT_BYTES {
            return Err(Error::EventStream(format!(
                "an event is over {MAX_EVENT_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// Handles one complete line.
    fn line_done(&mut self, line: &[u8]) -> Result<(), Error> {
        let mut line = line;
        if !self.seen_line {
            self.seen_line = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment: the server's keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.check_size()?;
            }
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_string());
                self.id_buffer = value.to_string();
            }
            // `retry` (the client's own backoff decides) and unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }

    /// A blank line: the frame read so far becomes an event, if it had data; its id (or
    /// the last one before it) becomes the id to resume from either way.
    fn dispatch(&mut self) {
        self.last_event_id.clone_from(&self.id_buffer);
        let event = self.event.take();
        let id = self.id.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
        self.ready.push_back(Event {
            event: event.unwrap_or_else(|| "message".to_string()),
            id,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        for chunk in chunks {
            p.feed(chunk).unwrap();
        }
        p.ready.into_iter().collect()
    }

    const CLOSED: &str = "event: closed\ndata: {\"event\":\"closed\",\"id\":\"0192\",\"app\":\"default\",\"reason\":\"killed\",\"by\":\"admin\",\"at\":\"2026-05-01T09:00:00.000Z\"}\n\n";

    #[test]
    fn closed_frame() {
        let events = parse(&[CLOSED.as_bytes()]);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event, "closed");
        assert!(e.is_closed());
        assert_eq!(e.id, None);
        assert_eq!(e.session_id(), Some("0192"));
        assert_eq!(e.close_reason(), Some(CloseReason::Killed));
        assert_eq!(e.data["by"], "admin");
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let stream = format!(
            ": keep-alive\n\n{CLOSED}event: opened\r\nid: 7\r\ndata: {{\"id\":\"a\"}}\r\n\r\n"
        );
        let bytes = stream.as_bytes();
        let whole = parse(&[bytes]);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].event, "opened");
        assert_eq!(whole[1].id.as_deref(), Some("7"));
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse(&bytewise), whole);
    }

    #[test]
    fn line_ends_cr_crlf_lf() {
        let events = parse(&[b"data: 1\r\rdata: 2\r\n\r\ndata: 3\n\n"]);
        let data: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, [json!(1), json!(2), json!(3)]);
        // A lone \r at the end of a chunk followed by a line that is not empty.
        let events = parse(&[b"data: 1\r", b"\r", b"data: 2\r", b"\n\n"]);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn multi_line_data_defaults_and_non_json() {
        let events = parse(&[b"data: {\"a\":\ndata: 1}\n\ndata:plain text\n\ndata\n\n"]);
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].data, json!({"a": 1}));
        assert_eq!(events[1].data, json!("plain text"));
        assert_eq!(events[2].data, json!(""));
    }

    #[test]
    fn frames_without_data_are_not_events_and_reset() {
        let events = parse(&[b"event: closed\nid: 1\n\nretry: 5000\nfoo: bar\n\ndata: 2\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].id, None);
        assert_eq!(events[0].data, json!(2));
    }

    #[test]
    fn bom_comment_and_unfinished_frame() {
        let events = parse(&[b"\xEF\xBB\xBF: hello\n\ndata: 1\n\ndata: 2\n"]);
        assert_eq!(
            events.len(),
            1,
            "the frame without a blank line is not complete"
        );
    }

    #[test]
    fn the_id_to_resume_from() {
        let mut p = Parser::default();
        assert_eq!(p.last_event_id(), None);
        // An id-only frame dispatches no event but is where the stream stands.
        p.feed(b"id: e-4\n\n").unwrap();
        assert_eq!((p.last_event_id(), p.ready.len()), (Some("e-4"), 0));
        // A frame without an id keeps the last one, and its event shows no id.
        p.feed(b"data: 1\n\nid: e-5\ndata: 2\n\n").unwrap();
        assert_eq!(p.ready[0].id, None);
        assert_eq!(p.ready[1].id.as_deref(), Some("e-5"));
        assert_eq!(p.last_event_id(), Some("e-5"));
        // An unfinished frame does not count, and a new connection drops it.
        p.feed(b"id: e-6\ndata: 3\n").unwrap();
        assert_eq!(p.last_event_id(), Some("e-5"));
        p.reconnected();
        p.feed(b"\n").unwrap();
        assert_eq!(p.ready.len(), 2, "the cut frame is not an event");
        assert_eq!(p.last_event_id(), Some("e-5"));
        // An id with NUL is ignored; an empty one clears it.
        p.feed(b"id: a\0b\n\n").unwrap();
        assert_eq!(p.last_event_id(), Some("e-5"));
        p.feed(b"id\n\n").unwrap();
        assert_eq!(p.last_event_id(), None);
        assert_eq!(Parser::resume_from("x-1").last_event_id(), Some("x-1"));
    }

    #[test]
    fn oversized_line_is_an_error() {
        let mut p = Parser::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(matches!(p.feed(&big), Err(Error::EventStream(_))));
    }
}
