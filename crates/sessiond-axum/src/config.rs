//! [`Config`]: everything one [`crate::SessionLayer`] decided (the app, its Manager, the
//! cookie, lazy or eager creation, proxies, the browser heartbeat) and the per-layer state
//! every request shares (per-session locks, recently rotated tokens). The layer builds
//! it; the service, the extractor and the heartbeat endpoint read it. It lives apart from
//! `layer.rs` so that those readers depend on the settings alone, not on the layer that
//! builds them (which itself depends on the service).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use sessiond_core::policy::{DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S, DEFAULT_HEARTBEAT_GRACE_S};
use sessiond_core::Manager;

use crate::cookie::CookieSpec;
use crate::locks::SessionLocks;
use crate::rotated::Rotated;

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
    pub heartbeat: HeartbeatSpec,
    pub locks: SessionLocks,
    /// Tokens this layer replaced lately (see [`crate::rotated`]).
    pub rotated: Arc<Rotated>,
}

impl Config {
    /// The defaults of a layer for `app`, its cookie named `cookie_name`: `Path=/`, no
    /// `Domain`, no `Max-Age`, not `Secure`; lazy creation; no trusted proxy; the browser
    /// heartbeat on at [`DEFAULT_HEARTBEAT_PATH`] with the core's browser defaults.
    pub fn new(manager: Arc<Manager>, app: &str, cookie_name: String) -> Self {
        Config {
            app: Arc::from(app),
            cookie: CookieSpec {
                name: cookie_name,
                path: "/".into(),
                domain: None,
                max_age: None,
                secure: false,
                host_prefix: false,
            },
            eager: false,
            trust_forwarded_proto: false,
            trusted_proxies: HashSet::new(),
            heartbeat: HeartbeatSpec {
                enabled: true,
                path: DEFAULT_HEARTBEAT_PATH.into(),
                interval_s: DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S,
                grace_s: DEFAULT_HEARTBEAT_GRACE_S,
            },
            locks: SessionLocks::default(),
            rotated: Arc::default(),
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
            heartbeat: self.heartbeat.clone(),
            // A reconfigured layer is a new layer: it shares no in-flight locks.
            locks: SessionLocks::default(),
            rotated: self.rotated.clone(),
        }
    }
}
