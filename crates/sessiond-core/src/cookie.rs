//! [`find_cookie`]: the session cookie in a request's `Cookie` headers, read the one way
//! the server (forward-auth) and sessiond-axum both read it: exactly one cookie of the
//! name, and a value that can be a token, or nothing is believed.

/// Longest cookie value taken as a token; anything longer cannot be one.
const MAX_TOKEN_LEN: usize = 256;

/// What a request's `Cookie` headers hold under the session cookie's name.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieFound {
    /// No cookie of that name that could be a token.
    None,
    /// Exactly one cookie of that name, and it could be a token.
    One(String),
    /// Two or more cookies of that name. Browsers send every cookie whose domain and
    /// path match, so a sibling subdomain or a deeper path can plant a second one (cookie
    /// tossing); neither can be told from the other, so none is believed.
    Many,
}

/// The cookie `name` in a request's `Cookie` header lines (as bytes): its value when
/// there is exactly one and it could be a token (cookie-octets only, not empty, at most
/// 256 bytes), so a value that cannot be one never costs a store lookup.
///
/// ```
/// use sessiond_core::{find_cookie, CookieFound};
/// let lines: [&[u8]; 2] = [b"a=1; SESSION=shop:00ff", b"b=2"];
/// assert_eq!(find_cookie(lines, "SESSION"), CookieFound::One("shop:00ff".into()));
/// let tossed: [&[u8]; 1] = [b"SESSION=shop:01; SESSION=shop:02"];
/// assert_eq!(find_cookie(tossed, "SESSION"), CookieFound::Many);
/// ```
pub fn find_cookie<'a>(lines: impl IntoIterator<Item = &'a [u8]>, name: &str) -> CookieFound {
    let name = name.as_bytes();
    let mut found = CookieFound::None;
    let mut seen = 0usize;
    for header in lines {
        for pair in header.split(|b| *b == b';') {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != name {
                continue;
            }
            seen += 1;
            if seen > 1 {
                return CookieFound::Many;
            }
            let v = pair[eq + 1..].trim_ascii();
            let v = match v {
                [b'"', inner @ .., b'"'] => inner,
                _ => v,
            };
            if !v.is_empty() && v.len() <= MAX_TOKEN_LEN && v.iter().all(|b| is_cookie_octet(*b)) {
                // Cookie-octets are ASCII.
                if let Ok(v) = std::str::from_utf8(v) {
                    found = CookieFound::One(v.to_owned());
                }
            }
        }
    }
    found
}

/// RFC 6265 `cookie-octet`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}
