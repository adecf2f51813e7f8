//! DTMF sent as RFC 4733 telephone-events in a session's own RTP stream (`send_dtmf`).
//!
//! The sender takes the session's stream from the pacer as a relay does (`media/relay/`): it
//! claims the session's `SendClock` with a fresh owner id, so while it sends, a prompt playing
//! on the session keeps its time and sends nothing; it asks the session's gates (hold, proof,
//! latched target) before each packet; it hands the clock back to the pacer when done, failed
//! or cancelled (a guard's `Drop`), and the pacer's next packet continues the sequence numbers
//! and timestamps with a marker. A session a relay owns (bridged) refuses: `Busy`.
//!
//! Per digit, one event (RFC 4733 §2.5.1): every packet carries the event's start timestamp,
//! the first one the marker bit; one packet per 20 ms whose duration grows by 160 (8 kHz
//! samples), the last of them with the E bit, sent three times in all (§2.5.1.4: same
//! duration, new sequence numbers, at the update interval). The next digit starts
//! [`INTER_DIGIT_GAP`] after the end of the previous one. Sequence numbers continue the
//! session's; the first event's timestamp continues the session's last one plus the time since
//! (`SendClock::continue_ts`), and later ones follow the 20 ms grid, so a timestamp is the
//! sampling clock's at the event's start. What the clock records after each packet is that
//! sampling clock at the packet's slot (not the event's start timestamp): whoever sends next
//! continues after the event's end, never backwards into it.
//!
//! Timing: 20 ms slots on absolute deadlines from the start; a late wake-up sends the overdue
//! packets at once rather than dropping them (the receiver keys on timestamps and durations).
//! No allocation per packet: one 16-byte buffer, the digits in a fixed array.
//!
//! The digits come from a pivot answer: anything but `0`-`9`, `*`, `#`, `A`-`D` (either case)
//! is skipped (logged at debug level), at most [`MAX_DIGITS`] are sent, and the duration is
//! held within [`MIN_EVENT_DURATION`]..=[`MAX_EVENT_DURATION`].

use std::time::{Duration, Instant};

use super::outbound::Outbound;
use super::TargetCache;
use crate::logsafe::wire;
use crate::media::dtmf::event_code;
use crate::media::player::{next_owner, ClockState, CLOSED, PACER, PTIME, SAMPLES_PER_PACKET};

/// The most digits one send carries; the rest of a longer string is dropped (logged). Well
/// beyond any IVR navigation, PIN or account number, and it bounds one send to about five
/// and a half minutes at the longest duration (2 min 14 s at Kazoo's default).
pub const MAX_DIGITS: usize = 64;

/// The shortest event sent (a shorter duration is raised to it): ITU-T Q.24's shortest tone
/// that receivers must recognise, and two packets, so that an update precedes the end.
pub const MIN_EVENT_DURATION: Duration = Duration::from_millis(40);

/// The longest event sent (a longer duration is lowered to it): 40,000 samples fit the 16-bit
/// duration field (8.19 s at 8 kHz), so no event needs the long-event segments of RFC 4733
/// §2.5.1.3; and it holds Kazoo's default with room to spare.
pub const MAX_EVENT_DURATION: Duration = Duration::from_secs(5);

/// Kazoo's `send_dtmf` default when the callflow gives no `duration_ms`
/// (`cf_send_dtmf.erl`: `<<"2000">>`, and the module's schema default).
pub const DEFAULT_EVENT_DURATION: Duration = Duration::from_millis(2000);

/// Silence between the end of one tone and the start of the next. ITU-T Q.24 asks for at least
/// 40 ms between digits; a gateway that regenerates the tones in-band (towards the PSTN) or a
/// detector behind it needs a clear pause to tell two equal digits apart, and 100 ms is what
/// common senders leave. The two end retransmissions (40 ms) fall inside it, so a late one
/// never overlaps the next digit. Short enough that 64 digits of 40 ms take under 10 s.
pub const INTER_DIGIT_GAP: Duration = Duration::from_millis(100);

/// RFC 4733 §2.5.1.4: the final packet of an event is sent three times.
const END_PACKETS: u32 = 3;
/// The gap in 20 ms packet slots.
const GAP_SLOTS: u32 = (INTER_DIGIT_GAP.as_millis() / PTIME.as_millis()) as u32;
const _: () = assert!(GAP_SLOTS >= END_PACKETS - 1);
/// The power level field: −10 dBm0 (RFC 4733 §2.3.4), a usual DTMF level.
const VOLUME: u8 = 10;
const HEADER: usize = 12;
/// RTP header and the 4-byte event payload (RFC 4733 §2.3).
const PACKET: usize = HEADER + 4;

/// Why no events could be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendDigitsError {
    /// Someone else sends on the session: a relay (it is bridged) or another DTMF send.
    #[error("the RTP session's sending is taken (bridged by a relay, or another DTMF send)")]
    Busy,
    /// The session is gone.
    #[error("the RTP session has ended")]
    Ended,
}

/// Sends `digits` as telephone-events under payload type `event_pt`; see the module doc.
/// Resolves after the last event's final packet. Nothing to send is `Ok`, and so is a send the
/// gates held back (on hold, unproven): like a play, it keeps its time and sends nothing.
pub(super) async fn send_digits(
    out: &Outbound,
    digits: &str,
    duration: Duration,
    event_pt: u8,
) -> Result<(), SendDigitsError> {
    let codes = Codes::parse(digits);
    if codes.as_slice().is_empty() {
        tracing::debug!(digits = %wire(digits), "send_dtmf: no DTMF digit to send");
        return Ok(());
    }
    let packets = packets_per_event(duration);
    let mut sender = Sender::claim(out, event_pt & 0x7f)?;
    let start = Instant::now();
    let clock = out.clock();
    // Ours now: nobody else moves the word until we hand it back.
    let ts0 = clock.continue_ts(ClockState::unpack(clock.load()).ts, start);
    let at_slot = |slot: u32| {
        (
            start + PTIME * slot,
            ts0.wrapping_add(slot.wrapping_mul(SAMPLES_PER_PACKET)),
        )
    };
    let mut slot: u32 = 0;
    for &code in codes.as_slice() {
        let (_, event_ts) = at_slot(slot);
        sender.event = Some(Event {
            code,
            ts: event_ts,
            duration: 0,
            marked: false,
            ended: false,
        });
        // Updates 1..packets (the last one is the first end packet), then the retransmissions.
        for k in 1..=packets + END_PACKETS - 1 {
            let (due, slot_ts) = at_slot(slot);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let samples = k.min(packets) * SAMPLES_PER_PACKET;
            let duration = u16::try_from(samples).unwrap_or(u16::MAX);
            sender.packet(k >= packets, duration, due, slot_ts)?;
            slot += 1;
        }
        sender.event = None;
        slot += GAP_SLOTS - (END_PACKETS - 1);
    }
    tracing::debug!(
        digits = codes.len,
        sent = sender.sent,
        held = sender.held,
        "send_dtmf: telephone-events sent"
    );
    Ok(())
}

/// Packets per event for `duration`: held within the caps, rounded up to whole 20 ms packets.
fn packets_per_event(duration: Duration) -> u32 {
    let d = duration.clamp(MIN_EVENT_DURATION, MAX_EVENT_DURATION);
    let ptime = PTIME.as_millis();
    u32::try_from(d.as_millis().div_ceil(ptime))
        .unwrap_or(1)
        .max(2)
}

/// The event codes of the digits to send, in order, at most [`MAX_DIGITS`].
struct Codes {
    codes: [u8; MAX_DIGITS],
    len: usize,
}

impl Codes {
    fn parse(digits: &str) -> Codes {
        let mut out = Codes {
            codes: [0; MAX_DIGITS],
            len: 0,
        };
        let mut skipped = 0usize;
        let mut truncated = false;
        for c in digits.chars() {
            let Some(code) = event_code(c) else {
                skipped += 1;
                continue;
            };
            let Some(place) = out.codes.get_mut(out.len) else {
                truncated = true;
                break;
            };
            *place = code;
            out.len += 1;
        }
        if skipped > 0 {
            tracing::debug!(digits = %wire(digits), skipped, "send_dtmf: characters that are not DTMF digits skipped");
        }
        if truncated {
            tracing::debug!(
                max = MAX_DIGITS,
                "send_dtmf: digits beyond the maximum dropped"
            );
        }
        out
    }

    fn as_slice(&self) -> &[u8] {
        self.codes.get(..self.len).unwrap_or(&[])
    }
}

/// One telephone-event packet: the RTP header (RFC 3550 §5.1: version 2, no padding,
/// extension or CSRC) and the event payload (RFC 4733 §2.3), written into `buf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EventPacket {
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    code: u8,
    end: bool,
    duration: u16,
}

impl EventPacket {
    fn write(&self, buf: &mut [u8; PACKET]) {
        buf[0] = 0x80;
        buf[1] = (u8::from(self.marker) << 7) | (self.pt & 0x7f);
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        buf[12] = self.code;
        // E, then R (reserved, 0), then the 6-bit volume.
        buf[13] = (u8::from(self.end) << 7) | (VOLUME & 0x3f);
        buf[14..16].copy_from_slice(&self.duration.to_be_bytes());
    }
}

/// The event being sent.
#[derive(Clone, Copy, Debug)]
struct Event {
    code: u8,
    /// Its start timestamp, in all its packets.
    ts: u32,
    /// The duration last put in a packet.
    duration: u16,
    /// A packet of it went out with the marker bit.
    marked: bool,
    /// Its end was sent (or held back by the gates): nothing to close on drop.
    ended: bool,
}

/// The session's stream while the events go out: owned under `owner` until dropped.
struct Sender<'a> {
    out: &'a Outbound,
    owner: u16,
    pt: u8,
    target: TargetCache,
    buf: [u8; PACKET],
    event: Option<Event>,
    /// Packets handed to the kernel, and packets the gates held back.
    sent: u32,
    held: u32,
}

/// Which error a lost or refused claim is.
fn taken(owner: u16) -> SendDigitsError {
    if owner == CLOSED {
        SendDigitsError::Ended
    } else {
        SendDigitsError::Busy
    }
}

impl<'a> Sender<'a> {
    /// Takes the stream from the pacer; a relay (or another send) owning it is `Busy`.
    fn claim(out: &'a Outbound, pt: u8) -> Result<Sender<'a>, SendDigitsError> {
        let owner = next_owner();
        if !out.clock().hand_over(PACER, owner) {
            return Err(taken(out.clock().owner()));
        }
        Ok(Sender {
            out,
            owner,
            pt,
            target: TargetCache::default(),
            buf: [0; PACKET],
            event: None,
            sent: 0,
            held: 0,
        })
    }

    /// One packet of the current event at `due`; `clock_ts` is the sampling clock at its slot,
    /// recorded in the session's clock with the sequence number it uses. Held back by a gate,
    /// it uses no sequence number, and the next one sent carries the marker if none has.
    fn packet(
        &mut self,
        end: bool,
        duration: u16,
        due: Instant,
        clock_ts: u32,
    ) -> Result<(), SendDigitsError> {
        let Some(ev) = self.event.as_mut() else {
            return Ok(());
        };
        ev.duration = duration;
        ev.ended |= end;
        let Ok(to) = self.out.gate(due, &mut self.target) else {
            self.held += 1;
            return Ok(());
        };
        let clock = self.out.clock();
        let word = clock.load();
        let state = ClockState::unpack(word);
        if state.owner != self.owner {
            return Err(taken(state.owner));
        }
        let next = ClockState {
            owner: self.owner,
            seq: state.seq.wrapping_add(1),
            ts: clock_ts,
        };
        // Claimed before sending, as the pacer and the relay do.
        if clock.advance(word, next, due).is_none() {
            return Err(taken(clock.owner()));
        }
        EventPacket {
            pt: self.pt,
            marker: !ev.marked,
            seq: state.seq,
            ts: ev.ts,
            ssrc: self.out.ssrc(),
            code: ev.code,
            end,
            duration,
        }
        .write(&mut self.buf);
        ev.marked = true;
        // A refused packet still used its number: to the receiver it is a lost packet.
        match self.out.send(&self.buf, to) {
            Ok(_) => self.sent += 1,
            Err(e) => tracing::debug!("send_dtmf: RTP send failed: {e}"),
        }
        Ok(())
    }
}

impl Drop for Sender<'_> {
    /// Done, failed or cancelled: an event cut short is ended at once (one end packet, so the
    /// far end does not hold the key down until its timeout), and the pacer gets the stream
    /// back.
    fn drop(&mut self) {
        if let Some(ev) = self.event.filter(|e| !e.ended) {
            let now = Instant::now();
            let clock = self.out.clock();
            let ts = clock.continue_ts(ClockState::unpack(clock.load()).ts, now);
            let _ = self.packet(true, ev.duration, now, ts);
        }
        self.out.clock().hand_over(self.owner, PACER);
    }
}

#[cfg(test)]
mod tests;
