//! Stream connections, TCP and TLS alike: accepting TCP connections (each admitted per
//! source), reading a stream framed by Content-Length (RFC 3261 §18.3), answering what cannot
//! be framed, and sending on a connection or opening one (RFC 3261 §18.2.2). TLS (`tls.rs`)
//! adds only its handshake: what is read and written after it goes through the same code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Peer, Proto, Refused, Transport};
use crate::sip::message::{self, ParseError};
use crate::sip::normalize::{self, Frame};
use crate::sip::source::{ConnSlot, SourceRefusal};

/// How long a TCP connection we close for a framing error stays open for the responses
/// already owed on it.
const BROKEN_STREAM_LINGER: Duration = Duration::from_millis(1000);

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One open connection: its send queue.
pub(super) struct Connection {
    tx: mpsc::Sender<Bytes>,
    proto: Proto,
    remote: SocketAddr,
}

/// The open connections, by id and by transport and remote address (a TLS peer is never
/// sent to on a plain TCP connection to the same address). A connection we opened to a named
/// TLS server is found by its id only (`tls.rs`): another request to its address may be for
/// another name.
#[derive(Default)]
pub(super) struct Connections {
    by_id: HashMap<u64, Connection>,
    by_remote: HashMap<(Proto, SocketAddr), u64>,
}

impl Transport {
    /// Accepts the connections of a TCP or TLS listener, each held to its source's connection
    /// limit before anything is read (a TLS handshake included).
    pub(super) async fn accept_loop(self: Arc<Self>, listener: Arc<TcpListener>, proto: Proto) {
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => match self.cfg.sources.admit_connection(remote.ip()) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        if proto == Proto::Tls {
                            self.clone().accept_tls(stream, remote, local, slot);
                        } else {
                            let (rd, wr) = stream.into_split();
                            let slot = Some(slot);
                            self.start_connection(rd, wr, Proto::Tcp, remote, local, slot);
                        }
                    }
                    Err(why) => {
                        // Dropping the stream closes it: nothing is read or answered.
                        tracing::debug!(%remote, reason = why.label(), ?proto,
                            "connection refused");
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

    fn open_count(&self, proto: Proto) -> &AtomicU64 {
        match proto {
            Proto::Tls => &self.stats.tls_open,
            _ => &self.stats.tcp_open,
        }
    }

    fn register_conn(&self, proto: Proto, remote: SocketAddr, tx: mpsc::Sender<Bytes>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.by_remote.insert((proto, remote), id);
        self.insert_conn(&mut c, id, Connection { tx, proto, remote });
        id
    }

    fn insert_conn(&self, c: &mut Connections, id: u64, conn: Connection) {
        self.open_count(conn.proto).fetch_add(1, Ordering::Relaxed);
        c.by_id.insert(id, conn);
    }

    /// Forgets connection `id` if it is still the one whose queue is `tx` (a named TLS
    /// server's id outlives each of its connections).
    fn unregister_conn(&self, id: u64, tx: &mpsc::Sender<Bytes>) {
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if !c
            .by_id
            .get(&id)
            .is_some_and(|conn| conn.tx.same_channel(tx))
        {
            return;
        }
        if let Some(conn) = c.by_id.remove(&id) {
            let key = (conn.proto, conn.remote);
            if c.by_remote.get(&key) == Some(&id) {
                c.by_remote.remove(&key);
            }
            self.open_count(conn.proto).fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Registers a connection (its stream's two halves: a TCP socket's, or a TLS session's
    /// after the handshake) and starts its reader and writer; returns its id.
    pub(super) fn start_connection<R, W>(
        self: &Arc<Self>,
        rd: R,
        wr: W,
        proto: Proto,
        remote: SocketAddr,
        local: SocketAddr,
        slot: Option<ConnSlot>,
    ) -> u64
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let id = self.register_conn(proto, remote, tx.clone());
        let t = self.clone();
        let txc = tx.clone();
        let peer = Peer {
            proto,
            remote,
            local,
            conn: Some(id),
        };
        tokio::spawn(async move {
            // The slot counts the connection against its source until it closes.
            let _slot = slot;
            t.serve_connection(rd, wr, peer, txc, rx).await
        });
        id
    }

    /// Registers a connection we opened to the named TLS server whose connection id is `id`
    /// (a dialog's later requests name it) and serves it; an open one under that id is
    /// replaced.
    pub(super) fn start_named_connection<R, W>(
        self: &Arc<Self>,
        id: u64,
        rd: R,
        wr: W,
        remote: SocketAddr,
        local: SocketAddr,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        {
            let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = c.by_id.remove(&id) {
                self.open_count(old.proto).fetch_sub(1, Ordering::Relaxed);
            }
            let conn = Connection {
                tx: tx.clone(),
                proto: Proto::Tls,
                remote,
            };
            self.insert_conn(&mut c, id, conn);
        }
        let peer = Peer {
            proto: Proto::Tls,
            remote,
            local,
            conn: Some(id),
        };
        let t = self.clone();
        tokio::spawn(async move { t.serve_connection(rd, wr, peer, tx, rx).await });
    }

    /// Reads one connection, framing by Content-Length; a writer task sends what others
    /// queue for it. Idle connections (nothing read or written for the idle timeout) are closed.
    async fn serve_connection<R, W>(
        self: Arc<Self>,
        mut rd: R,
        mut wr: W,
        peer: Peer,
        tx: mpsc::Sender<Bytes>,
        mut rx: mpsc::Receiver<Bytes>,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (remote, id) = (peer.remote, peer.conn.unwrap_or_default());
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
                        tracing::debug!(proto = ?peer.proto, "closing idle connection from {remote}");
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
                        match self.admit(remote.ip()) {
                            Ok(()) => self.handler.incoming_raw(msg, peer.clone(), Instant::now()),
                            Err(SourceRefusal::Blocked) => break 'conn,
                            Err(_) => {}
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
                        // Held to its source's limits like every other message.
                        if self.admit(remote.ip()).is_ok() {
                            self.deliver_unframed(&buf[..upto], peer.clone(), code);
                        }
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
        self.unregister_conn(id, &tx);
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
        match request {
            Some(request) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let reason = match (code, why) {
                    (513, _) => "Message Too Large".into(),
                    (_, Some(why)) => why.into(),
                    _ => "Content-Length missing or invalid on a stream".into(),
                };
                self.handler
                    .refused(Refused::new(code, reason, request, peer));
            }
            None => {
                self.stats
                    .dropped_unparsable
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %peer.remote, "dropped unframable stream data");
            }
        }
    }

    /// Sends on the peer's connection, or on any open to its address over the same
    /// transport, or a new one (over TLS only to a server whose name we know, `tls.rs`).
    pub(super) fn send_stream(
        self: &Arc<Self>,
        proto: Proto,
        to: SocketAddr,
        conn: Option<u64>,
        bytes: Bytes,
    ) {
        match self.connection_to(proto, to, conn) {
            Some(tx) => {
                if let Err(mpsc::error::TrySendError::Full(b)) = tx.try_send(bytes) {
                    tokio::spawn(async move {
                        let _ = tx.send(b).await;
                    });
                }
            }
            None => self.open_and_send(proto, to, conn, bytes),
        }
    }

    /// RFC 3261 §18.2.2: no connection to `to`, open a new one (over TLS only to a server
    /// named beforehand, under its connection id). It is registered before it is open, so
    /// what is sent meanwhile (the CANCEL of an INVITE) waits in its queue, in order, rather
    /// than opening another.
    fn open_and_send(
        self: &Arc<Self>,
        proto: Proto,
        to: SocketAddr,
        conn: Option<u64>,
        bytes: Bytes,
    ) {
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let (id, server_name) = match proto {
            Proto::Tls => {
                let Some((id, name)) = self.tls_server_for(to, conn) else {
                    tracing::debug!(
                        "tls to {to}: its connection is closed and it is no server we may \
                         connect to (a phone behind NAT is reached only on its own \
                         connection, and an address with several names needs the one): not sent"
                    );
                    return;
                };
                let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
                // Opened meanwhile by another sender: its queue keeps the order.
                if let Some(open) = c.by_id.get(&id).filter(|c| c.proto == proto) {
                    let _ = open.tx.try_send(bytes);
                    return;
                }
                let remote = to;
                self.insert_conn(
                    &mut c,
                    id,
                    Connection {
                        tx: tx.clone(),
                        proto,
                        remote,
                    },
                );
                (id, Some(name))
            }
            _ => (self.register_conn(proto, to, tx.clone()), None),
        };
        let _ = tx.try_send(bytes);
        let t = self.clone();
        tokio::spawn(async move {
            let Ok(stream) = t.connect(proto, to).await else {
                t.unregister_conn(id, &tx);
                return;
            };
            let local = stream.local_addr().unwrap_or(to);
            let peer = Peer {
                proto,
                remote: to,
                local,
                conn: Some(id),
            };
            match server_name {
                Some(name) => match t.tls_handshake(stream, name, to).await {
                    Ok(tls) => {
                        let (rd, wr) = tokio::io::split(tls);
                        t.serve_connection(rd, wr, peer, tx, rx).await;
                    }
                    Err(_) => t.unregister_conn(id, &tx),
                },
                None => {
                    let (rd, wr) = stream.into_split();
                    t.serve_connection(rd, wr, peer, tx, rx).await;
                }
            }
        });
    }

    /// The send queue of connection `conn`, else of one open to `to` over `proto`.
    pub(super) fn connection_to(
        &self,
        proto: Proto,
        to: SocketAddr,
        conn: Option<u64>,
    ) -> Option<mpsc::Sender<Bytes>> {
        {
            let c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            let open = conn.and_then(|id| c.by_id.get(&id));
            if let Some(open) = open.filter(|c| c.proto == proto) {
                return Some(open.tx.clone());
            }
        }
        // To a named TLS server, only its own connection (none open: one is opened for its
        // name), never another's at the same address.
        let named = match proto {
            Proto::Tls => self.tls_server_for(to, conn).map(|(id, _)| id),
            _ => None,
        };
        let c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let id = named.or_else(|| c.by_remote.get(&(proto, to)).copied())?;
        c.by_id.get(&id).map(|c| c.tx.clone())
    }

    /// A TCP connection to `to` (for `proto`: in the log only).
    pub(super) async fn connect(&self, proto: Proto, to: SocketAddr) -> std::io::Result<TcpStream> {
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection timed out",
            )),
        };
        match &result {
            Ok(s) => {
                let _ = s.set_nodelay(true);
            }
            Err(e) => tracing::debug!(?proto, "connect to {to}: {e}"),
        }
        result
    }
}
