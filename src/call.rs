//! One live call: a task that owns the dialog, the INVITE transaction, the RTP session and
//! the callflow run. It implements [`CallControl`] for the runtime, and while the runtime waits
//! (a prompt playing, a sleep) it keeps serving the dialog: BYE, CANCEL, re-INVITE, OPTIONS,
//! INFO, the ACK, the RTP timeout, the maximum duration and shutdown.
//!
//! Towards a source that is not trusted, nothing is sent that the caller has not asked for:
//! RTP starts once its address proved it takes part (the ACK of our 2xx, or its first RTP
//! packet), early media stops after a few unproven seconds, and a BYE waits for the ACK
//! (RFC 3261 §15) and is not sent at all to an address that never proved itself.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::callflow::runtime::Runtime;
use crate::callflow::{CallControl, CallEnded, CallTiming};
use crate::flow::{CallInfo, Node};
use crate::media::dtmf::{info_digit, DtmfReceiver};
use crate::media::prompt::Prompt;
use crate::media::rtp::ReceivedRtp;
use crate::media::rtp::{PlayResult, RtpSession};
use crate::media::sdp::{self, Direction, LocalSession, Negotiated, Sdp};
use crate::sip::dialog::Dialog;
use crate::sip::endpoint::{DialogEvent, Endpoint, ServerTx};
use crate::sip::message;
use crate::sip::outgoing::response_bytes;
pub use crate::sip::{ACCEPT, ALLOW, SUPPORTED};
use crate::store::{Cdr, Store, Write};
use std::collections::VecDeque;

/// Shared by all calls: what a call needs from the server.
pub struct CallContext {
    pub endpoint: Arc<Endpoint>,
    pub runtime: Arc<Runtime>,
    pub rtp_timeout: Option<Duration>,
    pub max_duration: Option<Duration>,
    /// Set when live calls must end now (the shutdown grace period is over).
    pub force_end: watch::Receiver<bool>,
    pub active: Arc<AtomicUsize>,
    pub stats: Arc<CallStats>,
    /// Where the call's CDR goes when it ends (None: no CDRs).
    pub cdrs: Option<Store>,
}

/// Counters across calls.
#[derive(Default, Debug)]
pub struct CallStats {
    pub total: AtomicU64,
    pub answered: AtomicU64,
    pub rtp_timeouts: AtomicU64,
}

/// Everything the server decided before the call task starts.
pub struct CallSetup {
    pub invite: rsip::Request,
    pub tx: ServerTx,
    pub info: CallInfo,
    pub flow: Arc<Node>,
    pub dialog: Dialog,
    pub rtp: Arc<RtpSession>,
    /// The negotiated session when the INVITE had an offer; None for a late offer.
    pub negotiated: Option<Negotiated>,
    /// The INVITE's offer, parsed: the answer mirrors its m= lines (RFC 3264 §6).
    pub offer: Option<Sdp>,
    pub local_sdp: LocalSession,
    /// The INVITE came from a trusted source (a carrier, a proxy in front): its media address
    /// need not prove itself before RTP goes there, nor is its early media capped.
    pub source_trusted: bool,
    /// How long early media goes to an address that has not proved it takes part.
    pub early_media_unproven: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No final response yet.
    Early,
    /// 200 sent (ACK may still be pending).
    Answered,
    /// A final non-2xx was sent, or the dialog is over.
    Ended,
}

/// What admission and [`Call::run`] set up outside the call, undone when the call's task
/// ends — normally or unwinding from a panic (a lost count would refuse calls forever at
/// `max_calls`): the dialog leaves the endpoint and the call stops counting.
struct Admitted {
    ctx: Arc<CallContext>,
    dialog: crate::sip::endpoint::DialogId,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.ctx.endpoint.unregister_dialog(self.dialog.clone());
        self.ctx.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A live call.
pub struct Call {
    ctx: Arc<CallContext>,
    info: CallInfo,
    invite: rsip::Request,
    invite_tx: ServerTx,
    dialog: Dialog,
    events: mpsc::UnboundedReceiver<DialogEvent>,
    phase: Phase,
    early_media_sent: bool,
    rtp: Arc<RtpSession>,
    negotiated: Option<Negotiated>,
    /// The caller's last description (its offer, or its answer in an ACK): our answers and
    /// later offers keep its m= lines, the ones we do not use at port 0 (RFC 3264 §6, §8).
    offer: Option<Sdp>,
    local_sdp: LocalSession,
    /// The prompt playing now, to re-encode it when a re-INVITE or the ACK changes the codec.
    playing: Option<Arc<Prompt>>,
    /// Woken when the answer to our offer arrives in an ACK.
    answer_arrived: Arc<Notify>,
    /// The SDP we last sent, to answer a re-INVITE that changes nothing with the same version.
    last_sdp: Option<String>,
    /// We sent an offer (late offer) and wait for the answer in the ACK.
    /// The CSeq of that INVITE: only its ACK carries the answer (an earlier INVITE's ACK may
    /// arrive after it over UDP and has nothing to say about this offer).
    awaiting_answer: Option<u32>,
    /// The caller put us on hold (sendonly/inactive): no RTP is expected from them.
    held: bool,
    answered_at: Option<Instant>,
    started: Instant,
    force_end: watch::Receiver<bool>,
    /// RFC 4733 packets from the RTP session, and their decoder.
    dtmf_events: Option<mpsc::Receiver<ReceivedRtp>>,
    dtmf: DtmfReceiver,
    /// DTMF keys received and not yet taken by the flow.
    digits: VecDeque<char>,
    /// Keys that stop the prompt playing now.
    stop_on: Vec<char>,
    /// The key that stopped the last prompt.
    stopped_by: Option<char>,
    digit_arrived: Arc<Notify>,
    /// The final response sent to the INVITE (200 when answered), for the CDR.
    final_code: Option<u16>,
    /// Why the call ended, in FreeSWITCH/Kazoo terms; the first cause found wins.
    hangup_cause: Option<&'static str>,
    source_trusted: bool,
    early_media_unproven: Duration,
    /// The caller acknowledged our 2xx: a BYE may go (RFC 3261 §15).
    acked: bool,
    /// We hung up before the ACK: the BYE goes when it arrives.
    bye_after_ack: bool,
}

impl Call {
    /// Registers the dialog and runs the call to its end. Consumes the setup.
    pub async fn run(ctx: Arc<CallContext>, setup: CallSetup) {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        ctx.endpoint
            .register_dialog(setup.dialog.id.clone(), ev_tx, Some(&setup.tx));
        // Declared before the call, so it is dropped after it, also when a panic unwinds.
        let admitted = Admitted {
            ctx: ctx.clone(),
            dialog: setup.dialog.id.clone(),
        };
        ctx.stats.total.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("call", call_id = %setup.info.call_id);
        let mut call = Call {
            force_end: ctx.force_end.clone(),
            ctx: ctx.clone(),
            info: setup.info,
            invite: setup.invite,
            invite_tx: setup.tx,
            dialog: setup.dialog,
            events: ev_rx,
            phase: Phase::Early,
            early_media_sent: false,
            rtp: setup.rtp,
            negotiated: setup.negotiated,
            offer: setup.offer,
            local_sdp: setup.local_sdp,
            playing: None,
            answer_arrived: Arc::new(Notify::new()),
            last_sdp: None,
            awaiting_answer: None,
            held: false,
            answered_at: None,
            started: Instant::now(),
            dtmf_events: None,
            dtmf: DtmfReceiver::new(),
            digits: VecDeque::new(),
            stop_on: Vec::new(),
            stopped_by: None,
            digit_arrived: Arc::new(Notify::new()),
            final_code: None,
            hangup_cause: None,
            source_trusted: setup.source_trusted,
            early_media_unproven: setup.early_media_unproven,
            acked: false,
            bye_after_ack: false,
        };
        if !call.source_trusted {
            // No amplification: one forged INVITE must not aim our RTP at a third party.
            call.rtp.require_proof();
        }
        call.dtmf_events = call.rtp.take_events();
        if let Some(n) = &call.negotiated {
            call.apply_negotiated(n.clone());
        }
        let flow = setup.flow;
        let runtime = ctx.runtime.clone();
        tracing::Instrument::instrument(
            async {
                runtime.run(&flow, &mut call).await;
                call.finish().await;
            },
            span,
        )
        .await;
        if let Some(store) = &ctx.cdrs {
            // Through the non-blocking queue: a full queue drops the CDR, never the call.
            store.write(Write::Cdr(call.cdr()));
        }
        // The RTP session goes first (its ports start back to the pool), then the call
        // stops counting: a call admitted because this one ended should find its ports.
        drop(call);
        drop(admitted);
    }

    fn apply_negotiated(&mut self, n: Negotiated) {
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

    fn respond_invite(&mut self, code: u16, reason: Option<&str>, with_sdp: bool) {
        if code >= 200 && self.final_code.is_none() {
            self.final_code = Some(code);
            if code >= 300 {
                self.set_cause(cause_of_code(code));
            }
        }
        let contact = self.dialog.contact(&self.info.request_user);
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

    /// The SDP for our side now: an answer to what was negotiated, or an offer (late offer).
    fn current_sdp(&mut self) -> String {
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
        let render = |call: &Call| match (&call.negotiated, offer) {
            (Some(n), false) => match &call.offer {
                Some(o) => sdp::answer_to_offer(&call.local_sdp, o, n),
                None => sdp::answer(&call.local_sdp, n),
            },
            _ => match &call.offer {
                Some(o) => sdp::offer_keeping_lines(&call.local_sdp, o, 101),
                None => sdp::offer(&call.local_sdp, 101),
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

    /// Serves dialog events while `fut` runs; returns its output, or CallEnded if the call
    /// ended first.
    async fn serve<F: Future>(&mut self, fut: F) -> Result<F::Output, CallEnded> {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.phase == Phase::Ended {
                return Err(CallEnded);
            }
            tokio::select! {
                out = &mut fut => return Ok(out),
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => { self.phase = Phase::Ended; }
                },
                _ = tick.tick() => self.check_limits(),
                Some(pkt) = recv_event(&mut self.dtmf_events) => {
                    if let Some(d) = self.dtmf.on_packet(pkt.ssrc, pkt.timestamp, pkt.marker, &pkt.payload) {
                        self.on_digit(d);
                    }
                }
                _ = self.force_end.changed() => {
                    if *self.force_end.borrow() {
                        tracing::info!("shutdown grace period over: ending the call");
                        self.set_cause("SYSTEM_SHUTDOWN");
                        self.end_now(503, "Service Unavailable");
                    }
                }
            }
        }
    }

    /// A DTMF key from RTP or SIP INFO: queued for the flow; a terminator stops the prompt.
    fn on_digit(&mut self, d: char) {
        tracing::debug!(digit = %d, "DTMF");
        self.digits.push_back(d);
        if self.stop_on.contains(&d) && self.stopped_by.is_none() {
            self.stopped_by = Some(d);
            self.rtp.stop_playing();
        }
        self.digit_arrived.notify_one();
    }

    fn set_cause(&mut self, cause: &'static str) {
        self.hangup_cause.get_or_insert(cause);
    }

    /// The call's CDR, once it has ended.
    fn cdr(&self) -> Cdr {
        let greg = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| crate::store::unix_to_gregorian(i64::try_from(d.as_secs()).unwrap_or(0)))
        };
        let timing = self.timing();
        let end = crate::store::gregorian_now();
        let start = greg(timing.started).unwrap_or(end);
        let info = &self.info;
        let at = |user: &str, host: &str| {
            if user.is_empty() {
                host.to_string()
            } else {
                format!("{user}@{host}")
            }
        };
        Cdr {
            call_id: info.call_id.clone(),
            account_id: info.account_id.clone(),
            from: at(&info.from_user, &info.from_realm),
            to: at(&info.request_user, &info.request_realm),
            start,
            answer: greg(timing.answered),
            end,
            duration_s: (end - start).max(0),
            hangup_cause: self.hangup_cause.unwrap_or("NORMAL_CLEARING").to_string(),
            sip_code: self.final_code,
        }
    }

    fn check_limits(&mut self) {
        let now = Instant::now();
        if let Some(max) = self.ctx.max_duration {
            if now.duration_since(self.started) >= max {
                tracing::info!("maximum call duration reached");
                self.set_cause("ALLOTTED_TIMEOUT");
                self.end_now(480, "Maximum Duration");
                return;
            }
        }
        if let (Some(timeout), Some(answered)) = (self.ctx.rtp_timeout, self.answered_at) {
            if self.held {
                return;
            }
            let last = self
                .rtp
                .last_received()
                .map(|t| Instant::from_std(t).max(answered))
                .unwrap_or(answered);
            if now.duration_since(last) >= timeout {
                tracing::info!("no RTP from the caller for {timeout:?}: hanging up");
                self.ctx.stats.rtp_timeouts.fetch_add(1, Ordering::Relaxed);
                self.set_cause("MEDIA_TIMEOUT");
                self.end_now(408, "Request Timeout");
            }
        }
    }

    /// Ends the call from our side: BYE when answered, else a final response.
    fn end_now(&mut self, code: u16, reason: &str) {
        match self.phase {
            Phase::Answered => self.bye_when_acked(),
            Phase::Early => self.respond_invite(code, Some(reason), false),
            Phase::Ended => {}
        }
        self.phase = Phase::Ended;
        self.rtp.stop_playing();
    }

    /// RFC 3261 §15: the callee MUST NOT send a BYE before the ACK of its 2xx (or the 2xx
    /// transaction timing out). Before the ACK, the BYE waits for it ([`Call::finish`]).
    fn bye_when_acked(&mut self) {
        if self.acked {
            self.send_bye();
        } else {
            self.bye_after_ack = true;
        }
    }

    /// Whether our media and signalling may go to the caller unasked: a trusted source, or
    /// one that acknowledged our 2xx or sent RTP.
    fn caller_proven(&self) -> bool {
        self.source_trusted || self.acked || self.rtp.received_packets() > 0
    }

    fn send_bye(&mut self) {
        let req = self.dialog.request(rsip::Method::Bye, &[], None);
        // The BYE's outcome does not matter to us: the dialog is over when it is sent (§15.1.1).
        self.ctx
            .endpoint
            .send_request(&self.dialog.id.call_id, req, None);
    }

    fn on_event(&mut self, ev: DialogEvent) {
        match ev {
            DialogEvent::Cancelled => {
                if self.phase == Phase::Early {
                    tracing::info!("cancelled by the caller");
                    self.set_cause("ORIGINATOR_CANCEL");
                    self.respond_invite(487, None, false);
                    self.phase = Phase::Ended;
                }
            }
            DialogEvent::AckTimeout => {
                self.set_cause("RECOVERY_ON_TIMER_EXPIRE");
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
                self.phase = Phase::Ended;
            }
            DialogEvent::Ack { req } => self.on_ack(req),
            DialogEvent::Request { req, tx } => self.on_request(req, tx),
            DialogEvent::Response { .. } | DialogEvent::Timeout { .. } => {}
        }
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
        if self.awaiting_answer.is_none() || self.awaiting_answer != Some(cseq_of(&req)) {
            return;
        }
        self.awaiting_answer = None;
        let answer = std::str::from_utf8(&req.body)
            .ok()
            .filter(|s| !s.trim().is_empty())
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

    fn on_request(&mut self, req: rsip::Request, tx: ServerTx) {
        let cseq = message::cseq(&req).map(|c| c.0).unwrap_or(0);
        let reply = |code: u16, extra: &[(&str, &str)], body: Option<(&str, &[u8])>| {
            let b = response_bytes(&req, code, None, None, extra, body);
            tx.respond(code, b);
        };
        if !self.dialog.accept_remote_cseq(cseq, &req.method) {
            reply(500, &[("Retry-After", "1")], None);
            return;
        }
        match req.method {
            rsip::Method::Bye => {
                tracing::info!("caller hung up");
                self.set_cause("NORMAL_CLEARING");
                reply(200, &[], None);
                self.phase = Phase::Ended;
                // The dialog is over: no BYE of ours is owed any more.
                self.bye_after_ack = false;
                self.rtp.stop_playing();
            }
            rsip::Method::Options => reply(
                200,
                &[
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Supported", SUPPORTED),
                ],
                None,
            ),
            rsip::Method::Info => {
                // SIP INFO DTMF, for phones that do not send RFC 4733 events.
                let ctype = message::header_value(&req, "Content-Type").unwrap_or_default();
                let digit = info_digit(&ctype, &req.body);
                reply(200, &[], None);
                if let Some(d) = digit {
                    self.on_digit(d);
                }
            }
            rsip::Method::Invite => self.on_reinvite(req, tx),
            _ => reply(405, &[("Allow", ALLOW)], None),
        }
    }

    /// A re-INVITE (hold/unhold, codec change, session refresh): answered with the current
    /// session, updated by the new offer if there is one.
    fn on_reinvite(&mut self, req: rsip::Request, tx: ServerTx) {
        let respond = |call: &mut Call, code: u16, extra: &[(&str, &str)], body: Option<String>| {
            let contact = call.dialog.contact(&call.info.request_user);
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
        let ctype = message::header_value(&req, "Content-Type");
        if req.body.iter().any(|b| !b.is_ascii_whitespace()) {
            if !ctype
                .as_deref()
                .map(|c| c.trim().to_ascii_lowercase().starts_with("application/sdp"))
                .unwrap_or(false)
            {
                respond(self, 415, &[("Accept", "application/sdp")], None);
                return;
            }
            let neg = std::str::from_utf8(&req.body)
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

    /// After the flow: hang up what is still up; a BYE owed before the ACK waits for it.
    async fn finish(&mut self) {
        match self.phase {
            Phase::Answered => {
                self.bye_when_acked();
                self.phase = Phase::Ended;
            }
            Phase::Early => {
                self.respond_invite(480, None, false);
                self.phase = Phase::Ended;
            }
            Phase::Ended => {}
        }
        self.rtp.stop_playing();
        self.await_ack_then_bye().await;
    }

    /// Serves the dialog until the ACK (then BYE), the 2xx timing out (Timer H, 64·T1), the
    /// caller's own BYE, or shutdown. Bounded by Timer H.
    async fn await_ack_then_bye(&mut self) {
        let mut force_end_alive = true;
        while self.bye_after_ack && !*self.force_end.borrow() {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                changed = self.force_end.changed(), if force_end_alive => {
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

#[async_trait]
impl CallControl for Call {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    fn timing(&self) -> CallTiming {
        // Wall-clock times from the monotonic ones (CDRs want dates).
        let now_wall = std::time::SystemTime::now();
        let now = Instant::now();
        let wall = |t: Instant| now_wall.checked_sub(now.duration_since(t));
        CallTiming {
            started: wall(self.started),
            answered: self.answered_at.and_then(wall),
        }
    }

    async fn answer(&mut self) -> Result<(), CallEnded> {
        match self.phase {
            Phase::Answered => return Ok(()),
            Phase::Ended => return Err(CallEnded),
            Phase::Early => {}
        }
        self.respond_invite(200, None, true);
        self.phase = Phase::Answered;
        if !self.source_trusted {
            // Answered, the address proves itself by the ACK or its RTP: no more unproven
            // early audio meanwhile.
            self.rtp.end_unproven();
        }
        self.answered_at = Some(Instant::now());
        self.ctx.stats.answered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn early_media(&mut self) -> Result<(), CallEnded> {
        match self.phase {
            Phase::Ended => return Err(CallEnded),
            Phase::Answered => return Ok(()),
            Phase::Early => {}
        }
        if !self.early_media_sent {
            if self.negotiated.is_none() {
                // A late offer cannot carry early media reliably without 100rel: answer instead.
                return self.answer().await;
            }
            self.respond_invite(183, None, true);
            self.early_media_sent = true;
            if !self.source_trusted {
                // Early media has no ACK to prove the address: a few seconds unproven, then
                // silence unless the caller's RTP has arrived.
                self.rtp.allow_unproven_for(self.early_media_unproven);
            }
        }
        Ok(())
    }

    async fn play(
        &mut self,
        prompt: Arc<Prompt>,
        terminators: &[char],
    ) -> Result<Option<char>, CallEnded> {
        if self.phase == Phase::Ended {
            return Err(CallEnded);
        }
        // A late offer: our 200 carried the offer and the answer comes in the ACK. Until it
        // does there is neither an address nor a codec, and audio sent now would be lost:
        // the caller should hear the prompt from its start.
        while self.awaiting_answer.is_some()
            && self.phase == Phase::Answered
            && self.negotiated.is_none()
        {
            let arrived = self.answer_arrived.clone();
            self.serve(async move { arrived.notified().await }).await?;
        }
        // No amplification: an answered call sends RTP to an untrusted caller once it proved
        // it takes part (the ACK, or its RTP). Wait for that rather than lose the prompt's
        // start: the caller hears it whole.
        while self.phase == Phase::Answered && !self.source_trusted && !self.rtp.is_proven() {
            let rtp = self.rtp.clone();
            self.serve(async move { rtp.wait_proven().await }).await?;
        }
        let codec = self
            .negotiated
            .as_ref()
            .map(|n| n.codec)
            .unwrap_or(crate::media::codec::Codec::Pcmu);
        let payload = prompt.payload(codec).clone();
        let rtp = self.rtp.clone();
        self.playing = Some(prompt);
        self.stop_on = terminators.to_vec();
        self.stopped_by = None;
        let result = self.serve(async move { rtp.play(payload).await }).await;
        self.playing = None;
        self.stop_on.clear();
        match result {
            Ok(PlayResult::Finished) | Ok(PlayResult::Stopped) => {
                if self.phase == Phase::Ended {
                    Err(CallEnded)
                } else {
                    Ok(self.stopped_by.take())
                }
            }
            Err(e) => {
                self.rtp.stop_playing();
                Err(e)
            }
        }
    }

    async fn sleep(&mut self, d: Duration) -> Result<(), CallEnded> {
        self.serve(tokio::time::sleep(d)).await
    }

    fn take_digits(&mut self) -> String {
        self.digits.drain(..).collect()
    }

    async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, CallEnded> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.digits.pop_front() {
                return Ok(Some(d));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let arrived = self.digit_arrived.clone();
            // Either a key arrived (loop and take it) or the time is up (loop and return None).
            let _elapsed = self
                .serve(async move { tokio::time::timeout(left, arrived.notified()).await })
                .await?;
        }
    }

    async fn respond(&mut self, code: u16, reason: Option<String>) -> Result<(), CallEnded> {
        match self.phase {
            Phase::Early => {
                let code = if (300..700).contains(&code) {
                    code
                } else {
                    480
                };
                self.respond_invite(code, reason.as_deref(), false);
                self.phase = Phase::Ended;
                Ok(())
            }
            Phase::Answered => self.hangup().await,
            Phase::Ended => Err(CallEnded),
        }
    }

    async fn hangup(&mut self) -> Result<(), CallEnded> {
        self.end_now(480, "Temporarily Unavailable");
        Ok(())
    }
}

/// The hangup cause FreeSWITCH (and so Kazoo's CDRs) gives a final response code.
fn cause_of_code(code: u16) -> &'static str {
    match code {
        403 | 603 => "CALL_REJECTED",
        404 | 484 => "UNALLOCATED_NUMBER",
        408 => "RECOVERY_ON_TIMER_EXPIRE",
        480 => "NO_USER_RESPONSE",
        486 | 600 => "USER_BUSY",
        487 => "ORIGINATOR_CANCEL",
        488 => "INCOMPATIBLE_DESTINATION",
        500 | 503 => "NORMAL_TEMPORARY_FAILURE",
        _ => "NORMAL_UNSPECIFIED",
    }
}

/// The CSeq number of a request (0 when unreadable: the parser has already checked it).
fn cseq_of(req: &rsip::Request) -> u32 {
    use rsip::headers::UntypedHeader;
    req.headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::CSeq(c) => c.value().split_whitespace().next()?.parse().ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// The next RFC 4733 packet, or never when the session gives none.
async fn recv_event(rx: &mut Option<mpsc::Receiver<ReceivedRtp>>) -> Option<ReceivedRtp> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
