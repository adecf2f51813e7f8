//! Certificates for the TLS tests, made with the openssl CLI (a missing binary fails the
//! test): a test CA and server certificates it signs for `localhost` and 127.0.0.1, and a TLS
//! client trusting that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::tempdir;

/// A CA of its own in a temporary directory (removed on drop).
pub struct TestCa {
    pub dir: PathBuf,
    /// The CA certificate (PEM): what `tls_ca_file` or a phone's CA list names.
    pub ca: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is not installed (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// P-256 keys: quick to make, and every client here speaks ECDSA.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempdir();
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-x509"];
        args.extend(NEW_KEY);
        args.extend([
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subject,
        ]);
        openssl(&dir, &args);
        TestCa {
            ca: dir.join("ca.pem"),
            key: dir.join("ca.key"),
            dir,
        }
    }

    /// A server certificate with subject `cn` for `localhost` and 127.0.0.1, signed by this
    /// CA: its certificate and key files, `{stem}.pem` and `{stem}.key`.
    pub fn issue(&self, stem: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue_for(stem, cn, "DNS:localhost,IP:127.0.0.1")
    }

    /// [`TestCa::issue`] for the names `san` (`subjectAltName`'s syntax) only.
    pub fn issue_for(&self, stem: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
        let san = format!("subjectAltName={san}");
        let (cert, key) = (format!("{stem}.pem"), format!("{stem}.key"));
        let subject = format!("/CN={cn}");
        let (ca, ca_key) = (
            self.ca.display().to_string(),
            self.key.display().to_string(),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(NEW_KEY);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &subject,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-addext",
            &san,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        openssl(&self.dir, &args);
        (self.dir.join(cert), self.dir.join(key))
    }

    /// `[sip]` keys of a TLS listener on an ephemeral port presenting a server certificate
    /// this CA signs (for `localhost` and 127.0.0.1), then `extra`.
    pub fn sip_tls_keys(&self, extra: &str) -> String {
        let (cert, key) = self.issue("server", "pivotd-test");
        tls_keys(&cert, &key, extra)
    }

    /// A TLS client configuration trusting this CA only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("CA file") {
            roots.add(cert.expect("CA certificate")).expect("a root");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `[sip]` keys of a TLS listener on an ephemeral port presenting `cert`/`key`, then `extra`.
pub fn tls_keys(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "tls = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    )
}

/// The DER of the first certificate in a PEM file.
pub fn cert_der(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .expect("certificate file")
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// A TLS acceptor presenting `cert` (its chain) with `key`: a SIP UAS of a test's own (a
/// carrier, a callee) over TLS.
pub fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .map(|c| c.expect("PEM"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key file");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a certificate and its key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
