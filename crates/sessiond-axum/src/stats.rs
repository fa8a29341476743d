//! What one layer counts ([`LayerStats`]: requests it refused or treated as a guest, and
//! why), and the per-session throttle of heartbeat settings changes
//! ([`SettingsThrottle`]): each change is a durable write, so a page (or a script) that
//! flips them in a loop is held to one per second, in bursts of five.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sessiond_core::SessionId;
use tokio::time::Instant;

/// Counters of one [`crate::SessionLayer`], for the app's metrics
/// ([`crate::SessionLayer::stats`]). Each only goes up.
#[derive(Debug, Default)]
pub struct LayerStats {
    duplicate_cookies: AtomicU64,
    cross_site_refused: AtomicU64,
    settings_throttled: AtomicU64,
}

impl LayerStats {
    /// Requests that carried two or more cookies of the session's name: none was
    /// believed and the request was a guest (a sign of cookie tossing by a sibling
    /// subdomain, or of an old cookie under another path).
    pub fn duplicate_cookies(&self) -> u64 {
        self.duplicate_cookies.load(Ordering::Relaxed)
    }

    /// State-changing requests refused because another site made the browser send them.
    pub fn cross_site_refused(&self) -> u64 {
        self.cross_site_refused.load(Ordering::Relaxed)
    }

    /// Heartbeat settings changes refused with 429 (over one per second per session).
    pub fn settings_throttled(&self) -> u64 {
        self.settings_throttled.load(Ordering::Relaxed)
    }

    pub(crate) fn count_duplicate_cookies(&self) {
        self.duplicate_cookies.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_cross_site(&self) {
        self.cross_site_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_settings_throttled(&self) {
        self.settings_throttled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Changes allowed in a burst.
pub(crate) const SETTINGS_BURST: f64 = 5.0;
/// Changes per second, once the burst is spent.
pub(crate) const SETTINGS_PER_SECOND: f64 = 1.0;
/// Sessions tracked before the full buckets (which say nothing) are dropped.
const TRACKED: usize = 10_000;

/// A token bucket per session for heartbeat settings changes. Only sessions that exist
/// reach it (the change needs a valid cookie), and the map keeps only buckets that are
/// not full, so it holds at most the sessions that changed settings in the last few
/// seconds.
#[derive(Debug, Default)]
pub(crate) struct SettingsThrottle {
    buckets: Mutex<HashMap<SessionId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * SETTINGS_PER_SECOND).min(SETTINGS_BURST)
    }
}

impl SettingsThrottle {
    /// Takes one change for session `id`: `Err(wait)` when its bucket is empty, `wait`
    /// being how long until the next change is allowed.
    pub(crate) fn take(&self, id: SessionId) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TRACKED {
            buckets.retain(|_, b| b.refilled(now) < SETTINGS_BURST);
            if buckets.len() >= TRACKED {
                // More sessions changing settings at once than tracked: forgetting them
                // only gives each its burst back.
                buckets.clear();
            }
        }
        let tokens = buckets.get(&id).map_or(SETTINGS_BURST, |b| b.refilled(now));
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / SETTINGS_PER_SECOND;
            return Err(Duration::from_secs_f64(wait));
        }
        buckets.insert(
            id,
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn five_at_once_then_one_per_second() {
        let t = SettingsThrottle::default();
        let id = SessionId::new();
        for _ in 0..5 {
            t.take(id).unwrap();
        }
        let wait = t.take(id).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Another session has its own bucket.
        t.take(SessionId::new()).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        t.take(id).unwrap();
        assert!(t.take(id).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            t.take(id).unwrap();
        }
        assert!(t.take(id).is_err(), "the burst does not grow past five");
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded() {
        let t = SettingsThrottle::default();
        for _ in 0..(3 * TRACKED) {
            t.take(SessionId::new()).unwrap();
        }
        assert!(t.buckets.lock().unwrap().len() <= TRACKED);
    }
}
