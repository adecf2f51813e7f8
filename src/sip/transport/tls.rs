//! SIP over TLS (RFC 3261 §26): the handshake of an accepted connection (bounded by the
//! handshake timeout, so a silent client cannot hold its source's connection slot), the
//! handshake of a connection we open to a carrier (its certificate verified against the
//! system roots and `[sip] tls_ca_file`, SNI its host name), and the certificate's reload.
//! After the handshake a connection is served by `tcp.rs`, like any stream.
//!
//! A phone that registered over TLS is reached only on its own connection: we know no name
//! to verify it by, and it is behind NAT. Only servers named through
//! [`Transport::name_tls_server`] are connected to, each by (address, name): two carriers
//! with different names at one address (or a name and an IP literal) never share a
//! connection, and each is verified for its own name.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpStream;
use tokio_rustls::rustls::client::ClientConfig;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{version, RootCertStore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Peer, Proto, Transport, TransportError};
use crate::config::{read_certificates, read_certified_key, TlsFileError};
use crate::logsafe::wire;
use crate::sip::source::ConnSlot;

/// Why TLS cannot be set up, or a reload was refused (the old certificate then stays).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("tls: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
    #[error("a certificate from tls_ca_file cannot be a root: {0}")]
    BadRoot(tokio_rustls::rustls::Error),
    #[error("{0} is not a host name or address a certificate can name")]
    BadServerName(String),
}

/// Why a TLS connection to a server could not be opened ([`Transport::connect_tls`]).
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error(transparent)]
    Name(TlsError),
    #[error("cannot connect to {to}: {source}")]
    Connect {
        to: SocketAddr,
        source: std::io::Error,
    },
    #[error("the certificate of {to} does not verify for {name}: {source}")]
    Certificate {
        name: String,
        to: SocketAddr,
        source: tokio_rustls::rustls::Error,
    },
    #[error("the TLS handshake with {name} at {to} failed: {source}")]
    Handshake {
        name: String,
        to: SocketAddr,
        source: std::io::Error,
    },
    #[error("the TLS handshake with {name} at {to} timed out")]
    TimedOut { name: String, to: SocketAddr },
}

/// The certificate we present, swapped whole on reload: handshakes under way keep the one
/// they started with.
struct Certificate(RwLock<Option<Arc<CertifiedKey>>>);

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificate")
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The transport's TLS side: what it presents, whom it trusts, the servers it may connect to.
pub(super) struct TlsState {
    certificate: Arc<Certificate>,
    acceptor: TlsAcceptor,
    connector: RwLock<TlsConnector>,
    /// The TLS servers we may connect to.
    servers: Mutex<Servers>,
}

/// Each TLS server we connect to, by address and the name it is verified by (and sent as
/// SNI), with the connection id its connections go by: the same id across reconnects, so
/// that a dialog's later requests (which name the connection id) reach the server it was
/// verified as, never another one at the same address.
#[derive(Default)]
struct Servers {
    ids: HashMap<(SocketAddr, ServerName<'static>), u64>,
    by_id: HashMap<u64, (SocketAddr, ServerName<'static>)>,
}

/// A name a certificate can be verified by: a host name or an IP address.
fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string())
        .map_err(|_| TlsError::BadServerName(wire(name).to_string()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Whom outbound connections trust: the system's roots and `ca_file`'s certificates. With
/// neither, every carrier's certificate fails to verify (said once here, and per call).
fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("system root certificates: {e}");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(TlsError::BadRoot)?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "sip tls: no trusted root certificate (no system roots, no tls_ca_file): \
             TLS carriers cannot be verified"
        );
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl TlsState {
    /// `cert`/`key`: what the listeners present (none: no listener may be configured).
    pub(super) fn new(
        cert: Option<(&Path, &Path)>,
        ca_file: Option<&Path>,
    ) -> Result<TlsState, TlsError> {
        let key = cert
            .map(|(cert, key)| read_certified_key(cert, key))
            .transpose()?;
        let certificate = Arc::new(Certificate(RwLock::new(key)));
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        Ok(TlsState {
            certificate,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: RwLock::new(connector(ca_file)?),
            servers: Mutex::new(Servers::default()),
        })
    }

    fn has_certificate(&self) -> bool {
        self.certificate
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl Transport {
    /// The TLS side as configured: a file that cannot be read, or listeners without a
    /// certificate, fail start-up. TLS carriers need nothing configured (the system's roots).
    pub(super) fn tls_setup(cfg: &super::TlsConfig) -> Result<TlsState, TransportError> {
        let cert = cfg.cert.as_deref().zip(cfg.key.as_deref());
        let state = TlsState::new(cert, cfg.ca_file.as_deref()).map_err(TransportError::Tls)?;
        if !cfg.listen.is_empty() && !state.has_certificate() {
            let path = cfg.cert.clone().unwrap_or_default();
            let missing = TlsError::File(TlsFileError::NoCertificate { path });
            return Err(TransportError::Tls(missing));
        }
        Ok(state)
    }

    /// Replaces the certificate the TLS listeners present, and the extra roots trusted for
    /// carriers (`ca_file`), with the files' contents now. New handshakes use them; open
    /// connections and the calls on them go on. On an error nothing changes.
    pub fn reload_tls(
        &self,
        cert: &Path,
        key: &Path,
        ca_file: Option<&Path>,
    ) -> Result<(), TlsError> {
        let tls = &self.tls;
        let new_key = read_certified_key(cert, key)?;
        let new_connector = connector(ca_file)?;
        *tls.certificate.0.write().unwrap_or_else(|p| p.into_inner()) = Some(new_key);
        *tls.connector.write().unwrap_or_else(|p| p.into_inner()) = new_connector;
        tracing::info!(cert = %cert.display(), "sip tls: certificate reloaded");
        Ok(())
    }

    /// Names the TLS server at `remote`: a connection we open to it verifies its certificate
    /// for `name` (a host name or an IP address) and sends it as SNI. Returns the connection
    /// id to send to it by (`Peer::conn`): only a connection verified for `name` is used.
    pub fn name_tls_server(&self, remote: SocketAddr, name: &str) -> Result<u64, TlsError> {
        let name = server_name(name)?;
        let mut s = self.tls.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = s.ids.get(&(remote, name.clone())) {
            return Ok(*id);
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        s.ids.insert((remote, name.clone()), id);
        s.by_id.insert(id, (remote, name));
        Ok(id)
    }

    /// The named server a TLS request to `to` goes to, and its connection id: the one `conn`
    /// names, else the only one named at `to` (a request on no connection of ours). None for
    /// several at `to` (which one is not known) or none (a phone).
    pub(super) fn tls_server_for(
        &self,
        to: SocketAddr,
        conn: Option<u64>,
    ) -> Option<(u64, ServerName<'static>)> {
        let s = self.tls.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, (_, name))) = conn
            .and_then(|id| s.by_id.get_key_value(&id))
            .filter(|(_, (a, _))| *a == to)
        {
            return Some((*id, name.clone()));
        }
        let mut at = s.by_id.iter().filter(|(_, (a, _))| *a == to);
        match (at.next(), at.next()) {
            (Some((id, (_, name))), None) => Some((*id, name.clone())),
            _ => None,
        }
    }

    /// Whether a request to `to` over `proto` (on connection `conn`) can leave: always over
    /// UDP and TCP; over TLS when a connection to it is open or it is a server we may connect
    /// to.
    pub fn can_reach(&self, proto: Proto, to: SocketAddr, conn: Option<u64>) -> bool {
        proto != Proto::Tls
            || self.connection_to(proto, to, conn).is_some()
            || self.tls_server_for(to, conn).is_some()
    }

    /// The handshake of an accepted TLS connection, on a task of its own; the connection
    /// then goes to the stream code. A failure or a timeout closes it, counted.
    pub(super) fn accept_tls(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        local: SocketAddr,
        slot: ConnSlot,
    ) {
        let acceptor = self.tls.acceptor.clone();
        tokio::spawn(async move {
            let limit = self.cfg.tls.handshake_timeout;
            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let (rd, wr) = tokio::io::split(tls);
                    self.start_connection(rd, wr, Proto::Tls, remote, local, Some(slot));
                }
                Ok(Err(e)) => {
                    self.stats
                        .tls_handshake_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, error = %wire(&e.to_string()),
                        "tls handshake failed");
                }
                Err(_) => {
                    self.stats
                        .tls_handshake_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "tls handshake timed out");
                }
            }
        });
    }

    /// Opens a TLS connection to the server at `to` now, its certificate verified for `name`
    /// (the server is named as by [`Transport::name_tls_server`]), and serves it like any
    /// other: what is sent to `to` over TLS goes on it. For a client that must know at once
    /// why a server cannot be reached (`pivotd call --tls`); the peer it returns names the
    /// connection's local address, the one our Via and Contact give.
    pub async fn connect_tls(
        self: &Arc<Self>,
        to: SocketAddr,
        name: &str,
    ) -> Result<Peer, TlsConnectError> {
        let id = self
            .name_tls_server(to, name)
            .map_err(TlsConnectError::Name)?;
        let verified_by = server_name(name).map_err(TlsConnectError::Name)?;
        let connect_error = |source| TlsConnectError::Connect { to, source };
        let stream = self.connect(Proto::Tls, to).await.map_err(connect_error)?;
        let local = stream.local_addr().map_err(connect_error)?;
        let tls = self.tls_handshake(stream, verified_by, to).await?;
        let (rd, wr) = tokio::io::split(tls);
        self.start_named_connection(id, rd, wr, to, local);
        Ok(Peer {
            proto: Proto::Tls,
            remote: to,
            local,
            conn: Some(id),
        })
    }

    /// The handshake of a connection we opened to a TLS server named `name`; a certificate
    /// that does not verify fails it (logged with the reason, counted).
    pub(super) async fn tls_handshake(
        &self,
        stream: TcpStream,
        name: ServerName<'static>,
        to: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsConnectError> {
        let connector = self
            .tls
            .connector
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let limit = self.cfg.tls.handshake_timeout;
        let shown = wire(name.to_str().as_ref()).to_string();
        let failure = match tokio::time::timeout(limit, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => return Ok(tls),
            Ok(Err(e)) => {
                // rustls' own error inside the I/O one: a certificate that does not verify
                // is said so.
                let rustls_error = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
                    .cloned();
                match rustls_error {
                    Some(
                        source @ (tokio_rustls::rustls::Error::InvalidCertificate(_)
                        | tokio_rustls::rustls::Error::NoCertificatesPresented),
                    ) => TlsConnectError::Certificate {
                        name: shown.clone(),
                        to,
                        source,
                    },
                    _ => TlsConnectError::Handshake {
                        name: shown.clone(),
                        to,
                        source: e,
                    },
                }
            }
            Err(_) => TlsConnectError::TimedOut {
                name: shown.clone(),
                to,
            },
        };
        self.stats
            .tls_handshake_failed
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(server = %shown, error = %wire(&failure.to_string()),
            "tls connection to {to} failed");
        Err(failure)
    }
}
