//! The PostgreSQL store over TLS, against private clusters started here (`initdb`,
//! `ssl = on`, a certificate from a test CA, plain TCP refused by `pg_hba.conf`): the
//! store works with `sslmode=verify-full` and with `require` (which verifies here),
//! part of the conformance suite runs over it, and every certificate that should not
//! pass is refused with a message that says why, never by a fall-back to plain TCP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::conformance;
use sessiond_core::{Store, StoreError};
use sessiond_postgres::{PostgresOptions, PostgresStore};
use sessiond_testkit::{TestCa, TlsPostgres};

const PASSWORD: &str = "pw-never-shown";

/// A store on a fresh schema of `url`.
async fn store(url: &str) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect(url, common::options(&common::fresh_schema())).await
}

/// Connecting to `url` fails; the message, which must not show the password.
async fn refusal(url: &str) -> String {
    let options = PostgresOptions {
        op_timeout: Duration::from_secs(3),
        ..common::options(&common::fresh_schema())
    };
    match PostgresStore::connect(url, options).await {
        Ok(_) => panic!("connected, but the connection should be refused"),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains(PASSWORD), "the message shows the password: {m}");
            eprintln!("refused, as it should be: {m}");
            m
        }
    }
}

/// `verify-full` with the test CA as `sslrootcert`: a part of the conformance suite
/// (admission races, events across nodes over `LISTEN` connections, expiry on many
/// nodes), each on a schema of its own; `require` verifies the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_runs_over_verified_tls() {
    let ca = TestCa::new("sessiond test CA");
    let Some(cluster) = common::tls_cluster(&ca, &["127.0.0.1"]) else {
        return;
    };
    let root = cluster.ca_path().display().to_string();
    let verify_full = format!("{}?sslmode=verify-full&sslrootcert={root}", cluster.url());
    let require = format!("{}?sslmode=require&sslrootcert={root}", cluster.url());

    for url in [&verify_full, &require] {
        let s: Arc<dyn Store> = Arc::new(store(url).await.expect("connect over TLS"));
        conformance::open_then_resolve(s).await;
    }
    let fresh = || async { Arc::new(store(&verify_full).await.unwrap()) as Arc<dyn Store> };
    conformance::race_64_opens_10_seats(fresh().await).await;
    conformance::events_cross_nodes(fresh().await).await;
    conformance::expiry_on_many_nodes_closes_each_once(fresh().await).await;
    conformance::set_privileges_rotates_the_token(fresh().await).await;
    drop(cluster);
}

/// A certificate signed by another CA, or naming another host, is refused; `require`
/// and `verify-full` without `sslrootcert` trust only the system's roots, which do not
/// hold the test CA, so they are refused too (never downgraded to plain TCP); and
/// `prefer` does not try TLS here, so the cluster, which admits TLS only, turns it
/// away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_verify_are_refused() {
    let ca = TestCa::new("sessiond test CA");
    let Some(cluster) = common::tls_cluster(&ca, &["localhost"]) else {
        return;
    };
    let root = cluster.ca_path().display().to_string();
    let port = cluster.port();
    let at = |host: &str, query: &str| {
        format!("postgres://postgres:{PASSWORD}@{host}:{port}/postgres?{query}")
    };

    // The certificate names localhost: the right name passes.
    let good = at(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    store(&good).await.expect("localhost over verified TLS");

    let m = refusal(&at(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await;
    assert!(
        m.contains("certificate was refused") && m.contains("not valid for name \"127.0.0.1\""),
        "{m}"
    );

    let other = TestCa::new("another CA");
    let other_root = other.write_pem(cluster_dir(&cluster), "other-ca.pem");
    let query = format!("sslmode=verify-full&sslrootcert={}", other_root.display());
    let m = refusal(&at("localhost", &query)).await;
    assert!(
        m.contains("certificate was refused") && m.contains("UnknownIssuer"),
        "{m}"
    );

    for query in ["sslmode=verify-full", "sslmode=require"] {
        let m = refusal(&at("localhost", query)).await;
        assert!(
            m.contains("certificate was refused") && m.contains("UnknownIssuer"),
            "{query}: {m}"
        );
    }

    let m = refusal(&at("localhost", "sslmode=prefer")).await;
    assert!(m.contains("no encryption"), "prefer: {m}");
    drop(cluster);
}

/// The directory of the cluster's CA file, to write another CA's beside it.
fn cluster_dir(cluster: &TlsPostgres) -> &std::path::Path {
    cluster.ca_path().parent().expect("the CA file's directory")
}

/// A URL the store and tokio-postgres would read differently (an unencoded `?` in the
/// password hides `sslmode=require` from one of them) is refused before any connection,
/// never connected in the clear.
#[tokio::test]
async fn a_url_read_two_ways_is_refused_not_connected_in_the_clear() {
    for url in [
        format!("postgres://sessiond:{PASSWORD}?x@127.0.0.1:1/sessions?sslmode=require"),
        format!("postgres://sessiond:{PASSWORD}@127.0.0.1:1/sessions?ssl%6Dode=require"),
    ] {
        let m = refusal(&url).await;
        assert!(m.contains("unambiguously"), "{url}: {m}");
    }
}
