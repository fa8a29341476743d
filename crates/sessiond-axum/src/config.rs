//! [`Config`]: everything one [`crate::SessionLayer`] decided (the app, its Manager, the
//! cookie, lazy or eager creation, proxies, the cross-site check, security headers, what
//! a sign-in keeps, the browser heartbeat) and the per-layer state every request shares
//! (per-session locks, recently rotated tokens, the heartbeat settings throttle, the
//! counters). The layer builds
//! it; the service, the extractor and the heartbeat endpoint read it. It lives apart from
//! `layer.rs` so that those readers depend on the settings alone, not on the layer that
//! builds them (which itself depends on the service).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use sessiond_core::policy::{DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S, DEFAULT_HEARTBEAT_GRACE_S};
use sessiond_core::Manager;

use crate::cookie::{CookieSpec, HostPrefix};
use crate::locks::SessionLocks;
use crate::rotated::Rotated;
use crate::stats::{LayerStats, SettingsThrottle};

/// Default mount point of the heartbeat script and endpoint.
pub const DEFAULT_HEARTBEAT_PATH: &str = "/_sessiond";

/// Browser heartbeat settings.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatSpec {
    pub enabled: bool,
    /// Mount point, without a trailing slash.
    pub path: String,
    pub interval_s: u32,
    pub grace_s: u32,
}

/// Everything a request needs, shared by every request of one layer.
#[derive(Debug)]
pub(crate) struct Config {
    pub manager: Arc<Manager>,
    pub app: Arc<str>,
    pub cookie: CookieSpec,
    pub eager: bool,
    pub trust_forwarded_proto: bool,
    pub trusted_proxies: HashSet<IpAddr>,
    /// Refuse state-changing requests another site made the browser send.
    pub cross_site_check: bool,
    /// Origins (`https://host[:port]`, lower case) whose requests are not cross-site.
    pub trusted_origins: HashSet<String>,
    /// `nosniff`, `Referrer-Policy`, framing and `no-store` on signed-in responses.
    pub security_headers: bool,
    /// A sign-in as another user keeps the session's storage (default: a new session).
    pub carry_storage_across_users: bool,
    pub heartbeat: HeartbeatSpec,
    pub locks: SessionLocks,
    /// Tokens this layer replaced lately (see [`crate::rotated`]).
    pub rotated: Arc<Rotated>,
    /// Changes of heartbeat settings per session (1 per second, bursts of 5).
    pub settings_throttle: Arc<SettingsThrottle>,
    /// What the layer counted.
    pub stats: Arc<LayerStats>,
}

impl Config {
    /// The defaults of a layer for `app`, its cookie named `cookie_name`: `Path=/`, no
    /// `Domain`, no `Max-Age`, `Secure` and `__Host-` on requests known to be HTTPS; lazy
    /// creation; no trusted proxy; cross-site writes refused; security headers on; a
    /// sign-in as another user starts a new session; the browser heartbeat on at
    /// [`DEFAULT_HEARTBEAT_PATH`] with the core's browser defaults.
    pub fn new(manager: Arc<Manager>, app: &str, cookie_name: String) -> Self {
        Config {
            app: Arc::from(app),
            cookie: CookieSpec {
                name: cookie_name,
                path: "/".into(),
                domain: None,
                max_age: None,
                secure: false,
                host_prefix: HostPrefix::Auto,
            },
            eager: false,
            trust_forwarded_proto: false,
            trusted_proxies: HashSet::new(),
            cross_site_check: true,
            trusted_origins: HashSet::new(),
            security_headers: true,
            carry_storage_across_users: false,
            heartbeat: HeartbeatSpec {
                enabled: true,
                path: DEFAULT_HEARTBEAT_PATH.into(),
                interval_s: DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S,
                grace_s: DEFAULT_HEARTBEAT_GRACE_S,
            },
            locks: SessionLocks::default(),
            rotated: Arc::default(),
            settings_throttle: Arc::default(),
            stats: Arc::default(),
            manager,
        }
    }
}

impl Clone for Config {
    fn clone(&self) -> Self {
        Config {
            manager: self.manager.clone(),
            app: self.app.clone(),
            cookie: self.cookie.clone(),
            eager: self.eager,
            trust_forwarded_proto: self.trust_forwarded_proto,
            trusted_proxies: self.trusted_proxies.clone(),
            cross_site_check: self.cross_site_check,
            trusted_origins: self.trusted_origins.clone(),
            security_headers: self.security_headers,
            carry_storage_across_users: self.carry_storage_across_users,
            heartbeat: self.heartbeat.clone(),
            // A reconfigured layer is a new layer: it shares no in-flight locks.
            locks: SessionLocks::default(),
            rotated: self.rotated.clone(),
            settings_throttle: self.settings_throttle.clone(),
            stats: self.stats.clone(),
        }
    }
}
