//! Changing the configuration without a restart: on SIGHUP, or `POST /v1/reload`, the
//! server reads its configuration file (and the `SESSIOND__*` variables) again, checks
//! all of it, and only then applies what can change live:
//!
//! - **apps and their policies**: a new app is served at once; a changed policy applies
//!   to every admission from now on (seats, `on_full`, `max_per_user`, reserved
//!   privileges, heartbeat rules) and to sessions opened from now on (timeouts,
//!   retention, token prefix, cookie name, `bind_ip`: an open session keeps those it
//!   was opened with). Fewer seats close nobody (docs/CONCEPTS.md). A licensed app
//!   keeps its license's seats.
//! - **webhooks**: `[apps.<name>.hooks.<hook>]` tables, whole (a delivery already kept
//!   for a hook that is gone becomes a dead letter when its turn comes).
//! - **credentials**: the admin token (unless it came from the environment), operators,
//!   app keys and client keys, swapped whole (docs/OPERATIONS.md, rotation).
//!
//! A file that cannot be used changes nothing, and the answer (or the log, for
//! SIGHUP) says why. What cannot change live is named in the answer and the log
//! ([`Reloaded::restart_needed`]): the listeners and TLS settings, the data directory
//! and the store, the request and stream limits, the trusted proxies, the console's
//! settings, the license key and which apps are licensed, and an app removed from the
//! file (it is served until the restart). Each node reads its own file: on several
//! nodes sharing a store, reload each one.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sessiond_core::Manager;
use utoipa::ToSchema;

use crate::config::{Config, Secret};
use crate::credentials::{CredentialTable, Credentials};
use crate::license::Licenses;

/// What a reload changed, and what it could not.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Reloaded {
    /// Apps served from now on.
    pub apps_added: Vec<String>,
    /// Apps whose policy changed.
    pub apps_changed: Vec<String>,
    /// Credentials in force now: admin tokens, operator tokens, app keys, client keys.
    pub credentials: CredentialCounts,
    /// Settings that differ in the file but take a restart (by key), e.g. `listen`,
    /// `store`, `apps.old` (removed: still served until the restart).
    pub restart_needed: Vec<String>,
}

/// How many credentials of each kind are in force.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct CredentialCounts {
    /// Admin tokens (the current one and retiring ones).
    pub admin: usize,
    /// Operator tokens.
    pub operators: usize,
    /// App keys.
    pub app_keys: usize,
    /// Client keys.
    pub client_keys: usize,
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The server was started without a configuration file.
    #[error("the server was started without a configuration file: nothing to reload")]
    NoFile,
    /// The file (or a variable) cannot be used; the message names the key.
    #[error("{0}")]
    Invalid(String),
}

/// Reloads the configuration of a running server.
pub struct Reloader {
    manager: Arc<Manager>,
    credentials: Arc<CredentialTable>,
    /// The apps' web fronts, rebuilt from the new `[apps.<name>.web]` tables.
    fronts: Arc<crate::web::Fronts>,
    /// The webhooks, from the new `[apps.<name>.hooks.<hook>]` tables.
    webhooks: Arc<crate::webhooks::Webhooks>,
    /// The configuration as the file and the environment said at start or at the last
    /// reload (flags excluded), to tell what changed.
    read: Mutex<Config>,
    /// The configuration the server started with (flags included).
    running: Config,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

/// The settings that take a restart, each as text to compare.
fn restart_only(c: &Config) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("listen".into(), format!("{:?}", c.listen)),
        ("tls_cert, tls_key".into(), format!("{:?}", c.tls)),
        ("tls_listen".into(), format!("{:?}", c.tls_listen)),
        ("tls_only".into(), format!("{:?}", c.tls_only)),
        ("data_dir".into(), format!("{:?}", c.data_dir)),
        ("store".into(), format!("{:?}", c.store)),
        (
            "client_opens_per_minute".into(),
            c.client_opens_per_minute.to_string(),
        ),
        ("max_body_bytes".into(), c.max_body_bytes.to_string()),
        ("header_timeout_s".into(), c.header_timeout_s.to_string()),
        ("request_timeout_s".into(), c.request_timeout_s.to_string()),
        (
            "expiry_interval_ms".into(),
            c.expiry_interval_ms.to_string(),
        ),
        ("sse_keepalive_s".into(), c.sse_keepalive_s.to_string()),
        ("max_connections".into(), c.max_connections.to_string()),
        ("max_header_bytes".into(), c.max_header_bytes.to_string()),
        ("max_streams".into(), c.max_streams.to_string()),
        (
            "max_streams_per_app".into(),
            c.max_streams_per_app.to_string(),
        ),
        (
            "max_streams_per_session".into(),
            c.max_streams_per_session.to_string(),
        ),
        (
            "console_login_attempts_per_minute".into(),
            c.console_login_attempts_per_minute.to_string(),
        ),
        (
            "console_idle_timeout_s".into(),
            c.console_idle_timeout_s.to_string(),
        ),
        (
            "console_lifetime_s".into(),
            c.console_lifetime_s.to_string(),
        ),
        ("trusted_proxies".into(), format!("{:?}", c.trusted_proxies)),
        ("limits".into(), format!("{:?}", c.limits)),
        (
            "license_public_key".into(),
            format!("{:?}", c.license_public_key),
        ),
    ];
    for (name, app) in &c.apps {
        out.push((format!("apps.{name}.license"), format!("{:?}", app.license)));
    }
    out
}

impl Reloader {
    /// A reloader for a server started with `running` (flags included).
    pub fn new(
        manager: Arc<Manager>,
        credentials: Arc<CredentialTable>,
        fronts: Arc<crate::web::Fronts>,
        webhooks: Arc<crate::webhooks::Webhooks>,
        running: Config,
    ) -> Self {
        let read = running
            .source
            .as_deref()
            .and_then(|p| {
                let vars = crate::config::env_vars().ok()?;
                Config::from_file_and_env(Some(p), vars).ok()
            })
            .unwrap_or_else(|| running.clone());
        Reloader {
            manager,
            credentials,
            fronts,
            webhooks,
            read: Mutex::new(read),
            running,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the configuration again and applies what can change live (see the
    /// module docs). On an error nothing changed.
    pub async fn reload(&self, licenses: &Licenses) -> Result<Reloaded, ReloadError> {
        let _one = self.busy.lock().await;
        let Some(path) = self.running.source.clone() else {
            return Err(ReloadError::NoFile);
        };
        self.reload_from(&path, licenses)
            .map_err(ReloadError::Invalid)
    }

    fn reload_from(&self, path: &std::path::Path, licenses: &Licenses) -> Result<Reloaded, String> {
        let vars = crate::config::env_vars().map_err(|e| e.0)?;
        let mut fresh = Config::from_file_and_env(Some(path), vars).map_err(|e| e.0)?;
        fresh.licensing = self.running.licensing.clone();
        if self.running.admin_token_from_env {
            fresh.admin_token = self.running.admin_token.clone();
            fresh.retiring_admin_tokens.clear();
        }
        // Everything is checked before anything changes.
        let admin: Secret = match &fresh.admin_token {
            Some(t) => t.clone(),
            None => self.credentials.current().admin().clone(),
        };
        let table = Credentials::build(&fresh, &admin).map_err(|e| e.0)?;
        for (name, app) in &fresh.apps {
            app.policy
                .validate()
                .map_err(|e| format!("apps.{name}: {e}"))?;
        }

        let read = self.read.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (was, now) = (restart_only(&read), restart_only(&fresh));
        let mut out = Reloaded::default();
        for (key, value) in &now {
            let before = was.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            if before.is_some_and(|b| b != value) {
                out.restart_needed.push(key.clone());
            }
        }
        let served = self.manager.apps();
        for name in served.iter().filter(|a| !fresh.apps.contains_key(*a)) {
            out.restart_needed
                .push(format!("apps.{name} (removed: served until the restart)"));
        }
        // An app the new file licenses but this server does not watch (added, or newly
        // licensed) would be served without a license check: it waits for a restart.
        let licensed = fresh.license_terms().map_err(|e| e.0)?;
        let unwatched: Vec<String> = licensed
            .iter()
            .flat_map(|t| t.apps.keys())
            .filter(|a| !licenses.watches(a))
            .cloned()
            .collect();
        for name in &unwatched {
            out.restart_needed.push(format!(
                "apps.{name} (licensed: served after a restart, with its license checked)"
            ));
        }
        self.webhooks.check(&fresh)?;
        // Apply: policies, then the credentials that reach the new apps.
        for (name, app) in fresh.apps.iter().filter(|(n, _)| !unwatched.contains(n)) {
            match licenses
                .apply_config(&self.manager, name, app.policy.clone())
                .map_err(|e| format!("apps.{name}: {e}"))?
            {
                None => {}
                Some(true) => out.apps_added.push(name.clone()),
                Some(false) => out.apps_changed.push(name.clone()),
            }
        }
        let (admin, operators, app_keys, client_keys) = table.counts();
        self.credentials.swap(table);
        self.fronts.rebuild(&fresh);
        self.webhooks.apply(&fresh)?;
        out.credentials = CredentialCounts {
            admin,
            operators,
            app_keys,
            client_keys,
        };
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(out)
    }
}
