//! Privileges and the session's end, as handlers see them: [`Session::set_privileges`]
//! (login: a new token, so a new cookie), [`Session::has_privilege`],
//! [`Session::is_guest`], [`Session::abandon`] (logout) and [`Session::set_heartbeat`]
//! (WEBDEV's `SessionHeartBeatEnable` from server code). Split from `session.rs`, which
//! owns loading and storage.

use std::time::Duration;

use serde_json::Map;
use sessiond_core::{Actor, CloseReason, Error, JsonObject, Lookup, Session as Record, SessionId};

use crate::error::SessionError;
use crate::grant::Grant;
use crate::session::{CookieAction, Session, State};

impl Session {
    /// Gives the session new privileges (and optionally a user and info): the token
    /// changes and the response carries the new cookie, so a token fixed before login
    /// is worthless after it. The id stays. Requests already running with the old
    /// cookie finish normally (they address the session by id once loaded); one that
    /// arrives with it afterwards (sent before the browser had the new cookie) reads as
    /// a guest and cannot create a session ([`SessionError::Rotated`], 409), so its
    /// answer never replaces the new cookie. A guest with nothing stored becomes a
    /// stored session here.
    ///
    /// **Another user starts clean.** When `grant.user` names someone else than the
    /// session's user (a guest's none included), the session is closed as
    /// `user_changed` and the user gets a new one, with an empty storage and a new id:
    /// Bruno signing in where Ann never logged out does not see Ann's data, and a
    /// session an attacker prepared (login CSRF) hands nothing over. The same user
    /// signing in again (or a grant without a user) keeps the session and its storage.
    /// An app that carries a guest's cart into the account on purpose opts out with
    /// [`crate::SessionLayer::with_storage_across_users`].
    pub async fn set_privileges(&self, grant: Grant) -> Result<(), SessionError> {
        let mut st = self.inner.state.lock().await;
        if st.answered {
            // The new token could never reach the browser: its cookie would be dead.
            return Err(SessionError::Answered);
        }
        self.load(&mut st).await?;
        let cfg = &self.inner.config;
        if let Some(rec) = st.record.clone() {
            let other_user = grant
                .user
                .as_deref()
                .is_some_and(|u| rec.user.as_deref() != Some(u));
            if other_user && !cfg.carry_storage_across_users {
                return self.sign_in_anew(&mut st, rec, grant).await;
            }
            let mut lock = cfg.locks.lock(rec.id).await;
            let info = grant
                .info
                .as_ref()
                .map(JsonObject::from_map)
                .transpose()
                .map_err(sessiond_core::Error::from)?;
            // Marked before the rotation: a request with the old cookie that fails
            // while it runs must not create a guest whose cookie would replace the new.
            if let Some(old) = &self.inner.incoming {
                cfg.rotated.insert(old.hash());
            }
            let res = cfg
                .manager
                .set_privileges(
                    Lookup::Id(rec.id),
                    grant.privileges.clone(),
                    info,
                    grant.user.clone(),
                )
                .await;
            match res {
                Ok((s, token)) => {
                    lock.remember(&s);
                    st.record = Some(s);
                    st.cookie = CookieAction::Set(token);
                    return Ok(());
                }
                Err(Error::SessionClosed(_) | Error::NotFound(_)) => {
                    // Closed meanwhile: this sign-in opens the user's session itself.
                    st.record = None;
                    return self.create_fresh(&mut st, grant).await.map(drop);
                }
                Err(e) => return Err(self.fail(&mut st, e)),
            }
        }
        self.create(&mut st, Map::new(), Some(grant))
            .await
            .map(drop)
    }

    /// Closes `old` as `user_changed` and opens the new user's session in its place.
    /// Closing first keeps seats and per-user limits exact; if the open is then refused,
    /// the browser's cookie is removed (its session is closed) and the request answers
    /// the refusal.
    async fn sign_in_anew(
        &self,
        st: &mut State,
        old: Record,
        grant: Grant,
    ) -> Result<(), SessionError> {
        let cfg = &self.inner.config;
        // Marked before the close: a request with the old cookie that fails in between
        // must not create a guest whose cookie would replace the new one.
        if let Some(token) = &self.inner.incoming {
            cfg.rotated.insert(token.hash());
        }
        let res = cfg
            .manager
            .close(Lookup::Id(old.id), CloseReason::UserChanged, Actor::User)
            .await;
        match res {
            Ok(_) | Err(Error::SessionClosed(_) | Error::NotFound(_)) => {}
            Err(e) => return Err(self.fail(st, e)),
        }
        tracing::info!(session = %old.id, app = %old.app, "another user signed in: the session closed as user_changed");
        st.record = None;
        st.cookie = CookieAction::Remove;
        self.create_fresh(st, grant).await.map(drop)
    }

    /// Whether the session holds privilege `name` (4D's `hasPrivilege`).
    pub async fn has_privilege(&self, name: &str) -> Result<bool, SessionError> {
        Ok(self
            .record()
            .await?
            .is_some_and(|r| r.privileges.contains(name)))
    }

    /// Whether this is a guest session: no user and no privileges (4D's `isGuest`).
    pub async fn is_guest(&self) -> Result<bool, SessionError> {
        Ok(self
            .record()
            .await?
            .is_none_or(|r| r.user.is_none() && r.privileges.is_empty()))
    }

    /// The signed-in user, if any.
    pub async fn user(&self) -> Result<Option<String>, SessionError> {
        Ok(self.record().await?.and_then(|r| r.user.map(String::from)))
    }

    /// "My sessions": the other open sessions of this session's user in this app, oldest
    /// first (client label, address, user agent, times; never a token). None for a
    /// guest.
    pub async fn other_sessions(&self) -> Result<Vec<Record>, SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        let Some(me) = st.record.clone() else {
            return Ok(Vec::new());
        };
        match self.inner.config.manager.others_of(&me).await {
            Ok(others) => Ok(others),
            Err(e) => Err(self.fail(&mut st, e)),
        }
    }

    /// Closes `id` if it is one of this user's other sessions in this app (as `logout`,
    /// by this session); false for any other id, this session's own included, without
    /// saying whether it exists.
    pub async fn close_other_session(&self, id: SessionId) -> Result<bool, SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        let Some(me) = st.record.clone() else {
            return Ok(false);
        };
        match self.inner.config.manager.close_other_of(&me, id).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_) | Error::SessionClosed(_)) => Ok(false),
            Err(e) => Err(self.fail(&mut st, e)),
        }
    }

    /// Closes every other open session of this user in this app ("log out everywhere
    /// but here"); answers how many closed. This session stays open.
    pub async fn close_other_sessions(&self) -> Result<usize, SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        let Some(me) = st.record.clone() else {
            return Ok(0);
        };
        match self.inner.config.manager.close_others_of(&me).await {
            Ok(closed) => Ok(closed.len()),
            Err(e) => Err(self.fail(&mut st, e)),
        }
    }

    /// Ends the session (closed as `logout`) and removes the cookie; the rest of the
    /// request sees a fresh guest (Gambas `Session.Abandon`, 4D `WEB CLOSE SESSION`).
    pub async fn abandon(&self) -> Result<(), SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        if let Some(rec) = st.record.take() {
            let res = self
                .inner
                .config
                .manager
                .close(Lookup::Id(rec.id), CloseReason::Logout, Actor::User)
                .await;
            match res {
                Ok(_) | Err(Error::SessionClosed(_) | Error::NotFound(_)) => {}
                Err(e) => {
                    st.record = Some(rec);
                    return Err(self.fail(&mut st, e));
                }
            }
        }
        if self.inner.incoming.is_some() || matches!(st.cookie, CookieAction::Set(_)) {
            st.cookie = CookieAction::Remove;
        }
        Ok(())
    }

    /// Turns the session's heartbeat on (at `interval`, else the layer's) or off (WEBDEV
    /// `SessionHeartBeatEnable`). Off, only the idle timeout applies (the user went to an
    /// external payment page); on, the session ends `heartbeat_lost` once no beat came
    /// for interval + grace. Answers false when there is no stored session to change.
    pub async fn set_heartbeat(
        &self,
        active: bool,
        interval: Option<Duration>,
    ) -> Result<bool, SessionError> {
        let mut st = self.inner.state.lock().await;
        self.load(&mut st).await?;
        let Some(rec) = st.record.clone() else {
            return Ok(false);
        };
        let cfg = &self.inner.config;
        let interval_s = interval
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1))
            .unwrap_or(cfg.heartbeat.interval_s);
        let mut lock = cfg.locks.lock(rec.id).await;
        let res = cfg
            .manager
            .set_heartbeat(
                Lookup::Id(rec.id),
                active,
                Some(interval_s),
                Some(cfg.heartbeat.grace_s),
                self.inner.ip,
            )
            .await;
        match res {
            Ok(s) => {
                lock.remember(&s);
                st.record = Some(s);
                Ok(true)
            }
            Err(Error::SessionClosed(_) | Error::NotFound(_)) => {
                st.record = None;
                Ok(false)
            }
            Err(e) => Err(self.fail(&mut st, e)),
        }
    }
}
