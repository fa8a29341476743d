//! Identity and credentials: the public [`SessionId`], the secret [`Token`] a client
//! holds, and the [`TokenHash`] that is all a store ever keeps of it.
//!
//! A token is `<prefix>:<key>` (the Gambas form) where `<key>` is 128 bits from the OS
//! CSPRNG in lowercase hex. Tokens carry full entropy, so a single fast SHA-256 is the
//! right hash: there is nothing to brute-force, and a leaked store yields no usable token.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The public handle of a session: a UUIDv7, so ids sort by creation time.
///
/// It names a session in URLs, lists and logs; it never grants access.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        SessionId(Uuid::now_v7())
    }

    /// The id as a 128-bit integer (the UUID's big-endian value).
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The hyphenated lowercase text of the id (as it serialises), written into `buf`.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }

    /// Rebuilds an id from [`SessionId::as_u128`].
    pub fn from_u128(v: u128) -> Self {
        SessionId(Uuid::from_u128(v))
    }

    /// The lowest 64 bits, which are random in a UUIDv7: a good, cheap hash or shard key.
    pub fn low_bits(&self) -> u64 {
        self.0.as_u128() as u64
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Text that is not a session id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a session id (expected a UUID such as 0192f0c1-7a3b-7cde-8f01-23456789abcd)")]
pub struct BadSessionId;

impl FromStr for SessionId {
    type Err = BadSessionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SessionId).map_err(|_| BadSessionId)
    }
}

/// The secret bearer credential of a session, `<prefix>:<key>`.
///
/// `Debug` never shows the secret, so a token that slips into a log line stays secret.
/// Its hash is computed once, on first use (a request resolves, writes and maybe
/// rotates through the same token; each SHA-256 costs about a microsecond).
#[derive(Clone)]
pub struct Token {
    text: String,
    hash: OnceLock<TokenHash>,
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.text == other.text
    }
}

impl Eq for Token {}

/// Bytes of CSPRNG output in a token key (128 bits).
pub const TOKEN_KEY_BYTES: usize = 16;

/// The longest prefix a token may carry.
pub const MAX_TOKEN_PREFIX: usize = 64;

impl Token {
    /// A new token with `prefix` and 128 fresh random bits.
    ///
    /// The prefix is cleaned to what is safe in a cookie value: characters other than
    /// ASCII letters, digits and `.-_[]` are dropped, and it is cut to
    /// [`MAX_TOKEN_PREFIX`] bytes.
    pub fn generate(prefix: &str) -> Token {
        let prefix: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']'))
            .take(MAX_TOKEN_PREFIX)
            .collect();
        Self::with_prefix(&prefix)
    }

    /// A new token of a session of an internal app (`app` is its name, which starts with
    /// [`crate::INTERNAL_APP_MARK`]; no configured app's name can): the name is the
    /// prefix, and since [`Token::generate`] never writes that mark,
    /// [`Token::is_internal`] tells such a token apart by its text alone.
    pub(crate) fn generate_internal(app: &str) -> Token {
        debug_assert!(app.starts_with(crate::INTERNAL_APP_MARK));
        Self::with_prefix(app)
    }

    /// Whether this token names a session of an internal app: its prefix is the app's
    /// name, which starts with [`crate::INTERNAL_APP_MARK`], a character
    /// [`Token::generate`] never writes. The HTTP API's session routes refuse such
    /// tokens as unknown.
    pub fn is_internal(&self) -> bool {
        self.text.starts_with(crate::INTERNAL_APP_MARK)
    }

    fn with_prefix(prefix: &str) -> Token {
        let mut key = [0u8; TOKEN_KEY_BYTES];
        // The OS CSPRNG failing is not something a session manager can work around.
        getrandom::fill(&mut key).expect("the OS random number generator is unavailable");
        let mut s = String::with_capacity(prefix.len() + 1 + 2 * TOKEN_KEY_BYTES);
        s.push_str(prefix);
        s.push(':');
        for b in key {
            s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
            s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
        }
        Token::from_client(s)
    }

    /// Wraps a token received from a client (cookie or `Authorization` header).
    pub fn from_client(s: impl Into<String>) -> Token {
        Token {
            text: s.into(),
            hash: OnceLock::new(),
        }
    }

    /// The secret text, to hand to the client once. Never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The hash a store keeps and looks the session up by.
    pub fn hash(&self) -> TokenHash {
        *self.hash.get_or_init(|| TokenHash::of(&self.text))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a store keeps of a token: the first 128 bits of its SHA-256.
///
/// 128 bits keep lookups collision-free and preimages out of reach while halving the
/// index size of a full digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenHash(pub u128);

impl TokenHash {
    /// The hash of a token's text.
    pub fn of(token: &str) -> TokenHash {
        let d = Sha256::digest(token.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        TokenHash(u128::from_be_bytes(b))
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        String::from(self.encode(&mut [0; 32]))
    }

    /// [`TokenHash::to_hex`] written into `buf`, without allocating.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 32]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in buf.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (124 - 4 * i)) & 15) as usize];
        }
        // Hex digits are ASCII.
        std::str::from_utf8(buf).expect("hex digits are ASCII")
    }

    /// Parses [`TokenHash::to_hex`].
    pub fn from_hex(s: &str) -> Option<TokenHash> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(TokenHash)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({:08x}…)", (self.0 >> 96) as u32)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.encode(&mut [0; 32]))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TokenHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad token hash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_prefix_and_128_bit_hex_key() {
        let t = Token::generate("shop");
        let (p, k) = t.expose().split_once(':').unwrap();
        assert_eq!(p, "shop");
        assert_eq!(k.len(), 32);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(Token::generate("shop").expose(), t.expose());
    }

    #[test]
    fn prefix_is_cleaned_and_ip_prefixes_survive() {
        let t = Token::generate("10.254.3.151");
        assert!(t.expose().starts_with("10.254.3.151:"));
        let t = Token::generate("a;b c\"d");
        assert!(t.expose().starts_with("abcd:"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::generate("x");
        assert!(!format!("{t:?}").contains(&t.expose()[2..]));
    }

    #[test]
    fn hash_is_stable_and_round_trips_through_hex() {
        let h = TokenHash::of("app:00");
        assert_eq!(h, TokenHash::of("app:00"));
        assert_ne!(h, TokenHash::of("app:01"));
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        for v in [0, 1, 0xabc, u128::MAX, h.0] {
            assert_eq!(TokenHash(v).to_hex(), format!("{v:032x}"));
        }
        let id = SessionId::new();
        assert_eq!(id.encode(&mut [0; 36]), id.to_string());
    }

    #[test]
    fn ids_are_time_ordered_and_parse_back() {
        let a = SessionId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = SessionId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<SessionId>().unwrap(), a);
        assert!("nope".parse::<SessionId>().is_err());
    }
}
