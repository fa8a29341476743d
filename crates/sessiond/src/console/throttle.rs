//! The console's sign-in throttle: failed sign-ins counted per client address over a
//! minute, in a table of at most [`MAX_THROTTLED_ADDRESSES`] addresses, so nothing a
//! client sends grows it without bound. It is per node: each server counts the
//! failures it saw.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window over which failed sign-ins are counted.
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// Most client addresses the sign-in throttle remembers at once. When every one is
/// still within its window, sign-ins from other addresses are refused (429) until one
/// ends: the table's memory is bounded whatever the number of addresses.
pub const MAX_THROTTLED_ADDRESSES: usize = 10_000;

/// Failed sign-ins of one client address in the current window.
struct Failures {
    since: Instant,
    count: u32,
}

/// Failed sign-ins per client address in the current minute.
pub(super) struct Throttle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Failed sign-ins allowed per client address per minute.
    attempts_per_minute: u32,
}

impl Throttle {
    /// No failure counted yet; `attempts_per_minute` failed sign-ins allowed per
    /// client address per minute.
    pub(super) fn new(attempts_per_minute: u32) -> Self {
        Throttle {
            failures: Mutex::default(),
            attempts_per_minute,
        }
    }

    /// Whether `addr` may try to sign in now.
    pub(super) fn may_try(&self, addr: IpAddr) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get(&addr) {
            Some(f) if now.duration_since(f.since) < THROTTLE_WINDOW => {
                f.count < self.attempts_per_minute
            }
            Some(_) => {
                map.remove(&addr);
                true
            }
            None => {
                if map.len() >= MAX_THROTTLED_ADDRESSES {
                    map.retain(|_, f| now.duration_since(f.since) < THROTTLE_WINDOW);
                }
                map.len() < MAX_THROTTLED_ADDRESSES
            }
        }
    }

    /// Counts a failed sign-in from `addr`.
    pub(super) fn failed(&self, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_THROTTLED_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, f| now.duration_since(f.since) < THROTTLE_WINDOW);
            if map.len() >= MAX_THROTTLED_ADDRESSES {
                return;
            }
        }
        let f = map.entry(addr).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(f.since) >= THROTTLE_WINDOW {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }
}
