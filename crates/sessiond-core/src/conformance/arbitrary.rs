//! What the model check generates: JSON values that probe every corner the stores must
//! carry (any Unicode, control characters and escapes in strings and keys, integers at
//! the ends of their ranges, floats, nesting up to and past
//! [`Limits::MAX_JSON_DEPTH`], keys up to and past [`Limits::MAX_JSON_KEY_BYTES`]),
//! the policies of the two apps a case runs in, and sequences of [`Op`]s.
//!
//! Everything is a proptest [`Strategy`], so a failing case shrinks: fewer operations,
//! shallower and smaller values, simpler policies.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value};

use crate::limits::Limits;
use crate::policy::{HeartbeatPolicy, OnFull, OnUserLimit, Policy};

/// Which handle an operation aims at: the `n`-th session the case opened (modulo how
/// many there are; an unknown token or id when none is).
pub type Pick = usize;

/// User names the cases choose from; the last is refused at the door (control
/// character), so every operation naming it must be refused by both sides.
pub const USERS: [&str; 4] = ["ann", "bob", "zoé \"q\"", "bad\u{1}name"];

/// Privileges the cases choose from; `admin` is reserved (takes no seat) in every
/// generated policy.
pub const PRIVILEGES: [&str; 3] = ["admin", "sales", "\u{263a} \\ \""];

/// The `If-Match` version a conditional patch sends.
#[derive(Debug, Clone)]
pub enum VersionPick {
    /// The version the model's session is at (the write should pass).
    Current,
    /// The current version shifted by this much (a stale or future version).
    Off(i8),
}

/// One operation of a case, run through a Manager on both stores.
#[derive(Debug, Clone)]
pub enum Op {
    /// Open a session in app `app`.
    Open {
        /// App 0 or 1 of the case.
        app: usize,
        /// An index into [`USERS`].
        user: Option<usize>,
        /// Indexes into [`PRIVILEGES`].
        privileges: Vec<usize>,
        /// `info`; refused at the door when past the JSON limits.
        info: Option<Value>,
        /// Initial storage; likewise.
        data: Option<Value>,
        /// A session to take over.
        take_over: Option<Pick>,
        /// A heartbeat interval of its own.
        heartbeat: Option<u32>,
        /// The client's address (last byte of 10.0.0.x).
        ip: Option<u8>,
    },
    /// A merge patch of a session's storage.
    Patch {
        /// The session.
        who: Pick,
        /// By token (else by id).
        via_token: bool,
        /// The patch (an object, or not: then refused).
        patch: Value,
        /// `If-Match`.
        version: Option<VersionPick>,
    },
    /// New privileges, and maybe new info and user.
    SetPrivileges {
        /// The session.
        who: Pick,
        /// Indexes into [`PRIVILEGES`].
        privileges: Vec<usize>,
        /// New info.
        info: Option<Value>,
        /// An index into [`USERS`].
        user: Option<usize>,
    },
    /// A heartbeat by token.
    Heartbeat {
        /// The session.
        who: Pick,
    },
    /// Suspend, resume or retune a heartbeat.
    SetHeartbeat {
        /// The session.
        who: Pick,
        /// By token (held to the app's policy), else by id.
        via_token: bool,
        /// On or off.
        active: bool,
        /// A new interval.
        interval_s: Option<u32>,
    },
    /// Resolve a token.
    Resolve {
        /// The session.
        who: Pick,
        /// Count as activity.
        touch: bool,
        /// The caller's address (last byte of 10.0.0.x).
        ip: Option<u8>,
    },
    /// Log out by token.
    Logout {
        /// The session.
        who: Pick,
        /// With the token it had before its last privilege change (if any).
        stale_token: bool,
    },
    /// Close by id, as an administrator.
    Close {
        /// The session.
        who: Pick,
    },
    /// Close every open session of an app but some.
    CloseAll {
        /// App 0 or 1.
        app: usize,
        /// Sessions spared.
        except: Vec<Pick>,
    },
    /// Read by id.
    Get {
        /// The session.
        who: Pick,
    },
    /// A page of an app's sessions.
    List {
        /// App 0 or 1.
        app: usize,
        /// 0: any, 1: open, 2: closed.
        status: u8,
        /// An index into [`USERS`].
        user: Option<usize>,
        /// Start after this session.
        after: Option<Pick>,
        /// Newest first.
        newest_first: bool,
        /// Page size.
        limit: usize,
    },
    /// Seats of an app.
    Seats {
        /// App 0 or 1.
        app: usize,
    },
    /// Time passes, on the clock both Managers read.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
}

/// One generated case: the policies of its two apps and what happens in them.
#[derive(Debug, Clone)]
pub struct Case {
    /// The policies of app 0 and app 1.
    pub policies: [Policy; 2],
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// Strings with anything in them: control characters, quotes, backslashes, the
/// line separators JavaScript chokes on, astral characters.
fn text() -> impl Strategy<Value = String> {
    let tricky = select(vec![
        '"',
        '\\',
        '/',
        '\u{0}',
        '\u{1}',
        '\u{1f}',
        '\u{7f}',
        '\u{2028}',
        '\u{fffd}',
        'é',
        '\u{1f600}',
        '{',
        '}',
    ]);
    vec(prop_oneof![2 => any::<char>(), 1 => tricky], 0..8).prop_map(String::from_iter)
}

/// Object keys: a few short ones often (so patches meet what is stored), anything, and
/// keys of 254 to 258 bytes, in ASCII and in two-byte characters (the limit is 256).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["a", "b", "n", "é\n"]).prop_map(String::from),
        2 => text(),
        1 => (Limits::MAX_JSON_KEY_BYTES - 2..=Limits::MAX_JSON_KEY_BYTES + 2)
            .prop_map(|n| "k".repeat(n)),
        1 => (Limits::MAX_JSON_KEY_BYTES / 2 - 1..=Limits::MAX_JSON_KEY_BYTES / 2 + 1)
            .prop_map(|n| "é".repeat(n)),
    ]
}

/// Numbers a JSON number can hold: any integer of either sign, any finite float, and
/// the ones that are hard to print and read back.
fn number() -> impl Strategy<Value = Value> {
    let special = select(vec![
        0.0,
        -0.0,
        0.1,
        1e300,
        -1e-300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        1e21,
        123_456_789.123_456_79,
        9_007_199_254_740_993.0,
    ]);
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![0u64, 1, u64::MAX, 1 << 53, (1 << 53) + 1]).prop_map(Value::from),
        select(vec![i64::MIN, -1, -(1 << 53) - 1]).prop_map(Value::from),
        prop_oneof![any::<f64>(), special]
            .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

/// A value nested `30..=33` containers deep around a leaf: as storage (`{"k": v}`)
/// that is 31 to 34 levels, across [`Limits::MAX_JSON_DEPTH`] (32) both ways.
fn deep() -> impl Strategy<Value = Value> {
    let around = Limits::MAX_JSON_DEPTH;
    (leaf(), vec(option::of(key()), around - 2..=around + 1)).prop_map(|(leaf, levels)| {
        levels.into_iter().fold(leaf, |inner, level| match level {
            Some(k) => Value::Object(Map::from_iter([(k, inner)])),
            None => Value::Array(vec![inner]),
        })
    })
}

/// Any JSON value: small trees of anything, and now and then one nested around the
/// depth limit.
pub fn json_value() -> impl Strategy<Value = Value> {
    let tree = leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..4).prop_map(|kv| Value::Object(Map::from_iter(kv))),
        ]
    });
    prop_oneof![4 => tree, 1 => deep()]
}

/// A JSON object (storage, info, a patch), whose members are any values.
pub fn json_object() -> impl Strategy<Value = Value> {
    vec((key(), json_value()), 0..4).prop_map(|kv| Value::Object(Map::from_iter(kv)))
}

/// A patch: an object mostly, now and then something else (refused).
fn patch() -> impl Strategy<Value = Value> {
    prop_oneof![8 => json_object(), 1 => json_value()]
}

fn privileges() -> impl Strategy<Value = Vec<usize>> {
    vec(0..PRIVILEGES.len(), 0..3)
}

fn user() -> impl Strategy<Value = Option<usize>> {
    option::of(0..USERS.len())
}

fn ip() -> impl Strategy<Value = Option<u8>> {
    option::of(1..3u8)
}

/// One operation; opens and patches are the most frequent.
pub fn op() -> impl Strategy<Value = Op> {
    let pick = || 0..8usize;
    let open = (
        0..2usize,
        user(),
        privileges(),
        option::of(json_object()),
        option::of(json_object()),
        option::of(pick()),
        option::of(select(vec![0u32, 1, 10, 30])),
        ip(),
    )
        .prop_map(
            |(app, user, privileges, info, data, take_over, heartbeat, ip)| Op::Open {
                app,
                user,
                privileges,
                info,
                data,
                take_over,
                heartbeat,
                ip,
            },
        );
    let version = prop_oneof![
        2 => Just(VersionPick::Current),
        1 => select(vec![-1i8, 1, -100]).prop_map(VersionPick::Off),
    ];
    let patch = (pick(), any::<bool>(), patch(), option::of(version)).prop_map(
        |(who, via_token, patch, version)| Op::Patch {
            who,
            via_token,
            patch,
            version,
        },
    );
    let set_privileges = (pick(), privileges(), option::of(json_object()), user()).prop_map(
        |(who, privileges, info, user)| Op::SetPrivileges {
            who,
            privileges,
            info,
            user,
        },
    );
    prop_oneof![
        4 => open,
        4 => patch,
        1 => set_privileges,
        1 => pick().prop_map(|who| Op::Heartbeat { who }),
        1 => (pick(), any::<bool>(), any::<bool>(), option::of(select(vec![0u32, 5, 600])))
            .prop_map(|(who, via_token, active, interval_s)| Op::SetHeartbeat {
                who,
                via_token,
                active,
                interval_s,
            }),
        1 => (pick(), any::<bool>(), ip()).prop_map(|(who, touch, ip)| Op::Resolve { who, touch, ip }),
        1 => (pick(), any::<bool>()).prop_map(|(who, stale_token)| Op::Logout { who, stale_token }),
        1 => pick().prop_map(|who| Op::Close { who }),
        1 => (0..2usize, vec(pick(), 0..3)).prop_map(|(app, except)| Op::CloseAll { app, except }),
        1 => pick().prop_map(|who| Op::Get { who }),
        2 => (0..2usize, 0..3u8, user(), option::of(pick()), any::<bool>(), 1..6usize).prop_map(
            |(app, status, user, after, newest_first, limit)| Op::List {
                app,
                status,
                user,
                after,
                newest_first,
                limit,
            }
        ),
        1 => (0..2usize).prop_map(|app| Op::Seats { app }),
        2 => prop_oneof![0..2_000u64, select(vec![1_000u64, 61_000, 3_601_000])]
            .prop_map(|ms| Op::Advance { ms }),
    ]
}

/// The policy of one app: short timeouts (so time passing closes sessions), seats and
/// per-user limits or none, either answer when full, `admin` reserved.
pub fn policy() -> impl Strategy<Value = Policy> {
    (
        select(vec![60u32, 3600]),
        select(vec![120u32, 43_200]),
        // An interval, and a seat lease or none.
        option::of((select(vec![10u32, 30]), select(vec![0u32, 45]))),
        option::of(1..4u32),
        any::<bool>(),
        option::of(1..3u32),
        any::<bool>(),
        any::<bool>(),
        select(vec![0u32, 60, 604_800]),
    )
        .prop_map(
            |(idle, lifetime, beat, seats, evict, per_user, replace, bind_ip, retention)| Policy {
                idle_timeout_s: idle,
                absolute_lifetime_s: lifetime,
                heartbeat: beat.map(|(interval, lease_s)| HeartbeatPolicy {
                    lease_s,
                    ..HeartbeatPolicy::every(interval)
                }),
                seats,
                on_full: if evict {
                    OnFull::EvictIdlest
                } else {
                    OnFull::Reject
                },
                reserved_privileges: vec!["admin".into()],
                max_per_user: per_user,
                on_user_limit: if replace {
                    OnUserLimit::ReplaceOldest
                } else {
                    OnUserLimit::Reject
                },
                bind_ip,
                retention_s: retention,
                ..Default::default()
            },
        )
}

/// A case: two policies and 1 to 24 operations.
pub fn case() -> impl Strategy<Value = Case> {
    (policy(), policy(), vec(op(), 1..24)).prop_map(|(a, b, ops)| Case {
        policies: [a, b],
        ops,
    })
}
