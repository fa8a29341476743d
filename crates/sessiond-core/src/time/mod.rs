//! Time as the engine sees it: [`Timestamp`] (milliseconds since the Unix epoch), the
//! injected [`Clock`] every time-based rule reads, so tests can drive expiry by hand
//! ([`ManualClock`]) instead of sleeping, and the one calendar of the workspace
//! (`calendar.rs`: [`Date`], a day to and from a count of days since 1970-01-01).

mod calendar;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use calendar::civil_from_days;
pub use calendar::{BadDate, Date};

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The latest representable time; used as "never".
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// This time plus a duration (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// Whole milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// RFC 3339 text in UTC with millisecond precision, e.g. `2026-11-21T22:00:37.123Z`
    /// (the `Display` form).
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_string()
    }

    /// The RFC 3339 text without an allocation (what `Display` writes), for hot paths
    /// such as serialising sessions: years 0 to 9999 (the clock's range and more).
    ///
    /// ```
    /// use sessiond_core::Timestamp;
    /// assert_eq!(Timestamp(1_795_298_437_123).rfc3339().as_str(), "2026-11-21T22:00:37.123Z");
    /// ```
    pub fn rfc3339(self) -> Rfc3339 {
        let secs = self.0 / 1000;
        let ms = (self.0 % 1000) as u32;
        let rem = (secs % 86_400) as u32;
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y.clamp(0, 9999) as u32);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 3, ms);
        Rfc3339(b)
    }
}

/// A timestamp's RFC 3339 text, held inline (see [`Timestamp::rfc3339`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339([u8; 24]);

impl Rfc3339 {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("0000-00-00T00:00:00.000Z")
    }
}

impl std::fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.rfc3339().as_str())
    }
}

/// The source of "now" for every rule of the engine.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(d.as_millis() as u64)
    }
}

/// A clock that only moves when told to: tests use it to cross timeouts instantly.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicU64::new(start.0))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_dates() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_298_437_123).to_rfc3339(),
            "2026-11-21T22:00:37.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn the_fast_text_matches_formatting_field_by_field() {
        // From 1970 to past 2200, in steps that visit every month, hour and millisecond
        // pattern.
        let mut t = 0u64;
        while t < 7_500_000_000_000 {
            let ts = Timestamp(t);
            let secs = t / 1000;
            let rem = secs % 86_400;
            let (y, m, d) = civil_from_days((secs / 86_400) as i64);
            let expected = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                t % 1000
            );
            assert_eq!(ts.rfc3339().as_str(), expected, "{t}");
            assert_eq!(ts.to_string(), expected);
            t += 3_600_123_457;
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp(1000));
        assert_eq!(c.now(), Timestamp(1000));
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now(), Timestamp(3000));
    }
}
