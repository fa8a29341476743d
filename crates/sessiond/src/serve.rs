//! Starting and stopping the server: open the store, build the Manager and the router,
//! accept connections over HTTP and HTTPS ([`Listeners`]; at most `max_connections` at
//! once, each with a time limit on its TLS handshake and request head and a bound on
//! its request head) until the shutdown signal, then drain in-flight requests, end
//! event streams and flush the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sessiond_core::{Manager, MemoryStore, Store, StoreError};
use sessiond_file::FileStore;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::auth::{OverTls, PeerAddr};
use crate::config::{check_secret, Config, Secret, StoreUrl};
use crate::licensing::Licensing;
use crate::metrics::{MeteredStore, Metrics, UnreadableRecords};
use crate::state::State;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The store cannot be opened or flushed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the store the configuration names.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    Ok(open_store_counted(config).await?.0)
}

/// A store as [`open_store_counted`] opens it.
pub type OpenedStore = (Arc<dyn Store>, UnreadableRecords, Option<Arc<FileStore>>);

/// Opens the store the configuration names, with a handle to its counts of records it
/// could not read (for the metrics) and, for the embedded store, the store itself (for
/// online backups). A file store that quarantined records at start says so once in the
/// log, with how many and where.
pub async fn open_store_counted(config: &Config) -> Result<OpenedStore, ServeError> {
    Ok(match &config.store {
        StoreUrl::Memory => (
            Arc::new(MemoryStore::new()),
            UnreadableRecords::default(),
            None,
        ),
        StoreUrl::File(_) => {
            let store = Arc::new(FileStore::open(config.store_dir())?);
            let quarantined = store.quarantined().len();
            if quarantined > 0 {
                tracing::warn!(
                    records = quarantined,
                    quarantine = %store.dir().join("quarantine").display(),
                    "the file store set aside records it could not read; see docs/STORES.md"
                );
            }
            (
                store.clone(),
                UnreadableRecords::quarantined(quarantined as u64),
                Some(store),
            )
        }
        StoreUrl::Postgres {
            url,
            namespace,
            read_cache_ms,
        } => {
            let mut options = sessiond_postgres::PostgresOptions::default();
            if let Some(ns) = namespace {
                options.schema = ns.clone();
            }
            options.read_cache = read_cache_ms.map(std::time::Duration::from_millis);
            let store = sessiond_postgres::PostgresStore::connect(url, options).await?;
            let counted = store.clone();
            let mut counts = UnreadableRecords::met_by(move || counted.unreadable_records());
            if read_cache_ms.is_some() {
                let hits = store.clone();
                counts = counts.with_read_cache_hits(move || hits.read_cache_hits());
            }
            (Arc::new(store), counts, None)
        }
        StoreUrl::Redis {
            url,
            namespace,
            read_cache_ms,
        } => {
            let mut options = sessiond_redis::RedisOptions::default();
            if let Some(ns) = namespace {
                options.prefix = ns.clone();
            }
            options.read_cache = read_cache_ms.map(std::time::Duration::from_millis);
            let store = sessiond_redis::RedisStore::connect(url, options).await?;
            let counted = store.clone();
            let mut counts = UnreadableRecords::met_by(move || counted.unreadable_records());
            if read_cache_ms.is_some() {
                let hits = store.clone();
                counts = counts.with_read_cache_hits(move || hits.read_cache_hits());
            }
            (Arc::new(store), counts, None)
        }
    })
}

/// The admin token: from the configuration, else from `<data_dir>/admin-token`, else
/// newly generated into that file (mode 0600) and printed once on standard error.
/// Every source is held to the one rule of [`crate::config::check_secret`].
pub fn admin_token(config: &Config) -> Result<Secret, ServeError> {
    if let Some(t) = &config.admin_token {
        check_secret("the admin token", t.expose()).map_err(|e| ServeError::Config(e.0))?;
        return Ok(t.clone());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        check_secret(&path.display().to_string(), t).map_err(|e| ServeError::Config(e.0))?;
        return Ok(Secret::new(t));
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let token = sessiond_core::Token::generate("admin");
    crate::private_file::write_private(&path, format!("{}\n", token.expose()).as_bytes())?;
    // Printed once, to the operator's terminal, never to the log.
    eprintln!(
        "sessiond: generated the admin token into {} (mode 0600):\n\n    {}\n",
        path.display(),
        token.expose()
    );
    Ok(Secret::new(token.expose()))
}

/// Answers a connection over `max_connections` with a 503 it can read, and closes it.
/// The write never waits: a fresh socket's send buffer takes these few bytes, and a
/// client that cannot is simply closed.
fn refuse_connection(stream: &tokio::net::TcpStream) {
    const BODY: &str = r#"{"error":"too_many_connections","message":"the server has as many connections as it allows; retry shortly"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    // Debug, not warn: a flood of refused connections must not fill the disk with logs.
    tracing::debug!("connection refused: max_connections reached");
}

/// Builds the Manager over `store` with the configured limits and apps.
pub fn manager(config: &Config, store: Arc<dyn Store>) -> Result<Arc<Manager>, ServeError> {
    let m = Manager::new(store).with_limits(config.limits.clone());
    for (name, app) in &config.apps {
        m.set_policy(name, app.policy.clone())
            .map_err(|e| ServeError::Config(format!("apps.{name}: {e}")))?;
    }
    Ok(Arc::new(m))
}

/// Where the server accepts connections: plain HTTP, HTTPS, or both.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Plain HTTP.
    pub http: Option<TcpListener>,
    /// HTTPS, with the certificate of [`Config::tls`].
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the configuration asks for: [`Config::listen`] unless
    /// [`Config::tls_only`], and [`Config::tls_listen`] when [`Config::tls`] is set.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        let bind = |addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|e| {
                ServeError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ))
            })
        };
        Ok(Listeners {
            http: match config.tls_only {
                true => None,
                false => Some(bind(config.listen).await?),
            },
            https: match &config.tls {
                Some(_) => Some(bind(config.tls_listen).await?),
                None => None,
            },
        })
    }
}

/// Reads the configuration again at each SIGHUP and applies what can change live
/// ([`crate::reload`]); says in the log what came of it.
async fn reload_on_hangup(state: crate::state::SharedState) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            log_reload(&state.reloader.reload(&state.licenses).await);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = state;
    }
}

/// Says in the log what a reload did, or why it did nothing.
pub(crate) fn log_reload(r: &Result<crate::reload::Reloaded, crate::reload::ReloadError>) {
    match r {
        Ok(r) => {
            tracing::info!(
                apps_added = %r.apps_added.join(","),
                apps_changed = %r.apps_changed.join(","),
                admin = r.credentials.admin,
                operators = r.credentials.operators,
                app_keys = r.credentials.app_keys,
                client_keys = r.credentials.client_keys,
                "configuration reloaded: apps, policies and credentials in force"
            );
            if !r.restart_needed.is_empty() {
                tracing::warn!(
                    settings = %r.restart_needed.join("; "),
                    "these settings changed in the configuration but take a restart"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "configuration not reloaded; everything stays as it was")
        }
    }
}

/// Accepts from `listener`, or waits forever when there is none.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves the API on `listener` (plain HTTP) until `shutdown` completes, then drains and
/// flushes. For HTTPS, see [`run_on`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listeners = Listeners {
        http: Some(listener),
        https: None,
    };
    run_on(listeners, config, shutdown).await
}

/// Serves the API on `listeners` until `shutdown` completes, then drains and flushes.
/// An HTTPS listener needs [`Config::tls`], and [`Config::tls`] needs an HTTPS listener.
pub async fn run_on(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    config.check_tls().map_err(|e| ServeError::Config(e.0))?;
    // A vendor binary serves only under the pin it was built with, whoever made the
    // `Config` it was handed.
    if cfg!(feature = "vendor") && config.licensing != Licensing::of_this_build() {
        return Err(ServeError::Config(
            "this vendor build checks licenses only with the key and apps it was built with".into(),
        ));
    }
    let license_terms = config
        .license_terms()
        .map_err(|e| ServeError::Config(e.0))?;
    let tls = match (&config.tls, &listeners.https) {
        (Some(files), Some(_)) => Some(
            crate::tls::Certificates::load(files.clone())
                .map_err(|e| ServeError::Config(format!("TLS: {e}")))?,
        ),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ServeError::Config(
                "TLS is configured but no HTTPS listener was given".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ServeError::Config(
                "an HTTPS listener needs tls_cert and tls_key".into(),
            ))
        }
    };
    if listeners.http.is_none() && listeners.https.is_none() {
        return Err(ServeError::Config("nothing to listen on".into()));
    }
    let metrics = Arc::new(Metrics::default());
    let (store, unreadable, file_store) = open_store_counted(&config).await?;
    metrics.watch_unreadable(unreadable);
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
    let manager = manager(&config, store)?;
    // Clients could not beat while the server was down: a restart is not a lost
    // heartbeat. Requests count a missed beat from now until the sweeper has renewed
    // those heartbeats, which it does before its first sweep.
    manager.mark_downtime();
    let admin = admin_token(&config)?;
    let credentials = Arc::new(crate::credentials::CredentialTable::new(
        crate::credentials::Credentials::build(&config, &admin)
            .map_err(|e| ServeError::Config(e.0))?,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(pin) = config.licensing.pin() {
        tracing::info!(
            key = %pin.key_hex(),
            apps = %pin.apps().collect::<Vec<_>>().join(","),
            "vendor build: licenses are checked with the pinned key only; the pinned apps open sessions only under a valid license"
        );
    }
    let licenses = crate::license::Licenses::new(license_terms, &config, &manager);
    let fronts = Arc::new(crate::web::Fronts::new(manager.clone(), &config));
    let webhooks =
        crate::webhooks::Webhooks::new(manager.clone(), &config).map_err(ServeError::Config)?;
    let state = Arc::new(State {
        manager: manager.clone(),
        credentials: credentials.clone(),
        client_opens: crate::credentials::OpenRate::new(config.client_opens_per_minute),
        trusted_proxies: config.trusted_proxies.clone(),
        metrics: metrics.clone(),
        sse_keepalive: Duration::from_secs(config.sse_keepalive_s.max(1)),
        request_timeout: Duration::from_secs(config.request_timeout_s.max(1)),
        shutdown: stop_rx,
        licenses,
        event_log: Arc::new(crate::event_log::EventLog::default()),
        reloader: Arc::new(crate::reload::Reloader::new(
            manager.clone(),
            credentials.clone(),
            fronts.clone(),
            webhooks.clone(),
            config.clone(),
        )),
        fronts,
        webhooks: webhooks.clone(),
        backups: file_store.map(|store| crate::api::backup::Backups {
            store,
            dir: config.data_dir.join("backups"),
        }),
        console: crate::console::ConsoleSessions::new(&config, credentials.clone(), &manager)
            .map_err(|e| ServeError::Config(format!("the admin console: {e}")))?,
        streams: Arc::new(crate::api::events::Streams::new(
            crate::api::events::StreamLimits {
                total: config.max_streams,
                per_app: config.max_streams_per_app,
                per_session: config.max_streams_per_session,
            },
        )),
    });
    // Subscribed here, before anything is served, so the log misses no event.
    let logger = tokio::spawn(state.event_log.clone().follow(manager.subscribe()));
    let api = crate::api::router(state.clone(), config.max_body_bytes);
    let console = crate::api::protect(
        crate::console::router(state.clone(), api.clone()),
        state.clone(),
        config.max_body_bytes,
    );
    let router = api.merge(console);
    let watcher = state.licenses.any().then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                state.licenses.refresh(&state.manager, false);
            }
        })
    });
    let expiry = tokio::spawn(
        manager
            .clone()
            .run_expiry(Duration::from_millis(config.expiry_interval_ms.max(10))),
    );
    let follower = tokio::spawn(metrics.follow(manager.clone()));
    let relay = manager.start_relay();
    let sender = tokio::spawn(webhooks.clone().run(state.shutdown.clone()));

    let acceptor = match &tls {
        Some(c) => Some(tokio_rustls::TlsAcceptor::from(
            c.server_config()
                .map_err(|e| ServeError::Config(format!("TLS: {e}")))?,
        )),
        None => None,
    };
    let renewal = tls.clone().map(|c| tokio::spawn(c.watch()));
    let rotation = tokio::spawn(reload_on_hangup(state.clone()));
    let address = |l: &Option<TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "-".to_string(), |a| a.to_string())
    };
    tracing::info!(
        listen = %address(&listeners.http),
        listen_tls = %address(&listeners.https),
        store = manager.store().kind(),
        apps = config.apps.len(),
        "sessiond serving"
    );
    let graceful = GracefulShutdown::new();
    let header_timeout = Duration::from_secs(config.header_timeout_s.max(1));
    let max_header_bytes = config.max_header_bytes.max(crate::config::MIN_HEADER_BYTES);
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (accepted, secure) = tokio::select! {
            a = accept(listeners.http.as_ref()) => (a, false),
            a = accept(listeners.https.as_ref()) => (a, true),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Over TLS the client could not read a plain answer: just close.
            if !secure {
                refuse_connection(&stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                if secure {
                    req.extensions_mut().insert(OverTls);
                }
                req
            },
        );
        let http = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_header_bytes)
            .clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone().filter(|_| secure);
        tokio::spawn(async move {
            let ended = match acceptor {
                None => {
                    let conn =
                        http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    // The handshake gets the time a request head gets: a client that
                    // opens a connection and sends nothing holds its place no longer.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = http
                                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    drop(listeners);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 10 s");
    }
    // The webhook sender ends its round (its tries are time-limited); what it could
    // not settle is sent again later, by this node after a restart or by another.
    let unsent = sender.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .is_err()
    {
        unsent.abort();
    }
    expiry.abort();
    follower.abort();
    logger.abort();
    rotation.abort();
    for task in [relay, watcher, renewal].into_iter().flatten() {
        task.abort();
    }
    manager.store().flush().await?;
    tracing::info!("store flushed; bye");
    Ok(())
}
