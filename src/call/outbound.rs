//! One outbound INVITE of a bridge (a fork): pivotd as the UAC towards one destination — a
//! registered contact of a device, a carrier, an allowed SIP URI. It follows the INVITE from
//! Trying to a final answer, answers a 401/407 once with the carrier's credentials, ACKs its
//! 2xx, and once answered serves what the callee does in the dialog (BYE, re-INVITE, INFO).
//! The bridge (`bridge.rs`) owns several of these and decides which one wins.
//!
//! Every fork of a bridge shares one event channel: responses are told apart by their client
//! transaction id, requests by their Call-ID (each fork has its own).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::targets::Fork;
use crate::media::dtmf::info_digit;
use crate::media::sdp::{self, Negotiated};
use crate::sip::endpoint::{DialogEvent, DialogId, Endpoint, OutgoingRequest, ServerTx};
use crate::sip::message;
use crate::sip::outgoing::response_bytes;
use crate::sip::uac::{InviteSpec, OutboundInvite, RetryError};
use crate::sip::{ALLOW, CAPABILITY_HEADERS};

/// Where a fork's INVITE stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ForkState {
    /// Sent; no provisional response yet (a CANCEL must wait for one, RFC 3261 §9.1).
    Calling,
    /// A provisional response came.
    Ringing,
    /// Answered: the 2xx, kept for the in-dialog requests we send (ACK, BYE).
    Answered(Box<rsip::Response>),
    /// Ended without being bridged (a final non-2xx, a timeout, cancelled) or hung up.
    Done,
}

/// What a fork's event means to the bridge.
#[derive(Debug)]
pub(super) enum ForkNews {
    Nothing,
    /// 180/183; `early` when it carried SDP (early media from the callee).
    Ringing {
        early: Option<Negotiated>,
    },
    /// 2xx with the callee's answer (None: no usable SDP in the 2xx).
    Answered {
        answer: Option<Negotiated>,
    },
    /// A final failure with its SIP code (408 for a timeout).
    Failed(u16),
    /// A DTMF key the callee sent by SIP INFO.
    Digit(char),
    /// The callee's re-INVITE changed its media (address, codec, direction).
    Media(Negotiated),
}

/// One outbound INVITE and, once answered, its dialog.
pub(super) struct OutboundLeg {
    endpoint: Arc<Endpoint>,
    pub(super) fork: Fork,
    invite: OutboundInvite,
    /// The client transaction id of the INVITE now in flight (it changes on a retry).
    tx_id: u64,
    pub(super) state: ForkState,
    /// CANCEL asked for before any provisional response: sent when one arrives (§9.1).
    cancel_pending: bool,
    /// Our SDP offer, also our answer to a callee's re-INVITE.
    offer: String,
    /// The ACK of the 2xx, resent when the 2xx is retransmitted (§13.2.2.4).
    ack: Option<OutgoingRequest>,
    /// The last CSeq the callee used in the dialog.
    remote_cseq: Option<u32>,
    /// The CSeq of our last request in the dialog (the INVITE's, then BYE, re-INVITEs).
    local_cseq: u32,
    /// Our re-INVITE in flight (hold, unhold), by client transaction id and CSeq.
    reinvite: Option<(u64, u32)>,
    events: mpsc::UnboundedSender<DialogEvent>,
    registered: bool,
}

impl OutboundLeg {
    /// Sends the INVITE of `fork` with `offer`; its events go to `events`.
    pub(super) fn start(
        endpoint: Arc<Endpoint>,
        fork: Fork,
        spec: InviteSpec,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> OutboundLeg {
        let offer = spec.sdp.clone().unwrap_or_default();
        let invite = OutboundInvite::new(spec);
        // The callee's in-dialog requests (its BYE) name our From tag as their To tag.
        endpoint.register_dialog(
            DialogId {
                call_id: invite.call_id.clone(),
                local_tag: invite.local_tag.clone(),
            },
            events.clone(),
            None,
        );
        let tx_id = endpoint.send_request(&invite.call_id, invite.request(), Some(events.clone()));
        tracing::info!(fork = %fork.label, call_id = %invite.call_id, "bridge: INVITE sent");
        OutboundLeg {
            endpoint,
            fork,
            invite,
            tx_id,
            state: ForkState::Calling,
            cancel_pending: false,
            offer,
            ack: None,
            remote_cseq: None,
            local_cseq: 1,
            reinvite: None,
            events,
            registered: true,
        }
    }

    pub(super) fn call_id(&self) -> &str {
        &self.invite.call_id
    }

    /// Whether the event is this fork's.
    pub(super) fn owns(&self, ev: &DialogEvent) -> bool {
        match ev {
            DialogEvent::Response { id, .. } | DialogEvent::Timeout { id } => {
                *id == self.tx_id || self.reinvite.is_some_and(|(r, _)| r == *id)
            }
            DialogEvent::Request { req, .. } => {
                message::header_str(req, "Call-ID") == Some(self.invite.call_id.as_str())
            }
            _ => false,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == ForkState::Done
    }

    pub(super) fn is_answered(&self) -> bool {
        matches!(self.state, ForkState::Answered(_))
    }

    /// One of this fork's events.
    pub(super) fn on_event(&mut self, ev: DialogEvent) -> ForkNews {
        match ev {
            DialogEvent::Response { id, resp } if self.reinvite.is_some_and(|(r, _)| r == id) => {
                self.on_reinvite_response(&resp);
                ForkNews::Nothing
            }
            DialogEvent::Timeout { id } if self.reinvite.is_some_and(|(r, _)| r == id) => {
                self.reinvite = None;
                ForkNews::Nothing
            }
            DialogEvent::Response { resp, .. } => self.on_response(resp),
            DialogEvent::Timeout { .. } => {
                if matches!(self.state, ForkState::Calling | ForkState::Ringing) {
                    self.end();
                    ForkNews::Failed(408)
                } else {
                    ForkNews::Nothing
                }
            }
            DialogEvent::Request { req, tx } => self.on_request(req, tx),
            _ => ForkNews::Nothing,
        }
    }

    fn on_response(&mut self, resp: rsip::Response) -> ForkNews {
        let code = resp.status_code.code();
        match (code, &self.state) {
            (100, _) => ForkNews::Nothing,
            (101..=199, ForkState::Calling | ForkState::Ringing) => {
                self.state = ForkState::Ringing;
                if self.cancel_pending {
                    self.send_cancel();
                    return ForkNews::Nothing;
                }
                ForkNews::Ringing {
                    early: negotiated(&resp),
                }
            }
            (200..=299, ForkState::Answered(_)) => {
                // A retransmitted 2xx: our ACK was lost.
                if let Some(ack) = &self.ack {
                    self.send_as_is(ack);
                }
                ForkNews::Nothing
            }
            (200..=299, ForkState::Calling | ForkState::Ringing) => {
                let Some(ack) = self.invite.ack_for_2xx(&resp) else {
                    tracing::warn!(fork = %self.fork.label, "a 2xx without a usable Contact: treated as a failure");
                    self.end();
                    return ForkNews::Failed(502);
                };
                self.send_as_is(&ack);
                self.ack = Some(ack);
                self.local_cseq = self.invite.cseq();
                let answer = negotiated(&resp);
                self.state = ForkState::Answered(Box::new(resp));
                if self.cancel_pending {
                    // The CANCEL crossed the 2xx: the call was answered, so hang it up.
                    self.hang_up();
                    return ForkNews::Nothing;
                }
                ForkNews::Answered { answer }
            }
            (401 | 407, ForkState::Calling | ForkState::Ringing) if !self.cancel_pending => {
                let Some((user, password)) = self.fork.credentials.clone() else {
                    self.end();
                    return ForkNews::Failed(code);
                };
                match self.invite.retry_with_credentials(&resp, &user, &password) {
                    Ok(req) => {
                        self.tx_id = self.endpoint.send_request(
                            &self.invite.call_id,
                            req,
                            Some(self.events.clone()),
                        );
                        self.state = ForkState::Calling;
                        ForkNews::Nothing
                    }
                    Err(RetryError::NoChallenge | RetryError::Refused) => {
                        tracing::warn!(fork = %self.fork.label, code, "the carrier refused our credentials");
                        self.end();
                        ForkNews::Failed(code)
                    }
                }
            }
            (300..=699, ForkState::Calling | ForkState::Ringing) => {
                self.end();
                ForkNews::Failed(code)
            }
            _ => ForkNews::Nothing,
        }
    }

    fn on_request(&mut self, req: rsip::Request, tx: ServerTx) -> ForkNews {
        let reply = |code: u16, extra: &[(&str, &str)], body: Option<(&str, &[u8])>| {
            tx.respond(code, response_bytes(&req, code, None, None, extra, body));
        };
        let cseq = message::cseq(&req).map(|c| c.0).unwrap_or(0);
        if self.remote_cseq.is_some_and(|last| cseq <= last) && req.method != rsip::Method::Ack {
            reply(500, &[("Retry-After", "1")], None);
            return ForkNews::Nothing;
        }
        self.remote_cseq = Some(cseq);
        if !self.is_answered() {
            reply(481, &[], None);
            return ForkNews::Nothing;
        }
        match req.method {
            rsip::Method::Bye => {
                // The callee hung up: the fork is done, which the bridge reads as the end.
                reply(200, &[], None);
                self.end();
                ForkNews::Nothing
            }
            rsip::Method::Invite => {
                // A re-INVITE (hold, a codec change): answered locally with our side as it
                // stands; the bridge follows what changed.
                let news = message::sdp_body(&req)
                    .ok()
                    .flatten()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|b| sdp::parse(b).ok())
                    .and_then(|o| sdp::negotiate(&o).ok());
                let contact = self.contact();
                reply(
                    200,
                    &[("Contact", &contact), ("Allow", ALLOW)],
                    Some(("application/sdp", self.offer.as_bytes())),
                );
                news.map_or(ForkNews::Nothing, ForkNews::Media)
            }
            rsip::Method::Info => {
                let ctype = message::header_value(&req, "Content-Type").unwrap_or_default();
                let digit = info_digit(&ctype, &req.body);
                reply(200, &[], None);
                digit.map_or(ForkNews::Nothing, ForkNews::Digit)
            }
            rsip::Method::Options => {
                reply(200, &CAPABILITY_HEADERS, None);
                ForkNews::Nothing
            }
            rsip::Method::Ack => ForkNews::Nothing,
            _ => {
                reply(405, &[("Allow", ALLOW)], None);
                ForkNews::Nothing
            }
        }
    }

    fn contact(&self) -> String {
        crate::sip::dialog::contact_value(
            &self.invite.spec().contact_user,
            &self.invite.spec().local_host,
            &self.invite.spec().peer,
        )
    }

    /// Stops the fork: CANCEL while it rings (after a provisional response, §9.1), BYE once
    /// answered.
    pub(super) fn stop(&mut self) {
        match self.state {
            ForkState::Calling => self.cancel_pending = true,
            ForkState::Ringing => {
                self.cancel_pending = true;
                self.send_cancel();
            }
            ForkState::Answered(_) => self.hang_up(),
            ForkState::Done => {}
        }
    }

    /// Whether the fork still waits for something after [`OutboundLeg::stop`] (the 487 of a
    /// CANCEL, or a 2xx that crossed it and must be hung up).
    pub(super) fn settling(&self) -> bool {
        matches!(self.state, ForkState::Calling | ForkState::Ringing)
    }

    fn send_cancel(&mut self) {
        let cancel = self.invite.cancel();
        // Its own non-INVITE transaction; the INVITE's answer (487) comes to the INVITE's.
        self.endpoint
            .send_request(&self.invite.call_id, cancel, None);
    }

    fn hang_up(&mut self) {
        self.local_cseq += 1;
        if let ForkState::Answered(resp) = &self.state {
            if let Some(bye) =
                self.invite
                    .dialog_request(rsip::Method::Bye, self.local_cseq, resp, None)
            {
                self.endpoint.send_request(&self.invite.call_id, bye, None);
            }
        }
        self.end();
    }

    /// A re-INVITE with `sdp` (our offer with a new direction: hold, unhold), once answered;
    /// it also becomes our answer to the callee's own re-INVITEs. One at a time (RFC 3261
    /// §14.1): a change asked while one is in flight is sent when it ends.
    pub(super) fn reinvite(&mut self, sdp: String) -> bool {
        if self.reinvite.is_some() {
            return false;
        }
        let ForkState::Answered(resp) = &self.state else {
            return false;
        };
        let cseq = self.local_cseq + 1;
        let Some(req) = self
            .invite
            .dialog_request(rsip::Method::Invite, cseq, resp, Some(&sdp))
        else {
            return false;
        };
        self.local_cseq = cseq;
        let id = self
            .endpoint
            .send_request(&self.invite.call_id, req, Some(self.events.clone()));
        self.reinvite = Some((id, cseq));
        self.offer = sdp;
        true
    }

    /// The answer to our re-INVITE: a 2xx is acknowledged (its own ACK, §13.2.2.4); a
    /// failure leaves the media as it was (the transaction ACKs it).
    fn on_reinvite_response(&mut self, resp: &rsip::Response) {
        let code = resp.status_code.code();
        if code < 200 {
            return;
        }
        let Some((_, cseq)) = self.reinvite.take() else {
            return;
        };
        if code < 300 {
            if let ForkState::Answered(first) = &self.state {
                if let Some(ack) = self
                    .invite
                    .dialog_request(rsip::Method::Ack, cseq, first, None)
                {
                    self.send_as_is(&ack);
                }
            }
        } else {
            tracing::info!(code, "bridge: the callee refused our re-INVITE");
        }
    }

    /// Whether a re-INVITE of ours is in flight.
    pub(super) fn reinviting(&self) -> bool {
        self.reinvite.is_some()
    }

    /// A request without a transaction of its own (the ACK of a 2xx).
    fn send_as_is(&self, req: &OutgoingRequest) {
        self.endpoint
            .transport()
            .send(req.proto, req.to, req.conn, req.bytes.clone());
    }

    fn end(&mut self) {
        self.state = ForkState::Done;
        self.unregister();
    }

    fn unregister(&mut self) {
        if self.registered {
            self.registered = false;
            self.endpoint.unregister_dialog(DialogId {
                call_id: self.invite.call_id.clone(),
                local_tag: self.invite.local_tag.clone(),
            });
        }
    }
}

impl Drop for OutboundLeg {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The callee's session description in a response, negotiated as an answer to our offer.
fn negotiated(resp: &rsip::Response) -> Option<Negotiated> {
    let body = message::response_sdp_body(resp).ok()??;
    let text = std::str::from_utf8(body).ok()?;
    sdp::negotiate_answer(&sdp::parse(text).ok()?).ok()
}
