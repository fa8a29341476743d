//! [`State`]: what every handler shares — the Manager, the credentials, the metrics,
//! and the shutdown signal that ends event streams.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sessiond_core::Manager;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Handlers' shared state.
pub struct State {
    /// The session engine.
    pub manager: Arc<Manager>,
    /// Every credential (admin tokens, operators, app keys, client keys), reloaded on
    /// SIGHUP.
    pub credentials: Arc<crate::credentials::CredentialTable>,
    /// How often each app's client credentials may open a session.
    pub client_opens: crate::credentials::OpenRate,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Keep-alive period of event streams.
    pub sse_keepalive: Duration,
    /// Time limit of a request (event streams excepted).
    pub request_timeout: Duration,
    /// Becomes true when the server begins to shut down.
    pub shutdown: watch::Receiver<bool>,
    /// Licensed apps.
    pub licenses: crate::license::Licenses,
    /// The admin console's sign-ins (sessions of an internal app) and its throttle.
    pub console: crate::console::ConsoleSessions,
    /// Open event streams, counted against their limits.
    pub streams: Arc<crate::api::events::Streams>,
    /// Recent events, for `Last-Event-ID` replay.
    pub event_log: Arc<crate::event_log::EventLog>,
    /// Online backups of the embedded store (none on Redis or PostgreSQL).
    pub backups: Option<crate::api::backup::Backups>,
    /// Reads the configuration again (SIGHUP, `POST /v1/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    /// Each app's web front: forward-auth's headers, the browser heartbeat.
    pub fronts: Arc<crate::web::Fronts>,
    /// The webhooks and their sender.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

/// The state as handlers receive it.
pub type SharedState = Arc<State>;
