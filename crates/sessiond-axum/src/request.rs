//! What the layer reads from a request before the handler runs, each from the one
//! source that can be trusted for it:
//!
//! - **the client's address**: the TCP peer, or past trusted proxies by
//!   `X-Forwarded-For` from the right ([`sessiond_core::client_address`]);
//! - **whether the browser used HTTPS**: the app says so ([`ServedOverTls`] on the
//!   request, or `with_secure`), or a trusted proxy does by `X-Forwarded-Proto` under the
//!   same right-to-left rule ([`sessiond_core::forwarded_https`]). Never the request line:
//!   any client can send `GET https://host/` over plain HTTP;
//! - **whether another site made the browser send it** (cross-site request forgery):
//!   `Sec-Fetch-Site`, which browsers set and pages cannot, else `Origin`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request};

use crate::config::Config;
use crate::cookie::HostPrefix;

/// Put this in a request's extensions when the app itself terminated TLS for it: the
/// layer then marks the cookie `Secure` and names it `__Host-…`. An app served by
/// `axum-server` with rustls, or by its own `tokio-rustls` accept loop, adds it to the
/// router it serves over TLS (and only to that one):
///
/// ```
/// use axum::{routing::get, Extension, Router};
/// use sessiond_axum::{ServedOverTls, SessionLayer};
///
/// # let manager = sessiond_axum::doc_manager("shop");
/// let over_tls: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(SessionLayer::new(manager, "shop")?)
///     .layer(Extension(ServedOverTls));
/// # Ok::<_, sessiond_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedOverTls;

/// The client's address: the TCP peer, or when the peer is a trusted proxy the nearest
/// untrusted `X-Forwarded-For` hop from the right. None without `ConnectInfo`.
pub(crate) fn client_ip<B>(config: &Config, req: &Request<B>) -> Option<IpAddr> {
    let peer = peer(req)?;
    Some(sessiond_core::client_address(
        peer,
        header_lines(req.headers(), "x-forwarded-for"),
        |ip| config.trusted_proxies.contains(&ip),
    ))
}

/// Whether the browser reached the app over HTTPS, as far as the app may believe.
pub(crate) fn is_secure<B>(config: &Config, req: &Request<B>) -> bool {
    if config.cookie.secure
        || config.cookie.host_prefix == HostPrefix::Always
        || req.extensions().get::<ServedOverTls>().is_some()
    {
        return true;
    }
    if !config.trust_forwarded_proto {
        return false;
    }
    let Some(peer) = peer(req) else {
        return false;
    };
    sessiond_core::forwarded_https(
        peer,
        header_lines(req.headers(), "x-forwarded-for"),
        header_lines(req.headers(), "x-forwarded-proto"),
        |ip| config.trusted_proxies.contains(&ip),
    )
}

fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
}

/// A header's lines as bytes: one with bytes that are not text still counts (the core
/// stops at its bad hop, keeping the hops proxies appended after it).
fn header_lines<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a [u8]> {
    headers.get_all(name).into_iter().map(|v| v.as_bytes())
}

/// Why a request counts as cross-site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrossSite {
    /// `Sec-Fetch-Site: cross-site` or `same-site` (a sibling subdomain or port).
    FetchSite,
    /// An `Origin` that is not this host's, or `null`.
    Origin,
}

/// Whether a request that changes state was sent by the browser on behalf of another
/// site. Safe methods never are. `Sec-Fetch-Site` decides when present (`same-origin`
/// and `none`, a user's own navigation, pass); otherwise `Origin`, which must name this
/// host (over HTTPS when the request is known to be HTTPS); a request with neither
/// comes from something that is not a current browser, which no page can drive, and
/// passes. Origins in `trusted_origins` always pass.
pub(crate) fn cross_site<B>(config: &Config, req: &Request<B>, secure: bool) -> Option<CrossSite> {
    if !config.cross_site_check
        || matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        )
    {
        return None;
    }
    let headers = req.headers();
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null").trim().to_ascii_lowercase());
    if origin
        .as_deref()
        .is_some_and(|o| config.trusted_origins.contains(o))
    {
        return None;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            _ => Some(CrossSite::FetchSite),
        };
    }
    let origin = origin?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if same_origin(&origin, host, secure) => None,
        _ => Some(CrossSite::Origin),
    }
}

/// Whether `origin` (lower case) names `host` (a `Host` header): the same host and port,
/// default ports left out, and `https` when the request is known to be HTTPS (a plain
/// request may come from an HTTPS page through a proxy that did not say so).
fn same_origin(origin: &str, host: &str, secure: bool) -> bool {
    let (scheme, rest) = match origin.split_once("://") {
        Some(("https", rest)) => ("https", rest),
        Some(("http", rest)) if !secure => ("http", rest),
        _ => return false,
    };
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let norm = |h: &str| -> String {
        let h = h.trim().to_ascii_lowercase();
        h.strip_suffix(default_port).map(str::to_owned).unwrap_or(h)
    };
    !rest.is_empty() && !rest.contains('/') && norm(rest) == norm(host)
}

/// An origin as [`crate::SessionLayer::with_trusted_origins`] takes it: `scheme://host`
/// or `scheme://host:port` (`http` or `https`, a trailing `/` allowed), in lower case;
/// none for anything else (a path, a wildcard, `null`).
///
/// ```
/// assert_eq!(sessiond_axum::parse_origin("https://Shop.Example:8443/").as_deref(), Some("https://shop.example:8443"));
/// assert_eq!(sessiond_axum::parse_origin("*"), None);
/// ```
pub fn parse_origin(origin: &str) -> Option<String> {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = o.split_once("://")?;
    let ok = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then_some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_this_host_only_with_the_right_scheme() {
        assert!(same_origin("https://shop.example", "shop.example", true));
        assert!(same_origin(
            "https://shop.example",
            "shop.example:443",
            true
        ));
        assert!(same_origin(
            "http://127.0.0.1:8044",
            "127.0.0.1:8044",
            false
        ));
        assert!(same_origin("https://shop.example", "shop.example", false));
        assert!(!same_origin("http://shop.example", "shop.example", true));
        assert!(!same_origin("https://evil.example", "shop.example", true));
        assert!(!same_origin(
            "http://127.0.0.1:9000",
            "127.0.0.1:8044",
            false
        ));
        assert!(!same_origin("null", "shop.example", false));
        assert!(!same_origin("https://shop.example/x", "shop.example", true));
        assert!(!same_origin("https://", "", true));
    }

    #[test]
    fn trusted_origins_are_checked_and_normalised() {
        assert_eq!(
            parse_origin("https://App.Example:8443/").as_deref(),
            Some("https://app.example:8443")
        );
        assert_eq!(parse_origin("ftp://x"), None);
        assert_eq!(parse_origin("https://x/path"), None);
        assert_eq!(parse_origin("https://"), None);
    }
}
