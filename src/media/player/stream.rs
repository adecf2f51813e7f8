//! One stream's send state on its shard, and the building and sending of its packets.

use std::any::Any;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rtp_rs::{RtpPacketBuilder, Seq};
use tokio::sync::oneshot;

use super::clock::{ClockState, SendClock, PACER};
use super::gate::{SendGate, TargetCache};
use super::{NewStream, PlayResult, StreamStats, LATE_THRESHOLD, SAMPLES_PER_PACKET};
use crate::media::srtp::SrtpOut;

pub(super) const PAYLOAD_BYTES: usize = SAMPLES_PER_PACKET as usize;
pub(super) const HEADER_BYTES: usize = 12;

pub(super) struct Playing {
    pub(super) payload: Arc<[u8]>,
    pub(super) offset: usize,
    pub(super) done: Option<oneshot::Sender<PlayResult>>,
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

pub(super) struct Stream {
    pub(super) id: u64,
    // Field order matters: the socket closes before the guard returns its port to the pool.
    socket: Arc<UdpSocket>,
    _guard: Arc<dyn Any + Send + Sync>,
    /// The session's hold, proof and target, asked per packet; the target as last read.
    gate: Arc<dyn SendGate>,
    target: TargetCache,
    pub(super) payload_type: u8,
    pub(super) silence: u8,
    ssrc: u32,
    /// Sequence number and last timestamp, shared with a relay that may take the stream over.
    clock: Arc<SendClock>,
    /// The clock word this stream last wrote: another value means a relay sent meanwhile.
    written: u64,
    ts_base: u32,
    /// Packet tick of the last packet sent: a gap before the next one starts a talkspurt.
    last_sent_tick: Option<u64>,
    pub(super) playing: Option<Playing>,
    stats: Arc<StreamStats>,
    srtp: Arc<SrtpOut>,
}

/// What one subtick did, summed into the shard counters once per subtick.
#[derive(Default)]
pub(super) struct TickTotals {
    pub(super) sent: u64,
    pub(super) errors: u64,
    pub(super) late: u64,
    pub(super) max_late_ns: u64,
}

impl Stream {
    pub(super) fn from_new(n: NewStream) -> Stream {
        Stream {
            id: n.id,
            socket: n.socket,
            _guard: n.guard,
            gate: n.gate,
            target: TargetCache::default(),
            payload_type: n.payload_type & 0x7f,
            silence: n.silence,
            ssrc: n.ssrc,
            written: n.clock.load(),
            ts_base: ClockState::unpack(n.clock.load()).ts,
            clock: n.clock,
            last_sent_tick: None,
            playing: None,
            stats: n.stats,
            srtp: n.srtp,
        }
    }

    /// The hot path: at most one packet, built in `buf`, sent without blocking.
    pub(super) fn on_tick(
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
        let start = play.offset;
        let end = start.saturating_add(PAYLOAD_BYTES).min(len);
        play.offset = end;
        // Held, unproven or no address: the play keeps its time, the packet is not sent.
        if let Ok(remote) = self.gate.check(due, &mut self.target) {
            self.send(tick, due, start..end, remote, buf, totals);
        }
        if end >= len {
            if let Some(mut p) = self.playing.take() {
                p.finish(PlayResult::Finished);
            }
        }
    }

    /// One packet of the play's `chunk`, unless a relay owns the stream now (the play keeps
    /// its time).
    fn send(
        &mut self,
        tick: u64,
        due: Instant,
        chunk: std::ops::Range<usize>,
        remote: SocketAddr,
        buf: &mut [u8; HEADER_BYTES + PAYLOAD_BYTES],
        totals: &mut TickTotals,
    ) {
        let word = self.clock.load();
        let state = ClockState::unpack(word);
        if state.owner != PACER {
            return;
        }
        // RFC 3551 §4.1: the marker bit flags the first packet after a silence gap.
        let mut marker = self
            .last_sent_tick
            .is_none_or(|t| t.wrapping_add(1) != tick);
        if word != self.written {
            // A relay sent since our last packet: carry on from its last timestamp.
            let ts = self.clock.continue_ts(state.ts, due);
            self.ts_base = ts.wrapping_sub((tick as u32).wrapping_mul(SAMPLES_PER_PACKET));
            marker = true;
        }
        // RFC 3550 §5.1: the timestamp follows the sampling clock, so it advances over
        // silence too: derived from the tick, not from the packets sent.
        let ts = self
            .ts_base
            .wrapping_add((tick as u32).wrapping_mul(SAMPLES_PER_PACKET));
        let next = ClockState {
            owner: PACER,
            seq: state.seq.wrapping_add(1),
            ts,
        };
        // Claimed before sending: a relay taking over right now gets the next number.
        let Some(written) = self.clock.advance(word, next, due) else {
            return;
        };
        self.written = written;
        let header = RtpPacketBuilder::new()
            .payload_type(self.payload_type)
            .marked(marker)
            .sequence(Seq::from(state.seq))
            .ssrc(self.ssrc)
            .timestamp(ts);
        let chunk = self
            .playing
            .as_ref()
            .and_then(|p| p.payload.get(chunk))
            .unwrap_or(&[]);
        let (head, body) = buf.split_at_mut(HEADER_BYTES);
        if header.build_into(head).is_ok() {
            let (audio, pad) = body.split_at_mut(chunk.len().min(PAYLOAD_BYTES));
            audio.copy_from_slice(chunk.get(..audio.len()).unwrap_or(&[]));
            // A short last packet is padded with the codec's silence.
            pad.fill(self.silence);
            match self.srtp.send_to(&self.socket, &buf[..], remote) {
                Ok(_) => totals.sent += 1,
                Err(_) => totals.errors += 1,
            }
            // A refused packet still used its number: to the receiver it is a lost packet.
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
}
