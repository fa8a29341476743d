//! [`LocalRedirect`]: where to send a browser after sign-in (`?next=`), checked to stay on
//! this site. A `next` is chosen by whoever wrote the link, so an unchecked one is an
//! open redirect (`next=//evil.example`, `next=/\t/evil.example`, which browsers read
//! as `//evil.example` once they drop the tab) or a 500 (a CR or LF cannot go in a
//! `Location` header). The only way to build one is [`LocalRedirect::parse`], so a
//! handler that answers one cannot skip the check.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Longest target kept; a longer `next` is not a link anyone needs.
const MAX_LEN: usize = 2048;

/// A path on this site to redirect to: starts with one `/`, then printable ASCII with
/// no `\`, and is not `//`-led (a host). Answers `303 See Other`.
///
/// ```
/// use sessiond_axum::LocalRedirect;
/// assert_eq!(LocalRedirect::parse("/orders?page=2").unwrap().as_str(), "/orders?page=2");
/// for hostile in ["https://evil.example", "//evil.example", "/\t/evil.example", "/\\evil", "/a\r\nSet-Cookie: x=1"] {
///     assert!(LocalRedirect::parse(hostile).is_none());
/// }
/// assert_eq!(LocalRedirect::or("//evil.example", "/home").as_str(), "/home");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRedirect(String);

impl LocalRedirect {
    /// `next`, if it is a path on this site.
    pub fn parse(next: &str) -> Option<LocalRedirect> {
        let b = next.as_bytes();
        let local = b.len() <= MAX_LEN
            && b.first() == Some(&b'/')
            && !matches!(b.get(1), Some(b'/' | b'\\'))
            && b.iter().all(|c| c.is_ascii_graphic() && *c != b'\\');
        local.then(|| LocalRedirect(next.to_owned()))
    }

    /// `next` if it is a path on this site, else `fallback`.
    ///
    /// # Panics
    /// If `fallback` itself is not one: a mistake in the app's code.
    pub fn or(next: &str, fallback: &'static str) -> LocalRedirect {
        LocalRedirect::parse(next).unwrap_or_else(|| {
            LocalRedirect::parse(fallback)
                .unwrap_or_else(|| panic!("fallback {fallback:?} is not a path on this site"))
        })
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl IntoResponse for LocalRedirect {
    fn into_response(self) -> Response {
        match HeaderValue::from_str(&self.0) {
            Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
            // Printable ASCII is always a header value.
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a browser does to a `Location` before resolving it: drops tabs and line
    /// breaks, reads `\` as `/`, trims C0 controls and spaces at both ends.
    fn as_browsers_read(s: &str) -> String {
        s.chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .map(|c| if c == '\\' { '/' } else { c })
            .collect::<String>()
            .trim_matches(|c: char| c <= ' ')
            .to_string()
    }

    #[test]
    fn the_cases_of_the_audit() {
        for ok in ["/", "/home", "/admin?x=1&y=%2F%2F", "/a/b#c"] {
            assert_eq!(LocalRedirect::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "home",
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example/",
            "/\n/evil.example",
            "/a\rb",
            "/a\u{7f}",
            "/caf\u{e9}",
            " /home",
            "/a b",
        ] {
            assert!(LocalRedirect::parse(bad).is_none(), "{bad:?}");
        }
        assert!(LocalRedirect::parse(&format!("/{}", "a".repeat(MAX_LEN))).is_none());
    }

    #[test]
    fn the_answer_is_a_303_to_the_path() {
        let res = LocalRedirect::or("/x?y=1", "/").into_response();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[header::LOCATION], "/x?y=1");
    }

    proptest! {
        /// Whatever a link says, an accepted target is a header value and, read the way
        /// browsers read it, a path on this host: never `//host` or a scheme.
        #[test]
        fn nothing_accepted_leaves_the_site(s in "[\\x00-\\x7f\\u{80}-\\u{10ffff}]{0,40}", lead in prop::sample::select(vec!["", "/", "//", "/\\", "/\t/", "\\/"])) {
            let next = format!("{lead}{s}");
            if let Some(r) = LocalRedirect::parse(&next) {
                prop_assert!(HeaderValue::from_str(r.as_str()).is_ok());
                let seen = as_browsers_read(r.as_str());
                prop_assert!(seen.starts_with('/'));
                prop_assert!(!seen.starts_with("//"), "{next:?} is read as {seen:?}");
            }
        }
    }
}
