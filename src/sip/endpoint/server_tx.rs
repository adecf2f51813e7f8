//! The server transaction table (RFC 3261 §17.2): requests in, retransmissions absorbed,
//! CANCEL matched to its INVITE, the ACK of a 2xx matched to its dialog, responses out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::key::{ServerKey, ServerKeyRef};
use super::shard::{Shard, TimerRef};
use super::{DialogEvent, DialogId, Direction, NewRequest, ServerTx};
use crate::sip::message;
use crate::sip::outgoing::{random_token, response_bytes};
use crate::sip::timer::TimerKind;
use crate::sip::transaction::server_inv::ServerInvite;
use crate::sip::transaction::server_noninv::ServerNonInvite;
use crate::sip::transaction::{Out, TxNotice};
use crate::sip::transport::Peer;

/// The state machine of a server transaction (RFC 3261 §17.2.1, §17.2.2).
pub(super) enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

/// A server transaction: its machine, where its responses go, its owner once known.
pub(super) struct ServerEntry {
    pub(super) machine: ServerMachine,
    pub(super) peer: Peer,
    pub(super) reply_to: SocketAddr,
    pub(super) owner: Option<mpsc::UnboundedSender<DialogEvent>>,
    pub(super) dialog: Option<DialogId>,
    pub(super) cseq: u32,
    /// A CANCEL came before the owner registered: tell it when it does.
    pub(super) cancelled: bool,
}

impl Shard {
    /// A request in, `call_id` its Call-ID, `received` when it arrived: a retransmission is
    /// absorbed, an ACK or a CANCEL matched, an in-dialog request passed to the dialog's
    /// owner, a new one queued for the application (or answered 503 when the box is
    /// overloaded or the queue is full).
    pub(super) fn on_request(
        &mut self,
        req: rsip::Request,
        call_id: String,
        peer: Peer,
        reply_to: SocketAddr,
        received: std::time::Instant,
    ) {
        let method = req.method;
        self.stats.messages.request(Direction::In, method);
        let sources = self.transport.sources();
        let caller = sources.caller(&req, peer.remote);
        // Through a trusted proxy the transport let the message pass unlimited: the caller's
        // own rate and block apply here, once its address is known.
        if caller != peer.remote && sources.admit_message(caller.ip()).is_err() {
            tracing::debug!(source = %caller, proxy = %peer.remote, "request dropped for its caller");
            return;
        }
        // A scanner is not answered at all, and its address is blocked at the transport.
        let user_agent = message::header_str(&req, "User-Agent");
        if let Some(ua) = user_agent {
            if sources.screen_scanner(caller.ip(), ua) {
                tracing::debug!(source = %caller, "scanner request dropped");
                return;
            }
        }
        let to_tag = message::to_tag(&req);
        let Some(key) = ServerKey::of_request(&req, &call_id) else {
            return;
        };
        let key = ServerKeyRef::new(key);

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

        // A new call while the box is overloaded (`sip::overload` decides): 503 here, before
        // the 100 Trying, admission's queue, a call task or an RTP port. Its transaction
        // answers the INVITE's retransmissions with the same 503 and absorbs the ACK.
        if method == rsip::Method::Invite
            && to_tag.is_none()
            && self.load.refuse_invite(received.elapsed())
        {
            let tag = random_token(10);
            let bytes = response_bytes(
                &req,
                503,
                Some("Overloaded"),
                Some(&tag),
                &[("Retry-After", self.load.retry_after())],
                None,
            );
            self.respond(key, 503, bytes);
            return;
        }

        if method == rsip::Method::Invite {
            // §17.2.1: a 100 Trying at once stops the client's retransmissions.
            let trying = response_bytes(&req, 100, None, None, &[], None);
            self.respond(key.clone(), 100, trying);
        }

        if method == rsip::Method::Cancel {
            let invite_key = key.with_method(rsip::Method::Invite);
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
                        e.dialog = Some(id.clone());
                    }
                    if let Err(mpsc::error::SendError(DialogEvent::Request { req, .. })) = owner
                        .send(DialogEvent::Request {
                            req: Box::new(req),
                            tx: Box::new(tx),
                        })
                    {
                        // The call ended between its last event and its unregistering.
                        self.remove_dialog(&id);
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

        match self.app.try_send(NewRequest {
            req,
            tx,
            call_id,
            caller,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(nr))
            | Err(mpsc::error::TrySendError::Closed(nr)) => {
                self.stats.overload_503.fetch_add(1, Ordering::Relaxed);
                let bytes = response_bytes(&nr.req, 503, None, None, &[("Retry-After", "1")], None);
                self.respond(key, 503, bytes);
            }
        }
    }

    /// An ACK: absorbed by the INVITE transaction of a non-2xx, or matched by CSeq to the 2xx
    /// its dialog awaits an ACK for (§13.3.1.4) and passed to the owner; otherwise dropped.
    fn on_ack(
        &mut self,
        req: rsip::Request,
        key: ServerKeyRef,
        call_id: String,
        to_tag: Option<String>,
    ) {
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
        let _ = owner.send(DialogEvent::Ack { req: Box::new(req) });
    }

    /// A response from the transaction user, through its transaction (which retransmits it).
    pub(super) fn respond(&mut self, key: ServerKeyRef, code: u16, bytes: Bytes) {
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

    /// Carries out what a server transaction decided: send, tell the owner, arm timers, end.
    pub(super) fn apply_server(&mut self, key: &ServerKeyRef, out: Out) {
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
            self.queue
                .schedule(now + after, TimerRef::Server(key.clone(), kind));
        }
        if out.terminated && self.server.remove(key).is_some() {
            self.stats
                .live_server_transactions
                .fetch_sub(1, Ordering::Relaxed);
        } else if let Some(e) = self.server.get_mut(key) {
            // A finished transaction lingers (Timers J, I, L: up to 64·T1) to answer
            // retransmissions; it lets go of the call's channel at once, so an ended call's
            // memory is not held that long.
            let may_notify = match &e.machine {
                ServerMachine::Invite(m) => m.may_notify(),
                ServerMachine::NonInvite(m) => m.may_notify(),
            };
            if !may_notify {
                e.owner = None;
            }
        }
    }

    /// A server transaction's timer fired.
    pub(super) fn server_timer(&mut self, key: &ServerKeyRef, kind: TimerKind) {
        let out = match self.server.get_mut(key) {
            Some(ServerEntry {
                machine: ServerMachine::Invite(m),
                ..
            }) => m.on_timer(kind),
            Some(ServerEntry {
                machine: ServerMachine::NonInvite(m),
                ..
            }) => m.on_timer(kind),
            None => return,
        };
        self.apply_server(key, out);
    }
}
