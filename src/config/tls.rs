//! The PEM files of `[sip] tls_cert`, `tls_key` and `tls_ca_file`: read and checked here, once
//! for the config check and again by the SIP transport when it starts or reloads its
//! certificate, so a file that `check-config` accepts is one the transport can serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

/// What is wrong with a PEM file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a PEM certificate list: {reason}", .path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} holds no usable PEM private key: {reason}", .path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} does not belong to the certificate in {}: {reason}",
        .key.display(), .cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Every certificate in a PEM file, at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The certificate chain of `cert` with the private key of `key`, checked to belong together
/// (the key's public half is the certificate's).
pub fn read_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let chain = read_certificates(cert)?;
    let pem = std::fs::read(key).map_err(|source| TlsFileError::Read {
        path: key.to_path_buf(),
        source,
    })?;
    let bad_key = |reason: String| TlsFileError::BadKey {
        path: key.to_path_buf(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad_key(e.to_string()))?;
    let provider = default_provider();
    let certified = CertifiedKey::from_der(chain, der, &provider).map_err(|e| match e {
        tokio_rustls::rustls::Error::InconsistentKeys(_) => TlsFileError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        },
        e => bad_key(e.to_string()),
    })?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("pivotd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = read_certificates(&missing).unwrap_err();
        assert!(matches!(e, TlsFileError::Read { .. }), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = read_certificates(&empty).unwrap_err();
        assert!(matches!(e, TlsFileError::NoCertificate { .. }), "{e}");
        let e = read_certified_key(&missing, &empty).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
