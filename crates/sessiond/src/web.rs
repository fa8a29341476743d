//! The server's web front for apps behind a reverse proxy (apps not written in Rust):
//! per app, the `[apps.<name>.web]` settings ([`WebConfig`]: the names of the headers
//! forward-auth answers with, the origins whose pages may call the browser heartbeat,
//! the heartbeat's interval and grace) and, built from them, the [`Front`] each request
//! reads: the headers, and the browser heartbeat served by sessiond-axum's own layer
//! (the same script, endpoint, cross-site rule, cookie reading and settings throttle as
//! a Rust app gets), mounted at `/v1/apps/<name>`.
//!
//! [`Fronts`] holds one [`Front`] per served app and is rebuilt as a whole on a reload
//! (which gives each session its burst of heartbeat settings changes back).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderName;
use axum::Router;
use serde::Deserialize;
use sessiond_core::policy::{DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S, DEFAULT_HEARTBEAT_GRACE_S};
use sessiond_core::Manager;

use crate::config::Config;

/// Headers that may not carry forward-auth's answer: they frame or route the message,
/// carry credentials, or mean something to the proxy or the browser.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "expires",
    "forwarded",
    "host",
    "keep-alive",
    "location",
    "origin",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "referer",
    "set-cookie",
    "te",
    "trailer",
    "true-client-ip",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "www-authenticate",
    "x-http-method-override",
    "x-original-url",
    "x-real-ip",
    "x-rewrite-url",
];

/// The names of the headers a forward-auth answer names the session with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHeaders {
    /// The session's public id (default `X-Sessiond-Session`).
    pub session: HeaderName,
    /// The session's user, empty for a guest (default `X-Sessiond-User`).
    pub user: HeaderName,
    /// The session's privileges, comma-separated (default `X-Sessiond-Privileges`).
    pub privileges: HeaderName,
    /// `true` for a guest, else `false` (default `X-Sessiond-Guest`).
    pub guest: HeaderName,
}

impl Default for ForwardHeaders {
    fn default() -> Self {
        ForwardHeaders {
            session: HeaderName::from_static("x-sessiond-session"),
            user: HeaderName::from_static("x-sessiond-user"),
            privileges: HeaderName::from_static("x-sessiond-privileges"),
            guest: HeaderName::from_static("x-sessiond-guest"),
        }
    }
}

/// One app's `[apps.<name>.web]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Forward-auth's header names.
    pub headers: ForwardHeaders,
    /// Origins (`scheme://host[:port]`, lower case) whose pages may call the heartbeat
    /// with the browser's cookies (CORS) and change its settings.
    pub allowed_origins: BTreeSet<String>,
    /// Seconds between a page's beats unless it asks for another interval.
    pub heartbeat_interval_s: u32,
    /// Seconds past a missed beat before a closed page's session ends.
    pub heartbeat_grace_s: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            headers: ForwardHeaders::default(),
            allowed_origins: BTreeSet::new(),
            heartbeat_interval_s: DEFAULT_BROWSER_HEARTBEAT_INTERVAL_S,
            heartbeat_grace_s: DEFAULT_HEARTBEAT_GRACE_S,
        }
    }
}

/// The table as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    session_header: Option<String>,
    user_header: Option<String>,
    privileges_header: Option<String>,
    guest_header: Option<String>,
    allowed_origins: Option<Vec<String>>,
    heartbeat_interval_s: Option<u32>,
    heartbeat_grace_s: Option<u32>,
}

impl WebConfig {
    /// Reads `[apps.<app>.web]`; the error names the key at fault (never its value
    /// beyond what the key's rule needs to say).
    pub fn from_toml(app: &str, value: toml::Value) -> Result<WebConfig, String> {
        let at = |key: &str| format!("apps.{app}.web.{key}");
        let raw: RawWeb = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let m = crate::config::without_values(e.into_inner().message());
            match path.as_str() {
                "." => format!("apps.{app}.web: {m}"),
                p => format!("{}: {m}", at(p)),
            }
        })?;
        let mut web = WebConfig::default();
        let mut seen = HashSet::new();
        for (key, given, slot) in [
            (
                "session_header",
                raw.session_header,
                &mut web.headers.session,
            ),
            ("user_header", raw.user_header, &mut web.headers.user),
            (
                "privileges_header",
                raw.privileges_header,
                &mut web.headers.privileges,
            ),
            ("guest_header", raw.guest_header, &mut web.headers.guest),
        ] {
            if let Some(name) = given {
                *slot = header_name(&name).map_err(|why| format!("{}: {why}", at(key)))?;
            }
            if !seen.insert(slot.clone()) {
                return Err(format!(
                    "{}: {} already names another of the session's headers",
                    at(key),
                    slot
                ));
            }
        }
        for origin in raw.allowed_origins.unwrap_or_default() {
            let o = sessiond_axum::parse_origin(&origin).ok_or_else(|| {
                format!(
                    "{}: {origin:?} is not an origin (scheme://host or scheme://host:port, http or https)",
                    at("allowed_origins")
                )
            })?;
            web.allowed_origins.insert(o);
        }
        if let Some(s) = raw.heartbeat_interval_s {
            if s == 0 {
                return Err(format!(
                    "{}: must be at least 1",
                    at("heartbeat_interval_s")
                ));
            }
            web.heartbeat_interval_s = s;
        }
        if let Some(s) = raw.heartbeat_grace_s {
            web.heartbeat_grace_s = s;
        }
        Ok(web)
    }
}

/// A header name forward-auth may answer with: a valid name, not one that frames the
/// message or means something to a proxy or a browser.
fn header_name(name: &str) -> Result<HeaderName, String> {
    let h = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| "not a header name (letters, digits and '-')".to_string())?;
    if h.as_str().contains('_') {
        // CGI and FastCGI read `_` and `-` alike: a look-alike sent by a client would
        // be read as this header.
        return Err("use '-' rather than '_' in a header name".into());
    }
    let lower = h.as_str();
    if RESERVED_HEADERS.contains(&lower)
        || [
            "sec-",
            "access-control-",
            "x-forwarded-",
            "content-",
            "proxy-",
            // nginx acts on these in an upstream's answer (X-Accel-Redirect...).
            "x-accel-",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(format!(
            "{lower} is a header proxies or browsers give a meaning of their own"
        ));
    }
    Ok(h)
}

/// One app's web front, built from its [`WebConfig`] and its policy as they were when
/// it was built (it is built again on every reload, after the policies).
#[derive(Debug)]
pub struct Front {
    /// Forward-auth's header names.
    pub headers: ForwardHeaders,
    /// The session cookie's name (the policy's `cookie_name`).
    pub cookie: String,
    /// The same with the `__Host-` prefix, as it travels over HTTPS.
    pub host_cookie: String,
    /// How the app's tokens are prefixed (to tell its cookies from another app's).
    pub prefix: sessiond_core::TokenPrefix,
    /// Origins allowed to call the heartbeat from their pages.
    pub allowed_origins: HashSet<String>,
    /// The heartbeat script and endpoint under `/v1/apps/<app>` (sessiond-axum's layer
    /// around routes that match nothing else).
    pub heartbeat: Router,
}

/// Every served app's [`Front`].
#[derive(Debug)]
pub struct Fronts {
    manager: Arc<Manager>,
    trusted_proxies: Vec<IpAddr>,
    by_app: RwLock<HashMap<String, Arc<Front>>>,
}

impl Fronts {
    /// The fronts of the apps of `config` that `manager` serves.
    pub fn new(manager: Arc<Manager>, config: &Config) -> Fronts {
        let fronts = Fronts {
            manager,
            trusted_proxies: config.trusted_proxies.clone(),
            by_app: RwLock::default(),
        };
        fronts.rebuild(config);
        fronts
    }

    /// Builds every front again from `config` (after a reload applied its policies).
    /// An app the file no longer names is served until the restart, and keeps its front.
    pub fn rebuild(&self, config: &Config) {
        let mut by_app = HashMap::new();
        for (name, app) in &config.apps {
            if let Some(front) = self.build(name, &app.web) {
                by_app.insert(name.clone(), Arc::new(front));
            }
        }
        let mut current = self.by_app.write().unwrap_or_else(|e| e.into_inner());
        for (name, front) in current.drain() {
            if !config.apps.contains_key(&name) {
                by_app.insert(name, front);
            }
        }
        *current = by_app;
    }

    /// The front of `app`, if it is served.
    pub fn get(&self, app: &str) -> Option<Arc<Front>> {
        self.by_app
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    fn build(&self, app: &str, web: &WebConfig) -> Option<Front> {
        // An app waiting for a restart (newly licensed) has no policy yet.
        let policy = self.manager.policy(app).ok()?;
        let layer = sessiond_axum::SessionLayer::new(self.manager.clone(), app).ok()?;
        let layer = layer
            .with_trusted_proxies(self.trusted_proxies.iter().copied())
            .with_trusted_origins(web.allowed_origins.iter())
            .with_heartbeat_path(format!("/v1/apps/{app}"))
            .with_heartbeat_interval(Duration::from_secs(web.heartbeat_interval_s.into()))
            .with_heartbeat_grace(Duration::from_secs(web.heartbeat_grace_s.into()))
            // The server's own answers carry `no-store`; the pages are the app's.
            .with_security_headers(false);
        let heartbeat = Router::new()
            .fallback(|| async {
                crate::error::ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not_found",
                    "no such route; see /openapi.json",
                )
            })
            .layer(layer);
        Some(Front {
            headers: web.headers.clone(),
            cookie: policy.cookie_name.clone(),
            host_cookie: format!("__Host-{}", policy.cookie_name),
            prefix: policy.prefix.clone(),
            allowed_origins: web.allowed_origins.iter().cloned().collect(),
            heartbeat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(toml: &str) -> Result<WebConfig, String> {
        WebConfig::from_toml("shop", toml::from_str::<toml::Value>(toml).unwrap())
    }

    #[test]
    fn defaults_and_names() {
        assert_eq!(web("").unwrap(), WebConfig::default());
        let w = web(
            "user_header = \"X-Remote-User\"\nallowed_origins = [\"https://WWW.Shop.example/\"]",
        )
        .unwrap();
        assert_eq!(w.headers.user.as_str(), "x-remote-user");
        assert_eq!(w.headers.session.as_str(), "x-sessiond-session");
        assert!(w.allowed_origins.contains("https://www.shop.example"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("user_header = \"Set-Cookie\"", "apps.shop.web.user_header"),
            ("user_header = \"X Bad\"", "apps.shop.web.user_header"),
            (
                "user_header = \"X_Remote_User\"",
                "apps.shop.web.user_header",
            ),
            (
                "guest_header = \"X-Sessiond-User\"",
                "apps.shop.web.guest_header",
            ),
            (
                "session_header = \"Sec-Foo\"",
                "apps.shop.web.session_header",
            ),
            (
                "allowed_origins = [\"https://a/b\"]",
                "apps.shop.web.allowed_origins",
            ),
            ("allowed_origins = [\"*\"]", "apps.shop.web.allowed_origins"),
            (
                "heartbeat_interval_s = 0",
                "apps.shop.web.heartbeat_interval_s",
            ),
            ("heartbeat_grace_s = -1", "apps.shop.web.heartbeat_grace_s"),
            ("cors = true", "apps.shop.web.cors"),
            (
                "user_header = \"X-Accel-Redirect\"",
                "apps.shop.web.user_header",
            ),
            ("user_header = \"X-Real-IP\"", "apps.shop.web.user_header"),
        ] {
            let e = web(toml).unwrap_err();
            assert!(e.starts_with(&format!("{key}:")), "{toml}: {e}");
        }
    }
}
