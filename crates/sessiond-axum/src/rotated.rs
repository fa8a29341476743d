//! [`Rotated`]: the tokens this layer replaced in the last half minute, so that a
//! request still carrying one (sent by the browser before the login's answer came
//! back: a parallel XHR, a second tab) does not become a new guest whose cookie would
//! replace the signed-in one. Such a request reads as a guest but cannot create a
//! session ([`crate::SessionError::Rotated`]); the browser's next request carries the
//! new cookie. The old token gives no access to the session: fixation protection
//! stays whole. Node-local: behind a balancer that is not sticky, a late request that
//! reaches another node is a plain guest there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sessiond_core::TokenHash;

/// How long a replaced token is remembered.
const KEEP: Duration = Duration::from_secs(30);
/// Most tokens remembered (the oldest are forgotten first past it).
const MAX: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Rotated {
    recent: Mutex<HashMap<TokenHash, Instant>>,
}

impl Rotated {
    /// Remembers that `old` was replaced just now.
    pub(crate) fn insert(&self, old: TokenHash) {
        let mut m = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if m.len() >= MAX {
            m.retain(|_, at| now.duration_since(*at) < KEEP);
            if m.len() >= MAX {
                if let Some(oldest) = m.iter().min_by_key(|(_, at)| **at).map(|(h, _)| *h) {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(old, now);
    }

    /// Whether `token` was replaced within the last [`KEEP`].
    pub(crate) fn contains(&self, token: TokenHash) -> bool {
        let m = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&token).is_some_and(|at| at.elapsed() < KEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_replaced_tokens_and_stays_bounded() {
        let r = Rotated::default();
        assert!(!r.contains(TokenHash(1)));
        r.insert(TokenHash(1));
        assert!(r.contains(TokenHash(1)));
        for i in 0..(MAX as u128 + 10) {
            r.insert(TokenHash(i + 2));
        }
        assert!(r.recent.lock().unwrap().len() <= MAX);
        assert!(
            r.contains(TokenHash(MAX as u128 + 11)),
            "the newest is kept"
        );
    }
}
