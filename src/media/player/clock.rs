//! The sequence and timestamp of one outgoing stream, shared by its pacer stream, a relay and
//! a DTMF send.
//!
//! A leg sends one RTP stream whoever fills it: the pacer (prompts), a relay (the other leg's
//! audio) or a DTMF send (`rtp/events_out.rs`, telephone-events). All keep the same SSRC, and
//! this clock makes the sequence numbers and timestamps continue across them. One atomic word
//! holds the owner (who may send now), the next sequence number and the last timestamp sent;
//! a sender claims each packet with a compare-exchange, so only the owner sends and no
//! sequence number is used twice even while ownership changes hands. Lock-free and allocation-free: the pacer's hot path stays so.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Instant;

use super::SAMPLES_PER_PACKET;

/// The owner that is the pacer itself (no relay).
pub(crate) const PACER: u16 = 0;
/// The session is gone: nobody sends any more.
pub(crate) const CLOSED: u16 = u16::MAX;

/// Owner ids handed out to the senders that take a stream from the pacer for a while (a relay,
/// a DTMF send); 0 is the pacer, `CLOSED` an ended session.
static NEXT_OWNER: AtomicU16 = AtomicU16::new(1);

/// A fresh owner id for a sender that takes a stream over (never `PACER` or `CLOSED`).
pub(crate) fn next_owner() -> u16 {
    loop {
        let o = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
        if o != PACER && o != CLOSED {
            return o;
        }
    }
}

/// One decoded state of the clock word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClockState {
    pub(crate) owner: u16,
    /// The sequence number of the next packet.
    pub(crate) seq: u16,
    /// The timestamp of the last packet sent (any value before the first).
    pub(crate) ts: u32,
}

impl ClockState {
    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.owner) << 48) | (u64::from(self.seq) << 32) | u64::from(self.ts)
    }

    pub(crate) fn unpack(word: u64) -> ClockState {
        ClockState {
            owner: (word >> 48) as u16,
            seq: (word >> 32) as u16,
            ts: word as u32,
        }
    }
}

#[derive(Debug)]
pub(crate) struct SendClock {
    word: AtomicU64,
    origin: Instant,
    /// Nanoseconds after `origin` of the last packet sent, plus one; 0 = none yet.
    last_sent_ns: AtomicU64,
}

impl SendClock {
    pub(crate) fn new(seq: u16, ts: u32) -> SendClock {
        SendClock {
            word: AtomicU64::new(
                ClockState {
                    owner: PACER,
                    seq,
                    ts,
                }
                .pack(),
            ),
            origin: Instant::now(),
            last_sent_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn load(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    pub(crate) fn owner(&self) -> u16 {
        ClockState::unpack(self.load()).owner
    }

    /// Claims one packet: moves the word from `seen` to `next` (sent at `at`). None when the
    /// word changed meanwhile (another owner took over): the packet must not be sent.
    pub(crate) fn advance(&self, seen: u64, next: ClockState, at: Instant) -> Option<u64> {
        let word = next.pack();
        self.word
            .compare_exchange(seen, word, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let ns = u64::try_from(at.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX - 1);
        self.last_sent_ns.store(ns + 1, Ordering::Release);
        Some(word)
    }

    /// Hands the stream from `from` to `to`, keeping its sequence and timestamp; false when
    /// `from` does not own it.
    pub(crate) fn hand_over(&self, from: u16, to: u16) -> bool {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let s = ClockState::unpack(w);
                (s.owner == from).then_some(ClockState { owner: to, ..s }.pack())
            })
            .is_ok()
    }

    /// The session ended: whoever owned the stream, nothing more is sent on it.
    pub(crate) fn close(&self) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(
                    ClockState {
                        owner: CLOSED,
                        ..ClockState::unpack(w)
                    }
                    .pack(),
                )
            });
    }

    /// The timestamp a new sender continues with at `now`: the last one plus the samples of
    /// the time since it was sent (at least one packet's worth, so it never repeats), so the
    /// receiver's clock runs on smoothly across a change of sender.
    pub(crate) fn continue_ts(&self, last_ts: u32, now: Instant) -> u32 {
        let last = self.last_sent_ns.load(Ordering::Acquire);
        let step = if last == 0 {
            SAMPLES_PER_PACKET
        } else {
            let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
                .unwrap_or(u64::MAX);
            // 8 kHz: one sample per 125 µs.
            let samples = now_ns.saturating_sub(last - 1) / 125_000;
            (samples as u32).max(SAMPLES_PER_PACKET)
        };
        last_ts.wrapping_add(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_owner_advances_and_ownership_keeps_seq_and_ts() {
        let c = SendClock::new(0xFFFF, 1000);
        let w0 = c.load();
        let s0 = ClockState::unpack(w0);
        assert_eq!((s0.owner, s0.seq, s0.ts), (PACER, 0xFFFF, 1000));
        let t0 = Instant::now();
        let next = ClockState {
            owner: PACER,
            seq: 0,
            ts: 1160,
        };
        let w1 = c.advance(w0, next, t0).unwrap();
        // A stale view cannot claim a packet.
        assert!(c.advance(w0, next, t0).is_none());
        assert!(c.hand_over(PACER, 7));
        assert!(!c.hand_over(PACER, 8));
        // The pacer's view is stale now: its next packet is refused.
        assert!(c.advance(w1, next, t0).is_none());
        let s = ClockState::unpack(c.load());
        assert_eq!((s.owner, s.seq, s.ts), (7, 0, 1160));
        // 100 ms later: 800 samples on.
        assert_eq!(c.continue_ts(1160, t0 + Duration::from_millis(100)), 1960);
        // Never less than one packet.
        assert_eq!(c.continue_ts(1160, t0), 1320);
        assert!(c.hand_over(7, PACER));
        c.close();
        assert_eq!(ClockState::unpack(c.load()).owner, CLOSED);
        assert!(!c.hand_over(PACER, 9));
    }
}
