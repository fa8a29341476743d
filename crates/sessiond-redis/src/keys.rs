//! The key layout: every key name this store uses is built here, so the layout in the
//! crate docs and the code cannot drift apart.
//!
//! An app's keys all carry the hash tag `{<app>}`, so they live in one Redis Cluster
//! slot and one script may touch any of them. Global keys (known apps, token and id
//! indexes) carry no app tag and are never passed to a script with an app's keys.

use std::sync::Arc;

use sessiond_core::hooks::HookRoutes;
use sessiond_core::{SessionId, TokenHash};

use crate::error::{Error, Result};

/// The names of the keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    /// The webhook routes, which every app's keys carry to the writes built on them.
    routes: Arc<HookRoutes>,
}

impl Keys {
    /// Keys under `prefix`, which must not contain a hash tag (`{` or `}`): the app's tag
    /// must be the first one in every app key.
    pub fn new(prefix: &str) -> Result<Keys> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "the redis key prefix {prefix:?} must be non-empty and hold no '{{' or '}}'"
            )));
        }
        Ok(Keys {
            prefix: prefix.to_string(),
            routes: Arc::default(),
        })
    }

    /// The webhook routes of this store.
    pub fn routes(&self) -> &HookRoutes {
        &self.routes
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The set of app names that hold sessions: `<prefix>:apps`.
    pub fn apps(&self) -> String {
        format!("{}:apps", self.prefix)
    }

    /// The token index entry, `<prefix>:t:<token hash hex>` → `<app>\n<id>`.
    pub fn token(&self, h: TokenHash) -> String {
        format!("{}:t:{}", self.prefix, h.to_hex())
    }

    /// The id index entry, `<prefix>:i:<id>` → `<app>`.
    pub fn id(&self, id: SessionId) -> String {
        format!("{}:i:{id}", self.prefix)
    }

    /// The layout version of the keys under this prefix, `<prefix>:layout` → `1`
    /// ([`crate::LAYOUT`]).
    pub fn layout(&self) -> String {
        format!("{}:layout", self.prefix)
    }

    /// The pub/sub channel of the event bus, `<prefix>:events`.
    pub fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// The keys of `app`, which must be usable inside a hash tag.
    pub fn app(&self, app: &str) -> Result<AppKeys> {
        if app.is_empty() || app.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "the app name {app:?} cannot be used in a redis key"
            )));
        }
        Ok(AppKeys {
            app: app.to_string(),
            base: format!("{}:{{{app}}}:", self.prefix),
            routes: self.routes.clone(),
        })
    }
}

/// The keys of one app: `<prefix>:{<app>}:<name>`.
#[derive(Debug, Clone)]
pub(crate) struct AppKeys {
    app: String,
    base: String,
    routes: Arc<HookRoutes>,
}

impl AppKeys {
    /// The app's name.
    pub fn app(&self) -> &str {
        &self.app
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// The webhook routes every write of this app derives its deliveries with.
    pub fn routes(&self) -> &HookRoutes {
        &self.routes
    }

    /// The app's webhook deliveries: a hash, delivery id → its JSON (the truth, but for
    /// its due time).
    pub fn hooks(&self) -> String {
        self.key("hooks")
    }

    /// Pending deliveries scored by when each is due in ms (a claim moves the score to
    /// the end of its lease).
    pub fn hooks_due(&self) -> String {
        self.key("hooks:due")
    }

    /// Dead letters (sorted set, scores 0, so ordered by id).
    pub fn hooks_dead(&self) -> String {
        self.key("hooks:dead")
    }

    /// The app's revision counter, bumped by every change of who is open.
    pub fn rev(&self) -> String {
        self.key("rev")
    }

    /// Open session ids (sorted set, all scores 0, so ordered by id).
    pub fn open(&self) -> String {
        self.key("open")
    }

    /// Closed session ids kept as history (sorted set, scores 0).
    pub fn closed(&self) -> String {
        self.key("closed")
    }

    /// Open seat-taking session ids, scored by last activity (idlest first).
    pub fn seated(&self) -> String {
        self.key("seated")
    }

    /// Open session ids scored by their deadline in ms.
    pub fn due(&self) -> String {
        self.key("due")
    }

    /// Closed session ids scored by the end of their retention in ms.
    pub fn purge(&self) -> String {
        self.key("purge")
    }

    /// Open session ids of `user` (sorted set, scores 0).
    pub fn user(&self, user: &str) -> String {
        format!("{}u:{user}", self.base)
    }

    /// What precedes a session id in its record key (scripts that walk an index build
    /// record keys from it).
    pub fn record_prefix(&self) -> String {
        self.key("s:")
    }

    /// The record of session `id`: a hash with `rev` (write counter) and `json`.
    pub fn record(&self, id: SessionId) -> String {
        format!("{}s:{id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_tag(key: &str) -> &str {
        let open = key.find('{').expect("tagged");
        let close = key[open..].find('}').expect("closed") + open;
        &key[open + 1..close]
    }

    #[test]
    fn every_app_key_carries_the_app_tag_first() {
        let keys = Keys::new("sessiond").unwrap();
        let app = keys.app("shop").unwrap();
        let id = SessionId::new();
        for k in [
            app.rev(),
            app.open(),
            app.closed(),
            app.seated(),
            app.due(),
            app.purge(),
            app.user("a{b}"),
            app.record(id),
        ] {
            assert!(k.starts_with("sessiond:{shop}:"), "{k}");
            assert_eq!(slot_tag(&k), "shop");
        }
        assert_eq!(app.record(id), format!("{}{id}", app.record_prefix()));
        for k in [keys.apps(), keys.token(TokenHash(7)), keys.id(id)] {
            assert!(!k.contains('{'), "{k}");
        }
    }

    #[test]
    fn braces_are_refused_where_they_would_break_the_tag() {
        assert!(Keys::new("a{b}").is_err());
        assert!(Keys::new("").is_err());
        let keys = Keys::new("p").unwrap();
        assert!(keys.app("x}y").is_err());
    }
}
