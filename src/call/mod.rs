//! A call: one task per admitted INVITE, from admission to the CDR.
//!
//! - [`admission`] decides whether and how a new request is answered: an INVITE becomes a
//!   [`CallSetup`] or a [`Refusal`](admission::Refusal).
//! - `info` reads the call facts ([`CallInfo`]) from the INVITE.
//! - `leg` is one SIP leg: the dialog, the INVITE transaction, the media session and what
//!   the far end may do in the dialog. A [`Call`] owns the caller's leg.
//! - `control` implements [`CallControl`], what the callflow runtime asks of the call.
//! - `lamps` says which presence ids a call lights and with what dialog: the calling
//!   device's lamp is held by the leg, a rung device's by its fork (`outbound.rs`).
//! - This file: the call task ([`Call::run`]), the state the callflow sees (digits, the keys
//!   that stop a prompt, the CDR facts), the limits (maximum duration, RTP timeout) and
//!   shutdown.
//!
//! While the runtime waits (a prompt playing, a sleep) the call keeps serving its leg
//! (`Call::serve`). The bridge adds a second, outbound leg beside the caller's (a future
//! `bridge.rs`, serving both legs' events in the same loop) and a media relay between their
//! RTP sessions (a future `src/media/relay.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::callflow::runtime::Runtime;
use crate::callflow::{CallControl, CallEnded};
use crate::config::live::LiveConfig;
use crate::flow::CallInfo;
use crate::flow::Node;
use crate::media::player::Pacer;
use crate::media::rtp::{PortPool, RtpSession};
use crate::presence::{self, Presence};
use crate::registrar::Registrar;
use crate::sip::endpoint::{Endpoint, NewRequest};
use crate::sip::source::CallSlot;
use crate::store::{trim_value, CallDirection, CallEvent, CallEvents, Cdr, Store, Write};

pub mod admission;
mod bridge;
pub mod caller;
mod control;
mod dtmf_out;
pub mod info;
mod lamps;
mod leg;
mod outbound;
mod reinvite;
mod targets;

pub use leg::LegSetup;
use leg::{Leg, Phase};

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
    /// Where the call's CDR goes when it ends, and its event log as it goes (None: neither).
    pub cdrs: Option<Store>,
    /// What a bridge needs: the config in force (accounts, carriers, advertised address;
    /// read when the bridge starts), the registrar (bindings), RTP ports and the pacer for
    /// the second leg's media.
    pub cfg: Arc<LiveConfig>,
    pub registrar: Arc<Registrar>,
    pub pool: Arc<PortPool>,
    pub pacer: Pacer,
    /// The lamps calls light (`lamps.rs`); None: no presence.
    pub presence: Option<Arc<Presence>>,
}

/// Counters across calls.
#[derive(Default, Debug)]
pub struct CallStats {
    pub total: AtomicU64,
    pub answered: AtomicU64,
    pub rtp_timeouts: AtomicU64,
    /// Calls whose caller's audio was SRTP, and the SRTP packets they dropped (a tag that did
    /// not match; a replay), added when each call ends.
    pub srtp_calls: AtomicU64,
    pub srtp_unauthentic: AtomicU64,
    pub srtp_replayed: AtomicU64,
}

impl CallStats {
    /// An ended call's SRTP counts.
    fn add_srtp(&self, rtp: &RtpSession) {
        if !rtp.is_srtp() {
            return;
        }
        let (unauthentic, replayed) = rtp.srtp_refused_packets();
        self.srtp_calls.fetch_add(1, Ordering::Relaxed);
        self.srtp_unauthentic
            .fetch_add(unauthentic, Ordering::Relaxed);
        self.srtp_replayed.fetch_add(replayed, Ordering::Relaxed);
    }
}

/// Everything admission decided before the call task starts.
pub struct CallSetup {
    /// The call facts the runtime and pivot see.
    pub info: CallInfo,
    /// The callflow the INVITE routed to.
    pub flow: Arc<Node>,
    /// The caller's leg: its dialog and media.
    pub leg: LegSetup,
    /// The call's place in its source's count, given back when the call's task ends.
    pub slot: CallSlot,
}

/// What admission and [`Call::run`] set up outside the call, undone when the call's task
/// ends — normally or unwinding from a panic (a lost count would refuse calls forever at
/// `max_calls`): the dialog leaves the endpoint, the call stops counting, and the source's
/// call slot is given back.
struct Admitted {
    ctx: Arc<CallContext>,
    dialog: crate::sip::endpoint::DialogId,
    /// Dropped after [`Admitted::drop`] has run: the source's count is given back last.
    _slot: CallSlot,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.ctx.endpoint.unregister_dialog(self.dialog.clone());
        self.ctx.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A started call and what its task holds while it lives.
struct Live {
    /// Fields drop in order, also when a panic unwinds: the call (its RTP session, whose
    /// ports go back to the pool) before the admission is undone, so a call admitted because
    /// this one ended finds its ports.
    call: Call,
    _admitted: Admitted,
    flow: Arc<Node>,
    span: tracing::Span,
}

impl Live {
    /// Runs the flow, then hangs up what is still up and writes the CDR. Not an async fn:
    /// its future holds `self` where it was moved to, not in a second copy.
    #[allow(clippy::manual_async_fn)]
    fn live(mut self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let runtime = self.call.ctx.runtime.clone();
            let span = std::mem::replace(&mut self.span, tracing::Span::none());
            let call = &mut self.call;
            let flow = &self.flow;
            tracing::Instrument::instrument(
                async {
                    runtime.run(flow, call).await;
                    call.leg.finish(&mut call.force_end).await;
                    call.ctx.stats.add_srtp(call.leg.rtp());
                },
                span,
            )
            .await;
            if let Some(store) = &self.call.ctx.cdrs {
                // Through the non-blocking queue: a full queue drops the CDR, never the call.
                store.write(Write::Cdr(self.call.cdr()));
            }
            drop(self);
        }
    }
}

/// A live call: the caller's leg, and what the callflow sees of it. (The bridge's outbound
/// leg will sit beside `leg`.)
pub struct Call {
    ctx: Arc<CallContext>,
    info: CallInfo,
    leg: Leg,
    started: Instant,
    force_end: watch::Receiver<bool>,
    /// DTMF keys received and not yet taken by the flow.
    digits: VecDeque<char>,
    /// Keys that stop the prompt playing now.
    stop_on: Vec<char>,
    /// The key that stopped the last prompt.
    stopped_by: Option<char>,
    digit_arrived: Arc<Notify>,
    /// The Call-ID of the last outbound leg a bridge answered (the CDRs link the two).
    other_leg: Option<String>,
}

impl Call {
    /// Registers the INVITE's dialog and runs the call to its end.
    ///
    /// The INVITE and the setup come in a box the call task empties when it starts: an async
    /// fn's arguments keep their room in its future for its whole life, even once moved into
    /// the call (bench/README.md "Memory per call").
    pub fn run(
        ctx: Arc<CallContext>,
        invite: NewRequest,
        setup: CallSetup,
    ) -> impl Future<Output = ()> + Send + 'static {
        let args = Box::new((invite, setup));
        async move {
            // Emptied and freed here: moving out of `*args` in place would free the box only
            // when the task ends.
            let (invite, setup) = unbox(args);
            Call::start(ctx, invite, setup).live().await
        }
    }

    /// The call's set-up, before anything waits.
    fn start(ctx: Arc<CallContext>, invite: NewRequest, setup: CallSetup) -> Live {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let dialog = setup.leg.dialog.id.clone();
        ctx.endpoint
            .register_dialog(dialog.clone(), ev_tx.clone(), Some(&invite.tx));
        // Made before the call, so that a panic unwinding from here still undoes it.
        let admitted = Admitted {
            ctx: ctx.clone(),
            dialog,
            _slot: setup.slot,
        };
        ctx.stats.total.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("call", call_id = %setup.info.call_id);
        let lamp = calling_lamp(
            &ctx,
            &setup.info,
            &setup.leg.dialog.id.local_tag,
            &invite.req,
        );
        // The INVITE was taken a moment ago (admission decides without waiting).
        let started = Instant::now();
        let mut log = CallEvents::new(
            ctx.cdrs.clone(),
            &setup.info.account_id,
            &setup.info.call_id,
            started.into_std(),
        );
        log.record(invite_event(&setup.info));
        let mut call = Call {
            force_end: ctx.force_end.clone(),
            ctx: ctx.clone(),
            info: setup.info,
            leg: Leg::new(ctx.endpoint.clone(), invite, setup.leg, ev_tx, ev_rx, log),
            started,
            digits: VecDeque::new(),
            stop_on: Vec::new(),
            stopped_by: None,
            digit_arrived: Arc::new(Notify::new()),
            other_leg: None,
        };
        call.leg.set_lamp(lamp);
        Live {
            call,
            _admitted: admitted,
            flow: setup.flow,
            span,
        }
    }
    /// Serves the leg while `fut` runs; returns its output, or CallEnded if the call ended
    /// first.
    async fn serve<F: Future>(&mut self, fut: F) -> Result<F::Output, CallEnded> {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.leg.phase() == Phase::Ended {
                return Err(CallEnded);
            }
            tokio::select! {
                out = &mut fut => return Ok(out),
                digit = self.leg.next() => {
                    if let Some(d) = digit {
                        self.on_digit(d);
                    }
                }
                _ = tick.tick() => self.check_limits(),
                _ = self.force_end.changed() => {
                    if *self.force_end.borrow() {
                        tracing::info!("shutdown grace period over: ending the call");
                        self.leg.set_cause("SYSTEM_SHUTDOWN");
                        self.leg.end_now(503, "Service Unavailable", "shutdown");
                    }
                }
            }
        }
    }

    /// A DTMF key from RTP or SIP INFO: queued for the flow; a terminator stops the prompt.
    fn on_digit(&mut self, d: char) {
        tracing::debug!(digit = %d, "DTMF");
        self.leg.log.record(CallEvent::Dtmf {
            digit: d.to_string(),
        });
        self.digits.push_back(d);
        if self.stop_on.contains(&d) && self.stopped_by.is_none() {
            self.stopped_by = Some(d);
            self.leg.stop_playing();
        }
        self.digit_arrived.notify_one();
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
            hangup_cause: self
                .leg
                .hangup_cause()
                .unwrap_or("NORMAL_CLEARING")
                .to_string(),
            sip_code: self.leg.final_code(),
            call_direction: CallDirection::Inbound,
            other_leg_call_id: self.other_leg.clone(),
        }
    }

    /// The call's limits, checked once a second: its maximum duration, and the RTP timeout
    /// of an answered call not on hold.
    fn check_limits(&mut self) {
        let now = Instant::now();
        if let Some(max) = self.ctx.max_duration {
            if now.duration_since(self.started) >= max {
                tracing::info!("maximum call duration reached");
                self.leg.set_cause("ALLOTTED_TIMEOUT");
                self.leg.end_now(480, "Maximum Duration", "max duration");
                return;
            }
        }
        if let (Some(timeout), Some(last)) = (self.ctx.rtp_timeout, self.leg.silent_since()) {
            if now.duration_since(last) >= timeout {
                tracing::info!("no RTP from the caller for {timeout:?}: hanging up");
                self.ctx.stats.rtp_timeouts.fetch_add(1, Ordering::Relaxed);
                self.leg.set_cause("MEDIA_TIMEOUT");
                self.leg.end_now(408, "Request Timeout", "RTP timeout");
            }
        }
    }
}

/// A box's contents, the box freed now (the point of taking it boxed, which clippy cannot
/// see).
#[allow(clippy::boxed_local)]
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// The event an INVITE starts a call's log with: who calls (`user@realm`) and the number.
pub(crate) fn invite_event(info: &CallInfo) -> CallEvent {
    let from = if info.from_user.is_empty() {
        info.from_realm.clone()
    } else {
        format!("{}@{}", info.from_user, info.from_realm)
    };
    CallEvent::Invite {
        from: trim_value(&from),
        to: trim_value(&info.request_user),
    }
}

/// The calling device's lamp, lit early now (a call no device places lights none).
fn calling_lamp(
    ctx: &CallContext,
    info: &CallInfo,
    our_tag: &str,
    invite: &rsip::Request,
) -> Option<presence::CallLamp> {
    let presence = ctx.presence.as_ref()?;
    let device_id = info.device_id.as_deref()?;
    let device = ctx
        .registrar
        .directory()
        .device(&info.account_id, device_id)?;
    lamps::calling_device(
        presence,
        &device,
        info,
        crate::sip::message::from_tag(invite),
        our_tag,
    )
}
