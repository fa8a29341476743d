//! Who may touch what, decided before a handler runs. An operator credential (the admin
//! token or an app key) reaches a handler only inside a *scope*, an extractor that has
//! already checked it against what the route names:
//!
//! - [`AppScope`]: routes with `{app}`: the caller may manage that app, and it exists;
//! - [`SessionScope`]: routes with `{id}`: the session exists and belongs to an app the
//!   caller may manage, checked on the stored record before anything is written (an
//!   app key cannot even close another app's session as expired by reading it);
//! - [`AdminScope`]: routes for the admin token only.
//!
//! [`Caller`] has no extractor of its own: a handler cannot take the credential and
//! forget the check. Operator routes are registered through [`OperatorRoutes`], whose
//! methods accept only handlers whose first argument is a scope, and which checks that
//! the path names what the scope reads (`{app}`, `{id}`). The route × credential table
//! test (`tests/api/routes.rs`) sends every credential kind to every route of
//! `/openapi.json` and fails on any answer, or any route, it does not expect.

use axum::extract::{FromRequestParts, Path};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{on, MethodFilter};
use axum::Router;
use sessiond_core::{Policy, Session, SessionId, StoreError};

use crate::auth::{bearer, digest};
use crate::error::ApiError;
use crate::state::SharedState;

/// An operator credential. It has no extractor: handlers receive it inside a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: may do everything.
    Admin,
    /// The key of this app: may manage this app only.
    App(String),
}

impl Caller {
    /// Whether this caller may manage `app`.
    pub fn may_manage(&self, app: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::App(mine) => mine == app,
        }
    }

    /// The actor recorded when this caller closes a session.
    pub fn actor(&self) -> sessiond_core::Actor {
        match self {
            Caller::Admin => sessiond_core::Actor::Admin,
            Caller::App(_) => sessiond_core::Actor::App,
        }
    }
}

/// The operator credential of a request: 401 without one or with an unknown one.
fn authenticate(parts: &Parts, st: &SharedState) -> Result<Caller, ApiError> {
    let Some(secret) = bearer(parts) else {
        return Err(ApiError::unauthorized(
            "send the admin token or an app key as Authorization: Bearer <secret>",
        ));
    };
    let d = digest(secret);
    if d == st.admin_digest {
        return Ok(Caller::Admin);
    }
    match st.app_keys.get(&d) {
        Some(app) => Ok(Caller::App(app.clone())),
        None => Err(ApiError::unauthorized(
            "the admin token or app key is not valid",
        )),
    }
}

/// One path parameter, its rejection an API error (404: the route's thing is unknown).
async fn path_param(parts: &mut Parts, st: &SharedState, name: &str) -> Result<String, ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, st)
        .await
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))?;
    params
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))
}

/// What a scope reads from the path, so [`OperatorRoutes`] can refuse a route that does
/// not name it.
pub trait Scope: FromRequestParts<SharedState, Rejection = ApiError> + Send + 'static {
    /// The path parameter the scope checks the caller against, if any.
    const PARAM: Option<&'static str>;
}

/// An app the caller may manage: the admin token, or that app's own key (403 for
/// another app's key; 404 for an app that does not exist, told only to callers who
/// could manage it).
pub struct AppScope {
    /// The server's state.
    pub st: SharedState,
    /// Who is calling.
    pub caller: Caller,
    /// The app named by the path.
    pub app: String,
    /// Its policy.
    pub policy: std::sync::Arc<Policy>,
}

impl FromRequestParts<SharedState> for AppScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &SharedState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, st)?;
        let app = path_param(parts, st, "app").await?;
        if !caller.may_manage(&app) {
            return Err(ApiError::forbidden(format!(
                "this app key does not belong to app {}; use that app's key or the admin token",
                sessiond_core::quoted(&app)
            )));
        }
        let policy = st.manager.policy(&app)?;
        Ok(AppScope {
            st: st.clone(),
            caller,
            app,
            policy,
        })
    }
}

impl Scope for AppScope {
    const PARAM: Option<&'static str> = Some("app");
}

/// A session the caller may manage, read once (an open session past its timeout is
/// closed by that read, but only after the caller was found allowed to see it). Another
/// app's session answers exactly as an unknown id does (404 `not_found`): an app key
/// must not learn which ids exist in other apps. A record that cannot be read belongs
/// to no app anyone can name: an app key gets the same 404; the admin token gets the
/// scope, with [`SessionScope::session`] telling what it is.
pub struct SessionScope {
    /// The server's state.
    pub st: SharedState,
    /// Who is calling.
    pub caller: Caller,
    /// The session's id.
    pub id: SessionId,
    found: Result<Session, String>,
}

impl SessionScope {
    /// The session as read; for a record that cannot be read (only the admin token gets
    /// this far), 500 `session_unreadable` saying how to remove it.
    pub fn session(&self) -> Result<&Session, ApiError> {
        match &self.found {
            Ok(s) => Ok(s),
            Err(detail) => {
                tracing::warn!(session = %self.id, error = %detail, "unreadable session record");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "session_unreadable",
                    format!(
                        "the stored record of session {id} cannot be read; \
                         DELETE /v1/sessions/{id} with the admin token removes it",
                        id = self.id
                    ),
                ))
            }
        }
    }

    /// Whether the stored record could not be read (admin token only).
    pub fn unreadable(&self) -> bool {
        self.found.is_err()
    }
}

impl FromRequestParts<SharedState> for SessionScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &SharedState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, st)?;
        let raw = path_param(parts, st, "id").await?;
        let id: SessionId = raw.parse().map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no session has id {}", sessiond_core::quoted(&raw)),
            )
        })?;
        // Every "not found" of a well-formed id says the same words, whatever the cause.
        let not_found = || ApiError::from(sessiond_core::Error::NotFound(id));
        let found = match st
            .manager
            .get_visible(id, |s| caller.may_manage(&s.app))
            .await
        {
            Ok(s) => Ok(s),
            Err(sessiond_core::Error::Store(StoreError::Corrupt(detail))) => match caller {
                Caller::Admin => Err(detail),
                Caller::App(_) => {
                    tracing::debug!(session = %id, error = %detail, "unreadable session record answered not_found to an app key");
                    return Err(not_found());
                }
            },
            Err(e) => return Err(e.into()),
        };
        Ok(SessionScope {
            st: st.clone(),
            caller,
            id,
            found,
        })
    }
}

impl Scope for SessionScope {
    const PARAM: Option<&'static str> = Some("id");
}

/// The admin token, nothing else (403 for an app key).
pub struct AdminScope {
    /// The server's state.
    pub st: SharedState,
}

impl FromRequestParts<SharedState> for AdminScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &SharedState) -> Result<Self, ApiError> {
        match authenticate(parts, st)? {
            Caller::Admin => Ok(AdminScope { st: st.clone() }),
            Caller::App(_) => Err(ApiError::forbidden("this needs the admin token")),
        }
    }
}

impl Scope for AdminScope {
    const PARAM: Option<&'static str> = None;
}

/// The extractor tuple of a handler whose first argument is a [`Scope`] (axum describes
/// a handler `fn(A, B)` by the tuple `(M, A, B)`).
pub trait Scoped {
    /// The handler's scope.
    type Scope: Scope;
}

macro_rules! scoped {
    ($($rest:ident),*) => {
        impl<M, S: Scope, $($rest,)*> Scoped for (M, S, $($rest,)*) {
            type Scope = S;
        }
    };
}
scoped!();
scoped!(T2);
scoped!(T2, T3);
scoped!(T2, T3, T4);
scoped!(T2, T3, T4, T5);

/// The one way to register an operator route: every handler starts with a [`Scope`],
/// and the path names the parameter that scope checks.
///
/// A handler that starts with its scope is taken:
///
/// ```
/// use sessiond::api::scope::{AppScope, OperatorRoutes};
///
/// async fn name(scope: AppScope) -> String {
///     scope.app
/// }
/// let _ = OperatorRoutes::new().get("/v1/apps/{app}/name", name).into_router();
/// ```
///
/// A handler without one does not compile:
///
/// ```compile_fail
/// use sessiond::api::scope::OperatorRoutes;
///
/// async fn everything() -> &'static str {
///     "every app's sessions"
/// }
/// let _ = OperatorRoutes::new().get("/v1/everything", everything);
/// ```
///
/// nor does one that takes the state first and would check the caller itself:
///
/// ```compile_fail
/// use axum::extract::State;
/// use sessiond::api::scope::{AppScope, OperatorRoutes};
/// use sessiond::state::SharedState;
///
/// async fn late(State(_): State<SharedState>, scope: AppScope) -> String {
///     scope.app
/// }
/// let _ = OperatorRoutes::new().get("/v1/apps/{app}/late", late);
/// ```
#[derive(Default)]
pub struct OperatorRoutes {
    router: Router<SharedState>,
}

impl OperatorRoutes {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `GET path`.
    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: Scoped + 'static,
    {
        self.add(MethodFilter::GET, path, handler)
    }

    /// `POST path`.
    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: Scoped + 'static,
    {
        self.add(MethodFilter::POST, path, handler)
    }

    /// `PUT path`.
    pub fn put<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: Scoped + 'static,
    {
        self.add(MethodFilter::PUT, path, handler)
    }

    /// `DELETE path`.
    pub fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: Scoped + 'static,
    {
        self.add(MethodFilter::DELETE, path, handler)
    }

    fn add<H, T>(mut self, method: MethodFilter, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, SharedState>,
        T: Scoped + 'static,
    {
        // A programming error caught when the router is built (at start and by every
        // test), never reachable from a request.
        if let Some(param) = <T::Scope as Scope>::PARAM {
            assert!(
                path.contains(&format!("{{{param}}}")),
                "operator route {path} does not name {{{param}}}, which its scope checks"
            );
        }
        self.router = self.router.route(path, on(method, handler));
        self
    }

    /// The routes, to merge into the API's router.
    pub fn into_router(self) -> Router<SharedState> {
        self.router
    }
}
