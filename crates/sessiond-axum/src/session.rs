//! [`Session`]: the web session of one request, as handlers see it (the axum extractor).
//!
//! It starts as a handle on the request's cookie and nothing else: the store is asked
//! for the session the first time a handler looks at it (then once per request, and the
//! look counts as activity, coalesced by the core), and a guest session is written only
//! when something is stored in it. Every storage change is a JSON merge patch applied by
//! the Manager; read-modify-write is conditional on the session's version and retried,
//! so concurrent requests never lose each other's changes. Which cookie the response
//! carries (new token, removal, nothing) is decided here and written by the layer.
//! Privileges, logout and the heartbeat switch are in `privileges.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use sessiond_core::{
    Client, Error, JsonObject, Lookup, OpenRequest, Resolve, Session as Record, SessionId, Token,
};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::Config;
use crate::error::{Failure, SessionError};
use crate::grant::Grant;
use crate::locks::{self, unknown, Joined};
use crate::patch;

/// Attempts of a conditional update before giving up with [`SessionError::Contention`].
/// Only writers on other nodes (or the heartbeat endpoint) can make one fail: the writes
/// of one session in this process go through its write line (`locks.rs`) first.
const MAX_ATTEMPTS: u32 = 64;

/// The web session of the current request: an axum extractor (needs a
/// [`crate::SessionLayer`] on the route) and a cheap handle that can be cloned.
///
/// Every method is async because the first one to run loads the session from the store;
/// a request that never calls one costs the store nothing.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("app", &self.inner.config.app)
            .field("has_cookie", &self.inner.incoming.is_some())
            .finish_non_exhaustive()
    }
}

/// What the response must do with the cookie.
#[derive(Default)]
pub(crate) enum CookieAction {
    /// Nothing.
    #[default]
    Keep,
    /// Hand this token to the browser.
    Set(Token),
    /// Remove the cookie.
    Remove,
}

#[derive(Default)]
pub(crate) struct State {
    /// Whether the incoming cookie has been resolved.
    pub(crate) loaded: bool,
    /// The session as last seen, when there is a stored, open one.
    pub(crate) record: Option<Record>,
    pub(crate) cookie: CookieAction,
    /// A failure the whole request must answer with (fail closed).
    fatal: Option<Failure>,
    /// The layer has taken the cookie decision and the response is on its way: from
    /// now on nothing may need a new cookie.
    pub(crate) answered: bool,
}

pub(crate) struct Handle {
    pub(crate) config: Arc<Config>,
    pub(crate) incoming: Option<Token>,
    pub(crate) ip: Option<IpAddr>,
    user_agent: Option<Box<str>>,
    pub(crate) state: AsyncMutex<State>,
}

/// What a storage change wants: the patch to apply, whether it was computed from the
/// current value (then it is applied only at that version), and the answer.
struct Plan<R> {
    patch: Map<String, Value>,
    exact: bool,
    out: R,
}

impl Session {
    pub(crate) fn new(
        config: Arc<Config>,
        incoming: Option<Token>,
        ip: Option<IpAddr>,
        user_agent: Option<Box<str>>,
    ) -> Self {
        Session {
            inner: Arc::new(Handle {
                config,
                incoming,
                ip,
                user_agent,
                state: AsyncMutex::new(State::default()),
            }),
        }
    }

    /// The session's public id, if it is stored (none for a guest nothing was stored
    /// for yet).
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        Ok(self.record().await?.map(|r| r.id))
    }

    /// The whole session as the engine sees it (user, privileges, info, storage, times),
    /// if it is stored.
    pub async fn record(&self) -> Result<Option<Record>, SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        Ok(st.record.clone())
    }

    /// The value stored under `key`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let Some(rec) = self.record().await? else {
            return Ok(None);
        };
        match rec.data.get(key) {
            None => Ok(None),
            Some(v) => decode(key, v).map(Some),
        }
    }

    /// The keys of the session storage, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let Some(rec) = self.record().await? else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<String> = rec.data.to_map().into_iter().map(|(k, _)| k).collect();
        keys.sort();
        Ok(keys)
    }

    /// Stores `value` under `key`, replacing what was there; creates the session (and
    /// sets its cookie) if this guest had none. A value that serialises to `null`
    /// removes the key, as in Gambas.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let new = encode(key, &value)?;
        let key = key.to_string();
        self.write(move |data| {
            let mut patch = Map::new();
            if new.is_object() {
                // Replacing an object needs a patch computed from the current one.
                let old = data.get(&key).cloned().unwrap_or(Value::Null);
                if let Some(p) = patch::diff(&old, &new) {
                    patch.insert(key.clone(), p);
                }
                return Ok(Plan {
                    patch,
                    exact: true,
                    out: (),
                });
            }
            patch.insert(key.clone(), new.clone());
            Ok(Plan {
                patch,
                exact: false,
                out: (),
            })
        })
        .await
    }

    /// Removes `key`, answering the value it held.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.write(|data| {
            let Some(old) = data.get(key) else {
                return Ok(Plan {
                    patch: Map::new(),
                    exact: true,
                    out: None,
                });
            };
            let out = decode(key, old.clone())?;
            let mut patch = Map::new();
            patch.insert(key.to_string(), Value::Null);
            Ok(Plan {
                patch,
                exact: true,
                out: Some(out),
            })
        })
        .await
    }

    /// Atomically replaces the value under `key` with `f(current)` and answers the new
    /// value: concurrent updates of the same session, on this node or others, never
    /// lose one another (4D's `Use (Session.storage)`). `f` may run more than once.
    ///
    /// ```
    /// # async fn handler(session: sessiond_axum::Session) -> Result<(), sessiond_axum::SessionError> {
    /// let n = session.update("n", |n: Option<i64>| n.unwrap_or(0) + 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        self.write(|data| {
            let cur = match data.get(key) {
                Some(v) => Some(decode::<T>(key, v.clone())?),
                None => None,
            };
            let next = f(cur);
            let new = encode(key, &next)?;
            let old = data.get(key).cloned().unwrap_or(Value::Null);
            let mut patch = Map::new();
            if let Some(p) = patch::diff(&old, &new) {
                patch.insert(key.to_string(), p);
            }
            Ok(Plan {
                patch,
                exact: true,
                out: next,
            })
        })
        .await
    }

    /// Atomically edits the whole storage: `f` gets a copy to change (and may run more
    /// than once); what it changed is applied as one patch at the version it saw.
    pub async fn update_all<R, F>(&self, mut f: F) -> Result<R, SessionError>
    where
        F: FnMut(&mut Map<String, Value>) -> R,
    {
        self.write(|data| {
            let mut copy = data.clone();
            let out = f(&mut copy);
            Ok(Plan {
                patch: patch::diff_maps(data, &copy),
                exact: true,
                out,
            })
        })
        .await
    }

    /// Resolves the incoming cookie once. An unknown or closed token, or one of another
    /// app, leaves a fresh guest; a store failure or a wrong address fails the request.
    pub(crate) async fn load(&self, st: &mut State) -> Result<(), SessionError> {
        if st.loaded {
            return Ok(());
        }
        let cfg = &self.inner.config;
        if let Some(token) = &self.inner.incoming {
            let opts = Resolve {
                touch: true,
                ip: self.inner.ip,
            };
            // Only this app's session: another app's (same cookie name, same store) is
            // neither touched nor used.
            match cfg
                .manager
                .resolve_in(Some(cfg.app.clone()), token, opts)
                .await
            {
                Ok(s) => st.record = Some(s),
                Err(Error::InvalidToken | Error::SessionClosed(_)) => {}
                Err(e) => return Err(self.fail(st, e)),
            }
        }
        st.loaded = true;
        Ok(())
    }

    /// Opens a new session holding `data` (and `grant`), to be handed out by cookie;
    /// refused ([`SessionError::Rotated`]) when this request's cookie was just replaced.
    pub(crate) async fn create(
        &self,
        st: &mut State,
        data: Map<String, Value>,
        grant: Option<Grant>,
    ) -> Result<Record, SessionError> {
        if let Some(old) = &self.inner.incoming {
            if self.inner.config.rotated.contains(old.hash()) {
                // Its cookie would replace the one the rotation just handed out.
                return Err(SessionError::Rotated);
            }
        }
        self.open_new(st, data, grant.unwrap_or_default()).await
    }

    /// Opens the new, empty session of a sign-in that replaced this request's cookie
    /// itself (marked replaced before the old session closed).
    pub(crate) async fn create_fresh(
        &self,
        st: &mut State,
        grant: Grant,
    ) -> Result<Record, SessionError> {
        self.open_new(st, Map::new(), grant).await
    }

    async fn open_new(
        &self,
        st: &mut State,
        data: Map<String, Value>,
        grant: Grant,
    ) -> Result<Record, SessionError> {
        if st.answered {
            return Err(SessionError::Answered);
        }
        let req = OpenRequest {
            user: grant.user,
            privileges: grant.privileges,
            info: grant
                .info
                .as_ref()
                .map(JsonObject::from_map)
                .transpose()
                .map_err(sessiond_core::Error::from)?,
            data: Some(JsonObject::from_map(&data).map_err(sessiond_core::Error::from)?),
            client: Client {
                label: None,
                ip: self.inner.ip,
                user_agent: self.inner.user_agent.clone(),
            },
            ..Default::default()
        };
        match self
            .inner
            .config
            .manager
            .open(&self.inner.config.app, req)
            .await
        {
            Ok(opened) => {
                st.record = Some(opened.session.clone());
                st.cookie = CookieAction::Set(opened.token);
                Ok(opened.session)
            }
            Err(e) => Err(self.fail(st, e)),
        }
    }

    /// Runs a storage change: computes it from the current storage with `plan`, applies
    /// it (at that version when the plan says so), and on a version conflict re-reads
    /// and tries again. A guest gets a new session holding the change.
    async fn write<R>(
        &self,
        mut plan: impl FnMut(&Map<String, Value>) -> Result<Plan<R>, SessionError>,
    ) -> Result<R, SessionError> {
        let mut st = self.inner.state.lock().await;
        if !st.loaded {
            if let Some(out) = self.write_from_hint(&mut st, &mut plan).await {
                return out;
            }
        }
        self.load(&mut st).await?;
        let cfg = &self.inner.config;
        if let Some(mut cur) = st.record.clone() {
            let ip = self.inner.ip;
            let mut alone = false;
            // A write planned on `cur` was refused: read again before planning.
            let mut reread = false;
            let mut line = None;
            // Counts the writes the store refused as stale, or that must be planned again.
            let mut attempt = 0;
            // Every turn, reads and lone retries included, so nothing loops for ever.
            let mut turns = 0;
            loop {
                turns += 1;
                if turns > 4 * MAX_ATTEMPTS {
                    return Err(SessionError::Contention);
                }
                let joined = cfg
                    .locks
                    .join(&cfg.manager, &cur, ip, alone, reread, line.take(), |data| {
                        plan(data).map(|p| (p.out, p.patch, p.exact))
                    })
                    .await?;
                match joined {
                    Joined::Nothing(out, s) => {
                        st.record = Some(s);
                        return Ok(out);
                    }
                    // Read while keeping this write's place in line.
                    Joined::ReadFirst(held) => match self.read_again(&mut st, cur.id).await? {
                        Some(s) => {
                            cur = s;
                            reread = false;
                            line = held;
                            continue;
                        }
                        None => break,
                    },
                    Joined::Direct(out, direct) => {
                        let lookup = Lookup::Id(direct.base.id);
                        let expect = direct.exact.then_some(direct.base.version);
                        let res = direct.send(&cfg.manager, lookup, expect, ip).await;
                        match res {
                            Ok(s) => {
                                st.record = Some(s);
                                return Ok(out);
                            }
                            // Stale: read again and retry.
                            Err(Error::VersionMismatch { .. }) => {}
                            // Closed while this request ran: what is stored now goes to a
                            // fresh guest, as for a closed cookie.
                            Err(Error::SessionClosed(_) | Error::NotFound(_)) => break,
                            Err(e) => return Err(self.fail(&mut st, e)),
                        }
                    }
                    Joined::Member(out, member) => match member.outcome().await {
                        locks::Outcome::Written { record, .. } => {
                            st.record = Some(record);
                            return Ok(out);
                        }
                        // Its batch lost a race (another node wrote): after two, this
                        // write goes alone, in line, as a lone writer retries.
                        locks::Outcome::Replan => alone = attempt >= 1,
                        // Refused or failed without writing: this write learns why alone.
                        locks::Outcome::Alone => {
                            alone = true;
                            continue;
                        }
                        locks::Outcome::Unknown(why) => {
                            return Err(self.fail(&mut st, unknown(&why)))
                        }
                    },
                }
                // A write refused as stale, or a batch to plan again: plan next on a
                // state the line confirmed newer than `cur`, or on the store read again,
                // in line when this write goes alone (a read made before the wait would
                // be old by the time of the write: the line's state of the session may
                // have gone with its last writer meanwhile).
                attempt += 1;
                if attempt == MAX_ATTEMPTS {
                    return Err(SessionError::Contention);
                }
                reread = true;
                backoff(attempt - 1).await;
            }
        }
        self.write_anew(&mut st, &mut plan).await
    }

    /// The session as the store holds it now, given to the write line too; `None` when
    /// it is closed or gone (what is stored then goes to a fresh guest).
    async fn read_again(
        &self,
        st: &mut State,
        id: SessionId,
    ) -> Result<Option<Record>, SessionError> {
        let cfg = &self.inner.config;
        match cfg.manager.get(id).await {
            Ok(s) if s.is_open() => {
                cfg.locks.offer(&s);
                Ok(Some(s))
            }
            Ok(_) | Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(self.fail(st, e)),
        }
    }

    /// The write of a request with no open session: a new session holding the change,
    /// unless the change stores nothing.
    async fn write_anew<R>(
        &self,
        st: &mut State,
        plan: &mut impl FnMut(&Map<String, Value>) -> Result<Plan<R>, SessionError>,
    ) -> Result<R, SessionError> {
        st.record = None;
        let p = plan(&Map::new())?;
        let mut data = Map::new();
        patch::apply(&mut data, &p.patch);
        // Only removals (of nothing): still nothing stored, so still no session.
        if data.is_empty() {
            return Ok(p.out);
        }
        self.create(st, data, None).await?;
        Ok(p.out)
    }

    /// A first write made from the store's copy of the session
    /// ([`sessiond_core::Manager::write_hint`], kept by stores whose reads cost a round
    /// trip), before the cookie is resolved: the write is conditional on that copy's
    /// version, so it lands only if the copy was current, and it saves the resolve's
    /// read. No copy, another app, nothing to change or a refusal that wrote nothing (a
    /// stale version, a closed session) answer `None`, and the write takes the usual
    /// path, which resolves the cookie and decides again; a failure that may have written
    /// is the request's answer, never retried.
    async fn write_from_hint<R>(
        &self,
        st: &mut State,
        plan: &mut impl FnMut(&Map<String, Value>) -> Result<Plan<R>, SessionError>,
    ) -> Option<Result<R, SessionError>> {
        let cfg = &self.inner.config;
        let token = self.inner.incoming.as_ref()?;
        let hint = cfg.manager.write_hint(token)?;
        if *hint.app != *cfg.app || !hint.is_open() {
            return None;
        }
        // Only when no other write of the session is under way here: those go in line.
        let (out, direct) = cfg
            .locks
            .try_direct(&cfg.manager, &hint, self.inner.ip, |d| {
                plan(d).map(|p| (p.out, p.patch, p.exact))
            })?;
        // By token, so a token revoked since the hint was kept writes nothing; at the
        // version planned on, always.
        let expect = Some(direct.base.version);
        let lookup = Lookup::Token(token.hash());
        let res = direct
            .send(&cfg.manager, lookup, expect, self.inner.ip)
            .await;
        match res {
            Ok(s) => {
                st.record = Some(s);
                st.loaded = true;
                Some(Ok(out))
            }
            // Refusals the store decided without writing: the usual path decides again.
            Err(e) if !e.may_have_applied() => None,
            // A store failure, or a write whose answer was lost: it may have been made,
            // and planning it again from a fresh read would apply it twice (a counter
            // counted twice). The request fails closed, as the usual path would.
            Err(e) => Some(Err(self.fail(st, e))),
        }
    }

    pub(crate) fn fail(&self, st: &mut State, e: Error) -> SessionError {
        let e = SessionError::from(e);
        if e.is_fatal() && st.fatal.is_none() {
            st.fatal = Some(e.to_failure());
        }
        e
    }

    /// Eager mode: makes sure a stored session exists before the handler runs.
    pub(crate) async fn ensure_stored(&self) -> Result<(), SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        if st.record.is_none() {
            self.create(&mut st, Map::new(), None).await?;
        }
        Ok(())
    }

    /// What the response must carry: a failure to answer with instead, or a cookie.
    pub(crate) async fn outcome(&self) -> Outcome {
        let mut st = self.inner.state.lock().await;
        st.answered = true;
        let mut cookie = std::mem::take(&mut st.cookie);
        // A cookie with a Max-Age rolls: a request that used the stored session sends
        // it again, so it lasts as long as the user is active.
        if let (CookieAction::Keep, Some(_), Some(_), Some(token)) = (
            &cookie,
            self.inner.config.cookie.max_age,
            &st.record,
            &self.inner.incoming,
        ) {
            cookie = CookieAction::Set(token.clone());
        }
        Outcome {
            failure: st.fatal.take(),
            cookie,
            signed_in: st.record.is_some() || self.inner.incoming.is_some(),
        }
    }

    /// The client's address as the layer worked it out (the TCP peer, or past trusted
    /// proxies the nearest untrusted `X-Forwarded-For` hop from the right): the one to
    /// throttle sign-ins by ([`crate::PasswordCheck`]). None when the server was not
    /// started with `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.inner.ip
    }
}

/// What the layer does with the response, as the session decided.
pub(crate) struct Outcome {
    /// A failure the whole request answers with instead (fail closed).
    pub failure: Option<Failure>,
    pub cookie: CookieAction,
    /// The request came with a session cookie or ends with a stored session.
    pub signed_in: bool,
}

/// Waits a little before retrying a conflicting update, with jitter so that competing
/// nodes spread out.
async fn backoff(attempt: u32) {
    if attempt < 2 {
        tokio::task::yield_now().await;
        return;
    }
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let cap_us = 200u64 << attempt.min(6);
    let us = u64::from(u16::from_le_bytes(b)) % cap_us;
    tokio::time::sleep(Duration::from_micros(us)).await;
}

fn decode<T: DeserializeOwned>(key: &str, v: Value) -> Result<T, SessionError> {
    serde_json::from_value(v).map_err(|source| SessionError::Decode {
        key: key.to_string(),
        source,
    })
}

fn encode<T: Serialize>(key: &str, v: &T) -> Result<Value, SessionError> {
    serde_json::to_value(v).map_err(|source| SessionError::Encode {
        key: key.to_string(),
        source,
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingLayer)
    }
}
