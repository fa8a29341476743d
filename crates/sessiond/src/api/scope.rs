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
use axum::http::{Method, StatusCode};
use axum::routing::{on, MethodFilter};
use axum::Router;
use sessiond_core::{Policy, Session, SessionId, StoreError};

use crate::auth::bearer;
pub use crate::credentials::Caller;
use crate::error::ApiError;
use crate::state::SharedState;

/// The credential of a request: 401 without one or with an unknown one.
fn authenticate(parts: &Parts, st: &SharedState) -> Result<Caller, ApiError> {
    let Some(secret) = bearer(parts) else {
        return Err(ApiError::unauthorized(
            "send an admin, operator or app credential as Authorization: Bearer <secret>",
        ));
    };
    match st.credentials.current().caller(secret) {
        Some(c) => Ok(c.clone()),
        None => Err(ApiError::unauthorized(
            "the admin token, operator token or app key is not valid",
        )),
    }
}

/// Refuses a caller that may not change things on a route that would.
fn check_write(parts: &Parts, caller: &Caller) -> Result<(), ApiError> {
    let reads = matches!(parts.method, Method::GET | Method::HEAD);
    if reads || caller.may_write() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this operator is read-only: it may list and read, not change",
        ))
    }
}

/// A session id from a path: one that cannot be an id is a session nobody has (404).
pub(crate) fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session has id {}", sessiond_core::quoted(raw)),
        )
    })
}

/// What a client credential is told on any route but opening a session.
fn client_refused() -> ApiError {
    ApiError::forbidden(
        "a client credential may only open a session (POST /v1/apps/{app}/sessions), then act with that session's token",
    )
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
        if matches!(caller, Caller::Client(_)) {
            return Err(client_refused());
        }
        app_scope(parts, st, caller).await
    }
}

/// The app of the path, if `caller` may manage it (and change it, on a route that
/// changes things).
async fn app_scope(
    parts: &mut Parts,
    st: &SharedState,
    caller: Caller,
) -> Result<AppScope, ApiError> {
    let app = path_param(parts, st, "app").await?;
    check_write(parts, &caller)?;
    if !caller.may_manage(&app) {
        return Err(ApiError::forbidden(format!(
            "this credential may not act on app {}; use that app's key, an operator token of that app or the admin token",
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

impl Scope for AppScope {
    const PARAM: Option<&'static str> = Some("app");
}

/// [`AppScope`] for opening a session: it also admits a client credential of the app
/// (which may do nothing else), told apart by [`OpenScope::client`].
pub struct OpenScope {
    /// The app, as for any operator.
    pub scope: AppScope,
    /// The caller is a client credential of the app: it opens without privileges, at
    /// the address of its connection, at most so often, and sees other holders only
    /// by name and label.
    pub client: bool,
}

impl FromRequestParts<SharedState> for OpenScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &SharedState) -> Result<Self, ApiError> {
        match authenticate(parts, st)? {
            Caller::Client(mine) => {
                let app = path_param(parts, st, "app").await?;
                if app != mine {
                    return Err(ApiError::forbidden(format!(
                        "this client credential does not belong to app {}",
                        sessiond_core::quoted(&app)
                    )));
                }
                let policy = st.manager.policy(&app)?;
                Ok(OpenScope {
                    scope: AppScope {
                        st: st.clone(),
                        caller: Caller::Client(mine),
                        app,
                        policy,
                    },
                    client: true,
                })
            }
            caller => Ok(OpenScope {
                scope: app_scope(parts, st, caller).await?,
                client: false,
            }),
        }
    }
}

impl Scope for OpenScope {
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
        if matches!(caller, Caller::Client(_)) {
            return Err(client_refused());
        }
        check_write(parts, &caller)?;
        let raw = path_param(parts, st, "id").await?;
        let id = session_id(&raw)?;
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
                Caller::Operator(_) | Caller::App(_) | Caller::Client(_) => {
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

/// The admin token, or an operator of every app (403 for anyone else).
pub struct AdminScope {
    /// The server's state.
    pub st: SharedState,
}

impl FromRequestParts<SharedState> for AdminScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &SharedState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, st)?;
        if !caller.every_app() {
            return Err(ApiError::forbidden(
                "this needs the admin token or an operator token of every app",
            ));
        }
        check_write(parts, &caller)?;
        Ok(AdminScope { st: st.clone() })
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
/// use axum::routing::MethodFilter;
/// use sessiond::api::scope::{AppScope, OperatorRoutes};
///
/// async fn name(scope: AppScope) -> String {
///     scope.app
/// }
/// let _ = OperatorRoutes::new()
///     .route(MethodFilter::GET, "/v1/apps/{app}/name", name)
///     .into_router();
/// ```
///
/// A handler without one does not compile:
///
/// ```compile_fail
/// use axum::routing::MethodFilter;
/// use sessiond::api::scope::OperatorRoutes;
///
/// async fn everything() -> &'static str {
///     "every app's sessions"
/// }
/// let _ = OperatorRoutes::new().route(MethodFilter::GET, "/v1/everything", everything);
/// ```
///
/// nor does one that takes the state first and would check the caller itself:
///
/// ```compile_fail
/// use axum::extract::State;
/// use axum::routing::MethodFilter;
/// use sessiond::api::scope::{AppScope, OperatorRoutes};
/// use sessiond::state::SharedState;
///
/// async fn late(State(_): State<SharedState>, scope: AppScope) -> String {
///     scope.app
/// }
/// let _ = OperatorRoutes::new().route(MethodFilter::GET, "/v1/apps/{app}/late", late);
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

    /// `method path`, served by `handler`, whose first argument is its scope.
    pub fn route<H, T>(mut self, method: MethodFilter, path: &'static str, handler: H) -> Self
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
