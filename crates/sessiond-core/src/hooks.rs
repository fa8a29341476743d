//! Webhooks' durable outbox: what a change owes the hooks of its app, written by the
//! store in the same atomic step as the change itself, then sent by the server.
//!
//! An operator gives an app hooks (a name, a URL, the kinds of event wanted); the server
//! hands the store their [`HookRoutes`]. From then on, every write of a session of that
//! app goes through [`HookRoutes::derive`], the one function that says which events a
//! change from one state to the next makes (`opened`, `closed` with reason and actor,
//! `privileges_changed`), and the store keeps one [`Delivery`] per event and hook *with*
//! the change: the file store's journal frame of both, PostgreSQL rows in the same
//! transaction, Redis in the same `COMMIT` group. So a change that is acknowledged
//! has its deliveries kept, and a change that did not happen has none; a restart, a crash
//! or a receiver that is down loses nothing. `seats_full` reports a refusal, which writes
//! nothing: it is kept on its own ([`Outbox::push`]).
//!
//! Delivery is at least once: a node [`Outbox::claim`]s due deliveries, which moves each
//! one's due time forward by a lease (so no other node sends it meanwhile), sends it,
//! then [`Outbox::settle`]s it: gone once delivered, due again later after a failure, or
//! *dead* after the hook's last try, kept for an operator to [`Outbox::resend`]. Every
//! delivery of one event carries the same event id, so a receiver drops duplicates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admission::Refusal;
use crate::id::SessionId;
use crate::session::{Actor, CloseReason, Session};
use crate::store::StoreResult;
use crate::time::Timestamp;

/// Names one event or one delivery: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HookId(Uuid);

impl HookId {
    /// A fresh time-ordered id.
    pub fn new() -> HookId {
        HookId(Uuid::now_v7())
    }

    /// A fresh id made at `t` (of the caller's clock, so ids and [`HookId::first_at`]
    /// agree under a test clock too).
    /// Ids made by one process increase, even within a millisecond, so they sort in
    /// the order events happened.
    pub fn at(t: Timestamp) -> HookId {
        static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
        let ms = t.as_millis();
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            ((ms % 1000) * 1_000_000) as u32,
        );
        let fresh = Uuid::new_v7(ts).as_u128();
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        // Within a millisecond the random tail could go down: count up from the last
        // one instead (62 random bits leave room).
        let same_ms = (fresh >> 80) == (*last >> 80);
        let v = if same_ms && fresh <= *last {
            *last + 1
        } else {
            fresh
        };
        *last = v;
        HookId::from_u128(v)
    }

    /// The id as a 128-bit integer.
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// Rebuilds an id from [`HookId::as_u128`].
    pub fn from_u128(v: u128) -> HookId {
        HookId(Uuid::from_u128(v))
    }

    /// The lowest id made at `t`: every id made earlier is below it (a UUIDv7 starts
    /// with its time in milliseconds).
    pub fn first_at(t: Timestamp) -> HookId {
        HookId::from_u128(u128::from(t.as_millis().min((1 << 48) - 1)) << 80)
    }
}

impl Default for HookId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for HookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for HookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for HookId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(HookId)
            .map_err(|_| format!("not a delivery id: {s:?}"))
    }
}

/// The kinds of event a hook may want.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// A session opened.
    Opened,
    /// A session closed (with reason and actor).
    Closed,
    /// A session's privileges, user or token changed (a sign-in, a sign-out).
    PrivilegesChanged,
    /// An open was refused because the seats or the user's slots were taken.
    SeatsFull,
}

impl HookKind {
    /// Every kind, in a stable order.
    pub const ALL: [HookKind; 4] = [
        HookKind::Opened,
        HookKind::Closed,
        HookKind::PrivilegesChanged,
        HookKind::SeatsFull,
    ];

    /// The snake_case name (configuration, payloads, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Opened => "opened",
            HookKind::Closed => "closed",
            HookKind::PrivilegesChanged => "privileges_changed",
            HookKind::SeatsFull => "seats_full",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<HookKind> {
        HookKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`HookKind`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookKinds(u8);

impl HookKinds {
    /// Every kind.
    pub const ALL: HookKinds = HookKinds(0b1111);

    /// The set of `kinds`.
    pub fn of(kinds: impl IntoIterator<Item = HookKind>) -> HookKinds {
        HookKinds(kinds.into_iter().fold(0, |m, k| m | k.bit()))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: HookKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// One hook of an app, as the store needs it: its name and what it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The hook's name (unique within its app).
    pub hook: Arc<str>,
    /// The kinds of event it wants.
    pub kinds: HookKinds,
}

type RouteMap = HashMap<Arc<str>, Arc<[Route]>>;

/// Which apps have hooks and what each hook wants: what a store consults on every write.
/// Shared by the store and the server, which sets it at start and on each reload. Cheap
/// to consult when no app has a hook (one atomic load).
#[derive(Debug, Default)]
pub struct HookRoutes {
    any: AtomicBool,
    map: RwLock<Arc<RouteMap>>,
}

impl HookRoutes {
    /// Replaces every route: `routes` maps an app to its hooks.
    pub fn set(&self, routes: impl IntoIterator<Item = (String, Vec<Route>)>) {
        let map: RouteMap = routes
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(app, r)| (Arc::from(app), Arc::from(r)))
            .collect();
        let any = !map.is_empty();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        self.any.store(any, Ordering::Release);
    }

    /// Whether no app has a hook.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// The apps that have hooks.
    pub fn apps(&self) -> Vec<Arc<str>> {
        if self.is_empty() {
            return Vec::new();
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut apps: Vec<Arc<str>> = map.keys().cloned().collect();
        apps.sort();
        apps
    }

    /// The hooks of `app`.
    pub fn of(&self, app: &str) -> Option<Arc<[Route]>> {
        if self.is_empty() {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        map.get(app).cloned()
    }

    /// The deliveries a write of a session from `before` (none: it is new) to `after`
    /// owes its app's hooks, made at `now`: `opened` for a new open session, `closed`
    /// when an open one closes, `privileges_changed` when an open one changes its
    /// privileges, user or token. The one place that says which change is which event;
    /// a store keeps what it returns in the same atomic step as the write.
    pub fn derive(
        &self,
        before: Option<&Session>,
        after: &Session,
        now: Timestamp,
    ) -> Vec<Delivery> {
        let Some(routes) = self.of(&after.app) else {
            return Vec::new();
        };
        let kind = match before {
            None if after.is_open() => HookKind::Opened,
            Some(b) if b.is_open() && !after.is_open() => HookKind::Closed,
            Some(b)
                if b.is_open()
                    && after.is_open()
                    && (b.token_hash != after.token_hash
                        || b.privileges != after.privileges
                        || b.user != after.user) =>
            {
                HookKind::PrivilegesChanged
            }
            _ => return Vec::new(),
        };
        let closure = after.closed.filter(|_| kind == HookKind::Closed);
        let payload = Payload {
            event_id: HookId::at(now),
            event: kind,
            app: &after.app,
            session: Some(after.id),
            user: after.user.as_deref(),
            privileges: (kind != HookKind::Closed).then_some(&after.privileges),
            reason: closure.map(|c| c.reason),
            by: closure.map(|c| c.by),
            limit: None,
            used: None,
            total: None,
            refusals: None,
            at: closure.map_or(now, |c| c.at),
        };
        payload.deliveries(&routes, now)
    }

    /// [`Self::derive`] for sessions each just closed from open (a store that holds
    /// only the closed states of a close-all, an expiry sweep or an admission's
    /// displacements).
    pub fn closes<'a>(
        &self,
        closed: impl IntoIterator<Item = &'a Session>,
        now: Timestamp,
    ) -> Vec<Delivery> {
        if self.is_empty() {
            return Vec::new();
        }
        closed
            .into_iter()
            .filter(|s| self.of(&s.app).is_some())
            .flat_map(|s| {
                let mut open = s.clone();
                open.closed = None;
                self.derive(Some(&open), s, now)
            })
            .collect()
    }

    /// The deliveries an open of `user` in `app` refused at `now` owes: `seats_full`
    /// when every seat or every one of the user's slots was taken (`limit` says which),
    /// reporting `refusals` refused opens (this one and those left unreported before).
    pub fn seats_full(
        &self,
        app: &str,
        user: Option<&str>,
        refusal: &Refusal,
        refusals: u32,
        now: Timestamp,
    ) -> Vec<Delivery> {
        let Some(routes) = self.of(app) else {
            return Vec::new();
        };
        let (limit, used, total) = match *refusal {
            Refusal::SeatsExhausted { used, total } => ("seats", Some(used), total),
            Refusal::UserLimit { max } => ("user", None, max),
            Refusal::TakeOverTarget => return Vec::new(),
        };
        Payload {
            limit: Some(limit),
            used,
            total: Some(total),
            refusals: Some(refusals),
            event_id: HookId::at(now),
            event: HookKind::SeatsFull,
            app,
            session: None,
            user,
            privileges: None,
            reason: None,
            by: None,
            at: now,
        }
        .deliveries(&routes, now)
    }
}

/// The JSON body a hook receives.
#[derive(Serialize)]
struct Payload<'a> {
    event_id: HookId,
    event: HookKind,
    app: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    privileges: Option<&'a crate::session::Privileges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<CloseReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<Actor>,
    /// `seats_full`: which limit was met, `seats` or `user` (the user's slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    /// `seats_full`: seats taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    used: Option<u32>,
    /// `seats_full`: seats in all, or the user's slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u32>,
    /// `seats_full`: the refused opens it reports (at most one event every few seconds
    /// per app).
    #[serde(skip_serializing_if = "Option::is_none")]
    refusals: Option<u32>,
    at: Timestamp,
}

impl Payload<'_> {
    fn deliveries(&self, routes: &[Route], now: Timestamp) -> Vec<Delivery> {
        let wanting: Vec<&Route> = routes
            .iter()
            .filter(|r| r.kinds.contains(self.event))
            .collect();
        if wanting.is_empty() {
            return Vec::new();
        }
        let body: Box<str> = serde_json::to_string(self)
            .expect("plain data serialises")
            .into();
        let app: Arc<str> = Arc::from(self.app);
        wanting
            .into_iter()
            .map(|r| Delivery {
                id: HookId::at(now),
                event_id: self.event_id,
                hook: r.hook.clone(),
                app: app.clone(),
                kind: self.event,
                body: body.clone(),
                created_at: now,
                tries: 0,
                due: now,
                dead: false,
                error: None,
            })
            .collect()
    }
}

/// One event owed to one hook: the outbox's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// This delivery.
    pub id: HookId,
    /// The event (the same in every hook's delivery of it, and in every try).
    pub event_id: HookId,
    /// The hook it goes to.
    pub hook: Arc<str>,
    /// The app.
    pub app: Arc<str>,
    /// What happened.
    pub kind: HookKind,
    /// The JSON body sent, fixed when the event happened.
    pub body: Box<str>,
    /// When the event happened.
    pub created_at: Timestamp,
    /// Tries so far.
    #[serde(default)]
    pub tries: u32,
    /// When it is due to be sent (a claim moves it by the lease).
    pub due: Timestamp,
    /// Given up on after the hook's last try, kept for an operator.
    #[serde(default)]
    pub dead: bool,
    /// What went wrong with the last try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<str>>,
}

/// How a try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The receiver took it: the delivery is removed.
    Delivered,
    /// It failed; try again at `retry_at`, or give up (dead letter) when `None`.
    Failed {
        /// The next try, if any.
        retry_at: Option<Timestamp>,
        /// What went wrong (no secret in it).
        error: String,
    },
}

impl Delivery {
    /// Applies a try's outcome to a delivery claimed until `claimed_until`: `None` when
    /// the delivery is to be removed, else its new state. A failure reported by a node
    /// whose claim ran out (another node claimed it since) changes nothing.
    pub fn settled(&self, claimed_until: Timestamp, outcome: &Settle) -> Option<Delivery> {
        match outcome {
            Settle::Delivered => None,
            Settle::Failed { retry_at, error } => {
                let mut d = self.clone();
                if d.due != claimed_until || d.dead {
                    return Some(d);
                }
                d.tries = d.tries.saturating_add(1);
                d.error = Some(truncate(error, 500).into());
                match retry_at {
                    Some(at) => d.due = *at,
                    None => d.dead = true,
                }
                Some(d)
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Only this app's.
    pub app: Option<String>,
    /// Only dead letters (true) or only pending ones (false).
    pub dead: Option<bool>,
    /// At most this many (0: a default of 100), oldest first.
    pub limit: usize,
}

impl DeliveryQuery {
    /// Whether `d` is wanted.
    pub fn matches(&self, d: &Delivery) -> bool {
        self.app.as_deref().is_none_or(|a| *d.app == *a) && self.dead.is_none_or(|x| x == d.dead)
    }

    /// The page size.
    pub fn limit(&self) -> usize {
        if self.limit == 0 {
            100
        } else {
            self.limit.min(1000)
        }
    }
}

/// Pending and dead deliveries, for metrics and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Deliveries still to be sent.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// A store's outbox ([`crate::Store::outbox`]). Every method is atomic on its own.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// The routes the store derives deliveries with; the server sets them.
    fn routes(&self) -> &HookRoutes;
    /// Keeps deliveries that report no change (`seats_full`).
    async fn push(&self, deliveries: Vec<Delivery>) -> StoreResult<()>;
    /// Takes up to `limit` deliveries due at `now` (oldest due first, dead letters
    /// never), moving each one's due time to `until`: the lease during which no other
    /// claim takes it. Returns them with `due == until`.
    async fn claim(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records how the try of delivery `id` of `app`, claimed until `claimed_until`,
    /// ended ([`Delivery::settled`]).
    async fn settle(
        &self,
        app: &str,
        id: HookId,
        claimed_until: Timestamp,
        outcome: Settle,
    ) -> StoreResult<()>;
    /// Deliveries, oldest first.
    async fn deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<Delivery>>;
    /// Makes delivery `id` of `app` (dead or not) due at `now` with its tries reset;
    /// false if `app` holds no such delivery.
    async fn resend(&self, app: &str, id: HookId, now: Timestamp) -> StoreResult<bool>;
    /// How many are pending and dead.
    async fn tally(&self) -> StoreResult<OutboxCounts>;
    /// Removes up to `limit` dead letters of events older than `before`; returns how
    /// many it removed. Dead letters are kept for an operator, but not forever.
    async fn forget_dead(&self, before: Timestamp, limit: usize) -> StoreResult<usize>;
}

/// Deliveries in memory, by id (in id order, so in order of creation), by due time,
/// and the dead letters: the memory store's outbox, and what a store that keeps its
/// outbox in memory builds on.
#[derive(Debug, Default, Clone)]
pub struct Deliveries {
    by_id: BTreeMap<HookId, Delivery>,
    due: BTreeSet<(Timestamp, HookId)>,
    dead: BTreeSet<HookId>,
}

impl Deliveries {
    /// Adds or replaces a delivery.
    pub fn put(&mut self, d: Delivery) {
        self.unindex(d.id);
        if d.dead {
            self.dead.insert(d.id);
        } else {
            self.due.insert((d.due, d.id));
        }
        self.by_id.insert(d.id, d);
    }

    fn unindex(&mut self, id: HookId) {
        if let Some(old) = self.by_id.get(&id) {
            self.due.remove(&(old.due, old.id));
            self.dead.remove(&old.id);
        }
    }

    /// Removes a delivery.
    pub fn remove(&mut self, id: HookId) -> Option<Delivery> {
        self.unindex(id);
        self.by_id.remove(&id)
    }

    /// The delivery `id`.
    pub fn get(&self, id: HookId) -> Option<&Delivery> {
        self.by_id.get(&id)
    }

    /// The deliveries due at `now`, oldest due first, at most `limit`, each moved to
    /// `until` (returned as moved).
    pub fn claim(&mut self, now: Timestamp, until: Timestamp, limit: usize) -> Vec<Delivery> {
        let ids: Vec<HookId> = self
            .due
            .range(..=(now, HookId::from_u128(u128::MAX)))
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let mut d = self.by_id.get(&id)?.clone();
                d.due = until;
                self.put(d.clone());
                Some(d)
            })
            .collect()
    }

    /// Deliveries matching `q`, oldest first.
    pub fn list(&self, q: &DeliveryQuery) -> Vec<Delivery> {
        let take = |it: &mut dyn Iterator<Item = &Delivery>| -> Vec<Delivery> {
            it.filter(|d| q.matches(d))
                .take(q.limit())
                .cloned()
                .collect()
        };
        match q.dead {
            Some(true) => take(&mut self.dead.iter().filter_map(|id| self.by_id.get(id))),
            _ => take(&mut self.by_id.values()),
        }
    }

    /// Pending and dead counts.
    pub fn counts(&self) -> OutboxCounts {
        OutboxCounts {
            pending: self.due.len() as u64,
            dead: self.dead.len() as u64,
        }
    }

    /// The ids of up to `limit` dead letters of events older than `before`, oldest
    /// first (what [`Outbox::forget_dead`] removes).
    pub fn dead_before(&self, before: Timestamp, limit: usize) -> Vec<HookId> {
        self.dead
            .range(..HookId::first_at(before))
            .take(limit)
            .copied()
            .collect()
    }

    /// Every delivery, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.by_id.values()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A delivery made due again by an operator: tries reset, not dead.
pub fn resent(d: &Delivery, now: Timestamp) -> Delivery {
    Delivery {
        tries: 0,
        due: now,
        dead: false,
        ..d.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TokenHash;

    fn routes(kinds: HookKinds) -> HookRoutes {
        let r = HookRoutes::default();
        r.set([(
            "crm".to_string(),
            vec![
                Route {
                    hook: "a".into(),
                    kinds,
                },
                Route {
                    hook: "b".into(),
                    kinds: HookKinds::ALL,
                },
            ],
        )]);
        r
    }

    fn session() -> Session {
        let now = Timestamp(1_000);
        Session {
            id: SessionId::new(),
            token_hash: TokenHash::of("t"),
            app: "crm".into(),
            user: None,
            privileges: Default::default(),
            info: Default::default(),
            data: Default::default(),
            client: Default::default(),
            created_at: now,
            last_activity_at: now,
            last_heartbeat_at: now,
            idle_timeout_s: 60,
            lifetime_s: 3600,
            heartbeat: None,
            retention_s: 60,
            counts_seat: true,
            bind_ip: false,
            closed: None,
            version: 1,
        }
    }

    #[test]
    fn each_change_makes_its_event_for_the_hooks_that_want_it() {
        let r = routes(HookKinds::of([HookKind::Closed]));
        let open = session();
        let opened = r.derive(None, &open, Timestamp(1));
        assert_eq!(opened.len(), 1, "only hook b wants opens");
        assert_eq!((opened[0].kind, &*opened[0].hook), (HookKind::Opened, "b"));
        let mut signed_in = open.clone();
        signed_in.user = Some("ann".into());
        signed_in.token_hash = TokenHash::of("u");
        let changed = r.derive(Some(&open), &signed_in, Timestamp(2));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].kind, HookKind::PrivilegesChanged);
        let mut closed = signed_in.clone();
        closed.close(CloseReason::Killed, Actor::Admin, Timestamp(3));
        let ends = r.derive(Some(&signed_in), &closed, Timestamp(3));
        assert_eq!(ends.len(), 2, "both hooks want closes");
        assert_eq!(ends[0].event_id, ends[1].event_id, "one event, one id");
        assert_ne!(ends[0].id, ends[1].id, "two deliveries");
        let body: serde_json::Value = serde_json::from_str(&ends[0].body).unwrap();
        assert_eq!(body["event"], "closed");
        assert_eq!(body["reason"], "killed");
        assert_eq!(body["by"], "admin");
        assert_eq!(body["user"], "ann");
        assert_eq!(body["event_id"], ends[0].event_id.to_string());
        assert_eq!(body["session"], closed.id.to_string());
        // A touch, a closed session written again, another app: nothing.
        let mut touched = signed_in.clone();
        touched.last_activity_at = Timestamp(9);
        assert!(r
            .derive(Some(&signed_in), &touched, Timestamp(9))
            .is_empty());
        assert!(r.derive(Some(&closed), &closed, Timestamp(9)).is_empty());
        let mut other = open.clone();
        other.app = "shop".into();
        assert!(r.derive(None, &other, Timestamp(9)).is_empty());
        assert!(HookRoutes::default()
            .derive(None, &open, Timestamp(9))
            .is_empty());
    }

    #[test]
    fn a_failure_counts_only_on_the_claim_that_holds_the_delivery() {
        let r = routes(HookKinds::ALL);
        let mut out = Deliveries::default();
        let full = Refusal::SeatsExhausted { used: 3, total: 3 };
        for d in r.seats_full("crm", None, &full, 1, Timestamp(10)) {
            out.put(d);
        }
        assert_eq!(
            out.counts(),
            OutboxCounts {
                pending: 2,
                dead: 0
            }
        );
        assert!(
            out.claim(Timestamp(9), Timestamp(100), 10).is_empty(),
            "not due yet"
        );
        let claimed = out.claim(Timestamp(10), Timestamp(100), 1);
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            out.claim(Timestamp(10), Timestamp(100), 10).len(),
            1,
            "the other one"
        );
        assert!(
            out.claim(Timestamp(50), Timestamp(200), 10).is_empty(),
            "both leased"
        );
        let d = out.get(claimed[0].id).unwrap().clone();
        let fail = Settle::Failed {
            retry_at: Some(Timestamp(300)),
            error: "503".into(),
        };
        // A stale claim (another node's lease since) changes nothing.
        assert_eq!(d.settled(Timestamp(99), &fail).unwrap(), d);
        let retried = d.settled(Timestamp(100), &fail).unwrap();
        assert_eq!((retried.tries, retried.due), (1, Timestamp(300)));
        let dead = retried
            .settled(
                Timestamp(300),
                &Settle::Failed {
                    retry_at: None,
                    error: "x".repeat(2000),
                },
            )
            .unwrap();
        assert!(dead.dead && dead.error.as_ref().unwrap().len() == 500);
        out.put(dead.clone());
        assert_eq!(
            out.counts(),
            OutboxCounts {
                pending: 1,
                dead: 1
            }
        );
        assert!(
            out.claim(Timestamp(10_000), Timestamp(20_000), 10).len() == 1,
            "dead letters are never claimed"
        );
        out.put(resent(&dead, Timestamp(5)));
        assert_eq!(out.counts().dead, 0);
        assert!(d.settled(Timestamp(100), &Settle::Delivered).is_none());
    }
}
