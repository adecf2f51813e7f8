//! Offer/answer on one leg (RFC 3264): applying a negotiated session to the RTP session, the
//! SDP we send and its o= version, the answer that comes in an ACK, the caller's re-INVITEs,
//! and ours, which hold the caller while the other leg of a bridge holds (RFC 3264 §8.4).

use tokio::time::Instant;

use super::{Leg, Phase};
use crate::call::reinvite::Reply;
use crate::config::MediaEncryption;
use crate::media::sdp::{self, Direction, Negotiated, Sdp};
use crate::media::srtp::policy::{self, Followed, MediaSecurity, SrtpRefusal};
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
        self.negotiated = Some(n);
    }

    /// On an SRTP leg, the caller's new offer must be SRTP too (never a downgrade to audio
    /// in clear); a line other than the one we receive with rekeys both directions, ours
    /// with a fresh key (a context is never restarted on a key it used, RFC 3711 §9.1).
    /// `false`: the offer is refused (488). A plain leg stays plain.
    fn follow_srtp_offer(&mut self, offer: &Sdp) -> bool {
        let Some(current) = &self.srtp_theirs else {
            return true;
        };
        match policy::follow_offer(current, offer.audio()) {
            Followed::Same => true,
            Followed::Rekey { theirs, ours } => {
                if let Err(e) = self.rtp.set_srtp(&ours.key, &theirs.key) {
                    tracing::warn!("cannot rekey SRTP: {e}");
                    return false;
                }
                self.ours.local.crypto = vec![ours];
                self.srtp_theirs = Some(theirs);
                true
            }
            Followed::Refused => false,
        }
    }

    /// The caller's answer to an offer of ours. On an SRTP leg (our offers repeat our line)
    /// it must name our line; a new key of its own rekeys what we receive. To our late
    /// offer's keys (offered, the leg not keyed yet) the policy decides
    /// (`media/srtp/policy.rs` `answered`): the line it names keys the session both ways; a
    /// plain answer leaves the leg plain (our later offers too), unless SRTP is required.
    fn follow_srtp_answer(&mut self, answer: &Sdp) -> Result<(), SrtpRefusal> {
        let Some(current) = self.srtp_theirs.clone() else {
            if self.ours.local.crypto.is_empty() {
                return Ok(());
            }
            return self.key_from_answer(answer);
        };
        let stream = answer.audio().ok_or(SrtpRefusal::PlainAnswer)?;
        match policy::answered(MediaEncryption::Required, &self.ours.local.crypto, stream)? {
            MediaSecurity::Srtp { theirs, .. } if theirs == current => Ok(()),
            MediaSecurity::Srtp { theirs, .. } => {
                let keyed = self.rtp.set_srtp_receive(&theirs.key);
                self.srtp_theirs = Some(theirs);
                keyed.map_err(|_| SrtpRefusal::NoUsableKey)
            }
            MediaSecurity::Plain => Err(SrtpRefusal::PlainAnswer),
        }
    }

    /// The first keys of the leg, from the answer to our late offer's lines.
    fn key_from_answer(&mut self, answer: &Sdp) -> Result<(), SrtpRefusal> {
        let stream = answer.audio().ok_or(SrtpRefusal::PlainAnswer)?;
        match policy::answered(self.encryption, &self.ours.local.crypto, stream)? {
            MediaSecurity::Srtp { theirs, ours } => {
                if let Err(e) = self.rtp.set_srtp(&ours.key, &theirs.key) {
                    tracing::warn!("cannot key SRTP: {e}");
                    return Err(SrtpRefusal::NoUsableKey);
                }
                self.ours.local.crypto = vec![ours];
                self.srtp_theirs = Some(theirs);
            }
            MediaSecurity::Plain => {
                // Best effort declined: plain RTP, and no keys in our later offers.
                self.ours.local.crypto.clear();
                self.ours.local.savp = false;
            }
        }
        Ok(())
    }

    /// The SDP for our side now: an answer to what was negotiated, or an offer (late offer).
    pub(super) fn current_sdp(&mut self) -> String {
        if self.negotiated.is_none() {
            self.awaiting_answer = Some(cseq_of(&self.invite));
            return self.versioned_sdp(Some(Direction::SendRecv));
        }
        self.versioned_sdp(None)
    }

    /// Our description: an offer with `offer`'s direction, or (None) the answer to the
    /// current session, its o= version raised only when it differs from the last one we sent
    /// (RFC 3264 §8).
    fn versioned_sdp(&mut self, offer: Option<Direction>) -> String {
        let (negotiated, previous) = (&self.negotiated, &self.offer);
        self.ours.describe(|local| match (negotiated, offer) {
            (Some(n), None) => match previous {
                Some(o) => sdp::answer_to_offer(local, o, n),
                None => sdp::answer(local, n),
            },
            (_, direction) => {
                let direction = direction.unwrap_or(Direction::SendRecv);
                match previous {
                    Some(o) => sdp::offer_keeping_lines(local, o, sdp::OFFERED_EVENT_PT, direction),
                    None => sdp::offer_with_direction(local, sdp::OFFERED_EVENT_PT, direction),
                }
            }
        })
    }

    /// The direction of an offer of ours now: the hold the caller accepted, and its own.
    fn offer_direction(&self, hold: bool) -> Direction {
        Direction::hold_offer(hold, self.is_held())
    }

    /// The caller's answer to our offer (a late offer, an offerless re-INVITE), carried by
    /// the ACK of that INVITE.
    pub(super) fn answer_in_ack(&mut self, req: &rsip::Request) {
        if self.awaiting_answer != Some(cseq_of(req)) {
            return;
        }
        self.awaiting_answer = None;
        // An answer is an SDP body; anything else (none, another type) is no answer.
        let answer = message::sdp_body(req).ok().flatten().and_then(sdp::read);
        let refused = match answer {
            Some((remote, n)) => match self.follow_srtp_answer(&remote) {
                Ok(()) => {
                    // Its m= lines mirror our offer's: the template of our next description.
                    self.offer = Some(remote);
                    self.apply_negotiated(n);
                    self.answer_arrived.notify_one();
                    return;
                }
                Err(why) => Some(why),
            },
            None => None,
        };
        // RFC 3261 §13.3.1.4 leaves a bad answer in the ACK to the UAS (it cannot be refused):
        // end the call, saying why. With SRTP required nothing was sent meanwhile (the
        // session sends nothing in clear, `admission.rs`).
        let why = match (refused, self.encryption) {
            (Some(why), _) => why.to_string(),
            (None, MediaEncryption::Required) => {
                "SRTP is required and the ACK carried no usable SDP answer".to_string()
            }
            (None, _) => "the ACK carried no usable SDP answer to our offer".to_string(),
        };
        tracing::warn!("{why}: hanging up");
        self.record_end("server", "BYE", Some(&why));
        self.set_cause(crate::flow::bridge::cause_of_sip_code(488));
        let reason = format!("SIP ;cause=488 ;text=\"{why}\"");
        self.send_bye_with(&[("Reason", &reason)]);
        self.set_phase(Phase::Ended);
        self.rtp.stop_playing();
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
        if self.awaiting_answer.is_some() || self.hold.in_progress() {
            // §14.2: an offer of ours is open (our re-INVITE, or our offer awaiting its ACK).
            respond(self, 491, &[], None);
            return;
        }
        let Ok(offer) = message::sdp_body(&req) else {
            respond(self, 415, &[("Accept", "application/sdp")], None);
            return;
        };
        if let Some(body) = offer {
            match sdp::read(body) {
                Some((offer, mut n)) if self.follow_srtp_offer(&offer) => {
                    self.dialog.refresh_target(&req.headers);
                    self.offer = Some(offer);
                    // While we hold the caller for the other leg, the hold stays.
                    n.direction = n.direction.holding(self.hold.told());
                    self.apply_negotiated(n);
                    let body = self.current_sdp();
                    respond(self, 200, &[], Some(body));
                }
                // §14.2: a re-INVITE we cannot accept leaves the session as it was.
                _ => respond(self, 488, &[], None),
            }
        } else {
            // An offerless re-INVITE: we offer in the 200, the answer comes in the ACK.
            self.dialog.refresh_target(&req.headers);
            let offer = self.versioned_sdp(Some(self.offer_direction(self.hold.told())));
            self.awaiting_answer = Some(cseq_of(&req));
            respond(self, 200, &[], Some(offer));
        }
    }
}

impl Leg {
    /// Whether the caller is to be held because the other leg of a bridge holds
    /// (RFC 3264 §8.4): told by re-INVITE once the call is up, one at a time.
    pub(in crate::call) fn hold_peer(&mut self, hold: bool) {
        self.hold_wanted = hold;
        self.sync_hold();
    }

    /// Sends the re-INVITE that tells the caller what is wished, when one is due and may go:
    /// answered and acknowledged, and no offer of ours open (RFC 3261 §14.1).
    pub(super) fn sync_hold(&mut self) {
        let hold = self.hold_wanted;
        if !self.hold.due(hold, Instant::now()) {
            return;
        }
        if self.phase != Phase::Answered
            || !self.acked
            || self.awaiting_answer.is_some()
            || self.negotiated.is_none()
        {
            return;
        }
        let body = self.versioned_sdp(Some(self.offer_direction(hold)));
        let contact = self.dialog.contact(&self.contact_user);
        let req = self.dialog.request(
            rsip::Method::Invite,
            &[
                ("Contact", &contact),
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
            ],
            Some(("application/sdp", body.as_bytes())),
        );
        let cseq = self.dialog.local_cseq();
        let id = self
            .endpoint
            .send_request(&self.dialog.id.call_id, req, self.events_tx.upgrade());
        self.hold.sent(id, cseq, hold);
        tracing::info!(hold, "bridge: the callee's hold passed to the caller");
    }

    /// A response to a request of ours: our re-INVITE's answer (a 2xx: ACK it, take its
    /// SDP answer and its Contact) and whether a change wished meanwhile goes now.
    pub(super) fn on_hold_response(&mut self, id: u64, resp: &rsip::Response) {
        let code = resp.status_code.code();
        let dialog = &mut self.dialog;
        let reply = self.hold.on_response(id, code, Instant::now(), |cseq| {
            // §12.2.1.2: the 2xx's Contact is the target of the ACK and what follows.
            dialog.refresh_target(&resp.headers);
            Some(dialog.request_at(rsip::Method::Ack, cseq, &[], None))
        });
        if let Reply::Accepted { ack, first } = reply {
            if let Some(ack) = &ack {
                self.endpoint.send_as_is(ack);
            }
            if first {
                match message::response_sdp_body(resp)
                    .ok()
                    .flatten()
                    .and_then(sdp::read)
                {
                    Some((remote, n)) if self.follow_srtp_answer(&remote).is_ok() => {
                        // Its m= lines mirror our offer's: the template of our next one.
                        self.offer = Some(remote);
                        self.apply_negotiated(n);
                    }
                    _ => tracing::warn!(
                        "the caller's 2xx to our re-INVITE had no usable SDP answer: media \
                         unchanged"
                    ),
                }
            }
        }
        self.sync_hold();
    }
}

/// The CSeq number of a request (0 when unreadable: the parser has already checked it).
fn cseq_of(req: &rsip::Request) -> u32 {
    message::cseq(req).map_or(0, |(n, _)| n)
}
