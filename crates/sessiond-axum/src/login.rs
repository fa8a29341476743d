//! [`PasswordCheck`]: a password check that a crowd of bad sign-ins cannot turn into a
//! memory or CPU exhaustion, nor into a way to lock someone out.
//!
//! A password hash worth the name (Argon2, bcrypt, scrypt) is slow and big on purpose:
//! Argon2id's default takes ~19 MiB per check. Run on `spawn_blocking` for every
//! attempt, 200 parallel bad sign-ins are 200 hashes at once, gigabytes of memory, and a
//! good sign-in queued behind them. Here:
//!
//! - **A fixed pool** of hashing threads (one per core by default) with a short, bounded
//!   queue: at most `threads` hashes at once, so memory stays at `threads` × the hash's;
//!   a full queue answers [`Throttled`] at once instead of queueing without end.
//! - **One check at a time per address** (IPv6 by /64, what one subscriber gets): a
//!   single client's storm takes one thread, and the others stay free for everyone else.
//!   An attempt counts until its hash has run, even if the client hangs up first, so
//!   dropped requests cannot stack hashes up.
//! - **Backoff per address**: after 5 failures, each further attempt from that address
//!   waits 1 s, 2 s, 4 s… up to 60 s; 15 quiet minutes reset it. A success does not:
//!   the failures may be another account's guesses from the same address.
//! - **Backoff per user**, for a guess spread over many addresses: after 10 failures, 1 s
//!   doubling up to 30 s.
//! - **An address that signed a user in before** (remembered for 30 days) skips both
//!   backoffs for that user: strangers' guesses, and other people's failures behind the
//!   same address, slow a name down only where its owner has never signed in. (The
//!   owner still waits for a check already running from their address, and a name's
//!   owner at a new address waits with the strangers.)
//!
//! Every table is bounded (10 000 entries each), so addresses that are never seen again
//! cannot grow memory. The state is per process: on several app nodes, each throttles
//! what it receives.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Failures from one address before it backs off.
const FREE_PER_ADDRESS: u32 = 5;
/// Failures for one user before strangers back off.
const FREE_PER_USER: u32 = 10;
/// The longest wait of an address.
const MAX_ADDRESS_WAIT: Duration = Duration::from_secs(60);
/// The longest wait of a user's name, for addresses that never signed them in.
const MAX_USER_WAIT: Duration = Duration::from_secs(30);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// How long an address that signed a user in is remembered as theirs.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries per table.
const TABLE_CAP: usize = 10_000;
/// Checks waiting for a thread, per thread.
const QUEUE_PER_THREAD: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// A bounded, throttled password check, shared by the sign-in handlers of an app (clone
/// it freely; clones share the pool and the tables). See the module docs for the rules.
///
/// ```
/// use sessiond_axum::PasswordCheck;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let check = PasswordCheck::new();
/// let ip = Some("203.0.113.7".parse().unwrap());
/// let ok = check.check(ip, "ann", || ("s3cret" == "s3cret").then_some("ann")).await;
/// assert_eq!(ok.unwrap(), Some("ann"));
/// # }
/// ```
#[derive(Clone)]
pub struct PasswordCheck {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("threads", &self.inner.threads)
            .finish_non_exhaustive()
    }
}

struct Inner {
    jobs: SyncSender<Job>,
    threads: usize,
    state: Mutex<Tables>,
    hasher: RandomState,
}

#[derive(Default)]
struct Tables {
    addresses: HashMap<IpAddr, Record>,
    users: HashMap<u64, Record>,
    /// (user, address) pairs that signed in, and when.
    known: HashMap<(u64, IpAddr), Instant>,
    throttled: u64,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    until: Option<Instant>,
    in_flight: bool,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            last: now,
            until: None,
            in_flight: false,
        }
    }

    /// The record as it stands at `now`: failures long past are forgotten.
    fn current(mut self, now: Instant) -> Record {
        if !self.in_flight && now.saturating_duration_since(self.last) > FORGET_AFTER {
            self = Record::new(now);
        }
        self
    }

    fn wait(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|u| *u > now)
            .map(|u| u.saturating_duration_since(now))
    }

    fn failed(&mut self, now: Instant, free: u32, max: Duration) {
        self.failures = self.failures.saturating_add(1);
        self.last = now;
        if self.failures > free {
            let doublings = (self.failures - free - 1).min(16);
            let wait = Duration::from_secs(1u64 << doublings).min(max);
            self.until = Some(now + wait);
        }
    }
}

/// A sign-in attempt that was not checked: answer it with 429 and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    retry_after: Duration,
}

impl Throttled {
    /// How long the client should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`Self::retry_after`] in whole seconds, at least one (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs()),
            )],
            "too many sign-in attempts; try again later",
        )
            .into_response()
    }
}

impl Default for PasswordCheck {
    fn default() -> Self {
        PasswordCheck::new()
    }
}

impl PasswordCheck {
    /// One hashing thread per core.
    pub fn new() -> PasswordCheck {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        PasswordCheck::with_threads(n)
    }

    /// `threads` hashing threads (at least one): at most that many checks run at once,
    /// so the hash's memory times `threads` is what a storm of sign-ins can take.
    ///
    /// # Panics
    /// If the threads cannot be started.
    pub fn with_threads(threads: usize) -> PasswordCheck {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * QUEUE_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || worker(&rx))
                .expect("start a password-check thread");
        }
        PasswordCheck {
            inner: Arc::new(Inner {
                jobs: tx,
                threads,
                state: Mutex::new(Tables::default()),
                hasher: RandomState::new(),
            }),
        }
    }

    /// How many hashes may run at once.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Attempts refused with [`Throttled`] so far.
    pub fn throttled(&self) -> u64 {
        self.tables().throttled
    }

    /// Runs `verify` (the slow hash comparison: `Some(account)` when the password is
    /// right) for a sign-in as `user` from `ip` (the layer's
    /// [`crate::Session::client_ip`]; none skips the per-address rules), unless the
    /// rules say to wait: then [`Throttled`], and `verify` does not run.
    ///
    /// `user` must be the app's canonical key of the account tried (its id, not the
    /// text typed: "1", "01" and "+1" naming one account must give one key); it is
    /// kept only as a keyed hash.
    ///
    /// Once admitted, the attempt counts until its hash has run, even if the request
    /// is dropped meanwhile (the client hung up): its address stays busy, and a hash
    /// whose requester is gone is skipped rather than run.
    pub async fn check<T, F>(
        &self,
        ip: Option<IpAddr>,
        user: &str,
        verify: F,
    ) -> Result<Option<T>, Throttled>
    where
        F: FnOnce() -> Option<T> + Send + 'static,
        T: Send + 'static,
    {
        let ip = ip.map(address_key);
        let user = self.inner.user_key(user);
        self.inner.admit(ip, user, Instant::now())?;
        let (tx, rx) = oneshot::channel();
        let inner = self.inner.clone();
        // The job reads the time on the runtime's clock, as `admit` did.
        let clock = tokio::runtime::Handle::try_current().ok();
        let job: Job = Box::new(move || {
            let _clock = clock.as_ref().map(tokio::runtime::Handle::enter);
            let out = if tx.is_closed() {
                None
            } else {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(verify)) {
                    Ok(out) => Some(out),
                    Err(_) => {
                        tracing::error!("a password check panicked; counted as a failure");
                        Some(None)
                    }
                }
            };
            inner.finish(ip, user, out.as_ref().map(Option::is_some));
            if let Some(out) = out {
                let _ = tx.send(out);
            }
        });
        // No await between admit and here: the address is marked busy exactly when a
        // job that will clear it is queued.
        if self.inner.jobs.try_send(job).is_err() {
            self.inner.finish(ip, user, None);
            return Err(self.inner.refuse(Duration::from_secs(1)));
        }
        Ok(rx.await.ok().flatten())
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner.tables()
    }

    #[cfg(test)]
    fn table_sizes(&self) -> (usize, usize, usize) {
        let t = self.tables();
        (t.addresses.len(), t.users.len(), t.known.len())
    }
}

impl Inner {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user_key(&self, user: &str) -> u64 {
        self.hasher.hash_one(user.as_bytes())
    }

    fn refuse(&self, wait: Duration) -> Throttled {
        self.tables().throttled += 1;
        Throttled { retry_after: wait }
    }

    /// Decides whether an attempt may run, and marks its address busy if so. An address
    /// that signed this user in before skips the address's backoff (another account's
    /// failures there, a shared NAT) and the user's (strangers' guesses elsewhere), but
    /// still checks one password at a time.
    fn admit(&self, ip: Option<IpAddr>, user: u64, now: Instant) -> Result<(), Throttled> {
        let mut t = self.tables();
        let known = ip.is_some_and(|ip| {
            t.known
                .get(&(user, ip))
                .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
        });
        let mut wait = None;
        if let Some(a) = ip
            .and_then(|ip| t.addresses.get(&ip))
            .map(|r| r.current(now))
        {
            if a.in_flight {
                wait = Some(Duration::from_secs(1));
            } else if !known {
                wait = a.wait(now);
            }
        }
        if wait.is_none() && !known {
            wait = t.users.get(&user).and_then(|r| r.current(now).wait(now));
        }
        if let Some(wait) = wait {
            t.throttled += 1;
            return Err(Throttled { retry_after: wait });
        }
        if let Some(ip) = ip {
            entry(&mut t.addresses, ip, now).in_flight = true;
        }
        Ok(())
    }

    /// Records how an attempt ended (`Some(true)`: signed in; `None`: it never ran)
    /// and frees its address. A success forgets the user's failures and remembers the
    /// address as theirs; it does not wipe the address's failures, which other
    /// accounts' guesses from there made.
    fn finish(&self, ip: Option<IpAddr>, user: u64, ok: Option<bool>) {
        let now = Instant::now();
        let mut t = self.tables();
        if let Some(ip) = ip {
            if let Some(r) = t.addresses.get_mut(&ip) {
                r.in_flight = false;
                if ok == Some(false) {
                    r.failed(now, FREE_PER_ADDRESS, MAX_ADDRESS_WAIT);
                }
            }
        }
        match ok {
            Some(true) => {
                t.users.remove(&user);
                if let Some(ip) = ip {
                    if t.known.len() >= TABLE_CAP {
                        t.known
                            .retain(|_, at| now.saturating_duration_since(*at) < KNOWN_FOR);
                        if t.known.len() >= TABLE_CAP {
                            drop_oldest_half(&mut t.known, |at| *at, |_| false);
                        }
                    }
                    t.known.insert((user, ip), now);
                }
            }
            Some(false) => {
                entry(&mut t.users, user, now).failed(now, FREE_PER_USER, MAX_USER_WAIT);
            }
            None => {}
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            // Every PasswordCheck clone is gone.
            Err(_) => return,
        }
    }
}

/// The key of an address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64, the
/// block one subscriber usually holds.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The record of `key` as it stands at `now` (new when absent or long quiet), room made
/// first when the table is full.
fn entry<K: Eq + std::hash::Hash + Clone>(
    table: &mut HashMap<K, Record>,
    key: K,
    now: Instant,
) -> &mut Record {
    if table.len() >= TABLE_CAP && !table.contains_key(&key) {
        prune(table, now);
    }
    let r = table.entry(key).or_insert_with(|| Record::new(now));
    *r = r.current(now);
    r
}

/// Makes room in a full table: first what says nothing any more (no failures that
/// count, nothing in flight), then, if still full, the least recently seen half.
fn prune<K: Eq + std::hash::Hash + Clone>(table: &mut HashMap<K, Record>, now: Instant) {
    table.retain(|_, r| {
        let r = r.current(now);
        r.in_flight || r.failures > 0
    });
    if table.len() >= TABLE_CAP {
        drop_oldest_half(table, |r| r.last, |r| r.in_flight);
    }
}

/// Drops the least recently seen half of `table`, but never an entry `keep` holds on
/// to (an attempt in flight, whose end must still find its record).
fn drop_oldest_half<K: Eq + std::hash::Hash + Clone, V>(
    table: &mut HashMap<K, V>,
    at: impl Fn(&V) -> Instant,
    keep: impl Fn(&V) -> bool,
) {
    let mut times: Vec<Instant> = table.values().map(&at).collect();
    let mid = times.len() / 2;
    let (_, cut, _) = times.select_nth_unstable(mid);
    let cut = *cut;
    table.retain(|_, v| keep(v) || at(v) > cut);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_backs_off_after_five_failures_and_a_success_does_not_wipe_it() {
        let c = PasswordCheck::with_threads(1);
        let fail = |from: &'static str, user: &'static str| c.check(ip(from), user, || None::<()>);
        let wait = |from: &'static str, user: &'static str| {
            let c = c.clone();
            async move {
                c.check(ip(from), user, || Some(()))
                    .await
                    .unwrap_err()
                    .retry_after()
            }
        };
        for _ in 0..FREE_PER_ADDRESS {
            assert_eq!(fail("192.0.2.1", "ann").await, Ok(None));
        }
        // The sixth failure starts the backoff.
        assert_eq!(fail("192.0.2.1", "ann").await, Ok(None));
        assert_eq!(wait("192.0.2.1", "ann").await, Duration::from_secs(1));
        // Another address is not held back by it.
        assert_eq!(
            c.check(ip("192.0.2.2"), "bob", || Some(1)).await,
            Ok(Some(1))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(fail("192.0.2.1", "ann").await, Ok(None));
        assert_eq!(
            wait("192.0.2.1", "ann").await,
            Duration::from_secs(2),
            "the wait doubles"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        // Eve signs in to her own account from there: the guesses are not forgiven.
        assert_eq!(
            c.check(ip("192.0.2.1"), "eve", || Some(7)).await,
            Ok(Some(7))
        );
        assert_eq!(fail("192.0.2.1", "ann").await, Ok(None));
        assert!(c.check(ip("192.0.2.1"), "ann", || Some(())).await.is_err());
        // Eve herself, from the address she signs in from, is not held back.
        assert_eq!(
            c.check(ip("192.0.2.1"), "eve", || Some(8)).await,
            Ok(Some(8))
        );
        assert!(c.throttled() >= 3);
    }

    #[tokio::test]
    async fn a_dropped_request_keeps_its_address_busy_until_its_turn_and_is_skipped() {
        let c = PasswordCheck::with_threads(1);
        let ran = Arc::new(AtomicUsize::new(0));
        // A slow check holds the only thread.
        let slow = {
            let c = c.clone();
            tokio::spawn(async move {
                c.check(ip("192.0.2.1"), "a", || {
                    std::thread::sleep(Duration::from_millis(300));
                    None::<()>
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A client queues a check and hangs up.
        let r = ran.clone();
        let gone = tokio::time::timeout(
            Duration::from_millis(20),
            c.check(ip("192.0.2.9"), "b", move || {
                r.fetch_add(1, Ordering::SeqCst);
                None::<()>
            }),
        )
        .await;
        assert!(gone.is_err(), "dropped while queued");
        // Its address is still busy: hanging up and retrying cannot stack hashes.
        assert!(c.check(ip("192.0.2.9"), "b", || None::<()>).await.is_err());
        slow.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "nobody was waiting: skipped");
        assert_eq!(
            c.check(ip("192.0.2.9"), "b", || Some(())).await,
            Ok(Some(()))
        );
    }

    #[tokio::test]
    async fn a_panicking_check_is_a_failure_and_the_thread_lives_on() {
        let c = PasswordCheck::with_threads(1);
        for _ in 0..3 {
            let out = c
                .check(None, "a", || -> Option<()> { panic!("bad hash") })
                .await;
            assert_eq!(out, Ok(None));
        }
        assert_eq!(c.check(None, "a", || Some(1)).await, Ok(Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn strangers_slow_a_name_down_but_never_lock_out_its_owner() {
        let c = PasswordCheck::with_threads(1);
        // Ann signs in from home once.
        assert!(c
            .check(ip("198.51.100.7"), "ann", || Some(()))
            .await
            .unwrap()
            .is_some());
        // Then a botnet guesses her password, one attempt per address.
        for i in 0..=FREE_PER_USER {
            let from = ip(&format!("203.0.113.{i}"));
            assert_eq!(c.check(from, "ann", || None::<()>).await, Ok(None));
        }
        // A new stranger must wait...
        assert!(c
            .check(ip("203.0.113.200"), "ann", || Some(()))
            .await
            .is_err());
        // ...but Ann, from home, signs in at once.
        assert!(c
            .check(ip("198.51.100.7"), "ann", || Some(()))
            .await
            .unwrap()
            .is_some());
        // Other users are untouched.
        assert!(c
            .check(ip("203.0.113.201"), "bob", || Some(()))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn one_address_checks_one_at_a_time_and_the_pool_bounds_the_rest() {
        let c = PasswordCheck::with_threads(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let slow = |running: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                None::<()>
            }
        };
        // 50 attempts at once from one address: one runs, the others are refused.
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, r, m) = (c.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                c.check(ip("192.0.2.9"), "x", slow(r, m)).await
            }));
        }
        let mut ran = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ran += 1;
            }
        }
        assert_eq!(ran, 1, "one check per address at a time");
        // 50 at once from 50 addresses: never more than two hashes at once, and the
        // ones the queue cannot hold are refused rather than queued without end.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (c, r, m) = (c.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                c.check(ip(&format!("10.0.0.{i}")), "x", slow(r, m)).await
            }));
        }
        let mut refused = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                refused += 1;
            }
        }
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert!(refused > 0 && refused < 50, "refused {refused}");
    }

    #[tokio::test(start_paused = true)]
    async fn tables_stay_bounded_whatever_the_addresses() {
        let c = PasswordCheck::with_threads(1);
        for i in 0..(3 * TABLE_CAP as u32) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = c.check(Some(a), &format!("user{i}"), || None::<()>).await;
        }
        let (a, u, k) = c.table_sizes();
        assert!(
            a <= TABLE_CAP && u <= TABLE_CAP && k <= TABLE_CAP,
            "{a} {u} {k}"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
