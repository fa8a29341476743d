//! `GET /v1/apps/{app}/forward-auth`: the check a reverse proxy (nginx `auth_request`,
//! Traefik `ForwardAuth`, Caddy `forward_auth`) makes before every request of an app
//! that is not written in Rust. The proxy forwards the browser's headers; the answer is
//! 2xx with headers naming the session for the upstream app, 401 without a live
//! session (with a `Set-Cookie` that clears a dead cookie), or 403 when a required
//! privilege is missing or the session is bound to another address.
//!
//! The header names are the app's (`[apps.<name>.web]`, [`crate::web::ForwardHeaders`];
//! `X-Sessiond-*` by default). With `login=/path` a page navigation without a live
//! session is sent there (302, `next=` the page it asked for when the proxy says which
//! by `X-Forwarded-Uri`) instead of 401: for Caddy and Traefik, which pass sessiond's
//! answer on; nginx's `auth_request` cannot, and redirects with `error_page 401`.
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
use crate::auth::{ClientAddr, OverHttps, PeerAddr};
use crate::error::ApiError;
use crate::state::SharedState;

/// Forward-auth options, set per location in the proxy's configuration. Other query
/// parameters are ignored: some proxies pass the browser's own query on (Caddy does,
/// unless its `uri` ends with `?`), and a page's `?page=2` must not fail its check.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ForwardQuery {
    /// A privilege the session must hold, else 403 (e.g. `WebAdmin` on `/admin`).
    pub privilege: Option<String>,
    /// The sign-in page, a path on the app's own site (`/login`): a browser's page
    /// navigation without a live session is redirected there (302) rather than refused
    /// (401). Not for nginx, whose `auth_request` takes only 2xx, 401 and 403.
    pub login: Option<String>,
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
        (status = 400, description = "`privilege` or `login` given twice, or `login` is not a path of the site", body = crate::views::ErrorBody),
        (status = 200, description = "A live session: `X-Sessiond-Session`, `X-Sessiond-User` (empty for a guest), `X-Sessiond-Privileges` (comma-separated) and `X-Sessiond-Guest` (the app's `[apps.<name>.web]` may rename them) name it for the upstream app"),
        (status = 302, description = "With `login`: a page navigation without a live session, sent to the sign-in page (`Location`; a dead cookie is cleared by `Set-Cookie`)"),
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
    peer: Option<axum::Extension<PeerAddr>>,
    // The request itself, for its headers: a `HeaderMap` extractor would copy them, on
    // a route that runs before every request of the app.
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers();
    // A path that does not decode names no app.
    let app = app.map_or_else(|_| String::new(), |Path(a)| a);
    // Every app of the configuration has a front (internal apps have none); its
    // cookie name and token prefix are the policy's.
    let Some(front) = st.fronts.get(&app) else {
        return ApiError::from(Error::UnknownApp(app)).into_response();
    };
    let login = match q.login.as_deref().map(local_path) {
        None => None,
        Some(Some(path)) => Some(path),
        Some(None) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "login must be a path on the app's own site, such as /login",
            )
            .into_response()
        }
    };
    // Where a refusal sends the browser: the sign-in page, for a page navigation.
    let site = peer
        .filter(|p| st.trusted_proxies.contains(&p.0 .0.ip().to_canonical()))
        .and_then(|_| forwarded_host(headers))
        .map(|host| format!("{}://{host}", if https { "https" } else { "http" }));
    let sign_in = login
        .filter(|_| navigation(headers))
        .map(|path| format!("{}{}", site.unwrap_or_default(), sign_in_url(path, headers)));
    let names = &front.headers;
    // Over HTTPS only the `__Host-` cookie counts (no sibling subdomain can set it), as
    // sessiond-axum reads it: the proxy says HTTPS by `X-Forwarded-Proto`.

    let Some(credential) = credential(headers, &front, https) else {
        return refused(
            None,
            sign_in.as_deref(),
            "no session cookie or token was sent",
        );
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
            _ => admitted(&s, names),
        },
        // Unknown: cleared only when the token carries this app's prefix, since another
        // app on the same host may use the same cookie name for its live sessions.
        Err(Error::InvalidToken) => refused(
            Some(&credential).filter(|_| ours(&front.prefix, &app, token)),
            sign_in.as_deref(),
            "the session cookie or token matches no session",
        ),
        Err(Error::SessionClosed(c)) => refused(
            Some(&credential),
            sign_in.as_deref(),
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
fn credential(headers: &HeaderMap, front: &crate::web::Front, https: bool) -> Option<Credential> {
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
    let names = [front.host_cookie.as_str(), front.cookie.as_str()];
    for name in names.into_iter().take(if https { 1 } else { 2 }) {
        match sessiond_core::find_cookie(lines(), name) {
            CookieFound::One(v) => {
                let token = Token::from_client(&v);
                return (!token.is_internal()).then_some(Credential::Cookie {
                    name: name.to_string(),
                    token,
                });
            }
            CookieFound::Many => return None,
            CookieFound::None => {}
        }
    }
    None
}

/// Whether `token` was made for `app`: its prefix is the app's own (an app whose tokens
/// carry the client's address cannot tell).
fn ours(how: &sessiond_core::TokenPrefix, app: &str, token: &Token) -> bool {
    let prefix = token.expose().split_once(':').map(|(p, _)| p);
    match how {
        sessiond_core::TokenPrefix::AppName => prefix == Some(app),
        sessiond_core::TokenPrefix::Fixed(p) => prefix == Some(p.as_str()),
        sessiond_core::TokenPrefix::ClientIp => false,
    }
}

/// `path` when it is a path on the site itself: starts with one `/` (not `//` or `/\`,
/// which browsers read as another host), printable ASCII, at most 2 KiB.
fn local_path(path: &str) -> Option<&str> {
    let b = path.as_bytes();
    let ok = b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && b.len() <= 2048
        && b.iter().all(|c| c.is_ascii_graphic());
    ok.then_some(path)
}

/// Whether the forwarded request is a browser's page navigation (a redirect helps it;
/// a script's fetch or an API call needs the 401): `Sec-Fetch-Mode: navigate`, or,
/// from a browser that does not send it, a `GET` or `HEAD` accepting HTML. The method
/// is the proxy's `X-Forwarded-Method` when it sends one.
fn navigation(headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode.as_bytes() == b"navigate";
    }
    let method = headers
        .get("x-forwarded-method")
        .map_or(&b"GET"[..], |m| m.as_bytes());
    matches!(method, b"GET" | b"HEAD")
        && headers.get_all(axum::http::header::ACCEPT).iter().any(|v| {
            v.as_bytes()
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"))
        })
}

/// The site's host as the proxy names it (`X-Forwarded-Host`, one value): a host name
/// or address with an optional port, nothing else.
fn forwarded_host(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all("x-forwarded-host").iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return None;
    };
    let host = v.to_str().ok()?.trim();
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then_some(host)
}

/// The sign-in page's address (a path), with `next=` the page the browser asked for when the
/// proxy names it (`X-Forwarded-Uri`) and it is a path on the site.
fn sign_in_url(login: &str, headers: &HeaderMap) -> String {
    let next = headers
        .get("x-forwarded-uri")
        .and_then(|v| v.to_str().ok())
        .and_then(local_path);
    match next {
        None => login.to_string(),
        Some(next) => sessiond_axum::sign_in_location(login, next),
    }
}

/// 200 with the headers the upstream app reads, under the app's names.
fn admitted(s: &Session, names: &crate::web::ForwardHeaders) -> Response {
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
    put(names.session.clone(), &s.id.to_string());
    // Always sent, empty for a guest: a proxy that copies a header the answer lacks
    // may pass the client's own, or (Caddy 2.6) a literal placeholder.
    put(names.user.clone(), s.user.as_deref().unwrap_or(""));
    let privileges: Vec<&str> = s.privileges.iter().collect();
    put(names.privileges.clone(), &privileges.join(","));
    let guest = s.user.is_none() && s.privileges.is_empty();
    put(names.guest.clone(), if guest { "true" } else { "false" });
    res
}

/// 401 (or, with `sign_in`, a 302 there), clearing the cookie that named no live
/// session (the proxy passes the `Set-Cookie` on to the browser; see docs/PROXIES.md).
fn refused(credential: Option<&Credential>, sign_in: Option<&str>, message: &str) -> Response {
    let mut res = ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message).into_response();
    if let Some(location) = sign_in.and_then(|l| HeaderValue::from_str(l).ok()) {
        *res.status_mut() = StatusCode::FOUND;
        res.headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
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
