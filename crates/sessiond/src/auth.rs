//! Who is calling: [`SessionToken`] (a session's own token), [`ClientAddr`] (the
//! client's address, behind trusted proxies) and [`over_https`] (whether the client's
//! request came over HTTPS). Operator credentials (the admin token, app keys) are read
//! only by the scopes of [`crate::api::scope`], which check them against the route.
//! Every credential travels as `Authorization: Bearer <secret>`; secrets are compared
//! by their SHA-256 digests and never logged.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sessiond_core::Token;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::SharedState;

/// The TCP peer of a connection, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Put in a request's extensions by the server when its connection is TLS: the one
/// first-hand proof that the request came over HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The secret of `Authorization: Bearer <secret>`, if the request sends one.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|s| !s.is_empty())
}

/// A session's own token.
#[derive(Debug, Clone)]
pub struct SessionToken(pub Token);

impl FromRequestParts<SharedState> for SessionToken {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        // Measured before it is copied: a client chooses how long the header is.
        match bearer(parts)
            .filter(|t| t.len() <= 256)
            .map(Token::from_client)
        {
            // A session of an internal app (a console sign-in) acts only through the
            // server's own pages, never through the API's session routes.
            Some(t) if !t.is_internal() => Ok(SessionToken(t)),
            Some(_) => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token matches no session; open a new one",
            )),
            None => Err(ApiError::unauthorized(
                "send the session token as Authorization: Bearer <token>",
            )),
        }
    }
}

/// The client's address: the TCP peer, or when the peer is a trusted proxy the nearest
/// untrusted `X-Forwarded-For` hop from the right ([`sessiond_core::client_address`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<SharedState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts, |ip| {
            state.trusted_proxies.contains(&ip)
        })))
    }
}

/// The client's address of a request (see [`ClientAddr`]), for extractors of other
/// states (the console's). None without a TCP peer.
pub fn client_addr(parts: &Parts, trusted: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
    let peer = parts.extensions.get::<PeerAddr>()?.0.ip();
    // As bytes: a line with bytes that are not text still holds the hops the proxies
    // appended after the client's part.
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes());
    Some(sessiond_core::client_address(peer, forwarded, trusted))
}

/// Whether the request came over HTTPS ([`over_https`]), as an extractor.
#[derive(Debug, Clone, Copy)]
pub struct OverHttps(pub bool);

impl FromRequestParts<SharedState> for OverHttps {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        Ok(OverHttps(over_https(
            &parts.extensions,
            &parts.headers,
            peer,
            |ip| state.trusted_proxies.contains(&ip),
        )))
    }
}

/// Whether the request came over HTTPS: its connection is TLS (the server marked it
/// [`OverTls`]), or the TCP peer is a trusted proxy and `X-Forwarded-Proto` says so
/// under the same right-to-left rule as [`ClientAddr`]
/// ([`sessiond_core::forwarded_https`], shared with sessiond-axum): the value read is
/// the one written about the client's hop, never one the client sent itself. A header
/// from anyone else is not believed, and neither is the request line (a client may send
/// an absolute `https://` URI over plain HTTP).
pub fn over_https(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    peer: Option<IpAddr>,
    trusted: impl Fn(IpAddr) -> bool,
) -> bool {
    if extensions.get::<OverTls>().is_some() {
        return true;
    }
    let Some(peer) = peer else {
        return false;
    };
    let lines = |name: &'static str| headers.get_all(name).into_iter().map(|v| v.as_bytes());
    sessiond_core::forwarded_https(
        peer,
        lines("x-forwarded-for"),
        lines("x-forwarded-proto"),
        trusted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Extensions, HeaderMap, HeaderValue};

    fn https(peer: &str, values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-proto", HeaderValue::from_str(v).unwrap());
        }
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        over_https(&Extensions::new(), &h, Some(peer.parse().unwrap()), |ip| {
            ip == proxy
        })
    }

    #[test]
    fn forwarded_proto_is_believed_from_a_trusted_proxy_only_and_read_from_the_right() {
        assert!(https("10.0.0.1", &["https"]));
        assert!(https("10.0.0.1", &["HTTPS"]));
        assert!(https("10.0.0.1", &["http, https"]));
        assert!(https("10.0.0.1", &["http", "https"]));
        assert!(
            !https("10.0.0.1", &["https, http"]),
            "the client wrote the first"
        );
        assert!(!https("10.0.0.1", &["https", "http"]));
        assert!(!https("10.0.0.1", &[]));
        assert!(!https("192.0.2.9", &["https"]), "not a trusted proxy");
        let none = HeaderMap::new();
        let mut tls = Extensions::new();
        tls.insert(OverTls);
        assert!(over_https(&tls, &none, None, |_| false), "a TLS connection");
        assert!(
            !over_https(&Extensions::new(), &none, None, |_| false),
            "nothing says HTTPS"
        );
    }
}
