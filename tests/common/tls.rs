//! Certificates for the TLS tests, made with the openssl CLI (a missing binary fails the
//! test): a test CA and server certificates it signs for `localhost` and 127.0.0.1, and a TLS
//! client trusting that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::http::{HttpReq, HttpResp, HttpServer};
use super::{api_get, config_toml, metric, start, tempdir, TestServer};

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

/// A TLS server (a certificate `ca` signed) whose 5000 runs a TwiML `<Gather numDigits="1">`
/// playing the 1 kHz tone (20 s at most), whose action hangs up; with device d1 (2001).
pub async fn gather_server(ca: &TestCa) -> (HttpServer, TestServer) {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/ivr" => HttpResp::xml(
            r#"<Response><Gather numDigits="1" action="/done" timeout="10">
                 <Play loop="10">/media/tone.wav</Play>
               </Gather></Response>"#,
        ),
        "/done" => HttpResp::xml("<Response><Hangup/></Response>"),
        "/media/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = {{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml" }} }}
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
[pivot]
blacklist_cidrs = []
"#,
        web.url("/ivr")
    );
    let server = start(&config_toml(&callflows, &ca.sip_tls_keys(""), "")).await;
    (web, server)
}

/// Waits (3 s at most) for `/metrics` to count one SRTP call (counted when it ends) and checks
/// that not one packet it received was refused, as unauthentic or replayed.
pub async fn assert_one_clean_srtp_call(server: &TestServer) {
    let mut text = String::new();
    for _ in 0..30 {
        text = api_get(server, "/metrics").await.1;
        if metric(&text, "pivotd_srtp_calls_total") == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&text, "pivotd_srtp_calls_total"), 1, "{text}");
    for reason in ["unauthentic", "replayed"] {
        let sample = format!("pivotd_srtp_packets_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &sample), 0, "{text}");
    }
}
