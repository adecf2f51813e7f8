//! Our re-INVITEs that put the far end of one leg on hold or take it off (RFC 3264 §8.4),
//! for both kinds of leg: the caller's (`leg.rs`, pivotd its UAS) and a callee's
//! (`outbound.rs`, pivotd its UAC). Each leg builds its requests (its dialog knows how); this
//! decides when one may go and what its answer means:
//!
//! - one at a time (RFC 3261 §14.1): a change wished meanwhile goes when it ends, and the
//!   leg answers the far end's own re-INVITE 491 while ours is in progress (§14.2);
//! - a 2xx is acknowledged, and every retransmission of it again (§13.2.2.4);
//! - a 491 is tried again after §14.1's random wait: 2.1–4 s when we chose the Call-ID (we
//!   sent the dialog's INVITE), else 0–2 s;
//! - another refusal or a timeout leaves the call up and the session as it was (logged), and
//!   that change is not asked again until the wish changes.

use std::time::Duration;

use tokio::time::Instant;

use crate::sip::endpoint::OutgoingRequest;

/// The hold told to the far end of one leg by re-INVITE.
#[derive(Debug)]
pub(super) struct HoldReinvites {
    /// The leg, for the log: "caller" or "callee".
    leg: &'static str,
    /// We chose the dialog's Call-ID: §14.1's longer wait after a 491.
    owns_call_id: bool,
    /// The hold the far end last accepted (false before any).
    told: bool,
    /// The hold it refused (a final non-2xx other than 491, or no answer).
    refused: Option<bool>,
    in_flight: Option<InFlight>,
    /// The ACK of the last accepted re-INVITE, by its transaction id.
    acked: Option<(u64, Box<OutgoingRequest>)>,
    /// After a 491: nothing is sent before this.
    retry_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: u64,
    cseq: u32,
    hold: bool,
}

/// What a response to our re-INVITE asks of the leg.
#[derive(Debug)]
pub(super) enum Reply {
    /// Nothing (a provisional response, one that is not ours, a 491 whose wait started).
    Nothing,
    /// A 2xx: send `ack` as it is. `first` for the first 2xx, whose answer is new; false for
    /// a retransmission.
    Accepted {
        ack: Option<Box<OutgoingRequest>>,
        first: bool,
    },
    /// Refused or unanswered: the session stays as it was.
    Failed,
}

impl HoldReinvites {
    pub(super) fn new(leg: &'static str, owns_call_id: bool) -> HoldReinvites {
        HoldReinvites {
            leg,
            owns_call_id,
            told: false,
            refused: None,
            in_flight: None,
            acked: None,
            retry_at: None,
        }
    }

    /// Whether a re-INVITE telling `wanted` should go now: it differs from what the far end
    /// accepted, was not refused, and nothing is in flight or waiting out a 491.
    pub(super) fn due(&mut self, wanted: bool, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
        }
        if wanted == self.told {
            // Back where the far end is: a later change is a new wish, asked again.
            self.refused = None;
            return false;
        }
        self.in_flight.is_none() && self.retry_at.is_none() && self.refused != Some(wanted)
    }

    /// The re-INVITE telling `hold` went out as client transaction `id` with CSeq `cseq`.
    pub(super) fn sent(&mut self, id: u64, cseq: u32, hold: bool) {
        self.in_flight = Some(InFlight { id, cseq, hold });
    }

    /// Whether one of ours is in progress (the far end's re-INVITE gets 491, §14.2).
    pub(super) fn in_progress(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The hold the far end accepted: our answers to its offers keep it.
    pub(super) fn told(&self) -> bool {
        self.told
    }

    /// When a 491's wait ends, for the leg's timer.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether client transaction `id` is ours (in flight, or the last one accepted, whose
    /// 2xx may come again).
    pub(super) fn owns(&self, id: u64) -> bool {
        self.in_flight.is_some_and(|f| f.id == id) || self.acked.as_ref().is_some_and(|a| a.0 == id)
    }

    /// A response `code` to client transaction `id`; `ack` builds the ACK of a 2xx for the
    /// re-INVITE's CSeq.
    pub(super) fn on_response(
        &mut self,
        id: u64,
        code: u16,
        now: Instant,
        ack: impl FnOnce(u32) -> Option<OutgoingRequest>,
    ) -> Reply {
        let Some(f) = self.in_flight.filter(|f| f.id == id) else {
            // A retransmitted 2xx of the re-INVITE already accepted: our ACK was lost.
            return match &self.acked {
                Some((acked, a)) if *acked == id && (200..300).contains(&code) => Reply::Accepted {
                    ack: Some(a.clone()),
                    first: false,
                },
                _ => Reply::Nothing,
            };
        };
        match code {
            100..=199 => Reply::Nothing,
            200..=299 => {
                self.in_flight = None;
                self.told = f.hold;
                self.refused = None;
                let ack = ack(f.cseq).map(Box::new);
                self.acked = ack.clone().map(|a| (id, a));
                Reply::Accepted { ack, first: true }
            }
            491 => {
                // Glare: both sides re-INVITEd at once (§14.1).
                self.in_flight = None;
                let wait = glare_wait(self.owns_call_id);
                self.retry_at = Some(now + wait);
                tracing::info!(
                    leg = self.leg,
                    hold = f.hold,
                    ?wait,
                    "our re-INVITE crossed one of the far end's (491): trying again"
                );
                Reply::Nothing
            }
            _ => {
                self.in_flight = None;
                self.refused = Some(f.hold);
                tracing::info!(
                    leg = self.leg,
                    hold = f.hold,
                    code,
                    "our re-INVITE was refused: the call goes on as it was"
                );
                Reply::Failed
            }
        }
    }

    /// No final response to client transaction `id` (Timer B).
    pub(super) fn on_timeout(&mut self, id: u64) -> Reply {
        let Some(f) = self.in_flight.filter(|f| f.id == id) else {
            return Reply::Nothing;
        };
        self.in_flight = None;
        self.refused = Some(f.hold);
        tracing::info!(
            leg = self.leg,
            hold = f.hold,
            "our re-INVITE had no answer: the call goes on as it was"
        );
        Reply::Failed
    }
}

/// RFC 3261 §14.1: after a 491, the owner of the Call-ID waits 2.1–4 s, the other side 0–2 s,
/// in units of 10 ms, so that the two do not cross again.
fn glare_wait(owns_call_id: bool) -> Duration {
    let (from, to) = if owns_call_id { (210, 400) } else { (0, 200) };
    Duration::from_millis(10 * rand::Rng::gen_range(&mut rand::thread_rng(), from..=to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transport::{Peer, Proto};

    fn ack(_cseq: u32) -> Option<OutgoingRequest> {
        let peer = Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        Some(OutgoingRequest::new(
            rsip::Method::Ack,
            "z9hG4bKack".into(),
            bytes::Bytes::from_static(b"ACK"),
            &peer,
        ))
    }

    #[test]
    fn one_at_a_time_and_a_change_meanwhile_goes_after() {
        let now = Instant::now();
        let mut h = HoldReinvites::new("caller", false);
        assert!(!h.due(false, now), "nothing to tell");
        assert!(h.due(true, now));
        h.sent(1, 10, true);
        assert!(h.in_progress());
        assert!(!h.due(false, now), "one at a time");
        assert!(matches!(h.on_response(1, 180, now, ack), Reply::Nothing));
        let Reply::Accepted { ack: a, first } = h.on_response(1, 200, now, |cseq| {
            assert_eq!(cseq, 10, "the ACK has the re-INVITE's CSeq");
            ack(cseq)
        }) else {
            panic!("a 2xx is accepted");
        };
        assert!(first && a.is_some());
        assert!(h.told() && !h.in_progress());
        // The 2xx again: the same ACK again, nothing new.
        assert!(h.owns(1));
        assert!(matches!(
            h.on_response(1, 200, now, |_| panic!("not rebuilt")),
            Reply::Accepted {
                first: false,
                ack: Some(_)
            }
        ));
        assert!(h.due(false, now), "the resume goes now");
    }

    #[test]
    fn a_491_waits_by_who_owns_the_call_id_and_a_refusal_is_not_asked_again() {
        let now = Instant::now();
        for (owner, min, max) in [(true, 2100, 4000), (false, 0, 2000)] {
            let mut h = HoldReinvites::new("callee", owner);
            assert!(h.due(true, now));
            h.sent(7, 2, true);
            assert!(matches!(h.on_response(7, 491, now, ack), Reply::Nothing));
            let wait = h.retry_at().unwrap() - now;
            assert!(
                wait >= Duration::from_millis(min) && wait <= Duration::from_millis(max),
                "{wait:?}"
            );
            assert!(!h.due(true, now + Duration::from_millis(min.saturating_sub(1))) || min == 0);
            assert!(h.due(true, now + Duration::from_millis(max)), "tried again");
            assert!(h.retry_at().is_none());
            assert!(!h.told(), "a 491 changed nothing");
        }
        let mut h = HoldReinvites::new("caller", false);
        assert!(h.due(true, now));
        h.sent(3, 5, true);
        assert!(matches!(h.on_response(3, 488, now, ack), Reply::Failed));
        assert!(!h.told() && !h.due(true, now), "refused: not asked again");
        // The wish goes back, then comes again: asked again.
        assert!(!h.due(false, now));
        assert!(h.due(true, now));
        h.sent(4, 6, true);
        assert!(matches!(h.on_timeout(4), Reply::Failed));
        assert!(!h.due(true, now));
        assert!(matches!(h.on_response(99, 200, now, ack), Reply::Nothing));
    }
}
