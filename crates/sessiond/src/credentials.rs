//! Who may call the API with which secret: [`Credentials`], the table built from the
//! configuration (admin tokens, named operators, app keys, client keys), looked up by
//! the secret's SHA-256; and [`Caller`], what a secret stands for.
//!
//! Every credential setting may hold several secrets: the first is current, the others
//! are retiring and still accepted. Rotating one is: add the new secret first, reload,
//! move the clients over, remove the old one, reload. A reload (SIGHUP or
//! `POST /v1/reload`, see [`crate::reload`]) swaps the whole table at once, so no request ever sees
//! half a change, and a configuration that cannot be used keeps the table in use.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use sessiond_core::{Actor, OperatorName};

use crate::auth::digest;
use crate::config::{Config, ConfigError, Secret};

/// A named operator's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Its name, recorded as the actor of what it does.
    pub name: OperatorName,
    /// The apps it may act on; `None`: every app.
    pub apps: Option<BTreeSet<String>>,
    /// It may list and read, never open, change or close.
    pub read_only: bool,
}

/// What a credential stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: may do everything.
    Admin,
    /// A named operator: its apps, read-only or not.
    Operator(Operator),
    /// The key of this app: may manage this app only.
    App(String),
    /// A client credential of this app: may only open a session of it.
    Client(String),
}

impl Caller {
    /// Whether this caller may manage (list, read, and unless read-only change) `app`.
    /// A client credential manages nothing; an internal app only the admin token.
    pub fn may_manage(&self, app: &str) -> bool {
        // The server's internal apps (the console's sign-ins) are the admin token's
        // alone: an operator "of every app" means every app of the configuration.
        if app.starts_with(sessiond_core::INTERNAL_APP_MARK) {
            return matches!(self, Caller::Admin);
        }
        match self {
            Caller::Admin => true,
            Caller::Operator(op) => op.apps.as_ref().is_none_or(|a| a.contains(app)),
            Caller::App(mine) => mine == app,
            Caller::Client(_) => false,
        }
    }

    /// Whether this caller may change things (read-only operators may not).
    pub fn may_write(&self) -> bool {
        !matches!(
            self,
            Caller::Operator(Operator {
                read_only: true,
                ..
            })
        )
    }

    /// Whether this caller may act on every app (the admin token, or an operator of
    /// every app).
    pub fn every_app(&self) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Operator(op) => op.apps.is_none(),
            Caller::App(_) | Caller::Client(_) => false,
        }
    }

    /// The actor recorded when this caller closes a session.
    pub fn actor(&self) -> Actor {
        match self {
            Caller::Admin => Actor::Admin,
            Caller::Operator(op) => Actor::Operator(op.name),
            Caller::App(_) => Actor::App,
            Caller::Client(_) => Actor::User,
        }
    }
}

/// The credential table of one configuration.
#[derive(Debug)]
pub struct Credentials {
    callers: HashMap<[u8; 32], Caller>,
    admin: Secret,
    app_keys: HashMap<String, Secret>,
}

impl Credentials {
    /// The table of `config`, with `admin` as the current admin token (from the
    /// configuration, the environment or the token file). Every secret must be unique.
    pub fn build(config: &Config, admin: &Secret) -> Result<Credentials, ConfigError> {
        let mut callers = HashMap::new();
        let mut add = |what: &str, secret: &Secret, caller: Caller| {
            if callers.insert(digest(secret.expose()), caller).is_some() {
                return Err(ConfigError(format!(
                    "{what}: this secret is used twice; every credential must be unique"
                )));
            }
            Ok(())
        };
        add("the admin token", admin, Caller::Admin)?;
        for t in &config.retiring_admin_tokens {
            add("admin_token", t, Caller::Admin)?;
        }
        for (name, op) in &config.operators {
            let caller = Caller::Operator(Operator {
                name: OperatorName::new(name)
                    .ok_or_else(|| ConfigError(format!("operators.{name}: not a name")))?,
                apps: op.apps.clone(),
                read_only: op.read_only,
            });
            for t in &op.tokens {
                add(&format!("operators.{name}.token"), t, caller.clone())?;
            }
        }
        let mut app_keys = HashMap::new();
        for (name, app) in &config.apps {
            for k in app.key.iter().chain(&app.retiring_keys) {
                add(&format!("apps.{name}.key"), k, Caller::App(name.clone()))?;
            }
            for k in &app.client_keys {
                add(
                    &format!("apps.{name}.client_key"),
                    k,
                    Caller::Client(name.clone()),
                )?;
            }
            if let Some(k) = &app.key {
                app_keys.insert(name.clone(), k.clone());
            }
        }
        Ok(Credentials {
            callers,
            admin: admin.clone(),
            app_keys,
        })
    }

    /// What `secret` stands for, if anything.
    pub fn caller(&self, secret: &str) -> Option<&Caller> {
        self.callers.get(&digest(secret))
    }

    /// The current admin token.
    pub fn admin(&self) -> &Secret {
        &self.admin
    }

    /// The current key of `app`, if it has one.
    pub fn app_key(&self, app: &str) -> Option<&Secret> {
        self.app_keys.get(app)
    }

    /// How many secrets of each kind: (admin tokens, operator tokens, app keys, client
    /// keys), for the log.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut n = (0, 0, 0, 0);
        for c in self.callers.values() {
            match c {
                Caller::Admin => n.0 += 1,
                Caller::Operator(_) => n.1 += 1,
                Caller::App(_) => n.2 += 1,
                Caller::Client(_) => n.3 += 1,
            }
        }
        n
    }
}

/// The credential table in use, swapped whole on reload.
#[derive(Debug)]
pub struct CredentialTable(RwLock<Arc<Credentials>>);

impl CredentialTable {
    /// A table starting with `c`.
    pub fn new(c: Credentials) -> Self {
        CredentialTable(RwLock::new(Arc::new(c)))
    }

    /// The table now.
    pub fn current(&self) -> Arc<Credentials> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `table` in force, whole: no request sees half of the old and half of the
    /// new (a configuration reload, [`crate::reload`]).
    pub fn swap(&self, table: Credentials) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// How often the client credentials of each app may open a session: a token bucket
/// per app of `per_minute` tokens, refilled continuously. Its table holds one entry per
/// configured app that has opened with a client credential, so it is bounded by the
/// configuration, never by what clients send.
#[derive(Debug)]
pub struct OpenRate {
    per_minute: u32,
    buckets: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl OpenRate {
    /// `per_minute` opens per app and minute, in bursts of as many.
    pub fn new(per_minute: u32) -> Self {
        OpenRate {
            per_minute: per_minute.max(1),
            buckets: std::sync::Mutex::default(),
        }
    }

    /// Opens allowed per app and minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one open for `app`, or says in how many seconds one will be available.
    pub fn take(&self, app: &str) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let cap = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(app.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * cap / 60.0).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) * 60.0 / cap).ceil().max(1.0) as u64)
        }
    }
}
