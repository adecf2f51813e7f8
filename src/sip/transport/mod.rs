//! SIP transport: UDP, TCP and TLS sockets, stream framing, Via `received`/`rport` stamping and the
//! response address of RFC 3261 §18.2.2 / RFC 3581.
//!
//! The transport parses what it receives (through [`super::message::parse`], which normalises
//! first) and hands each message to an [`IncomingHandler`]; it knows nothing of transactions.
//!
//! - this file: the types, start-up, UDP, the hand-off of what is read, sending;
//! - `tcp.rs`: stream connections (TCP, and TLS after its handshake), their framing by
//!   Content-Length, the stream that cannot be framed;
//! - `tls.rs`: TLS handshakes (accepted, and to carriers), the certificate and its reload;
//! - `via.rs`: the Via stamping and the response address;
//! - `rcvbuf.rs`: the UDP sockets' receive buffer;
//! - `reuseport.rs`: the sockets of one UDP address, one per reader (`SO_REUSEPORT`);
//! - `stamp.rs`: when a datagram arrived (the kernel's receive timestamp).

mod rcvbuf;
mod reuseport;
mod stamp;
mod tcp;
mod tls;
mod via;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};

use super::message::{self, ParseError};
use super::source::{SourceGuard, SourceRefusal};
use crate::health::TaskHealth;
use tcp::Connections;

pub use rcvbuf::{receive_buffer, set_receive_buffer};
pub use tls::{TlsConnectError, TlsError};
pub use via::{previous_hop, split_host_port, stamp_via, stamp_via_value};

/// Transport protocol of a message or a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    /// TLS over TCP (RFC 3261 §26); the media layer asks this to know whether a call's
    /// signalling was encrypted.
    Tls,
}

impl Proto {
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }

    /// The protocol of a Via transport token (any case), as [`Proto::via_token`] writes it.
    pub fn from_via_token(token: &str) -> Option<Proto> {
        [Proto::Udp, Proto::Tcp, Proto::Tls]
            .into_iter()
            .find(|p| token.eq_ignore_ascii_case(p.via_token()))
    }

    /// Reliable transports need no retransmissions (RFC 3261 §17.1.1.2, §17.2.1).
    pub fn is_reliable(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tls)
    }

    /// Whether the transport is encrypted: a `sips:` Request-URI may only arrive on it, and
    /// SDES keys (RFC 4568 §8.3) only travel on it.
    pub fn is_secure(self) -> bool {
        self == Proto::Tls
    }
}

/// Where a message came from, and so where its answers and in-dialog requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub proto: Proto,
    /// The remote address the bytes came from.
    pub remote: SocketAddr,
    /// Our socket it arrived on.
    pub local: SocketAddr,
    /// The TCP connection it arrived on.
    pub conn: Option<u64>,
}

/// One message from the network, already parsed, or the reason it could not be.
#[derive(Debug)]
pub enum Incoming {
    Message {
        msg: rsip::SipMessage,
        peer: Peer,
        /// Where responses go (RFC 3261 §18.2.2 with RFC 3581 rport).
        reply_to: SocketAddr,
    },
    Refused(Refused),
}

/// A request answered statelessly, before any transaction (RFC 3261 §8.2): too broken for
/// one (400; 400/513 for a TCP stream that cannot be framed), or naming what pivotd does not
/// serve (416/501/505, [`message::Unsupported`]).
#[derive(Debug)]
pub struct Refused {
    pub code: u16,
    pub reason: Cow<'static, str>,
    /// Headers beside the usual ones (Allow on a 501).
    pub headers: &'static [(&'static str, &'static str)],
    pub request: rsip::Request,
    pub peer: Peer,
    /// Where the answer goes (the Via stamped as for any request).
    pub reply_to: SocketAddr,
}

impl Refused {
    fn new(code: u16, reason: Cow<'static, str>, mut request: rsip::Request, peer: Peer) -> Self {
        Refused {
            code,
            reason,
            headers: &[],
            reply_to: stamp_via(&mut request, &peer),
            request,
            peer,
        }
    }

    /// The answer to what the parser found unsupported: its code, reason and headers.
    fn unsupported(why: message::Unsupported, request: rsip::Request, peer: Peer) -> Self {
        Refused {
            headers: why.headers(),
            ..Refused::new(why.code(), why.reason().into(), request, peer)
        }
    }
}

/// Receives everything the transport reads. Called on the receiving task: keep it short.
pub trait IncomingHandler: Send + Sync + 'static {
    /// A request refused before parsing finished (a TCP stream that cannot be framed).
    fn refused(&self, refused: Refused);

    /// One framed message, not parsed yet, and when it arrived (for UDP the kernel's stamp,
    /// so the wait in the socket buffer counts): the handler parses it with
    /// [`Transport::parse_incoming`] where it suits it (so parsing can run in parallel while
    /// messages of one call keep their order).
    fn incoming_raw(&self, data: Bytes, peer: Peer, received: Instant);
}

/// Start-up problems, each one clear line.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on udp {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on tcp {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on tls {addr}: {source}")]
    BindTls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("sip tls: {0}")]
    Tls(TlsError),
    #[error("no socket to send {proto:?} from")]
    NoSocket { proto: Proto },
}

/// SIP over TLS settings (`[sip] tls*`).
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Listen sockets.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain and key the listeners present (PEM files).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Extra roots trusted for carriers, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// How long a handshake may take, either way.
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: Vec::new(),
            cert: None,
            key: None,
            ca_file: None,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: TlsConfig,
    pub max_message_bytes: usize,
    pub tcp_idle_timeout: Duration,
    /// The receive buffer asked for each UDP socket, in bytes (0: the kernel's default).
    pub udp_receive_buffer: usize,
    /// Sockets, each with its reader task, bound to each UDP address (`SO_REUSEPORT` when
    /// more than one); at least 1.
    pub udp_readers: usize,
    /// Per-source limits, checked for every message before it is parsed.
    pub sources: Arc<SourceGuard>,
    /// Where the receive loops are watched (and restarted after a panic).
    pub health: Arc<TaskHealth>,
}

/// Counters for logs, tests and metrics.
#[derive(Default, Debug)]
pub struct TransportStats {
    pub received: AtomicU64,
    pub dropped_unparsable: AtomicU64,
    pub invalid: AtomicU64,
    pub sent: AtomicU64,
    pub tcp_open: AtomicU64,
    pub tls_open: AtomicU64,
    /// TLS handshakes that failed or timed out, accepted ones and ours to carriers.
    pub tls_handshake_failed: AtomicU64,
}

/// One configured UDP address: the address bound (port 0 resolved) and its sockets, one per
/// reader. The kernel hashes each datagram's source and destination to one socket of the
/// group, so a caller's datagrams all reach one reader, in order (an INVITE before its
/// CANCEL).
struct UdpAddr {
    local: SocketAddr,
    socks: Vec<Arc<UdpSocket>>,
}

impl UdpAddr {
    /// The socket to send to `to` from: any of them has the same local address, so the peer
    /// sees the same source; spreading peers over them spreads the sockets' send locks.
    fn sock_for(&self, to: SocketAddr) -> Option<&Arc<UdpSocket>> {
        let n = self.socks.len().max(1);
        let spread = match to {
            SocketAddr::V4(a) => u32::from(*a.ip()) as usize,
            SocketAddr::V6(a) => u128::from(*a.ip()) as usize,
        } ^ usize::from(to.port());
        self.socks.get(spread % n)
    }
}

/// The bound sockets and the open TCP connections.
pub struct Transport {
    udp: Vec<UdpAddr>,
    tcp_local: Vec<SocketAddr>,
    tls_local: Vec<SocketAddr>,
    /// What TLS presents and trusts (also without listeners: TLS carriers).
    tls: tls::TlsState,
    conns: Mutex<Connections>,
    next_conn: AtomicU64,
    cfg: TransportConfig,
    handler: Arc<dyn IncomingHandler>,
    pub stats: TransportStats,
}

impl Transport {
    /// Binds every configured socket (all before any is served, so a bad address fails start-up
    /// cleanly) and starts the receive tasks.
    pub async fn start(
        cfg: TransportConfig,
        handler: Arc<dyn IncomingHandler>,
    ) -> Result<Arc<Transport>, TransportError> {
        let mut udp = Vec::new();
        for addr in &cfg.udp {
            let bind_err = |source| TransportError::BindUdp {
                addr: *addr,
                source,
            };
            let socks = reuseport::bind(*addr, cfg.udp_readers).map_err(bind_err)?;
            let mut local = *addr;
            let mut tokio_socks = Vec::with_capacity(socks.len());
            for sock in socks {
                let sock = UdpSocket::from_std(sock).map_err(bind_err)?;
                local = sock.local_addr().map_err(bind_err)?;
                apply_receive_buffer(&sock, *addr, cfg.udp_receive_buffer);
                if let Err(e) = stamp::enable(&sock) {
                    // The queue delay then starts when the datagram is read: overload is seen
                    // later, not missed.
                    tracing::warn!("sip udp {addr}: no kernel receive timestamps: {e}");
                }
                tokio_socks.push(Arc::new(sock));
            }
            udp.push(UdpAddr {
                local,
                socks: tokio_socks,
            });
        }
        let mut listeners = Vec::new();
        for addr in &cfg.tcp {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| TransportError::BindTcp {
                    addr: *addr,
                    source,
                })?;
            listeners.push(l);
        }
        let tls = Transport::tls_setup(&cfg.tls)?;
        let mut tls_listeners = Vec::new();
        for addr in &cfg.tls.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| TransportError::BindTls {
                    addr: *addr,
                    source,
                })?;
            tls_listeners.push(l);
        }
        let local_of = |ls: &[TcpListener]| ls.iter().filter_map(|l| l.local_addr().ok()).collect();
        let tcp_local = local_of(&listeners);
        let tls_local = local_of(&tls_listeners);
        let transport = Arc::new(Transport {
            udp,
            tcp_local,
            tls_local,
            tls,
            conns: Mutex::new(Connections::default()),
            next_conn: AtomicU64::new(1),
            cfg,
            handler,
            stats: TransportStats::default(),
        });
        let health = transport.cfg.health.clone();
        for addr in &transport.udp {
            // One reader per socket keeps the datagrams of a caller in order (an INVITE before
            // its CANCEL: the kernel sends one 5-tuple to one socket); parsing happens after
            // the hand-off, in parallel across shards.
            for (i, sock) in addr.socks.iter().enumerate() {
                let (t, s, local) = (transport.clone(), sock.clone(), addr.local);
                let name = if addr.socks.len() == 1 {
                    format!("sip udp {local}")
                } else {
                    format!("sip udp {local} reader {}", i + 1)
                };
                health.supervise(name, move || t.clone().udp_loop(s.clone(), local));
            }
        }
        let all = listeners.into_iter().map(|l| (l, Proto::Tcp));
        for (l, proto) in all.chain(tls_listeners.into_iter().map(|l| (l, Proto::Tls))) {
            let (t, l) = (transport.clone(), Arc::new(l));
            let name = format!(
                "sip {} {}",
                proto.via_token().to_ascii_lowercase(),
                l.local_addr().map_or(String::new(), |a| a.to_string())
            );
            health.supervise(name, move || t.clone().accept_loop(l.clone(), proto));
        }
        Ok(transport)
    }

    /// Local UDP addresses actually bound (port 0 resolved).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|a| a.local).collect()
    }

    /// The receive buffer the kernel gives each UDP socket (every reader's of every address),
    /// in bytes (as asked, unless the kernel capped it).
    pub fn udp_receive_buffers(&self) -> Vec<usize> {
        self.udp
            .iter()
            .flat_map(|a| &a.socks)
            .filter_map(|s| rcvbuf::receive_buffer(s.as_ref()).ok())
            .collect()
    }

    /// Local TCP listen addresses actually bound.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp_local.clone()
    }

    /// Local TLS listen addresses actually bound.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_local.clone()
    }

    /// Our bound addresses of one transport.
    pub fn addrs(&self, proto: Proto) -> Vec<SocketAddr> {
        match proto {
            Proto::Udp => self.udp_addrs(),
            Proto::Tcp => self.tcp_addrs(),
            Proto::Tls => self.tls_addrs(),
        }
    }

    /// The per-source limits every message passes.
    pub fn sources(&self) -> &Arc<SourceGuard> {
        &self.cfg.sources
    }

    /// Every message read from a socket, before anything else is done with it: counted, then
    /// held to its source's limits. A refused one is dropped unread and never answered (an
    /// answer would make pivotd an amplifier for a spoofed source); the reason is counted by
    /// the guard.
    fn admit(&self, ip: IpAddr) -> Result<(), SourceRefusal> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        self.cfg.sources.admit_message(ip)
    }

    /// The local address to name in Via/Contact for a protocol: the socket a peer used, or the
    /// first bound one.
    pub fn local_for(&self, proto: Proto) -> Option<SocketAddr> {
        match proto {
            Proto::Udp => self.udp.first().map(|a| a.local),
            Proto::Tcp => self.tcp_local.first().copied(),
            Proto::Tls => self.tls_local.first().copied(),
        }
    }

    async fn udp_loop(self: Arc<Self>, sock: Arc<UdpSocket>, local: SocketAddr) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, remote, received) = match stamp::recv_from(&sock, &mut buf).await {
                Ok(v) => v,
                Err(e) => {
                    // ICMP port unreachable surfaces as ECONNREFUSED on some systems: not fatal.
                    tracing::debug!("udp recv on {local}: {e}");
                    continue;
                }
            };
            let data = &buf[..n];
            if data.iter().all(|b| *b == b'\r' || *b == b'\n' || *b == 0) {
                continue; // keep-alive datagram
            }
            if self.admit(remote.ip()).is_err() {
                continue;
            }
            let peer = Peer {
                proto: Proto::Udp,
                remote,
                local,
                conn: None,
            };
            self.handler
                .incoming_raw(Bytes::copy_from_slice(data), peer, received);
        }
    }

    /// Parses one framed message: stamps the Via of a request and says where its answers go;
    /// counts and drops what cannot be parsed at all.
    pub fn parse_incoming(&self, data: &[u8], peer: Peer) -> Option<Incoming> {
        match message::parse(data) {
            Ok(mut msg) => {
                let reply_to = match &mut msg {
                    rsip::SipMessage::Request(req) => stamp_via(req, &peer),
                    rsip::SipMessage::Response(_) => peer.remote,
                };
                Some(Incoming::Message {
                    msg,
                    peer,
                    reply_to,
                })
            }
            Err(ParseError::Invalid {
                reason,
                request: Some(request),
            }) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                Some(Incoming::Refused(Refused::new(
                    400,
                    reason.into(),
                    request,
                    peer,
                )))
            }
            Err(ParseError::Unsupported { why, request }) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                Some(Incoming::Refused(Refused::unsupported(why, request, peer)))
            }
            Err(ParseError::Invalid {
                reason,
                request: None,
            })
            | Err(ParseError::Unparsable(reason)) => {
                self.stats
                    .dropped_unparsable
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %peer.remote, "dropped unparsable message: {reason}");
                None
            }
        }
    }

    /// The Call-ID of an unparsed message, found by a light scan of its header lines, to pick
    /// the shard before parsing. A folded or odd Call-ID may differ from the parsed one: the
    /// shard then forwards the parsed message to the right shard.
    pub fn quick_call_id(data: &[u8]) -> &[u8] {
        for line in data.split(|b| *b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let name = line[..colon].trim_ascii();
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                return line[colon + 1..].trim_ascii();
            }
        }
        b""
    }

    /// Sends bytes to a peer: over TCP or TLS on its connection (or a new one to its address,
    /// `tcp.rs`), over UDP from the socket it used. Never blocks the caller.
    pub fn send(self: &Arc<Self>, proto: Proto, to: SocketAddr, conn: Option<u64>, bytes: Bytes) {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match proto {
            Proto::Udp => {
                let Some(sock) = self.udp_socket_for(to) else {
                    tracing::warn!("no udp socket to send to {to}");
                    return;
                };
                match sock.try_send_to(&bytes, to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::spawn(async move {
                            let _ = sock.send_to(&bytes, to).await;
                        });
                    }
                    Err(e) => tracing::debug!("udp send to {to}: {e}"),
                }
            }
            Proto::Tcp | Proto::Tls => self.send_stream(proto, to, conn, bytes),
        }
    }

    fn udp_socket_for(&self, to: SocketAddr) -> Option<Arc<UdpSocket>> {
        // Prefer an address of the same family.
        self.udp
            .iter()
            .find(|a| a.local.is_ipv4() == to.is_ipv4())
            .or_else(|| self.udp.first())
            .and_then(|a| a.sock_for(to))
            .cloned()
    }
}

/// Gives a UDP socket the receive buffer `bytes` (0: leaves the kernel's) and says when the
/// kernel granted less: a burst larger than the buffer is dropped before pivotd reads it.
fn apply_receive_buffer(sock: &UdpSocket, addr: SocketAddr, bytes: usize) {
    if bytes == 0 {
        return;
    }
    match rcvbuf::set_receive_buffer(sock, bytes) {
        Ok(got) if got < bytes => tracing::warn!(
            "sip udp {addr}: receive buffer {got} bytes, not the {bytes} asked \
             ([sip] udp_receive_buffer_bytes): the kernel caps it at net.core.rmem_max; \
             raise that sysctl, or a burst of requests may be dropped unread"
        ),
        Ok(got) => tracing::debug!("sip udp {addr}: receive buffer {got} bytes"),
        Err(e) => tracing::warn!("sip udp {addr}: cannot set the receive buffer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_call_id_finds_full_and_compact_names() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID :  abc@h \r\n\r\ni: body";
        assert_eq!(Transport::quick_call_id(m), b"abc@h");
        let m = b"BYE sip:a@b SIP/2.0\nv: x\ni:z9\n\n";
        assert_eq!(Transport::quick_call_id(m), b"z9");
        let m = b"OPTIONS sip:a@b SIP/2.0\r\n\r\nCall-ID: in-body\r\n";
        assert_eq!(Transport::quick_call_id(m), b"");
    }
}
