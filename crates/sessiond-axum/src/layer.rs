//! [`SessionLayer`]: the builder of web sessions for one app (cookie attributes, lazy or
//! eager creation, proxies, the cross-site check, security headers, what a sign-in keeps,
//! browser heartbeat) and the tower [`Layer`] that installs them on a router. Every option is a `with_*` builder method; what they set is the shared
//! `Config` of `config.rs`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sessiond_core::Manager;
use tower::Layer;

use crate::config::Config;
use crate::cookie::{self, HostPrefix};
use crate::request;
use crate::service::SessionService;
use crate::stats::LayerStats;

/// Web sessions for one app of a [`Manager`]: put it on an axum `Router` with
/// `.layer(...)`, then take a [`crate::Session`] in handlers.
///
/// Defaults: the cookie is named after the app's `Policy::cookie_name` (`SESSION`
/// unless configured), `Path=/`, `HttpOnly`, `SameSite=Lax`, a browser-session cookie
/// (no `Max-Age`), `Secure` only when asked for; sessions are created lazily (the first
/// time something is stored); the heartbeat script is served at
/// `/_sessiond/heartbeat.js` with a 5 minute interval and 60 s grace.
///
/// ```
/// use std::sync::Arc;
/// use axum::{routing::get, Router};
/// use sessiond_axum::{Session, SessionError, SessionLayer};
/// use sessiond_core::{Manager, MemoryStore, Policy};
///
/// async fn visits(session: Session) -> Result<String, SessionError> {
///     let n: u64 = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
///     Ok(format!("visit number {n}"))
/// }
///
/// let manager = Arc::new(Manager::new(Arc::new(MemoryStore::new())));
/// manager.set_policy("shop", Policy::default())?;
/// let app: Router = Router::new()
///     .route("/", get(visits))
///     .layer(SessionLayer::new(manager, "shop")?);
/// # Ok::<_, sessiond_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SessionLayer {
    config: Arc<Config>,
}

impl SessionLayer {
    /// Sessions of `app` (which must have a policy in `manager`); the cookie name comes
    /// from the app's policy.
    pub fn new(manager: Arc<Manager>, app: &str) -> Result<Self, sessiond_core::Error> {
        let policy = manager.policy(app)?;
        let config = Config::new(manager, app, policy.cookie_name.clone());
        Ok(SessionLayer {
            config: Arc::new(config),
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Names the cookie (for example `4DSID_MyApp`), instead of the policy's name.
    ///
    /// # Panics
    /// If `name` is not a valid cookie name (letters, digits and ``!#$%&'*+-.^_`|~``);
    /// this is a configuration mistake caught at startup.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_cookie_name("4DSID_Shop");
    /// assert_eq!(layer.cookie_name(), "4DSID_Shop");
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        assert!(cookie::valid_name(&name), "invalid cookie name {name:?}");
        self.edit(|c| c.cookie.name = name)
    }

    /// Sets the cookie's `Path` (default `/`). Ignored with [`Self::with_host_prefix`],
    /// which requires `Path=/`.
    ///
    /// # Panics
    /// If `path` holds spaces, `;` or control characters.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_cookie_path("/shop");
    /// assert_eq!(layer.cookie_path(), "/shop");
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_cookie_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        assert!(
            cookie::valid_attribute(&path),
            "invalid cookie path {path:?}"
        );
        self.edit(|c| c.cookie.path = path)
    }

    /// Sets the cookie's `Domain` (default none: only the host that set it). Ignored
    /// with [`Self::with_host_prefix`], which forbids a domain.
    ///
    /// # Panics
    /// If `domain` holds spaces, `;` or control characters.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_cookie_domain("example.com");
    /// assert_eq!(layer.cookie_domain(), Some("example.com"));
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_cookie_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        assert!(
            cookie::valid_attribute(&domain),
            "invalid cookie domain {domain:?}"
        );
        self.edit(|c| c.cookie.domain = Some(domain))
    }

    /// Makes the cookie outlive the browser session for `age` (`Max-Age`). The session
    /// still ends on the server by its own timeouts. The cookie is rolling: every
    /// response to a request that used the stored session sends it again with a fresh
    /// `Max-Age`, so an active user keeps it while the server's idle timeout slides.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// use std::time::Duration;
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?
    ///     .with_cookie_max_age(Duration::from_secs(24 * 3600));
    /// assert_eq!(layer.cookie_max_age(), Some(Duration::from_secs(86400)));
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_cookie_max_age(self, age: Duration) -> Self {
        self.edit(|c| c.cookie.max_age = Some(age))
    }

    /// Always marks the cookie `Secure` (the app is served over TLS).
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_secure(true);
    /// assert!(layer.is_secure());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_secure(self, secure: bool) -> Self {
        self.edit(|c| c.cookie.secure = secure)
    }

    /// Marks the cookie `Secure` when a trusted proxy ([`Self::with_trusted_proxies`])
    /// says the client used HTTPS by `X-Forwarded-Proto`, read from the right like
    /// `X-Forwarded-For` ([`sessiond_core::forwarded_https`]): the header from any other
    /// peer, or a value the client wrote to the left of the proxies', is never believed.
    /// The proxies must set or append the header themselves (nginx:
    /// `proxy_set_header X-Forwarded-Proto $scheme;`); one that passes the client's
    /// header on untouched would make the client's claim the one read.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?
    ///     .with_trusted_proxies([proxy])
    ///     .with_trust_forwarded_proto(true);
    /// assert!(layer.trusts_forwarded_proto());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_trust_forwarded_proto(self, trust: bool) -> Self {
        self.edit(|c| c.trust_forwarded_proto = trust)
    }

    /// Whether the cookie's name takes the `__Host-` prefix: `true` always (which makes
    /// it `Secure` with `Path=/` and no `Domain`, whatever else is set), `false` never.
    /// By default it takes it whenever it can: on a request known to be HTTPS, when the
    /// path is `/` and there is no domain. A prefixed cookie cannot be set or overwritten
    /// by a sibling subdomain or a plain-HTTP page.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_host_prefix(true);
    /// assert_eq!(layer.cookie_name(), "__Host-SESSION");
    /// assert!(layer.is_secure());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_host_prefix(self, on: bool) -> Self {
        let p = if on {
            HostPrefix::Always
        } else {
            HostPrefix::Never
        };
        self.edit(|c| c.cookie.host_prefix = p)
    }

    /// Refuses (403 `cross_site_request`, nothing runs) a `POST`, `PUT`, `PATCH` or
    /// `DELETE` that another site's page made the browser send: login CSRF, a logout
    /// from a sibling subdomain or port. On by default; the check reads `Sec-Fetch-Site`
    /// (set by browsers, not by pages), else `Origin`; a client that sends neither is not
    /// a current browser and passes. Turn it off only for routes that other sites must
    /// reach, or name those sites with [`Self::with_trusted_origins`].
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?;
    /// assert!(layer.checks_cross_site());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_cross_site_check(self, on: bool) -> Self {
        self.edit(|c| c.cross_site_check = on)
    }

    /// Origins (`https://host` or `https://host:port`) whose pages may send
    /// state-changing requests (a payment provider posting back, the app's other
    /// front end).
    ///
    /// # Panics
    /// If an origin is not `http(s)://host[:port]`: a configuration mistake caught at
    /// startup.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?
    ///     .with_trusted_origins(["https://pay.example"]);
    /// assert!(layer.trusts_origin("https://pay.example"));
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_trusted_origins<I, S>(self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let set = origins
            .into_iter()
            .map(|o| {
                let o = o.as_ref();
                request::parse_origin(o).unwrap_or_else(|| panic!("invalid origin {o:?}"))
            })
            .collect();
        self.edit(|c| c.trusted_origins = set)
    }

    /// Adds, to every response of a signed-in session (one that came with the cookie or
    /// leaves with one), the headers a handler did not set itself: `Cache-Control:
    /// no-store`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`,
    /// `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors 'none'`
    /// (only when there is no CSP). On by default.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_security_headers(false);
    /// assert!(!layer.sends_security_headers());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_security_headers(self, on: bool) -> Self {
        self.edit(|c| c.security_headers = on)
    }

    /// Keeps the session, and its storage, when [`crate::Session::set_privileges`]
    /// signs in another user than the session's (a guest's cart carried into the
    /// account). Off by default: a sign-in as someone else closes the session as
    /// `user_changed` and starts a new, empty one, so no user sees what the previous
    /// one (or an attacker who planted the session) stored.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_storage_across_users(true);
    /// assert!(layer.keeps_storage_across_users());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_storage_across_users(self, keep: bool) -> Self {
        self.edit(|c| c.carry_storage_across_users = keep)
    }

    /// Creates the session (and sets its cookie) on the first request, as 4D does,
    /// instead of the first time something is stored.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_eager(true);
    /// assert!(layer.is_eager());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_eager(self, eager: bool) -> Self {
        self.edit(|c| c.eager = eager)
    }

    /// Proxies whose `X-Forwarded-For` is believed: when the TCP peer (axum's
    /// `ConnectInfo<SocketAddr>`) is one of them, the client address is the header's
    /// nearest hop, from the right, that is not one of them (see
    /// [`sessiond_core::client_address`]: the left end is the client's own claim). The
    /// address is what `bind_ip` checks and what a session records.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_trusted_proxies([proxy]);
    /// assert!(layer.trusts_proxy(proxy));
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_trusted_proxies(self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        let set: HashSet<IpAddr> = proxies.into_iter().collect();
        self.edit(|c| c.trusted_proxies = set)
    }

    /// Serves the browser heartbeat script and endpoint (default on).
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_heartbeat(false);
    /// assert!(!layer.heartbeat_enabled());
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_heartbeat(self, on: bool) -> Self {
        self.edit(|c| c.heartbeat.enabled = on)
    }

    /// Mounts the heartbeat under `path` (default `/_sessiond`): the script at
    /// `<path>/heartbeat.js`, the endpoint at `<path>/heartbeat`.
    ///
    /// # Panics
    /// If `path` does not start with `/` or holds spaces or control characters.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?.with_heartbeat_path("/shop/_hb/");
    /// assert_eq!(layer.heartbeat_script_path(), "/shop/_hb/heartbeat.js");
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_heartbeat_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        assert!(
            path.starts_with('/') && cookie::valid_attribute(&path),
            "invalid heartbeat path {path:?}"
        );
        let path = path.trim_end_matches('/').to_string();
        self.edit(|c| c.heartbeat.path = path)
    }

    /// The interval pages beat at unless they ask for another (default 5 minutes,
    /// WEBDEV's). Rounded down to whole seconds, at least one.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// use std::time::Duration;
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?
    ///     .with_heartbeat_interval(Duration::from_secs(60));
    /// assert_eq!(layer.heartbeat_interval(), Duration::from_secs(60));
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_heartbeat_interval(self, interval: Duration) -> Self {
        let s = u32::try_from(interval.as_secs()).unwrap_or(u32::MAX).max(1);
        self.edit(|c| c.heartbeat.interval_s = s)
    }

    /// How long past a missed beat a page still counts as open (default 60 s, WEBDEV's
    /// extra minute): a closed page ends its session `heartbeat_lost` after
    /// interval + grace.
    ///
    /// ```
    /// # let manager = sessiond_axum::doc_manager("shop");
    /// use std::time::Duration;
    /// let layer = sessiond_axum::SessionLayer::new(manager, "shop")?
    ///     .with_heartbeat_grace(Duration::from_secs(10));
    /// assert_eq!(layer.heartbeat_grace(), Duration::from_secs(10));
    /// # Ok::<_, sessiond_core::Error>(())
    /// ```
    pub fn with_heartbeat_grace(self, grace: Duration) -> Self {
        let s = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX);
        self.edit(|c| c.heartbeat.grace_s = s)
    }

    /// The cookie's name as it travels on a request not known to be HTTPS (with
    /// `__Host-` when it is always `Secure` and can carry the prefix).
    pub fn cookie_name(&self) -> String {
        self.config.cookie.wire_name(false)
    }

    /// The cookie's name on a request known to be HTTPS.
    pub fn cookie_name_over_https(&self) -> String {
        self.config.cookie.wire_name(true)
    }

    /// The cookie's `Path`.
    pub fn cookie_path(&self) -> &str {
        if self.config.cookie.host_prefix == HostPrefix::Always {
            "/"
        } else {
            &self.config.cookie.path
        }
    }

    /// The cookie's `Domain`, if any.
    pub fn cookie_domain(&self) -> Option<&str> {
        match self.config.cookie.host_prefix {
            HostPrefix::Always => None,
            _ => self.config.cookie.domain.as_deref(),
        }
    }

    /// The cookie's `Max-Age`, if any.
    pub fn cookie_max_age(&self) -> Option<Duration> {
        self.config.cookie.max_age
    }

    /// Whether every cookie is `Secure`.
    pub fn is_secure(&self) -> bool {
        self.config.cookie.secure || self.config.cookie.host_prefix == HostPrefix::Always
    }

    /// Whether `X-Forwarded-Proto: https` makes the cookie `Secure`.
    pub fn trusts_forwarded_proto(&self) -> bool {
        self.config.trust_forwarded_proto
    }

    /// Whether `X-Forwarded-For` from `peer` is believed.
    pub fn trusts_proxy(&self, peer: IpAddr) -> bool {
        self.config.trusted_proxies.contains(&peer)
    }

    /// Whether cross-site state-changing requests are refused.
    pub fn checks_cross_site(&self) -> bool {
        self.config.cross_site_check
    }

    /// Whether `origin` may send state-changing requests.
    pub fn trusts_origin(&self, origin: &str) -> bool {
        request::parse_origin(origin).is_some_and(|o| self.config.trusted_origins.contains(&o))
    }

    /// Whether signed-in responses get the security headers.
    pub fn sends_security_headers(&self) -> bool {
        self.config.security_headers
    }

    /// Whether a sign-in as another user keeps the session and its storage.
    pub fn keeps_storage_across_users(&self) -> bool {
        self.config.carry_storage_across_users
    }

    /// What this layer counted (duplicate cookies, cross-site refusals, throttled
    /// heartbeat settings), for the app's metrics. Layers cloned from this one share it.
    pub fn stats(&self) -> Arc<LayerStats> {
        self.config.stats.clone()
    }

    /// Whether sessions are created on the first request.
    pub fn is_eager(&self) -> bool {
        self.config.eager
    }

    /// Whether the heartbeat script and endpoint are served.
    pub fn heartbeat_enabled(&self) -> bool {
        self.config.heartbeat.enabled
    }

    /// Where the heartbeat script is served.
    pub fn heartbeat_script_path(&self) -> String {
        format!("{}/heartbeat.js", self.config.heartbeat.path)
    }

    /// The default heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.config.heartbeat.interval_s.into())
    }

    /// The heartbeat grace.
    pub fn heartbeat_grace(&self) -> Duration {
        Duration::from_secs(self.config.heartbeat.grace_s.into())
    }

    /// The app whose sessions this layer serves.
    pub fn app(&self) -> &str {
        &self.config.app
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        if self.config.trust_forwarded_proto && self.config.trusted_proxies.is_empty() {
            tracing::warn!(
                app = %self.config.app,
                "X-Forwarded-Proto is believed only from trusted proxies, and none is set \
                 (with_trusted_proxies): no request will count as HTTPS by it"
            );
        }
        SessionService::new(inner, self.config.clone())
    }
}
