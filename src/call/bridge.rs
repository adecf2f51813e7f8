//! The bridge: the caller's leg joined to a second, outbound leg. [`Call::run_bridge`] rings
//! the request's endpoints (`targets.rs` turns each into INVITEs, `outbound.rs` is one INVITE
//! and its dialog), relays the callee's ringing or early media to the caller (or plays a ring
//! tone once the caller already hears our media), answers the caller when the callee answers
//! (not before), joins the two RTP sessions with a `media::relay::Relay`, and serves both
//! legs until one hangs up. A caller who hangs up ends the run (`CallEnded`); a callee who
//! does, or a failed attempt, comes back as a [`BridgeOutcome`] for the module to branch on.
//!
//! One RTP session serves the outbound side of a bridge, offered in every fork's INVITE: only
//! the fork that answers keeps sending to it, and early media is taken from the first fork
//! that sends some.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::outbound::{ForkNews, OutboundLeg};
use super::targets::{self, Fork, LocalSockets, ResolveContext};
use super::{Call, Leg, Phase};
use crate::callflow::CallEnded;
use crate::config::MediaEncryption;
use crate::flow::bridge::{BridgeOutcome, BridgeRequest, DialStatus};
use crate::media::player::PlayResult;
use crate::media::prompt::Prompt;
use crate::media::relay::{LegFormat, Relay};
use crate::media::rtp::RtpSession;
use crate::media::sdp::{self, LocalSession, Negotiated};
use crate::media::srtp::policy::{self, Rekey};
use crate::media::srtp::sdes::CryptoLine;
use crate::media::tone;
use crate::sip::endpoint::DialogEvent;
use crate::sip::uac::InviteSpec;

/// How long cancelled forks are waited for after the bridge (their 487, or a 2xx that
/// crossed the CANCEL and must be hung up): Timer B's 64·T1.
const SETTLE: Duration = Duration::from_secs(32);

/// One endpoint of the request while it rings: its stages (carriers in order), the forks of
/// the current stage.
struct Endpoint {
    stages: std::collections::VecDeque<Vec<Fork>>,
    start_at: Instant,
    give_up_at: Instant,
    started: bool,
    /// Indexes into the bridge's forks of the current stage.
    live: Vec<usize>,
    finished: bool,
    /// It rang past its timeout (no answer), rather than failing.
    timed_out: bool,
}

/// The ringback played to the caller while the callee rings.
type Playing = Pin<Box<dyn Future<Output = PlayResult> + Send>>;

/// A bridge in progress.
struct Bridge {
    forks: Vec<OutboundLeg>,
    endpoints: Vec<Endpoint>,
    events_tx: mpsc::UnboundedSender<DialogEvent>,
    events: mpsc::UnboundedReceiver<DialogEvent>,
    b_rtp: Arc<RtpSession>,
    /// What the answered (or early-media) fork's SDP negotiated.
    b_format: Option<LegFormat>,
    relay: Option<Relay>,
    /// The caller's format the relay was started with (a re-INVITE may change it).
    relayed_a_format: Option<LegFormat>,
    ringback: Option<Playing>,
    /// What the caller hears while it rings, when the request names it (else the ring tone
    /// once the caller hears our media, or its own phone's ring on a 180).
    ringback_prompt: Option<Arc<Prompt>>,
    /// `invite_response_timeout_ms`: a fork that hears nothing for this long counts as 408.
    silent_limit: Duration,
    /// The fork whose early media the caller hears.
    early_from: Option<usize>,
    winner: Option<usize>,
    /// Final codes of the failed forks.
    codes: Vec<u16>,
    /// When the first INVITE went out, and when the winner answered (for its CDR).
    started: Instant,
    answered_at: Option<Instant>,
    /// The keys `b_rtp` is SRTP with (ours, the callee's), once a fork's answer or early
    /// media keyed it.
    b_srtp: Option<(CryptoLine, CryptoLine)>,
    spec: SpecBase,
}

/// What every fork's INVITE shares.
struct SpecBase {
    /// The caller ID the callee sees (the request's, else the caller's own), and the realm
    /// of the From URI.
    caller_name: Option<String>,
    caller_number: String,
    realm: String,
    offer: String,
    /// Our outbound side (address, o= line) the offer was made of: each fork versions its
    /// own descriptions from it.
    local: LocalSession,
    max_forwards: u32,
    contact_user: String,
    /// The account's SRTP mode: a fork over TLS is offered RTP/SAVP with SDES keys of its
    /// own unless it is `off` (`media/srtp/policy.rs`).
    encryption: MediaEncryption,
}

impl Call {
    pub(super) async fn run_bridge(
        &mut self,
        request: &BridgeRequest,
        ringback: Option<Arc<Prompt>>,
    ) -> Result<BridgeOutcome, CallEnded> {
        if self.leg.phase() == Phase::Ended {
            return Err(CallEnded);
        }
        // A bridge back into pivotd (or any loop) runs out of hops instead of calls.
        let max_forwards = self.leg.max_forwards().saturating_sub(1);
        if max_forwards == 0 {
            tracing::warn!("bridge refused: Max-Forwards exhausted (a loop?)");
            return Ok(BridgeOutcome {
                sip_code: Some(483),
                ..BridgeOutcome::failed("EXCHANGE_ROUTING_ERROR")
            });
        }
        let mut bridge = match self.prepare_bridge(request, max_forwards).await {
            Ok(b) => b,
            Err(outcome) => return Ok(outcome),
        };
        bridge.ringback_prompt = ringback;
        let result = self.ring_and_talk(&mut bridge, request).await;
        self.write_b_leg_cdr(&bridge, &result);
        bridge.finish();
        // A caller held for the callee's sake is taken off hold for what follows.
        self.leg.hold_peer(false);
        result
    }

    /// Resolves the endpoints and opens the outbound media; a failure is the outcome.
    async fn prepare_bridge(
        &mut self,
        request: &BridgeRequest,
        max_forwards: u32,
    ) -> Result<Bridge, BridgeOutcome> {
        let ctx = self.ctx.clone();
        // The config in force when the bridge starts, for all of it.
        let cfg = ctx.cfg.get();
        let local = LocalSockets::of(ctx.endpoint.transport());
        let resolve_ctx = ResolveContext {
            config: &cfg,
            account_id: &self.info.account_id,
            registrar: &ctx.registrar,
            local: &local,
            calling_device: self.info.device_id.as_deref(),
            can_call_self: request.can_call_self,
        };
        let now = Instant::now();
        let mut endpoints = Vec::new();
        let mut first_failure = None;
        for ep in &request.endpoints {
            match targets::resolve(&resolve_ctx, &ep.target).await {
                Ok(r) if !r.stages.is_empty() => {
                    let ring_for = ep.timeout.unwrap_or(request.timeout).min(request.timeout);
                    endpoints.push(Endpoint {
                        stages: r.stages.into(),
                        start_at: now + ep.delay,
                        give_up_at: now + ep.delay + ring_for,
                        started: false,
                        live: Vec::new(),
                        finished: false,
                        timed_out: false,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    // Kazoo skips an endpoint it cannot build and rings the others.
                    tracing::info!(target = ?ep.target, "bridge endpoint skipped: {e}");
                    first_failure.get_or_insert(e.cause());
                }
            }
        }
        if endpoints.is_empty() {
            return Err(BridgeOutcome::failed(
                first_failure.unwrap_or("NO_ROUTE_DESTINATION"),
            ));
        }
        let ports = ctx.pool.allocate().map_err(|e| {
            tracing::warn!("bridge: no RTP ports: {e}");
            BridgeOutcome::failed("NORMAL_TEMPORARY_FAILURE")
        })?;
        let b_rtp = RtpSession::start(ports, &ctx.pacer, None, 0).map_err(|e| {
            tracing::warn!("bridge: cannot start RTP: {e}");
            BridgeOutcome::failed("NORMAL_TEMPORARY_FAILURE")
        })?;
        // We chose to call this address: it has nothing to prove, and symmetric RTP latches
        // onto where the callee really sends from (a phone behind NAT).
        b_rtp.prove();
        let media_ip = cfg.sip.advertise.unwrap_or(cfg.media.ip);
        let local = LocalSession {
            ip: media_ip,
            port: b_rtp.local_port(),
            session_id: u64::from(rand::random::<u32>()),
            version: 1,
            crypto: Vec::new(),
            savp: false,
        };
        let offer = sdp::offer(&local, sdp::OFFERED_EVENT_PT);
        let (events_tx, events) = mpsc::unbounded_channel();
        let caller = request.caller_id.clone().unwrap_or_default();
        let name = caller.name.or_else(|| self.info.caller_id_name.clone());
        let number = caller
            .number
            .or_else(|| self.info.caller_id_number.clone())
            .unwrap_or_else(|| self.info.from_user.clone());
        Ok(Bridge {
            forks: Vec::new(),
            endpoints,
            events_tx,
            events,
            b_rtp: Arc::new(b_rtp),
            b_format: None,
            relay: None,
            relayed_a_format: None,
            ringback: None,
            ringback_prompt: None,
            silent_limit: Duration::from_millis(cfg.sip.invite_response_timeout_ms),
            early_from: None,
            winner: None,
            codes: Vec::new(),
            started: Instant::now(),
            answered_at: None,
            b_srtp: None,
            spec: SpecBase {
                caller_name: name,
                caller_number: number,
                realm: self.info.request_realm.clone(),
                offer,
                local,
                max_forwards,
                contact_user: "pivotd".into(),
                encryption: cfg
                    .account(&self.info.account_id)
                    .and_then(|a| a.encryption)
                    .unwrap_or(cfg.media.encryption),
            },
        })
    }

    /// Rings until a fork answers (then talks) or every fork failed, the time is up, or the
    /// caller left.
    async fn ring_and_talk(
        &mut self,
        b: &mut Bridge,
        request: &BridgeRequest,
    ) -> Result<BridgeOutcome, CallEnded> {
        let ring_deadline = Instant::now() + request.timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let answered_at = b.answered_at;
            if self.leg.phase() == Phase::Ended {
                tracing::info!("bridge: the caller left");
                return Err(CallEnded);
            }
            let now = Instant::now();
            if answered_at.is_none() {
                b.start_due(self, now);
                b.give_up_late(now);
                b.give_up_silent(self, now);
                if let Some(outcome) = b.failed_outcome() {
                    return Ok(outcome);
                }
                if now >= ring_deadline {
                    tracing::info!("bridge: no answer in {:?}", request.timeout);
                    return Ok(BridgeOutcome {
                        status: DialStatus::NoAnswer,
                        ..BridgeOutcome::failed("NO_ANSWER")
                    });
                }
            } else if let (Some(limit), Some(at)) = (request.time_limit, answered_at) {
                if now.duration_since(at) >= limit {
                    tracing::info!("bridge: time limit reached");
                    return Ok(b.completed(at));
                }
            }
            if let Some(at) = answered_at {
                if b.winner
                    .is_some_and(|w| b.forks.get(w).is_none_or(|f| f.is_done()))
                {
                    tracing::info!("bridge: the callee hung up");
                    return Ok(b.completed(at));
                }
            }
            b.keep_relay(self);
            if answered_at.is_some() {
                b.pass_holds(&mut self.leg);
            }
            let wake = b.next_wake(ring_deadline, answered_at, request.time_limit);
            tokio::select! {
                digit = self.leg.next() => {
                    if let Some(d) = digit {
                        if answered_at.is_some() && request.hangup_on_star && d == '*' {
                            tracing::info!("bridge: * from the caller ends it");
                            if let Some(at) = answered_at {
                                return Ok(b.completed(at));
                            }
                        }
                    }
                }
                Some(ev) = b.events.recv() => {
                    if let Some(i) = b.forks.iter().position(|f| f.owns(&ev)) {
                        let news = b.forks.get_mut(i).map(|f| f.on_event(ev));
                        if let Some(news) = news {
                            self.on_fork_news(b, i, news);
                        }
                    }
                }
                result = play_next(&mut b.ringback) => {
                    // One cadence ended: ring again while nothing answered.
                    b.ringback = None;
                    if result == PlayResult::Finished && answered_at.is_none() {
                        self.start_ringback(b);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = tick.tick() => self.check_limits(),
                _ = self.force_end.changed() => {
                    if *self.force_end.borrow() {
                        tracing::info!("shutdown grace period over: ending the bridged call");
                        self.leg.set_cause("SYSTEM_SHUTDOWN");
                        self.leg.end_now(503, "Service Unavailable", "shutdown");
                    }
                }
            }
        }
    }

    /// What a fork's news changes (an answer sets `b.answered_at`).
    fn on_fork_news(&mut self, b: &mut Bridge, i: usize, news: ForkNews) {
        match news {
            ForkNews::Nothing => {}
            ForkNews::Ringing { early } => {
                if b.winner.is_some() {
                    return;
                }
                if b.early_from.is_some() {
                    return;
                }
                match early {
                    // The callee's own early media (a carrier's announcement) wins over any
                    // ringback of ours.
                    Some(n) => {
                        if self.leg.open_early_media() {
                            b.early_from = Some(i);
                            b.stop_ringback(self);
                            b.key_b_media(i);
                            b.set_b_media(&n);
                        } else {
                            self.leg.ringing();
                        }
                    }
                    None if b.ringback.is_some() => {}
                    // A named ringback is heard as early media (183); the ring tone only
                    // once the caller already hears us, else its phone rings by itself (180).
                    None if self.leg.hears_our_media()
                        || (b.ringback_prompt.is_some() && self.leg.open_early_media()) =>
                    {
                        self.start_ringback(b);
                    }
                    None => self.leg.ringing(),
                }
            }
            ForkNews::Answered { answer } => {
                if b.winner.is_some() {
                    // A second answer (forked 2xx): only one callee gets the caller.
                    if let Some(f) = b.forks.get_mut(i) {
                        f.stop();
                    }
                    return;
                }
                let Some(answer) = answer else {
                    // (Or not the SRTP it must be: `OutboundLeg::answer_in`.)
                    tracing::warn!("bridge: the callee answered without usable SDP");
                    if let Some(f) = b.forks.get_mut(i) {
                        f.stop();
                    }
                    b.codes.push(488);
                    // A failed fork like any other: its stage may be over (the bridge fails
                    // now, not at its timeout).
                    b.next_stage_after(self, i, 488);
                    return;
                };
                b.winner = Some(i);
                b.answered_at = Some(Instant::now());
                if let Some(f) = b.forks.get(i) {
                    tracing::info!(fork = %f.fork.label, b_call_id = %f.call_id(), "bridge: answered");
                }
                for (j, f) in b.forks.iter_mut().enumerate() {
                    if j != i {
                        f.stop();
                    }
                }
                for e in &mut b.endpoints {
                    e.finished = true;
                }
                b.stop_ringback(self);
                // A relay started for another fork's early media follows the winner.
                if b.early_from != Some(i) {
                    b.relay = None;
                }
                b.key_b_media(i);
                b.set_b_media(&answer);
                if self.leg.phase() == Phase::Early {
                    self.leg.answer();
                    self.ctx.stats.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            ForkNews::Failed(code) => {
                tracing::info!(code, "bridge: a fork failed");
                // 487 answers our own CANCEL: not the callee's verdict.
                if code != 487 {
                    b.codes.push(code);
                }
                if b.early_from == Some(i) {
                    b.early_from = None;
                    b.relay = None;
                }
                b.next_stage_after(self, i, code);
            }
            ForkNews::Digit(d) => {
                // SIP INFO from the callee: the caller gets RFC 4733 only, relayed as RTP.
                tracing::debug!(digit = %d, "bridge: a key from the callee by SIP INFO, not passed on");
            }
            ForkNews::Media(n) => {
                if b.winner == Some(i) {
                    b.key_b_media(i);
                    b.set_b_media(&n);
                }
            }
        }
    }

    /// The answered outbound leg's CDR (`call_direction` outbound), linked both ways with the
    /// caller's by `other_leg_call_id`. Forks that never answered leave no CDR, as in Kazoo.
    fn write_b_leg_cdr(&mut self, b: &Bridge, result: &Result<BridgeOutcome, CallEnded>) {
        let (Some(fork), Some(answered)) = (b.winner.and_then(|w| b.forks.get(w)), b.answered_at)
        else {
            return;
        };
        let b_call_id = fork.call_id().to_string();
        self.other_leg = Some(b_call_id.clone());
        let Some(store) = &self.ctx.cdrs else {
            return;
        };
        let end = crate::store::gregorian_now();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(0);
        let answer = end - secs(answered.elapsed());
        let start = end - secs(b.started.elapsed());
        let cause = match result {
            Ok(o) => o.cause,
            Err(_) => "NORMAL_CLEARING",
        };
        let to = fork
            .fork
            .request_uri
            .split_once(':')
            .map_or(fork.fork.request_uri.as_str(), |(_, rest)| rest)
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        store.write(crate::store::Write::Cdr(crate::store::Cdr {
            call_id: b_call_id,
            account_id: self.info.account_id.clone(),
            from: {
                let (user, host) = from_user_host(&b.spec.caller_number, &b.spec.realm);
                format!("{user}@{host}")
            },
            to,
            start,
            answer: Some(answer),
            end,
            duration_s: (end - start).max(0),
            hangup_cause: cause.to_string(),
            sip_code: Some(200),
            call_direction: crate::store::CallDirection::Outbound,
            other_leg_call_id: Some(self.info.call_id.clone()),
        }));
    }

    fn start_ringback(&mut self, b: &mut Bridge) {
        let prompt = b.ringback_prompt.clone().unwrap_or_else(tone::ringback);
        let (rtp, payload) = self.leg.start_prompt(prompt);
        b.ringback = Some(Box::pin(rtp.play(payload)));
    }
}

impl Bridge {
    /// Starts the endpoints whose delay is over.
    fn start_due(&mut self, call: &Call, now: Instant) {
        for e in 0..self.endpoints.len() {
            let due = self
                .endpoints
                .get(e)
                .is_some_and(|ep| !ep.started && !ep.finished && now >= ep.start_at);
            if due {
                if let Some(ep) = self.endpoints.get_mut(e) {
                    ep.started = true;
                }
                self.start_stage(call, e);
            }
        }
    }

    /// Sends the INVITEs of an endpoint's next stage; an endpoint with none left is finished.
    fn start_stage(&mut self, call: &Call, e: usize) {
        let Some(forks) = self
            .endpoints
            .get_mut(e)
            .and_then(|ep| ep.stages.pop_front())
        else {
            if let Some(ep) = self.endpoints.get_mut(e) {
                ep.finished = true;
            }
            return;
        };
        let mut live = Vec::with_capacity(forks.len());
        for fork in forks {
            // Over TLS, SRTP offered with keys of this fork's own (a fork that does not win
            // never learns the winner's); elsewhere the plain offer every fork shares.
            let mut local = self.spec.local.clone();
            (local.crypto, local.savp) =
                policy::offer(self.spec.encryption, fork.peer.proto.is_secure());
            let offer = if local.crypto.is_empty() {
                self.spec.offer.clone()
            } else {
                sdp::offer(&local, sdp::OFFERED_EVENT_PT)
            };
            let spec = InviteSpec {
                request_uri: fork.request_uri.clone(),
                to: fork.to.clone(),
                from: fork_from(&self.spec, &fork),
                local_host: fork.local_host.clone(),
                peer: fork.peer.clone(),
                route: fork.route.clone(),
                max_forwards: self.spec.max_forwards,
                contact_user: self.spec.contact_user.clone(),
                sdp: Some(offer),
            };
            let caller = caller_uri(&self.spec, &fork);
            let mut leg = OutboundLeg::start(
                call.ctx.endpoint.clone(),
                fork,
                spec,
                local,
                self.spec.encryption,
                self.events_tx.clone(),
            );
            if let Some(presence) = &call.ctx.presence {
                leg.light(presence, caller);
            }
            live.push(self.forks.len());
            self.forks.push(leg);
        }
        if let Some(ep) = self.endpoints.get_mut(e) {
            ep.live = live;
        }
    }

    /// After fork `i` failed with `code`: when its stage is over, the next carrier on a
    /// failure the next one may not share (5xx, 6xx, timeout), as Kazoo's stepswitch does.
    fn next_stage_after(&mut self, call: &Call, i: usize, code: u16) {
        let Some(e) = self.endpoints.iter().position(|ep| ep.live.contains(&i)) else {
            return;
        };
        let stage_over = self.endpoints.get(e).is_some_and(|ep| {
            ep.live
                .iter()
                .all(|&j| self.forks.get(j).is_none_or(|f| f.is_done()))
        });
        if !stage_over {
            return;
        }
        let fail_over = code == 408 || code >= 500;
        let more = self
            .endpoints
            .get(e)
            .is_some_and(|ep| !ep.stages.is_empty());
        if fail_over && more {
            tracing::info!(code, "bridge: trying the next carrier");
            self.start_stage(call, e);
        } else if let Some(ep) = self.endpoints.get_mut(e) {
            ep.finished = true;
        }
    }

    /// Forks that heard nothing at all within `invite_response_timeout_ms` count as 408, so
    /// the next carrier is tried long before Timer B (a carrier that is down, a phone gone
    /// from its registered address).
    fn give_up_silent(&mut self, call: &Call, now: Instant) {
        for i in 0..self.forks.len() {
            let due = self
                .forks
                .get(i)
                .and_then(|f| f.silent_until(self.silent_limit))
                .is_some_and(|at| now >= at);
            if due {
                if let Some(f) = self.forks.get_mut(i) {
                    f.give_up_silent();
                }
                self.codes.push(408);
                self.next_stage_after(call, i, 408);
            }
        }
    }

    /// Endpoints past their own timeout stop ringing.
    fn give_up_late(&mut self, now: Instant) {
        for ep in &mut self.endpoints {
            if ep.started && !ep.finished && now >= ep.give_up_at {
                ep.finished = true;
                ep.timed_out = true;
                for &j in &ep.live {
                    if let Some(f) = self.forks.get_mut(j) {
                        f.stop();
                    }
                }
            }
        }
    }

    /// The outcome once every endpoint is finished and nothing answered.
    fn failed_outcome(&self) -> Option<BridgeOutcome> {
        if self.winner.is_some() || !self.endpoints.iter().all(|e| e.finished) {
            return None;
        }
        let b_call_id = self.forks.last().map(|f| f.call_id().to_string());
        let timed_out = self.endpoints.iter().any(|e| e.timed_out);
        let code = best_code(&self.codes).filter(|&c| !(timed_out && c == 408));
        Some(match code {
            Some(code) => BridgeOutcome::from_sip_code(code, b_call_id),
            None => BridgeOutcome {
                status: DialStatus::NoAnswer,
                b_call_id,
                ..BridgeOutcome::failed("NO_ANSWER")
            },
        })
    }

    /// When the loop must look again at the clock: the next delayed endpoint, the next
    /// endpoint timeout, or the ring deadline; once answered, the time limit (else it is only
    /// seen at the once-a-second tick, up to a second late) or the end of a 491's wait before
    /// our re-INVITE to the callee goes again.
    fn next_wake(
        &self,
        ring_deadline: Instant,
        answered_at: Option<Instant>,
        time_limit: Option<Duration>,
    ) -> Instant {
        if let Some(at) = answered_at {
            let far = Instant::now() + Duration::from_secs(3600);
            let limit_end = time_limit
                .and_then(|limit| at.checked_add(limit))
                .unwrap_or(far);
            let retry = self
                .winner
                .and_then(|w| self.forks.get(w))
                .and_then(OutboundLeg::hold_retry_at)
                .unwrap_or(far);
            return limit_end.min(retry).min(far);
        }
        self.endpoints
            .iter()
            .filter(|e| !e.finished)
            .map(|e| if e.started { e.give_up_at } else { e.start_at })
            .chain(
                self.forks
                    .iter()
                    .filter_map(|f| f.silent_until(self.silent_limit)),
            )
            .fold(ring_deadline, Instant::min)
    }

    /// Keys the outbound session as fork `i`'s answer (or early media) made it: its keys, or
    /// plain when it answered plain, whatever another fork's early media keyed before (a
    /// different far end; `policy::rekey`). A new key of the callee's alone rekeys receiving
    /// only (our sending context goes on: a context is never restarted on a key it used).
    fn key_b_media(&mut self, i: usize) {
        let Some(fork) = self.forks.get(i) else {
            return;
        };
        let decided = fork.srtp.clone();
        let keyed = match (
            policy::rekey(self.b_srtp.as_ref(), decided.as_ref()),
            &decided,
        ) {
            (Rekey::Receive, Some((_, theirs))) => self.b_rtp.set_srtp_receive(&theirs.key),
            (Rekey::Both, Some((ours, theirs))) => self.b_rtp.set_srtp(&ours.key, &theirs.key),
            (Rekey::Clear, _) => {
                tracing::info!(fork = %fork.fork.label, "bridge: the answering callee is plain RTP");
                self.b_rtp.clear_srtp();
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = keyed {
            tracing::warn!("bridge: cannot key SRTP: {e}");
        }
        self.b_srtp = decided;
    }

    /// The callee's media as its SDP says: where to send, whether we may (not while it
    /// holds), and the relay's format. A relay whose formats stay keeps running through a
    /// hold: what the callee does not send is not relayed, and its media after is.
    fn set_b_media(&mut self, n: &Negotiated) {
        self.b_rtp.set_remote(n.remote);
        self.b_rtp.set_sending(n.direction.we_send());
        self.b_rtp.set_payload_type(n.codec_pt);
        self.b_rtp.set_event_payload_type(n.dtmf_pt);
        let format = LegFormat {
            codec: n.codec,
            payload_type: n.codec_pt,
            event_pt: n.dtmf_pt,
        };
        if self.b_format != Some(format) {
            // A relay keeps the formats it started with: a change is a new relay.
            self.relay = None;
        }
        self.b_format = Some(format);
    }

    /// Each side's hold reaches the other (RFC 3264 §8.4): a re-INVITE with `sendonly` to
    /// the callee when the caller holds, to the caller when the callee holds, `sendrecv`
    /// when it resumes, so each phone shows it and stops sending into a held call. Each leg
    /// sends one re-INVITE at a time; a change meanwhile goes after (`reinvite.rs`).
    fn pass_holds(&mut self, caller: &mut Leg) {
        let Some(fork) = self.winner.and_then(|w| self.forks.get_mut(w)) else {
            return;
        };
        fork.hold_peer(caller.is_held());
        caller.hold_peer(fork.peer_holds());
    }

    /// Keeps a relay running between the caller and the callee whose media we take, with
    /// the formats both legs negotiated now (a re-INVITE on either side restarts it).
    fn keep_relay(&mut self, call: &Call) {
        if self.winner.is_none() && self.early_from.is_none() {
            return;
        }
        let (Some(a), Some(bf)) = (call.leg.format(), self.b_format) else {
            return;
        };
        if self.relay.is_some() && self.relayed_a_format == Some(a) {
            return;
        }
        self.relay = None;
        match Relay::start(call.leg.rtp(), a, &self.b_rtp, bf) {
            Ok(r) => {
                tracing::debug!(a = ?a.codec, b = ?bf.codec, "bridge: media relayed");
                self.relay = Some(r);
                self.relayed_a_format = Some(a);
            }
            Err(e) => tracing::warn!("bridge: cannot relay media: {e}"),
        }
    }

    fn stop_ringback(&mut self, call: &mut Call) {
        if self.ringback.take().is_some() {
            call.leg.stop_playing();
            call.leg.prompt_done();
        }
    }

    /// The outcome of a conversation that ended with the caller still there.
    fn completed(&mut self, answered_at: Instant) -> BridgeOutcome {
        let b_call_id = self
            .winner
            .and_then(|w| self.forks.get(w))
            .map(|f| f.call_id().to_string());
        BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: Some(200),
            b_call_id,
            duration: answered_at.elapsed(),
        }
    }

    /// Ends what is left: the relay first (it holds both sessions' sockets), then every fork
    /// still up (BYE) or ringing (CANCEL); forks still settling are left to a task that
    /// answers their last responses.
    fn finish(&mut self) {
        self.relay = None;
        self.ringback = None;
        for f in &mut self.forks {
            f.stop();
        }
        let settling: Vec<OutboundLeg> =
            self.forks.drain(..).filter(OutboundLeg::settling).collect();
        if settling.is_empty() {
            return;
        }
        let (_, placeholder) = mpsc::unbounded_channel();
        let events = std::mem::replace(&mut self.events, placeholder);
        tokio::spawn(settle(settling, events));
    }
}

/// Serves cancelled forks until their INVITEs end (487, or a 2xx that crossed the CANCEL,
/// which the fork hangs up), bounded by [`SETTLE`].
async fn settle(mut forks: Vec<OutboundLeg>, mut events: mpsc::UnboundedReceiver<DialogEvent>) {
    let deadline = Instant::now() + SETTLE;
    while forks.iter().any(OutboundLeg::settling) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => {
                if let Some(f) = forks.iter_mut().find(|f| f.owns(&ev)) {
                    let _ = f.on_event(ev);
                }
            }
            _ => break,
        }
    }
}

/// The next cadence of the ringback ends (never while none plays).
async fn play_next(ringback: &mut Option<Playing>) -> PlayResult {
    match ringback {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

/// The most telling final code of a failed attempt (RFC 3261 §16.7 in spirit): a 6xx, then
/// busy, then the lowest other class, a timeout last.
fn best_code(codes: &[u16]) -> Option<u16> {
    codes
        .iter()
        .copied()
        .find(|c| *c >= 600)
        .or_else(|| codes.iter().copied().find(|&c| c == 486))
        .or_else(|| codes.iter().copied().filter(|&c| c != 408).min())
        .or_else(|| codes.first().copied())
}

/// From the caller ID a carrier's `caller_id_type` asks for, else the bridge's.
fn fork_from(spec: &SpecBase, fork: &Fork) -> String {
    match (&fork.from_number, &fork.from_name) {
        (None, None) => from_value(
            spec.caller_name.as_deref(),
            &spec.caller_number,
            &spec.realm,
        ),
        (number, name) => from_value(
            name.as_deref(),
            number.as_deref().unwrap_or("anonymous"),
            &spec.realm,
        ),
    }
}

/// The From URI the callee sees: its rung device's lamp names it as the remote party.
fn caller_uri(spec: &SpecBase, fork: &Fork) -> String {
    let number = fork.from_number.as_deref().unwrap_or(&spec.caller_number);
    let (user, host) = from_user_host(number, &spec.realm);
    format!("sip:{user}@{host}")
}

/// The caller ID's user part and the realm as they may stand in a From URI. Both come from
/// the caller's INVITE or a pivot answer, so only safe characters are kept (a quote or a line
/// break must not reach the header).
fn from_user_host(number: &str, realm: &str) -> (String, String) {
    let keep = |text: &str, extra: &str, empty: &str| {
        let kept: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || extra.contains(*c))
            .collect();
        if kept.is_empty() {
            empty.to_string()
        } else {
            kept
        }
    };
    (
        keep(number, "+-_.!~*'()", "anonymous"),
        keep(realm, "-.:[]", "invalid"),
    )
}

/// A From value for the callee: the caller ID as the display name and user part.
fn from_value(name: Option<&str>, number: &str, realm: &str) -> String {
    let (user, host) = from_user_host(number, realm);
    let display: String = name
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    if display.trim().is_empty() {
        format!("<sip:{user}@{host}>")
    } else {
        format!("\"{}\" <sip:{user}@{host}>", display.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_id_cannot_inject_headers() {
        let v = from_value(Some("Eve\"\r\nX-Evil: 1"), "12\r\n34", "pbx.test");
        assert_eq!(v, "\"EveX-Evil: 1\" <sip:1234@pbx.test>");
        assert_eq!(from_value(None, "", ""), "<sip:anonymous@invalid>");
    }

    #[test]
    fn the_best_code_prefers_6xx_then_busy_then_the_lowest() {
        assert_eq!(best_code(&[480, 603, 486]), Some(603));
        assert_eq!(best_code(&[480, 486]), Some(486));
        assert_eq!(best_code(&[503, 408, 404]), Some(404));
        assert_eq!(best_code(&[408]), Some(408));
        assert_eq!(best_code(&[]), None);
    }
}
