//! Crashes at any byte. A generated sequence of operations runs on a file store; after
//! each acknowledged one the test records where the journal's frames end on disk and
//! every session as the store holds it. Then, for every byte of the journal (or, for a
//! long journal, every frame boundary and many points inside each frame: its header,
//! its payload, its last byte), it builds a directory with the journal cut there (as
//! a crash leaves it: bare, followed by garbage, or followed by the preallocated
//! zeros), opens a store on it and checks:
//!
//! - every operation acknowledged before the cut is there, exactly;
//! - nothing is there that no operation wrote: a session is in the state some
//!   acknowledged operation left it in, or, for the one operation the cut went
//!   through, the state it was writing;
//! - opening the same directory again gives the same state, and writes go on after
//!   the cut (a torn tail is really cut off, not written after).
//!
//! The same holds across a compaction: with a snapshot half written (a partial
//! `.tmp`), with the snapshot complete and the old journal not yet removed, and after.
//! A snapshot cut short inside a frame is damage, not a crash state (it is synced
//! before it is renamed into place), and must stop the store from opening rather than
//! lose sessions silently.
//!
//! Faults are injected through the files, not the code: what a crash leaves is bytes
//! on disk, so the test builds exactly those bytes. `PROPTEST_CASES` (default 6 for
//! the journal, whose every byte is cut, 24 around snapshots) and `PROPTEST_RNG_SEED`
//! (default fixed) choose the sequences; a failure shrinks to a short one and is
//! printed with the seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use sessiond_core::conformance::arbitrary::{self, Case, Op, PRIVILEGES, USERS};
use sessiond_core::conformance::T0;
use sessiond_core::hooks::{Delivery, HookKinds, Route};
use sessiond_core::{
    Actor, Client, CloseReason, HeartbeatRequest, JsonObject, Lookup, Manager, ManualClock,
    OpenRequest, Privileges, Resolve, Session, SessionId, Store, Token, TokenHash,
};
use sessiond_file::{FileOptions, FileStore};

/// Each session with the webhook deliveries owed for it (app `a` has a hook): a
/// session in the state an operation left it in must come with exactly the
/// deliveries that operation left, whatever byte a crash cut. Deliveries of no
/// session (`seats_full`) are under the nil id.
type State = BTreeMap<SessionId, Held>;

#[derive(Debug, Clone, PartialEq)]
struct Held {
    session: Option<Session>,
    owed: Vec<Delivery>,
}

/// The journal's frame end and the store's sessions after an acknowledged operation.
struct Mark {
    end: usize,
    state: State,
}

fn fresh_dir(what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sessiond-cut-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The frames of a journal or snapshot, as `(start, end)`: `[len u32 LE][crc u32
/// LE][payload]`, ended by a zero length (preallocated room) or the end of the bytes.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > bytes.len() {
            break;
        }
        out.push((pos, pos + 8 + len));
        pos += 8 + len;
    }
    out
}

/// Where to cut: every byte of a short journal; of a long one, every frame boundary
/// and, inside each frame, each header byte, the first payload bytes, the middle and
/// the last byte.
fn cut_points(frames: &[(usize, usize)], every_byte_up_to: usize) -> Vec<usize> {
    let end = frames.last().map_or(0, |f| f.1);
    if end <= every_byte_up_to {
        return (0..=end).collect();
    }
    let mut v = vec![0, end];
    for &(s, e) in frames {
        v.extend((s..s + 10).filter(|c| *c < e));
        v.extend([(s + e) / 2, (s + 3 * e) / 4, e - 1]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn state(store: &FileStore) -> State {
    let mut s = State::new();
    store.memory().for_each(|x| {
        s.insert(
            x.id,
            Held {
                session: Some(x.clone()),
                owed: Vec::new(),
            },
        );
    });
    store.memory().for_each_hook(|d| {
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        let of = body["session"]
            .as_str()
            .map_or(SessionId::from_u128(0), |id| id.parse().unwrap());
        s.entry(of)
            .or_insert(Held {
                session: None,
                owed: Vec::new(),
            })
            .owed
            .push(d.clone());
    });
    for held in s.values_mut() {
        held.owed.sort_by_key(|d| d.id);
    }
    s
}

fn journal_name(n: u64) -> String {
    format!("journal-{n}.log")
}

/// Where crashed directories are laid out: a RAM file system when there is one, as
/// every recovery syncs what it cuts, and only the bytes matter here, not the disk.
fn crash_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

thread_local! {
    /// Recoveries checked by this test's thread, for its summary line.
    static RECOVERIES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Writes `files` into a fresh directory.
fn lay_out(files: &[(String, Vec<u8>)]) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = crash_root().join(format!(
        "sessiond-crashed-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

/// What a crash at a cut may leave after the frames written so far.
#[derive(Debug, Clone, Copy)]
enum Tail {
    Bare,
    Garbage,
    Zeros,
}

fn with_tail(bytes: &[u8], tail: Tail, seed: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    match tail {
        Tail::Bare => {}
        Tail::Garbage => {
            let mut x = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            v.extend((0..37).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as u8) | 1
            }));
        }
        Tail::Zeros => v.extend(std::iter::repeat_n(0u8, 16 << 10)),
    }
    v
}

fn fail(what: String) -> TestCaseError {
    TestCaseError::fail(what)
}

/// Checks what a store opened on a crashed directory holds, against the marks: exactly
/// the state of the last operation wholly before `cut` if the cut is at its end, else
/// each session as that operation or the next one (the one cut) left it.
fn check_state(got: &State, marks: &[Mark], cut: usize, what: &str) -> Result<(), TestCaseError> {
    let k = marks
        .iter()
        .rposition(|m| m.end <= cut)
        .expect("mark 0 ends at 0");
    let before = &marks[k].state;
    if marks[k].end == cut || k + 1 == marks.len() {
        if got != before {
            return Err(fail(format!(
                "{what}: cut at {cut}, after operation {k}: expected {before:#?}\ngot {got:#?}"
            )));
        }
        return Ok(());
    }
    let after = &marks[k + 1].state;
    for id in before.keys().chain(after.keys()).chain(got.keys()) {
        let g = got.get(id);
        if g != before.get(id) && g != after.get(id) {
            return Err(fail(format!(
                "{what}: cut at {cut}, inside operation {}: session {id} is {g:#?}, \
                 neither {:#?} nor {:#?}",
                k + 1,
                before.get(id),
                after.get(id)
            )));
        }
    }
    Ok(())
}

/// Opens a store on `dir` twice and checks it holds what `marks` allow at `cut`, the
/// same both times; with `write`, also that a write after recovery is kept.
fn recover_and_check(
    dir: &Path,
    marks: &[Mark],
    cut: usize,
    what: &str,
    write: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<(), TestCaseError> {
    let store = FileStore::open(dir).map_err(|e| fail(format!("{what}: cut at {cut}: {e}")))?;
    if !store.quarantined().is_empty() {
        return Err(fail(format!(
            "{what}: cut at {cut}: a record was quarantined"
        )));
    }
    RECOVERIES.set(RECOVERIES.get() + 1);
    let first = state(&store);
    check_state(&first, marks, cut, what)?;
    drop(store);
    let store = FileStore::open(dir).unwrap();
    let mut second = state(&store);
    if second != first {
        return Err(fail(format!(
            "{what}: cut at {cut}: a second recovery differs"
        )));
    }
    if write {
        let s = extra_session();
        rt.block_on(store.import(s.clone())).unwrap();
        drop(store);
        second.insert(
            s.id,
            Held {
                session: Some(s),
                owed: Vec::new(),
            },
        );
        let store = FileStore::open(dir).unwrap();
        if state(&store) != second {
            return Err(fail(format!(
                "{what}: cut at {cut}: a write after recovery was lost"
            )));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Runs `ops` through a Manager on `store`, recording a mark after each (the store
/// flushed, so what it acknowledged is on disk).
struct Runner {
    m: Manager,
    store: Arc<FileStore>,
    clock: Arc<ManualClock>,
    held: Vec<(SessionId, Token)>,
    journal: PathBuf,
}

const APPS: [&str; 2] = ["a", "b"];

impl Runner {
    fn new(store: FileStore, journal: u64, case: &Case, clock: Arc<ManualClock>) -> Runner {
        let journal = store.dir().join(journal_name(journal));
        let store = Arc::new(store);
        let m = Manager::with_clock(store.clone(), clock.clone());
        for (app, p) in APPS.iter().zip(&case.policies) {
            m.set_policy(app, p.clone()).unwrap();
        }
        store.memory().hook_routes().set([(
            "a".to_string(),
            vec![Route {
                hook: "h".into(),
                kinds: HookKinds::ALL,
            }],
        )]);
        Runner {
            m,
            store,
            clock,
            held: Vec::new(),
            journal,
        }
    }

    async fn mark(&self) -> Mark {
        self.store.flush().await.unwrap();
        let bytes = std::fs::read(&self.journal).unwrap();
        Mark {
            end: frames(&bytes).last().map_or(0, |f| f.1),
            state: state(&self.store),
        }
    }

    fn pick(&self, who: usize) -> Option<(SessionId, Token)> {
        (!self.held.is_empty()).then(|| self.held[who % self.held.len()].clone())
    }

    /// Runs one operation; refusals are part of the sequence, not failures.
    async fn run(&mut self, op: &Op) {
        let m = &self.m;
        let names = |v: &[usize]| v.iter().map(|p| PRIVILEGES[*p].to_string()).collect();
        let json =
            |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| JsonObject::from_value(v).ok());
        match op {
            Op::Open {
                app,
                user,
                privileges,
                info,
                data,
                take_over,
                heartbeat,
                ..
            } => {
                let req = OpenRequest {
                    user: user.map(|u| USERS[u].to_string()),
                    privileges: names(privileges),
                    info: json(info),
                    data: json(data),
                    heartbeat: heartbeat.map(|interval_s| HeartbeatRequest {
                        interval_s,
                        grace_s: None,
                    }),
                    take_over: take_over.and_then(|t| self.pick(t)).map(|(id, _)| id),
                    ..Default::default()
                };
                if let Ok(o) = m.open(APPS[*app], req).await {
                    self.held.push((o.session.id, o.token));
                }
            }
            Op::Patch { who, patch, .. } => {
                if let Some((id, _)) = self.pick(*who) {
                    let _ = m
                        .update_data(Lookup::Id(id), patch.clone(), None, None)
                        .await;
                }
            }
            Op::SetPrivileges {
                who,
                privileges,
                info,
                user,
            } => {
                if let Some((id, _)) = self.pick(*who) {
                    let user = user.map(|u| USERS[u].to_string());
                    if let Ok((_, token)) = m
                        .set_privileges(Lookup::Id(id), names(privileges), json(info), user)
                        .await
                    {
                        let n = self.held.iter().position(|h| h.0 == id).unwrap();
                        self.held[n].1 = token;
                    }
                }
            }
            Op::Heartbeat { who } => {
                if let Some((_, t)) = self.pick(*who) {
                    let _ = m.heartbeat(&t, None).await;
                }
            }
            Op::SetHeartbeat {
                who,
                active,
                interval_s,
                ..
            } => {
                if let Some((id, _)) = self.pick(*who) {
                    let _ = m
                        .set_heartbeat(Lookup::Id(id), *active, *interval_s, None, None)
                        .await;
                }
            }
            Op::Resolve { who, touch, .. } => {
                if let Some((_, t)) = self.pick(*who) {
                    let _ = m
                        .resolve(
                            &t,
                            Resolve {
                                touch: *touch,
                                ip: None,
                            },
                        )
                        .await;
                }
            }
            Op::Logout { who, .. } => {
                if let Some((_, t)) = self.pick(*who) {
                    let _ = m.logout(&t, None).await;
                }
            }
            Op::Close { who } => {
                if let Some((id, _)) = self.pick(*who) {
                    let _ = m
                        .close(Lookup::Id(id), CloseReason::Killed, Actor::Admin)
                        .await;
                }
            }
            Op::CloseAll { app, .. } => {
                let _ = m.close_all(APPS[*app], &[], Actor::Admin).await;
            }
            Op::Get { who } => {
                if let Some((id, _)) = self.pick(*who) {
                    let _ = m.get(id).await;
                }
            }
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(*ms)),
            Op::List { .. } | Op::Seats { .. } => {}
        }
    }

    async fn run_all(&mut self, ops: &[Op]) -> Vec<Mark> {
        let mut marks = vec![self.mark().await];
        for op in ops {
            self.run(op).await;
            let mark = self.mark().await;
            // Operations that wrote nothing add nothing to check.
            if mark.end != marks.last().unwrap().end {
                marks.push(mark);
            }
        }
        marks
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a property over generated cases, reproducibly (see the module doc).
fn check(
    name: &str,
    cases: u32,
    test: impl Fn(&Case, &tokio::runtime::Runtime) -> Result<(), TestCaseError>,
) {
    let mut config = Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.cases = n;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0xc0ffee);
    }
    let about = format!(
        "{name}: {} cases, PROPTEST_RNG_SEED={:?}",
        config.cases, config.rng_seed
    );
    eprintln!("{about}");
    let rt = runtime();
    let started = Instant::now();
    match TestRunner::new(config).run(&arbitrary::case(), |case| test(&case, &rt)) {
        Ok(()) => eprintln!(
            "{about}: passed in {:.1?} ({} recoveries checked)",
            started.elapsed(),
            RECOVERIES.get()
        ),
        Err(TestError::Fail(why, case)) => panic!("{about}: {why}\nminimal case: {case:#?}"),
        Err(TestError::Abort(why)) => panic!("{about}: aborted: {why}"),
    }
}

/// A crash at any byte of the journal loses nothing acknowledged and invents nothing.
#[test]
fn a_crash_at_any_byte_of_the_journal_keeps_what_was_acknowledged() {
    check("journal cuts", 6, |case, rt| {
        let dir = fresh_dir("run");
        let clock = Arc::new(ManualClock::new(T0));
        let store = FileStore::open(&dir).unwrap();
        let mut runner = Runner::new(store, 0, case, clock);
        let marks = rt.block_on(runner.run_all(&case.ops));
        drop(runner);
        let journal = std::fs::read(dir.join(journal_name(0))).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let fr = frames(&journal);
        for m in &marks {
            assert!(
                m.end == 0 || fr.iter().any(|f| f.1 == m.end),
                "marks end on frames"
            );
        }
        for cut in cut_points(&fr, 2048) {
            for tail in [Tail::Bare, Tail::Garbage, Tail::Zeros] {
                let bytes = with_tail(&journal[..cut], tail, cut);
                let dir = lay_out(&[(journal_name(0), bytes)]);
                let write = matches!(tail, Tail::Garbage);
                recover_and_check(&dir, &marks, cut, &format!("{tail:?}"), write, rt)?;
            }
        }
        Ok(())
    });
}

/// A session none of the operations made, for writes the test adds itself.
fn extra_session() -> Session {
    Session {
        id: SessionId::new(),
        token_hash: TokenHash(7),
        app: Arc::from(APPS[0]),
        user: Some("extra".into()),
        privileges: Privileges::default(),
        info: JsonObject::empty(),
        data: JsonObject::from_value(&serde_json::json!({ "extra": true })).unwrap(),
        client: Client::default(),
        created_at: T0,
        last_activity_at: T0,
        last_heartbeat_at: T0,
        idle_timeout_s: 60,
        lifetime_s: 120,
        heartbeat: None,
        retention_s: 0,
        counts_seat: true,
        bind_ip: false,
        closed: None,
        version: 1,
    }
}

/// A frame as the store writes it: `[len][crc]['P' + the session's JSON]`.
fn put_frame(s: &Session) -> Vec<u8> {
    let mut payload = b"P".to_vec();
    s.write_json(&mut payload);
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    f.extend_from_slice(&payload);
    f
}

/// Waits until the store's directory holds `want` (and no snapshot being written).
fn settle(dir: &Path, want: &[&str]) -> Vec<String> {
    let started = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LOCK" && n != "FORMAT")
            .collect();
        names.sort();
        if names == want {
            return names;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "compaction did not settle: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A crash before, during or after a snapshot: the journal cut anywhere, with a partial
/// snapshot `.tmp` beside the old journal, with the snapshot in place and the old
/// journal not yet removed, and after; a snapshot cut short refuses to open.
#[test]
fn a_crash_around_a_snapshot_keeps_what_was_acknowledged() {
    check("snapshot cuts", 24, |case, rt| {
        let dir = fresh_dir("compact");
        let clock = Arc::new(ManualClock::new(T0));
        let (first, second) = case.ops.split_at(case.ops.len() / 2);
        // Journal 0: the first half of the operations.
        let store = FileStore::open(&dir).unwrap();
        let mut runner = Runner::new(store, 0, case, clock.clone());
        let before = rt.block_on(runner.run_all(first));
        let held = std::mem::take(&mut runner.held);
        drop(runner);
        let journal0 = std::fs::read(dir.join(journal_name(0))).unwrap();
        let end0 = before.last().unwrap().end;
        // A store that compacts after any write: one import rotates to journal 1 and
        // snapshots every session into snapshot-1.dat, then removes journal 0.
        let tiny = FileOptions {
            compact_after_bytes: 1,
            ..Default::default()
        };
        let store = FileStore::open_with(&dir, tiny).unwrap();
        let extra = extra_session();
        rt.block_on(store.import(extra.clone())).unwrap();
        settle(&dir, &["journal-1.log", "snapshot-1.dat"]);
        let mut full0 = journal0[..end0].to_vec();
        full0.extend(put_frame(&extra));
        // Room the writer had preallocated, as a finished journal keeps it.
        full0.extend([0; 4096]);
        drop(store);
        let snapshot = std::fs::read(dir.join("snapshot-1.dat")).unwrap();
        // Journal 1: the second half, on a store that does not compact again.
        let store = FileStore::open(&dir).unwrap();
        let mut runner = Runner::new(store, 1, case, clock);
        runner.held = held;
        let marks = rt.block_on(runner.run_all(second));
        drop(runner);
        let journal1 = std::fs::read(dir.join(journal_name(1))).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let snap_frames = frames(&snapshot);
        if snap_frames.last().map(|f| f.1) != Some(snapshot.len()) {
            return Err(fail("the snapshot is whole frames".into()));
        }
        let mut tmp_cuts = vec![0, 1, snapshot.len() / 2, snapshot.len() - 1, snapshot.len()];
        tmp_cuts.extend(snap_frames.iter().map(|f| f.1));
        for cut in cut_points(&frames(&journal1), 0) {
            let j1 = (journal_name(1), journal1[..cut].to_vec());
            let j0 = (journal_name(0), full0.clone());
            let snap = ("snapshot-1.dat".to_string(), snapshot.clone());
            // After the compaction, and with journal 0 not yet removed.
            for files in [
                vec![snap.clone(), j1.clone()],
                vec![j0.clone(), snap, j1.clone()],
            ] {
                recover_and_check(&lay_out(&files), &marks, cut, "snapshot", false, rt)?;
            }
            // Mid-snapshot: a partial .tmp beside journal 0 (at frame boundaries of
            // journal 1 only: the .tmp is ignored wherever the journal is cut).
            if !marks.iter().any(|m| m.end == cut) {
                continue;
            }
            for &t in &tmp_cuts {
                let tmp = ("snapshot-1.tmp".to_string(), snapshot[..t].to_vec());
                let files = [j0.clone(), tmp, j1.clone()];
                recover_and_check(&lay_out(&files), &marks, cut, "partial snapshot", false, rt)?;
            }
        }
        // A snapshot cut inside a frame is damage: the store refuses to open.
        for &(s, e) in &snap_frames {
            for t in [s + 1, s + 8, (s + e) / 2, e - 1] {
                let files = [("snapshot-1.dat".to_string(), snapshot[..t].to_vec())];
                let dir = lay_out(&files);
                if FileStore::open(&dir).is_ok() {
                    return Err(fail(format!(
                        "a snapshot cut at {t} of {} opened",
                        snapshot.len()
                    )));
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Ok(())
    });
}
