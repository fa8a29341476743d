//! TLS to a Redis server of the test's own: what is refused, and how it says so. (The
//! whole conformance suite runs over TLS in `over_tls`.) Every refusal is a failed
//! connect, never a connection made in the clear, and no message repeats the
//! password of the URL.

use sessiond_core::StoreError;
use sessiond_redis::{RedisOptions, RedisStore};
use sessiond_testkit::{TestCa, TlsRedis};

use super::super::{tls_server, tls_url};

const PASSWORD: &str = "pw-never-shown";

/// Connects to `url` and returns the refusal's message.
async fn refusal(url: &str) -> String {
    match RedisStore::connect(url, RedisOptions::default()).await {
        Ok(_) => panic!("connected, but the connection should be refused"),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains(PASSWORD), "the message shows the password: {m}");
            eprintln!("refused, as it should be: {m}");
            assert!(
                matches!(e, StoreError::Unavailable(_) | StoreError::Backend(_)),
                "{e:?}"
            );
            m
        }
    }
}

/// With the test CA trusted, the store works over TLS, and the server speaks nothing
/// else: a plain connection to the same port fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trusted_ca_connects_and_the_port_speaks_only_tls() {
    let Some(server) = tls_server("Redis over TLS") else {
        return;
    };
    let store = RedisStore::connect(&tls_url(&server), RedisOptions::default())
        .await
        .expect("connect over TLS");
    sessiond_core::Store::ping(&store).await.unwrap();
    let plain = format!("redis://127.0.0.1:{}", server.port());
    let options = RedisOptions::default().with_op_timeout(std::time::Duration::from_secs(1));
    assert!(RedisStore::connect(&plain, options).await.is_err());
}

/// A server whose certificate another CA signed is refused, whether the store trusts
/// a private CA (`ca_cert`) or the system's roots (no `ca_cert`: never a fall-back to
/// a connection that verifies nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let Some(server) = tls_server("Redis over TLS") else {
        return;
    };
    let other = TestCa::new("another CA");
    let other_ca = other.write_pem(server.dir(), "other-ca.pem");
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{}?ca_cert={}",
        server.port(),
        other_ca.display()
    );
    let m = refusal(&url).await;
    assert!(
        m.contains("certificate was refused") && m.contains("UnknownIssuer"),
        "{m}"
    );

    let system_roots = format!("rediss://:{PASSWORD}@127.0.0.1:{}", server.port());
    let m = refusal(&system_roots).await;
    assert!(
        m.contains("certificate was refused") && m.contains("UnknownIssuer"),
        "{m}"
    );
}

/// A certificate for `localhost` does not pass for `127.0.0.1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused() {
    let ca = TestCa::new("sessiond test CA");
    let server = match TlsRedis::start(&ca, &["localhost"]) {
        Ok(s) => s,
        Err(why) => return sessiond_core::skip::skip("Redis over TLS", &why),
    };
    let url = format!(
        "rediss://:{PASSWORD}@127.0.0.1:{}?ca_cert={}",
        server.port(),
        server.ca_path().display()
    );
    let m = refusal(&url).await;
    assert!(
        m.contains("certificate was refused") && m.contains("not valid for name \"127.0.0.1\""),
        "{m}"
    );
}

/// `#insecure` (the redis client's switch to accept any certificate) is refused
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_verification_off_is_refused() {
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:1/#insecure");
    let m = refusal(&url).await;
    assert!(m.contains("#insecure") && m.contains("ca_cert"), "{m}");
}
