//! The console's sign-ins as sessiond sessions: each is a session of the internal app
//! [`CONSOLE_APP`] in the configured store, opened through the Manager like any app's,
//! so a sign-in survives a restart, works on every node sharing the store, follows the
//! console's idle and absolute timeouts, and can be listed and killed by the admin
//! token like any session.
//!
//! The browser holds the session's token (in the console cookie); the session holds
//! who signed in (the admin token, or the key of which app) and a fingerprint of that
//! credential, never the credential itself. The credentials stay in this node's memory,
//! from its configuration: the proxy sends the one the session names on to the API. A
//! session whose credential was changed since (another admin token or app key in the
//! configuration) no longer signs anyone in.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use sessiond_core::{
    Actor, Client, CloseReason, Error, InternalApp, JsonObject, Lookup, Manager, OnFull,
    OpenRequest, Policy, Resolve, Session, SessionId, Token,
};
use sha2::{Digest, Sha256};

use crate::config::{Config, Secret};
use crate::credentials::CredentialTable;
use crate::error::ApiError;

/// The internal app the console's sign-ins are sessions of. Its name cannot be
/// declared in a configuration ([`sessiond_core::valid_app_name`] refuses it); it is
/// never listed in `GET /v1/apps` or the metrics, and no app key can reach its
/// sessions. The admin token lists them at `GET /v1/apps/@console/sessions`.
pub const CONSOLE_APP: InternalApp = InternalApp::new("@console");

/// Most browsers signed in to the console at once: the seats of [`CONSOLE_APP`]. A new
/// sign-in beyond it ends the longest idle one (closed as `evicted`).
pub const MAX_CONSOLE_SESSIONS: u32 = 1024;

/// Longest console cookie value taken to the store; longer ones sign no one in.
const MAX_COOKIE_TOKEN: usize = 256;

/// What a console session may do: the credential it signed in with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// The admin token: every app.
    Admin,
    /// The key of this app: that app only.
    App(String),
}

impl Role {
    /// The session's `user`, for whoever lists console sessions.
    fn user(&self) -> String {
        match self {
            Role::Admin => "admin".to_string(),
            Role::App(app) => format!("app:{app}"),
        }
    }

    /// The role recorded in a console session's `info`, if it names one.
    fn of_info(info: &JsonObject) -> Option<Role> {
        match info.get("role")?.as_str()? {
            "admin" => Some(Role::Admin),
            "app" => Some(Role::App(info.get("app")?.as_str()?.to_string())),
            _ => None,
        }
    }

    /// The app the role is limited to (none for the admin token).
    pub fn app(&self) -> Option<&str> {
        match self {
            Role::Admin => None,
            Role::App(app) => Some(app),
        }
    }
}

/// A browser signed in to the console: its session and what it may do.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The console session.
    pub id: SessionId,
    /// The credential it signed in with.
    pub role: Role,
}

/// The credentials a console session can stand for, and the Manager's internal app
/// that keeps the sessions.
pub struct SignIns {
    /// The server's credentials (reloaded on SIGHUP): a role's secret is its current
    /// one there, and the admin token keys the fingerprints.
    credentials: Arc<CredentialTable>,
    /// Seconds a console session lives at most, whatever its activity (the cookie's
    /// `Max-Age`).
    lifetime_s: u32,
}

impl SignIns {
    /// Registers [`CONSOLE_APP`] on `manager` with the console's timeouts from
    /// `config`, and keeps the credentials a sign-in can name: `admin` and the app keys.
    pub fn new(
        config: &Config,
        credentials: Arc<CredentialTable>,
        manager: &Manager,
    ) -> Result<Self, Error> {
        manager.set_internal_policy(
            CONSOLE_APP,
            Policy {
                idle_timeout_s: config.console_idle_timeout_s,
                absolute_lifetime_s: config.console_lifetime_s,
                seats: Some(MAX_CONSOLE_SESSIONS),
                on_full: OnFull::EvictIdlest,
                cookie_name: super::COOKIE.into(),
                ..Policy::default()
            },
        )?;
        Ok(SignIns {
            credentials,
            lifetime_s: config.console_lifetime_s,
        })
    }

    /// The cookie's `Max-Age`: the console sessions' absolute lifetime.
    pub fn lifetime_s(&self) -> u32 {
        self.lifetime_s
    }

    /// The secret `role` stands for, to send on to the API (its current one); none when
    /// this node's configuration has no such credential.
    pub fn secret(&self, role: &Role) -> Option<Secret> {
        let table = self.credentials.current();
        match role {
            Role::Admin => Some(table.admin().clone()),
            Role::App(app) => table.app_key(app).cloned(),
        }
    }

    /// A fingerprint of `role`'s credential, recorded in its console sessions: a
    /// keyed hash (the admin token is the key), so a copy of the store tells nothing
    /// about any credential, and a node whose credential differs refuses the session.
    fn fingerprint(&self, role: &Role) -> Option<String> {
        let secret = self.secret(role)?;
        let admin = self.credentials.current().admin().clone();
        let mut h = Sha256::new();
        h.update(b"sessiond console credential\0");
        h.update(admin.expose().as_bytes());
        h.update(b"\0");
        h.update(secret.expose().as_bytes());
        let d = h.finalize();
        Some(d[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Opens a console session for `role`; answers its token, for the cookie.
    pub async fn sign_in(
        &self,
        manager: &Manager,
        role: &Role,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Result<Token, ApiError> {
        let Some(fingerprint) = self.fingerprint(role) else {
            return Err(ApiError::unauthorized("that credential is not configured"));
        };
        let mut info = json!({"role": if role.app().is_some() { "app" } else { "admin" }, "credential": fingerprint});
        if let Some(app) = role.app() {
            info["app"] = Value::from(app);
        }
        let opened = manager
            .open_internal(
                CONSOLE_APP,
                OpenRequest {
                    user: Some(role.user()),
                    info: Some(JsonObject::from_value(&info).map_err(Error::from)?),
                    client: Client {
                        label: Some("admin console".into()),
                        ip,
                        user_agent: user_agent.map(Box::from),
                    },
                    ..OpenRequest::default()
                },
            )
            .await?;
        for gone in &opened.displaced {
            tracing::info!(session = %gone.id, "console sign-in ended to make room for a new one");
        }
        tracing::info!(session = %opened.session.id, role = %role.user(), "console sign-in");
        Ok(opened.token)
    }

    /// The console session of `cookie`, if it is open and its credential is still
    /// this node's; counts as activity when `touch`. A store that cannot answer is an
    /// error (503), not a sign-out.
    pub async fn signed_in(
        &self,
        manager: &Manager,
        cookie: Option<&str>,
        ip: Option<IpAddr>,
        touch: bool,
    ) -> Result<Option<Signed>, ApiError> {
        let Some(session) = session_of(manager, cookie, ip, touch).await? else {
            return Ok(None);
        };
        let Some(role) = Role::of_info(&session.info) else {
            return Ok(None);
        };
        let recorded = session.info.get("credential");
        let current = self.fingerprint(&role);
        if current.is_none() || recorded.as_ref().and_then(Value::as_str) != current.as_deref() {
            tracing::info!(session = %session.id, role = %role.user(), "console session refused: its credential is not this node's (changed or removed)");
            return Ok(None);
        }
        Ok(Some(Signed {
            id: session.id,
            role,
        }))
    }

    /// Closes the console session of `cookie` as `logout`, if there is one (whether
    /// or not its credential is still configured).
    pub async fn sign_out(
        &self,
        manager: &Manager,
        cookie: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let Some(session) = session_of(manager, cookie, ip, false).await? else {
            return Ok(());
        };
        match manager
            .close(Lookup::Id(session.id), CloseReason::Logout, Actor::User)
            .await
        {
            Ok(_) | Err(Error::SessionClosed(_) | Error::NotFound(_)) => {
                tracing::info!(session = %session.id, "console sign-out");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The open console session whose token is `cookie`. Only a session of
/// [`CONSOLE_APP`] is found: the token of any other app's session signs no one in and
/// is not touched.
async fn session_of(
    manager: &Manager,
    cookie: Option<&str>,
    ip: Option<IpAddr>,
    touch: bool,
) -> Result<Option<Session>, ApiError> {
    let Some(cookie) = cookie.filter(|c| !c.is_empty() && c.len() <= MAX_COOKIE_TOKEN) else {
        return Ok(None);
    };
    let token = Token::from_client(cookie);
    let app: Arc<str> = Arc::from(CONSOLE_APP.name());
    match manager
        .resolve_in(Some(app), &token, Resolve { touch, ip })
        .await
    {
        Ok(s) => Ok(Some(s)),
        Err(Error::InvalidToken | Error::SessionClosed(_) | Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
