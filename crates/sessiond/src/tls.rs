//! HTTPS for the server: the certificate chain and private key from PEM files
//! ([`TlsFiles`]), served by a resolver ([`Certificates`]) that swaps in a renewed
//! certificate without a restart, and the acceptor built on it.
//!
//! Renewal: the files are checked on SIGHUP and every [`Certificates::CHECK_EVERY`]
//! (so a renewed certificate is served within 10 s of being written). New connections
//! get the new certificate; open connections keep the one they were made with. A file
//! that cannot be read or parsed, or a key that does not match the certificate, keeps
//! the certificate in use and logs why; the next check tries again.
//!
//! The cryptography is rustls with the *ring* provider; TLS 1.2 and 1.3, HTTP/1.1.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's certificate chain and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key: PathBuf,
}

/// The certificate the server presents, reloadable.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded.
    seen: Mutex<Option<(SystemTime, SystemTime)>>,
    /// The files' modification times when last found unusable, so a bad file is
    /// reported once per change, not at every check.
    failed: Mutex<Option<Option<(SystemTime, SystemTime)>>>,
}

/// The crypto provider of every TLS connection the server makes or accepts: *ring*,
/// the provider the HTTP client already builds, rather than a second C library
/// (aws-lc) in every build. rustls marks it deprecated because it has no post-quantum
/// key exchange; moving to aws-lc-rs is this one function (docs/OPERATIONS.md).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// Reads and checks a certificate chain and its key.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: no usable PEM private key ({e})", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))
}

impl Certificates {
    /// How often the files are checked for a renewal.
    pub const CHECK_EVERY: Duration = Duration::from_secs(2);

    /// Reads the certificate and key; an error names the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, String> {
        let provider = provider();
        let seen = modified(&files);
        let key = load(&files, &provider)?;
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
            failed: Mutex::new(None),
        }))
    }

    /// Reads the files again if they changed since last read (or at once with `force`,
    /// as on SIGHUP). Returns whether a new certificate is now served; a file that
    /// cannot be used keeps the current one and is logged once per change.
    pub fn reload(&self, force: bool) -> bool {
        let now = modified(&self.files);
        if !force && now.is_some() && *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return false;
        }
        match load(&self.files, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                // Recorded only once loaded: files caught half-written are read again
                // at the next check even if their times do not change after.
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded; new connections use it");
                true
            }
            Err(e) => {
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                if force || *failed != Some(now) {
                    *failed = Some(now);
                    tracing::warn!(error = %e, "the TLS certificate files cannot be used; still serving the previous certificate");
                }
                false
            }
        }
    }

    /// Checks the files every [`Self::CHECK_EVERY`] and on SIGHUP, until dropped.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Self::CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let force = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = tick.tick() => false,
                    _ = h.recv() => true,
                },
                None => {
                    tick.tick().await;
                    false
                }
            };
            #[cfg(not(unix))]
            let force = {
                tick.tick().await;
                false
            };
            self.reload(force);
        }
    }

    /// The rustls configuration serving these certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}
