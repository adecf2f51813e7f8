//! The media relay of a bridge: two RTP sessions joined, each packet one leg receives sent at
//! once out of the other leg's socket. No SIP here: the bridge (`call/`) says which sessions
//! and what each negotiated.
//!
//! Threading: no task of its own. Each direction runs in the receive task of the leg the
//! packets come from (`rtp/receive.rs` calls a [`Tap`](crate::media::rtp::Tap) on every packet
//! its latch accepts): payload type mapped, audio transcoded between μ-law and A-law in a
//! fixed buffer, header rewritten, a non-blocking `sendto` on the destination's socket. Not
//! through the pacer, so no 20 ms of added delay, and nothing allocated per packet.
//!
//! One stream per leg: what a leg receives keeps the SSRC of its own session, and sequence
//! numbers and timestamps continue across a prompt played before and the relayed audio after
//! (and back). Both senders share the session's `SendClock` (`player/clock.rs`): one atomic
//! word of owner, next sequence number and last timestamp. Starting a relay hands both legs'
//! clocks from the pacer to the relay, stopping hands them back; while a relay owns a leg, a
//! prompt played on it keeps its time and sends nothing. Whoever sends next after a change of
//! sender (or after a change of the source's SSRC) continues from the last timestamp plus the
//! time since, with the marker bit set; between changes, the relay keeps the source's deltas.
//!
//! The destination's gates are the pacer's: hold, the proof rule (nothing to an address that
//! has not proved it takes part), the latched source before the SDP address
//! (`rtp/outbound.rs`).
//!
//! `forward.rs`: one direction; `stats.rs`: the counters.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::media::codec::Codec;
use crate::media::player::{next_owner, CLOSED, PACER};
use crate::media::rtp::{Outbound, RtpSession, ToReceiver};

mod forward;
mod stats;

use forward::Forward;
use stats::Counters;
pub use stats::{DirectionStats, DropReason, RelayStats};

/// What one leg negotiated: its audio codec under its payload type, and its telephone-event
/// payload type if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegFormat {
    pub codec: Codec,
    /// The audio payload type (the codec's static one, or a dynamic one mapped to it).
    pub payload_type: u8,
    pub event_pt: Option<u8>,
}

impl LegFormat {
    /// The codec under its static payload type (0 PCMU, 8 PCMA).
    pub fn new(codec: Codec, event_pt: Option<u8>) -> LegFormat {
        LegFormat {
            codec,
            payload_type: codec.payload_type(),
            event_pt,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("an RTP session cannot be relayed to itself")]
    SameSession,
    #[error("the RTP session is already relayed")]
    Busy,
    #[error("the RTP session has ended")]
    Ended,
}

struct End {
    out: Arc<Outbound>,
    control: UnboundedSender<ToReceiver>,
}

/// Two sessions joined while it lives. Dropping it (or [`Relay::stop`]) ends the relay: the
/// sessions go on, and prompts play on them again. A session dropped first sends nothing more
/// through the relay, but its port pair returns to the pool only when the relay ends (the
/// other leg's tap still holds its socket): the bridge drops the relay before the legs.
pub struct Relay {
    owner: u16,
    /// Leg A, then leg B.
    ends: [End; 2],
    counters: [Arc<Counters>; 2],
}

impl Relay {
    /// Joins leg `a` (the caller) and leg `b`, each with what it negotiated. A session can be
    /// in one relay at a time. A change of a leg's format (a re-INVITE) is a new relay: stop
    /// this one and start another.
    pub fn start(
        a: &RtpSession,
        a_format: LegFormat,
        b: &RtpSession,
        b_format: LegFormat,
    ) -> Result<Relay, RelayError> {
        let (a_out, a_control) = a.relay_end();
        let (b_out, b_control) = b.relay_end();
        if Arc::ptr_eq(&a_out, &b_out) {
            return Err(RelayError::SameSession);
        }
        let owner = next_owner();
        let claim = |out: &Outbound| {
            if out.clock().hand_over(PACER, owner) {
                Ok(())
            } else if out.clock().owner() == CLOSED {
                Err(RelayError::Ended)
            } else {
                Err(RelayError::Busy)
            }
        };
        claim(&a_out)?;
        if let Err(e) = claim(&b_out) {
            a_out.clock().hand_over(owner, PACER);
            return Err(e);
        }
        let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
        let relay = Relay {
            owner,
            ends: [
                End {
                    out: a_out,
                    control: a_control,
                },
                End {
                    out: b_out,
                    control: b_control,
                },
            ],
            counters,
        };
        // A's packets go out on B, and B's on A.
        let taps = [(0, 1, a_format, b_format), (1, 0, b_format, a_format)];
        for (from, to, from_format, to_format) in taps {
            let (Some(src), Some(dst), Some(counters)) = (
                relay.ends.get(from),
                relay.ends.get(to),
                relay.counters.get(from),
            ) else {
                continue;
            };
            let tap = Forward::new(
                owner,
                from_format,
                to_format,
                dst.out.clone(),
                counters.clone(),
            );
            if src.control.send(ToReceiver::Tap(Box::new(tap))).is_err() {
                // The receive task is gone: the session ended. Drop hands the clocks back.
                return Err(RelayError::Ended);
            }
        }
        Ok(relay)
    }

    /// Ends the relay (as dropping it does).
    pub fn stop(self) {}

    /// Counts so far per direction.
    pub fn stats(&self) -> RelayStats {
        let [a, b] = &self.counters;
        RelayStats {
            a_to_b: a.snapshot(),
            b_to_a: b.snapshot(),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for end in &self.ends {
            // The tap goes first; a packet it still handles meanwhile finds the clock no
            // longer ours and is dropped, so nothing interleaves with the pacer.
            let _ = end.control.send(ToReceiver::Untap(self.owner));
            end.out.clock().hand_over(self.owner, PACER);
        }
    }
}

#[cfg(test)]
mod tests;
