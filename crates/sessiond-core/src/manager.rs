//! The [`Manager`]: the one place the session rules run. It validates input, builds
//! sessions and changes, asks the [`Store`] to apply them atomically, turns outcomes into
//! [`Error`]s and publishes [`Event`]s. It holds no session state of its own, so any
//! number of Managers (one per node) can share one store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::admission::{Admission, Refusal};
use crate::error::{quoted, Error, Result};
use crate::events::{Event, EventKind};
use crate::id::{SessionId, Token};
use crate::internal::InternalApp;
use crate::json::JsonObject;
use crate::limits::Limits;
use crate::policy::{Policy, TokenPrefix, DEFAULT_HEARTBEAT_GRACE_S, DEFAULT_HEARTBEAT_INTERVAL_S};
use crate::session::{
    Actor, Change, Client, CloseReason, Conditions, Heartbeat, Privileges, Session, Step,
};
use crate::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, Lookup, ModifyOutcome, OpenOutcome, Ordered,
    StatusFilter, Store, StoreError,
};
use crate::time::{Clock, SystemClock, Timestamp};

/// A heartbeat asked for at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds before the session counts as lost (the app's default when none).
    pub grace_s: Option<u32>,
}

/// What to open.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// The user, if signed in.
    pub user: Option<String>,
    /// Privileges.
    pub privileges: Vec<String>,
    /// Public facts about the holder.
    pub info: Option<JsonObject>,
    /// Initial storage.
    pub data: Option<JsonObject>,
    /// Where the client is.
    pub client: Client,
    /// Heartbeat for this session (else the app's default, if any).
    pub heartbeat: Option<HeartbeatRequest>,
    /// Idle timeout for this session (else the app's).
    pub idle_timeout_s: Option<u32>,
    /// An open session of the app to take over.
    pub take_over: Option<SessionId>,
}

/// A session just opened, with the only copy of its token.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The session.
    pub session: Session,
    /// Its secret token: hand it to the client, never store or log it.
    pub token: Token,
    /// Sessions closed to make room for it.
    pub displaced: Vec<Session>,
}

/// How to resolve a token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolve {
    /// Count the request as activity.
    pub touch: bool,
    /// The caller's address (checked for sessions bound to their IP).
    pub ip: Option<IpAddr>,
}

/// Seats of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    /// Seats taken.
    pub used: u64,
    /// Seats in all, none when unlimited.
    pub total: Option<u32>,
    /// Open sessions (including those that take no seat).
    pub open: u64,
}

/// What [`Manager::close_by_id`] did.
// Outcomes live for one call; boxing the session would cost an allocation per close.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ClosedById {
    /// The session was open and is now closed.
    Closed(Session),
    /// The session's stored record could not be read: it was removed with its index
    /// entries (and its seat freed). There is no session to show.
    Discarded,
}

/// An app the Manager knows: its policy, and whether the program registered it for
/// itself ([`InternalApp`]) rather than declared it.
#[derive(Clone)]
struct AppEntry {
    policy: Arc<Policy>,
    internal: bool,
}

/// Applies the session rules over a [`Store`].
pub struct Manager {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policies: RwLock<HashMap<String, AppEntry>>,
    limits: Limits,
    events: broadcast::Sender<Event>,
    /// This node's own events only, for the relay to send to other nodes.
    outbox: broadcast::Sender<Event>,
    /// Set by a downtime ([`Manager::mark_downtime`], or a store call that failed
    /// because the store was unavailable): clients could not beat meanwhile. Until the
    /// sweeper has renewed their heartbeats ([`Manager::renew_heartbeats`]), every
    /// change counts a missed heartbeat from its own time, so no request closes a
    /// session as `heartbeat_lost` for the downtime, and the sweep waits. Downtimes are
    /// counted; one is pending while the count passes the count the last renewal saw.
    downtimes: AtomicU64,
    renewed_upto: AtomicU64,
    /// Where the heartbeat clock last restarted (ms since the epoch; 0: never).
    heartbeat_floor: AtomicU64,
    /// Per app: when its last `seats_full` webhook event was kept, and the refusals
    /// since (a storm of refused opens makes one event every [`SEATS_FULL_EVERY_MS`],
    /// not one each).
    seats_full: std::sync::Mutex<HashMap<Arc<str>, (Timestamp, u32)>>,
}

/// The least time between two `seats_full` webhook events of one app, in ms.
pub const SEATS_FULL_EVERY_MS: u64 = 10_000;

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.store.kind())
            .finish()
    }
}

/// Whether `name` can name an app: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
pub fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl Manager {
    /// A Manager over `store` on the system clock, with default limits and no apps.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_clock(store, Arc::new(SystemClock))
    }

    /// A Manager reading time from `clock` (tests pass a [`crate::ManualClock`]).
    pub fn with_clock(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(4096);
        Manager {
            store,
            clock,
            policies: RwLock::new(HashMap::new()),
            limits: Limits::default(),
            events,
            outbox: broadcast::channel(4096).0,
            downtimes: AtomicU64::new(0),
            renewed_upto: AtomicU64::new(0),
            heartbeat_floor: AtomicU64::new(0),
            seats_full: Default::default(),
        }
    }

    /// Replaces the input limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The input limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current time on the Manager's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Adds or replaces an app's policy; takes effect for the next operation. The name
    /// must pass [`valid_app_name`], so it can never be an [`InternalApp`]'s.
    pub fn set_policy(&self, app: &str, policy: Policy) -> Result<()> {
        if !valid_app_name(app) {
            return Err(Error::BadInput(format!(
                "{app:?} is not a valid app name (1 to 64 letters, digits, '_', '-' or '.')"
            )));
        }
        self.register(app, policy, false)
    }

    /// Adds or replaces the policy of an app the program keeps for itself. Its
    /// sessions follow the policy like any app's, but the app is left out of
    /// [`Manager::apps`], and only [`Manager::open_internal`] opens sessions in it.
    pub fn set_internal_policy(&self, app: InternalApp, policy: Policy) -> Result<()> {
        self.register(app.name(), policy, true)
    }

    fn register(&self, app: &str, policy: Policy, internal: bool) -> Result<()> {
        policy
            .validate()
            .map_err(|e| Error::BadInput(e.to_string()))?;
        let mut map = self.policies.write().unwrap_or_else(|e| e.into_inner());
        map.insert(
            app.to_string(),
            AppEntry {
                policy: Arc::new(policy),
                internal,
            },
        );
        Ok(())
    }

    /// The policy of `app`, declared or internal.
    pub fn policy(&self, app: &str) -> Result<Arc<Policy>> {
        self.entry(app).map(|e| e.policy)
    }

    fn entry(&self, app: &str) -> Result<AppEntry> {
        let map = self.policies.read().unwrap_or_else(|e| e.into_inner());
        map.get(app)
            .cloned()
            .ok_or_else(|| Error::UnknownApp(app.to_string()))
    }

    /// The declared apps, sorted. Internal apps ([`Manager::set_internal_policy`]) are
    /// never listed: whatever shows or counts apps from this list leaves them out.
    pub fn apps(&self) -> Vec<String> {
        self.app_names(false)
    }

    /// Every app, declared and internal, sorted: for the engine's own sweeps.
    fn all_apps(&self) -> Vec<String> {
        self.app_names(true)
    }

    fn app_names(&self, with_internal: bool) -> Vec<String> {
        let map = self.policies.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, e)| with_internal || !e.internal)
            .map(|(name, _)| name.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether `app` is an internal app (a session's or an event's app, say): what
    /// shows apps to their operators leaves such an app out.
    pub fn is_internal(&self, app: &str) -> bool {
        let map = self.policies.read().unwrap_or_else(|e| e.into_inner());
        map.get(app).is_some_and(|e| e.internal)
    }

    /// Events from now on. A receiver that falls more than 4096 events behind loses
    /// the oldest and is told so by `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Keeps the `seats_full` deliveries a refused open owes the app's hooks. A refusal
    /// changes nothing to keep them with, so a store that fails here only costs those
    /// deliveries (logged), never the answer.
    async fn owe_refusal(&self, app: &str, user: Option<&str>, r: &Refusal, now: Timestamp) {
        let Some(outbox) = self.store.outbox() else {
            return;
        };
        if outbox.routes().of(app).is_none() {
            return;
        }
        let refusals = {
            let mut gate = self.seats_full.lock().unwrap_or_else(|e| e.into_inner());
            // Only configured apps get here: the map stays as small as the config.
            let e = gate.entry(Arc::from(app)).or_insert((Timestamp(0), 0));
            e.1 = e.1.saturating_add(1);
            if e.0 != Timestamp(0) && now.millis_since(e.0) < SEATS_FULL_EVERY_MS {
                return;
            }
            e.0 = now;
            std::mem::take(&mut e.1)
        };
        let owed = outbox.routes().seats_full(app, user, r, refusals, now);
        if owed.is_empty() {
            return;
        }
        if let Err(e) = outbox.push(owed).await {
            tracing::warn!(app, error = %e, "a seats_full webhook event could not be kept");
        }
    }

    fn publish(&self, kind: EventKind, s: &Session) {
        // No subscriber is not an error.
        let e = Event::of(kind, s, self.clock.now());
        if self.outbox.receiver_count() > 0 {
            let _ = self.outbox.send(e.clone());
        }
        let _ = self.events.send(e);
    }

    /// A user or privilege name: 1 to `max_name_len` bytes, no control characters, and no
    /// spaces at either end (proxies and apps trim header values, so `"admin "` would
    /// arrive as `admin`).
    fn check_name(&self, what: &str, v: &str) -> Result<()> {
        if v.is_empty()
            || v.len() > self.limits.max_name_len
            || v.chars().any(char::is_control)
            || v.trim() != v
        {
            return Err(Error::BadInput(format!(
                "{what} must be 1 to {} bytes with no control characters and no spaces at \
                 either end",
                self.limits.max_name_len
            )));
        }
        Ok(())
    }

    fn check_duration(&self, what: &str, v: u32, min: u32) -> Result<()> {
        if v < min || v > self.limits.max_duration_s {
            return Err(Error::BadInput(format!(
                "{what} must be between {min} and {} seconds",
                self.limits.max_duration_s
            )));
        }
        Ok(())
    }

    fn check_privileges(&self, privileges: &[String]) -> Result<Privileges> {
        if privileges.len() > self.limits.max_privileges {
            return Err(Error::BadInput(format!(
                "at most {} privileges per session",
                self.limits.max_privileges
            )));
        }
        for p in privileges {
            self.check_name("a privilege", p)?;
            // Privileges travel as one comma-separated header (forward-auth) or flag.
            if p.contains(',') {
                return Err(Error::BadInput(format!(
                    "a privilege cannot hold a comma: {}",
                    quoted(p)
                )));
            }
        }
        Ok(Privileges::new(privileges))
    }

    fn check_info(&self, info: &JsonObject) -> Result<()> {
        if info.byte_len() > self.limits.max_info_bytes {
            return Err(Error::BadInput(format!(
                "info takes {} bytes, over the limit of {}",
                info.byte_len(),
                self.limits.max_info_bytes
            )));
        }
        Ok(())
    }

    fn new_token(policy: &Policy, app: &str, ip: Option<IpAddr>) -> Token {
        if app.starts_with(crate::INTERNAL_APP_MARK) {
            return Token::generate_internal(app);
        }
        match &policy.prefix {
            TokenPrefix::AppName => Token::generate(app),
            TokenPrefix::ClientIp => {
                Token::generate(&ip.map_or_else(|| "unknown".to_string(), |i| i.to_string()))
            }
            TokenPrefix::Fixed(p) => Token::generate(p),
        }
    }

    /// Opens a session in `app`, admitting it atomically under the app's seat and user
    /// limits (and taking over `req.take_over` if named). An internal app answers
    /// [`Error::UnknownApp`], as an app that does not exist: only
    /// [`Manager::open_internal`] opens sessions there.
    pub async fn open(&self, app: &str, req: OpenRequest) -> Result<Opened> {
        let entry = self.entry(app)?;
        if entry.internal {
            return Err(Error::UnknownApp(app.to_string()));
        }
        self.open_with(app, &entry.policy, req).await
    }

    /// [`Manager::open`] in an internal app (registered with
    /// [`Manager::set_internal_policy`]).
    pub async fn open_internal(&self, app: InternalApp, req: OpenRequest) -> Result<Opened> {
        let entry = self.entry(app.name())?;
        self.open_with(app.name(), &entry.policy, req).await
    }

    async fn open_with(&self, app: &str, policy: &Policy, req: OpenRequest) -> Result<Opened> {
        if let Some(u) = &req.user {
            self.check_name("user", u)?;
        }
        if let Some(l) = &req.client.label {
            self.check_name("client label", l)?;
        }
        let privileges = self.check_privileges(&req.privileges)?;
        let info = req.info.unwrap_or_default();
        self.check_info(&info)?;
        let data = req.data.unwrap_or_default();
        if data.byte_len() > self.limits.max_data_bytes {
            return Err(Error::DataTooLarge {
                size: data.byte_len(),
                limit: self.limits.max_data_bytes,
            });
        }
        let idle_timeout_s = req.idle_timeout_s.unwrap_or(policy.idle_timeout_s);
        self.check_duration("idle_timeout_s", idle_timeout_s, 1)?;
        let heartbeat = match (req.heartbeat, policy.heartbeat) {
            (Some(h), default) => {
                let grace_s = h
                    .grace_s
                    .or(default.map(|d| d.grace_s))
                    .unwrap_or(DEFAULT_HEARTBEAT_GRACE_S);
                self.check_duration("heartbeat.interval_s", h.interval_s, 1)?;
                self.check_duration("heartbeat.grace_s", grace_s, 0)?;
                Some(Heartbeat {
                    interval_s: h.interval_s,
                    grace_s,
                    active: true,
                    // The lease is the app's: a client does not choose how long its
                    // seat is held for it.
                    lease_s: default.map_or(0, |d| d.lease_s),
                })
            }
            (None, Some(d)) => Some(Heartbeat {
                interval_s: d.interval_s,
                grace_s: d.grace_s,
                active: true,
                lease_s: d.lease_s,
            }),
            (None, None) => None,
        };
        let mut client = req.client;
        if let Some(ua) = &mut client.user_agent {
            if ua.len() > self.limits.max_user_agent_len {
                let mut cut = self.limits.max_user_agent_len;
                while !ua.is_char_boundary(cut) {
                    cut -= 1;
                }
                *ua = Box::from(&ua[..cut]);
            }
        }
        let now = self.clock.now();
        let token = Self::new_token(policy, app, client.ip);
        let counts_seat = policy.counts_seat(&privileges);
        let session = Session {
            id: SessionId::new(),
            token_hash: token.hash(),
            app: Arc::from(app),
            user: req.user.map(Box::from),
            privileges,
            info,
            data,
            client,
            created_at: now,
            last_activity_at: now,
            last_heartbeat_at: now,
            idle_timeout_s,
            lifetime_s: policy.absolute_lifetime_s,
            heartbeat,
            retention_s: policy.retention_s,
            counts_seat,
            bind_ip: policy.bind_ip,
            closed: None,
            version: 1,
        };
        let admission = Admission::from_policy(policy, req.take_over);
        let user = session.user.clone();
        let outcome = self
            .store
            .open(session, &admission, now)
            .await
            .map_err(|e| self.noted(e))?;
        match outcome {
            OpenOutcome::Opened { session, displaced } => {
                for d in &displaced {
                    self.publish(EventKind::Closed, d);
                }
                self.publish(EventKind::Opened, &session);
                Ok(Opened {
                    session,
                    token,
                    displaced,
                })
            }
            OpenOutcome::Refused(r) => {
                self.owe_refusal(app, user.as_deref(), &r, now).await;
                let mut err = Error::from(r);
                if let Error::SeatsExhausted { holders, .. } = &mut err {
                    *holders = self.seat_holders(app).await?;
                }
                Err(err)
            }
        }
    }

    /// The open sessions of `app` that take a seat (a page of them at most), for a
    /// `seats_exhausted` answer.
    async fn seat_holders(&self, app: &str) -> Result<Vec<Session>> {
        let q = ListQuery {
            app: Some(app.to_string()),
            status: StatusFilter::Open,
            limit: self.limits.max_page,
            ..Default::default()
        };
        Ok(self
            .store
            .list(&q)
            .await?
            .into_iter()
            .filter(|s| s.counts_seat)
            .collect())
    }

    /// Runs `change` on a session and maps the outcome.
    async fn modify(&self, lookup: Lookup, change: &Change, cond: Conditions) -> Result<Session> {
        self.modify_ordered(lookup, change, cond)
            .await?
            .finish()
            .await
    }

    /// Runs `change` on a session up to the point where the store has put it in its
    /// order ([`Store::modify_ordered`]); [`Applied::finish`] waits for it to be durable
    /// and maps the outcome.
    async fn modify_ordered(
        &self,
        lookup: Lookup,
        change: &Change,
        mut cond: Conditions,
    ) -> Result<Applied<'_>> {
        let now = self.clock.now();
        cond.heartbeat_floor = self.heartbeat_floor(now);
        let ordered = self
            .store
            .modify_ordered(lookup, change, &cond, now)
            .await
            .map_err(|e| self.noted(e))?;
        Ok(Applied {
            manager: self,
            lookup,
            ordered,
        })
    }

    /// The answer to a modify's outcome, its events published.
    fn modified(&self, lookup: Lookup, outcome: ModifyOutcome) -> Result<Session> {
        match outcome {
            ModifyOutcome::Done {
                session,
                step,
                displaced,
            } => {
                for d in &displaced {
                    self.publish(EventKind::Closed, d);
                }
                if let Step::Expired(_) = step {
                    self.publish(EventKind::Closed, &session);
                    if let Some(c) = session.closed {
                        return Err(Error::SessionClosed(c));
                    }
                }
                Ok(session)
            }
            ModifyOutcome::Refused(e) => Err(e.into()),
            ModifyOutcome::NotFound => Err(match lookup {
                Lookup::Id(id) => Error::NotFound(id),
                Lookup::Token(_) => Error::InvalidToken,
            }),
        }
    }

    /// The session a token belongs to; counts as activity when `opts.touch`.
    pub async fn resolve(&self, token: &Token, opts: Resolve) -> Result<Session> {
        self.resolve_in(None, token, opts).await
    }

    /// [`Manager::resolve`], only for a session of `app` when given: a token of another
    /// app's session answers [`Error::InvalidToken`] and that session is not touched
    /// (apps sharing a cookie name and a store never count each other's requests).
    pub async fn resolve_in(
        &self,
        app: Option<Arc<str>>,
        token: &Token,
        opts: Resolve,
    ) -> Result<Session> {
        let change = if opts.touch {
            Change::Touch
        } else {
            Change::Read
        };
        let cond = Conditions {
            expect_version: None,
            bound_ip: opts.ip,
            app,
            ..Default::default()
        };
        self.modify(Lookup::Token(token.hash()), &change, cond)
            .await
    }

    /// Records a heartbeat (never counts as activity).
    pub async fn heartbeat(&self, token: &Token, ip: Option<IpAddr>) -> Result<Session> {
        self.heartbeat_in(None, token, ip).await
    }

    /// [`Manager::heartbeat`], only for a session of `app` when given (another app's
    /// session answers [`Error::InvalidToken`] and is not beaten).
    pub async fn heartbeat_in(
        &self,
        app: Option<Arc<str>>,
        token: &Token,
        ip: Option<IpAddr>,
    ) -> Result<Session> {
        let cond = Conditions {
            expect_version: None,
            bound_ip: ip,
            app,
            ..Default::default()
        };
        self.modify(Lookup::Token(token.hash()), &Change::Heartbeat, cond)
            .await
    }

    /// Suspends, resumes or retunes a session's heartbeat.
    ///
    /// A change by token is the session's own: it is held to the app's heartbeat policy
    /// ([`Policy::check_own_heartbeat`]: `heartbeat.max_interval_s`,
    /// `heartbeat.allow_suspend`), refused with [`Error::BadInput`]. A change by id is
    /// an operator's (ids grant nothing to clients) and is not.
    pub async fn set_heartbeat(
        &self,
        lookup: Lookup,
        active: bool,
        interval_s: Option<u32>,
        grace_s: Option<u32>,
        ip: Option<IpAddr>,
    ) -> Result<Session> {
        if let Some(i) = interval_s {
            self.check_duration("interval_s", i, 1)?;
        }
        if let Some(g) = grace_s {
            self.check_duration("grace_s", g, 0)?;
        }
        if matches!(lookup, Lookup::Token(_))
            && (!active || interval_s.is_some() || grace_s.is_some())
        {
            let s = self.get_lookup(lookup).await?;
            // A closed session is refused as such by the change itself.
            if let (true, Ok(policy)) = (s.is_open(), self.policy(&s.app)) {
                policy
                    .check_own_heartbeat(active, interval_s, grace_s)
                    .map_err(Error::BadInput)?;
            }
        }
        let change = Change::SetHeartbeat {
            active,
            interval_s,
            grace_s,
            default_interval_s: DEFAULT_HEARTBEAT_INTERVAL_S,
            default_grace_s: DEFAULT_HEARTBEAT_GRACE_S,
        };
        let cond = Conditions {
            expect_version: None,
            bound_ip: ip,
            app: None,
            ..Default::default()
        };
        let s = self.modify(lookup, &change, cond).await?;
        self.publish(EventKind::HeartbeatChanged, &s);
        Ok(s)
    }

    /// Applies a JSON merge patch to a session's storage, optionally only if it is at
    /// `expect_version`. Counts as activity.
    pub async fn update_data(
        &self,
        lookup: Lookup,
        patch: Value,
        expect_version: Option<u64>,
        ip: Option<IpAddr>,
    ) -> Result<Session> {
        self.update_data_ordered(lookup, patch, expect_version, ip)
            .await?
            .finish()
            .await
    }

    /// [`Manager::update_data`] up to the point where the store has put the change in
    /// its order: every later change of the session sees it (and fails with it if it is
    /// not kept), but it is acknowledged only by [`Applied::finish`]. A caller that
    /// queues the writes of one session lets the next one in here, so the writes of a
    /// page's parallel requests share the store's durability wait (group commit)
    /// instead of waiting it out one after another.
    pub async fn update_data_ordered(
        &self,
        lookup: Lookup,
        patch: Value,
        expect_version: Option<u64>,
        ip: Option<IpAddr>,
    ) -> Result<Applied<'_>> {
        if !patch.is_object() {
            return Err(Error::BadInput("the patch must be a JSON object".into()));
        }
        let change = Change::PatchData {
            patch,
            max_bytes: self.limits.max_data_bytes,
        };
        let cond = Conditions {
            expect_version,
            bound_ip: ip,
            app: None,
            ..Default::default()
        };
        self.modify_ordered(lookup, &change, cond).await
    }

    /// Replaces a session's privileges (and optionally info and user). The session keeps
    /// its id and gets a new token; the old one stops working at once.
    ///
    /// Admitted in the store's atomic step, where it changes what admission counts
    /// ([`Admission::for_change`]): a session that would start taking a seat (it loses
    /// its last reserved privilege) needs a free seat whatever `on_full` says (a change
    /// never evicts anyone), else [`Error::SeatsExhausted`] with the holders; a session
    /// moving to a user at `max_per_user` is refused ([`Error::UserLimit`], `reject`) or
    /// closes that user's oldest sessions as `replaced` (`replace_oldest`, the Gambas
    /// `Unique` login). A refusal changes nothing, and N changes racing for the last
    /// seat or slot on any number of nodes admit exactly as many as are free.
    pub async fn set_privileges(
        &self,
        lookup: Lookup,
        privileges: Vec<String>,
        info: Option<JsonObject>,
        user: Option<String>,
    ) -> Result<(Session, Token)> {
        let privileges = self.check_privileges(&privileges)?;
        if let Some(i) = &info {
            self.check_info(i)?;
        }
        if let Some(u) = &user {
            self.check_name("user", u)?;
        }
        let current = self.get_lookup(lookup).await?;
        // An internal app's session gets no new token through here: its tokens are the
        // server's own (a console sign-in), never handed out by the API.
        if current.app.starts_with(crate::INTERNAL_APP_MARK) {
            return Err(Error::NotFound(current.id));
        }
        let policy = self.policy(&current.app)?;
        let counts_seat = policy.counts_seat(&privileges);
        let token = Self::new_token(&policy, &current.app, current.client.ip);
        let change = Change::SetPrivileges {
            counts_seat,
            privileges,
            info,
            user: user.map(Box::from),
            token_hash: token.hash(),
            admission: Admission::for_change(&policy),
        };
        let s = match self
            .modify(Lookup::Id(current.id), &change, Conditions::default())
            .await
        {
            Err(Error::SeatsExhausted { used, total, .. }) => {
                return Err(Error::SeatsExhausted {
                    used,
                    total,
                    holders: self.seat_holders(&current.app).await?,
                })
            }
            other => other?,
        };
        self.publish(EventKind::PrivilegesChanged, &s);
        Ok((s, token))
    }

    async fn get_lookup(&self, lookup: Lookup) -> Result<Session> {
        match self.store.get(lookup).await? {
            Some(s) => Ok(s),
            None => Err(match lookup {
                Lookup::Id(id) => Error::NotFound(id),
                Lookup::Token(_) => Error::InvalidToken,
            }),
        }
    }

    /// Closes a session for `reason`, recording `by`. A session whose stored record
    /// cannot be read is removed instead and answered [`Error::NotFound`] (nothing
    /// readable was there and nothing is now, which is what every later read of its id
    /// says); [`Manager::close_by_id`] tells that case apart.
    pub async fn close(&self, lookup: Lookup, reason: CloseReason, by: Actor) -> Result<Session> {
        let id = match lookup {
            Lookup::Id(id) => id,
            Lookup::Token(_) => self.get_lookup(lookup).await?.id,
        };
        match self.close_by_id(id, reason, by).await {
            Ok(ClosedById::Closed(s)) => Ok(s),
            Ok(ClosedById::Discarded) => Err(Error::NotFound(id)),
            Err(Error::NotFound(_)) if matches!(lookup, Lookup::Token(_)) => {
                Err(Error::InvalidToken)
            }
            Err(e) => Err(e),
        }
    }

    /// Closes the session `id` for `reason`, recording `by`, and says whether it closed
    /// a session or removed a record that could not be read
    /// ([`CloseOutcome::Discarded`], see "Unreadable records" in [`crate::store`]): the
    /// operator's way to get rid of such a record. No event is published for a removed
    /// record, since there is no session to describe.
    pub async fn close_by_id(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
    ) -> Result<ClosedById> {
        match self.store.close(id, reason, by, self.clock.now()).await? {
            CloseOutcome::Closed(s) => {
                self.publish(EventKind::Closed, &s);
                Ok(ClosedById::Closed(s))
            }
            CloseOutcome::AlreadyClosed(s) => {
                Err(Error::SessionClosed(s.closed.ok_or(Error::NotFound(id))?))
            }
            CloseOutcome::NotFound => Err(Error::NotFound(id)),
            CloseOutcome::Discarded => {
                tracing::warn!(session = %id, by = %by, "closing an unreadable session record removed it");
                Ok(ClosedById::Discarded)
            }
        }
    }

    /// "My sessions": the holder of `token` (its session resolved as for any request of
    /// its own: counted as activity, held to `bind_ip`) and [`Manager::others_of`] it.
    pub async fn my_other_sessions(
        &self,
        token: &Token,
        ip: Option<IpAddr>,
    ) -> Result<(Session, Vec<Session>)> {
        let me = self.resolve(token, Resolve { touch: true, ip }).await?;
        let others = self.others_of(&me).await?;
        Ok((me, others))
    }

    /// The other open sessions of `me`'s user in `me`'s app, oldest first; none for a
    /// guest (no user). At most [`Limits::max_page`] are listed.
    pub async fn others_of(&self, me: &Session) -> Result<Vec<Session>> {
        let Some(user) = me.user.as_deref() else {
            return Ok(Vec::new());
        };
        let mut others = self
            .list(ListQuery {
                app: Some(me.app.to_string()),
                status: StatusFilter::Open,
                user: Some(user.to_string()),
                after: None,
                newest_first: false,
                limit: self.limits.max_page,
            })
            .await?;
        others.retain(|s| s.id != me.id);
        Ok(others)
    }

    /// Closes `id`, one of the other sessions of the holder of `token`: see
    /// [`Manager::close_other_of`].
    pub async fn close_my_other(
        &self,
        token: &Token,
        ip: Option<IpAddr>,
        id: SessionId,
    ) -> Result<Session> {
        let me = self.resolve(token, Resolve { touch: true, ip }).await?;
        self.close_other_of(&me, id).await
    }

    /// Closes `id`, one of `me`'s other sessions (same app, same user), as `logout`,
    /// recording `me` as the actor. Any other id, `me`'s own included, is
    /// [`Error::NotFound`]: exactly what an unknown id gets.
    pub async fn close_other_of(&self, me: &Session, id: SessionId) -> Result<Session> {
        let mine =
            |s: &Session| s.id != me.id && s.app == me.app && s.user.is_some() && s.user == me.user;
        let target = self.get_visible(id, mine).await?;
        if let Some(c) = target.closed {
            return Err(Error::SessionClosed(c));
        }
        self.close(Lookup::Id(id), CloseReason::Logout, Actor::Session(me.id))
            .await
    }

    /// Closes every other open session of the holder of `token`: see
    /// [`Manager::close_others_of`].
    pub async fn close_my_others(&self, token: &Token, ip: Option<IpAddr>) -> Result<Vec<Session>> {
        let me = self.resolve(token, Resolve { touch: true, ip }).await?;
        self.close_others_of(&me).await
    }

    /// Closes every other open session of `me`'s user in `me`'s app, as `logout` by
    /// `me`: "disconnect everywhere but here", for the person. Sessions are closed one
    /// by one: one opened meanwhile may stay open.
    pub async fn close_others_of(&self, me: &Session) -> Result<Vec<Session>> {
        let mut closed = Vec::new();
        loop {
            let others = self.others_of(me).await?;
            let full_page = others.len() + 1 >= self.limits.max_page;
            let mut progressed = false;
            for s in others {
                match self
                    .close(Lookup::Id(s.id), CloseReason::Logout, Actor::Session(me.id))
                    .await
                {
                    Ok(c) => {
                        closed.push(c);
                        progressed = true;
                    }
                    // Closed meanwhile by someone else, or gone: nothing left to do.
                    Err(Error::SessionClosed(_) | Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if !full_page || !progressed {
                return Ok(closed);
            }
        }
    }

    /// Logs out: the holder of `token` closes its session as `logout`. With `bind_ip`, a
    /// request from another address gets [`Error::IpMismatch`] and the session stays
    /// open, as for every other request of the holder.
    pub async fn logout(&self, token: &Token, ip: Option<IpAddr>) -> Result<Session> {
        let s = self.get_lookup(Lookup::Token(token.hash())).await?;
        if let Some(c) = s.closed {
            return Err(Error::SessionClosed(c));
        }
        s.check_bound_ip(ip)?;
        match self
            .close(Lookup::Id(s.id), CloseReason::Logout, Actor::User)
            .await
        {
            Err(Error::NotFound(_)) => Err(Error::InvalidToken),
            other => other,
        }
    }

    /// Closes every open session of `app` except those in `except` ("disconnect
    /// everyone except me"); returns the sessions closed.
    pub async fn close_all(
        &self,
        app: &str,
        except: &[SessionId],
        by: Actor,
    ) -> Result<Vec<Session>> {
        self.close_many(app, except, None, CloseReason::ClosedAll, by)
            .await
    }

    /// "Logout everywhere": closes every open session of `user` in `app` except those
    /// in `except`, for `reason`, recording `by`; returns the sessions closed. One call
    /// to the store, which closes them as it closes an app's (see [`Store::close_all`]).
    pub async fn close_user(
        &self,
        app: &str,
        user: &str,
        except: &[SessionId],
        reason: CloseReason,
        by: Actor,
    ) -> Result<Vec<Session>> {
        self.check_name("user", user)?;
        self.close_many(app, except, Some(user), reason, by).await
    }

    async fn close_many(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
    ) -> Result<Vec<Session>> {
        self.policy(app)?;
        if except.len() > self.limits.max_except {
            return Err(Error::BadInput(format!(
                "at most {} ids in except",
                self.limits.max_except
            )));
        }
        let closed = self
            .store
            .close_all(app, except, user, reason, by, self.clock.now())
            .await?;
        for s in &closed {
            self.publish(EventKind::Closed, s);
        }
        Ok(closed)
    }

    /// The store's write hint for the session of `token` (see [`Store::write_hint`]):
    /// a possibly stale copy to compute a conditional write from, never a resolve.
    pub fn write_hint(&self, token: &Token) -> Option<Session> {
        self.store.write_hint(Lookup::Token(token.hash()))
    }

    /// A session by id, open or closed (until its retention ends). An open session whose
    /// timeout passed is closed first, so the answer is never stale.
    pub async fn get(&self, id: SessionId) -> Result<Session> {
        self.get_visible(id, |_| true).await
    }

    /// [`Manager::get`] for a caller that may see only some sessions: `visible` is asked
    /// about the stored record *before* anything is written, and a session it refuses is
    /// [`Error::NotFound`], untouched (a caller who may not see a session must not be
    /// able to close it as expired either, nor learn that it exists).
    pub async fn get_visible(
        &self,
        id: SessionId,
        visible: impl FnOnce(&Session) -> bool,
    ) -> Result<Session> {
        let s = self.get_lookup(Lookup::Id(id)).await?;
        if !visible(&s) {
            return Err(Error::NotFound(id));
        }
        if s.is_open() && s.due_reason(self.clock.now()).is_some() {
            return match self
                .modify(Lookup::Id(id), &Change::Read, Conditions::default())
                .await
            {
                Ok(s) => Ok(s),
                Err(Error::SessionClosed(_)) => self.get_lookup(Lookup::Id(id)).await,
                Err(e) => Err(e),
            };
        }
        Ok(s)
    }

    /// A page of sessions; the page size is capped by [`Limits::max_page`].
    pub async fn list(&self, mut query: ListQuery) -> Result<Vec<Session>> {
        if let Some(app) = &query.app {
            self.policy(app)?;
        }
        query.limit = query.limit.clamp(1, self.limits.max_page);
        Ok(self.store.list(&query).await?)
    }

    /// Seats used and total, and open sessions, of `app`.
    pub async fn seats(&self, app: &str) -> Result<Seats> {
        let policy = self.policy(app)?;
        let AppCounts { open, seats_used } = self.store.counts(app).await?;
        Ok(Seats {
            used: seats_used,
            total: policy.seats,
            open,
        })
    }

    /// Closes what timed out and purges what passed retention (at most `limit` each),
    /// publishing a `closed` event per session closed.
    pub async fn expire_due(&self, limit: usize) -> Result<Expired> {
        let out = self
            .store
            .expire_due(self.clock.now(), limit)
            .await
            .map_err(|e| self.noted(e))?;
        for s in &out.closed {
            self.publish(EventKind::Closed, s);
        }
        Ok(out)
    }

    /// Records a store outage (see [`Manager::renew_heartbeats`]) and passes the
    /// error on.
    fn noted(&self, e: StoreError) -> StoreError {
        if matches!(
            e,
            StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_)
        ) {
            self.mark_downtime();
        }
        e
    }

    /// Where a missed heartbeat counts from for a change made `now`: from `now` while a
    /// downtime's renewal is pending, from the last renewal after it.
    fn heartbeat_floor(&self, now: Timestamp) -> Option<Timestamp> {
        if self.downtime_pending() {
            return Some(now);
        }
        match self.heartbeat_floor.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Timestamp(ms)),
        }
    }

    /// Says the service was down until now (a start after a stop, an upgrade): clients
    /// could not beat. Until [`Manager::run_expiry`] has renewed their heartbeats, no
    /// change closes a session as `heartbeat_lost` for the downtime. The server calls it
    /// at start; a store reporting itself unavailable has the same effect.
    pub fn mark_downtime(&self) {
        self.downtimes.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a downtime's heartbeats still await [`Manager::renew_heartbeats`].
    pub fn downtime_pending(&self) -> bool {
        self.downtimes.load(Ordering::Acquire) > self.renewed_upto.load(Ordering::Acquire)
    }

    /// Gives every open session whose client missed a heartbeat (its last beat is more
    /// than an interval old) a fresh heartbeat window from now: the server was down or
    /// its store unreachable, so the client could not beat, and a downtime is not a
    /// lost heartbeat. Idle and absolute timeouts are unchanged, and a session due for
    /// one of them is closed for it. [`Manager::run_expiry`] runs it after a downtime
    /// ([`Manager::mark_downtime`]) before it sweeps again. One store write per such
    /// session, 64 at a time; returns how many were renewed.
    pub async fn renew_heartbeats(self: &Arc<Self>) -> Result<usize> {
        let started = self.clock.now();
        let downtimes = self.downtimes.load(Ordering::Acquire);
        let mut renewed = 0;
        for app in self.all_apps() {
            let mut after = None;
            loop {
                let q = ListQuery {
                    app: Some(app.clone()),
                    status: StatusFilter::Open,
                    after,
                    limit: self.limits.max_page,
                    ..Default::default()
                };
                let page = self.store.list(&q).await.map_err(|e| self.noted(e))?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                // An in-memory store answers without ever making this task wait: let the
                // other tasks of this thread run between pages (a shutdown signal among
                // them), however many sessions there are.
                tokio::task::yield_now().await;
                let now = self.clock.now();
                let missed = page.iter().filter(|s| {
                    s.heartbeat.is_some_and(|h| {
                        h.active
                            && now.millis_since(s.last_heartbeat_at)
                                > u64::from(h.interval_s) * 1000
                    })
                });
                let mut writes = tokio::task::JoinSet::new();
                for s in missed {
                    if writes.len() >= 64 {
                        renewed += self.renewed(writes.join_next().await)?;
                    }
                    let (me, id) = (self.clone(), s.id);
                    writes.spawn(async move {
                        me.store
                            .modify(
                                Lookup::Id(id),
                                &Change::RenewHeartbeat,
                                &Conditions::default(),
                                now,
                            )
                            .await
                    });
                }
                while let Some(done) = writes.join_next().await {
                    renewed += self.renewed(Some(done))?;
                }
                if page.len() < q.limit {
                    break;
                }
            }
        }
        self.heartbeat_floor.store(started.0, Ordering::Release);
        // A downtime noted while this ran stays pending for the next renewal.
        self.renewed_upto.fetch_max(downtimes, Ordering::AcqRel);
        Ok(renewed)
    }

    /// Counts one renewal write's outcome (publishing a close it made).
    fn renewed(
        &self,
        done: Option<
            std::result::Result<crate::store::StoreResult<ModifyOutcome>, tokio::task::JoinError>,
        >,
    ) -> Result<usize> {
        let outcome = match done {
            None => return Ok(0),
            Some(Ok(r)) => r.map_err(|e| self.noted(e))?,
            Some(Err(e)) => {
                return Err(Error::BadInput(format!("a heartbeat renewal failed: {e}")))
            }
        };
        Ok(match outcome {
            ModifyOutcome::Done {
                step: Step::Changed,
                ..
            } => 1,
            ModifyOutcome::Done {
                session,
                step: Step::Expired(_),
                ..
            } => {
                self.publish(EventKind::Closed, &session);
                0
            }
            _ => 0,
        })
    }

    /// Relays events between this node and the others sharing the store, when the store
    /// has an [`crate::events::EventBus`]: this node's events go out, other nodes' come
    /// into [`Manager::subscribe`]. Returns the relay's task (none without a bus).
    /// Needs a Tokio runtime.
    pub fn start_relay(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let bus = self.store.event_bus()?;
        let origin = {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
            u64::from_le_bytes(b)
        };
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut local = me.outbox.subscribe();
            loop {
                let mut remote = match bus.subscribe().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "event bus unavailable, retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                loop {
                    tokio::select! {
                        ev = local.recv() => match ev {
                            Ok(event) => {
                                let msg = crate::events::BusMessage { origin, event };
                                if let Ok(text) = serde_json::to_string(&msg) {
                                    if let Err(e) = bus.publish(text).await {
                                        tracing::warn!(error = %e, "event not relayed to other nodes");
                                    }
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        msg = remote.recv() => match msg {
                            Some(text) => {
                                let Ok(msg) = serde_json::from_str::<crate::events::BusMessage>(&text) else { continue };
                                if msg.origin == origin {
                                    continue;
                                }
                                let _ = me.events.send(msg.event);
                            }
                            None => break,
                        },
                    }
                }
            }
        }))
    }

    /// Runs [`Manager::expire_due`] every `every` until the returned future is dropped.
    /// A store error is logged (`warn`) and retried at the next tick.
    pub async fn run_expiry(self: Arc<Self>, every: Duration) {
        const BATCH: usize = 10_000;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.downtime_pending() {
                // A downtime: renew the heartbeats clients could not send before any
                // sweep may close them.
                match self.renew_heartbeats().await {
                    Ok(renewed) => {
                        tracing::info!(
                            renewed,
                            "after a downtime, sessions that missed a heartbeat got a fresh window"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeats not renewed yet; retrying at the next tick");
                        continue;
                    }
                }
            }
            // Drain a large backlog in batches without starving other tasks.
            loop {
                match self.expire_due(BATCH).await {
                    Ok(out) if out.closed.len() < BATCH && out.purged < BATCH => break,
                    Ok(_) => tokio::task::yield_now().await,
                    Err(e) => {
                        tracing::warn!(error = %e, store = self.store.kind(), "expiry sweep failed; retrying at the next tick");
                        break;
                    }
                }
            }
        }
    }
}

/// A change of [`Manager::update_data_ordered`] that the store has put in its order:
/// [`Applied::finish`] gives the answer once it is durable.
#[must_use = "a change is acknowledged only by `Applied::finish`"]
#[derive(Debug)]
pub struct Applied<'a> {
    manager: &'a Manager,
    lookup: Lookup,
    ordered: Ordered<ModifyOutcome>,
}

impl Applied<'_> {
    /// Whether [`Applied::finish`] answers without waiting (the store's writes are
    /// durable when made, or this one was refused or needed no durability).
    pub fn is_done(&self) -> bool {
        self.ordered.is_done()
    }

    /// Waits until the change is durable and answers as [`Manager::update_data`] does.
    pub async fn finish(self) -> Result<Session> {
        let manager = self.manager;
        let outcome = self.ordered.durable().await.map_err(|e| manager.noted(e))?;
        manager.modified(self.lookup, outcome)
    }
}
