//! The sessiond server: the HTTP API v1 over the session engine, its configuration,
//! credentials, metrics and operator command line.
//!
//! The binary only parses flags and calls [`run`]; tests call it too, on a listener
//! bound to port 0:
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessiond::ServeError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = sessiond::Config::default();
//! sessiond::run(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod credentials;
pub mod error;
pub mod event_id;
pub mod event_log;
pub mod license;
pub mod licensing;
pub mod metrics;
#[cfg(unix)]
mod os_unix;
pub mod private_file;
pub mod reload;
mod serve;
pub mod state;
pub mod tls;
pub mod views;
pub mod web;
pub mod webhooks;

pub use config::{Config, Secret, StoreUrl};
pub use serve::{admin_token, manager, open_store, run, run_on, Listeners, ServeError};
