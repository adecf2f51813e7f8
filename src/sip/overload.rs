//! Admission that follows the measured load: whether the box is overloaded now, and whether
//! a new INVITE is refused for it (`503` with `Retry-After`, sent by the SIP shard right
//! after parsing, before admission's queue, a call task or an RTP port).
//!
//! The signals, one sample per [`INTERVAL`]:
//! - the SIP queue delay: how long each message waited between its arrival (the kernel's
//!   receive timestamp, so the wait in the socket buffer counts) and its handling in a shard.
//!   The sample is the interval's *minimum*: a standing queue, not a burst that drains within
//!   the interval (as CoDel tells a bad queue from a good one);
//! - the media pacer's lateness, also its interval minimum (given by the wiring: `sip` does
//!   not know the pacer).
//!
//! Overload starts when either sample reaches its entry level (`overload_queue_delay_ms`,
//! `overload_pacer_lateness_ms`). While overloaded, a new INVITE is refused when it waited at
//! least `overload_queue_delay_exit_ms` itself (it is late already, and the queue sheds work
//! until what arrives is served in time, so accepted calls stay fast), or, while the pacer
//! is late, every new INVITE is. Overload ends after [`CALM_INTERVALS`] calm intervals in a
//! row: the queue delay below the exit level, the pacer below half its entry level, and at
//! most one new INVITE in [`LATE_SHARE`] late. The levels apart and the calm second are the
//! hysteresis: a refusal drains the queue at once, so "below the entry level" alone would
//! leave and re-enter many times a second under a steady 2× load.
//!
//! In-dialog requests, ACK, CANCEL and responses are never refused here: they belong to calls
//! already accepted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::OverloadConfig;

/// How often the signals are sampled and the state decided.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Calm intervals in a row that end an overload (one second).
pub const CALM_INTERVALS: u32 = 10;
/// An interval is calm when at most one new INVITE in this many came late.
pub const LATE_SHARE: u64 = 20;

/// The levels, from `[sip] overload_*`; a zero entry level switches its signal off.
#[derive(Clone, Debug)]
pub struct LoadLimits {
    pub queue_enter: Duration,
    pub queue_exit: Duration,
    pub pacer_enter: Duration,
    pub pacer_exit: Duration,
    /// The Retry-After value of the 503.
    pub retry_after: String,
}

impl LoadLimits {
    pub fn from_config(c: &OverloadConfig) -> LoadLimits {
        let pacer_enter = Duration::from_millis(c.pacer_lateness_ms);
        LoadLimits {
            queue_enter: Duration::from_millis(c.queue_delay_ms),
            queue_exit: Duration::from_millis(c.queue_delay_exit_ms),
            pacer_enter,
            pacer_exit: pacer_enter / 2,
            retry_after: c.retry_after_s.to_string(),
        }
    }

    fn queue_on(&self) -> bool {
        !self.queue_enter.is_zero()
    }

    fn pacer_on(&self) -> bool {
        !self.pacer_enter.is_zero()
    }

    /// Whether any signal is watched.
    pub fn enabled(&self) -> bool {
        self.queue_on() || self.pacer_on()
    }
}

/// What one interval measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// The least queue delay of a message handled in the interval; none handled: `None`.
    pub queue_delay: Option<Duration>,
    /// The pacer's least lateness in the interval (0 when it sent nothing).
    pub pacer_lateness: Duration,
    /// New INVITEs looked at while overloaded, and those of them that came late.
    pub invites: u64,
    pub late: u64,
}

/// A change of state, to log once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Entered,
    Left,
}

/// The hysteresis: one decision per interval, from its [`Sample`]. Owned by the monitor.
#[derive(Debug)]
pub struct Control {
    limits: LoadLimits,
    overloaded: bool,
    calm: u32,
}

impl Control {
    pub fn new(limits: LoadLimits) -> Control {
        Control {
            limits,
            overloaded: false,
            calm: 0,
        }
    }

    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// Whether the pacer is late enough that every new INVITE is refused while overloaded.
    pub fn pacer_late(&self, s: &Sample) -> bool {
        self.overloaded && self.limits.pacer_on() && s.pacer_lateness >= self.limits.pacer_exit
    }

    /// The state after interval `s`, and the change if there was one.
    pub fn on_interval(&mut self, s: &Sample) -> Option<Change> {
        let l = &self.limits;
        let queue_at = |level: Duration| l.queue_on() && s.queue_delay.is_some_and(|d| d >= level);
        let pacer_at = |level: Duration| l.pacer_on() && s.pacer_lateness >= level;
        if !self.overloaded {
            if queue_at(l.queue_enter) || pacer_at(l.pacer_enter) {
                self.overloaded = true;
                self.calm = 0;
                return Some(Change::Entered);
            }
            return None;
        }
        let calm = !queue_at(l.queue_exit)
            && !pacer_at(l.pacer_exit)
            && s.late.saturating_mul(LATE_SHARE) <= s.invites;
        if !calm {
            self.calm = 0;
            return None;
        }
        self.calm += 1;
        if self.calm < CALM_INTERVALS {
            return None;
        }
        self.overloaded = false;
        self.calm = 0;
        Some(Change::Left)
    }
}

/// No sample yet in this interval.
const NONE: u64 = u64::MAX;

/// The state the SIP shards read for every new INVITE and feed with every message's queue
/// delay; the monitor ([`LoadMonitor`]) decides it once per interval. Atomics only.
#[derive(Debug)]
pub struct LoadGate {
    limits: LoadLimits,
    overloaded: AtomicBool,
    pacer_late: AtomicBool,
    /// The interval's least queue delay so far, ns.
    delay_min_ns: AtomicU64,
    invites: AtomicU64,
    late: AtomicU64,
    /// 503s sent for load.
    refused: AtomicU64,
    /// The last interval's samples, for /metrics.
    last_delay_ns: AtomicU64,
    last_pacer_ns: AtomicU64,
}

impl LoadGate {
    pub fn new(limits: LoadLimits) -> LoadGate {
        LoadGate {
            limits,
            overloaded: AtomicBool::new(false),
            pacer_late: AtomicBool::new(false),
            delay_min_ns: AtomicU64::new(NONE),
            invites: AtomicU64::new(0),
            late: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_delay_ns: AtomicU64::new(0),
            last_pacer_ns: AtomicU64::new(0),
        }
    }

    /// Watches nothing: never overloaded (tests and tools that build an endpoint alone).
    pub fn off() -> LoadGate {
        LoadGate::new(LoadLimits {
            queue_enter: Duration::ZERO,
            queue_exit: Duration::ZERO,
            pacer_enter: Duration::ZERO,
            pacer_exit: Duration::ZERO,
            retry_after: "1".into(),
        })
    }

    /// The queue delay of one message, as its shard starts on it.
    pub fn observe(&self, delay: Duration) {
        if !self.limits.queue_on() {
            return;
        }
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(NONE - 1);
        // Read first: most messages do not lower the minimum, and a load is cheaper than a
        // write to a line the other shards share.
        if ns < self.delay_min_ns.load(Ordering::Relaxed) {
            self.delay_min_ns.fetch_min(ns, Ordering::Relaxed);
        }
    }

    /// Whether a new INVITE (out of dialog, not a retransmission) that waited `delay` is
    /// refused for load; counted when it is.
    pub fn refuse_invite(&self, delay: Duration) -> bool {
        if !self.overloaded.load(Ordering::Relaxed) {
            return false;
        }
        self.invites.fetch_add(1, Ordering::Relaxed);
        let late = self.limits.queue_on() && delay >= self.limits.queue_exit;
        if late {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let refuse = late || self.pacer_late.load(Ordering::Relaxed);
        if refuse {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        refuse
    }

    /// The Retry-After value of the 503.
    pub fn retry_after(&self) -> &str {
        &self.limits.retry_after
    }

    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// New INVITEs refused for load since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The last interval's queue delay sample (its least delay; 0 when nothing came).
    pub fn queue_delay(&self) -> Duration {
        Duration::from_nanos(self.last_delay_ns.load(Ordering::Relaxed))
    }

    /// The last interval's pacer lateness sample.
    pub fn pacer_lateness(&self) -> Duration {
        Duration::from_nanos(self.last_pacer_ns.load(Ordering::Relaxed))
    }

    /// Ends the interval: its sample, with the pacer's lateness given by the caller.
    fn take_sample(&self, pacer_lateness: Duration) -> Sample {
        let min = self.delay_min_ns.swap(NONE, Ordering::Relaxed);
        let queue_delay = (min != NONE).then(|| Duration::from_nanos(min));
        self.last_delay_ns
            .store(if min == NONE { 0 } else { min }, Ordering::Relaxed);
        self.last_pacer_ns.store(
            u64::try_from(pacer_lateness.as_nanos()).unwrap_or(NONE),
            Ordering::Relaxed,
        );
        Sample {
            queue_delay,
            pacer_lateness,
            invites: self.invites.swap(0, Ordering::Relaxed),
            late: self.late.swap(0, Ordering::Relaxed),
        }
    }
}

/// Decides the [`LoadGate`]'s state once per [`INTERVAL`], logging each change once.
pub struct LoadMonitor {
    gate: std::sync::Arc<LoadGate>,
    control: Control,
    /// 503s sent when the current overload began (for the line that ends it).
    refused_at_start: u64,
}

impl LoadMonitor {
    pub fn new(gate: std::sync::Arc<LoadGate>) -> LoadMonitor {
        let mut control = Control::new(gate.limits.clone());
        // A restarted monitor carries on from the gate's state.
        control.overloaded = gate.overloaded();
        LoadMonitor {
            refused_at_start: gate.refused(),
            gate,
            control,
        }
    }

    /// One interval ended; `pacer_lateness` is the pacer's least lateness in it.
    pub fn tick(&mut self, pacer_lateness: Duration) {
        if !self.gate.limits.enabled() {
            return;
        }
        let s = self.gate.take_sample(pacer_lateness);
        let change = self.control.on_interval(&s);
        self.gate
            .pacer_late
            .store(self.control.pacer_late(&s), Ordering::Relaxed);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match change {
            Some(Change::Entered) => {
                self.refused_at_start = self.gate.refused();
                self.gate.overloaded.store(true, Ordering::Relaxed);
                tracing::warn!(
                    queue_delay_ms = ms(s.queue_delay.unwrap_or_default()),
                    pacer_lateness_ms = ms(s.pacer_lateness),
                    "overloaded: new calls that come late get 503"
                );
            }
            Some(Change::Left) => {
                self.gate.overloaded.store(false, Ordering::Relaxed);
                tracing::info!(
                    refused = self.gate.refused() - self.refused_at_start,
                    "overload over: taking every call again"
                );
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoadLimits {
        LoadLimits::from_config(&OverloadConfig {
            queue_delay_ms: 20,
            queue_delay_exit_ms: 5,
            pacer_lateness_ms: 10,
            retry_after_s: 2,
        })
    }

    fn queue(ms: u64) -> Sample {
        Sample {
            queue_delay: Some(Duration::from_millis(ms)),
            ..Sample::default()
        }
    }

    #[test]
    fn enters_at_the_entry_level_and_not_below() {
        let mut c = Control::new(limits());
        assert_eq!(c.on_interval(&queue(19)), None);
        assert_eq!(c.on_interval(&Sample::default()), None);
        assert!(!c.overloaded());
        assert_eq!(c.on_interval(&queue(20)), Some(Change::Entered));
        assert!(c.overloaded());
        // Entering again while overloaded is no change.
        assert_eq!(c.on_interval(&queue(500)), None);
    }

    #[test]
    fn leaves_after_a_calm_second_only() {
        let mut c = Control::new(limits());
        c.on_interval(&queue(50));
        for _ in 0..CALM_INTERVALS - 1 {
            assert_eq!(c.on_interval(&queue(2)), None);
        }
        // One interval at the exit level starts the calm second over.
        assert_eq!(c.on_interval(&queue(5)), None);
        for _ in 0..CALM_INTERVALS - 1 {
            assert_eq!(c.on_interval(&queue(4)), None);
            assert!(c.overloaded());
        }
        assert_eq!(c.on_interval(&queue(4)), Some(Change::Left));
        assert!(!c.overloaded());
    }

    #[test]
    fn does_not_flap_between_the_levels() {
        // A steady 2× load: refusals drain the queue, so its delay swings between the levels
        // and often below the exit level, while many INVITEs still come late.
        let mut c = Control::new(limits());
        let mut changes = Vec::new();
        for i in 0..200u64 {
            let mut s = queue([25, 12, 3, 8, 1][(i % 5) as usize]);
            s.invites = 160;
            s.late = 60;
            if let Some(ch) = c.on_interval(&s) {
                changes.push(ch);
            }
        }
        assert_eq!(changes, [Change::Entered]);
        // The load goes: a calm second, then out, once.
        for _ in 0..CALM_INTERVALS {
            let mut s = queue(1);
            s.invites = 80;
            s.late = 2;
            if let Some(ch) = c.on_interval(&s) {
                changes.push(ch);
            }
        }
        assert_eq!(changes, [Change::Entered, Change::Left]);
    }

    #[test]
    fn late_invites_keep_it_overloaded() {
        let mut c = Control::new(limits());
        c.on_interval(&queue(30));
        for _ in 0..3 * CALM_INTERVALS {
            let mut s = queue(0);
            s.invites = 100;
            s.late = 6; // above one in 20
            assert_eq!(c.on_interval(&s), None);
        }
        assert!(c.overloaded());
        // Nothing handled at all counts as calm.
        for _ in 0..CALM_INTERVALS - 1 {
            assert_eq!(c.on_interval(&Sample::default()), None);
        }
        assert_eq!(c.on_interval(&Sample::default()), Some(Change::Left));
    }

    #[test]
    fn the_pacer_enters_and_refuses_every_invite_while_late() {
        let mut c = Control::new(limits());
        let late = |ms| Sample {
            pacer_lateness: Duration::from_millis(ms),
            ..Sample::default()
        };
        assert_eq!(c.on_interval(&late(9)), None);
        assert!(!c.pacer_late(&late(9)));
        assert_eq!(c.on_interval(&late(10)), Some(Change::Entered));
        assert!(c.pacer_late(&late(5)));
        assert!(!c.pacer_late(&late(4)));
        for _ in 0..CALM_INTERVALS - 1 {
            assert_eq!(c.on_interval(&late(4)), None);
        }
        assert_eq!(c.on_interval(&late(4)), Some(Change::Left));
    }

    #[test]
    fn a_zero_level_switches_its_signal_off() {
        let mut l = limits();
        l.queue_enter = Duration::ZERO;
        let mut c = Control::new(l);
        assert_eq!(c.on_interval(&queue(10_000)), None);
        let gate = LoadGate::off();
        gate.observe(Duration::from_secs(1));
        assert!(!gate.refuse_invite(Duration::from_secs(1)));
        assert!(!gate.limits.enabled());
    }

    #[test]
    fn the_gate_samples_the_least_delay_and_refuses_late_invites_while_overloaded() {
        let gate = std::sync::Arc::new(LoadGate::new(limits()));
        let mut m = LoadMonitor::new(gate.clone());
        // Not overloaded: nothing refused, however late.
        assert!(!gate.refuse_invite(Duration::from_secs(3)));
        for ms in [40, 25, 31] {
            gate.observe(Duration::from_millis(ms));
        }
        m.tick(Duration::ZERO);
        assert_eq!(gate.queue_delay(), Duration::from_millis(25));
        assert!(gate.overloaded());
        assert!(gate.refuse_invite(Duration::from_millis(5)));
        assert!(!gate.refuse_invite(Duration::from_millis(4)));
        assert_eq!(gate.refused(), 1);
        // The next interval starts afresh; an empty one samples 0.
        m.tick(Duration::ZERO);
        assert_eq!(gate.queue_delay(), Duration::ZERO);
        for _ in 0..CALM_INTERVALS {
            gate.observe(Duration::from_millis(1));
            m.tick(Duration::ZERO);
        }
        assert!(!gate.overloaded());
        assert!(!gate.refuse_invite(Duration::from_secs(1)));
    }
}
