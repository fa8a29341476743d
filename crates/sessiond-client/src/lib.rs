//! A typed async client of the sessiond HTTP API v1.
//!
//! [`Client`] has one method per endpoint. What it sends are the types of [`request`]
//! ([`OpenRequest`], [`ListQuery`]...), what it reads those of [`model`] ([`Session`],
//! [`OpenedSession`], [`SessionPage`], [`App`]...); refusals are [`Error::Api`] with the
//! server's code and whole body, and the two event feeds are [`EventStream`]s, which
//! reconnect by themselves (resuming with `Last-Event-ID`, and saying
//! [`StreamItem::Resync`] when the server cannot). It is what the `sessiond` command
//! line, the server's tests and the reference seat client use, and it depends only on
//! `reqwest`, `serde` and tokio's timer (which `reqwest` runs on), not on the session
//! engine.
//!
//! This build speaks plain HTTP (the workspace builds `reqwest` without a TLS backend);
//! put sessiond behind a TLS-terminating proxy on the same host or network, or give
//! [`Client::with_http_client`] a `reqwest` client built with TLS.

pub mod model;
pub mod request;

mod client;
mod error;
mod sse;
mod stream;

pub use client::Client;
pub use error::{Error, SeatsExhausted};
pub use model::{
    App, Backup, ClientInfo, CloseReason, ClosedBy, Heartbeat, HeartbeatAck, Killed, OpenedSession,
    Seats, Secret, Session, SessionPage, SessionStatus,
};
pub use request::{
    HeartbeatRequest, HeartbeatUpdate, ListQuery, OpenRequest, Order, PrivilegesUpdate,
    StatusFilter,
};
pub use sse::Event;
pub use stream::{EventStream, Reconnect, ResyncReason, StreamItem};

/// The `reqwest` version this client is built on, for [`Client::with_http_client`].
pub use reqwest;
