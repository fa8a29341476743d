//! How the memory store keeps a session: a compact [`Record`] (128 bytes) with the
//! fields every session has, and the rarer ones (user, privileges, info, client, closure)
//! in one boxed [`Cold`] part that guests and plain web sessions never allocate.
//!
//! Records are converted to and from [`Session`] at the store's edge. A read returns an
//! owned `Session` anyway, so building one from a record costs what cloning would.

use std::collections::HashMap;
use std::sync::Arc;

use crate::id::{SessionId, TokenHash};
use crate::json::JsonObject;
use crate::session::{Client, Closure, Heartbeat, Privileges, Session};
use crate::time::Timestamp;

use super::hasher::BuildIdHasher;

const COUNTS_SEAT: u8 = 1;
const BIND_IP: u8 = 2;
const HEARTBEAT: u8 = 4;
const HEARTBEAT_ACTIVE: u8 = 8;

/// The fields few sessions have.
#[derive(Default)]
struct Cold {
    user: Option<Box<str>>,
    privileges: Privileges,
    info: JsonObject,
    client: Client,
    closed: Option<Closure>,
    heartbeat_lease_s: u32,
}

/// One stored session.
pub(super) struct Record {
    id: SessionId,
    token_hash: [u8; 16],
    app: Arc<str>,
    created_at: Timestamp,
    last_activity_at: Timestamp,
    last_heartbeat_at: Timestamp,
    version: u64,
    data: JsonObject,
    idle_timeout_s: u32,
    lifetime_s: u32,
    retention_s: u32,
    heartbeat_interval_s: u32,
    heartbeat_grace_s: u32,
    flags: u8,
    cold: Option<Box<Cold>>,
}

impl Record {
    fn new(s: Session) -> Record {
        let mut flags = 0;
        if s.counts_seat {
            flags |= COUNTS_SEAT;
        }
        if s.bind_ip {
            flags |= BIND_IP;
        }
        if let Some(h) = s.heartbeat {
            flags |= HEARTBEAT;
            if h.active {
                flags |= HEARTBEAT_ACTIVE;
            }
        }
        let cold = Cold {
            user: s.user,
            privileges: s.privileges,
            info: s.info,
            client: s.client,
            closed: s.closed,
            heartbeat_lease_s: s.heartbeat.map_or(0, |h| h.lease_s),
        };
        let empty = cold.user.is_none()
            && cold.privileges.is_empty()
            && cold.info.is_empty()
            && cold.client == Client::default()
            && cold.closed.is_none()
            && cold.heartbeat_lease_s == 0;
        Record {
            id: s.id,
            token_hash: s.token_hash.0.to_be_bytes(),
            app: s.app,
            created_at: s.created_at,
            last_activity_at: s.last_activity_at,
            last_heartbeat_at: s.last_heartbeat_at,
            version: s.version,
            data: s.data,
            idle_timeout_s: s.idle_timeout_s,
            lifetime_s: s.lifetime_s,
            retention_s: s.retention_s,
            heartbeat_interval_s: s.heartbeat.map_or(0, |h| h.interval_s),
            heartbeat_grace_s: s.heartbeat.map_or(0, |h| h.grace_s),
            flags,
            cold: (!empty).then(|| Box::new(cold)),
        }
    }

    fn session(&self) -> Session {
        let cold = self.cold.as_deref();
        Session {
            id: self.id,
            token_hash: TokenHash(u128::from_be_bytes(self.token_hash)),
            app: self.app.clone(),
            user: cold.and_then(|c| c.user.clone()),
            privileges: cold.map(|c| c.privileges.clone()).unwrap_or_default(),
            info: cold.map(|c| c.info.clone()).unwrap_or_default(),
            data: self.data.clone(),
            client: cold.map(|c| c.client.clone()).unwrap_or_default(),
            created_at: self.created_at,
            last_activity_at: self.last_activity_at,
            last_heartbeat_at: self.last_heartbeat_at,
            idle_timeout_s: self.idle_timeout_s,
            lifetime_s: self.lifetime_s,
            heartbeat: (self.flags & HEARTBEAT != 0).then_some(Heartbeat {
                interval_s: self.heartbeat_interval_s,
                grace_s: self.heartbeat_grace_s,
                active: self.flags & HEARTBEAT_ACTIVE != 0,
                lease_s: cold.map_or(0, |c| c.heartbeat_lease_s),
            }),
            retention_s: self.retention_s,
            counts_seat: self.flags & COUNTS_SEAT != 0,
            bind_ip: self.flags & BIND_IP != 0,
            closed: cold.and_then(|c| c.closed),
            version: self.version,
        }
    }
}

/// A shard's sessions by id, stored as boxed [`Record`]s so the table itself stays
/// small (24 bytes an entry) whatever its load factor.
#[derive(Default)]
pub(super) struct Records(HashMap<SessionId, Box<Record>, BuildIdHasher>);

impl Records {
    /// The session `id`.
    pub fn get(&self, id: &SessionId) -> Option<Session> {
        self.0.get(id).map(|r| r.session())
    }

    /// The version of session `id`, without building the session.
    pub fn version_of(&self, id: &SessionId) -> Option<u64> {
        self.0.get(id).map(|r| r.version)
    }

    /// The app of session `id`, without building the session.
    pub fn app_of(&self, id: &SessionId) -> Option<Arc<str>> {
        self.0.get(id).map(|r| r.app.clone())
    }

    /// Stores `session` (replacing any previous state).
    pub fn insert(&mut self, session: Session) {
        self.0.insert(session.id, Box::new(Record::new(session)));
    }

    /// Removes and returns session `id`.
    pub fn remove(&mut self, id: &SessionId) -> Option<Session> {
        self.0.remove(id).map(|r| r.session())
    }

    /// Every session of the shard.
    pub fn values(&self) -> impl Iterator<Item = Session> + '_ {
        self.0.values().map(|r| r.session())
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
