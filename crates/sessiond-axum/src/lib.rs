//! Web sessions for Rust apps on sessiond: a tower layer ([`SessionLayer`]) and an axum
//! extractor ([`Session`]) over any sessiond store, through a [`sessiond_core::Manager`]
//! (the embedded `FileStore`, the `MemoryStore`, or a store shared by many app nodes).
//!
//! What a request gets:
//! - **A cookie** named after the app's policy (`SESSION` by default, `4DSID_MyApp` if
//!   configured), `HttpOnly`, `SameSite=Lax`; on proof of HTTPS ([`ServedOverTls`],
//!   `with_secure`, a trusted proxy's `X-Forwarded-Proto`) `Secure` and `__Host-`-prefixed.
//!   Two cookies of its name in one request are neither believed (cookie tossing).
//! - **Safe sign-in by default** (docs/CONCEPTS.md "Safe sign-in"): state-changing
//!   requests sent by another site's page are refused (403 `cross_site_request`); a
//!   sign-in as another user starts a new, empty session; responses of a signed-in
//!   session carry `Cache-Control: no-store`, `nosniff`, `Referrer-Policy` and framing
//!   refusals. For the sign-in handler: [`PasswordCheck`] (a bounded, throttled password
//!   check) and [`LocalRedirect`] (a `next=` that stays on the site).
//! - **A guest session**, found from the cookie or fresh. It is looked up on first use
//!   only (a request that never touches the session costs the store nothing), and stored,
//!   with its cookie set, only once something is stored in it (Gambas), unless the layer
//!   is eager (4D). An unknown or closed cookie gives a fresh guest.
//! - **Typed storage**: [`Session::get`], [`Session::insert`], [`Session::remove`],
//!   [`Session::keys`], and [`Session::update`] for read-modify-write that concurrent
//!   requests cannot break (conditional on the session version, retried).
//! - **Privileges**: [`Session::set_privileges`] (a new token, so a new cookie),
//!   [`Session::has_privilege`], [`Session::is_guest`], the [`require_privilege`] guard;
//!   [`Session::abandon`] to log out.
//! - **Fail closed**: a store failure answers 503, never a fresh guest; a request from
//!   another address than a `bind_ip` session's answers 400 and leaves it intact.
//! - **Browser heartbeat** (WEBDEV): a script at `/_sessiond/heartbeat.js` and its endpoint
//!   `/_sessiond/heartbeat`, see [`SessionLayer::with_heartbeat`]. A page that loads the
//!   script keeps its session from ending `heartbeat_lost`; it never extends the idle
//!   timeout. Sessions only heartbeat once a page turns it on. Expiry needs the
//!   Manager's sweeper running (`Manager::run_expiry`).
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::{get, post}, Router};
//! use sessiond_axum::{require_privilege, Grant, Session, SessionError, SessionLayer};
//! use sessiond_core::{Manager, MemoryStore, Policy};
//!
//! async fn login(session: Session) -> Result<&'static str, SessionError> {
//!     session
//!         .set_privileges(Grant { user: Some("ann".into()), privileges: vec!["WebAdmin".into()], info: None })
//!         .await?;
//!     Ok("welcome")
//! }
//!
//! let manager = Arc::new(Manager::new(Arc::new(MemoryStore::new())));
//! manager.set_policy("crm", Policy { cookie_name: "4DSID_crm".into(), ..Default::default() })?;
//! let app: Router = Router::new()
//!     .route("/admin", get(|| async { "admin" }))
//!     .route_layer(require_privilege("WebAdmin"))
//!     .route("/login", post(login))
//!     .layer(SessionLayer::new(manager.clone(), "crm")?);
//! // Closes sessions whose heartbeat or idle timeout passed:
//! // tokio::spawn(manager.clone().run_expiry(std::time::Duration::from_secs(1)));
//! # Ok::<_, sessiond_core::Error>(())
//! ```

mod config;
mod cookie;
mod error;
mod grant;
mod guard;
mod heartbeat;
mod layer;
mod locks;
mod login;
mod patch;
mod privileges;
mod redirect;
mod request;
mod rotated;
mod service;
mod session;
mod stats;

pub use config::DEFAULT_HEARTBEAT_PATH;
pub use error::SessionError;
pub use grant::Grant;
pub use guard::{require_privilege, sign_in_location, RequirePrivilege, RequirePrivilegeLayer};
pub use layer::SessionLayer;
pub use login::{PasswordCheck, Throttled};
pub use redirect::LocalRedirect;
pub use request::{parse_origin, ServedOverTls};
pub use service::SessionService;
pub use session::Session;
pub use stats::LayerStats;

/// A Manager over a memory store with `app` configured, for the doc examples.
#[doc(hidden)]
pub fn doc_manager(app: &str) -> std::sync::Arc<sessiond_core::Manager> {
    let m = sessiond_core::Manager::new(std::sync::Arc::new(sessiond_core::MemoryStore::new()));
    let _ = m.set_policy(app, sessiond_core::Policy::default());
    std::sync::Arc::new(m)
}
