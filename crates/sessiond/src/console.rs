//! The admin console at `/admin`: static pages embedded in the binary (no build step),
//! a sign-in with the admin token or an app key, and a same-origin proxy from
//! `/admin/api/...` to the API so the page never holds the secret.
//!
//! Signing in opens a sessiond session of the internal app `@console` in the
//! configured store (module `sign_ins`): the console works on every node sharing the
//! store and after a restart, its sign-ins follow `console_idle_timeout_s` and
//! `console_lifetime_s`, and the admin token lists and kills them like any session. The session's token travels
//! in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/admin`; the credential stays on
//! the server. Requests that change anything must come from the console's own page:
//! they carry the `X-Sessiond-Console` header (which a cross-site form cannot send)
//! and, when the browser sends `Origin`, it must be this server. The cookie is
//! `Secure` when the sign-in came over HTTPS ([`crate::auth::over_https`]). Signing out
//! closes the session; an event stream the console opened through the proxy ends when
//! its console session closes (killed, signed out, timed out), on whichever node.
//!
//! Sign-in is throttled per client address (`console_login_attempts_per_minute` failed
//! attempts, then 429 until the minute is over, module `throttle`), and at most
//! [`MAX_CONSOLE_SESSIONS`] browsers are signed in at once (the longest idle goes
//! first): nothing a client sends grows the console's memory or the store without
//! bound.

mod sign_ins;
mod throttle;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Form, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use sessiond_core::{EventKind, Manager, SessionId};
use tokio::sync::broadcast::{self, error::RecvError};
use tower::ServiceExt;

use crate::auth::digest;
use crate::config::Config;
use crate::credentials::Caller;
use crate::error::ApiError;
use crate::state::SharedState;

pub use sign_ins::{Role, Signed, CONSOLE_APP, MAX_CONSOLE_SESSIONS};
pub use throttle::MAX_THROTTLED_ADDRESSES;

const COOKIE: &str = "sessiond_console";
const CSRF_HEADER: &str = "x-sessiond-console";

const INDEX: &str = include_str!("../console/index.html");
const LOGIN: &str = include_str!("../console/login.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// The console's sign-ins (sessions of [`CONSOLE_APP`]) and its sign-in throttle.
pub struct ConsoleSessions {
    sign_ins: sign_ins::SignIns,
    throttle: throttle::Throttle,
}

impl ConsoleSessions {
    /// Registers [`CONSOLE_APP`] on `manager` with the console's settings from
    /// `config`, and keeps the credentials a sign-in can stand for (`admin`, the admin
    /// token, and the app keys of `config`).
    pub fn new(
        config: &Config,
        credentials: Arc<crate::credentials::CredentialTable>,
        manager: &Manager,
    ) -> Result<Self, sessiond_core::Error> {
        Ok(ConsoleSessions {
            sign_ins: sign_ins::SignIns::new(config, credentials, manager)?,
            throttle: throttle::Throttle::new(config.console_login_attempts_per_minute),
        })
    }
}

/// Where a console request came from: the client's address (behind trusted proxies,
/// as [`crate::auth::ClientAddr`] reads it) and whether it came over HTTPS.
struct Origin {
    addr: Option<IpAddr>,
    https: bool,
}

impl FromRequestParts<ConsoleState> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        (st, _): &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let trusted = |ip: IpAddr| st.trusted_proxies.contains(&ip);
        let peer = parts
            .extensions
            .get::<crate::auth::PeerAddr>()
            .map(|p| p.0.ip());
        let addr = crate::auth::client_addr(parts, trusted);
        let https = crate::auth::over_https(&parts.extensions, &parts.headers, peer, trusted);
        Ok(Origin { addr, https })
    }
}

/// The console cookie's attributes; `Secure` when the browser came over HTTPS.
fn cookie_attributes(https: bool) -> &'static str {
    if https {
        "Path=/admin; HttpOnly; SameSite=Strict; Secure"
    } else {
        "Path=/admin; HttpOnly; SameSite=Strict"
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

fn page(html: &str, status: StatusCode) -> Response {
    let mut r = (status, Html(html.to_string())).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `no-referrer` would make browsers send `Origin: null` on the sign-in form.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// The console's routes, proxying to `api`.
pub fn router(state: SharedState, api: Router) -> Router {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/whoami", get(whoami))
        .route(
            "/admin/assets/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/admin/assets/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route("/admin/api/{*rest}", any(proxy))
        .with_state((state, api))
}

type ConsoleState = (SharedState, Router);

/// The browser's console session, if it is signed in (a console request counts as the
/// session's activity when `touch`).
async fn signed_in(
    st: &SharedState,
    headers: &HeaderMap,
    origin: &Origin,
    touch: bool,
) -> Result<Option<Signed>, ApiError> {
    st.console
        .sign_ins
        .signed_in(&st.manager, cookie(headers).as_deref(), origin.addr, touch)
        .await
}

async fn index(
    State((st, _)): State<ConsoleState>,
    origin: Origin,
    headers: HeaderMap,
) -> Response {
    match signed_in(&st, &headers, &origin, true).await {
        Ok(Some(_)) => page(INDEX, StatusCode::OK),
        Ok(None) => page(&LOGIN.replace("{{error}}", ""), StatusCode::OK),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State((st, _)): State<ConsoleState>,
    origin: Origin,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return ApiError::forbidden("sign in from the console's own page").into_response();
    }
    if origin.addr.is_some_and(|a| !st.console.throttle.may_try(a)) {
        tracing::warn!(client = ?origin.addr, "console sign-in throttled");
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed sign-ins from this address; wait a minute",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(FormRejection::BytesRejection(e)) => {
            return crate::error::body_error(e.status()).into_response()
        }
        Err(e) => {
            return ApiError::bad_request(format!(
                "send the sign-in form: {}",
                crate::error::cut(&e.body_text())
            ))
            .into_response()
        }
    };
    // The console signs in the admin token and app keys, current ones only (a retiring
    // secret is for the API's clients while they move over: a sign-in made with it
    // would outlive it, since the proxy acts with the role's current secret).
    let presented = form.token.trim();
    let role = match st.credentials.current().caller(presented) {
        Some(Caller::Admin) => Some(Role::Admin),
        Some(Caller::App(app)) => Some(Role::App(app.clone())),
        _ => None,
    }
    .filter(|role| {
        st.console
            .sign_ins
            .secret(role)
            .is_some_and(|current| digest(current.expose()) == digest(presented))
    });
    let role = match role {
        Some(role) => role,
        None => {
            if let Some(a) = origin.addr {
                st.console.throttle.failed(a);
            }
            tracing::info!("console sign-in refused: unknown token");
            let html = LOGIN.replace(
            "{{error}}",
            "<p class=\"error\" role=\"alert\">That token is not the admin token or an app key.</p>",
        );
            return page(&html, StatusCode::UNAUTHORIZED);
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let token = match st
        .console
        .sign_ins
        .sign_in(&st.manager, &role, origin.addr, user_agent)
        .await
    {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let mut r = Redirect::to("/admin").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={}; {}; Max-Age={}",
        token.expose(),
        cookie_attributes(origin.https),
        st.console.sign_ins.lifetime_s()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(
    State((st, _)): State<ConsoleState>,
    origin: Origin,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return ApiError::forbidden("sign out from the console's own page").into_response();
    }
    // The cookie is kept when the close could not be made: signing out again closes it.
    if let Err(e) = st
        .console
        .sign_ins
        .sign_out(&st.manager, cookie(&headers).as_deref(), origin.addr)
        .await
    {
        return e.into_response();
    }
    let mut r = Redirect::to("/admin").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; {}; Max-Age=0",
        cookie_attributes(origin.https)
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn whoami(
    State((st, _)): State<ConsoleState>,
    origin: Origin,
    headers: HeaderMap,
) -> Response {
    match signed_in(&st, &headers, &origin, true).await {
        Ok(Some(s)) => axum::Json(serde_json::json!({
            "role": if s.role.app().is_some() { "app" } else { "admin" },
            "app": s.role.app(),
        }))
        .into_response(),
        Ok(None) => ApiError::unauthorized("sign in to the console first").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn proxy(State((st, api)): State<ConsoleState>, origin: Origin, req: Request) -> Response {
    // Refused before the sign-in is read: a forged request does not even count as the
    // console session's activity.
    if req.method() != Method::GET
        && (req.headers().get(CSRF_HEADER).is_none() || !same_origin(req.headers()))
    {
        return ApiError::forbidden("changes must come from the console's own page")
            .into_response();
    }
    let signed = match signed_in(&st, req.headers(), &origin, true).await {
        Ok(Some(s)) => s,
        Ok(None) => return ApiError::unauthorized("sign in to the console first").into_response(),
        Err(e) => return e.into_response(),
    };
    let Some(secret) = st.console.sign_ins.secret(&signed.role) else {
        return ApiError::unauthorized("sign in again").into_response();
    };
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .trim_start_matches("/admin/api");
    let Ok(uri) = path_and_query.parse::<Uri>() else {
        return ApiError::bad_request("bad path").into_response();
    };
    parts.uri = uri;
    parts.headers.remove(header::COOKIE);
    match HeaderValue::from_str(&format!("Bearer {}", secret.expose())) {
        Ok(v) => {
            parts.headers.insert(header::AUTHORIZATION, v);
        }
        Err(_) => return ApiError::unauthorized("sign in again").into_response(),
    }
    // A fresh request: the outer route's extensions (its path parameters) must not leak
    // into the API's routing. Only the peer address is carried over.
    let mut inner = Request::new(Body::new(body));
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = parts.uri;
    *inner.headers_mut() = parts.headers;
    if let Some(peer) = parts.extensions.get::<crate::auth::PeerAddr>() {
        inner.extensions_mut().insert(*peer);
    }
    // Subscribed before the stream starts, so a close while it starts is not missed.
    let events = st.manager.subscribe();
    let resp = match api.oneshot(inner).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !streaming {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let ended = session_ended(st.manager.clone(), events, signed.id);
    Response::from_parts(
        parts,
        Body::from_stream(body.into_data_stream().take_until(Box::pin(ended))),
    )
}

/// Completes when the console session `id` closes or its token changes, on this node
/// or another (the Manager relays other nodes' events): an event stream the console
/// opened must not outlive the sign-in that opened it. When events were missed, the
/// store says whether the session is still open.
async fn session_ended(
    manager: Arc<Manager>,
    mut events: broadcast::Receiver<sessiond_core::Event>,
    id: SessionId,
) {
    loop {
        match events.recv().await {
            Ok(e)
                if e.id == id
                    && matches!(e.kind, EventKind::Closed | EventKind::PrivilegesChanged) =>
            {
                return
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                if !manager.get(id).await.is_ok_and(|s| s.is_open()) {
                    return;
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
