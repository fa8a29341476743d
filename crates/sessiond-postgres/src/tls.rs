//! TLS to PostgreSQL: the URL's `sslmode` and `sslrootcert`, read here because
//! tokio-postgres knows neither `verify-full` nor `sslrootcert`, and [`Tls`], the
//! rustls connector (ring provider) every connection of the store is made with.
//!
//! | `sslmode` | here | libpq, for comparison |
//! |---|---|---|
//! | absent, `disable`, `prefer` | plain TCP, no TLS | `prefer` tries TLS without verifying, then plain |
//! | `require` | TLS, the certificate verified, host name included | TLS, nothing verified (unless a root file exists) |
//! | `verify-ca`, `verify-full` | TLS, the certificate verified, host name included | `verify-ca` skips the host name |
//!
//! So every mode that uses TLS here verifies: against the certificates of the file
//! `sslrootcert` names, or, without it (or with `sslrootcert=system`), against the
//! system's roots. A certificate that does not verify fails the connection; nothing
//! falls back to plain TCP. `sslrootcert` with a mode that connects in the clear is
//! refused, since the URL then looks verified and is not; so is `sslmode=allow`.
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered: password logins use
//! `SCRAM-SHA-256` over the verified TLS connection.
//!
//! Nothing here puts the URL in a message: it may hold a password.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::error::{PgResult, PostgresError};

/// Where the certificates to trust come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The system's roots (no `sslrootcert`, or `sslrootcert=system`).
    System,
    /// The certificates of a PEM file.
    File(PathBuf),
}

/// What a URL asks of TLS, and the URL left for tokio-postgres.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// The URL without `sslmode` and `sslrootcert`.
    url: String,
    /// `None`: plain TCP; else TLS verified against these roots.
    verify: Option<Roots>,
}

/// Reads the TLS settings of `url` and returns the URL tokio-postgres is to parse
/// (without them) with the connector to use and the `SslMode` to give it.
pub(crate) fn configure(url: &str) -> PgResult<(String, Tls, SslMode)> {
    let Request { url, verify } = request(url)?;
    Ok(match verify {
        None => (url, Tls(None), SslMode::Disable),
        Some(roots) => (url, Tls(Some(client_config(&roots)?)), SslMode::Require),
    })
}

fn request(url: &str) -> PgResult<Request> {
    let (rest, pairs) = settings(url);
    let mut mode = None;
    let mut rootcert = None;
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => rootcert = Some(value),
            _ => {}
        }
    }
    let verified = match mode.as_deref() {
        None | Some("disable" | "prefer") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some("allow") => {
            return Err(tls_error(
                "sslmode=allow is not supported: use disable, require or verify-full",
            ))
        }
        Some(other) => {
            return Err(tls_error(&format!(
                "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    let roots = match rootcert.as_deref() {
        None | Some("system") => Roots::System,
        Some("") => return Err(tls_error("sslrootcert is empty")),
        Some(path) => Roots::File(PathBuf::from(path)),
    };
    if !verified && rootcert.is_some() {
        return Err(tls_error(&format!(
            "sslrootcert is set but sslmode={} connects without TLS: use sslmode=verify-full",
            mode.as_deref().unwrap_or("prefer (the default)")
        )));
    }
    Ok(Request {
        url: rest,
        verify: verified.then_some(roots),
    })
}

fn tls_error(why: &str) -> PostgresError {
    PostgresError::Tls(why.to_string())
}

/// Splits the `sslmode` and `sslrootcert` settings (decoded) off a URL
/// (`postgres://...?k=v&...`) or a `key=value` string, returning the rest unchanged.
fn settings(url: &str) -> (String, Vec<(String, String)>) {
    const OURS: [&str; 2] = ["sslmode", "sslrootcert"];
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), Vec::new());
        };
        let mut found = Vec::new();
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if OURS.contains(&k) {
                found.push((k.to_string(), decode(v)));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, found);
    }
    // The key=value form: cut our settings out, keep every other byte as written. A
    // string this does not understand goes to tokio-postgres whole, which says why.
    let Some(words) = keywords(url) else {
        return (url.to_string(), Vec::new());
    };
    let mut found = Vec::new();
    let mut rest = String::new();
    let mut from = 0;
    for (key, value, span) in words {
        if OURS.contains(&key.as_str()) {
            rest.push_str(&url[from..span.start]);
            from = span.end;
            found.push((key, value));
        }
    }
    rest.push_str(&url[from..]);
    (rest, found)
}

fn decode(v: &str) -> String {
    percent_decode_str(v).decode_utf8_lossy().into_owned()
}

/// The settings of a libpq `key=value` string: each key, its value (quotes and
/// backslash escapes undone) and the byte range of the whole setting.
fn keywords(s: &str) -> Option<Vec<(String, String, std::ops::Range<usize>)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_spaces = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_spaces(&mut i);
        if i == b.len() {
            return Some(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        skip_spaces(&mut i);
        if i == b.len() || b[i] != b'=' {
            return None;
        }
        i += 1;
        skip_spaces(&mut i);
        let mut value = Vec::new();
        let quoted = i < b.len() && b[i] == b'\'';
        if quoted {
            i += 1;
        }
        loop {
            match b.get(i) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(c) if !quoted && c.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*b.get(i + 1)?);
                    i += 2;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        out.push((key, String::from_utf8(value).ok()?, start..i));
    }
}

/// A rustls client configuration trusting `roots`, on the ring provider.
fn client_config(roots: &Roots) -> PgResult<Arc<ClientConfig>> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let shown = path.display();
            let pem =
                std::fs::read(path).map_err(|e| tls_error(&format!("sslrootcert {shown}: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| tls_error(&format!("sslrootcert {shown}: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| tls_error(&format!("sslrootcert {shown}: {e}")))?;
            }
            if store.is_empty() {
                return Err(tls_error(&format!(
                    "sslrootcert {shown} holds no PEM certificate"
                )));
            }
        }
        Roots::System => {
            // Unreadable files among the system's roots are passed over, as long as
            // some roots remain.
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(tls_error(
                    "TLS with no sslrootcert trusts the system's root certificates, and this \
                     system has none: name the CA with sslrootcert=/path/to/ca.pem",
                ));
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    // What PostgreSQL 17 asks of clients that open TLS directly; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// The crypto provider: *ring*, as everywhere in sessiond, rather than a second C
/// library (aws-lc). rustls marks it deprecated because it has no post-quantum key
/// exchange; the server's `sessiond::tls::provider` says the same.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector of every connection of a store: TLS with a verifying rustls
/// configuration, or none (the store's connections then run with `sslmode=disable`,
/// so tokio-postgres never asks it for TLS).
#[derive(Clone)]
pub(crate) struct Tls(Option<Arc<ClientConfig>>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Tls(verified)",
            None => "Tls(off)",
        })
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
        // Asked for every connection, TLS or not: only a handshake may fail.
        let Some(config) = self.0.clone() else {
            return Ok(Connect(None));
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} cannot be checked against a certificate: {e}"),
            )
        })?;
        Ok(Connect(Some((config, name))))
    }
}

/// A TLS handshake with one host (none when the store does not use TLS).
pub(crate) struct Connect(Option<(Arc<ClientConfig>, ServerName<'static>)>);

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // tokio-postgres asks for a handshake only under a TLS sslmode, which a
            // store without TLS never gives it.
            let (config, name) = self
                .0
                .ok_or_else(|| io::Error::other("this store's URL does not ask for TLS"))?;
            tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map(TlsStream)
                .map_err(explain)
        })
    }
}

/// Says what to check when the server's certificate is refused. Stays an `io::Error`,
/// so the store still reports the server as unavailable (it fails closed).
fn explain(e: io::Error) -> io::Error {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    match refused {
        Some(why) => io::Error::new(
            e.kind(),
            format!(
                "the server's certificate was refused ({why}): check that sslrootcert names \
                 the CA that signed it (without sslrootcert, that the system trusts it) and \
                 that the URL's host is a name the certificate holds"
            ),
        ),
        None => e,
    }
}

/// A connection over TLS.
pub(crate) struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Request {
        request(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        match request(url) {
            Err(e @ PostgresError::Tls(_)) => e.to_string(),
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn modes_of_a_url() {
        let base = "postgres://u:secret-pw@db:5432/app";
        assert_eq!(
            parsed(base),
            Request {
                url: base.into(),
                verify: None
            }
        );
        for plain in ["disable", "prefer"] {
            let r = parsed(&format!("{base}?sslmode={plain}&application_name=x"));
            assert_eq!(r.url, format!("{base}?application_name=x"));
            assert_eq!(r.verify, None);
        }
        for verified in ["require", "verify-ca", "verify-full"] {
            let r = parsed(&format!("{base}?sslmode={verified}"));
            assert_eq!(r.url, base);
            assert_eq!(r.verify, Some(Roots::System));
        }
        let r = parsed(&format!(
            "{base}?connect_timeout=3&sslmode=verify-full&sslrootcert=/etc/my%20ca.pem"
        ));
        assert_eq!(r.url, format!("{base}?connect_timeout=3"));
        assert_eq!(r.verify, Some(Roots::File("/etc/my ca.pem".into())));
        let r = parsed(&format!("{base}?sslmode=require&sslrootcert=system"));
        assert_eq!(r.verify, Some(Roots::System));
    }

    #[test]
    fn modes_of_a_key_value_string() {
        let r = parsed(
            "host=db user=u password='it\\'s here' sslmode = verify-full \
             sslrootcert='/etc/my ca.pem' dbname=app",
        );
        assert_eq!(r.url, "host=db user=u password='it\\'s here'   dbname=app");
        assert_eq!(r.verify, Some(Roots::File("/etc/my ca.pem".into())));
        let r = parsed("host=db sslmode=disable");
        assert_eq!((r.url.as_str(), r.verify), ("host=db ", None));
    }

    #[test]
    fn what_would_not_verify_or_not_apply_is_refused_without_the_url() {
        let base = "postgres://u:secret-pw@db/app";
        for (query, says) in [
            ("sslmode=allow", "allow"),
            ("sslmode=verify-everything", "unknown sslmode"),
            ("sslrootcert=/ca.pem", "prefer (the default)"),
            ("sslmode=disable&sslrootcert=/ca.pem", "sslmode=disable"),
            ("sslmode=verify-full&sslrootcert=", "empty"),
        ] {
            let m = refused(&format!("{base}?{query}"));
            assert!(m.contains(says), "{query}: {m}");
            assert!(!m.contains("secret-pw"), "{m}");
        }
    }

    #[test]
    fn a_root_file_that_is_missing_or_holds_no_certificate_is_refused() {
        let Err(e) =
            configure("postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        else {
            panic!("a missing sslrootcert was accepted");
        };
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("sessiond-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let url = format!(
            "postgres://db/app?sslmode=require&sslrootcert={}",
            empty.display()
        );
        let Err(e) = configure(&url) else {
            panic!("an sslrootcert without certificates was accepted");
        };
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
