//! Server-Sent Events. `GET /v1/session/events` pushes `closed` (with its reason) the
//! moment the caller's session closes, then ends; a client that connects after the
//! close gets the `closed` event at once, so reconnecting never misses it.
//! `GET /v1/apps/{app}/events` streams every event of an app for operators. Both send
//! keep-alive comments so proxies keep idle streams open, and end on shutdown.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use sessiond_core::{Error, Event, EventKind, Lookup, Resolve};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::auth::{Caller, ClientAddr, SessionToken};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// A frame for `e`, its `id` the event time (session streams) unless one is given.
fn frame_with_id(e: &Event, id: Option<u64>) -> SseEvent {
    SseEvent::default()
        .event(e.kind.as_str())
        .id(id.unwrap_or(e.at.as_millis()).to_string())
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"))
}

fn frame(e: &Event) -> SseEvent {
    frame_with_id(e, None)
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

/// What a stream waits on: the next event, or shutdown.
async fn next_event(
    rx: &mut broadcast::Receiver<Event>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Result<Event, u64>> {
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        r = rx.recv() => match r {
            Ok(e) => Some(Ok(e)),
            Err(RecvError::Lagged(n)) => Some(Err(n)),
            Err(RecvError::Closed) => None,
        },
        _ = shutdown.changed() => None,
    }
}

/// The caller's session events: `closed` when it closes (then the stream ends).
#[utoipa::path(get, path = "/v1/session/events", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream; `event: closed` with `{id, app, reason, by, at}`", content_type = "text/event-stream", body = String),
        (status = 400, description = "bind_ip refused the address", body = crate::views::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::views::ErrorBody)))]
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
    let id = session.id;
    let state = (rx, st.shutdown.clone(), st.clone(), token, false);
    let s = stream::unfold(
        state,
        move |(mut rx, mut shutdown, st, token, done)| async move {
            if done {
                return None;
            }
            loop {
                match next_event(&mut rx, &mut shutdown).await? {
                    Ok(e) if e.id == id && e.kind == EventKind::Closed => {
                        return Some((Ok(frame(&e)), (rx, shutdown, st, token, true)));
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        // Missed events: look at the session itself.
                        if let Ok(Some(s)) =
                            st.manager.store().get(Lookup::Token(token.hash())).await
                        {
                            if !s.is_open() {
                                let e = Event::of(EventKind::Closed, &s, st.manager.now());
                                return Some((Ok(frame(&e)), (rx, shutdown, st, token, true)));
                            }
                        }
                    }
                }
            }
        },
    );
    Ok(respond(&st, s.boxed()))
}

/// Every event of an app: `opened`, `closed`, `privileges_changed`, `heartbeat_changed`.
/// Each frame's `id` is a sequence number; reconnecting with `Last-Event-ID` replays
/// the events after it (the node keeps the last 10,000).
#[utoipa::path(get, path = "/v1/apps/{app}/events", tag = "apps",
    params(("app" = String, Path, description = "App name"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event id received, to replay what followed")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream of `{event, id, app, user?, reason?, by?, at}`", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or unknown credential", body = crate::views::ErrorBody),
        (status = 403, description = "An app key of another app", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody)))]
pub async fn app_events(
    State(st): State<SharedState>,
    caller: Caller,
    Path(app): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    caller.check_app(&app)?;
    st.manager.policy(&app)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let name = app.clone();
    let (rx, replay) = st.event_log.since(after, move |e| *e.app == *name);
    let last = replay.last().map_or(after.unwrap_or(0), |(seq, _)| *seq);
    let numbered = |seq: u64, e: &Event| frame_with_id(e, Some(seq));
    let replayed: Vec<Result<SseEvent, Infallible>> = replay
        .iter()
        .map(|(seq, e)| Ok(numbered(*seq, e)))
        .collect();
    let state = (rx, st.shutdown.clone(), app, last);
    let live = stream::unfold(state, move |(mut rx, mut shutdown, app, last)| async move {
        loop {
            if *shutdown.borrow() {
                return None;
            }
            let next = tokio::select! {
                r = rx.recv() => r,
                _ = shutdown.changed() => return None,
            };
            match next {
                Ok((seq, e)) if seq > last && *e.app == *app => {
                    return Some((Ok(numbered(seq, &e)), (rx, shutdown, app, seq)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let lag = SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{n}}}"));
                    return Some((Ok(lag), (rx, shutdown, app, last)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(respond(&st, stream::iter(replayed).chain(live).boxed()))
}
