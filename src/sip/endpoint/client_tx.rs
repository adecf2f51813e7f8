//! Client transactions (RFC 3261 §17.1): requests pivotd sends, their responses and timeouts
//! passed to the owner, and the ACK of a non-2xx final response.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::key::{ClientKey, ClientKeyRef, KeyMethod};
use super::shard::{Shard, TimerRef};
use super::{DialogEvent, Direction, OutgoingRequest};
use crate::sip::timer::TimerKind;
use crate::sip::transaction::client_inv::ClientInvite;
use crate::sip::transaction::client_noninv::ClientNonInvite;
use crate::sip::transaction::{Out, TxNotice};
use crate::sip::transport::Proto;

/// The state machine of a client transaction (RFC 3261 §17.1.1, §17.1.2).
pub(super) enum ClientMachine {
    // Boxed: the request is large and only INVITE transactions keep it.
    Invite(ClientInvite, Option<Box<rsip::Request>>),
    NonInvite(ClientNonInvite),
}

/// A client transaction: its machine, where it sends, who hears of it.
pub(super) struct ClientEntry {
    pub(super) machine: ClientMachine,
    pub(super) proto: Proto,
    pub(super) to: SocketAddr,
    pub(super) conn: Option<u64>,
    pub(super) owner: Option<mpsc::UnboundedSender<DialogEvent>>,
    pub(super) id: u64,
}

impl Shard {
    /// Starts a client transaction for a request pivotd sends; `id` names it to `owner`.
    pub(super) fn send_request(
        &mut self,
        req: OutgoingRequest,
        owner: Option<mpsc::UnboundedSender<DialogEvent>>,
        id: u64,
    ) {
        self.stats.messages.request(Direction::Out, req.method);
        let key = ClientKeyRef::new(ClientKey {
            branch: req.branch,
            method: KeyMethod(req.method),
        });
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

    /// A response in: to its client transaction, or dropped when it has none.
    pub(super) fn on_response(&mut self, resp: rsip::Response) {
        self.stats
            .messages
            .response(Direction::In, resp.status_code.code());
        let Some(key) = ClientKey::of_response(&resp) else {
            return;
        };
        let key = ClientKeyRef::new(key);
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

    /// Carries out what a client transaction decided: send, pass the response or the
    /// timeout up, arm timers, end.
    pub(super) fn apply_client(
        &mut self,
        key: &ClientKeyRef,
        out: Out,
        resp: Option<rsip::Response>,
    ) {
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
                        let _ = owner.send(DialogEvent::Response {
                            id: e.id,
                            resp: Box::new(resp),
                        });
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
            self.queue
                .schedule(now + after, TimerRef::Client(key.clone(), kind));
        }
        if out.terminated && self.client.remove(key).is_some() {
            self.stats
                .live_client_transactions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A client transaction's timer fired.
    pub(super) fn client_timer(&mut self, key: &ClientKeyRef, kind: TimerKind) {
        let out = match self.client.get_mut(key) {
            Some(ClientEntry {
                machine: ClientMachine::Invite(m, _),
                ..
            }) => m.on_timer(kind),
            Some(ClientEntry {
                machine: ClientMachine::NonInvite(m),
                ..
            }) => m.on_timer(kind),
            None => return,
        };
        self.apply_client(key, out, None);
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
    crate::sip::outgoing::finish(out, &[], None)
}
