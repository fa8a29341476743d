//! A certificate authority made for one test, and the server certificates it issues.
//! Every test makes its own, so "signed by another CA" is simply a second `TestCa`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A private certificate authority (an ECDSA P-256 key and a self-signed certificate).
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate and its key, both PEM.
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
    /// The certificate (DER), to recognise it when a server presents it.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new authority whose certificate's common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a new key pair");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params
            .self_signed(&key)
            .expect("a self-signed CA certificate");
        TestCa { cert, key }
    }

    /// The authority's certificate, PEM: what a client trusts.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the authority's certificate to `dir/<file>` and returns the path.
    pub fn write_pem(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).expect("write the CA certificate");
        path
    }

    /// A server certificate valid for exactly `names` (a name that parses as an IP
    /// address becomes an IP address entry, any other a DNS name), signed by this
    /// authority.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("a new key pair");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "sessiond test server");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a certificate signed by the test CA");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}
