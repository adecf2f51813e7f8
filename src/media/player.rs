//! Shared pacing clocks for outgoing RTP.
//!
//! A [`Pacer`] runs a few shard threads. Each shard owns the send state of the streams assigned
//! to it (round-robin across shards) and is driven by commands over its own channel, so the
//! per-packet work touches no lock and allocates nothing: it writes the 12-byte header and the
//! 160 payload bytes into one reused buffer and hands it to a non-blocking `sendto`.
//!
//! Why threads and not tokio tasks: the budget is "every packet within 2 ms of its due time"
//! with thousands of calls while the same two cores also run SIP. A tokio task shares its
//! worker with whatever else is queued there and tokio's timer has 1 ms granularity; a
//! dedicated thread sleeping on an absolute deadline is woken by the kernel within tens of
//! microseconds.
//!
//! Why phase slots: one 20 ms tick sending 2,500 packets back to back takes several
//! milliseconds, so the last stream would always be late. Each shard splits the 20 ms period
//! into `slots` phases (1 ms each by default) and puts a new stream in the least loaded one;
//! a stream's packets are due at `start + n*20ms + slot*20ms/slots`, which never drifts.

use std::any::Any;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtp_rs::{RtpPacketBuilder, Seq};
use tokio::sync::oneshot;

/// Packet interval (ptime 20).
pub const PTIME: Duration = Duration::from_millis(20);
/// G.711 at 8 kHz: 160 samples (= bytes) per 20 ms packet; the RTP timestamp step.
pub const SAMPLES_PER_PACKET: u32 = 160;
const PAYLOAD_BYTES: usize = SAMPLES_PER_PACKET as usize;
const HEADER_BYTES: usize = 12;
const PERIOD_NS: u64 = 20_000_000;
/// Phase slots per 20 ms period when none are given: 1 ms apart.
pub const DEFAULT_SLOTS: u32 = 20;
/// When a shard is this far behind, it jumps to the present instead of bursting the backlog.
const MAX_BEHIND: Duration = Duration::from_millis(60);
/// Packets later than this count as late in [`PacerStats::late_packets`] (the load budget).
pub const LATE_THRESHOLD: Duration = Duration::from_millis(2);

/// How a `play` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayResult {
    /// The last packet was sent (or, when sending is off, its time has passed).
    Finished,
    /// `stop_playing`, a newer `play`, or the session going away ended it early.
    Stopped,
}

/// Per-stream counters written by the shard and read by the session.
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    pub(crate) packets_sent: AtomicU64,
    pub(crate) max_lateness_ns: AtomicU64,
}

/// Everything a shard needs to send for one session.
pub(crate) struct NewStream {
    pub(crate) id: u64,
    pub(crate) socket: Arc<UdpSocket>,
    /// Kept alive as long as the shard holds the socket (returns the port pair on drop).
    pub(crate) guard: Arc<dyn Any + Send + Sync>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) payload_type: u8,
    pub(crate) silence: u8,
    pub(crate) ssrc: u32,
    pub(crate) seq: u16,
    pub(crate) ts_base: u32,
    pub(crate) stats: Arc<StreamStats>,
}

/// Messages from sessions (and their receive tasks) to the shard owning their stream.
pub(crate) enum Command {
    Add(Box<NewStream>),
    Remove(u64),
    /// From SDP; the send target until (and unless) the stream latches.
    SetRemote(u64, Option<SocketAddr>),
    /// Where the caller's RTP comes from (symmetric RTP): the send target from now on, and
    /// proof that the address takes part. None: a new learning phase, back to the SDP address.
    Latch(u64, Option<SocketAddr>),
    /// No amplification: send nothing until the address proved it takes part (`Proven`, a
    /// latch) or while an unproven window is open.
    RequireProof(u64),
    /// The address proved it takes part (the ACK of our 2xx).
    Proven(u64),
    /// Until when packets may go to a still unproven address (early media); None closes it.
    UnprovenUntil(u64, Option<Instant>),
    SetCodec {
        id: u64,
        payload_type: u8,
        silence: u8,
        /// The running play's audio in the new codec (same length): it replaces the old
        /// bytes at the same offset, in the same command so no packet mixes PT and codec.
        payload: Option<Arc<[u8]>>,
    },
    SetSending(u64, bool),
    Play {
        id: u64,
        payload: Arc<[u8]>,
        done: oneshot::Sender<PlayResult>,
    },
    Stop(u64),
}

/// A session's way to its shard.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    tx: Sender<Command>,
}

impl ShardHandle {
    /// False when the shard is gone (its thread ended).
    pub(crate) fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok()
    }
}

#[derive(Debug, Default)]
struct ShardStats {
    streams: AtomicUsize,
    packets_sent: AtomicU64,
    send_errors: AtomicU64,
    late_packets: AtomicU64,
    skipped_slots: AtomicU64,
    max_lateness_ns: AtomicU64,
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
    /// Packets sent more than [`LATE_THRESHOLD`] after their due time.
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

/// The pacing grid of one shard: subtick `k` is phase `k % slots` of packet tick `k / slots`.
#[derive(Clone, Copy, Debug)]
struct Grid {
    start: Instant,
    slots: u64,
    slot_ns: u64,
}

impl Grid {
    fn new(start: Instant, slots: u32) -> Grid {
        let slots = u64::from(slots.max(1));
        Grid {
            start,
            slots,
            slot_ns: PERIOD_NS / slots,
        }
    }

    /// Due time of subtick `k`; whole periods are added exactly so nothing drifts.
    fn due(&self, k: u64) -> Instant {
        let ns = (k / self.slots)
            .saturating_mul(PERIOD_NS)
            .saturating_add((k % self.slots) * self.slot_ns);
        self.start + Duration::from_nanos(ns)
    }

    /// The latest subtick whose due time is not after `t`.
    fn subtick_at(&self, t: Instant) -> u64 {
        let ns =
            u64::try_from(t.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let tick = ns / PERIOD_NS;
        let slot = ((ns % PERIOD_NS) / self.slot_ns).min(self.slots - 1);
        tick.saturating_mul(self.slots).saturating_add(slot)
    }
}

struct Playing {
    payload: Arc<[u8]>,
    offset: usize,
    done: Option<oneshot::Sender<PlayResult>>,
}

impl Playing {
    fn finish(&mut self, result: PlayResult) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

impl Drop for Playing {
    fn drop(&mut self) {
        self.finish(PlayResult::Stopped);
    }
}

struct Stream {
    id: u64,
    // Field order matters: the socket closes before the guard returns its port to the pool.
    socket: Arc<UdpSocket>,
    _guard: Arc<dyn Any + Send + Sync>,
    /// The SDP address.
    remote: Option<SocketAddr>,
    /// The caller's RTP source once learnt: it wins over the SDP address.
    latched: Option<SocketAddr>,
    sending: bool,
    /// Towards an untrusted source: nothing goes out until `proven`, or before
    /// `unproven_until` (early media).
    require_proof: bool,
    proven: bool,
    unproven_until: Option<Instant>,
    payload_type: u8,
    silence: u8,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    /// Packet tick of the last packet sent: a gap before the next one starts a talkspurt.
    last_sent_tick: Option<u64>,
    playing: Option<Playing>,
    stats: Arc<StreamStats>,
}

/// What one subtick did, summed into the shard counters once per subtick.
#[derive(Default)]
struct TickTotals {
    sent: u64,
    errors: u64,
    late: u64,
    max_late_ns: u64,
}

impl Stream {
    fn from_new(n: NewStream) -> Stream {
        Stream {
            id: n.id,
            socket: n.socket,
            _guard: n.guard,
            remote: n.remote,
            latched: None,
            sending: true,
            require_proof: false,
            proven: false,
            unproven_until: None,
            payload_type: n.payload_type & 0x7f,
            silence: n.silence,
            ssrc: n.ssrc,
            seq: n.seq,
            ts_base: n.ts_base,
            last_sent_tick: None,
            playing: None,
            stats: n.stats,
        }
    }

    /// The hot path: at most one packet, built in `buf`, sent without blocking.
    fn on_tick(
        &mut self,
        tick: u64,
        due: Instant,
        buf: &mut [u8; HEADER_BYTES + PAYLOAD_BYTES],
        totals: &mut TickTotals,
    ) {
        let Some(play) = self.playing.as_mut() else {
            return;
        };
        // The caller of `play` went away (its future was dropped): stop, nobody waits.
        if play.done.as_ref().is_none_or(|d| d.is_closed()) {
            self.playing = None;
            return;
        }
        let len = play.payload.len();
        let end = play.offset.saturating_add(PAYLOAD_BYTES).min(len);
        let chunk = play.payload.get(play.offset..end).unwrap_or(&[]);
        play.offset = end;
        let allowed = !self.require_proof
            || self.proven
            || self.unproven_until.is_some_and(|until| due < until);
        // Not allowed or not sending: the play keeps its time, the packet is not sent.
        let target = self.latched.or(self.remote).filter(|_| allowed);
        if let (true, Some(remote)) = (self.sending, target) {
            // RFC 3551 §4.1: the marker bit flags the first packet after a silence gap.
            let marker = self
                .last_sent_tick
                .is_none_or(|t| t.wrapping_add(1) != tick);
            // RFC 3550 §5.1: the timestamp follows the sampling clock, so it advances over
            // silence too: derived from the tick, not from the packets sent.
            let ts = self
                .ts_base
                .wrapping_add((tick as u32).wrapping_mul(SAMPLES_PER_PACKET));
            let header = RtpPacketBuilder::new()
                .payload_type(self.payload_type)
                .marked(marker)
                .sequence(Seq::from(self.seq))
                .ssrc(self.ssrc)
                .timestamp(ts);
            let (head, body) = buf.split_at_mut(HEADER_BYTES);
            if header.build_into(head).is_ok() {
                let (audio, pad) = body.split_at_mut(chunk.len().min(PAYLOAD_BYTES));
                audio.copy_from_slice(chunk.get(..audio.len()).unwrap_or(&[]));
                // A short last packet is padded with the codec's silence.
                pad.fill(self.silence);
                match self.socket.send_to(&buf[..], remote) {
                    Ok(_) => totals.sent += 1,
                    Err(_) => totals.errors += 1,
                }
                // Advance even when the kernel refused it: to the receiver it is a lost packet.
                self.seq = self.seq.wrapping_add(1);
                self.last_sent_tick = Some(tick);
                let late = u64::try_from(Instant::now().saturating_duration_since(due).as_nanos())
                    .unwrap_or(u64::MAX);
                if late > LATE_THRESHOLD.as_nanos() as u64 {
                    totals.late += 1;
                }
                totals.max_late_ns = totals.max_late_ns.max(late);
                self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .max_lateness_ns
                    .fetch_max(late, Ordering::Relaxed);
            }
        }
        if end >= len {
            if let Some(mut p) = self.playing.take() {
                p.finish(PlayResult::Finished);
            }
        }
    }
}

struct Shard {
    /// Streams per phase slot.
    slots: Vec<Vec<Stream>>,
    /// Stream id -> (slot, index in that slot's Vec).
    index: HashMap<u64, (usize, usize)>,
    stats: Arc<ShardStats>,
}

impl Shard {
    fn new(slots: u32, stats: Arc<ShardStats>) -> Shard {
        Shard {
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            index: HashMap::new(),
            stats,
        }
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn stream(&mut self, id: u64) -> Option<&mut Stream> {
        let (slot, i) = *self.index.get(&id)?;
        self.slots.get_mut(slot)?.get_mut(i)
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add(n) => {
                let id = n.id;
                self.remove(id);
                let slot = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, v)| v.len())
                    .map_or(0, |(i, _)| i);
                if let Some(list) = self.slots.get_mut(slot) {
                    list.push(Stream::from_new(*n));
                    self.index.insert(id, (slot, list.len() - 1));
                }
            }
            Command::Remove(id) => self.remove(id),
            Command::SetRemote(id, addr) => {
                if let Some(s) = self.stream(id) {
                    s.remote = addr;
                }
            }
            Command::Latch(id, addr) => {
                if let Some(s) = self.stream(id) {
                    s.latched = addr;
                    // RTP from the caller proves its address; a new learning phase keeps
                    // what was proven (it comes from the dialog's own re-INVITE).
                    s.proven |= addr.is_some();
                }
            }
            Command::RequireProof(id) => {
                if let Some(s) = self.stream(id) {
                    s.require_proof = true;
                }
            }
            Command::Proven(id) => {
                if let Some(s) = self.stream(id) {
                    s.proven = true;
                }
            }
            Command::UnprovenUntil(id, until) => {
                if let Some(s) = self.stream(id) {
                    s.unproven_until = until;
                }
            }
            Command::SetCodec {
                id,
                payload_type,
                silence,
                payload,
            } => {
                if let Some(s) = self.stream(id) {
                    s.payload_type = payload_type & 0x7f;
                    s.silence = silence;
                    if let (Some(play), Some(payload)) = (s.playing.as_mut(), payload) {
                        play.offset = play.offset.min(payload.len());
                        play.payload = payload;
                    }
                }
            }
            Command::SetSending(id, on) => {
                if let Some(s) = self.stream(id) {
                    s.sending = on;
                }
            }
            Command::Play { id, payload, done } => match self.stream(id) {
                Some(s) if !payload.is_empty() => {
                    // Replacing a running play drops it, which answers Stopped.
                    s.playing = Some(Playing {
                        payload,
                        offset: 0,
                        done: Some(done),
                    });
                }
                Some(_) => {
                    let _ = done.send(PlayResult::Finished);
                }
                None => {
                    let _ = done.send(PlayResult::Stopped);
                }
            },
            Command::Stop(id) => {
                if let Some(s) = self.stream(id) {
                    s.playing = None;
                }
            }
        }
        self.stats
            .streams
            .store(self.index.len(), Ordering::Relaxed);
    }

    fn remove(&mut self, id: u64) {
        let Some((slot, i)) = self.index.remove(&id) else {
            return;
        };
        let Some(list) = self.slots.get_mut(slot) else {
            return;
        };
        if i < list.len() {
            drop(list.swap_remove(i));
            if let Some(moved) = list.get(i) {
                self.index.insert(moved.id, (slot, i));
            }
        }
    }

    fn run_subtick(&mut self, grid: &Grid, k: u64, buf: &mut [u8; HEADER_BYTES + PAYLOAD_BYTES]) {
        let slot = (k % grid.slots) as usize;
        let tick = k / grid.slots;
        let due = grid.due(k);
        let mut totals = TickTotals::default();
        if let Some(list) = self.slots.get_mut(slot) {
            for s in list.iter_mut() {
                s.on_tick(tick, due, buf, &mut totals);
            }
        }
        if totals.sent + totals.errors > 0 {
            let st = &self.stats;
            st.packets_sent.fetch_add(totals.sent, Ordering::Relaxed);
            st.send_errors.fetch_add(totals.errors, Ordering::Relaxed);
            st.late_packets.fetch_add(totals.late, Ordering::Relaxed);
            st.max_lateness_ns
                .fetch_max(totals.max_late_ns, Ordering::Relaxed);
        }
    }
}

/// A panic while handling one command or one subtick costs that command or tick (counted and
/// logged by the panic hook), never the pacer thread, whose death would silence every stream
/// on it.
fn guarded(f: impl FnOnce()) {
    let _ = crate::health::catch(f);
}

/// A shard's thread: sleep until the next subtick (waking early for commands), send, repeat.
fn run_shard(rx: Receiver<Command>, stats: Arc<ShardStats>, slots: u32) {
    let grid = Grid::new(Instant::now(), slots);
    let mut shard = Shard::new(slots, stats.clone());
    let mut buf = [0u8; HEADER_BYTES + PAYLOAD_BYTES];
    let mut k: u64 = 0;
    loop {
        loop {
            match rx.try_recv() {
                Ok(cmd) => guarded(|| shard.handle(cmd)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if shard.is_empty() {
            // Nothing to pace: block until a command, then rejoin the grid at the next subtick.
            match rx.recv() {
                Ok(cmd) => guarded(|| shard.handle(cmd)),
                Err(_) => return,
            }
            k = grid.subtick_at(Instant::now()).saturating_add(1);
            continue;
        }
        let now = Instant::now();
        let due = grid.due(k);
        if now < due {
            match rx.recv_timeout(due - now) {
                Ok(cmd) => guarded(|| shard.handle(cmd)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        if now - due > MAX_BEHIND {
            // Far behind (the machine stalled): skip to the present rather than burst.
            let current = grid.subtick_at(now);
            stats
                .skipped_slots
                .fetch_add(current.saturating_sub(k), Ordering::Relaxed);
            k = current.max(k);
        }
        guarded(|| shard.run_subtick(&grid, k, &mut buf));
        k = k.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_no_drift_and_finds_subticks() {
        let start = Instant::now();
        let g = Grid::new(start, 20);
        assert_eq!(g.due(0), start);
        assert_eq!(g.due(20), start + Duration::from_millis(20));
        assert_eq!(g.due(3 * 20 + 7), start + Duration::from_millis(67));
        // 60 s of packets: exactly 3000 periods, not an accumulated rounding error.
        assert_eq!(g.due(3000 * 20), start + Duration::from_secs(60));
        assert_eq!(g.subtick_at(start + Duration::from_micros(67_500)), 67);
        assert_eq!(g.subtick_at(start), 0);
        // Uneven split: 3 slots of 6.666 ms, periods still exact.
        let g3 = Grid::new(start, 3);
        assert_eq!(g3.due(3 * 50), start + Duration::from_secs(1));
        assert_eq!(
            g3.subtick_at(start + Duration::from_millis(19_999) / 1000),
            2
        );
    }

    fn stream(id: u64, socket: Arc<UdpSocket>, remote: SocketAddr) -> Box<NewStream> {
        Box::new(NewStream {
            id,
            socket,
            guard: Arc::new(()),
            remote: Some(remote),
            payload_type: 8,
            silence: 0xD5,
            ssrc: 0x1234_5678,
            seq: 0xFFFF,
            ts_base: 1000,
            stats: Arc::new(StreamStats::default()),
        })
    }

    #[test]
    fn shard_builds_packets_pads_and_finishes() {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx_sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let tx_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let mut shard = Shard::new(4, Arc::new(ShardStats::default()));
        shard.handle(Command::Add(stream(
            7,
            tx_sock,
            rx_sock.local_addr().unwrap(),
        )));
        let (slot, _) = shard.index[&7];
        let (done_tx, mut done_rx) = oneshot::channel();
        let payload: Arc<[u8]> = (0..200u8).collect::<Vec<u8>>().into();
        shard.handle(Command::Play {
            id: 7,
            payload,
            done: done_tx,
        });
        let grid = Grid::new(Instant::now(), 4);
        let mut buf = [0u8; 172];
        // Tick 5 in this stream's slot, then tick 6.
        shard.run_subtick(&grid, 5 * 4 + slot as u64, &mut buf);
        assert!(done_rx.try_recv().is_err());
        shard.run_subtick(&grid, 6 * 4 + slot as u64, &mut buf);
        assert_eq!(done_rx.try_recv(), Ok(PlayResult::Finished));
        let mut got = [0u8; 400];
        let n = rx_sock.recv(&mut got).unwrap();
        assert_eq!(n, 172);
        let p = rtp_rs::RtpReader::new(&got[..n]).unwrap();
        assert!(p.mark());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(u16::from(p.sequence_number()), 0xFFFF);
        assert_eq!(p.timestamp(), 1000 + 5 * 160);
        assert_eq!(p.ssrc(), 0x1234_5678);
        assert_eq!(p.payload(), &(0..160u8).collect::<Vec<u8>>()[..]);
        let n = rx_sock.recv(&mut got).unwrap();
        let p = rtp_rs::RtpReader::new(&got[..n]).unwrap();
        assert!(!p.mark());
        assert_eq!(u16::from(p.sequence_number()), 0);
        assert_eq!(p.timestamp(), 1000 + 6 * 160);
        let mut want: Vec<u8> = (160..200u8).collect();
        want.resize(160, 0xD5);
        assert_eq!(p.payload(), &want[..]);
        assert_eq!(shard.stats.packets_sent.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn shard_remove_keeps_index_consistent() {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sock.local_addr().unwrap();
        let mut shard = Shard::new(1, Arc::new(ShardStats::default()));
        for id in 1..=3 {
            shard.handle(Command::Add(stream(id, sock.clone(), to)));
        }
        shard.handle(Command::Remove(1));
        assert_eq!(shard.index.len(), 2);
        for id in [2, 3] {
            assert_eq!(shard.stream(id).map(|s| s.id), Some(id));
        }
        assert!(shard.stream(1).is_none());
        assert_eq!(shard.stats.streams.load(Ordering::Relaxed), 2);
        // A play on a removed stream answers Stopped at once.
        let (tx, mut rx) = oneshot::channel();
        shard.handle(Command::Play {
            id: 1,
            payload: Arc::from(&[1u8][..]),
            done: tx,
        });
        assert_eq!(rx.try_recv(), Ok(PlayResult::Stopped));
    }

    #[test]
    fn codec_switch_carries_on_at_the_same_offset() {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx_sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let tx_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let mut shard = Shard::new(1, Arc::new(ShardStats::default()));
        shard.handle(Command::Add(stream(
            3,
            tx_sock,
            rx_sock.local_addr().unwrap(),
        )));
        let (done_tx, _done_rx) = oneshot::channel();
        shard.handle(Command::Play {
            id: 3,
            payload: Arc::from(&[1u8; 480][..]),
            done: done_tx,
        });
        let grid = Grid::new(Instant::now(), 1);
        let mut buf = [0u8; 172];
        shard.run_subtick(&grid, 1, &mut buf);
        // The same audio in another codec: two packets left, sent as the new one.
        let mut other = vec![2u8; 160];
        other.extend_from_slice(&[3u8; 320]);
        shard.handle(Command::SetCodec {
            id: 3,
            payload_type: 0,
            silence: 0xFF,
            payload: Some(other.into()),
        });
        shard.run_subtick(&grid, 2, &mut buf);
        let mut got = [0u8; 400];
        for (pt, byte) in [(8, 1u8), (0, 3u8)] {
            let n = rx_sock.recv(&mut got).unwrap();
            let p = rtp_rs::RtpReader::new(&got[..n]).unwrap();
            assert_eq!(p.payload_type(), pt);
            assert!(p.payload().iter().all(|b| *b == byte), "PT {pt}");
        }
    }
}
