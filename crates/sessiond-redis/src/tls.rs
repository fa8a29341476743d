//! TLS to Redis: what a store URL may say about it, and the client it makes.
//!
//! - `rediss://` (or `valkeys://`) connects over TLS (rustls, with the ring provider).
//!   The server's certificate is always verified, host name included: against the
//!   system's roots, or, with the query parameter `ca_cert=/path/ca.pem` (ours: it is
//!   taken off the URL before the redis client sees it), against the certificates of
//!   that file only, for a private CA.
//! - `#insecure`, the redis client's way to accept any certificate, is refused: a
//!   connection that cannot tell the server from a man in the middle protects neither
//!   the sessions nor the password in the URL. Trust the CA instead.
//! - `ca_cert` on a plain `redis://` URL is refused rather than ignored, so a URL that
//!   looks verified never connects in the clear.
//!
//! Nothing here puts the URL in a message: it may hold a password.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use redis::TlsCertificates;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::{Error, Result};

/// Our query parameter naming the CA file to trust.
const CA_CERT: &str = "ca_cert";

/// A store URL split into what the redis client reads and what we read.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The URL for the redis client, without `ca_cert`.
    url: String,
    /// Whether the scheme asks for TLS.
    tls: bool,
    /// The CA file to trust instead of the system's roots.
    ca_cert: Option<PathBuf>,
}

/// Splits `url`, refusing what would weaken TLS or silently not apply.
fn parse(url: &str) -> Result<Target> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let tls = matches!(scheme, "rediss" | "valkeys");
    let (rest, fragment) = match url.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (url, None),
    };
    // Judged as the URL parser the redis client uses reads it: it trims spaces and
    // drops tabs and newlines, so "#insecure " must be refused too.
    let fragment_read = fragment.map(|f| {
        f.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
    });
    if fragment_read.as_deref() == Some("insecure") {
        return Err(Error::Config(
            "the store URL ends in #insecure, which would accept any certificate: sessiond \
             does not turn certificate checks off; trust a private CA with \
             ?ca_cert=/path/to/ca.pem instead"
                .into(),
        ));
    }
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, query),
        None => (rest, ""),
    };
    let mut ca_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((CA_CERT, value)) => {
                let path = percent_decode_str(value).decode_utf8().map_err(|_| {
                    Error::Config("the store URL's ca_cert is not UTF-8 once decoded".into())
                })?;
                if path.is_empty() {
                    return Err(Error::Config("the store URL's ca_cert is empty".into()));
                }
                ca_cert = Some(PathBuf::from(path.as_ref()));
            }
            _ => kept.push(pair),
        }
    }
    if ca_cert.is_some() && !tls {
        return Err(Error::Config(format!(
            "the store URL names a ca_cert but its scheme is {scheme}://, which does not \
             use TLS: use rediss://"
        )));
    }
    let mut url = base.to_string();
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    Ok(Target { url, tls, ca_cert })
}

/// The redis client for a store URL (see the module docs).
pub(crate) fn client(url: &str) -> Result<redis::Client> {
    let target = parse(url)?;
    let Some(path) = target.ca_cert else {
        return Ok(redis::Client::open(target.url)?);
    };
    let pem = ca_pem(&path)?;
    debug_assert!(target.tls, "parse refuses ca_cert without TLS");
    let client = redis::Client::build_with_tls(
        target.url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )?;
    Ok(client)
}

/// The cluster schemes: `redis+cluster://` and, over TLS, `rediss+cluster://` (or the
/// `valkey` spellings).
pub(crate) fn is_cluster(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    matches!(
        scheme,
        "redis+cluster" | "rediss+cluster" | "valkey+cluster" | "valkeys+cluster"
    )
}

/// The seed nodes of a cluster URL
/// (`redis+cluster://[user:password@]host:port,host:port[/][?ca_cert=...]`), each as the
/// single-node URL the redis client reads, with the CA file to trust. The same checks
/// as a single node's URL apply to each.
fn cluster_nodes(url: &str) -> Result<(Vec<String>, Option<PathBuf>)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Config("the cluster URL has no scheme".into()))?;
    let single = scheme.trim_end_matches("+cluster");
    // The user information ends at the first '@' before the query, as the clients read
    // it (a password may hold an unencoded '/').
    let head = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let (userinfo, rest) = match head.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (hosts, tail) = rest.split_at(cut);
    let mut nodes = Vec::new();
    let mut ca_cert = None;
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let auth = userinfo.map_or_else(String::new, |u| format!("{u}@"));
        let target = parse(&format!("{single}://{auth}{host}{tail}"))?;
        ca_cert = target.ca_cert;
        nodes.push(target.url);
    }
    if nodes.is_empty() {
        return Err(Error::Config(
            "the cluster URL names no node: redis+cluster://host:port,host:port".into(),
        ));
    }
    Ok((nodes, ca_cert))
}

/// The cluster client for a cluster URL (see [`is_cluster`]), bounded by `timeout`
/// per connection and response, and a single-node client of its first seed (the event
/// bus subscribes there: a cluster passes every published message to every node).
pub(crate) fn cluster_client(
    url: &str,
    timeout: std::time::Duration,
) -> Result<(redis::cluster::ClusterClient, redis::Client)> {
    let (nodes, ca_cert) = cluster_nodes(url)?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
        .connection_timeout(timeout)
        .response_timeout(timeout);
    let first = match ca_cert {
        None => redis::Client::open(nodes[0].as_str())?,
        Some(path) => {
            let pem = ca_pem(&path)?;
            let certs = || TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            builder = builder.certs(certs());
            redis::Client::build_with_tls(nodes[0].as_str(), certs())?
        }
    };
    Ok((builder.build()?, first))
}

/// The PEM text of a CA file, checked to hold at least one certificate.
fn ca_pem(path: &std::path::Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("ca_cert {}: {e}", path.display())))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("ca_cert {}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(Error::Config(format!(
            "ca_cert {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

/// The certificate check that refused the server, if `e` comes from one: a rustls
/// error found along `e`'s chain of sources. tokio-rustls hands it over inside an
/// `io::Error`, which the redis client keeps in an `Arc`; both are looked into, since
/// neither names what it holds as its source.
pub(crate) fn refused_certificate<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut next = Some(e);
    while let Some(e) = next {
        let mut here = e;
        if let Some(shared) = here.downcast_ref::<Shared>() {
            here = &**shared;
        }
        if let Some(inner) = here
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            here = inner;
        }
        if let Some(r @ rustls::Error::InvalidCertificate(_)) = here.downcast_ref() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match parse(url) {
            Err(Error::Config(m)) => m,
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn ca_cert_is_taken_off_the_url_and_decoded() {
        let t = parse("rediss://:pw@cache:6380/2?ca_cert=/etc/my%20ca.pem&protocol=resp3").unwrap();
        assert_eq!(
            t,
            Target {
                url: "rediss://:pw@cache:6380/2?protocol=resp3".into(),
                tls: true,
                ca_cert: Some(PathBuf::from("/etc/my ca.pem")),
            }
        );
        let t = parse("valkeys://cache?ca_cert=ca.pem").unwrap();
        assert_eq!(t.url, "valkeys://cache");
        assert!(t.tls);
        let t = parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(t.url, "redis://127.0.0.1:6379");
        assert!(!t.tls && t.ca_cert.is_none());
    }

    #[test]
    fn turning_verification_off_is_refused_without_echoing_the_url() {
        for url in [
            "rediss://:secret-pw@cache:6380/#insecure",
            "rediss://:secret-pw@cache:6380?ca_cert=/ca.pem#insecure",
            // What the URL parser trims or drops is not a way around the refusal.
            "rediss://:secret-pw@cache:6380/#insecure ",
            "rediss://:secret-pw@cache:6380/#inse\tcure",
        ] {
            let m = refused(url);
            assert!(m.contains("#insecure") && m.contains("ca_cert"), "{m}");
            assert!(!m.contains("secret-pw"), "{m}");
        }
    }

    #[test]
    fn a_cluster_url_names_its_seeds_with_the_same_checks() {
        let (nodes, ca) =
            cluster_nodes("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001/?protocol=resp3")
                .unwrap();
        assert_eq!(
            nodes,
            [
                "redis://:pw@10.0.0.1:7000/?protocol=resp3",
                "redis://:pw@10.0.0.2:7001/?protocol=resp3"
            ]
        );
        assert!(ca.is_none());
        let (nodes, ca) = cluster_nodes("rediss+cluster://a:6380,b:6380?ca_cert=/ca.pem").unwrap();
        assert_eq!(nodes, ["rediss://a:6380", "rediss://b:6380"]);
        assert_eq!(ca, Some(PathBuf::from("/ca.pem")));
        assert!(is_cluster("valkey+cluster://a:1") && !is_cluster("redis://a:1"));
        for bad in [
            "redis+cluster://",
            "rediss+cluster://:pw@a:1,b:2/#insecure",
            "redis+cluster://a:1?ca_cert=/ca.pem",
        ] {
            let Err(Error::Config(m)) = cluster_nodes(bad) else {
                panic!("{bad} was accepted");
            };
            assert!(!m.contains("pw@"), "{m}");
        }
    }

    #[test]
    fn ca_cert_without_tls_is_refused() {
        let m = refused("redis://:secret-pw@cache?ca_cert=/ca.pem");
        assert!(m.contains("rediss://"), "{m}");
        assert!(!m.contains("secret-pw"), "{m}");
        assert!(refused("rediss://cache?ca_cert=").contains("empty"));
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused() {
        let err = client("rediss://cache?ca_cert=/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("sessiond-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client(&format!("rediss://cache?ca_cert={}", empty.display())).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
