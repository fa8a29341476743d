//! The model check: a property test that searches any store for the class of bugs
//! "something accepted is not readable (now or after a restart), an acknowledged write
//! is lost, a refused one changed something".
//!
//! Each case (see [`super::arbitrary`]) sets the policies of two apps of its own, then
//! runs a sequence of operations through one [`Manager`] on the store under test and
//! another on a [`MemoryStore`], the model, both reading one [`ManualClock`]. Every
//! answer must agree: success or which error (with its numbers), and the sessions
//! answered in full (data, info, user, privileges, times, version, status), ids and
//! tokens aside, which each side draws at random (ids are compared as "the n-th
//! session opened"). At the end every session is read back, by id and by token, and
//! every app listed, on both sides; a store that can restart (the file store) is
//! restarted and read back again.
//!
//! The run is reproducible: proptest's `PROPTEST_CASES` (default 256) and
//! `PROPTEST_RNG_SEED` (default [`DEFAULT_SEED`]) are honoured and printed. A failure
//! is shrunk to a minimal case, printed with the seed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use super::arbitrary::{self, Case, Op, Pick, VersionPick, PRIVILEGES, USERS};
use super::T0;
use crate::manager::{HeartbeatRequest, Manager, OpenRequest, Resolve, Seats};
use crate::session::{Actor, Client, CloseReason, Closure, Session};
use crate::store::{ListQuery, Lookup, StatusFilter, Store};
use crate::time::ManualClock;
use crate::{Error, JsonObject, Limits, MemoryStore, SessionId, Token, TokenHash};

/// The seed used when `PROPTEST_RNG_SEED` is not set, so every run checks the same
/// cases unless asked otherwise.
pub const DEFAULT_SEED: u64 = 0x5e55_10d5;

/// Where the model check gets the store under test for each case.
#[async_trait]
pub trait CaseStores: Send + Sync {
    /// The store for the next case: a fresh one, or the same one again (each case
    /// works in apps of its own, so cases never see each other's sessions).
    async fn store(&self) -> Arc<dyn Store>;

    /// The store of the case that just ran, closed and opened again from what it
    /// persisted (`store` is its last handle), or `None` for a store that cannot be
    /// restarted that way (the default).
    async fn restart(&self, store: Arc<dyn Store>) -> Option<Arc<dyn Store>> {
        drop(store);
        None
    }
}

#[async_trait]
impl CaseStores for Arc<dyn Store> {
    async fn store(&self) -> Arc<dyn Store> {
        self.clone()
    }
}

/// Conformance test: the model check on one store shared by every case.
pub async fn agrees_with_the_model(store: Arc<dyn Store>) {
    check_against_model(&store).await;
}

/// Runs the model check on the stores `stores` gives. Needs a multi-threaded Tokio
/// runtime (cases run on it from a blocking section, as proptest is synchronous).
pub async fn check_against_model(stores: &dyn CaseStores) {
    let mut config = Config {
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    let about = format!(
        "model check: {} cases, PROPTEST_RNG_SEED={}",
        config.cases,
        match config.rng_seed {
            RngSeed::Fixed(s) => s.to_string(),
            RngSeed::Random => "random".into(),
        }
    );
    eprintln!("{about}");
    let cases = config.cases;
    let handle = tokio::runtime::Handle::current();
    let seen = Coverage::default();
    let result = tokio::task::block_in_place(|| {
        let mut runner = TestRunner::new(config);
        runner
            .run(&arbitrary::case(), |case| {
                handle.block_on(run_case(stores, &case, &seen))
            })
            .map_err(|e| match e {
                TestError::Fail(why, case) => {
                    format!("the store disagrees with the model: {why}\nminimal case: {case:#?}")
                }
                TestError::Abort(why) => format!("aborted: {why}"),
            })
    });
    match result {
        Err(why) => panic!("{about}: {why}"),
        Ok(()) => {
            let [accepted, refused, deepest, longest] = [
                &seen.accepted,
                &seen.refused,
                &seen.at_depth_limit,
                &seen.at_key_limit,
            ]
            .map(|n| n.load(Ordering::Relaxed));
            eprintln!(
                "{about}: {accepted} operations accepted, {refused} refused; {deepest} answers \
                 held storage at the depth limit, {longest} a key at the length limit"
            );
            // A generator that no longer reaches these would pass without testing them
            // (a short run, asked for by hand, may miss them by chance).
            if cases >= 256 {
                assert!(accepted > 0 && refused > 0, "both answers are exercised");
                assert!(deepest > 0, "storage at the depth limit is exercised");
                assert!(longest > 0, "keys at the length limit are exercised");
            }
        }
    }
}

/// What a run exercised, counted on the model's side.
#[derive(Default)]
struct Coverage {
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Sessions answered holding storage exactly [`Limits::MAX_JSON_DEPTH`] deep.
    at_depth_limit: AtomicU64,
    /// Sessions answered holding a key of exactly [`Limits::MAX_JSON_KEY_BYTES`].
    at_key_limit: AtomicU64,
}

impl Coverage {
    fn count(&self, answer: &Answer) {
        match answer {
            Answer::Refused(_) => &self.refused,
            _ => &self.accepted,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the sessions whose storage reaches a JSON limit.
    fn measure(&self, sessions: &Answer) {
        fn walk(v: &serde_json::Value, depth: usize, deepest: &mut usize, longest: &mut usize) {
            match v {
                serde_json::Value::Object(m) => {
                    *deepest = (*deepest).max(depth);
                    for (k, v) in m {
                        *longest = (*longest).max(k.len());
                        walk(v, depth + 1, deepest, longest);
                    }
                }
                serde_json::Value::Array(a) => {
                    *deepest = (*deepest).max(depth);
                    a.iter().for_each(|v| walk(v, depth + 1, deepest, longest));
                }
                _ => {}
            }
        }
        let Answer::Sessions(all) = sessions else {
            return;
        };
        for s in all {
            let (mut deepest, mut longest) = (0, 0);
            walk(
                &serde_json::Value::Object(s.data.to_map()),
                1,
                &mut deepest,
                &mut longest,
            );
            if deepest == Limits::MAX_JSON_DEPTH {
                self.at_depth_limit.fetch_add(1, Ordering::Relaxed);
            }
            if longest == Limits::MAX_JSON_KEY_BYTES {
                self.at_key_limit.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The limits both Managers run under: the defaults, with room for storage at the
/// JSON depth limit with long keys.
fn limits() -> Limits {
    Limits {
        max_data_bytes: 16 * 1024,
        ..Limits::default()
    }
}

/// What one side holds of a session the case opened.
#[derive(Debug, Clone)]
struct Held {
    id: SessionId,
    token: Token,
    /// The token before the last privilege change.
    stale: Option<Token>,
}

/// One side of the comparison: a Manager and what it opened, in order.
struct Side {
    m: Manager,
    held: Vec<Held>,
}

/// An answer, with ids and tokens replaced by what they stand for.
#[derive(Debug, PartialEq)]
enum Answer {
    Sessions(Vec<Session>),
    Seats(Seats),
    Refused(String),
    Done,
}

impl Side {
    fn new(
        store: Arc<dyn Store>,
        clock: &Arc<ManualClock>,
        apps: &[String; 2],
        case: &Case,
    ) -> Side {
        let m = Manager::with_clock(store, clock.clone()).with_limits(limits());
        for (app, policy) in apps.iter().zip(&case.policies) {
            m.set_policy(app, policy.clone())
                .expect("generated policies are valid");
        }
        Side {
            m,
            held: Vec::new(),
        }
    }

    fn pick(&self, who: Pick) -> Option<&Held> {
        (!self.held.is_empty()).then(|| &self.held[who % self.held.len()])
    }

    fn id(&self, who: Pick) -> SessionId {
        self.pick(who).map_or(SessionId::from_u128(1), |h| h.id)
    }

    fn token(&self, who: Pick, apps: &[String; 2]) -> Token {
        self.pick(who).map_or_else(
            || Token::from_client(format!("{}:00", apps[0])),
            |h| h.token.clone(),
        )
    }

    /// Which session an id stands for: its place in opening order.
    fn place(&self, id: SessionId) -> SessionId {
        match self.held.iter().position(|h| h.id == id) {
            Some(n) => SessionId::from_u128(n as u128 + 100),
            None => id,
        }
    }

    fn closure(&self, c: Closure) -> Closure {
        Closure {
            by: match c.by {
                Actor::Session(id) => Actor::Session(self.place(id)),
                other => other,
            },
            ..c
        }
    }

    fn session(&self, s: &Session) -> Session {
        Session {
            id: self.place(s.id),
            token_hash: TokenHash(0),
            closed: s.closed.map(|c| self.closure(c)),
            ..s.clone()
        }
    }

    fn sessions(&self, v: &[Session], sort: bool) -> Answer {
        let mut v: Vec<Session> = v.iter().map(|s| self.session(s)).collect();
        if sort {
            v.sort_by_key(|s| s.id);
        }
        Answer::Sessions(v)
    }

    fn refused(&self, e: &Error) -> Answer {
        Answer::Refused(match e {
            Error::SeatsExhausted {
                used,
                total,
                holders,
            } => format!(
                "seats_exhausted {used}/{total} {:?}",
                self.sessions(holders, true)
            ),
            Error::NotFound(id) => format!("not_found {}", self.place(*id)),
            Error::SessionClosed(c) => format!("session_closed {:?}", self.closure(*c)),
            other => format!("{other:?}"),
        })
    }

    fn answer(&self, r: Result<Vec<Session>, Error>, sort: bool) -> Answer {
        match r {
            Ok(v) => self.sessions(&v, sort),
            Err(e) => self.refused(&e),
        }
    }

    /// Runs `op`, keeping track of what it opened and of rotated tokens.
    async fn run(&mut self, op: &Op, apps: &[String; 2], version: Option<u64>) -> Answer {
        let name = |i: &usize| USERS[*i].to_string();
        let privileges = |v: &[usize]| v.iter().map(|p| PRIVILEGES[*p].to_string()).collect();
        let ip = |b: &Option<u8>| b.map(|b| IpAddr::V4(Ipv4Addr::new(10, 0, 0, b)));
        match op {
            Op::Open {
                app,
                user,
                privileges: p,
                info,
                data,
                take_over,
                heartbeat,
                ip: addr,
            } => {
                let json = |v: &Option<serde_json::Value>| {
                    v.as_ref().map(JsonObject::from_value).transpose()
                };
                let (info, data) = match (json(info), json(data)) {
                    (Ok(i), Ok(d)) => (i, d),
                    (Err(e), _) | (_, Err(e)) => {
                        return Answer::Refused(format!("at the door: {e}"))
                    }
                };
                let req = OpenRequest {
                    user: user.as_ref().map(name),
                    privileges: privileges(p),
                    info,
                    data,
                    client: Client {
                        ip: ip(addr),
                        ..Default::default()
                    },
                    heartbeat: heartbeat.map(|interval_s| HeartbeatRequest {
                        interval_s,
                        grace_s: None,
                    }),
                    idle_timeout_s: None,
                    take_over: take_over.map(|t| self.id(t)),
                };
                match self.m.open(&apps[*app], req).await {
                    Ok(o) => {
                        self.held.push(Held {
                            id: o.session.id,
                            token: o.token,
                            stale: None,
                        });
                        let mut all = vec![self.session(&o.session)];
                        let Answer::Sessions(displaced) = self.sessions(&o.displaced, true) else {
                            unreachable!()
                        };
                        all.extend(displaced);
                        Answer::Sessions(all)
                    }
                    Err(e) => self.refused(&e),
                }
            }
            Op::Patch {
                who,
                via_token,
                patch,
                ..
            } => {
                let lookup = if *via_token {
                    Lookup::Token(self.token(*who, apps).hash())
                } else {
                    Lookup::Id(self.id(*who))
                };
                let r = self
                    .m
                    .update_data(lookup, patch.clone(), version, None)
                    .await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::SetPrivileges {
                who,
                privileges: p,
                info,
                user,
            } => {
                let info = match info.as_ref().map(JsonObject::from_value).transpose() {
                    Ok(i) => i,
                    Err(e) => return Answer::Refused(format!("at the door: {e}")),
                };
                let id = self.id(*who);
                let r = self
                    .m
                    .set_privileges(Lookup::Id(id), privileges(p), info, user.as_ref().map(name))
                    .await;
                if let (Ok((_, token)), Some(n)) = (&r, self.held.iter().position(|h| h.id == id)) {
                    let h = &mut self.held[n];
                    h.stale = Some(std::mem::replace(&mut h.token, token.clone()));
                }
                self.answer(r.map(|(s, _)| vec![s]), false)
            }
            Op::Heartbeat { who } => {
                let r = self.m.heartbeat(&self.token(*who, apps), None).await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::SetHeartbeat {
                who,
                via_token,
                active,
                interval_s,
            } => {
                let lookup = if *via_token {
                    Lookup::Token(self.token(*who, apps).hash())
                } else {
                    Lookup::Id(self.id(*who))
                };
                let r = self
                    .m
                    .set_heartbeat(lookup, *active, *interval_s, None, None)
                    .await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::Resolve {
                who,
                touch,
                ip: addr,
            } => {
                let opts = Resolve {
                    touch: *touch,
                    ip: ip(addr),
                };
                let r = self.m.resolve(&self.token(*who, apps), opts).await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::Logout { who, stale_token } => {
                let token = match self.pick(*who) {
                    Some(Held {
                        stale: Some(old), ..
                    }) if *stale_token => old.clone(),
                    _ => self.token(*who, apps),
                };
                let r = self.m.logout(&token, None).await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::Close { who } => {
                // A named operator's kill: its name must come back from every store.
                let ops =
                    Actor::Operator(crate::OperatorName::new("ops.on-call_1").expect("a name"));
                let r = self
                    .m
                    .close(Lookup::Id(self.id(*who)), CloseReason::Killed, ops)
                    .await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::CloseAll { app, except } => {
                let except: Vec<SessionId> = except.iter().map(|w| self.id(*w)).collect();
                let r = self.m.close_all(&apps[*app], &except, Actor::Admin).await;
                self.answer(r, true)
            }
            Op::Get { who } => {
                let r = self.m.get(self.id(*who)).await;
                self.answer(r.map(|s| vec![s]), false)
            }
            Op::List {
                app,
                status,
                user,
                after,
                newest_first,
                limit,
            } => {
                let q = ListQuery {
                    app: Some(apps[*app].clone()),
                    status: [StatusFilter::Any, StatusFilter::Open, StatusFilter::Closed]
                        [usize::from(*status) % 3],
                    user: user.as_ref().map(name),
                    after: after.map(|a| self.id(a)),
                    newest_first: *newest_first,
                    limit: *limit,
                };
                let r = self.m.list(q).await;
                self.answer(r, false)
            }
            Op::Seats { app } => match self.m.seats(&apps[*app]).await {
                Ok(s) => Answer::Seats(s),
                Err(e) => self.refused(&e),
            },
            Op::Advance { .. } => Answer::Done,
        }
    }

    /// Everything the case left, read back: each app listed whole, each session by id
    /// and by its tokens, straight from the store.
    async fn read_back(&self, apps: &[String; 2]) -> Vec<Answer> {
        let mut out = Vec::new();
        for app in apps {
            let q = ListQuery {
                app: Some(app.clone()),
                limit: 1000,
                ..Default::default()
            };
            out.push(self.answer(self.m.list(q).await, false));
        }
        let store = self.m.store();
        for h in &self.held {
            let mut lookups = vec![Lookup::Id(h.id), Lookup::Token(h.token.hash())];
            lookups.extend(h.stale.as_ref().map(|t| Lookup::Token(t.hash())));
            for lookup in lookups {
                out.push(match store.get(lookup).await {
                    Ok(s) => self.sessions(&s.into_iter().collect::<Vec<_>>(), false),
                    Err(e) => Answer::Refused(format!("store error: {e}")),
                });
            }
        }
        out
    }
}

/// Names no other case uses, so cases can share a store.
fn fresh_apps() -> [String; 2] {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    [format!("m{n}-a"), format!("m{n}-b")]
}

fn same(at: &str, op: Option<&Op>, model: &Answer, tested: &Answer) -> Result<(), TestCaseError> {
    if model == tested {
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "{at}{}:\n  model: {model:?}\n  store: {tested:?}",
        op.map_or(String::new(), |op| format!(" ({op:?})"))
    )))
}

async fn run_case(
    stores: &dyn CaseStores,
    case: &Case,
    seen: &Coverage,
) -> Result<(), TestCaseError> {
    let apps = fresh_apps();
    let clock = Arc::new(ManualClock::new(T0));
    let mut model = Side::new(Arc::new(MemoryStore::new()), &clock, &apps, case);
    let mut tested = Side::new(stores.store().await, &clock, &apps, case);
    for (n, op) in case.ops.iter().enumerate() {
        if let Op::Advance { ms } = op {
            clock.advance(std::time::Duration::from_millis(*ms));
        }
        // The If-Match version both sides send: the model's, as a client read it.
        let version = match op {
            Op::Patch {
                who,
                version: Some(v),
                ..
            } => {
                let current = match model.pick(*who) {
                    Some(h) => model.m.store().get(Lookup::Id(h.id)).await.ok().flatten(),
                    None => None,
                }
                .map_or(1, |s| s.version);
                Some(match v {
                    VersionPick::Current => current,
                    VersionPick::Off(d) => current.wrapping_add_signed(i64::from(*d)),
                })
            }
            _ => None,
        };
        let expected = model.run(op, &apps, version).await;
        seen.count(&expected);
        seen.measure(&expected);
        let got = tested.run(op, &apps, version).await;
        same(&format!("operation {n}"), Some(op), &expected, &got)?;
    }
    let expected = model.read_back(&apps).await;
    expected
        .iter()
        .take(2)
        .for_each(|listed| seen.measure(listed));
    let got = tested.read_back(&apps).await;
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        same(&format!("read back {i}"), None, e, g)?;
    }
    let Side { m, held } = tested;
    let store = m.store().clone();
    drop(m);
    if let Some(reopened) = stores.restart(store).await {
        let mut again = Side::new(reopened, &clock, &apps, case);
        again.held = held;
        let got = again.read_back(&apps).await;
        for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
            same(&format!("read back {i} after a restart"), None, e, g)?;
        }
    }
    Ok(())
}
