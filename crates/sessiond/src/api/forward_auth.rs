//! `GET /v1/apps/{app}/forward-auth`: the check a reverse proxy (nginx `auth_request`,
//! Traefik `ForwardAuth`, Caddy `forward_auth`) makes before every request of an app
//! that is not written in Rust. The proxy forwards the browser's headers; the answer is
//! 2xx with headers naming the session for the upstream app, 401 without a live
//! session (with a `Set-Cookie` that clears a dead cookie), or 403 when a required
//! privilege is missing or the session is bound to another address.
//!
//! The credential is the app's session cookie (the policy's `cookie_name`, or its
//! `__Host-` form), read as sessiond-axum reads it ([`sessiond_core::find_cookie`]: two
//! cookies of the name are none), or a session token as `Authorization: Bearer`. The
//! check counts as the session's activity, coalesced like every touch; the client
//! address (for `bind_ip`) is the trusted-proxy rule's ([`crate::auth::ClientAddr`]).

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sessiond_core::{CookieFound, Error, Resolve, Session, Token};
use utoipa::IntoParams;

use super::Query;
use crate::auth::{ClientAddr, OverHttps};
use crate::error::ApiError;
use crate::state::SharedState;

/// The session's public id.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("x-sessiond-session");
/// The session's user (empty for a guest).
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-sessiond-user");
/// The session's privileges, comma-separated.
pub const PRIVILEGES_HEADER: HeaderName = HeaderName::from_static("x-sessiond-privileges");
/// `true` for a guest session (no user, no privileges), else `false`.
pub const GUEST_HEADER: HeaderName = HeaderName::from_static("x-sessiond-guest");

/// Forward-auth options, set per location in the proxy's configuration. Other query
/// parameters are ignored: some proxies pass the browser's own query on (Caddy does,
/// unless its `uri` ends with `?`), and a page's `?page=2` must not fail its check.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ForwardQuery {
    /// A privilege the session must hold, else 403 (e.g. `WebAdmin` on `/admin`).
    pub privilege: Option<String>,
}

/// Where the credential came from: a cookie (then which name, to clear it) or a bearer
/// token.
enum Credential {
    Cookie { name: String, token: Token },
    Bearer(Token),
}

/// Whether the request carries a live session of `app`, for a reverse proxy.
#[utoipa::path(get, path = "/v1/apps/{app}/forward-auth", tag = "session",
    params(("app" = String, Path, description = "App name"), ForwardQuery),
    responses(
        (status = 400, description = "`privilege` given twice", body = crate::views::ErrorBody),
        (status = 200, description = "A live session: `X-Sessiond-Session`, `X-Sessiond-User` (empty for a guest), `X-Sessiond-Privileges` (comma-separated) and `X-Sessiond-Guest` name it for the upstream app"),
        (status = 401, description = "No session cookie or token, or one of no live session (a dead cookie is cleared by `Set-Cookie`)", body = crate::views::ErrorBody),
        (status = 403, description = "The session lacks `privilege`, or is bound to another address (bind_ip)", body = crate::views::ErrorBody),
        (status = 404, description = "No such app", body = crate::views::ErrorBody),
        (status = 503, description = "Store unavailable", body = crate::views::ErrorBody)))]
pub async fn forward_auth(
    State(st): State<SharedState>,
    app: Result<Path<String>, axum::extract::rejection::PathRejection>,
    ClientAddr(ip): ClientAddr,
    Query(q): Query<ForwardQuery>,
    OverHttps(https): OverHttps,
    headers: HeaderMap,
) -> Response {
    // A path that does not decode names no app.
    let app = app.map_or_else(|_| String::new(), |Path(a)| a);
    let policy = match st.manager.policy(&app) {
        Ok(p) if !app.starts_with(sessiond_core::INTERNAL_APP_MARK) => p,
        _ => return ApiError::from(Error::UnknownApp(app)).into_response(),
    };
    // Over HTTPS only the `__Host-` cookie counts (no sibling subdomain can set it), as
    // sessiond-axum reads it: the proxy says HTTPS by `X-Forwarded-Proto`.

    let Some(credential) = credential(&headers, &policy.cookie_name, https) else {
        return refused(None, "no session cookie or token was sent");
    };
    let token = match &credential {
        Credential::Cookie { token, .. } | Credential::Bearer(token) => token,
    };
    let resolved = st
        .manager
        .resolve_in(
            Some(app.as_str().into()),
            token,
            Resolve { touch: true, ip },
        )
        .await;
    match resolved {
        Ok(s) => match &q.privilege {
            Some(p) if !s.privileges.contains(p) => ApiError::new(
                StatusCode::FORBIDDEN,
                "privilege_required",
                format!("this page needs the privilege {}", sessiond_core::quoted(p)),
            )
            .into_response(),
            _ => admitted(&s),
        },
        // Unknown: cleared only when the token carries this app's prefix, since another
        // app on the same host may use the same cookie name for its live sessions.
        Err(Error::InvalidToken) => refused(
            Some(&credential).filter(|_| ours(&policy, &app, token)),
            "the session cookie or token matches no session",
        ),
        Err(Error::SessionClosed(c)) => refused(
            Some(&credential),
            &format!("the session was closed ({})", c.reason),
        ),
        Err(Error::IpMismatch) => ApiError::new(
            StatusCode::FORBIDDEN,
            "ip_mismatch",
            "this session is bound to the address that opened it",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The session's credential: a bearer token first, else the app's cookie: over HTTPS
/// only its `__Host-` form, over plain HTTP that form before the plain one. Internal
/// tokens (a console sign-in) are none.
fn credential(headers: &HeaderMap, cookie_name: &str, https: bool) -> Option<Credential> {
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
    {
        let token = Token::from_client(bearer);
        return (!token.is_internal()).then_some(Credential::Bearer(token));
    }
    let lines = || headers.get_all(COOKIE).into_iter().map(|v| v.as_bytes());
    let names = [format!("__Host-{cookie_name}"), cookie_name.to_string()];
    for name in names.into_iter().take(if https { 1 } else { 2 }) {
        match sessiond_core::find_cookie(lines(), &name) {
            CookieFound::One(v) => {
                let token = Token::from_client(&v);
                return (!token.is_internal()).then_some(Credential::Cookie { name, token });
            }
            CookieFound::Many => return None,
            CookieFound::None => {}
        }
    }
    None
}

/// Whether `token` was made for `app`: its prefix is the app's own (an app whose tokens
/// carry the client's address cannot tell).
fn ours(policy: &sessiond_core::Policy, app: &str, token: &Token) -> bool {
    let prefix = token.expose().split_once(':').map(|(p, _)| p);
    match &policy.prefix {
        sessiond_core::TokenPrefix::AppName => prefix == Some(app),
        sessiond_core::TokenPrefix::Fixed(p) => prefix == Some(p.as_str()),
        sessiond_core::TokenPrefix::ClientIp => false,
    }
}

/// 200 with the headers the upstream app reads.
fn admitted(s: &Session) -> Response {
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    let mut put = |name: HeaderName, value: &str| match HeaderValue::from_str(value) {
        Ok(v) => {
            h.insert(name, v);
        }
        Err(_) => {
            tracing::warn!(session = %s.id, header = %name, "a value is not a header value; left out")
        }
    };
    put(SESSION_HEADER, &s.id.to_string());
    // Always sent, empty for a guest: a proxy that copies a header the answer lacks
    // may pass the client's own, or (Caddy 2.6) a literal placeholder.
    put(USER_HEADER, s.user.as_deref().unwrap_or(""));
    let privileges: Vec<&str> = s.privileges.iter().collect();
    put(PRIVILEGES_HEADER, &privileges.join(","));
    let guest = s.user.is_none() && s.privileges.is_empty();
    put(GUEST_HEADER, if guest { "true" } else { "false" });
    res
}

/// 401, clearing the cookie that named no live session (the proxy passes the
/// `Set-Cookie` on to the browser; see docs/PROXIES.md).
fn refused(credential: Option<&Credential>, message: &str) -> Response {
    let mut res = ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message).into_response();
    if let Some(Credential::Cookie { name, .. }) = credential {
        // The attributes the cookie was set with, as far as they matter to browsers
        // matching it: `__Host-` ones are Secure with Path=/.
        let secure = if name.starts_with("__Host-") {
            "; Secure"
        } else {
            ""
        };
        let line = format!(
            "{name}=; Path=/; HttpOnly; SameSite=Lax{secure}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
        if let Ok(v) = HeaderValue::from_str(&line) {
            res.headers_mut().append(SET_COOKIE, v);
        }
    }
    res
}
