//! The SIP endpoint: routes what the transport receives to transactions and dialogs.
//!
//! Work is split into shards by Call-ID, each a task that owns its transactions, dialogs and
//! timer heap outright: everything about one call lands in one shard, so there is no lock on
//! the message path and one timer service per shard instead of a task per transaction.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::message;
use super::outgoing::response_bytes;
use super::timer::{TimerKind, TimerQueue, Timers};
use super::transaction::client_inv::ClientInvite;
use super::transaction::client_noninv::ClientNonInvite;
use super::transaction::server_inv::ServerInvite;
use super::transaction::server_noninv::ServerNonInvite;
use super::transaction::{Out, TxNotice};
use super::transport::{
    Incoming, IncomingHandler, Peer, Proto, Transport, TransportConfig, TransportError,
};

/// Endpoint settings.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub transport: TransportConfig,
    pub timers: Timers,
    /// Number of shards (tasks); one per core is right.
    pub shards: usize,
    /// Queue of new requests for the application; beyond it requests get 503.
    pub app_queue: usize,
}

/// A request that starts something: out of dialog (INVITE, OPTIONS, REGISTER …).
#[derive(Debug)]
pub struct NewRequest {
    pub req: rsip::Request,
    pub tx: ServerTx,
}

/// What a dialog's owner (a call) hears from the endpoint.
#[derive(Debug)]
pub enum DialogEvent {
    /// An in-dialog request (BYE, re-INVITE, INFO, OPTIONS …) with its transaction.
    Request { req: rsip::Request, tx: ServerTx },
    /// The ACK of our 2xx (first one only).
    Ack { req: rsip::Request },
    /// A CANCEL matched the INVITE before its final response; 200 was sent to the CANCEL.
    Cancelled,
    /// Our 2xx to the INVITE was never acknowledged (Timer H).
    AckTimeout,
    /// A response to a request we sent (client transaction `id`).
    Response { id: u64, resp: rsip::Response },
    /// No final response to client transaction `id` (Timer B / F).
    Timeout { id: u64 },
}

/// Identifies a dialog in its shard: Call-ID and our tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
}

type TxKey = Arc<str>;

/// Handle to a server transaction: the transaction user answers through it.
#[derive(Clone, Debug)]
pub struct ServerTx {
    key: TxKey,
    shard: mpsc::UnboundedSender<ShardCmd>,
    peer: Peer,
    reply_to: SocketAddr,
}

impl ServerTx {
    /// Sends a response through the transaction (which retransmits it as RFC 3261 says).
    pub fn respond(&self, code: u16, bytes: Bytes) {
        let _ = self.shard.send(ShardCmd::Respond {
            key: self.key.clone(),
            code,
            bytes,
        });
    }

    /// Where the request came from.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Where its responses go (RFC 3261 §18.2.2).
    pub fn reply_to(&self) -> SocketAddr {
        self.reply_to
    }
}

/// A request pivotd originates, already serialised with its own Via branch.
#[derive(Debug)]
pub struct OutgoingRequest {
    pub method: rsip::Method,
    pub branch: String,
    pub bytes: Bytes,
    pub proto: Proto,
    pub to: SocketAddr,
    pub conn: Option<u64>,
    /// The request as a message, for building the ACK of a non-2xx (INVITE only).
    pub request: Option<rsip::Request>,
}

#[derive(Debug)]
enum ShardCmd {
    /// A framed message to parse here.
    Raw {
        data: Bytes,
        peer: Peer,
    },
    Incoming(Incoming),
    Respond {
        key: TxKey,
        code: u16,
        bytes: Bytes,
    },
    Register {
        id: DialogId,
        owner: mpsc::UnboundedSender<DialogEvent>,
        invite: Option<TxKey>,
    },
    Unregister {
        id: DialogId,
    },
    Send {
        req: OutgoingRequest,
        owner: Option<mpsc::UnboundedSender<DialogEvent>>,
        id: u64,
    },
}

/// Counters of what the endpoint did.
#[derive(Default, Debug)]
pub struct EndpointStats {
    /// Server transactions ever created.
    pub server_transactions: AtomicU64,
    /// Client transactions ever created.
    pub client_transactions: AtomicU64,
    /// 503s for a full application queue.
    pub overload_503: AtomicU64,
    /// Messages or timers whose handling panicked (the shard went on without them).
    pub recovered_panics: AtomicU64,
    /// Requests from scanners, dropped unanswered.
    pub scanner_dropped: AtomicU64,
    /// Gauge: server transactions alive now (they end with their timers, RFC 3261 §17.2).
    pub live_server_transactions: AtomicU64,
    /// Gauge: client transactions alive now.
    pub live_client_transactions: AtomicU64,
    /// Gauge: dialogs registered now.
    pub live_dialogs: AtomicU64,
    /// Messages by method and code.
    pub messages: SipCounters,
}

/// SIP messages by method (requests) and status code (responses), in and out: fixed arrays
/// of atomics, so counting takes no lock.
pub struct SipCounters {
    requests: [[AtomicU64; METHODS.len()]; 2],
    responses: [[AtomicU64; 600]; 2],
}

/// The methods rsip knows, in the order of the counters.
pub const METHODS: [rsip::Method; 14] = [
    rsip::Method::Ack,
    rsip::Method::Bye,
    rsip::Method::Cancel,
    rsip::Method::Info,
    rsip::Method::Invite,
    rsip::Method::Message,
    rsip::Method::Notify,
    rsip::Method::Options,
    rsip::Method::PRack,
    rsip::Method::Publish,
    rsip::Method::Refer,
    rsip::Method::Register,
    rsip::Method::Subscribe,
    rsip::Method::Update,
];

/// Direction of a counted message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In = 0,
    Out = 1,
}

impl Default for SipCounters {
    fn default() -> Self {
        SipCounters {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl std::fmt::Debug for SipCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SipCounters")
    }
}

impl SipCounters {
    pub fn request(&self, dir: Direction, method: rsip::Method) {
        if let Some(i) = METHODS.iter().position(|m| *m == method) {
            self.requests[dir as usize][i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn response(&self, dir: Direction, code: u16) {
        if let Some(c) = self.responses[dir as usize].get(usize::from(code).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Non-zero request counts: (direction, method, count).
    pub fn requests(&self) -> Vec<(Direction, rsip::Method, u64)> {
        let mut out = Vec::new();
        for (d, dir) in [Direction::In, Direction::Out].into_iter().enumerate() {
            for (i, m) in METHODS.iter().enumerate() {
                let n = self.requests[d][i].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((dir, *m, n));
                }
            }
        }
        out
    }

    /// Non-zero response counts: (direction, code, count).
    pub fn responses(&self) -> Vec<(Direction, u16, u64)> {
        let mut out = Vec::new();
        for (d, dir) in [Direction::In, Direction::Out].into_iter().enumerate() {
            for (i, c) in self.responses[d].iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((dir, i as u16 + 100, n));
                }
            }
        }
        out
    }
}

/// The SIP endpoint.
pub struct Endpoint {
    shards: Vec<mpsc::UnboundedSender<ShardCmd>>,
    transport: Arc<Transport>,
    next_client_id: AtomicU64,
    pub stats: Arc<EndpointStats>,
}

struct Dispatcher {
    shards: Vec<mpsc::UnboundedSender<ShardCmd>>,
}

fn shard_of(call_id: &[u8], n: usize) -> usize {
    let mut h = DefaultHasher::new();
    call_id.hash(&mut h);
    (h.finish() as usize) % n.max(1)
}

impl IncomingHandler for Dispatcher {
    fn incoming(&self, incoming: Incoming) {
        let idx = match &incoming {
            Incoming::Message { msg, .. } => shard_of(
                message::call_id(msg).unwrap_or_default().as_bytes(),
                self.shards.len(),
            ),
            Incoming::Invalid { .. } => 0,
        };
        if let Some(s) = self.shards.get(idx) {
            let _ = s.send(ShardCmd::Incoming(incoming));
        }
    }

    fn incoming_raw(&self, data: Bytes, peer: Peer) {
        let idx = shard_of(Transport::quick_call_id(&data), self.shards.len());
        if let Some(s) = self.shards.get(idx) {
            let _ = s.send(ShardCmd::Raw { data, peer });
        }
    }
}

impl Endpoint {
    /// Binds the transport and starts the shards. New requests arrive on the returned receiver.
    pub async fn start(
        cfg: EndpointConfig,
    ) -> Result<(Arc<Endpoint>, mpsc::Receiver<NewRequest>), TransportError> {
        let n = cfg.shards.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let dispatcher = Arc::new(Dispatcher {
            shards: senders.clone(),
        });
        let transport = Transport::start(cfg.transport.clone(), dispatcher).await?;
        let (app_tx, app_rx) = mpsc::channel(cfg.app_queue.max(1));
        let stats = Arc::new(EndpointStats::default());
        for (i, rx) in receivers.into_iter().enumerate() {
            let shard = Shard {
                me: senders[i].clone(),
                all: senders.clone(),
                index: i,
                transport: transport.clone(),
                timers: cfg.timers,
                app: app_tx.clone(),
                server: HashMap::new(),
                client: HashMap::new(),
                dialogs: HashMap::new(),
                queue: TimerQueue::default(),
                stats: stats.clone(),
            };
            cfg.transport
                .health
                .watch(format!("sip shard {i}"), shard.run(rx));
        }
        Ok((
            Arc::new(Endpoint {
                shards: senders,
                transport,
                next_client_id: AtomicU64::new(1),
                stats,
            }),
            app_rx,
        ))
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    fn shard(&self, call_id: &str) -> Option<&mpsc::UnboundedSender<ShardCmd>> {
        self.shards
            .get(shard_of(call_id.as_bytes(), self.shards.len()))
    }

    /// Routes the dialog's in-dialog requests, its ACK and (with `invite`) a CANCEL of the
    /// INVITE to `owner`.
    pub fn register_dialog(
        &self,
        id: DialogId,
        owner: mpsc::UnboundedSender<DialogEvent>,
        invite: Option<&ServerTx>,
    ) {
        if let Some(s) = self.shard(&id.call_id) {
            let _ = s.send(ShardCmd::Register {
                id,
                owner,
                invite: invite.map(|t| t.key.clone()),
            });
        }
    }

    pub fn unregister_dialog(&self, id: DialogId) {
        if let Some(s) = self.shard(&id.call_id) {
            let _ = s.send(ShardCmd::Unregister { id });
        }
    }

    /// Sends a request in a client transaction; its final response (or timeout) goes to
    /// `owner` with the returned id.
    pub fn send_request(
        &self,
        call_id: &str,
        req: OutgoingRequest,
        owner: Option<mpsc::UnboundedSender<DialogEvent>>,
    ) -> u64 {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.shard(call_id) {
            let _ = s.send(ShardCmd::Send { req, owner, id });
        }
        id
    }
}

enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

struct ServerEntry {
    machine: ServerMachine,
    peer: Peer,
    reply_to: SocketAddr,
    owner: Option<mpsc::UnboundedSender<DialogEvent>>,
    dialog: Option<DialogId>,
    cseq: u32,
    /// A CANCEL came before the owner registered: tell it when it does.
    cancelled: bool,
}

enum ClientMachine {
    // Boxed: the request is large and only INVITE transactions keep it.
    Invite(ClientInvite, Option<Box<rsip::Request>>),
    NonInvite(ClientNonInvite),
}

struct ClientEntry {
    machine: ClientMachine,
    proto: Proto,
    to: SocketAddr,
    conn: Option<u64>,
    owner: Option<mpsc::UnboundedSender<DialogEvent>>,
    id: u64,
}

struct DialogEntry {
    owner: mpsc::UnboundedSender<DialogEvent>,
    /// The INVITE transaction whose 2xx awaits its ACK, with its CSeq.
    /// More than one when a re-INVITE's 2xx goes out before the ACK of the previous 2xx
    /// came in (UDP may reorder the caller's ACK and its next re-INVITE): each is matched
    /// by CSeq, or a late ACK would be lost and its 2xx retransmitted until Timer H.
    pending_ack: Vec<(u32, TxKey)>,
}

struct TimerRef {
    key: TxKey,
    client: bool,
    kind: TimerKind,
}

struct Shard {
    me: mpsc::UnboundedSender<ShardCmd>,
    /// Every shard (for messages that belong elsewhere) and this one's place among them.
    all: Vec<mpsc::UnboundedSender<ShardCmd>>,
    index: usize,
    transport: Arc<Transport>,
    timers: Timers,
    app: mpsc::Sender<NewRequest>,
    server: HashMap<TxKey, ServerEntry>,
    client: HashMap<TxKey, ClientEntry>,
    dialogs: HashMap<DialogId, DialogEntry>,
    queue: TimerQueue<TimerRef>,
    stats: Arc<EndpointStats>,
}

/// The server transaction key of RFC 3261 §17.2.3: branch, sent-by and method (ACK and CANCEL
/// look for the INVITE's key with `method_for_key`). Pre-RFC 3261 branches fall back to the
/// request's identifying headers.
fn server_key(msg: &rsip::Request, method: &str) -> Option<TxKey> {
    let via = message::top_via(msg)?;
    match via.branch.as_deref() {
        Some(b) if b.starts_with("z9hG4bK") => {
            Some(format!("{b}|{}|{method}", via.sent_by.to_ascii_lowercase()).into())
        }
        _ => {
            let call_id = message::call_id(msg)?;
            let (cseq, _) = message::cseq(msg)?;
            let from_tag = message::from_tag(msg).unwrap_or_default();
            Some(format!("2543|{call_id}|{cseq}|{from_tag}|{}|{method}", via.sent_by).into())
        }
    }
}

fn client_key(branch: &str, method: &str) -> TxKey {
    format!("{branch}|{method}").into()
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ShardCmd>) {
        loop {
            let deadline = self.queue.next_deadline();
            tokio::select! {
                biased;
                // A panic costs the one message or timer that caused it, never the shard
                // (whose death would silence every call hashed to it).
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        if crate::health::catch(|| self.handle(cmd)).is_none() {
                            self.stats.recovered_panics.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => break,
                },
                _ = super::timer::sleep_until(deadline) => {
                    let now = Instant::now();
                    while let Some(t) = self.queue.pop_due(now) {
                        if crate::health::catch(|| self.on_timer(t)).is_none() {
                            self.stats.recovered_panics.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A flood leaves the tables at their peak capacity; entries end with
                    // timers, so this is where they empty. Shrink only far below capacity,
                    // so steady traffic never rehashes.
                    fn shrink<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
                        if m.capacity() > 1024 && m.len() * 4 < m.capacity() {
                            m.shrink_to(m.len() * 2);
                        }
                    }
                    shrink(&mut self.server);
                    shrink(&mut self.client);
                    shrink(&mut self.dialogs);
                }
            }
        }
    }

    fn handle(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Raw { data, peer } => {
                let Some(incoming) = self.transport.parse_incoming(&data, peer) else {
                    return;
                };
                // The light Call-ID scan and the parser disagree only on odd messages (a
                // folded Call-ID): send those where the rest of their call lives.
                if let Incoming::Message { msg, .. } = &incoming {
                    let id = message::call_id(msg).unwrap_or_default();
                    let idx = shard_of(id.as_bytes(), self.all.len());
                    if idx != self.index {
                        if let Some(s) = self.all.get(idx) {
                            let _ = s.send(ShardCmd::Incoming(incoming));
                        }
                        return;
                    }
                }
                self.handle(ShardCmd::Incoming(incoming));
            }
            ShardCmd::Incoming(Incoming::Message {
                msg: rsip::SipMessage::Request(req),
                peer,
                reply_to,
            }) => self.on_request(req, peer, reply_to),
            ShardCmd::Incoming(Incoming::Message {
                msg: rsip::SipMessage::Response(resp),
                ..
            }) => self.on_response(resp),
            ShardCmd::Incoming(Incoming::Invalid {
                code,
                reason,
                request,
                peer,
                reply_to,
            }) => {
                // Stateless (RFC 3261 §8.2): the request is too broken for a transaction.
                if request.method != rsip::Method::Ack {
                    let extra: &[(&str, &str)] = if code == 501 || code == 405 {
                        &[("Allow", crate::sip::ALLOW)]
                    } else {
                        &[]
                    };
                    let bytes = response_bytes(&request, code, Some(&reason), None, extra, None);
                    self.stats.messages.response(Direction::Out, code);
                    self.transport.send(peer.proto, reply_to, peer.conn, bytes);
                }
            }
            ShardCmd::Respond { key, code, bytes } => self.respond(key, code, bytes),
            ShardCmd::Register { id, owner, invite } => {
                if let Some(key) = invite {
                    if let Some(e) = self.server.get_mut(&key) {
                        e.owner = Some(owner.clone());
                        e.dialog = Some(id.clone());
                        if e.cancelled {
                            let _ = owner.send(DialogEvent::Cancelled);
                        }
                    }
                }
                let entry = DialogEntry {
                    owner,
                    pending_ack: Vec::new(),
                };
                if self.dialogs.insert(id, entry).is_none() {
                    self.stats.live_dialogs.fetch_add(1, Ordering::Relaxed);
                }
            }
            ShardCmd::Unregister { id } => self.remove_dialog(&id),
            ShardCmd::Send { req, owner, id } => self.send_request(req, owner, id),
        }
    }

    fn remove_dialog(&mut self, id: &DialogId) {
        let Some(dialog) = self.dialogs.remove(id) else {
            return;
        };
        self.stats.live_dialogs.fetch_sub(1, Ordering::Relaxed);
        // A 2xx still waiting for its ACK stops being retransmitted with its dialog (a BYE
        // before the ACK, a shutdown). Its transaction goes on as if acknowledged: it absorbs
        // late copies of the INVITE (which would otherwise start a new call) and ends at
        // Timer H like any other, which keeps the live-transaction gauge right.
        for (_, key) in dialog.pending_ack {
            if let Some(ServerEntry {
                machine: ServerMachine::Invite(m),
                ..
            }) = self.server.get_mut(&key)
            {
                let out = m.on_2xx_ack();
                self.apply_server(&key, out);
            }
        }
    }

    fn on_request(&mut self, req: rsip::Request, peer: Peer, reply_to: SocketAddr) {
        let method = req.method;
        self.stats.messages.request(Direction::In, method);
        let call_id = message::call_id(&req).unwrap_or_default();
        let to_tag = message::to_tag(&req);
        let key_method = match method {
            rsip::Method::Ack => "INVITE".to_string(),
            m => m.to_string(),
        };
        let Some(key) = server_key(&req, &key_method) else {
            return;
        };

        // A scanner is not answered at all, and its address is blocked at the transport.
        let sources = self.transport.sources();
        if !sources.is_trusted(peer.remote.ip())
            && message::header_value(&req, "User-Agent").is_some_and(|ua| sources.is_scanner(&ua))
        {
            sources.scanner_seen(peer.remote.ip());
            self.stats.scanner_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %peer.remote, "scanner request dropped");
            return;
        }

        if method == rsip::Method::Ack {
            self.on_ack(req, key, call_id, to_tag);
            return;
        }

        // A retransmission of a request whose transaction exists.
        if let Some(e) = self.server.get(&key) {
            let out = match &e.machine {
                ServerMachine::Invite(m) => m.on_retransmission(),
                ServerMachine::NonInvite(m) => m.on_retransmission(),
            };
            if let Some(b) = out.send {
                self.transport
                    .send(e.peer.proto, e.reply_to, e.peer.conn, b);
            }
            return;
        }

        let reliable = peer.proto.is_reliable();
        let cseq = message::cseq(&req).map(|c| c.0).unwrap_or(0);
        let machine = if method == rsip::Method::Invite {
            ServerMachine::Invite(ServerInvite::new(reliable, self.timers))
        } else {
            ServerMachine::NonInvite(ServerNonInvite::new(reliable, self.timers))
        };
        self.stats
            .server_transactions
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .live_server_transactions
            .fetch_add(1, Ordering::Relaxed);
        self.server.insert(
            key.clone(),
            ServerEntry {
                machine,
                peer: peer.clone(),
                reply_to,
                owner: None,
                dialog: None,
                cseq,
                cancelled: false,
            },
        );
        let tx = ServerTx {
            key: key.clone(),
            shard: self.me.clone(),
            peer: peer.clone(),
            reply_to,
        };

        if method == rsip::Method::Invite {
            // §17.2.1: a 100 Trying at once stops the client's retransmissions.
            let trying = response_bytes(&req, 100, None, None, &[], None);
            self.respond(key.clone(), 100, trying);
        }

        if method == rsip::Method::Cancel {
            let invite_key: TxKey =
                format!("{}INVITE", key.strip_suffix("CANCEL").unwrap_or(&key)).into();
            let code = match self.server.get_mut(&invite_key) {
                Some(inv) => {
                    if let ServerMachine::Invite(m) = &inv.machine {
                        if !m.has_final() {
                            match &inv.owner {
                                Some(o) => {
                                    let _ = o.send(DialogEvent::Cancelled);
                                }
                                None => inv.cancelled = true,
                            }
                        }
                    }
                    200
                }
                None => 481,
            };
            let bytes = response_bytes(&req, code, None, None, &[], None);
            self.respond(key, code, bytes);
            return;
        }

        if let Some(tag) = to_tag {
            // In-dialog: it belongs to a dialog we have, or it gets 481 (§12.2.2).
            let id = DialogId {
                call_id,
                local_tag: tag,
            };
            match self.dialogs.get(&id) {
                Some(d) => {
                    let owner = d.owner.clone();
                    if let Some(e) = self.server.get_mut(&key) {
                        e.owner = Some(owner.clone());
                        e.dialog = Some(id);
                    }
                    if let Err(mpsc::error::SendError(DialogEvent::Request { req, .. })) =
                        owner.send(DialogEvent::Request { req, tx })
                    {
                        // The call ended between its last event and its unregistering.
                        self.remove_dialog(&DialogId {
                            call_id: message::call_id(&req).unwrap_or_default(),
                            local_tag: message::to_tag(&req).unwrap_or_default(),
                        });
                        let bytes = response_bytes(&req, 481, None, None, &[], None);
                        self.respond(key, 481, bytes);
                    }
                }
                None => {
                    let bytes = response_bytes(&req, 481, None, None, &[], None);
                    self.respond(key, 481, bytes);
                }
            }
            return;
        }

        match self.app.try_send(NewRequest { req, tx }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(nr))
            | Err(mpsc::error::TrySendError::Closed(nr)) => {
                self.stats.overload_503.fetch_add(1, Ordering::Relaxed);
                let bytes = response_bytes(&nr.req, 503, None, None, &[("Retry-After", "1")], None);
                self.respond(key, 503, bytes);
            }
        }
    }

    fn on_ack(&mut self, req: rsip::Request, key: TxKey, call_id: String, to_tag: Option<String>) {
        // ACK of a non-2xx: same branch as the INVITE, absorbed by its transaction.
        if let Some(e) = self.server.get_mut(&key) {
            if let ServerMachine::Invite(m) = &mut e.machine {
                if m.has_final() {
                    let out = m.on_ack();
                    let is_2xx_pending = e
                        .dialog
                        .as_ref()
                        .and_then(|d| self.dialogs.get(d))
                        .is_some_and(|d| d.pending_ack.iter().any(|(_, k)| *k == key));
                    if !is_2xx_pending {
                        self.apply_server(&key, out);
                        return;
                    }
                }
            }
        }
        // ACK of a 2xx: a new transaction of its own, matched to the dialog (§13.3.1.4).
        let Some(tag) = to_tag else { return };
        let id = DialogId {
            call_id,
            local_tag: tag,
        };
        let cseq = message::cseq(&req).map(|c| c.0);
        let Some(d) = self.dialogs.get_mut(&id) else {
            return;
        };
        // No pending 2xx with this CSeq: a stray or repeated ACK, absorbed.
        let Some(pos) = d.pending_ack.iter().position(|(n, _)| Some(*n) == cseq) else {
            return;
        };
        let (_, invite_key) = d.pending_ack.swap_remove(pos);
        let owner = d.owner.clone();
        if let Some(e) = self.server.get_mut(&invite_key) {
            if let ServerMachine::Invite(m) = &mut e.machine {
                m.on_2xx_ack();
            }
        }
        let _ = owner.send(DialogEvent::Ack { req });
    }

    fn respond(&mut self, key: TxKey, code: u16, bytes: Bytes) {
        let Some(e) = self.server.get_mut(&key) else {
            return;
        };
        self.stats.messages.response(Direction::Out, code);
        let out = match &mut e.machine {
            ServerMachine::Invite(m) => {
                let out = m.respond(code, bytes);
                if (200..300).contains(&code) && out.send.is_some() {
                    if let Some(d) = e.dialog.as_ref().and_then(|d| self.dialogs.get_mut(d)) {
                        if !d.pending_ack.iter().any(|(_, k)| *k == key) {
                            d.pending_ack.push((e.cseq, key.clone()));
                        }
                    }
                }
                out
            }
            ServerMachine::NonInvite(m) => m.respond(code, bytes),
        };
        self.apply_server(&key, out);
    }

    fn apply_server(&mut self, key: &TxKey, out: Out) {
        let Some(e) = self.server.get(key) else {
            return;
        };
        if let Some(b) = out.send {
            self.transport
                .send(e.peer.proto, e.reply_to, e.peer.conn, b);
        }
        if let Some(TxNotice::AckTimeout) = out.notice {
            if let Some(o) = &e.owner {
                let _ = o.send(DialogEvent::AckTimeout);
            }
            if let Some(d) = e.dialog.as_ref().and_then(|d| self.dialogs.get_mut(d)) {
                d.pending_ack.retain(|(_, k)| k != key);
            }
        }
        let now = Instant::now();
        for (kind, after) in out.timers.into_iter().flatten() {
            self.queue.schedule(
                now + after,
                TimerRef {
                    key: key.clone(),
                    client: false,
                    kind,
                },
            );
        }
        if out.terminated && self.server.remove(key).is_some() {
            self.stats
                .live_server_transactions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn apply_client(&mut self, key: &TxKey, out: Out, resp: Option<rsip::Response>) {
        let Some(e) = self.client.get(key) else {
            return;
        };
        if let Some(b) = out.send {
            self.transport.send(e.proto, e.to, e.conn, b);
        }
        if let Some(owner) = &e.owner {
            match out.notice {
                Some(TxNotice::Response) if out.pass_up => {
                    if let Some(resp) = resp {
                        let _ = owner.send(DialogEvent::Response { id: e.id, resp });
                    }
                }
                Some(TxNotice::Timeout) => {
                    let _ = owner.send(DialogEvent::Timeout { id: e.id });
                }
                _ => {}
            }
        }
        let now = Instant::now();
        for (kind, after) in out.timers.into_iter().flatten() {
            self.queue.schedule(
                now + after,
                TimerRef {
                    key: key.clone(),
                    client: true,
                    kind,
                },
            );
        }
        if out.terminated && self.client.remove(key).is_some() {
            self.stats
                .live_client_transactions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn on_timer(&mut self, t: TimerRef) {
        if t.client {
            let out = match self.client.get_mut(&t.key) {
                Some(ClientEntry {
                    machine: ClientMachine::Invite(m, _),
                    ..
                }) => m.on_timer(t.kind),
                Some(ClientEntry {
                    machine: ClientMachine::NonInvite(m),
                    ..
                }) => m.on_timer(t.kind),
                None => return,
            };
            self.apply_client(&t.key, out, None);
        } else {
            let out = match self.server.get_mut(&t.key) {
                Some(ServerEntry {
                    machine: ServerMachine::Invite(m),
                    ..
                }) => m.on_timer(t.kind),
                Some(ServerEntry {
                    machine: ServerMachine::NonInvite(m),
                    ..
                }) => m.on_timer(t.kind),
                None => return,
            };
            self.apply_server(&t.key, out);
        }
    }

    fn send_request(
        &mut self,
        req: OutgoingRequest,
        owner: Option<mpsc::UnboundedSender<DialogEvent>>,
        id: u64,
    ) {
        self.stats.messages.request(Direction::Out, req.method);
        let key = client_key(&req.branch, &req.method.to_string());
        let reliable = req.proto.is_reliable();
        let (machine, out) = if req.method == rsip::Method::Invite {
            let (m, out) = ClientInvite::start(req.bytes, reliable, self.timers);
            (ClientMachine::Invite(m, req.request.map(Box::new)), out)
        } else {
            let (m, out) = ClientNonInvite::start(req.bytes, reliable, self.timers);
            (ClientMachine::NonInvite(m), out)
        };
        self.stats
            .client_transactions
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .live_client_transactions
            .fetch_add(1, Ordering::Relaxed);
        self.client.insert(
            key.clone(),
            ClientEntry {
                machine,
                proto: req.proto,
                to: req.to,
                conn: req.conn,
                owner,
                id,
            },
        );
        self.apply_client(&key, out, None);
    }

    fn on_response(&mut self, resp: rsip::Response) {
        self.stats
            .messages
            .response(Direction::In, resp.status_code.code());
        let msg = rsip::SipMessage::Response(resp);
        let Some(via) = message::top_via(&msg) else {
            return;
        };
        let Some((_, method)) = message::cseq(&msg) else {
            return;
        };
        let Some(branch) = via.branch else { return };
        let key = client_key(&branch, &method.to_string());
        let rsip::SipMessage::Response(resp) = msg else {
            return;
        };
        let code = resp.status_code.code();
        let out = match self.client.get_mut(&key) {
            Some(ClientEntry {
                machine: ClientMachine::Invite(m, original),
                ..
            }) => {
                let original = original.as_deref();
                m.on_response(code, || build_ack(original, &resp))
            }
            Some(ClientEntry {
                machine: ClientMachine::NonInvite(m),
                ..
            }) => m.on_response(code),
            // No transaction: a stray response is dropped (RFC 3261 §17.1.3).
            None => return,
        };
        self.apply_client(&key, out, Some(resp));
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): Request-URI, top Via, From,
/// Call-ID and Route of the request; To of the response; CSeq number with method ACK.
fn build_ack(original: Option<&rsip::Request>, resp: &rsip::Response) -> Bytes {
    use std::fmt::Write;
    let Some(req) = original else {
        return Bytes::new();
    };
    let mut out = format!("ACK {} SIP/2.0\r\n", req.uri);
    let mut via_done = false;
    for h in req.headers.iter() {
        match h {
            rsip::Header::Via(_) if !via_done => {
                via_done = true;
                let _ = write!(out, "{h}\r\n");
            }
            rsip::Header::From(_)
            | rsip::Header::CallId(_)
            | rsip::Header::Route(_)
            | rsip::Header::MaxForwards(_) => {
                let _ = write!(out, "{h}\r\n");
            }
            rsip::Header::CSeq(c) => {
                let n = rsip::headers::UntypedHeader::value(c)
                    .split_whitespace()
                    .next()
                    .unwrap_or("1")
                    .to_string();
                let _ = write!(out, "CSeq: {n} ACK\r\n");
            }
            _ => {}
        }
    }
    for h in resp.headers.iter() {
        if let rsip::Header::To(_) = h {
            let _ = write!(out, "{h}\r\n");
        }
    }
    super::outgoing::finish(out, &[], None)
}
