//! The [`Pacer`]: a few shard threads, a round-robin choice among them, counters summed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::shard::run_shard;
use super::{ShardHandle, DEFAULT_SLOTS};

#[derive(Debug, Default)]
pub(super) struct ShardStats {
    pub(super) streams: AtomicUsize,
    pub(super) packets_sent: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) late_packets: AtomicU64,
    pub(super) skipped_slots: AtomicU64,
    pub(super) max_lateness_ns: AtomicU64,
    /// The least lateness of a subtick with streams since [`Pacer::take_standing_lateness`]
    /// last read it, in ns plus one (0: none yet).
    pub(super) standing_lateness: AtomicU64,
}

impl ShardStats {
    /// A subtick with streams began `late` after its due time.
    pub(super) fn subtick_late(&self, late: Duration) {
        let v = u64::try_from(late.as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let cur = self.standing_lateness.load(Ordering::Relaxed);
        // The only writer besides the reader's reset: a plain store is enough.
        if cur == 0 || v < cur {
            self.standing_lateness.store(v, Ordering::Relaxed);
        }
    }
}

/// Counters summed over all shards, for the load benchmark ("every packet within 2 ms").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerStats {
    pub shards: usize,
    /// Streams currently registered (playing or not).
    pub streams: usize,
    pub packets_sent: u64,
    /// `sendto` failures (full socket buffer, unreachable address family); the packet is lost.
    pub send_errors: u64,
    /// Packets sent more than [`LATE_THRESHOLD`](super::LATE_THRESHOLD) after their due time.
    pub late_packets: u64,
    /// Phase slots skipped because a shard fell more than 60 ms behind.
    pub skipped_slots: u64,
    /// Largest (actual send − due time) seen.
    pub max_lateness: Duration,
}

/// Shared pacing clock(s): one thread per shard wakes at `start + n*20ms + phase` on the
/// monotonic clock (no drift) and sends the due packet of every playing stream of that phase.
/// No per-packet allocation, no global lock on the hot path. Cheap to clone.
///
/// Shard threads end by themselves once the `Pacer` and every session using it are dropped.
#[derive(Clone)]
pub struct Pacer {
    inner: Arc<PacerInner>,
}

struct PacerInner {
    shards: Vec<(ShardHandle, Arc<ShardStats>)>,
    next: AtomicUsize,
}

impl Pacer {
    /// Starts `shards` pacing threads (0 = one per available core).
    pub fn start(shards: usize) -> Pacer {
        Pacer::start_with_slots(shards, DEFAULT_SLOTS)
    }

    /// Like [`Pacer::start`] with `slots` phases per 20 ms period (clamped to 1..=100).
    pub fn start_with_slots(shards: usize, slots: u32) -> Pacer {
        let shards = if shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            shards
        };
        let slots = slots.clamp(1, 100);
        let mut handles = Vec::with_capacity(shards);
        for n in 0..shards {
            let (tx, rx) = mpsc::channel();
            let stats = Arc::new(ShardStats::default());
            let thread_stats = stats.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pivotd-pacer-{n}"))
                .spawn(move || run_shard(rx, thread_stats, slots));
            match spawned {
                Ok(_) => handles.push((ShardHandle { tx }, stats)),
                // A pacer with fewer shards still works; with none, sessions fail to start.
                Err(e) => tracing::error!(error = %e, "cannot start RTP pacer thread"),
            }
        }
        Pacer {
            inner: Arc::new(PacerInner {
                shards: handles,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// Number of running shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The next shard, round-robin.
    pub(crate) fn pick(&self) -> Option<ShardHandle> {
        let n = self.inner.shards.len();
        if n == 0 {
            return None;
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % n;
        self.inner.shards.get(i).map(|(h, _)| h.clone())
    }

    /// Counters summed over the shards.
    pub fn stats(&self) -> PacerStats {
        let mut out = PacerStats {
            shards: self.inner.shards.len(),
            ..PacerStats::default()
        };
        let mut max_ns = 0;
        for (_, s) in &self.inner.shards {
            out.streams += s.streams.load(Ordering::Relaxed);
            out.packets_sent += s.packets_sent.load(Ordering::Relaxed);
            out.send_errors += s.send_errors.load(Ordering::Relaxed);
            out.late_packets += s.late_packets.load(Ordering::Relaxed);
            out.skipped_slots += s.skipped_slots.load(Ordering::Relaxed);
            max_ns = max_ns.max(s.max_lateness_ns.load(Ordering::Relaxed));
        }
        out.max_lateness = Duration::from_nanos(max_ns);
        out
    }

    /// Largest lateness of any packet sent so far (actual send − due time).
    pub fn max_lateness(&self) -> Duration {
        self.stats().max_lateness
    }

    /// The least lateness of any shard's subticks since the last call, the largest over the
    /// shards: how far behind a shard stayed all along (a load signal for admission,
    /// `sip::overload`), not one late burst. Zero when nothing was sent.
    pub fn take_standing_lateness(&self) -> Duration {
        let mut out = Duration::ZERO;
        for (_, s) in &self.inner.shards {
            let v = s.standing_lateness.swap(0, Ordering::Relaxed);
            if v > 0 {
                out = out.max(Duration::from_nanos(v - 1));
            }
        }
        out
    }

    /// Zeroes the counters (not `streams`), e.g. after a benchmark's warm-up.
    pub fn reset_stats(&self) {
        for (_, s) in &self.inner.shards {
            s.packets_sent.store(0, Ordering::Relaxed);
            s.send_errors.store(0, Ordering::Relaxed);
            s.late_packets.store(0, Ordering::Relaxed);
            s.skipped_slots.store(0, Ordering::Relaxed);
            s.max_lateness_ns.store(0, Ordering::Relaxed);
        }
    }
}
