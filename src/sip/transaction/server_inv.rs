//! INVITE server transaction (RFC 3261 §17.2.1, with the Accepted state of RFC 6026 §7.1).

use std::time::Duration;

use bytes::Bytes;

use super::{backoff, Out, TxNotice};
use crate::sip::timer::{TimerKind, Timers};

#[derive(Debug)]
enum State {
    /// Waiting for the TU's final response; retransmitted INVITEs get the last provisional.
    Proceeding {
        last_provisional: Option<Bytes>,
    },
    /// A non-2xx final response sent; retransmitted with Timer G until the ACK (Timer H).
    Completed {
        response: Bytes,
        interval: Duration,
    },
    /// A 2xx sent; retransmitted with Timer G until the ACK arrives in the dialog, or Timer H.
    Accepted {
        response: Bytes,
        interval: Duration,
    },
    /// The 2xx was acknowledged; INVITE retransmissions are absorbed until Timer H (as RFC
    /// 6026's Timer L) ends the transaction.
    AcceptedAcked,
    /// The non-2xx was acknowledged; ACK retransmissions absorbed until Timer I.
    Confirmed,
    Terminated,
}

/// An INVITE server transaction.
#[derive(Debug)]
pub struct ServerInvite {
    state: State,
    reliable: bool,
    timers: Timers,
}

impl ServerInvite {
    pub fn new(reliable: bool, timers: Timers) -> ServerInvite {
        ServerInvite {
            state: State::Proceeding {
                last_provisional: None,
            },
            reliable,
            timers,
        }
    }

    /// True once a final response was sent (CANCEL then has no effect, §9.2).
    pub fn has_final(&self) -> bool {
        !matches!(self.state, State::Proceeding { .. })
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    /// Whether its owner may still hear from it: a CANCEL before the final response, an ACK
    /// timeout after a 2xx. Past that it only answers retransmissions.
    pub fn may_notify(&self) -> bool {
        matches!(
            self.state,
            State::Proceeding { .. } | State::Accepted { .. }
        )
    }

    /// A retransmission of the INVITE: §17.2.1 says resend the last response.
    pub fn on_retransmission(&self) -> Out {
        match &self.state {
            State::Proceeding {
                last_provisional: Some(r),
            } => Out::send(r.clone()),
            State::Completed { response, .. } | State::Accepted { response, .. } => {
                Out::send(response.clone())
            }
            _ => Out::default(),
        }
    }

    /// The TU sends a response.
    pub fn respond(&mut self, code: u16, bytes: Bytes) -> Out {
        let t = self.timers;
        match self.state {
            State::Proceeding { .. } => {}
            // A final response was already sent: nothing more may go out.
            _ => return Out::default(),
        }
        let g = t.t1;
        match code {
            100..=199 => {
                self.state = State::Proceeding {
                    last_provisional: Some(bytes.clone()),
                };
                Out::send(bytes)
            }
            _ => {
                // A 2xx waits for its ACK in Accepted (RFC 6026), any other final in
                // Completed; both are retransmitted with Timer G (unreliable transports only)
                // until the ACK or Timer H.
                self.state = if code < 300 {
                    State::Accepted {
                        response: bytes.clone(),
                        interval: g,
                    }
                } else {
                    State::Completed {
                        response: bytes.clone(),
                        interval: g,
                    }
                };
                let out = Out::send(bytes).timer(TimerKind::H, t.t1x64());
                if self.reliable {
                    out
                } else {
                    out.timer(TimerKind::G, g)
                }
            }
        }
    }

    /// An ACK matching this transaction (a non-2xx final was sent): §17.2.1 Confirmed.
    pub fn on_ack(&mut self) -> Out {
        match self.state {
            State::Completed { .. } => {
                self.state = State::Confirmed;
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                Out::default().timer(TimerKind::I, i)
            }
            _ => Out::default(),
        }
    }

    /// The ACK of our 2xx arrived in the dialog: stop retransmitting it.
    pub fn on_2xx_ack(&mut self) -> Out {
        if let State::Accepted { .. } = self.state {
            self.state = State::AcceptedAcked;
        }
        Out::default()
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Out {
        let t2 = self.timers.t2;
        match (&mut self.state, kind) {
            (State::Completed { response, interval }, TimerKind::G)
            | (State::Accepted { response, interval }, TimerKind::G) => {
                let next = backoff(*interval, t2);
                *interval = next;
                Out::send(response.clone()).timer(TimerKind::G, next)
            }
            (State::Completed { .. }, TimerKind::H) => {
                self.state = State::Terminated;
                Out::terminated()
            }
            (State::Accepted { .. }, TimerKind::H) => {
                self.state = State::Terminated;
                Out {
                    notice: Some(TxNotice::AckTimeout),
                    terminated: true,
                    ..Out::default()
                }
            }
            (State::AcceptedAcked, TimerKind::H) | (State::Confirmed, TimerKind::I) => {
                self.state = State::Terminated;
                Out::terminated()
            }
            _ => Out::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn the_owner_is_needed_until_the_final_or_the_2xx_ack() {
        let mut tx = ServerInvite::new(false, Timers::default());
        assert!(tx.may_notify(), "a CANCEL may come");
        tx.respond(180, b("180"));
        assert!(tx.may_notify());
        tx.respond(200, b("200"));
        assert!(tx.may_notify(), "the ACK may time out");
        tx.on_2xx_ack();
        assert!(!tx.may_notify());

        let mut tx = ServerInvite::new(false, Timers::default());
        tx.respond(486, b("486"));
        assert!(!tx.may_notify(), "a non-2xx's ACK is the transaction's own");
    }

    #[test]
    fn retransmitted_invite_gets_last_provisional_then_final() {
        let mut tx = ServerInvite::new(false, Timers::default());
        assert!(tx.on_retransmission().send.is_none());
        tx.respond(100, b("100"));
        assert_eq!(tx.on_retransmission().send, Some(b("100")));
        let out = tx.respond(486, b("486"));
        assert_eq!(out.send, Some(b("486")));
        assert_eq!(tx.on_retransmission().send, Some(b("486")));
        // a second final is refused
        assert!(tx.respond(200, b("200")).send.is_none());
    }

    #[test]
    fn non_2xx_retransmits_with_timer_g_doubling_to_t2_until_ack() {
        let t = Timers::default();
        let mut tx = ServerInvite::new(false, t);
        let out = tx.respond(404, b("404"));
        assert_eq!(out.timers[0], Some((TimerKind::H, t.t1 * 64)));
        assert_eq!(out.timers[1], Some((TimerKind::G, t.t1)));
        let mut intervals = vec![];
        for _ in 0..5 {
            let o = tx.on_timer(TimerKind::G);
            assert_eq!(o.send, Some(b("404")));
            intervals.push(o.timers[0].unwrap().1);
        }
        assert_eq!(intervals, vec![t.t1 * 2, t.t1 * 4, t.t1 * 8, t.t2, t.t2]);
        let o = tx.on_ack();
        assert_eq!(o.timers[0], Some((TimerKind::I, t.t4)));
        assert!(tx.on_timer(TimerKind::G).send.is_none());
        assert!(tx.on_timer(TimerKind::I).terminated);
    }

    #[test]
    fn unacknowledged_2xx_reports_ack_timeout_at_timer_h() {
        let mut tx = ServerInvite::new(false, Timers::default());
        tx.respond(200, b("200"));
        assert_eq!(tx.on_timer(TimerKind::G).send, Some(b("200")));
        let o = tx.on_timer(TimerKind::H);
        assert_eq!(o.notice, Some(TxNotice::AckTimeout));
        assert!(o.terminated);
    }

    #[test]
    fn acked_2xx_stops_retransmitting_and_ends_quietly() {
        let mut tx = ServerInvite::new(false, Timers::default());
        tx.respond(200, b("200"));
        tx.on_2xx_ack();
        assert!(tx.on_timer(TimerKind::G).send.is_none());
        let o = tx.on_timer(TimerKind::H);
        assert!(o.terminated && o.notice.is_none());
    }

    #[test]
    fn reliable_transport_has_no_timer_g() {
        let mut tx = ServerInvite::new(true, Timers::default());
        let out = tx.respond(200, b("200"));
        assert_eq!(out.timers[0].map(|t| t.0), Some(TimerKind::H));
        assert!(out.timers[1].is_none());
    }
}
