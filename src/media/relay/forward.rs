//! One relay direction: a packet received on one leg, rewritten into a fixed buffer and sent
//! at once out of the other leg's socket. Runs inside the source leg's receive task.

use std::sync::Arc;
use std::time::Instant;

use rtp_rs::RtpReader;

use super::stats::{Counters, DropReason};
use super::LegFormat;
use crate::media::codec;
use crate::media::player::ClockState;
use crate::media::rtp::{Blocked, Outbound, Tap, TargetCache};

const HEADER: usize = 12;
/// Comfort noise (RFC 3389 §4).
const CN_PT: u8 = 13;
/// As large as the receive task's buffer: any datagram it read fits.
const BUF: usize = 2048;
/// A source silent this long paused (a hold, a phone's own silence): what it sends next is
/// timed from our clock, not from its timestamps, which a phone may not have moved on.
const PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Forward {
    owner: u16,
    from: LegFormat,
    to: LegFormat,
    out: Arc<Outbound>,
    counters: Arc<Counters>,
    target: TargetCache,
    /// The source's SSRC the timestamp offset was taken for.
    source_ssrc: Option<u32>,
    /// Output timestamp − input timestamp: the incoming deltas are kept.
    ts_offset: u32,
    /// The destination clock word this direction last wrote: another value means the pacer
    /// (or anyone) sent since, so the timestamps are rebased.
    written: Option<u64>,
    /// A packet was held back by a gate: the next one sent starts a talkspurt.
    gap: bool,
    /// When the last packet was sent.
    sent_at: Option<Instant>,
    buf: [u8; BUF],
}

impl Forward {
    pub(super) fn new(
        owner: u16,
        from: LegFormat,
        to: LegFormat,
        out: Arc<Outbound>,
        counters: Arc<Counters>,
    ) -> Forward {
        Forward {
            owner,
            from,
            to,
            out,
            counters,
            target: TargetCache::default(),
            source_ssrc: None,
            ts_offset: 0,
            written: None,
            gap: false,
            sent_at: None,
            buf: [0; BUF],
        }
    }

    /// The destination payload type, and whether the payload is audio to transcode.
    fn map(&self, pt: u8) -> Result<(u8, bool), DropReason> {
        if pt == self.from.payload_type {
            Ok((self.to.payload_type, true))
        } else if Some(pt) == self.from.event_pt {
            self.to
                .event_pt
                .map(|e| (e, false))
                .ok_or(DropReason::NoEventPayloadType)
        } else if pt == CN_PT {
            Err(DropReason::ComfortNoise)
        } else {
            Err(DropReason::UnknownPayloadType)
        }
    }

    fn forward(&mut self, p: &RtpReader<'_>, now: Instant) -> Result<(), DropReason> {
        let (pt, audio) = self.map(p.payload_type())?;
        let to = match self.out.gate(now, &mut self.target) {
            Ok(to) => to,
            Err(b) => {
                self.gap = true;
                return Err(match b {
                    Blocked::Held => DropReason::Held,
                    Blocked::Unproven => DropReason::Unproven,
                    Blocked::NoRemote => DropReason::NoRemote,
                });
            }
        };
        // Ownership first: a packet the pacer owns the leg for is not copied for nothing.
        let clock = self.out.clock();
        let word = clock.load();
        let state = ClockState::unpack(word);
        if state.owner != self.owner {
            return Err(DropReason::NotOwner);
        }
        let payload = p.payload();
        let len = HEADER + payload.len();
        let body = self.buf.get_mut(HEADER..len).ok_or(DropReason::TooLong)?;
        let transcode = audio && self.from.codec != self.to.codec;
        if transcode {
            codec::transcode(self.from.codec, self.to.codec, payload, body);
        } else {
            body.copy_from_slice(payload);
        }
        let mut marker = p.mark() || self.gap;
        let paused = self
            .sent_at
            .is_some_and(|t| now.saturating_duration_since(t) >= PAUSE);
        if self.source_ssrc != Some(p.ssrc()) || self.written != Some(word) || paused {
            // The first packet, a new source stream, the pacer sent meanwhile, or the source
            // paused: carry on from the destination's last timestamp plus the time since,
            // keeping the source's deltas from here.
            let ts = clock.continue_ts(state.ts, now);
            self.ts_offset = ts.wrapping_sub(p.timestamp());
            self.source_ssrc = Some(p.ssrc());
            marker = true;
        }
        let ts = p.timestamp().wrapping_add(self.ts_offset);
        let next = ClockState {
            owner: self.owner,
            seq: state.seq.wrapping_add(1),
            ts,
        };
        // RFC 3550 §5.1: version 2, no padding, extension or CSRC (this is our stream now).
        let mut h = [0u8; HEADER];
        h[0] = 0x80;
        h[1] = (u8::from(marker) << 7) | (pt & 0x7f);
        h[2..4].copy_from_slice(&state.seq.to_be_bytes());
        h[4..8].copy_from_slice(&ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.out.ssrc().to_be_bytes());
        if let Some(head) = self.buf.get_mut(..HEADER) {
            head.copy_from_slice(&h);
        }
        // Claimed before sending, as the pacer does: a change of owner right now wins.
        self.written = Some(clock.advance(word, next, now).ok_or(DropReason::NotOwner)?);
        self.gap = false;
        self.sent_at = Some(now);
        let packet = self.buf.get(..len).ok_or(DropReason::TooLong)?;
        self.out
            .send(packet, to)
            .map_err(|_| DropReason::SendError)?;
        self.counters.relayed(transcode, !audio);
        Ok(())
    }
}

impl Tap for Forward {
    fn on_rtp(&mut self, packet: &RtpReader<'_>, now: Instant) {
        if let Err(why) = self.forward(packet, now) {
            self.counters.dropped(why);
        }
    }

    fn owner(&self) -> u16 {
        self.owner
    }
}
