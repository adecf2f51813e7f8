//! SIP transport: UDP and TCP sockets, TCP framing, Via `received`/`rport` stamping and the
//! response address of RFC 3261 §18.2.2 / RFC 3581.
//!
//! The transport parses what it receives (through [`super::message::parse`], which normalises
//! first) and hands each message to an [`IncomingHandler`]; it knows nothing of transactions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use rsip::headers::UntypedHeader;

use super::message::{self, ParseError};
use super::normalize::{self, Frame};
use super::source::{ConnSlot, SourceGuard, SourceRefusal};
use crate::health::TaskHealth;

/// Transport protocol of a message or a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }

    /// Reliable transports need no retransmissions (RFC 3261 §17.1.1.2, §17.2.1).
    pub fn is_reliable(self) -> bool {
        matches!(self, Proto::Tcp)
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
    /// Parsed far enough to answer `code` (400, or 416/501/505 for what rsip cannot
    /// represent) with `reason`, statelessly.
    Invalid {
        code: u16,
        reason: String,
        request: rsip::Request,
        peer: Peer,
        reply_to: SocketAddr,
    },
}

/// Receives everything the transport reads. Called on the receiving task: keep it short.
pub trait IncomingHandler: Send + Sync + 'static {
    fn incoming(&self, incoming: Incoming);

    /// One framed message, not parsed yet: the handler parses it with
    /// [`Transport::parse_incoming`] where it suits it (so parsing can run in parallel while
    /// messages of one call keep their order).
    fn incoming_raw(&self, data: Bytes, peer: Peer);
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
    #[error("no socket to send {proto:?} from")]
    NoSocket { proto: Proto },
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub max_message_bytes: usize,
    pub tcp_idle_timeout: Duration,
    /// Per-source limits, checked for every message before it is parsed.
    pub sources: Arc<SourceGuard>,
    /// Where the receive loops are watched (and restarted after a panic).
    pub health: Arc<TaskHealth>,
}

/// How long a TCP connection we close for a framing error stays open for the responses
/// already owed on it.
const BROKEN_STREAM_LINGER: Duration = Duration::from_millis(1000);

struct Connection {
    tx: mpsc::Sender<Bytes>,
    remote: SocketAddr,
}

/// Counters for logs, tests and metrics.
#[derive(Default, Debug)]
pub struct TransportStats {
    pub received: AtomicU64,
    pub dropped_unparsable: AtomicU64,
    pub invalid: AtomicU64,
    pub sent: AtomicU64,
    pub tcp_open: AtomicU64,
    /// Messages and connections refused by the per-source limits (reasons in
    /// [`SourceGuard::stats`]).
    pub dropped_by_source: AtomicU64,
}

/// The bound sockets and the open TCP connections.
pub struct Transport {
    udp: Vec<Arc<UdpSocket>>,
    tcp_local: Vec<SocketAddr>,
    conns: Mutex<Connections>,
    next_conn: AtomicU64,
    cfg: TransportConfig,
    handler: Arc<dyn IncomingHandler>,
    pub stats: TransportStats,
}

#[derive(Default)]
struct Connections {
    by_id: HashMap<u64, Connection>,
    by_remote: HashMap<SocketAddr, u64>,
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
            let sock = UdpSocket::bind(addr)
                .await
                .map_err(|source| TransportError::BindUdp {
                    addr: *addr,
                    source,
                })?;
            udp.push(Arc::new(sock));
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
        let tcp_local = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let transport = Arc::new(Transport {
            udp,
            tcp_local,
            conns: Mutex::new(Connections::default()),
            next_conn: AtomicU64::new(1),
            cfg,
            handler,
            stats: TransportStats::default(),
        });
        let health = transport.cfg.health.clone();
        for sock in &transport.udp {
            // One reader per socket keeps the datagrams of a caller in order (an INVITE before
            // its CANCEL); parsing happens after the hand-off, in parallel across shards.
            let (t, s) = (transport.clone(), sock.clone());
            let name = format!(
                "sip udp {}",
                s.local_addr().map_or(String::new(), |a| a.to_string())
            );
            health.supervise(name, move || t.clone().udp_loop(s.clone()));
        }
        for l in listeners {
            let (t, l) = (transport.clone(), Arc::new(l));
            let name = format!(
                "sip tcp {}",
                l.local_addr().map_or(String::new(), |a| a.to_string())
            );
            health.supervise(name, move || t.clone().accept_loop(l.clone()));
        }
        Ok(transport)
    }

    /// Local UDP addresses actually bound (port 0 resolved).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Local TCP listen addresses actually bound.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp_local.clone()
    }

    /// The per-source limits every message passes.
    pub fn sources(&self) -> &Arc<SourceGuard> {
        &self.cfg.sources
    }

    /// The local address to name in Via/Contact for a protocol: the socket a peer used, or the
    /// first bound one.
    pub fn local_for(&self, proto: Proto) -> Option<SocketAddr> {
        match proto {
            Proto::Udp => self.udp_addrs().into_iter().next(),
            Proto::Tcp => self.tcp_local.first().copied(),
        }
    }

    async fn udp_loop(self: Arc<Self>, sock: Arc<UdpSocket>) {
        let local = match sock.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, remote) = match sock.recv_from(&mut buf).await {
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
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            // Over its rate or blocked: dropped before any parsing, and never answered
            // (an answer would make pivotd an amplifier for a spoofed source).
            if self.cfg.sources.admit_message(remote.ip()).is_err() {
                self.stats.dropped_by_source.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let peer = Peer {
                proto: Proto::Udp,
                remote,
                local,
                conn: None,
            };
            self.handler
                .incoming_raw(Bytes::copy_from_slice(data), peer);
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: Arc<TcpListener>) {
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => match self.cfg.sources.admit_connection(remote.ip()) {
                    Ok(slot) => {
                        self.start_connection(stream, remote, local, Some(slot));
                    }
                    Err(why) => {
                        // Dropping the stream closes it: nothing is read or answered.
                        tracing::debug!(%remote, reason = why.label(), "tcp connection refused");
                        self.stats.dropped_by_source.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("tcp accept on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn register_conn(&self, remote: SocketAddr, tx: mpsc::Sender<Bytes>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.by_id.insert(id, Connection { tx, remote });
        c.by_remote.insert(remote, id);
        self.stats.tcp_open.fetch_add(1, Ordering::Relaxed);
        id
    }

    fn unregister_conn(&self, id: u64) {
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = c.by_id.remove(&id) {
            if c.by_remote.get(&conn.remote) == Some(&id) {
                c.by_remote.remove(&conn.remote);
            }
            self.stats.tcp_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Registers a TCP connection and starts its reader and writer; returns its send queue.
    fn start_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        local: SocketAddr,
        slot: Option<ConnSlot>,
    ) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let id = self.register_conn(remote, tx.clone());
        let t = self.clone();
        let txc = tx.clone();
        tokio::spawn(async move {
            // The slot counts the connection against its source until it closes.
            let _slot = slot;
            t.serve_connection(stream, remote, local, id, txc, rx).await
        });
        tx
    }

    /// Reads one TCP connection, framing by Content-Length; a writer task sends what others
    /// queue for it. Idle connections (nothing read or written for the idle timeout) are closed.
    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        local: SocketAddr,
        id: u64,
        tx: mpsc::Sender<Bytes>,
        mut rx: mpsc::Receiver<Bytes>,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let last_write = Arc::new(AtomicU64::new(0));
        let epoch = tokio::time::Instant::now();
        let lw = last_write.clone();
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                lw.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            let _ = wr.shutdown().await;
        });
        let peer = Peer {
            proto: Proto::Tcp,
            remote,
            local,
            conn: Some(id),
        };
        let idle = self.cfg.tcp_idle_timeout;
        let max = self.cfg.max_message_bytes;
        let mut buf = BytesMut::with_capacity(8192);
        // Set when the stream cannot be framed any more and the connection is closed by us.
        let mut broken = false;
        'conn: loop {
            let read = tokio::time::timeout(idle, rd.read_buf(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => {
                    let since_write = epoch.elapsed().as_millis() as u64
                        - last_write
                            .load(Ordering::Relaxed)
                            .min(epoch.elapsed().as_millis() as u64);
                    if since_write >= idle.as_millis() as u64 {
                        tracing::debug!("closing idle tcp connection from {remote}");
                        break;
                    }
                    continue;
                }
            }
            loop {
                match normalize::frame(&buf, max) {
                    Frame::Incomplete => {
                        if buf.len() > max {
                            broken = true;
                            break 'conn;
                        }
                        break;
                    }
                    Frame::KeepAlive(n) => {
                        // RFC 5626 §4.4.1: a double-CRLF ping is answered with a CRLF pong.
                        let ping = buf.len() >= 4 && &buf[..4] == b"\r\n\r\n";
                        let _ = buf.split_to(n);
                        if ping {
                            let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                        }
                    }
                    Frame::Complete(n) => {
                        let msg = buf.split_to(n).freeze();
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        match self.cfg.sources.admit_message(remote.ip()) {
                            Ok(()) => self.handler.incoming_raw(msg, peer.clone()),
                            Err(SourceRefusal::Blocked) => {
                                self.stats.dropped_by_source.fetch_add(1, Ordering::Relaxed);
                                break 'conn;
                            }
                            Err(_) => {
                                self.stats.dropped_by_source.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    f @ (Frame::TooLarge | Frame::Invalid) => {
                        // The stream cannot be re-synchronised: answer what can be answered
                        // and close.
                        let upto = buf.len().min(max);
                        let code = if matches!(f, Frame::TooLarge) {
                            513
                        } else {
                            400
                        };
                        self.deliver_unframed(&buf[..upto], peer.clone(), code);
                        broken = true;
                        break 'conn;
                    }
                }
            }
        }
        if broken {
            // Responses to what this connection delivered (earlier well-framed messages, the
            // 400/513 above) are made on other tasks: keep the connection registered a moment
            // so they leave on it. Closing at once sent them to a new connection to the
            // client's ephemeral port (RFC 3261 §18.2.2), which nobody listens on.
            tokio::time::sleep(BROKEN_STREAM_LINGER).await;
        }
        self.unregister_conn(id);
        drop(tx);
        let _ = writer.await;
    }

    /// What [`Transport::deliver`] does for the bytes of a stream that could not be framed
    /// (no or bad Content-Length: `code` 400; over the size cap: 513, RFC 3261 §21.5.11).
    /// The message boundary is unknown, so even a request that parses is not acted on: it is
    /// refused statelessly (RFC 3261 §18.3: Content-Length MUST be used on streams).
    fn deliver_unframed(&self, data: &[u8], peer: Peer, code: u16) {
        let (request, why) = match message::parse(data) {
            Ok(rsip::SipMessage::Request(req)) => (Some(req), None),
            Err(ParseError::Invalid {
                request: Some(req),
                reason,
            }) => (Some(req), Some(reason)),
            Err(ParseError::Unsupported { request: req, .. }) => (Some(req), None),
            Ok(rsip::SipMessage::Response(_))
            | Err(ParseError::Invalid { request: None, .. })
            | Err(ParseError::Unparsable(_)) => (None, None),
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match request {
            Some(mut request) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let reply_to = stamp_via(&mut request, &peer);
                let reason = match (code, why) {
                    (513, _) => "Message Too Large".to_string(),
                    (_, Some(why)) => why,
                    _ => "Content-Length missing or invalid on a stream".to_string(),
                };
                self.handler.incoming(Incoming::Invalid {
                    code,
                    reason,
                    request,
                    peer,
                    reply_to,
                });
            }
            None => {
                self.stats
                    .dropped_unparsable
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %peer.remote, "dropped unframable stream data");
            }
        }
    }

    /// Parses one message and hands it on; unparsable input is dropped and counted.
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
                request: Some(mut request),
            }) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let reply_to = stamp_via(&mut request, &peer);
                Some(Incoming::Invalid {
                    code: 400,
                    reason,
                    request,
                    peer,
                    reply_to,
                })
            }
            Err(ParseError::Unsupported {
                code,
                reason,
                mut request,
            }) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let reply_to = stamp_via(&mut request, &peer);
                Some(Incoming::Invalid {
                    code,
                    reason,
                    request,
                    peer,
                    reply_to,
                })
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

    /// Sends bytes to a peer: over TCP on its connection (or a new one to its address), over UDP
    /// from the socket it used. Never blocks the caller.
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
            Proto::Tcp => {
                let existing = {
                    let c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
                    conn.and_then(|id| c.by_id.get(&id))
                        .or_else(|| c.by_remote.get(&to).and_then(|id| c.by_id.get(id)))
                        .map(|c| c.tx.clone())
                };
                match existing {
                    Some(tx) => {
                        if let Err(mpsc::error::TrySendError::Full(b)) = tx.try_send(bytes) {
                            tokio::spawn(async move {
                                let _ = tx.send(b).await;
                            });
                        }
                    }
                    None => {
                        // RFC 3261 §18.2.2: the connection is gone, open a new one to the
                        // same address.
                        let t = self.clone();
                        tokio::spawn(async move { t.connect_and_send(to, bytes).await });
                    }
                }
            }
        }
    }

    async fn connect_and_send(self: Arc<Self>, to: SocketAddr, bytes: Bytes) {
        let stream =
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("tcp connect to {to}: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("tcp connect to {to}: timed out");
                    return;
                }
            };
        let local = stream.local_addr().unwrap_or(to);
        let tx = self.start_connection(stream, to, local, None);
        let _ = tx.send(bytes).await;
    }

    fn udp_socket_for(&self, to: SocketAddr) -> Option<Arc<UdpSocket>> {
        // Prefer a socket of the same address family.
        self.udp
            .iter()
            .find(|s| {
                s.local_addr()
                    .map(|a| a.is_ipv4() == to.is_ipv4())
                    .unwrap_or(false)
            })
            .or_else(|| self.udp.first())
            .cloned()
    }
}

/// Adds `received` (when the sent-by host is not the source address) and fills `rport`
/// (RFC 3581 §4) in the top Via, and returns where responses go (RFC 3261 §18.2.2): the source
/// address, and the source port when rport was asked for, else the sent-by port (default 5060).
///
/// `maddr` is deliberately not honoured: answering to an address named in the message would let
/// anyone reflect traffic through pivotd.
pub fn stamp_via(req: &mut rsip::Request, peer: &Peer) -> SocketAddr {
    let mut reply = peer.remote;
    if peer.proto == Proto::Tcp {
        return reply;
    }
    for h in req.headers.iter_mut() {
        if let rsip::Header::Via(via) = h {
            let (value, port) = stamp_via_value(via.value(), peer.remote);
            reply = SocketAddr::new(peer.remote.ip(), port);
            via.replace(value);
            break;
        }
    }
    reply
}

/// The string work of [`stamp_via`]: returns the new Via value and the response port.
pub fn stamp_via_value(value: &str, src: SocketAddr) -> (String, u16) {
    let mut parts = value.split(';');
    let head = parts.next().unwrap_or("").trim();
    // head: "SIP/2.0/UDP host[:port]"
    let sent_by = head.split_whitespace().last().unwrap_or("");
    let (host, port) = split_host_port(sent_by);
    let mut out = String::with_capacity(value.len() + 32);
    out.push_str(head);
    let mut has_rport = false;
    let mut has_received = false;
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            has_rport = true;
            out.push_str(&format!(";rport={}", src.port()));
        } else if name.eq_ignore_ascii_case("received") {
            has_received = true;
            out.push_str(&format!(";received={}", src.ip()));
        } else {
            out.push(';');
            out.push_str(p);
        }
    }
    let host_is_src = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip == src.ip())
        .unwrap_or(false);
    if !host_is_src && !has_received {
        out.push_str(&format!(";received={}", src.ip()));
    }
    let reply_port = if has_rport {
        src.port()
    } else {
        port.unwrap_or(5060)
    };
    (out, reply_port)
}

/// Splits `host[:port]`, with IPv6 references in brackets.
pub fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &s[..end + 2];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.trim().parse().ok()),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_gets_received_and_rport() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (v, port) = stamp_via_value("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport", src);
        assert_eq!(
            v,
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport=40000;received=127.0.0.1"
        );
        assert_eq!(port, 40000);
    }

    #[test]
    fn via_without_rport_answers_sent_by_port() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (v, port) = stamp_via_value("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1", src);
        assert_eq!(v, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1");
        assert_eq!(port, 5070);
        let (_, port) = stamp_via_value("SIP/2.0/UDP host.example;branch=z9hG4bK1", src);
        assert_eq!(port, 5060);
    }

    #[test]
    fn quick_call_id_finds_full_and_compact_names() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID :  abc@h \r\n\r\ni: body";
        assert_eq!(Transport::quick_call_id(m), b"abc@h");
        let m = b"BYE sip:a@b SIP/2.0\nv: x\ni:z9\n\n";
        assert_eq!(Transport::quick_call_id(m), b"z9");
        let m = b"OPTIONS sip:a@b SIP/2.0\r\n\r\nCall-ID: in-body\r\n";
        assert_eq!(Transport::quick_call_id(m), b"");
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("[::1]:5060"), ("[::1]", Some(5060)));
        assert_eq!(split_host_port("a.b"), ("a.b", None));
        assert_eq!(split_host_port("1.2.3.4:7"), ("1.2.3.4", Some(7)));
    }
}
