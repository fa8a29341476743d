//! The session cookie on the wire: finding it in a request's `Cookie` headers and
//! writing the `Set-Cookie` line that sets or removes it. Hand-written rather than a
//! cookie crate because the layer needs exactly one cookie with fixed attributes, and
//! the attributes are the security contract, so they are spelled out here.

use std::fmt::Write as _;
use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
pub(crate) use sessiond_core::CookieFound as Found;

/// How the session cookie is written (all but the per-request `Secure` decision).
#[derive(Debug, Clone)]
pub(crate) struct CookieSpec {
    /// The configured name, without the `__Host-` prefix.
    pub name: String,
    /// `Path` attribute.
    pub path: String,
    /// `Domain` attribute, if any.
    pub domain: Option<String>,
    /// `Max-Age` attribute, if the cookie should outlive the browser session.
    pub max_age: Option<Duration>,
    /// Always send `Secure`.
    pub secure: bool,
    /// When the name takes the `__Host-` prefix.
    pub host_prefix: HostPrefix,
}

/// When the cookie's name takes the `__Host-` prefix, which browsers accept only on a
/// `Secure`, `Path=/` cookie without a `Domain`, and which no other host (a sibling
/// subdomain, a plain-HTTP page) can then set or overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostPrefix {
    /// Whenever the cookie can carry it: `Path=/`, no `Domain`, and `Secure` on this
    /// request (the default).
    Auto,
    /// Always (forces `Secure`, `Path=/` and no `Domain`).
    Always,
    /// Never.
    Never,
}

impl CookieSpec {
    /// Whether the cookie of a request that is `secure` (or not) carries the prefix.
    pub fn prefixed(&self, secure: bool) -> bool {
        match self.host_prefix {
            HostPrefix::Always => true,
            HostPrefix::Never => false,
            HostPrefix::Auto => {
                (secure || self.secure) && self.path == "/" && self.domain.is_none()
            }
        }
    }

    /// The name as it travels on a request that is `secure` (or not).
    pub fn wire_name(&self, secure: bool) -> String {
        if self.prefixed(secure) {
            format!("__Host-{}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// The `Set-Cookie` value that hands `token` to the browser.
    pub fn set(&self, token: &str, secure: bool) -> String {
        let mut out = format!("{}={token}", self.wire_name(secure));
        self.attributes(&mut out, secure);
        if let Some(age) = self.max_age {
            let _ = write!(out, "; Max-Age={}", age.as_secs());
        }
        out
    }

    /// The `Set-Cookie` value that removes the cookie. It repeats the path, domain and
    /// `Secure` of the cookie it removes, since browsers match on them.
    pub fn remove(&self, secure: bool) -> String {
        let mut out = format!("{}=", self.wire_name(secure));
        self.attributes(&mut out, secure);
        out.push_str("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        out
    }

    fn attributes(&self, out: &mut String, secure: bool) {
        let prefixed = self.prefixed(secure);
        if prefixed {
            out.push_str("; Path=/");
        } else {
            let _ = write!(out, "; Path={}", self.path);
            if let Some(d) = &self.domain {
                let _ = write!(out, "; Domain={d}");
            }
        }
        out.push_str("; HttpOnly; SameSite=Lax");
        if secure || self.secure || prefixed {
            out.push_str("; Secure");
        }
    }
}

/// Whether `name` can be a cookie name: RFC 6265 token characters.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `v` is safe as a `Path` or `Domain` attribute value.
pub(crate) fn valid_attribute(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

/// The cookie `name` in a request's headers ([`sessiond_core::find_cookie`]).
pub(crate) fn find(headers: &HeaderMap, name: &str) -> Found {
    sessiond_core::find_cookie(headers.get_all(COOKIE).iter().map(|v| v.as_bytes()), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn spec() -> CookieSpec {
        CookieSpec {
            name: "SESSION".into(),
            path: "/app".into(),
            domain: Some("example.com".into()),
            max_age: None,
            secure: false,
            host_prefix: HostPrefix::Auto,
        }
    }

    fn one(h: &HeaderMap, name: &str) -> Option<String> {
        match find(h, name) {
            Found::One(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn finds_the_named_cookie_among_others_and_headers() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; SESSIONX=2"));
        h.append(
            COOKIE,
            HeaderValue::from_static("b=2;  SESSION=app:00ff ; c=3"),
        );
        assert_eq!(one(&h, "SESSION").as_deref(), Some("app:00ff"));
        assert_eq!(find(&h, "nope"), Found::None);
    }

    #[test]
    fn skips_values_that_cannot_be_tokens() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("SESSION=a\\b"));
        assert_eq!(find(&h, "SESSION"), Found::None);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("SESSION=\"x:1\""));
        assert_eq!(one(&h, "SESSION").as_deref(), Some("x:1"));
    }

    #[test]
    fn odd_bytes_in_other_cookies_do_not_hide_the_session() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9;\tSESSION=app:01\t; x=\"").unwrap(),
        );
        assert_eq!(one(&h, "SESSION").as_deref(), Some("app:01"));
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"SESSION=caf\xc3\xa9").unwrap(),
        );
        assert_eq!(find(&h, "SESSION"), Found::None, "not a token: skipped");
    }

    #[test]
    fn two_cookies_of_the_name_are_neither_believed() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("SESSION=app:01; a=1"));
        h.append(COOKIE, HeaderValue::from_static("SESSION=app:02"));
        assert_eq!(find(&h, "SESSION"), Found::Many);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("SESSION=; SESSION=app:02"));
        assert_eq!(find(&h, "SESSION"), Found::Many, "an empty one counts too");
    }

    #[test]
    fn the_prefix_comes_by_default_with_secure_root_and_no_domain() {
        let root = CookieSpec {
            path: "/".into(),
            domain: None,
            ..spec()
        };
        assert_eq!(root.wire_name(true), "__Host-SESSION");
        assert_eq!(root.wire_name(false), "SESSION");
        assert_eq!(spec().wire_name(true), "SESSION", "a Domain forbids it");
        let never = CookieSpec {
            host_prefix: HostPrefix::Never,
            ..root.clone()
        };
        assert_eq!(never.wire_name(true), "SESSION");
        let always_secure = CookieSpec {
            secure: true,
            ..root
        };
        assert_eq!(always_secure.wire_name(false), "__Host-SESSION");
    }

    #[test]
    fn set_and_remove_carry_the_same_scope() {
        let s = spec();
        assert_eq!(
            s.set("t:1", true),
            "SESSION=t:1; Path=/app; Domain=example.com; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            s.remove(false),
            "SESSION=; Path=/app; Domain=example.com; HttpOnly; SameSite=Lax; \
             Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn host_prefix_forces_secure_root_path_and_no_domain() {
        let s = CookieSpec {
            host_prefix: HostPrefix::Always,
            max_age: Some(Duration::from_secs(60)),
            ..spec()
        };
        assert_eq!(
            s.set("t:1", false),
            "__Host-SESSION=t:1; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
    }

    #[test]
    fn names_and_attributes_are_checked() {
        assert!(valid_name("4DSID_MyApp"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a=b"));
        assert!(valid_attribute("/x"));
        assert!(!valid_attribute("/x; Secure"));
    }
}
