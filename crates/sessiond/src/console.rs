//! The admin console at `/admin`: static pages embedded in the binary (no build step),
//! a sign-in with the admin token or an app key, and a same-origin proxy from
//! `/admin/api/...` to the API so the page never holds the secret.
//!
//! Signing in creates a console session: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/admin`; the credential stays on the server.
//! Requests that change anything must come from the console's own page: they carry the
//! `X-Sessiond-Console` header (which a cross-site form cannot send) and, when the
//! browser sends `Origin`, it must be this server. The cookie is `Secure` when the
//! sign-in came over HTTPS ([`crate::auth::over_https`]).
//!
//! Sign-in is throttled per client address (`console_login_attempts_per_minute` failed
//! attempts, then 429 until the minute is over), in a table of at most
//! [`MAX_THROTTLED_ADDRESSES`] addresses, and at most [`MAX_CONSOLE_SESSIONS`] browsers
//! are signed in at once (the oldest sign-in goes first): nothing a client sends grows
//! the console's memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Form, Router};
use serde::Deserialize;
use tower::ServiceExt;

use crate::auth::digest;
use crate::config::Secret;
use crate::error::ApiError;
use crate::state::SharedState;

const COOKIE: &str = "sessiond_console";
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
const CSRF_HEADER: &str = "x-sessiond-console";
/// The window over which failed sign-ins are counted.
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// Most client addresses the sign-in throttle remembers at once. When every one is
/// still within its window, sign-ins from other addresses are refused (429) until one
/// ends: the table's memory is bounded whatever the number of addresses.
pub const MAX_THROTTLED_ADDRESSES: usize = 10_000;

/// Most browsers signed in to the console at once; a new sign-in beyond it ends the
/// oldest.
pub const MAX_CONSOLE_SESSIONS: usize = 1024;

const INDEX: &str = include_str!("../console/index.html");
const LOGIN: &str = include_str!("../console/login.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Who a console session is.
#[derive(Clone)]
struct Signed {
    secret: Secret,
    /// `None` for the admin token, the app's name for an app key.
    app: Option<String>,
    expires: Instant,
}

/// Failed sign-ins of one client address in the current window.
struct Failures {
    since: Instant,
    count: u32,
}

/// The console's signed-in browsers, and the sign-in throttle.
pub struct ConsoleSessions {
    signed: Mutex<HashMap<String, Signed>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Failed sign-ins allowed per client address per minute.
    attempts_per_minute: u32,
}

impl Default for ConsoleSessions {
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE)
    }
}

impl ConsoleSessions {
    /// No browser signed in; `attempts_per_minute` failed sign-ins allowed per client
    /// address per minute.
    pub fn new(attempts_per_minute: u32) -> Self {
        ConsoleSessions {
            signed: Mutex::default(),
            failures: Mutex::default(),
            attempts_per_minute,
        }
    }

    fn get(&self, headers: &HeaderMap) -> Option<Signed> {
        let id = cookie(headers)?;
        let mut map = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.get(&id).cloned()
    }

    fn insert(&self, id: String, signed: Signed) {
        let mut map = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_CONSOLE_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(id, signed);
    }

    fn remove(&self, id: &str) {
        self.signed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Whether `addr` may try to sign in now.
    fn may_try(&self, addr: IpAddr) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get(&addr) {
            Some(f) if now.duration_since(f.since) < THROTTLE_WINDOW => {
                f.count < self.attempts_per_minute
            }
            Some(_) => {
                map.remove(&addr);
                true
            }
            None => {
                if map.len() >= MAX_THROTTLED_ADDRESSES {
                    map.retain(|_, f| now.duration_since(f.since) < THROTTLE_WINDOW);
                }
                map.len() < MAX_THROTTLED_ADDRESSES
            }
        }
    }

    /// Counts a failed sign-in from `addr`.
    fn failed(&self, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_THROTTLED_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, f| now.duration_since(f.since) < THROTTLE_WINDOW);
            if map.len() >= MAX_THROTTLED_ADDRESSES {
                return;
            }
        }
        let f = map.entry(addr).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(f.since) >= THROTTLE_WINDOW {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
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
        let addr = peer.map(|peer| {
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok());
            sessiond_core::client_address(peer, forwarded, trusted)
        });
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

async fn index(State((st, _)): State<ConsoleState>, headers: HeaderMap) -> Response {
    match st.console.get(&headers) {
        Some(_) => page(INDEX, StatusCode::OK),
        None => page(&LOGIN.replace("{{error}}", ""), StatusCode::OK),
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
    if origin.addr.is_some_and(|a| !st.console.may_try(a)) {
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
    let d = digest(form.token.trim());
    let app = if d == st.admin_digest {
        None
    } else if let Some(app) = st.app_keys.get(&d) {
        Some(app.clone())
    } else {
        if let Some(a) = origin.addr {
            st.console.failed(a);
        }
        tracing::info!("console sign-in refused: unknown token");
        let html = LOGIN.replace(
            "{{error}}",
            "<p class=\"error\" role=\"alert\">That token is not the admin token or an app key.</p>",
        );
        return page(&html, StatusCode::UNAUTHORIZED);
    };
    let id = sessiond_core::Token::generate("console")
        .expose()
        .to_string();
    let id = id.trim_start_matches("console:").to_string();
    tracing::info!(role = app.as_deref().unwrap_or("admin"), "console sign-in");
    st.console.insert(
        id.clone(),
        Signed {
            secret: Secret::new(form.token.trim()),
            app,
            expires: Instant::now() + LIFETIME,
        },
    );
    let mut r = Redirect::to("/admin").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={id}; {}; Max-Age={}",
        cookie_attributes(origin.https),
        LIFETIME.as_secs()
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
    if let Some(id) = cookie(&headers) {
        st.console.remove(&id);
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

async fn whoami(State((st, _)): State<ConsoleState>, headers: HeaderMap) -> Response {
    match st.console.get(&headers) {
        Some(s) => axum::Json(serde_json::json!({
            "role": if s.app.is_some() { "app" } else { "admin" },
            "app": s.app,
        }))
        .into_response(),
        None => ApiError::unauthorized("sign in to the console first").into_response(),
    }
}

async fn proxy(State((st, api)): State<ConsoleState>, req: Request) -> Response {
    let Some(signed) = st.console.get(req.headers()) else {
        return ApiError::unauthorized("sign in to the console first").into_response();
    };
    if req.method() != Method::GET
        && (req.headers().get(CSRF_HEADER).is_none() || !same_origin(req.headers()))
    {
        return ApiError::forbidden("changes must come from the console's own page")
            .into_response();
    }
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
    match HeaderValue::from_str(&format!("Bearer {}", signed.secret.expose())) {
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
    match api.oneshot(inner).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
