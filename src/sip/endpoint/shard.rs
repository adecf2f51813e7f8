//! A shard: one task owning the transactions, dialogs and timers of the calls whose Call-ID
//! hashes to it, and the dispatcher that picks the shard of each message the transport reads.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client_tx::ClientEntry;
use super::key::{ClientKeyRef, ServerKeyRef};
use super::server_tx::{ServerEntry, ServerMachine};
use super::{DialogEvent, DialogId, Direction, EndpointStats, NewRequest, OutgoingRequest};
use crate::sip::message;
use crate::sip::outgoing::response_bytes;
use crate::sip::overload::LoadGate;
use crate::sip::timer::{TimerKind, TimerQueue, Timers};
use crate::sip::transport::{Incoming, IncomingHandler, Peer, Refused, Transport};

/// A parsed message in its shard, with its Call-ID, read from it once, after parsing: the
/// shard was checked with it, and the transaction key and the dialog lookup use it.
#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) msg: rsip::SipMessage,
    pub(super) call_id: String,
    pub(super) peer: Peer,
    /// Where responses go (RFC 3261 §18.2.2 with RFC 3581 rport).
    pub(super) reply_to: SocketAddr,
    /// When it arrived (its queue delay decides whether a new INVITE is refused for load).
    pub(super) received: std::time::Instant,
}

/// What a shard's task is asked to do.
#[derive(Debug)]
pub(super) enum ShardCmd {
    /// A framed message to parse here.
    Raw {
        data: Bytes,
        peer: Peer,
        received: std::time::Instant,
    },
    /// A parsed message (forwarded by the shard that parsed it, when it belongs here).
    Inbound(Inbound),
    /// A request answered statelessly.
    Refused(Refused),
    Respond {
        key: ServerKeyRef,
        code: u16,
        bytes: Bytes,
    },
    Register {
        id: DialogId,
        owner: mpsc::UnboundedSender<DialogEvent>,
        invite: Option<ServerKeyRef>,
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

impl ShardCmd {
    /// What the transport parsed, with the Call-ID of a message read here, once.
    fn parsed(incoming: Incoming, received: std::time::Instant) -> ShardCmd {
        match incoming {
            Incoming::Message {
                msg,
                peer,
                reply_to,
            } => ShardCmd::Inbound(Inbound {
                call_id: message::call_id(&msg).unwrap_or_default(),
                msg,
                peer,
                reply_to,
                received,
            }),
            Incoming::Refused(r) => ShardCmd::Refused(r),
        }
    }
}

/// The transport's [`IncomingHandler`]: sends each message to the shard of its Call-ID.
pub(super) struct Dispatcher {
    pub(super) shards: Vec<mpsc::UnboundedSender<ShardCmd>>,
}

/// The shard of a Call-ID among `n`.
pub(super) fn shard_of(call_id: &[u8], n: usize) -> usize {
    let mut h = DefaultHasher::new();
    call_id.hash(&mut h);
    (h.finish() as usize) % n.max(1)
}

impl IncomingHandler for Dispatcher {
    /// Stateless answers need no shard's state: the first shard sends them.
    fn refused(&self, refused: Refused) {
        if let Some(s) = self.shards.first() {
            let _ = s.send(ShardCmd::Refused(refused));
        }
    }

    /// Picks the shard before parsing, on the receiving task, from a light scan of the
    /// header lines ([`Transport::quick_call_id`]): parsing is the costly part, and it runs
    /// in the shards, in parallel. The scan reads a Call-ID written on one line; the parser
    /// also reads a folded one (continued on the next line), so the shard reads the Call-ID
    /// again once the message is parsed, sends the rare message the scan misplaced to its
    /// right shard, and carries that Call-ID from there on.
    fn incoming_raw(&self, data: Bytes, peer: Peer, received: std::time::Instant) {
        let idx = shard_of(Transport::quick_call_id(&data), self.shards.len());
        if let Some(s) = self.shards.get(idx) {
            let _ = s.send(ShardCmd::Raw {
                data,
                peer,
                received,
            });
        }
    }
}

/// A dialog registered in its shard.
pub(super) struct DialogEntry {
    pub(super) owner: mpsc::UnboundedSender<DialogEvent>,
    /// The INVITE transaction whose 2xx awaits its ACK, with its CSeq.
    /// More than one when a re-INVITE's 2xx goes out before the ACK of the previous 2xx
    /// came in (UDP may reorder the caller's ACK and its next re-INVITE): each is matched
    /// by CSeq, or a late ACK would be lost and its 2xx retransmitted until Timer H.
    pub(super) pending_ack: Vec<(u32, ServerKeyRef)>,
}

/// A timer in the shard's queue: which transaction, which of its timers.
pub(super) enum TimerRef {
    Server(ServerKeyRef, TimerKind),
    Client(ClientKeyRef, TimerKind),
}

/// One shard's state, owned by its task: no lock.
pub(super) struct Shard {
    pub(super) me: mpsc::UnboundedSender<ShardCmd>,
    /// Every shard (for messages that belong elsewhere) and this one's place among them.
    pub(super) all: Vec<mpsc::UnboundedSender<ShardCmd>>,
    pub(super) index: usize,
    pub(super) transport: Arc<Transport>,
    pub(super) timers: Timers,
    pub(super) app: mpsc::Sender<NewRequest>,
    pub(super) server: HashMap<ServerKeyRef, ServerEntry>,
    pub(super) client: HashMap<ClientKeyRef, ClientEntry>,
    pub(super) dialogs: HashMap<DialogId, DialogEntry>,
    pub(super) queue: TimerQueue<TimerRef>,
    pub(super) stats: Arc<EndpointStats>,
    /// Whether the box is overloaded; fed with each message's queue delay.
    pub(super) load: Arc<LoadGate>,
}

impl Shard {
    /// Shard `index` of `all`, before its task runs.
    pub(super) fn new(
        all: Vec<mpsc::UnboundedSender<ShardCmd>>,
        index: usize,
        transport: Arc<Transport>,
        timers: Timers,
        app: mpsc::Sender<NewRequest>,
        stats: Arc<EndpointStats>,
        load: Arc<LoadGate>,
    ) -> Shard {
        Shard {
            me: all[index].clone(),
            all,
            index,
            transport,
            timers,
            app,
            server: HashMap::new(),
            client: HashMap::new(),
            dialogs: HashMap::new(),
            queue: TimerQueue::default(),
            stats,
            load,
        }
    }

    /// The shard's task: its commands in order, and its timers when due.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ShardCmd>) {
        loop {
            let deadline = self.queue.next_deadline();
            tokio::select! {
                biased;
                // A panic costs the one message or timer that caused it, never the shard
                // (whose death would silence every call hashed to it).
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        let _ = crate::health::catch(|| self.handle(cmd));
                    }
                    None => break,
                },
                _ = crate::sip::timer::sleep_until(deadline) => {
                    let now = Instant::now();
                    while let Some(t) = self.queue.pop_due(now) {
                        let _ = crate::health::catch(|| self.on_timer(t));
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

    /// One command, on the shard's task.
    fn handle(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Raw {
                data,
                peer,
                received,
            } => {
                self.load.observe(received.elapsed());
                let Some(incoming) = self.transport.parse_incoming(&data, peer) else {
                    return;
                };
                let cmd = ShardCmd::parsed(incoming, received);
                // The light Call-ID scan and the parser disagree only on odd messages (a
                // folded Call-ID): send those where the rest of their call lives.
                if let ShardCmd::Inbound(m) = &cmd {
                    let idx = shard_of(m.call_id.as_bytes(), self.all.len());
                    if idx != self.index {
                        if let Some(s) = self.all.get(idx) {
                            let _ = s.send(cmd);
                        }
                        return;
                    }
                }
                self.handle(cmd);
            }
            ShardCmd::Inbound(Inbound {
                msg: rsip::SipMessage::Request(req),
                call_id,
                peer,
                reply_to,
                received,
            }) => self.on_request(req, call_id, peer, reply_to, received),
            ShardCmd::Inbound(Inbound {
                msg: rsip::SipMessage::Response(resp),
                ..
            }) => self.on_response(resp),
            ShardCmd::Refused(r) => {
                // Stateless (RFC 3261 §8.2): no transaction, and no answer to an ACK.
                if r.request.method != rsip::Method::Ack {
                    let bytes = response_bytes(
                        &r.request,
                        r.code,
                        Some(r.reason.as_ref()),
                        None,
                        r.headers,
                        None,
                    );
                    self.stats.messages.response(Direction::Out, r.code);
                    let peer = r.peer;
                    self.transport
                        .send(peer.proto, r.reply_to, peer.conn, bytes);
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

    /// Forgets a dialog (its call ended, or its owner is gone).
    pub(super) fn remove_dialog(&mut self, id: &DialogId) {
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

    fn on_timer(&mut self, t: TimerRef) {
        match t {
            TimerRef::Server(key, kind) => self.server_timer(&key, kind),
            TimerRef::Client(key, kind) => self.client_timer(&key, kind),
        }
    }
}
