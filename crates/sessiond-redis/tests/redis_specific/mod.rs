//! Checks specific to the Redis store: failing fast and cleanly without a server, the
//! key layout it promises, and the round trips a resolve costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sessiond_core::admission::Admission;
use sessiond_core::store::{ListQuery, ModifyOutcome};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Manager, ManualClock, OpenRequest, Policy,
    Resolve, SessionId, Store, StoreError, Timestamp, Token,
};
use sessiond_redis::{RedisOptions, RedisStore};

use super::{fresh_store, server_url};

mod cluster;
mod frozen;
mod nodes;
mod read_cache;
mod tls;
mod unreadable;

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "{what}: expected Unavailable, got {r:?}"
    );
}

/// Runs every operation of `store` and checks each fails `Unavailable` within `bound`.
async fn every_operation_is_unavailable(store: &RedisStore, bound: Duration) {
    let session = {
        let m = Manager::new(Arc::new(sessiond_core::MemoryStore::new()));
        m.set_policy("app", Policy::default()).unwrap();
        m.open("app", OpenRequest::default()).await.unwrap().session
    };
    let id = session.id;
    let now = T0;
    macro_rules! check {
        ($what:literal, $op:expr) => {{
            let started = Instant::now();
            let r = $op.await;
            assert!(
                started.elapsed() < bound,
                "{} took {:?}",
                $what,
                started.elapsed()
            );
            assert_unavailable($what, r);
        }};
    }
    check!("ping", store.ping());
    check!(
        "open",
        store.open(session.clone(), &Admission::default(), now)
    );
    check!("get", store.get(Lookup::Id(id)));
    check!(
        "modify",
        store.modify(
            Lookup::Token(session.token_hash),
            &Change::Touch,
            &Conditions::default(),
            now
        )
    );
    check!(
        "close",
        store.close(id, CloseReason::Killed, Actor::Admin, now)
    );
    check!(
        "close_all",
        store.close_all("app", &[], None, CloseReason::ClosedAll, Actor::App, now)
    );
    check!("list", store.list(&ListQuery::default()));
    check!("counts", store.counts("app"));
    check!("expire_due", store.expire_due(now, 10));
    let bus = store.event_bus().expect("a bus");
    check!("publish", bus.publish("x".into()));
    check!("subscribe", bus.subscribe());
}

/// A closed port: connecting says `Unavailable` at once, and a lazily connected store
/// answers `Unavailable` to every operation within the operation timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unavailable_not_a_panic_or_a_hang() {
    let url = "redis://127.0.0.1:1";
    let timeout = Duration::from_millis(300);
    let options = RedisOptions::default().with_op_timeout(timeout);
    let started = Instant::now();
    assert_unavailable("connect", RedisStore::connect(url, options.clone()).await);
    assert!(started.elapsed() < Duration::from_secs(1));
    let store = RedisStore::connect_lazy(url, options).expect("a valid URL");
    every_operation_is_unavailable(&store, timeout + Duration::from_millis(500)).await;
}

/// A server that accepts connections but never answers: every operation gives up at
/// the operation timeout instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // keep it open, say nothing
        }
    });
    let timeout = Duration::from_millis(300);
    let options = RedisOptions::default().with_op_timeout(timeout);
    let store = RedisStore::connect_lazy(&format!("redis://{addr}"), options).unwrap();
    every_operation_is_unavailable(&store, timeout + Duration::from_millis(500)).await;
    hold.abort();
}

#[test]
fn bad_options_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bad_prefix = RedisOptions::default().with_prefix("a{b}");
        assert!(RedisStore::connect_lazy("redis://127.0.0.1:6379", bad_prefix).is_err());
        assert!(RedisStore::connect_lazy("nope://x", RedisOptions::default()).is_err());
    });
}

/// A plain connection for checks made around the store. Its answers may wait behind a
/// loaded server (other suites, MONITOR clients): a longer wait than the client's
/// 500 ms default, which is not what these tests measure.
async fn raw_connection(client: &redis::Client) -> redis::aio::MultiplexedConnection {
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    raw.set_response_timeout(Duration::from_secs(10));
    raw
}

/// A node's manager of app `shop` (default policy) on `store`, on the shared clock.
fn shop_node(store: RedisStore, clock: &Arc<ManualClock>) -> Manager {
    let m = Manager::with_clock(Arc::new(store), clock.clone());
    m.set_policy("shop", Policy::default()).unwrap();
    m
}

/// Another node on the same keys: its own connection and its own (cold) caches.
async fn other_node(prefix: &str, clock: &Arc<ManualClock>) -> Manager {
    let other = RedisStore::connect(&server_url(), RedisOptions::default().with_prefix(prefix))
        .await
        .unwrap();
    shop_node(other, clock)
}

/// Whether `id` is a member of index `name` of `app` (a sorted set).
async fn indexed(
    raw: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    app: &str,
    name: &str,
    id: SessionId,
) -> bool {
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{prefix}:{{{app}}}:{name}"))
        .arg(id.to_string())
        .query_async(raw)
        .await
        .unwrap();
    score.is_some()
}

/// Sends a marker through a plain connection and collects the commands MONITOR saw
/// naming `prefix` until the marker, leaving out those a script ran.
async fn commands_until_marker(
    monitor: &mut (impl futures_util::Stream<Item = String> + Unpin),
    raw: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    let marker = format!("{prefix}:marker:{}", SessionId::new());
    let _: String = redis::cmd("ECHO")
        .arg(&marker)
        .query_async(raw)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, monitor.next()).await {
        if line.contains(&marker) {
            return seen;
        }
        if line.contains(prefix) && !line.contains(" lua]") {
            seen.push(line);
        }
    }
    panic!("the marker never came back through MONITOR");
}

/// The documented layout, no token at rest, and the promised cost of a resolve: one
/// round trip with the token's place cached, two without, and no write for a touch
/// that changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_and_resolve_cost() {
    let Some(test_store) = fresh_store().await else {
        return;
    };
    let store = test_store.0.clone();
    let prefix = store.prefix().to_string();
    let client = redis::Client::open(server_url()).unwrap();
    let mut raw = raw_connection(&client).await;

    let clock = Arc::new(ManualClock::new(T0));
    let m = shop_node(store.clone(), &clock);
    let o = m
        .open(
            "shop",
            OpenRequest {
                user: Some("ann".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = o.session.id;

    let record = format!("{prefix}:{{shop}}:s:{id}");
    let (rev, json): (String, String) = redis::cmd("HMGET")
        .arg(&record)
        .arg("rev")
        .arg("json")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(rev, "1");
    assert!(!json.contains(o.token.expose()), "no token at rest");
    let hash = o.token.hash().to_hex();
    let entry: String = redis::cmd("GET")
        .arg(format!("{prefix}:t:{hash}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(entry, format!("shop\n{id}"));
    let apps: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:apps"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(apps, vec!["shop".to_string()]);
    for (name, member) in [
        ("open", true),
        ("due", true),
        ("seated", true),
        ("u:ann", true),
    ] {
        assert_eq!(
            indexed(&mut raw, &prefix, "shop", name, id).await,
            member,
            "{name}"
        );
    }

    let mut monitor = client
        .get_async_monitor()
        .await
        .unwrap()
        .into_on_message::<String>();
    let peek = Resolve {
        touch: false,
        ip: None,
    };
    let touch = Resolve {
        touch: true,
        ip: None,
    };
    commands_until_marker(&mut monitor, &mut raw, &prefix).await;

    m.resolve(&o.token, peek).await.unwrap();
    let seen = commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    assert_eq!(seen.len(), 1, "cached resolve: {seen:#?}");

    clock.advance(Duration::from_millis(200));
    m.resolve(&o.token, touch).await.unwrap();
    let seen = commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    assert_eq!(seen.len(), 1, "coalesced touch writes nothing: {seen:#?}");

    // Another node, cold cache: the token index, then the record (its connect, which
    // checks the keys' layout, is not counted).
    let n = other_node(&prefix, &clock).await;
    commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    n.resolve(&o.token, peek).await.unwrap();
    let seen = commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    assert_eq!(seen.len(), 2, "cold resolve: {seen:#?}");

    clock.advance(Duration::from_secs(2));
    n.resolve(&o.token, touch).await.unwrap();
    let seen = commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    assert_eq!(
        seen.len(),
        2,
        "a touch that writes: read + commit: {seen:#?}"
    );
    let rev: String = redis::cmd("HGET")
        .arg(&record)
        .arg("rev")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(rev, "2");

    // A close made through one node is seen at once through the other's cache.
    m.close(Lookup::Id(id), CloseReason::Killed, Actor::Admin)
        .await
        .unwrap();
    assert!(n.resolve(&o.token, peek).await.is_err());
    assert!(matches!(
        n.resolve(&Token::from_client("shop:00"), peek).await,
        Err(sessiond_core::Error::InvalidToken)
    ));
    drop(test_store);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(left.is_empty(), "test keys are cleaned up: {left:?}");
}

/// A write right after a read commits against the record the node just read: one
/// round trip. When another node wrote in between, the revision check refuses that
/// commit and the write reads the record again: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_read_costs_one_round_trip_and_a_stale_hint_loses_nothing() {
    let Some(test_store) = fresh_store().await else {
        return;
    };
    let store = test_store.0.clone();
    let prefix = store.prefix().to_string();
    let client = redis::Client::open(server_url()).unwrap();
    let mut raw = raw_connection(&client).await;
    let clock = Arc::new(ManualClock::new(T0));
    let m = shop_node(store.clone(), &clock);
    let n = other_node(&prefix, &clock).await;
    let o = m.open("shop", OpenRequest::default()).await.unwrap();
    let id = o.session.id;
    let touch = Resolve {
        touch: true,
        ip: None,
    };

    let mut monitor = client
        .get_async_monitor()
        .await
        .unwrap()
        .into_on_message::<String>();
    commands_until_marker(&mut monitor, &mut raw, &prefix).await;

    // Resolve, then a conditional update, as a web request does.
    let s = m.resolve(&o.token, touch).await.unwrap();
    let s = m
        .update_data(
            Lookup::Id(id),
            serde_json::json!({"a": 1}),
            Some(s.version),
            None,
        )
        .await
        .unwrap();
    let seen = commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    assert_eq!(seen.len(), 2, "one read, one commit: {seen:#?}");

    // The other node writes; this node's hint is now stale.
    n.update_data(Lookup::Id(id), serde_json::json!({"b": 2}), None, None)
        .await
        .unwrap();
    commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    let s2 = m
        .update_data(Lookup::Id(id), serde_json::json!({"c": 3}), None, None)
        .await
        .unwrap();
    let seen = commands_until_marker(&mut monitor, &mut raw, &prefix).await;
    assert_eq!(seen.len(), 3, "refused commit, read, commit: {seen:#?}");
    assert_eq!(s2.version, s.version + 2);
    let stored = n.get(id).await.unwrap();
    assert_eq!(
        stored.data.to_map(),
        serde_json::json!({"a": 1, "b": 2, "c": 3})
            .as_object()
            .unwrap()
            .clone()
    );

    // A conditional update at a version the hint no longer has is refused as a
    // version mismatch after reading the record, never applied.
    let err = m
        .update_data(
            Lookup::Id(id),
            serde_json::json!({"d": 4}),
            Some(s.version),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, sessiond_core::Error::VersionMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(n.get(id).await.unwrap().version, s2.version);
}

/// An import under an id that lives in another app moves the session: its old record
/// and index entries go, the global entries carry a TTL and name the new app, both
/// apps' revisions move, and a node whose cache still names the old app finds the
/// session where it is now, for reads and writes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_moves_a_session_between_apps() {
    let Some(test_store) = fresh_store().await else {
        return;
    };
    let store = test_store.0.clone();
    let prefix = store.prefix().to_string();
    let other = RedisStore::connect(&server_url(), RedisOptions::default().with_prefix(&prefix))
        .await
        .unwrap();
    let client = redis::Client::open(server_url()).unwrap();
    let mut raw = raw_connection(&client).await;
    let m = Manager::with_clock(Arc::new(store.clone()), Arc::new(ManualClock::new(T0)));
    m.set_policy("shop", Policy::default()).unwrap();
    let o = m
        .open(
            "shop",
            OpenRequest {
                user: Some("ann".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = o.session.id;
    // The other node learns where the session is.
    assert!(other.get(Lookup::Id(id)).await.unwrap().is_some());
    assert!(other
        .get(Lookup::Token(o.token.hash()))
        .await
        .unwrap()
        .is_some());
    let rev = |app: &'static str| {
        let mut raw = raw.clone();
        let key = format!("{prefix}:{{{app}}}:rev");
        async move {
            let r: Option<u64> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut raw)
                .await
                .unwrap();
            r.unwrap_or(0)
        }
    };
    let shop_rev = rev("shop").await;

    let moved = sessiond_core::Session {
        app: Arc::from("depot"),
        token_hash: Token::generate("depot").hash(),
        version: o.session.version + 1,
        ..o.session.clone()
    };
    store.import(moved.clone()).await.unwrap();
    assert!(
        rev("shop").await > shop_rev,
        "the old app's admissions read again"
    );
    assert!(
        rev("depot").await > 0,
        "the new app's admissions read again"
    );

    let old_token = format!("{prefix}:t:{}", o.token.hash().to_hex());
    let new_token = format!("{prefix}:t:{}", moved.token_hash.to_hex());
    let id_key = format!("{prefix}:i:{id}");
    let (gone, entry, app, token_ttl, id_ttl): (bool, String, String, i64, i64) = redis::pipe()
        .cmd("EXISTS")
        .arg(&old_token)
        .cmd("GET")
        .arg(&new_token)
        .cmd("GET")
        .arg(&id_key)
        .cmd("PTTL")
        .arg(&new_token)
        .cmd("PTTL")
        .arg(&id_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!gone, "the old token's entry is removed");
    assert_eq!((entry, app), (format!("depot\n{id}"), "depot".to_string()));
    assert!(token_ttl > 0 && id_ttl > 0, "{token_ttl} {id_ttl}");
    let old_record: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}:{{shop}}:s:{id}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!old_record);
    for (name, member) in [
        ("open", false),
        ("due", false),
        ("seated", false),
        ("u:ann", false),
    ] {
        assert_eq!(
            indexed(&mut raw, &prefix, "shop", name, id).await,
            member,
            "shop {name}"
        );
    }
    let apps: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:apps"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(apps.contains(&"depot".to_string()), "{apps:?}");

    // The other node's cache still names the old app.
    let patch = Change::PatchData {
        patch: serde_json::json!({ "moved": true }),
        max_bytes: 1024,
    };
    let done = other
        .modify(Lookup::Id(id), &patch, &Conditions::default(), T0)
        .await
        .unwrap();
    assert!(matches!(done, ModifyOutcome::Done { .. }), "{done:?}");
    let now = other
        .get(Lookup::Token(moved.token_hash))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*now.app, *"depot");
    assert_eq!(now.data.get("moved"), Some(serde_json::json!(true)));
    assert_eq!(
        other.get(Lookup::Token(o.token.hash())).await.unwrap(),
        None
    );
    assert_eq!(other.counts("shop").await.unwrap().open, 0);
    assert_eq!(other.counts("depot").await.unwrap().seats_used, 1);
}

/// The layout of the keys is recorded when a store connects; a prefix holding sessions
/// from before layouts were recorded gets it and reads as before; a prefix a newer
/// sessiond laid out is refused before anything is read or written.
#[tokio::test]
async fn the_layout_is_recorded_and_a_newer_one_refused() {
    let Some(store) = fresh_store().await else {
        return;
    };
    let prefix = store.0.prefix().to_string();
    let key = format!("{prefix}:layout");
    let mut conn = redis::Client::open(server_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let get = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(get(&mut conn).await.as_deref(), Some("1"));

    // Sessions written before the layout was recorded.
    let m = Manager::new(Arc::new(store.0.clone()));
    m.set_policy("app", Policy::default()).unwrap();
    let opened = m.open("app", OpenRequest::default()).await.unwrap();
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let options = || RedisOptions::default().with_prefix(prefix.clone());
    let again = RedisStore::connect(&server_url(), options()).await.unwrap();
    assert_eq!(get(&mut conn).await.as_deref(), Some("1"), "recorded");
    let m = Manager::new(Arc::new(again));
    m.set_policy("app", Policy::default()).unwrap();
    m.resolve(&opened.token, Resolve::default())
        .await
        .expect("read as before");

    let () = redis::cmd("SET")
        .arg(&key)
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = RedisStore::connect(&server_url(), options())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("newer sessiond") && e.contains(&prefix), "{e}");
    assert_eq!(get(&mut conn).await.as_deref(), Some("2"), "left as it was");
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = RedisStore::connect(&server_url(), options())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a layout version"), "{e}");
}
