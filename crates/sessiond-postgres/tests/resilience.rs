//! The PostgreSQL store when things go wrong: no server, a server that never answers,
//! locks held elsewhere, nodes starting together, a lost event connection. Tests that
//! need a real PostgreSQL skip like the conformance suite does.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_core::{Error, Lookup, Manager, OpenRequest, Policy, Store, StoreError, Token};
use sessiond_postgres::{PostgresOptions, PostgresStore};

fn quick(schema: &str, op_timeout: Duration) -> PostgresOptions {
    PostgresOptions {
        schema: schema.into(),
        op_timeout,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_closed_port_is_unavailable_at_once() {
    let start = Instant::now();
    let r = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
        quick("sessiond", Duration::from_secs(1)),
    )
    .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_the_timeout() {
    // Accepts connections and says nothing: the worst kind of dead server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let start = Instant::now();
    let r = PostgresStore::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        quick("sessiond", Duration::from_millis(500)),
    )
    .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    silent.abort();
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let r = PostgresStore::connect(&common::url(), quick("Bad-Name", Duration::from_secs(1))).await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    let r = PostgresStore::connect("postgres://[nope", quick("ok", Duration::from_secs(1))).await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_row_times_out_without_exhausting_the_pool() {
    let Some(store) = common::fresh_store_with(|o| {
        o.pool_size = 2;
        o.op_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    let (url, schema) = (store.url.clone(), store.schema.clone());
    let store = Arc::new(store);
    let m = Manager::new(store.clone());
    m.set_policy("app", Policy::default()).unwrap();
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let l = Lookup::Token(o.token.hash());

    // Another client holds the session's row lock.
    let mut raw = common::raw_client(&url).await;
    let tx = raw.transaction().await.unwrap();
    let id = uuid::Uuid::from_u128(o.session.id.as_u128());
    tx.execute(
        &format!("SELECT 1 FROM \"{schema}\".sessions WHERE id = $1 FOR UPDATE"),
        &[&id],
    )
    .await
    .unwrap();
    for i in 0..6 {
        let start = Instant::now();
        let r = m.update_data(l, json!({ "i": i }), None, None).await;
        assert!(
            matches!(r, Err(Error::Store(StoreError::Unavailable(_)))),
            "{r:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    // Reads need no lock and still work while the row is held.
    m.resolve(&o.token, sessiond_core::Resolve::default())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Three times the pool's size timed out, and the pool still serves.
    let s = m
        .update_data(l, json!({ "done": true }), None, None)
        .await
        .unwrap();
    assert_eq!(s.data.get("done"), Some(json!(true)));
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(first) = common::fresh_store().await else {
        return;
    };
    let schema = common::fresh_schema();
    let url = first.url.clone();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(
                async move { PostgresStore::connect(&url, common::options(&schema)).await },
            )
        })
        .collect();
    for s in starts {
        s.await.unwrap().expect("every node connects");
    }
    let raw = common::raw_client(&url).await;
    let row = raw
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".schema_migrations"),
            &[],
        )
        .await
        .unwrap();
    // Two migrations (the sessions; the webhook outbox), each applied once.
    assert_eq!(row.get::<_, i64>(0), 2);
    raw.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_token_hash_is_stored() {
    let Some(store) = common::fresh_store().await else {
        return;
    };
    let (url, schema) = (store.url.clone(), store.schema.clone());
    let m = Manager::new(Arc::new(store));
    m.set_policy("app", Policy::default()).unwrap();
    let o = m.open("app", OpenRequest::default()).await.unwrap();
    let raw = common::raw_client(&url).await;
    let rows = raw
        .query(
            &format!("SELECT body::text, token_hash FROM \"{schema}\".sessions"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let body: String = rows[0].get(0);
    let hash: Vec<u8> = rows[0].get(1);
    assert!(!body.contains(o.token.expose()));
    let key = o.token.expose().split_once(':').unwrap().1;
    assert!(!body.contains(key));
    assert_eq!(hash, o.token.hash().0.to_be_bytes().to_vec());
}

/// An import of a session under an id that lives in another app moves it: one row, in
/// the new app (whose admission-lock row exists), found by its new token only, counted
/// there and no longer in its old app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_moves_a_session_between_apps() {
    let Some(store) = common::fresh_store().await else {
        return;
    };
    let (url, schema) = (store.url.clone(), store.schema.clone());
    let store = Arc::new(store);
    let m = Manager::new(store.clone());
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
    let moved = sessiond_core::Session {
        app: Arc::from("depot"),
        token_hash: Token::generate("depot").hash(),
        version: o.session.version + 1,
        ..o.session.clone()
    };
    store.import(moved.clone()).await.unwrap();
    assert_eq!(
        store.get(Lookup::Id(moved.id)).await.unwrap(),
        Some(moved.clone())
    );
    assert_eq!(
        store.get(Lookup::Token(moved.token_hash)).await.unwrap(),
        Some(moved.clone())
    );
    assert_eq!(
        store.get(Lookup::Token(o.token.hash())).await.unwrap(),
        None
    );
    assert_eq!(store.counts("shop").await.unwrap().open, 0);
    assert_eq!(store.counts("depot").await.unwrap().seats_used, 1);
    let raw = common::raw_client(&url).await;
    let row = raw
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".sessions), \
                 (SELECT count(*) FROM \"{schema}\".apps WHERE app = 'depot')"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_few_kilobytes_cross_and_larger_ones_are_refused() {
    let Some(store) = common::fresh_store().await else {
        return;
    };
    let bus = store.event_bus().unwrap();
    let mut rx = bus.subscribe().await.unwrap();
    let big = "x".repeat(sessiond_postgres::MAX_PAYLOAD);
    bus.publish(big.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, big);
    let r = bus.publish("x".repeat(8000)).await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_when_its_connection_dies() {
    let Some(store) = common::fresh_store().await else {
        return;
    };
    let bus = store.event_bus().unwrap();
    let mut rx = bus.subscribe().await.unwrap();
    let raw = common::raw_client(&store.url).await;
    let listen = format!("LISTEN \"{}_events\"", store.schema);
    let killed = raw
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1",
            &[&listen],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "one listening connection");
    // Messages sent while it is down are lost; once it is back, they flow again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the listener never came back");
        let _ = bus.publish("ping".into()).await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if m == "ping" {
                break;
            }
        }
    }
}

/// A schema a newer sessiond migrated further than this build knows is refused at
/// connect, naming the schema, and left as it is; one this build knows connects.
#[tokio::test]
async fn a_schema_a_newer_sessiond_migrated_is_refused() {
    let Some(store) = common::fresh_store().await else {
        return;
    };
    let client = common::raw_client(&store.url).await;
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".schema_migrations (version) VALUES (99)",
                store.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let e = PostgresStore::connect(&store.url, common::options(&store.schema))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("newer sessiond") && e.contains(&store.schema) && e.contains("99"),
        "{e}"
    );
    let rows = client
        .query(
            &format!("SELECT version FROM \"{}\".schema_migrations", store.schema),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "left as it was: the two migrations and 99");
    client
        .execute(
            &format!(
                "DELETE FROM \"{}\".schema_migrations WHERE version = 99",
                store.schema
            ),
            &[],
        )
        .await
        .unwrap();
    PostgresStore::connect(&store.url, common::options(&store.schema))
        .await
        .expect("the schema this build knows connects");
}
