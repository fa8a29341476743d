//! Server-Sent Events. `GET /v1/session/events` pushes `closed` (with its reason) the
//! moment the caller's session closes, then ends; a client that connects after the
//! close gets the `closed` event at once, so reconnecting never misses it. A stream
//! lives only as long as the token that opened it works: when the token is rotated
//! (a privilege change) it sends `privileges_changed` and ends; besides the events, it
//! checks its token at every keep-alive period, so a missed event cannot keep it open.
//! `GET /v1/apps/{app}/events` streams every event of an app for operators. Both send
//! keep-alive comments so proxies keep idle streams open, and end on shutdown.
//!
//! Only the app stream has event ids. Its frames are numbered by the node's event log,
//! and a client that reconnects with `Last-Event-ID` gets what it missed, or `resync`
//! when the id is not one this node can honour (see `app_stream`). The session stream
//! has nothing to replay: its only frame is its last, and what that frame says is read
//! again from the session on every connect (closed: `closed` at once; token rotated:
//! 401, the old token is dead). Its frames carry no `id:`, and a `Last-Event-ID` sent to
//! it is ignored.
//!
//! Open streams are counted ([`Streams`]): at most so many in all, per app and per
//! session; one more is refused with 429 `too_many_streams`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use sessiond_core::{Error, Event, EventKind, Lookup, Resolve, SessionId, Token};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::scope::AppScope;
use crate::auth::{ClientAddr, SessionToken};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// The most event streams open at once.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// In all.
    pub total: usize,
    /// Per app (its sessions' streams and its operators').
    pub per_app: usize,
    /// Per session.
    pub per_session: usize,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_app: HashMap<String, usize>,
    per_session: HashMap<SessionId, usize>,
}

/// The open event streams, counted against [`StreamLimits`]. Its tables hold one entry
/// per app and per session with a stream open, so they are bounded by the limits.
pub struct Streams {
    limits: StreamLimits,
    open: Mutex<Open>,
}

/// A stream's place in the count, given back when the stream ends or its client goes.
pub struct StreamSlot {
    streams: Arc<Streams>,
    app: String,
    session: Option<SessionId>,
}

impl Streams {
    /// No stream open yet.
    pub fn new(limits: StreamLimits) -> Self {
        Streams {
            limits,
            open: Mutex::default(),
        }
    }

    /// Takes a place for a stream of `app` (and of `session`), or refuses with 429
    /// naming the limit reached.
    pub fn open(
        self: &Arc<Self>,
        app: &str,
        session: Option<SessionId>,
    ) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let full = |what: &str, n: usize| {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("{n} event streams are open {what}, the most allowed; close one first"),
            ))
        };
        if open.total >= self.limits.total {
            return full("on this server", self.limits.total);
        }
        if open.per_app.get(app).copied().unwrap_or(0) >= self.limits.per_app {
            return full("for this app", self.limits.per_app);
        }
        if let Some(id) = session {
            if open.per_session.get(&id).copied().unwrap_or(0) >= self.limits.per_session {
                return full("for this session", self.limits.per_session);
            }
            *open.per_session.entry(id).or_default() += 1;
        }
        *open.per_app.entry(app.to_string()).or_default() += 1;
        open.total += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            app: app.to_string(),
            session,
        })
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        release(&mut open.per_app, &self.app);
        if let Some(id) = self.session {
            release(&mut open.per_session, &id);
        }
    }
}

/// The frame of `e`: `event: <kind>` and its JSON `data:`, no id.
pub(super) fn frame(e: &Event) -> SseEvent {
    SseEvent::default()
        .event(e.kind.as_str())
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"))
}

fn respond(st: &SharedState, s: BoxStream<'static, Result<SseEvent, Infallible>>) -> Response {
    Sse::new(s)
        .keep_alive(
            KeepAlive::new()
                .interval(st.sse_keepalive)
                .text("keep-alive"),
        )
        .into_response()
}

/// The caller's session events: `closed` when it closes (then the stream ends).
#[utoipa::path(get, path = "/v1/session/events", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream; its last frame is `event: closed` with `{id, app, reason, by, at}` when the session closes, or `event: privileges_changed` when the token is rotated (reconnect with the new one); then it ends. Frames carry no `id:`: reconnecting reads the session again (`closed` at once if it is closed) and `Last-Event-ID` is ignored", content_type = "text/event-stream", body = String),
        (status = 400, description = "bind_ip refused the address", body = crate::views::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::views::ErrorBody),
        (status = 429, description = "`too_many_streams`: as many streams are open as allowed for this session, its app or the server", body = crate::views::ErrorBody)))]
pub async fn session_events(
    State(st): State<SharedState>,
    SessionToken(token): SessionToken,
    ClientAddr(ip): ClientAddr,
) -> ApiResult<Response> {
    // Subscribe before looking, so a close between the two is not missed.
    let rx = st.manager.subscribe();
    let now = st.manager.now();
    let session = match st
        .manager
        .resolve(&token, Resolve { touch: false, ip })
        .await
    {
        Ok(s) => s,
        Err(Error::SessionClosed(_)) => {
            let s = st
                .manager
                .store()
                .get(Lookup::Token(token.hash()))
                .await
                .map_err(Error::from)?
                .ok_or_else(|| ApiError::from(Error::InvalidToken))?;
            let closed = frame(&Event::of(EventKind::Closed, &s, now));
            return Ok(respond(&st, stream::iter([Ok(closed)]).boxed()));
        }
        Err(e) => return Err(e.into()),
    };
    let slot = st.streams.open(&session.app, Some(session.id))?;
    let watch = Watch {
        id: session.id,
        token,
        rx,
        shutdown: st.shutdown.clone(),
        recheck: tokio::time::interval_at(
            tokio::time::Instant::now() + st.sse_keepalive,
            st.sse_keepalive,
        ),
        st: st.clone(),
        _slot: slot,
    };
    let s = stream::unfold(Some(watch), |watch| async move {
        let mut w = watch?;
        let last = w.last_frame().await?;
        // The last frame goes out, then the stream ends.
        Some((Ok(last), None))
    });
    Ok(respond(&st, s.boxed()))
}

/// What a session's stream watches: its session's events, its token, and shutdown.
struct Watch {
    id: SessionId,
    token: Token,
    rx: broadcast::Receiver<Event>,
    shutdown: watch::Receiver<bool>,
    recheck: tokio::time::Interval,
    st: SharedState,
    _slot: StreamSlot,
}

impl Watch {
    /// Waits until the token that opened the stream stops working, and answers the
    /// frame that says why: `closed` (the session closed) or `privileges_changed` (the
    /// token was rotated). None: shutdown, or nothing left to describe.
    async fn last_frame(&mut self) -> Option<SseEvent> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(e) if e.id == self.id
                        && matches!(e.kind, EventKind::Closed | EventKind::PrivilegesChanged) =>
                    {
                        return Some(frame(&e));
                    }
                    Ok(_) => {}
                    // Missed events: look at the session itself.
                    Err(RecvError::Lagged(_)) => {
                        if let Some(f) = self.check().await {
                            return f;
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.recheck.tick() => {
                    if let Some(f) = self.check().await {
                        return f;
                    }
                }
                _ = self.shutdown.changed() => return None,
            }
        }
    }

    /// Whether the token still opens the session: None if it does (or the store cannot
    /// say now), else the stream's last frame.
    async fn check(&self) -> Option<Option<SseEvent>> {
        let store = self.st.manager.store();
        let now = self.st.manager.now();
        match store.get(Lookup::Token(self.token.hash())).await {
            Ok(Some(s)) if s.is_open() => None,
            Ok(Some(s)) => Some(Some(frame(&Event::of(EventKind::Closed, &s, now)))),
            Ok(None) => Some(match store.get(Lookup::Id(self.id)).await {
                Ok(Some(s)) if s.is_open() => {
                    Some(frame(&Event::of(EventKind::PrivilegesChanged, &s, now)))
                }
                Ok(Some(s)) => Some(frame(&Event::of(EventKind::Closed, &s, now))),
                _ => None,
            }),
            Err(e) => {
                tracing::debug!(error = %e, session = %self.id, "event stream: the store did not answer; checking later");
                None
            }
        }
    }
}

/// Every event of an app: `opened`, `closed`, `privileges_changed`, `heartbeat_changed`.
/// Each frame's `id` is `<epoch>-<seq>`, the epoch drawn at each start of the node;
/// reconnecting with `Last-Event-ID` replays the app's events after it (the node keeps
/// the last 10,000), or sends `resync` first when it cannot.
#[utoipa::path(get, path = "/v1/apps/{app}/events", tag = "apps",
    params(("app" = String, Path, description = "App name"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event id received (`<epoch>-<seq>`, at most 64 bytes read): the app's events that followed it are replayed. An id this node cannot honour (another node's or an earlier run's, evicted, malformed, the old bare number) is never refused: the stream starts with `resync`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream. Events `opened`, `closed`, `privileges_changed`, `heartbeat_changed` with `{event, id, app, user?, reason?, by?, at}` and `id: <epoch>-<seq>` (16 hex digits, a dash, a decimal number). The first frame is `resync` with `{reason}` (`unknown_epoch`, `evicted`, `lagged` or `malformed`) when the `Last-Event-ID` cannot be honoured, or else the replayed events and a frame with only an `id:` (no event) that marks where the client stands. `resync` also comes mid-stream (reason `lagged`) when events were lost; after it, list the sessions again", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "An app key of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody),
        (status = 429, description = "`too_many_streams`: as many streams are open as allowed for this app or the server", body = crate::views::ErrorBody)))]
pub async fn app_events(
    AppScope { st, app, .. }: AppScope,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let slot = st.streams.open(&app, None)?;
    let frames = super::app_stream::frames(&st, app, slot, headers.get("last-event-id"));
    Ok(respond(&st, frames))
}
