//! One outbound INVITE of a bridge (a fork): pivotd as the UAC towards one destination — a
//! registered contact of a device, a carrier, an allowed SIP URI. It follows the INVITE from
//! Trying to a final answer, answers a 401/407 once with the carrier's credentials, ACKs its
//! 2xx, and once answered serves what the callee does in the dialog (BYE, re-INVITE, INFO)
//! and tells the callee of the caller's hold by re-INVITE (`reinvite.rs`). The bridge
//! (`bridge.rs`) owns several of these and decides which one wins.
//!
//! Every fork of a bridge shares one event channel: responses are told apart by their client
//! transaction id, requests by their Call-ID (each fork has its own).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lamps;
use super::reinvite::{HoldReinvites, Reply};
use super::targets::Fork;
use crate::config::MediaEncryption;
use crate::media::dtmf::info_digit;
use crate::media::sdp::{self, Direction, LocalSession, Negotiated, OurDescription};
use crate::media::srtp::policy::{self, MediaSecurity};
use crate::media::srtp::sdes::CryptoLine;
use crate::presence::{CallLamp, Presence};
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
    /// The callee's media changed (address, codec, direction): its re-INVITE, or its answer
    /// to ours. Our direction in it says whether the callee holds.
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
    /// Our side of the session: the INVITE's offer, then our answers and re-offers.
    ours: OurDescription,
    /// Our direction as last negotiated with the callee (its hold, RFC 3264 §8.4).
    direction: Direction,
    /// The ACK of the 2xx, resent when the 2xx is retransmitted (§13.2.2.4).
    ack: Option<OutgoingRequest>,
    /// The last CSeq the callee used in the dialog.
    remote_cseq: Option<u32>,
    /// The CSeq of our last request in the dialog (the INVITE's, then BYE, re-INVITEs).
    local_cseq: u32,
    /// The caller holds: the callee is to be held too.
    hold_wanted: bool,
    /// Our hold re-INVITEs.
    hold: HoldReinvites,
    events: mpsc::UnboundedSender<DialogEvent>,
    registered: bool,
    /// When the INVITE went, and whether anything at all (even 100) came back since.
    sent_at: Instant,
    heard: bool,
    /// Given up for its silence ([`OutboundLeg::give_up_silent`]): done for the bridge, still
    /// settling for a late answer.
    abandoned: bool,
    /// The rung device's lamps: ringing while the INVITE is out, confirmed once answered, out
    /// once the fork is stopped or ends.
    lamp: Option<CallLamp>,
    /// The account's SRTP mode, for what an answer to our SRTP offer may be.
    encryption: MediaEncryption,
    /// Our line and the callee's, once its answer (or early media) to our SRTP offer named
    /// one: what the bridge keys the outbound session with.
    pub(super) srtp: Option<(CryptoLine, CryptoLine)>,
}

impl OutboundLeg {
    /// Sends the INVITE of `fork` with `spec`'s offer, made of `local`; its events go to
    /// `events`.
    pub(super) fn start(
        endpoint: Arc<Endpoint>,
        fork: Fork,
        spec: InviteSpec,
        local: LocalSession,
        encryption: MediaEncryption,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> OutboundLeg {
        let ours = OurDescription::new(local, spec.sdp.clone());
        let mut spec = spec;
        if let Some(name) = &fork.tls_name {
            // The transport verifies the server's certificate for this name when it connects,
            // and sends to it only on a connection verified so (the id it gives).
            match endpoint.transport().name_tls_server(spec.peer.remote, name) {
                Ok(conn) => spec.peer.conn = Some(conn),
                Err(e) => tracing::warn!(fork = %fork.label, error = %e, "bridge: tls server name"),
            }
        }
        let spec_peer = spec.peer.clone();
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
        // A phone registered over TLS is reached on its own connection only: with it gone,
        // the fork fails at once (as 408) instead of waiting for an answer that cannot come.
        let reachable =
            endpoint
                .transport()
                .can_reach(spec_peer.proto, spec_peer.remote, spec_peer.conn);
        let tx_id = endpoint.send_request(&invite.call_id, invite.request(), Some(events.clone()));
        if reachable {
            tracing::info!(fork = %fork.label, call_id = %invite.call_id, "bridge: INVITE sent");
        } else {
            tracing::info!(fork = %fork.label, call_id = %invite.call_id,
                "bridge: no TLS connection open to the phone, which is reached only on its own");
            let _ = events.send(DialogEvent::Timeout { id: tx_id });
        }
        OutboundLeg {
            endpoint,
            fork,
            invite,
            tx_id,
            state: ForkState::Calling,
            cancel_pending: false,
            ours,
            direction: Direction::SendRecv,
            ack: None,
            remote_cseq: None,
            local_cseq: 1,
            hold_wanted: false,
            // We chose the Call-ID: after a 491 we wait 2.1–4 s (RFC 3261 §14.1).
            hold: HoldReinvites::new("callee", true),
            events,
            registered: true,
            sent_at: Instant::now(),
            heard: false,
            abandoned: false,
            lamp: None,
            encryption,
            srtp: None,
        }
    }

    /// Lights the rung device's lamps (`lamps.rs`), `caller` its remote party.
    pub(super) fn light(&mut self, presence: &Presence, caller: String) {
        self.lamp = lamps::rung_device(
            presence,
            self.fork.presence_ids.clone(),
            &self.invite.call_id,
            &self.invite.local_tag,
            caller,
        );
    }

    pub(super) fn call_id(&self) -> &str {
        &self.invite.call_id
    }

    /// Whether the event is this fork's.
    pub(super) fn owns(&self, ev: &DialogEvent) -> bool {
        match ev {
            DialogEvent::Response { id, .. } | DialogEvent::Timeout { id } => {
                *id == self.tx_id || self.hold.owns(*id)
            }
            DialogEvent::Request { req, .. } => {
                message::header_str(&**req, "Call-ID") == Some(self.invite.call_id.as_str())
            }
            _ => false,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == ForkState::Done || self.abandoned
    }

    /// When a fork that has heard nothing is to be given up (None once anything came back).
    pub(super) fn silent_until(&self, limit: Duration) -> Option<Instant> {
        (!self.heard && !self.abandoned && self.state == ForkState::Calling)
            .then(|| self.sent_at + limit)
    }

    /// Gives up a fork nothing answered: the bridge counts it as 408 and moves on. Its INVITE
    /// is not CANCELled before a provisional response (RFC 3261 §9.1): a late one gets the
    /// CANCEL, a late 2xx is acknowledged and hung up, as for any stopped fork.
    pub(super) fn give_up_silent(&mut self) {
        tracing::info!(fork = %self.fork.label, "bridge: no response to the INVITE; trying elsewhere");
        self.abandoned = true;
        self.stop();
    }

    pub(super) fn is_answered(&self) -> bool {
        matches!(self.state, ForkState::Answered(_))
    }

    /// One of this fork's events.
    pub(super) fn on_event(&mut self, ev: DialogEvent) -> ForkNews {
        match ev {
            DialogEvent::Response { id, resp } if self.hold.owns(id) => {
                self.on_hold_response(id, &resp)
            }
            DialogEvent::Timeout { id } if self.hold.owns(id) => {
                let _ = self.hold.on_timeout(id);
                self.sync_hold();
                ForkNews::Nothing
            }
            DialogEvent::Response { resp, .. } => self.on_response(*resp),
            DialogEvent::Timeout { .. } => {
                if matches!(self.state, ForkState::Calling | ForkState::Ringing) {
                    self.end();
                    if self.abandoned {
                        // Already counted as 408 when it was given up.
                        return ForkNews::Nothing;
                    }
                    ForkNews::Failed(408)
                } else {
                    ForkNews::Nothing
                }
            }
            DialogEvent::Request { req, tx } => self.on_request(*req, *tx),
            _ => ForkNews::Nothing,
        }
    }

    fn on_response(&mut self, resp: rsip::Response) -> ForkNews {
        self.heard = true;
        let code = resp.status_code.code();
        if self.abandoned {
            // The bridge has moved on: only the settling (CANCEL, hang up a 2xx) is left.
            let _ = self.on_response_inner(resp, code);
            return ForkNews::Nothing;
        }
        self.on_response_inner(resp, code)
    }

    fn on_response_inner(&mut self, resp: rsip::Response, code: u16) -> ForkNews {
        match (code, &self.state) {
            (100, _) => ForkNews::Nothing,
            (101..=199, ForkState::Calling | ForkState::Ringing) => {
                self.state = ForkState::Ringing;
                if self.cancel_pending {
                    self.send_cancel();
                    return ForkNews::Nothing;
                }
                ForkNews::Ringing {
                    early: self.answer_in(&resp),
                }
            }
            (200..=299, ForkState::Answered(_)) => {
                // A retransmitted 2xx: our ACK was lost.
                if let Some(ack) = &self.ack {
                    self.endpoint.send_as_is(ack);
                }
                ForkNews::Nothing
            }
            (200..=299, ForkState::Calling | ForkState::Ringing) => {
                let Some(ack) = self.invite.ack_for_2xx(&resp) else {
                    tracing::warn!(fork = %self.fork.label, "a 2xx without a usable Contact: treated as a failure");
                    self.end();
                    return ForkNews::Failed(502);
                };
                self.endpoint.send_as_is(&ack);
                self.ack = Some(ack);
                self.local_cseq = self.invite.cseq();
                let answer = self.answer_in(&resp);
                if let Some(n) = &answer {
                    self.direction = n.direction;
                }
                if let Some(lamp) = &mut self.lamp {
                    lamp.confirm(message::to_tag(&resp).as_deref());
                }
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
                // A re-INVITE (hold, a codec change): answered here, the bridge follows what
                // changed (and passes a hold to the caller).
                if self.hold.in_progress() {
                    // §14.2: ours is in progress.
                    reply(491, &[], None);
                    return ForkNews::Nothing;
                }
                let Ok(body) = message::sdp_body(&req) else {
                    reply(415, &[("Accept", "application/sdp")], None);
                    return ForkNews::Nothing;
                };
                let contact = self.contact();
                let ok_headers = [("Contact", contact.as_str()), ("Allow", ALLOW)];
                let Some(body) = body else {
                    // No offer: ours in the 200 (its answer, in the ACK, changes nothing here).
                    let direction = Direction::hold_offer(self.hold.told(), self.direction.held());
                    let offer = self.ours.describe(|l| {
                        sdp::offer_with_direction(l, sdp::OFFERED_EVENT_PT, direction)
                    });
                    reply(
                        200,
                        &ok_headers,
                        Some(("application/sdp", offer.as_bytes())),
                    );
                    return ForkNews::Nothing;
                };
                let Some((offer, mut n)) = sdp::read(body) else {
                    // §14.2: refused, the session stays as it was.
                    reply(488, &[], None);
                    return ForkNews::Nothing;
                };
                // RFC 3264 §6.1 (recvonly to sendonly, inactive to inactive), and while the
                // caller holds, the callee stays held.
                n.direction = n.direction.holding(self.hold.told());
                let answer = self.ours.describe(|l| sdp::answer_to_offer(l, &offer, &n));
                reply(
                    200,
                    &ok_headers,
                    Some(("application/sdp", answer.as_bytes())),
                );
                self.direction = n.direction;
                ForkNews::Media(n)
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
        let spec = self.invite.spec();
        crate::sip::dialog::contact_value(
            &spec.contact_user,
            &spec.local_host,
            &spec.peer,
            crate::sip::dialog::uri_is_sips(&spec.request_uri),
        )
    }

    /// Stops the fork: CANCEL while it rings (after a provisional response, §9.1), BYE once
    /// answered.
    pub(super) fn stop(&mut self) {
        // No longer ringing nor talking for the bridge, whatever it still waits for.
        self.lamp = None;
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

    /// Whether the callee is to be held because the caller holds (RFC 3264 §8.4): told by
    /// re-INVITE once answered, one at a time.
    pub(super) fn hold_peer(&mut self, hold: bool) {
        self.hold_wanted = hold;
        self.sync_hold();
    }

    /// Whether the callee holds us (its last offer or answer: sendonly or inactive).
    pub(super) fn peer_holds(&self) -> bool {
        self.direction.held()
    }

    /// When a 491's wait ends and our re-INVITE may go again.
    pub(super) fn hold_retry_at(&self) -> Option<Instant> {
        self.hold.retry_at()
    }

    /// Sends the re-INVITE that tells the callee what is wished, when one is due.
    fn sync_hold(&mut self) {
        let hold = self.hold_wanted;
        if !self.hold.due(hold, Instant::now()) {
            return;
        }
        let ForkState::Answered(resp) = &self.state else {
            return;
        };
        let direction = Direction::hold_offer(hold, self.direction.held());
        let offer = self
            .ours
            .describe(|l| sdp::offer_with_direction(l, sdp::OFFERED_EVENT_PT, direction));
        let cseq = self.local_cseq + 1;
        let Some(req) = self
            .invite
            .dialog_request(rsip::Method::Invite, cseq, resp, Some(&offer))
        else {
            return;
        };
        self.local_cseq = cseq;
        let id = self
            .endpoint
            .send_request(&self.invite.call_id, req, Some(self.events.clone()));
        self.hold.sent(id, cseq, hold);
        tracing::info!(hold, "bridge: the caller's hold passed to the callee");
    }

    /// A response to our re-INVITE: a 2xx is acknowledged (its own ACK, §13.2.2.4) and its
    /// answer is the callee's media now; a failure leaves the media as it was (the
    /// transaction ACKs it). A change wished meanwhile goes next.
    fn on_hold_response(&mut self, id: u64, resp: &rsip::Response) -> ForkNews {
        let ForkState::Answered(first) = &self.state else {
            return ForkNews::Nothing;
        };
        let invite = &self.invite;
        let reply = self
            .hold
            .on_response(id, resp.status_code.code(), Instant::now(), |cseq| {
                invite.dialog_request(rsip::Method::Ack, cseq, first, None)
            });
        let mut news = ForkNews::Nothing;
        if let Reply::Accepted { ack, first } = reply {
            if let Some(ack) = &ack {
                self.endpoint.send_as_is(ack);
            }
            if let Some(n) = self.answer_in(resp).filter(|_| first) {
                self.direction = n.direction;
                news = ForkNews::Media(n);
            }
        }
        self.sync_hold();
        news
    }

    fn end(&mut self) {
        self.state = ForkState::Done;
        self.lamp = None;
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

impl OutboundLeg {
    /// The callee's session description in a response, negotiated as an answer to our
    /// offer. When we offered SRTP, the line it names keys `self.srtp` (and our later offers
    /// repeat only our line of it); a plain answer is taken unless SRTP is required, which
    /// makes it no usable answer.
    fn answer_in(&mut self, resp: &rsip::Response) -> Option<Negotiated> {
        let body = message::response_sdp_body(resp).ok()??;
        let (sdp, n) = sdp::read(body)?;
        let offered = &self.ours.local.crypto;
        if offered.is_empty() {
            return Some(n);
        }
        match policy::answered(self.encryption, offered, sdp.audio()?) {
            Ok(MediaSecurity::Srtp { theirs, ours }) => {
                self.ours.local.crypto = vec![ours.clone()];
                self.srtp = Some((ours, theirs));
                Some(n)
            }
            Ok(MediaSecurity::Plain) if self.srtp.is_none() => Some(n),
            // A leg that is SRTP stays SRTP; a required one must be.
            Ok(MediaSecurity::Plain) | Err(_) => {
                tracing::info!(fork = %self.fork.label, "bridge: the callee's answer is not the SRTP it must be");
                None
            }
        }
    }
}
