//! The SIP endpoint: routes what the transport receives to transactions and dialogs.
//!
//! Work is split into shards by Call-ID, each a task that owns its transactions, dialogs and
//! timer heap outright: everything about one call lands in one shard, so there is no lock on
//! the message path and one timer service per shard instead of a task per transaction.
//!
//! - `shard.rs`: the shard task, the dispatcher that picks a message's shard, dialog routing;
//! - `server_tx.rs`: the server transaction table (requests in, responses out);
//! - `client_tx.rs`: client transactions (requests pivotd sends);
//! - `key.rs`: the typed transaction keys;
//! - `stats.rs`: what the endpoint counts.
//!
//! The endpoint never calls the application: new requests go up on the [`NewRequest`] queue
//! that [`Endpoint::start`] returns, everything else about a dialog on the [`DialogEvent`]
//! channel its owner registered; answers come back down through [`ServerTx::respond`] and
//! [`Endpoint::send_request`].

mod client_tx;
mod key;
mod server_tx;
mod shard;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::timer::Timers;
use super::transport::{Peer, Proto, Transport, TransportConfig, TransportError};
use key::ServerKeyRef;
use shard::{shard_of, Dispatcher, Shard, ShardCmd};

pub use stats::{Direction, EndpointStats, SipCounters, METHODS};

/// Endpoint settings.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub transport: TransportConfig,
    pub timers: Timers,
    /// Number of shards (tasks); one per core is right.
    pub shards: usize,
    /// Queue of new requests for the application; beyond it requests get 503.
    pub app_queue: usize,
    /// Whether the box is overloaded (new INVITEs then get 503 in the shard).
    pub load: Arc<super::overload::LoadGate>,
}

/// A request that starts something: out of dialog (INVITE, OPTIONS, REGISTER …).
#[derive(Debug)]
pub struct NewRequest {
    pub req: rsip::Request,
    pub tx: ServerTx,
    /// The Call-ID, read once by the shard when the message was parsed.
    pub call_id: String,
    /// Who sent it (`SourceGuard::caller`: behind a trusted proxy, the hop before it),
    /// decided once by the shard.
    pub caller: SocketAddr,
}

/// What a dialog's owner (a call) hears from the endpoint.
#[derive(Debug)]
// The messages and the transaction are boxed: an unbounded channel's first block holds 32
// slots of this enum per call; an unboxed rsip message made that block 11 KB of every call's
// memory, an unboxed `ServerTx` 4.6 KB (bench/README.md "Memory per call").
pub enum DialogEvent {
    /// An in-dialog request (BYE, re-INVITE, INFO, OPTIONS …) with its transaction.
    Request {
        req: Box<rsip::Request>,
        tx: Box<ServerTx>,
    },
    /// The ACK of our 2xx (first one only).
    Ack { req: Box<rsip::Request> },
    /// A CANCEL matched the INVITE before its final response; 200 was sent to the CANCEL.
    Cancelled,
    /// Our 2xx to the INVITE was never acknowledged (Timer H).
    AckTimeout,
    /// A response to a request we sent (client transaction `id`).
    Response { id: u64, resp: Box<rsip::Response> },
    /// No final response to client transaction `id` (Timer B / F).
    Timeout { id: u64 },
}

/// Identifies a dialog in its shard: Call-ID and our tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
}

/// Handle to a server transaction: the transaction user answers through it.
#[derive(Clone, Debug)]
pub struct ServerTx {
    key: ServerKeyRef,
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
#[derive(Clone, Debug)]
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

impl OutgoingRequest {
    /// `bytes` (a request of `method` with Via `branch`) for `peer`'s transport, address and
    /// connection. An INVITE keeps itself as a message too: its transaction builds the ACK of
    /// a non-2xx from it (RFC 3261 §17.1.1.3).
    pub fn new(method: rsip::Method, branch: String, bytes: Bytes, peer: &Peer) -> Self {
        let request = if method == rsip::Method::Invite {
            match super::message::parse(&bytes) {
                Ok(rsip::SipMessage::Request(r)) => Some(r),
                _ => None,
            }
        } else {
            None
        };
        OutgoingRequest {
            method,
            branch,
            bytes,
            proto: peer.proto,
            to: peer.remote,
            conn: peer.conn,
            request,
        }
    }
}

/// The SIP endpoint.
pub struct Endpoint {
    shards: Vec<mpsc::UnboundedSender<ShardCmd>>,
    transport: Arc<Transport>,
    next_client_id: AtomicU64,
    pub stats: Arc<EndpointStats>,
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
            let shard = Shard::new(
                senders.clone(),
                i,
                transport.clone(),
                cfg.timers,
                app_tx.clone(),
                stats.clone(),
                cfg.load.clone(),
            );
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

    /// Sends a request that has no transaction of its own (the ACK of a 2xx, §13.2.2.4):
    /// once, as it is; the 2xx's retransmissions are answered by sending it again.
    pub fn send_as_is(&self, req: &OutgoingRequest) {
        self.transport
            .send(req.proto, req.to, req.conn, req.bytes.clone());
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

#[cfg(test)]
mod tests;
