//! The strict symmetric-RTP latch: which source's packets a session takes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after the first RTP packet from an address other than the SDP one a packet from
/// the SDP address still takes the latch (strictrtp's learning): long enough for a caller whose
/// first packet lost a race to a stray or forged one, short enough that the stream settles.
pub const LEARNING_WINDOW: Duration = Duration::from_millis(500);

/// The strict symmetric-RTP latch (Asterisk's `strictrtp`): which sources' packets count.
#[derive(Debug)]
pub(super) struct Latch {
    /// The SDP address: its packets win the latch during the learning phase.
    sdp: Option<SocketAddr>,
    state: LatchState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatchState {
    /// No RTP yet.
    Learning,
    /// First packets came from `addr`, not the SDP address: it is the target, but a packet
    /// from the SDP address before `until` still takes the latch.
    Candidate { addr: SocketAddr, until: Instant },
    /// Settled for the rest of the call (or until a re-INVITE moves the SDP address): other
    /// sources are dropped, so a stream arriving later from a new address and SSRC cannot
    /// take the call's audio (RTP bleed).
    Latched(SocketAddr),
}

/// What the latch made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// From the caller; `Some` when the send target moves to this address.
    Accept(Option<SocketAddr>),
    /// From another source: dropped and counted.
    Foreign,
}

impl Latch {
    pub(super) fn new(sdp: Option<SocketAddr>) -> Latch {
        Latch {
            sdp,
            state: LatchState::Learning,
        }
    }

    pub(super) fn on_packet(&mut self, from: SocketAddr, now: Instant) -> Verdict {
        match self.state {
            LatchState::Learning => {
                self.state = if Some(from) == self.sdp {
                    LatchState::Latched(from)
                } else {
                    LatchState::Candidate {
                        addr: from,
                        until: now + LEARNING_WINDOW,
                    }
                };
                Verdict::Accept(Some(from))
            }
            LatchState::Candidate { addr, until } => {
                if now >= until {
                    self.state = LatchState::Latched(addr);
                    return self.on_packet(from, now);
                }
                if from == addr {
                    Verdict::Accept(None)
                } else if Some(from) == self.sdp {
                    self.state = LatchState::Latched(from);
                    Verdict::Accept(Some(from))
                } else {
                    Verdict::Foreign
                }
            }
            LatchState::Latched(addr) if from == addr => Verdict::Accept(None),
            LatchState::Latched(_) => Verdict::Foreign,
        }
    }

    /// A new SDP address: true when it starts a new learning phase.
    pub(super) fn on_sdp(&mut self, sdp: Option<SocketAddr>) -> bool {
        if sdp == self.sdp {
            return false;
        }
        self.sdp = sdp;
        self.state = LatchState::Learning;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latch_prefers_the_sdp_address_while_learning_then_holds() {
        let sdp: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let nat: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The SDP address first: latched at once, everything else foreign.
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.on_packet(sdp, t0), Verdict::Accept(Some(sdp)));
        assert_eq!(l.on_packet(nat, ms(1)), Verdict::Foreign);
        assert_eq!(l.on_packet(sdp, ms(2)), Verdict::Accept(None));
        // Another source first: a candidate the SDP address can still displace...
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept(Some(nat)));
        assert_eq!(l.on_packet(nat, ms(10)), Verdict::Accept(None));
        assert_eq!(l.on_packet(other, ms(20)), Verdict::Foreign);
        assert_eq!(l.on_packet(sdp, ms(30)), Verdict::Accept(Some(sdp)));
        // ...and then never again: no re-latch to the earlier source.
        assert_eq!(l.on_packet(nat, ms(40)), Verdict::Foreign);
        // After the learning window the candidate is final: the SDP address is foreign too.
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept(Some(nat)));
        let late = LEARNING_WINDOW.as_millis() as u64 + 1;
        assert_eq!(l.on_packet(sdp, ms(late)), Verdict::Foreign);
        assert_eq!(l.on_packet(nat, ms(late + 1)), Verdict::Accept(None));
        // A re-INVITE moving the SDP address starts a new learning phase; the same one not.
        assert!(!l.on_sdp(Some(sdp)));
        assert_eq!(l.on_packet(sdp, ms(late + 2)), Verdict::Foreign);
        assert!(l.on_sdp(Some(other)));
        assert_eq!(
            l.on_packet(other, ms(late + 3)),
            Verdict::Accept(Some(other))
        );
        assert_eq!(l.on_packet(nat, ms(late + 4)), Verdict::Foreign);
    }
}
