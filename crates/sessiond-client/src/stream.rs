//! [`EventStream`]: an event stream that outlives its connections. When one drops (the
//! network, a server restart, a balancer that sends the next connection to another
//! node) it reconnects with backoff and sends the last event id back as
//! `Last-Event-ID`; the server replays what was missed, or answers `resync`, which the
//! stream hands over as [`StreamItem::Resync`] so that the caller re-reads its state.
//!
//! It ends on a session stream's last event (`closed`, `privileges_changed`), on a
//! refusal that retrying cannot change (401, 403, 404...), or when the caller drops it.
//! Every state it waits in (the backoff, a connection being made, a chunk) is kept in
//! the stream itself, so a `next_item` future dropped in a `select!` loses nothing.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT};
use serde_json::Value;

use crate::client::Client;
use crate::error::Error;
use crate::sse::{Event, Parser};

/// How an [`EventStream`] reconnects. Set it with
/// [`Client::with_reconnect`](crate::Client::with_reconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The wait before the first reconnection; it doubles after each failed attempt.
    /// Each wait is drawn at random between half of it and all of it, so that clients
    /// dropped together do not come back together.
    pub initial_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// How long a connection may stay silent (the server sends a keep-alive comment
    /// every 15 s by default) before it is taken for dead and replaced; also the time
    /// allowed to make a connection.
    pub idle_timeout: Duration,
    /// Failed attempts in a row after which the stream gives up and returns the last
    /// error; `None`: it never gives up. `Some(0)` never reconnects.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    /// 250 ms doubling up to 30 s, a connection dead after 45 s of silence, forever.
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// The wait before attempt `failures + 1`, jittered.
    fn delay(&self, failures: u32) -> Duration {
        let full = self
            .initial_delay
            .saturating_mul(1u32 << failures.min(16))
            .min(self.max_delay);
        // Any random bits will do: the std hasher's keys are drawn per process and step
        // at each `RandomState`.
        let r = std::collections::hash_map::RandomState::new().hash_one(failures);
        let half = full / 2;
        let extra = half.as_nanos() * u128::from(r % 1024) / 1024;
        half.saturating_add(Duration::from_nanos(
            u64::try_from(extra).unwrap_or(u64::MAX),
        ))
    }
}

/// Why a stream could not replay what it missed (the `reason` of a `resync` event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncReason {
    /// The last event id is from another node, or from before the server restarted.
    UnknownEpoch,
    /// The server no longer keeps the events that followed it.
    Evicted,
    /// Events were lost because the server, or this stream, fell behind.
    Lagged,
    /// The server could not read the last event id.
    Malformed,
    /// A reason this client does not know yet (a newer server), kept as sent.
    Other(String),
}

impl From<&str> for ResyncReason {
    fn from(s: &str) -> Self {
        match s {
            "unknown_epoch" => ResyncReason::UnknownEpoch,
            "evicted" => ResyncReason::Evicted,
            "lagged" => ResyncReason::Lagged,
            "malformed" => ResyncReason::Malformed,
            other => ResyncReason::Other(other.to_string()),
        }
    }
}

/// What an [`EventStream`] yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamItem {
    /// An event, in order, none twice across reconnections the server could resume.
    Event(Event),
    /// The server could not replay what the stream missed while it was away (another
    /// node answered, the server restarted, it was away too long): events may have been
    /// lost. Re-read the state you keep (list the sessions); the events that follow are
    /// live.
    Resync(ResyncReason),
}

/// Which stream, for what ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    /// `GET /v1/session/events`: ends after `closed` or `privileges_changed`.
    Session,
    /// `GET /v1/apps/{app}/events`: never ends by itself.
    App,
}

type Connecting = Pin<Box<dyn Future<Output = Result<reqwest::Response, Error>> + Send>>;

/// Where the stream is between two events.
enum Conn {
    /// Reading a connection.
    Open(reqwest::Response),
    /// Waiting before the next attempt.
    Waiting(Pin<Box<tokio::time::Sleep>>),
    /// Making a connection.
    Connecting(Connecting),
    /// Over: every later call answers `Ok(None)`.
    Done,
}

/// An event stream (`GET /v1/session/events` or `GET /v1/apps/{app}/events`) that
/// reconnects by itself; read it with [`EventStream::next_item`].
pub struct EventStream {
    client: Client,
    /// The path, under the client's base URL.
    segments: Vec<String>,
    feed: Feed,
    policy: Reconnect,
    parser: Parser,
    conn: Conn,
    /// When the open connection last sent something (kept here, not in the future of
    /// one call, so that a caller whose `select!` drops `next_item` often still has
    /// silent connections replaced).
    heard: tokio::time::Instant,
    /// Failed attempts in a row.
    failures: u32,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.conn {
            Conn::Open(_) => "open",
            Conn::Waiting(_) => "waiting",
            Conn::Connecting(_) => "connecting",
            Conn::Done => "done",
        };
        f.debug_struct("EventStream")
            .field("feed", &self.feed)
            .field("state", &state)
            .field("last_event_id", &self.parser.last_event_id())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Connects once, failing as any call does (a refusal, an unreachable server); the
    /// stream reconnects by itself only after that, as `client`'s
    /// [`Reconnect`] says.
    pub(crate) async fn connect(
        client: Client,
        segments: &[&str],
        feed: Feed,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, Error> {
        let mut stream = EventStream {
            policy: client.reconnect(),
            client,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            feed,
            parser: last_event_id.map_or_else(Parser::default, Parser::resume_from),
            conn: Conn::Done,
            heard: tokio::time::Instant::now(),
            failures: 0,
        };
        let response = stream.connecting().await?;
        stream.open(response);
        Ok(stream)
    }

    /// The id the stream would resume from (the last one the server sent), to keep if
    /// you want to resume after a restart of your own program
    /// ([`Client::app_events_after`](crate::Client::app_events_after)).
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }

    /// The next event or `resync`; `Ok(None)` once the stream is over (a session
    /// stream's last event was handed out, or it gave up after a drop without an
    /// error). Drops are reconnected with backoff and never show; an error is a
    /// refusal retrying cannot change, a broken stream, or the last failure once
    /// [`Reconnect::max_attempts`] are used up. After an error, the stream is over.
    ///
    /// Cancel-safe: dropping the future loses no event and no progress of a
    /// reconnection.
    pub async fn next_item(&mut self) -> Result<Option<StreamItem>, Error> {
        loop {
            if let Some(event) = self.parser.ready.pop_front() {
                return Ok(Some(self.hand_out(event)));
            }
            match &mut self.conn {
                Conn::Done => return Ok(None),
                Conn::Open(response) => {
                    let silent_at = self.heard + self.policy.idle_timeout;
                    let read = tokio::time::timeout_at(silent_at, response.chunk()).await;
                    match read {
                        Ok(Ok(Some(chunk))) => {
                            self.heard = tokio::time::Instant::now();
                            if let Err(e) = self.parser.feed(&chunk) {
                                self.conn = Conn::Done;
                                return Err(e);
                            }
                        }
                        Ok(Ok(None)) => self.dropped(None)?,
                        Ok(Err(e)) => self.dropped(Some(Error::Transport(e)))?,
                        Err(_) => self.dropped(Some(Error::EventStream(format!(
                            "nothing received for {:?}",
                            self.policy.idle_timeout
                        ))))?,
                    }
                }
                Conn::Waiting(sleep) => {
                    sleep.as_mut().await;
                    self.conn = Conn::Connecting(self.connecting());
                }
                Conn::Connecting(attempt) => {
                    let answer = attempt.as_mut().await;
                    match answer {
                        Ok(response) => {
                            self.failures = 0;
                            self.parser.reconnected();
                            self.open(response);
                        }
                        Err(e) if retryable(&e) => {
                            self.failures = self.failures.saturating_add(1);
                            self.dropped(Some(e))?;
                        }
                        Err(e) => {
                            self.conn = Conn::Done;
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Reads `response` from now on.
    fn open(&mut self, response: reqwest::Response) {
        self.heard = tokio::time::Instant::now();
        self.conn = Conn::Open(response);
    }

    /// An event as the caller sees it; a session stream's last event ends the stream.
    fn hand_out(&mut self, event: Event) -> StreamItem {
        if self.feed == Feed::Session
            && matches!(event.event.as_str(), "closed" | "privileges_changed")
        {
            self.conn = Conn::Done;
            self.parser.ready.clear();
        }
        if event.event == "resync" {
            let reason = event.data.get("reason").and_then(Value::as_str);
            return StreamItem::Resync(ResyncReason::from(reason.unwrap_or("")));
        }
        StreamItem::Event(event)
    }

    /// The connection dropped or an attempt failed (`error`, if any): wait, then try
    /// again, unless the attempts are used up.
    fn dropped(&mut self, error: Option<Error>) -> Result<(), Error> {
        if self
            .policy
            .max_attempts
            .is_some_and(|most| self.failures >= most)
        {
            self.conn = Conn::Done;
            return error.map_or(Ok(()), Err);
        }
        let wait = self.policy.delay(self.failures);
        self.conn = Conn::Waiting(Box::pin(tokio::time::sleep(wait)));
        Ok(())
    }

    /// An attempt to connect, as a future the stream can keep across calls.
    fn connecting(&self) -> Connecting {
        let segments: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        let mut request = self
            .client
            .request(reqwest::Method::GET, &segments, &[])
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(id) = self.parser.last_event_id() {
            // The server's ids are ASCII; anything else (a broken or hostile peer) is
            // not sent back, and the server answers `resync`.
            if let Ok(value) = HeaderValue::from_str(id) {
                request = request.header("last-event-id", value);
            }
        }
        let limit = self.policy.idle_timeout;
        Box::pin(async move {
            let answer = async {
                let response = request.send().await.map_err(Error::Transport)?;
                if response.status().is_success() {
                    return Ok(response);
                }
                let status = response.status().as_u16();
                let body = response.bytes().await.map_err(Error::Transport)?;
                Err(Error::from_response(status, &body))
            };
            tokio::time::timeout(limit, answer)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::EventStream(format!(
                        "no answer to a reconnection within {limit:?}"
                    )))
                })
        })
    }
}

/// Whether trying again may help: the server could not be reached or answered that it
/// cannot now (5xx, 429 too many streams while the old one is still counted, 408).
fn retryable(error: &Error) -> bool {
    match error.status() {
        Some(status) => status >= 500 || status == 429 || status == 408,
        None => matches!(error, Error::Transport(_) | Error::EventStream(_)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_below_each() {
        let policy = Reconnect::default();
        for failures in 0..40 {
            let full = (policy.initial_delay * 2u32.pow(failures.min(16))).min(policy.max_delay);
            let d = policy.delay(failures);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?} of {full:?}");
        }
        assert_eq!(
            Reconnect {
                initial_delay: Duration::ZERO,
                ..policy
            }
            .delay(3),
            Duration::ZERO
        );
    }

    #[test]
    fn which_failures_are_retried() {
        let api = |status: u16| Error::from_response(status, br#"{"error":"x","message":"y"}"#);
        for status in [500, 502, 503, 504, 429, 408] {
            assert!(retryable(&api(status)), "{status}");
        }
        for status in [400, 401, 403, 404, 410] {
            assert!(!retryable(&api(status)), "{status}");
        }
        assert!(retryable(&Error::EventStream("silent".into())));
        assert!(!retryable(&Error::InvalidUrl("x".into())));
    }

    #[test]
    fn resync_reasons() {
        assert_eq!(
            ResyncReason::from("unknown_epoch"),
            ResyncReason::UnknownEpoch
        );
        assert_eq!(ResyncReason::from("evicted"), ResyncReason::Evicted);
        assert_eq!(ResyncReason::from("lagged"), ResyncReason::Lagged);
        assert_eq!(ResyncReason::from("malformed"), ResyncReason::Malformed);
        assert_eq!(ResyncReason::from("new"), ResyncReason::Other("new".into()));
    }
}
