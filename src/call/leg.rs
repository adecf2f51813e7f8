//! One SIP leg of a call: its dialog, the INVITE server transaction that created it and its
//! media session (the RTP session, the negotiated SDP, offer/answer versioning). The leg
//! answers what the far end does inside the dialog — BYE, CANCEL, re-INVITE, OPTIONS, INFO,
//! the ACK — and decides what may be sent to it and when. Offer/answer (the SDP we send,
//! re-INVITEs both ways, an answer in an ACK) is in `leg/offer_answer.rs`.
//!
//! This is the caller's leg (we are its UAS). A bridge adds outbound legs (we are their UAC,
//! `outbound.rs`) beside it, owned by the same [`Call`](super::Call); each tells its far end
//! of the other's hold by re-INVITE (`reinvite.rs`).
//!
//! Towards a source that is not trusted, nothing is sent that the caller has not asked for:
//! RTP starts once its address proved it takes part (the ACK of our 2xx, or its first RTP
//! packet), early media stops after a few unproven seconds, and a BYE waits for the ACK
//! (RFC 3261 §15) and is not sent at all to an address that never proved itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::config::MediaEncryption;
use crate::flow::bridge::cause_of_sip_code;
use crate::media::codec::Codec;
use crate::media::dtmf::{info_digit, DtmfReceiver};
use crate::media::prompt::Prompt;
use crate::media::relay::LegFormat;
use crate::media::rtp::{ReceivedRtp, RtpSession};
use crate::media::sdp::{Direction, LocalSession, Negotiated, OurDescription, Sdp};
use crate::media::srtp::sdes::CryptoLine;
use crate::presence::CallLamp;
use crate::sip::dialog::Dialog;
use crate::sip::endpoint::{DialogEvent, Endpoint, NewRequest, ServerTx};
use crate::sip::message;
use crate::sip::outgoing::response_bytes;
use crate::sip::{ALLOW, CAPABILITY_HEADERS, SUPPORTED};
use crate::store::{CallEvent, CallEvents};

mod offer_answer;

use super::reinvite::HoldReinvites;

/// Where the leg's INVITE stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No final response yet.
    Early,
    /// 200 sent (ACK may still be pending).
    Answered,
    /// A final non-2xx was sent, or the dialog is over.
    Ended,
}

/// What admission decided for the caller's leg: its dialog and its media.
pub struct LegSetup {
    pub dialog: Dialog,
    /// The user part of our Contact: the number the caller dialled.
    pub contact_user: String,
    pub rtp: Arc<RtpSession>,
    /// The negotiated session when the INVITE had an offer; None for a late offer.
    pub negotiated: Option<Negotiated>,
    /// The INVITE's offer, parsed: the answer mirrors its m= lines (RFC 3264 §6).
    pub offer: Option<Sdp>,
    pub local_sdp: LocalSession,
    /// On an SRTP leg, the caller's `a=crypto` line whose key we receive with (ours is in
    /// `local_sdp`).
    pub srtp_theirs: Option<CryptoLine>,
    /// The call's SRTP mode (the account's, else `[media]`'s): what the answer to our late
    /// offer may be.
    pub encryption: MediaEncryption,
    /// The INVITE came from a trusted source (a carrier, a proxy in front): its media address
    /// need not prove itself before RTP goes there, nor is its early media capped.
    pub source_trusted: bool,
    /// How long early media goes to an address that has not proved it takes part.
    pub early_media_unproven: Duration,
}

/// The caller's leg of a live call.
pub(super) struct Leg {
    endpoint: Arc<Endpoint>,
    invite: rsip::Request,
    invite_tx: ServerTx,
    dialog: Dialog,
    contact_user: String,
    events: mpsc::UnboundedReceiver<DialogEvent>,
    /// The sender of `events`, for the responses to our own requests (re-INVITEs). Weak:
    /// `events` still ends when the endpoint drops the dialog.
    events_tx: mpsc::WeakUnboundedSender<DialogEvent>,
    phase: Phase,
    early_media_sent: bool,
    /// 180 went out (a bridge's callee rings).
    ringing_sent: bool,
    rtp: Arc<RtpSession>,
    negotiated: Option<Negotiated>,
    /// The caller's last description (its offer, or its answer in an ACK): our answers and
    /// later offers keep its m= lines, the ones we do not use at port 0 (RFC 3264 §6, §8).
    offer: Option<Sdp>,
    /// Our side: its address and o= line, and the last description we sent (an unchanged
    /// description keeps its version).
    ours: OurDescription,
    /// On an SRTP leg, the caller's line we receive with: a new key in its re-offer or
    /// answer rekeys (`offer_answer.rs`); a plain one is refused (no downgrade to clear).
    srtp_theirs: Option<CryptoLine>,
    /// The call's SRTP mode, for the answer to our late offer.
    encryption: MediaEncryption,
    /// The prompt playing now, to re-encode it when a re-INVITE or the ACK changes the codec.
    playing: Option<Arc<Prompt>>,
    /// Woken when the answer to our offer arrives in an ACK.
    answer_arrived: Arc<Notify>,
    /// We sent an offer (late offer) and wait for the answer in the ACK.
    /// The CSeq of that INVITE: only its ACK carries the answer (an earlier INVITE's ACK may
    /// arrive after it over UDP and has nothing to say about this offer).
    awaiting_answer: Option<u32>,
    /// The other leg of a bridge holds: the caller is to be held too (our re-INVITEs).
    hold_wanted: bool,
    hold: HoldReinvites,
    answered_at: Option<Instant>,
    /// RFC 4733 packets from the RTP session, and their decoder.
    dtmf_events: Option<mpsc::Receiver<ReceivedRtp>>,
    dtmf: DtmfReceiver,
    /// The final response sent to the INVITE (200 when answered), for the CDR.
    final_code: Option<u16>,
    /// Why the leg ended, in FreeSWITCH/Kazoo terms; the first cause found wins.
    hangup_cause: Option<&'static str>,
    early_media_unproven: Duration,
    /// The caller acknowledged our 2xx: a BYE may go (RFC 3261 §15).
    acked: bool,
    /// We hung up before the ACK: the BYE goes when it arrives.
    bye_after_ack: bool,
    /// The calling device's lamp (`call/lamps.rs`): early while the INVITE is unanswered,
    /// confirmed once answered, out when the leg ends (or the leg is dropped).
    lamp: Option<CallLamp>,
    /// The call's event log: the responses to the INVITE and how the leg ended go there
    /// from here, where they happen.
    pub(super) log: CallEvents,
    /// The `end` event is recorded (the first way the leg ended wins).
    end_recorded: bool,
}

impl Leg {
    /// The caller's leg for `invite`, its dialog already registered to send `events_tx`'s
    /// events to `events`.
    pub(super) fn new(
        endpoint: Arc<Endpoint>,
        invite: NewRequest,
        setup: LegSetup,
        events_tx: mpsc::UnboundedSender<DialogEvent>,
        events: mpsc::UnboundedReceiver<DialogEvent>,
        log: CallEvents,
    ) -> Leg {
        let mut leg = Leg {
            endpoint,
            invite: invite.req,
            invite_tx: invite.tx,
            dialog: setup.dialog,
            contact_user: setup.contact_user,
            events,
            events_tx: events_tx.downgrade(),
            phase: Phase::Early,
            early_media_sent: false,
            ringing_sent: false,
            rtp: setup.rtp,
            negotiated: setup.negotiated,
            offer: setup.offer,
            ours: OurDescription::new(setup.local_sdp, None),
            srtp_theirs: setup.srtp_theirs,
            encryption: setup.encryption,
            playing: None,
            answer_arrived: Arc::new(Notify::new()),
            awaiting_answer: None,
            hold_wanted: false,
            // The caller chose the Call-ID: after a 491 we wait 0–2 s (RFC 3261 §14.1).
            hold: HoldReinvites::new("caller", false),
            answered_at: None,
            dtmf_events: None,
            dtmf: DtmfReceiver::new(),
            final_code: None,
            hangup_cause: None,
            early_media_unproven: setup.early_media_unproven,
            acked: false,
            bye_after_ack: false,
            lamp: None,
            log,
            end_recorded: false,
        };
        if setup.source_trusted {
            // A carrier or a proxy in front has nothing to prove.
            leg.rtp.prove();
        } else {
            // No amplification: one forged INVITE must not aim our RTP at a third party.
            leg.rtp.require_proof();
        }
        leg.dtmf_events = leg.rtp.take_events();
        if let Some(n) = &leg.negotiated {
            leg.apply_negotiated(n.clone());
        }
        leg
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    /// The one place the phase changes: the calling device's lamp follows it.
    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        match phase {
            Phase::Early => {}
            Phase::Answered => {
                if let Some(l) = &mut self.lamp {
                    l.confirm(None);
                }
            }
            Phase::Ended => self.lamp = None,
        }
    }

    /// Gives the leg the calling device's lamp, lit early.
    pub(super) fn set_lamp(&mut self, lamp: Option<CallLamp>) {
        self.lamp = lamp;
    }

    pub(super) fn answered_at(&self) -> Option<Instant> {
        self.answered_at
    }

    /// The final response the INVITE got, for the CDR.
    pub(super) fn final_code(&self) -> Option<u16> {
        self.final_code
    }

    /// Why the leg ended, for the CDR.
    pub(super) fn hangup_cause(&self) -> Option<&'static str> {
        self.hangup_cause
    }

    /// Records in the event log how the leg ended and who ended it (`by`: `caller` or
    /// `server`; `how`: `BYE`, `CANCEL` or the final code), unless an earlier end is known.
    fn record_end(&mut self, by: &str, how: &str, why: Option<&str>) {
        if std::mem::replace(&mut self.end_recorded, true) {
            return;
        }
        self.log.record(CallEvent::End {
            by: by.to_string(),
            how: how.to_string(),
            why: why.map(str::to_string),
        });
    }

    /// Ended from our side: a BYE when answered, else the final `code`.
    fn record_server_end(&mut self, code: u16, why: &str) {
        let how = if self.phase == Phase::Answered {
            "BYE".to_string()
        } else {
            code.to_string()
        };
        self.record_end("server", &how, Some(why));
    }

    /// Records why the leg ends, unless an earlier cause is known.
    pub(super) fn set_cause(&mut self, cause: &'static str) {
        self.hangup_cause.get_or_insert(cause);
    }

    /// Waits for what the caller does next — a dialog event or an RFC 4733 packet — or for
    /// the end of a 491's wait before our re-INVITE goes again, and handles it. Returns the
    /// DTMF key it carried, if any. Cancel-safe.
    pub(super) async fn next(&mut self) -> Option<char> {
        let retry_at = self.hold.retry_at();
        tokio::select! {
            ev = self.events.recv() => match ev {
                Some(ev) => self.on_event(ev),
                None => {
                    self.record_end("server", "end", Some("dialog gone"));
                    self.set_phase(Phase::Ended);
                    None
                }
            },
            Some(pkt) = recv_event(&mut self.dtmf_events) => {
                self.dtmf.on_packet(pkt.ssrc, pkt.timestamp, pkt.marker, &pkt.payload)
            }
            () = sleep_until(retry_at) => {
                self.sync_hold();
                None
            }
        }
    }

    /// Sends our 200 with the SDP (an answer, or our offer for a late offer).
    pub(super) fn answer(&mut self) {
        self.respond_invite(200, None, true);
        self.set_phase(Phase::Answered);
        // Answered, the address proves itself by the ACK or its RTP: no more unproven early
        // audio meanwhile (nothing to close for a proven address).
        self.rtp.end_unproven();
        self.answered_at = Some(Instant::now());
    }

    /// Opens early media (183 with the answer) once. False for a late offer, which cannot
    /// carry early media reliably without 100rel: the caller answers instead.
    pub(super) fn open_early_media(&mut self) -> bool {
        match self.phase {
            // Answered (a `<Dial>` after the flow answered): the caller hears us already, and
            // no provisional response may follow the 200 (RFC 3261 §13.3.1).
            Phase::Answered => return true,
            Phase::Ended => return false,
            Phase::Early => {}
        }
        if self.early_media_sent {
            return true;
        }
        if self.negotiated.is_none() {
            return false;
        }
        self.respond_invite(183, None, true);
        self.early_media_sent = true;
        // Early media has no ACK to prove the address: a few seconds unproven, then silence
        // unless the caller's RTP has arrived (a proven address is not held to it).
        self.rtp.allow_unproven_for(self.early_media_unproven);
        true
    }

    /// 180 Ringing without SDP, once: the caller's phone rings by itself (a bridge's callee
    /// rings). Nothing once early media is open or the call is answered.
    pub(super) fn ringing(&mut self) {
        if self.phase == Phase::Early && !self.early_media_sent && !self.ringing_sent {
            self.ringing_sent = true;
            self.respond_invite(180, None, false);
        }
    }

    /// Whether the caller already hears our media (183 sent, or answered): its phone does not
    /// make ringback by itself any more.
    pub(super) fn hears_our_media(&self) -> bool {
        self.early_media_sent || self.phase == Phase::Answered
    }

    /// The caller put us on hold: its last offer or answer said sendonly or inactive (or
    /// c=0.0.0.0), so we may not send (RFC 3264 §8.4).
    pub(super) fn is_held(&self) -> bool {
        self.negotiated.as_ref().is_some_and(|n| n.direction.held())
    }

    /// The caller's RTP session.
    pub(super) fn rtp(&self) -> &Arc<RtpSession> {
        &self.rtp
    }

    /// What the caller's media negotiated, for a relay: None until an offer/answer completed
    /// (a late offer's answer comes in the ACK).
    pub(super) fn format(&self) -> Option<LegFormat> {
        self.negotiated.as_ref().map(|n| LegFormat {
            codec: n.codec,
            payload_type: n.codec_pt,
            event_pt: n.dtmf_pt,
        })
    }

    /// The INVITE's Max-Forwards (70 when absent or unreadable): a bridge sends one less.
    pub(super) fn max_forwards(&self) -> u32 {
        message::header_str(&self.invite, "Max-Forwards")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(70)
    }

    /// Refuses the INVITE with a final response (before it is answered), as the flow asked.
    pub(super) fn refuse(&mut self, code: u16, reason: Option<&str>) {
        self.record_server_end(code, "flow response");
        self.respond_invite(code, reason, false);
        self.set_phase(Phase::Ended);
    }

    /// The answer to our late offer, while it is still awaited: a late offer's 200 carried
    /// our offer and the answer comes in the ACK; until it does there is neither an address
    /// nor a codec, and audio sent now would be lost.
    pub(super) fn late_answer_pending(&self) -> Option<Arc<Notify>> {
        (self.awaiting_answer.is_some()
            && self.phase == Phase::Answered
            && self.negotiated.is_none())
        .then(|| self.answer_arrived.clone())
    }

    /// The RTP session while it may not send yet: an answered call sends RTP to an untrusted
    /// caller once it proved it takes part (the ACK, or its RTP).
    pub(super) fn unproven_media(&self) -> Option<Arc<RtpSession>> {
        (self.phase == Phase::Answered && !self.rtp.is_proven()).then(|| self.rtp.clone())
    }

    /// Starts `prompt` on this leg: its bytes in the negotiated codec, and the session that
    /// plays them. [`Leg::prompt_done`] when it ends.
    pub(super) fn start_prompt(&mut self, prompt: Arc<Prompt>) -> (Arc<RtpSession>, Arc<[u8]>) {
        let codec = self
            .negotiated
            .as_ref()
            .map(|n| n.codec)
            .unwrap_or(Codec::Pcmu);
        let payload = prompt.payload(codec).clone();
        self.playing = Some(prompt);
        (self.rtp.clone(), payload)
    }

    pub(super) fn prompt_done(&mut self) {
        self.playing = None;
    }

    pub(super) fn stop_playing(&self) {
        self.rtp.stop_playing();
    }

    /// Since when the caller has been silent, when silence counts: answered and not on hold
    /// either way (on hold the caller may send nothing, RFC 3264 §8.4).
    pub(super) fn silent_since(&self) -> Option<Instant> {
        let answered = self.answered_at?;
        if self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.direction != Direction::SendRecv)
        {
            return None;
        }
        Some(
            self.rtp
                .last_received()
                .map(|t| Instant::from_std(t).max(answered))
                .unwrap_or(answered),
        )
    }

    fn respond_invite(&mut self, code: u16, reason: Option<&str>, with_sdp: bool) {
        if (101..300).contains(&code) {
            // A final refusal is the `end` event, recorded with who decided it.
            self.log.record(CallEvent::Answer { code });
        }
        if code >= 200 && self.final_code.is_none() {
            self.final_code = Some(code);
            if code >= 300 {
                self.set_cause(cause_of_sip_code(code));
            }
        }
        let contact = self.dialog.contact(&self.contact_user);
        let rr: Vec<String> = self.dialog.route_set.clone();
        let mut extra: Vec<(&str, &str)> = Vec::with_capacity(4 + rr.len());
        for r in &rr {
            extra.push(("Record-Route", r.as_str()));
        }
        let sdp_body;
        let body = if with_sdp {
            sdp_body = self.current_sdp();
            Some(("application/sdp", sdp_body.as_bytes()))
        } else {
            None
        };
        if (101..300).contains(&code) {
            extra.push(("Contact", contact.as_str()));
        }
        if (200..300).contains(&code) {
            extra.push(("Allow", ALLOW));
            extra.push(("Supported", SUPPORTED));
        }
        let tag = if code > 100 {
            Some(self.dialog.id.local_tag.as_str())
        } else {
            None
        };
        let bytes = response_bytes(&self.invite, code, reason, tag, &extra, body);
        self.invite_tx.respond(code, bytes);
    }

    /// Ends the leg from our side: BYE when answered, else a final response; `why` is what
    /// made us (the event log's words: `flow ended`, `max duration`, …).
    pub(super) fn end_now(&mut self, code: u16, reason: &str, why: &str) {
        if self.phase != Phase::Ended {
            self.record_server_end(code, why);
        }
        match self.phase {
            Phase::Answered => self.bye_when_acked(),
            Phase::Early => self.respond_invite(code, Some(reason), false),
            Phase::Ended => {}
        }
        self.set_phase(Phase::Ended);
        self.rtp.stop_playing();
    }

    /// RFC 3261 §15: the callee MUST NOT send a BYE before the ACK of its 2xx (or the 2xx
    /// transaction timing out). Before the ACK, the BYE waits for it ([`Leg::finish`]).
    fn bye_when_acked(&mut self) {
        if self.acked {
            self.send_bye();
        } else {
            self.bye_after_ack = true;
        }
    }

    /// Whether our media and signalling may go to the caller unasked: a trusted source, or
    /// one that acknowledged our 2xx or sent RTP (the session holds the proof of all three).
    fn caller_proven(&self) -> bool {
        self.rtp.is_proven()
    }

    fn send_bye(&mut self) {
        self.send_bye_with(&[]);
    }

    /// A BYE with `extra` headers (a `Reason` saying why we end the call).
    fn send_bye_with(&mut self, extra: &[(&str, &str)]) {
        let req = self.dialog.request(rsip::Method::Bye, extra, None);
        // The BYE's outcome does not matter to us: the dialog is over when it is sent (§15.1.1).
        self.endpoint
            .send_request(&self.dialog.id.call_id, req, None);
    }

    /// One event of the dialog; returns the DTMF key a SIP INFO carried.
    fn on_event(&mut self, ev: DialogEvent) -> Option<char> {
        match ev {
            DialogEvent::Cancelled => {
                if self.phase == Phase::Early {
                    tracing::info!("cancelled by the caller");
                    self.record_end("caller", "CANCEL", None);
                    self.set_cause("ORIGINATOR_CANCEL");
                    self.respond_invite(487, None, false);
                    self.set_phase(Phase::Ended);
                }
            }
            DialogEvent::AckTimeout => {
                self.set_cause("RECOVERY_ON_TIMER_EXPIRE");
                let how = if self.caller_proven() {
                    "BYE"
                } else {
                    "no BYE"
                };
                self.record_end("server", how, Some("no ACK for our 200"));
                if self.phase == Phase::Answered || self.bye_after_ack {
                    // §13.3.1.4 says SHOULD send BYE; we do so only to a caller that proved
                    // it takes part: a BYE (and its retransmissions) to a forged INVITE's
                    // source would be amplification aimed at a third party.
                    if self.caller_proven() {
                        tracing::warn!("no ACK for our 200 OK: ending the call with BYE");
                        self.send_bye();
                    } else {
                        tracing::info!(
                            "no ACK for our 200 OK and no RTP from the caller: ending the call \
                             without BYE"
                        );
                    }
                }
                self.bye_after_ack = false;
                self.set_phase(Phase::Ended);
            }
            DialogEvent::Ack { req } => self.on_ack(*req),
            DialogEvent::Request { req, tx } => return self.on_request(*req, *tx),
            DialogEvent::Response { id, resp } => self.on_hold_response(id, &resp),
            DialogEvent::Timeout { id } => {
                let _ = self.hold.on_timeout(id);
                self.sync_hold();
            }
        }
        None
    }

    fn on_ack(&mut self, req: rsip::Request) {
        // The caller took our 2xx: its address takes part, RTP may go there.
        self.acked = true;
        self.rtp.prove();
        if self.bye_after_ack {
            // The flow is over and only waited for this ACK (§15).
            self.bye_after_ack = false;
            self.send_bye();
            return;
        }
        self.answer_in_ack(&req);
    }

    /// A request inside the dialog; returns the DTMF key a SIP INFO carried.
    fn on_request(&mut self, req: rsip::Request, tx: ServerTx) -> Option<char> {
        let cseq = message::cseq(&req).map(|c| c.0).unwrap_or(0);
        let reply = |code: u16, extra: &[(&str, &str)], body: Option<(&str, &[u8])>| {
            let b = response_bytes(&req, code, None, None, extra, body);
            tx.respond(code, b);
        };
        if !self.dialog.accept_remote_cseq(cseq, &req.method) {
            reply(500, &[("Retry-After", "1")], None);
            return None;
        }
        match req.method {
            rsip::Method::Bye => {
                tracing::info!("caller hung up");
                self.record_end("caller", "BYE", None);
                self.set_cause("NORMAL_CLEARING");
                reply(200, &[], None);
                self.set_phase(Phase::Ended);
                // The dialog is over: no BYE of ours is owed any more.
                self.bye_after_ack = false;
                self.rtp.stop_playing();
            }
            rsip::Method::Options => reply(200, &CAPABILITY_HEADERS, None),
            rsip::Method::Info => {
                // SIP INFO DTMF, for phones that do not send RFC 4733 events.
                let ctype = message::header_value(&req, "Content-Type").unwrap_or_default();
                let digit = info_digit(&ctype, &req.body);
                reply(200, &[], None);
                return digit;
            }
            rsip::Method::Invite => self.on_reinvite(req, tx),
            _ => reply(405, &[("Allow", ALLOW)], None),
        }
        None
    }

    /// After the flow: hang up what is still up; a BYE owed before the ACK waits for it
    /// (or for `force_end`).
    pub(super) async fn finish(&mut self, force_end: &mut watch::Receiver<bool>) {
        if self.phase != Phase::Ended {
            self.record_server_end(480, "flow ended");
        }
        match self.phase {
            Phase::Answered => {
                self.bye_when_acked();
                self.set_phase(Phase::Ended);
            }
            Phase::Early => {
                self.respond_invite(480, None, false);
                self.set_phase(Phase::Ended);
            }
            Phase::Ended => {}
        }
        self.rtp.stop_playing();
        self.await_ack_then_bye(force_end).await;
    }

    /// Serves the dialog until the ACK (then BYE), the 2xx timing out (Timer H, 64·T1), the
    /// caller's own BYE, or shutdown. Bounded by Timer H.
    async fn await_ack_then_bye(&mut self, force_end: &mut watch::Receiver<bool>) {
        let mut force_end_alive = true;
        while self.bye_after_ack && !*force_end.borrow() {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    // A key pressed now has no flow left to hear it.
                    Some(ev) => { let _ = self.on_event(ev); }
                    None => break,
                },
                changed = force_end.changed(), if force_end_alive => {
                    force_end_alive = changed.is_ok();
                }
            }
        }
        if self.bye_after_ack {
            // Shutting down before the ACK: §15 forbids the BYE; the 2xx stops with the
            // dialog and the caller's own timers end its side.
            tracing::info!("call ended before the caller's ACK: no BYE");
            self.bye_after_ack = false;
        }
    }
}

/// `at`, or never.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next RFC 4733 packet, or never when the session gives none.
async fn recv_event(rx: &mut Option<mpsc::Receiver<ReceivedRtp>>) -> Option<ReceivedRtp> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
