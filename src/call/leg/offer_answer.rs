//! Offer/answer on one leg (RFC 3264): applying a negotiated session to the RTP session, the
//! SDP we send and its o= version, the answer that comes in an ACK, and re-INVITEs.

use super::{Leg, Phase};
use crate::media::sdp::{self, Direction, Negotiated};
use crate::sip::endpoint::ServerTx;
use crate::sip::message;
use crate::sip::outgoing::response_bytes;
use crate::sip::{ALLOW, SUPPORTED};

impl Leg {
    /// Points the RTP session at a newly negotiated session: address, codec, direction,
    /// the RFC 4733 payload type.
    pub(super) fn apply_negotiated(&mut self, n: Negotiated) {
        self.rtp.set_remote(n.remote);
        let old_codec = self.negotiated.as_ref().map(|o| o.codec);
        match &self.playing {
            // A prompt is playing in the old codec: go on with the new codec's bytes, or the
            // caller would get μ-law bytes labelled A-law (or the reverse) until it ends.
            Some(p) if old_codec != Some(n.codec) => self.rtp.switch_codec(
                n.codec_pt,
                n.codec.silence_byte(),
                p.payload(n.codec).clone(),
            ),
            _ => self.rtp.set_codec(n.codec_pt, n.codec.silence_byte()),
        }
        self.rtp.set_sending(n.direction.we_send());
        self.rtp.set_event_payload_type(n.dtmf_pt);
        // On hold (they offered sendonly or inactive, or recvonly) the caller sends no RTP:
        // no RTP timeout then. Only sendrecv means we should hear from them.
        self.held = n.direction != Direction::SendRecv;
        self.negotiated = Some(n);
    }

    /// The SDP for our side now: an answer to what was negotiated, or an offer (late offer).
    pub(super) fn current_sdp(&mut self) -> String {
        if self.negotiated.is_none() {
            self.awaiting_answer = Some(cseq_of(&self.invite));
        }
        let make_offer = self.negotiated.is_none();
        self.versioned_sdp(make_offer)
    }

    /// Our description (`offer` true: a fresh offer; else the answer to the current
    /// session), with the o= version raised only when it differs from the last one we sent
    /// (RFC 3264 §8: a changed description carries a higher version, an unchanged one keeps it).
    fn versioned_sdp(&mut self, offer: bool) -> String {
        let render = |leg: &Leg| match (&leg.negotiated, offer) {
            (Some(n), false) => match &leg.offer {
                Some(o) => sdp::answer_to_offer(&leg.local_sdp, o, n),
                None => sdp::answer(&leg.local_sdp, n),
            },
            _ => match &leg.offer {
                Some(o) => sdp::offer_keeping_lines(&leg.local_sdp, o, sdp::OFFERED_EVENT_PT),
                None => sdp::offer(&leg.local_sdp, sdp::OFFERED_EVENT_PT),
            },
        };
        let mut sdp = render(self);
        if self.last_sdp.as_ref().is_some_and(|last| *last != sdp) {
            self.local_sdp.version += 1;
            sdp = render(self);
        }
        self.last_sdp = Some(sdp.clone());
        sdp
    }

    /// The caller's answer to our offer (a late offer, an offerless re-INVITE), carried by
    /// the ACK of that INVITE.
    pub(super) fn answer_in_ack(&mut self, req: &rsip::Request) {
        if self.awaiting_answer != Some(cseq_of(req)) {
            return;
        }
        self.awaiting_answer = None;
        // An answer is an SDP body; anything else (none, another type) is no answer.
        let answer = message::sdp_body(req)
            .ok()
            .flatten()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| sdp::parse(s).ok())
            .and_then(|s| sdp::negotiate_answer(&s).ok().map(|n| (s, n)));
        match answer {
            Some((remote, n)) => {
                // Its m= lines mirror our offer's: the template of our next description.
                self.offer = Some(remote);
                self.apply_negotiated(n);
                self.answer_arrived.notify_one();
            }
            None => {
                // RFC 3261 §13.3.1.4 leaves a bad answer in the ACK to the UAS: end the call.
                tracing::warn!("the ACK carried no usable SDP answer to our offer: hanging up");
                self.send_bye();
                self.phase = Phase::Ended;
            }
        }
    }

    /// A re-INVITE (hold/unhold, codec change, session refresh): answered with the current
    /// session, updated by the new offer if there is one.
    pub(super) fn on_reinvite(&mut self, req: rsip::Request, tx: ServerTx) {
        let respond = |leg: &mut Leg, code: u16, extra: &[(&str, &str)], body: Option<String>| {
            let contact = leg.dialog.contact(&leg.contact_user);
            let mut ex: Vec<(&str, &str)> = extra.to_vec();
            if code < 300 {
                ex.push(("Contact", &contact));
                ex.push(("Allow", ALLOW));
                ex.push(("Supported", SUPPORTED));
            }
            let b = response_bytes(
                &req,
                code,
                None,
                None,
                &ex,
                body.as_ref().map(|s| ("application/sdp", s.as_bytes())),
            );
            tx.respond(code, b);
        };
        if self.phase == Phase::Early {
            // §14.2: an INVITE while ours is not final yet.
            respond(self, 500, &[("Retry-After", "1")], None);
            return;
        }
        if self.phase == Phase::Ended {
            // The call is over and only waits for the ACK to send its BYE.
            respond(self, 500, &[], None);
            return;
        }
        if self.awaiting_answer.is_some() {
            respond(self, 491, &[], None);
            return;
        }
        let Ok(offer) = message::sdp_body(&req) else {
            respond(self, 415, &[("Accept", "application/sdp")], None);
            return;
        };
        if let Some(body) = offer {
            let neg = std::str::from_utf8(body)
                .ok()
                .and_then(|s| sdp::parse(s).ok())
                .ok_or(())
                .and_then(|o| sdp::negotiate(&o).map(|n| (o, n)).map_err(|_| ()));
            match neg {
                Ok((offer, n)) => {
                    self.dialog.refresh_target(&req);
                    self.offer = Some(offer);
                    self.apply_negotiated(n);
                    let body = self.current_sdp();
                    respond(self, 200, &[], Some(body));
                }
                // §14.2: a re-INVITE we cannot accept leaves the session as it was.
                Err(()) => respond(self, 488, &[], None),
            }
        } else {
            // An offerless re-INVITE: we offer in the 200, the answer comes in the ACK.
            self.dialog.refresh_target(&req);
            let offer = self.versioned_sdp(true);
            self.awaiting_answer = Some(cseq_of(&req));
            respond(self, 200, &[], Some(offer));
        }
    }
}

/// The CSeq number of a request (0 when unreadable: the parser has already checked it).
fn cseq_of(req: &rsip::Request) -> u32 {
    message::cseq(req).map_or(0, |(n, _)| n)
}
