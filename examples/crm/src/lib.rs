//! Run with: `cargo run -p crm` (then open http://127.0.0.1:8044/authenticate.shtml).
//!
//! The CRM example of 4D scalable sessions, on sessiond-axum: each sales person logs in
//! (Argon2 password hashes, checked by a bounded, throttled `PasswordCheck`), their top 3
//! customers by total purchase are loaded into session storage once, a WebAdmin page is
//! guarded by the `WebAdmin` privilege, "your sessions" lists the user's other sessions
//! and signs them out (one, or all but this one), and logout ends the session. Every response
//! carries a strict Content-Security-Policy; the sign-in follows the "Safe sign-in"
//! steps of docs/CONCEPTS.md. Every page loads the browser heartbeat, so a closed tab ends
//! its session `heartbeat_lost` soon after, while the payment page turns it off.
//!
//! Sessions live in the embedded durable store (`--data-dir`) by default. The router is
//! built by [`app`] and served by [`run`], so tests drive the real thing.

mod data;
mod pages;
mod web;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sessiond_axum::{require_privilege, PasswordCheck, SessionLayer};
use sessiond_core::{Manager, MemoryStore, Policy, Store};
use sessiond_file::FileStore;

pub use data::{hash_password, Customer, Datastore, DEMO_LOGINS};
pub use web::{AppState, TOP3_KEY};

/// The app's name in sessiond (token prefix, namespace).
pub const APP: &str = "crm";
/// The cookie, named the 4D way (`4DSID_<App>`).
pub const COOKIE_NAME: &str = "4DSID_CRM";
/// Every sales person's privilege.
pub const SALES: &str = "sales";
/// The administrators' privilege (the one 4D offers).
pub const WEB_ADMIN: &str = "WebAdmin";

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded durable store in the data directory.
    File,
    /// In memory (lost on exit).
    Memory,
}

/// How the CRM runs; `main` fills it from flags and `CRM_*` environment variables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Session store.
    pub store: StoreKind,
    /// Directory of the file store.
    pub data_dir: PathBuf,
    /// Seconds without activity before a session ends.
    pub idle_timeout_s: u32,
    /// Seconds between browser heartbeats.
    pub heartbeat_interval_s: u32,
    /// Seconds past a missed heartbeat before the session ends.
    pub heartbeat_grace_s: u32,
    /// How often timed-out sessions are closed.
    pub expiry_every: Duration,
    /// Serve `GET /debug/sessions/{id}` (status and close reason by id).
    pub debug_endpoints: bool,
    /// Mark the cookie `Secure` (behind TLS).
    pub secure_cookie: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            store: StoreKind::File,
            data_dir: PathBuf::from("./crm-data"),
            idle_timeout_s: sessiond_core::policy::DEFAULT_IDLE_TIMEOUT_S,
            heartbeat_interval_s: sessiond_core::policy::DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S,
            heartbeat_grace_s: sessiond_core::policy::DEFAULT_HEARTBEAT_GRACE_S,
            expiry_every: Duration::from_secs(1),
            debug_endpoints: false,
            secure_cookie: false,
        }
    }
}

/// Opens the store and a Manager with the CRM's policy.
pub fn manager(settings: &Settings) -> Result<Arc<Manager>, sessiond_core::Error> {
    let store: Arc<dyn Store> = match settings.store {
        StoreKind::File => Arc::new(FileStore::open(&settings.data_dir)?),
        StoreKind::Memory => Arc::new(MemoryStore::new()),
    };
    let m = Manager::new(store);
    m.set_policy(
        APP,
        Policy {
            idle_timeout_s: settings.idle_timeout_s,
            cookie_name: COOKIE_NAME.into(),
            ..Default::default()
        },
    )?;
    Ok(Arc::new(m))
}

/// The CRM's router.
pub fn app(manager: Arc<Manager>, settings: &Settings) -> Result<Router, sessiond_core::Error> {
    let state = AppState {
        manager: manager.clone(),
        data: Arc::new(Datastore::demo()),
        idle_timeout_s: settings.idle_timeout_s,
        passwords: PasswordCheck::new(),
    };
    let layer = SessionLayer::new(manager, APP)?
        .with_secure(settings.secure_cookie)
        .with_heartbeat_interval(Duration::from_secs(settings.heartbeat_interval_s.into()))
        .with_heartbeat_grace(Duration::from_secs(settings.heartbeat_grace_s.into()));
    let login = "/authenticate.shtml";
    let sales = Router::new()
        .route("/home", get(web::home))
        .route("/payment", get(web::payment))
        .route("/sessions", get(web::sessions))
        .route("/sessions/{id}/close", post(web::close_session))
        .route("/sessions/close-others", post(web::close_other_sessions))
        .route_layer(require_privilege(SALES).with_login_redirect(login));
    let admin = Router::new()
        .route("/admin", get(web::admin))
        .route_layer(require_privilege(WEB_ADMIN).with_login_redirect(login));
    let mut router = Router::new()
        .route("/", get(web::index))
        .route("/authenticate.shtml", get(web::login_form))
        .route(
            "/authenticate",
            get(web::login_form).post(web::authenticate),
        )
        .route("/logout", post(web::logout))
        .route(
            "/static/crm.css",
            get(static_file("text/css", pages::STYLE)),
        )
        .route(
            "/static/crm.js",
            get(static_file("text/javascript", pages::SCRIPT)),
        )
        .merge(sales)
        .merge(admin);
    if settings.debug_endpoints {
        router = router.route("/debug/sessions/{id}", get(web::debug_session));
    }
    Ok(router
        .layer(layer)
        .layer(axum::middleware::map_response(with_csp))
        .with_state(state))
}

/// A handler answering one embedded file.
fn static_file(
    content_type: &'static str,
    body: &'static str,
) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || {
        std::future::ready(
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "public, max-age=300"),
                ],
                body,
            )
                .into_response(),
        )
    }
}

/// Puts the CRM's Content-Security-Policy on every response.
async fn with_csp(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(pages::CSP),
    );
    res
}

/// Serves the CRM on `listener` until `shutdown` completes, closing timed-out sessions
/// every `settings.expiry_every`.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let manager = manager(&settings)?;
    let router = app(manager.clone(), &settings)?;
    let expiry = tokio::spawn(manager.clone().run_expiry(settings.expiry_every));
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    expiry.abort();
    served?;
    manager.store().flush().await?;
    Ok(())
}
