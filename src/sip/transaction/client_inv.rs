//! INVITE client transaction (RFC 3261 §17.1.1, with RFC 6026's Accepted state): used by the
//! bridge to call out. The ACK for a non-2xx final is built by the transaction (§17.1.1.3).

use std::time::Duration;

use bytes::Bytes;

use super::{backoff, Out, TxNotice};
use crate::sip::timer::{TimerKind, Timers};

#[derive(Debug, PartialEq, Eq)]
enum State {
    Calling,
    Proceeding,
    Completed,
    /// A 2xx was passed up; further 2xx retransmissions are passed up too (the TU ACKs each)
    /// until Timer M (64*T1; Timer D's slot here).
    Accepted,
    Terminated,
}

/// An INVITE client transaction.
#[derive(Debug)]
pub struct ClientInvite {
    state: State,
    request: Bytes,
    ack: Option<Bytes>,
    interval: Duration,
    reliable: bool,
    timers: Timers,
}

impl ClientInvite {
    /// Creates the transaction: send, start A (unreliable) and B.
    pub fn start(request: Bytes, reliable: bool, timers: Timers) -> (ClientInvite, Out) {
        let tx = ClientInvite {
            state: State::Calling,
            request: request.clone(),
            ack: None,
            interval: timers.t1,
            reliable,
            timers,
        };
        let mut out = Out::send(request).timer(TimerKind::B, timers.t1x64());
        if !reliable {
            out = out.timer(TimerKind::A, timers.t1);
        }
        (tx, out)
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// A response matched. For a non-2xx final, `ack` is the ACK the transaction sends
    /// (built by the caller from the request and this response).
    pub fn on_response(&mut self, code: u16, ack: impl FnOnce() -> Bytes) -> Out {
        let up = Out {
            notice: Some(TxNotice::Response),
            pass_up: true,
            ..Out::default()
        };
        match (&self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                up
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                up.timer(TimerKind::D, self.timers.t1x64())
            }
            (State::Accepted, 200..=299) => up,
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                let a = ack();
                self.ack = Some(a.clone());
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32).max(self.timers.t1x64())
                };
                Out {
                    send: Some(a),
                    ..up
                }
                .timer(TimerKind::D, d)
            }
            // §17.1.1.2: a retransmitted final in Completed gets the ACK again, not passed up.
            (State::Completed, 300..=699) => match &self.ack {
                Some(a) => Out::send(a.clone()),
                None => Out::default(),
            },
            _ => Out::default(),
        }
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Out {
        match (&self.state, kind) {
            (State::Calling, TimerKind::A) => {
                self.interval = backoff(self.interval, Duration::MAX);
                Out::send(self.request.clone()).timer(TimerKind::A, self.interval)
            }
            (State::Calling, TimerKind::B) => {
                self.state = State::Terminated;
                Out {
                    notice: Some(TxNotice::Timeout),
                    terminated: true,
                    ..Out::default()
                }
            }
            (State::Completed | State::Accepted, TimerKind::D) => {
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

    #[test]
    fn timer_a_doubles_without_cap_and_b_times_out() {
        let t = Timers::default();
        let (mut tx, out) = ClientInvite::start(Bytes::from_static(b"INVITE"), false, t);
        assert_eq!(out.timers[1], Some((TimerKind::A, t.t1)));
        let mut last = t.t1;
        for _ in 0..6 {
            let o = tx.on_timer(TimerKind::A);
            let next = o.timers[0].unwrap().1;
            assert_eq!(next, last * 2);
            last = next;
        }
        assert_eq!(tx.on_timer(TimerKind::B).notice, Some(TxNotice::Timeout));
    }

    #[test]
    fn non_2xx_final_is_acked_by_the_transaction_and_ack_resent() {
        let (mut tx, _) =
            ClientInvite::start(Bytes::from_static(b"INVITE"), false, Timers::default());
        assert!(tx.on_response(180, Bytes::new).pass_up);
        assert!(
            tx.on_timer(TimerKind::A).send.is_none(),
            "A stops in Proceeding"
        );
        let o = tx.on_response(486, || Bytes::from_static(b"ACK"));
        assert!(o.pass_up);
        assert_eq!(o.send.as_deref(), Some(&b"ACK"[..]));
        let again = tx.on_response(486, || Bytes::from_static(b"other"));
        assert!(!again.pass_up);
        assert_eq!(again.send.as_deref(), Some(&b"ACK"[..]));
    }

    #[test]
    fn every_2xx_is_passed_up_in_accepted() {
        let (mut tx, _) =
            ClientInvite::start(Bytes::from_static(b"INVITE"), true, Timers::default());
        assert!(tx.on_response(200, Bytes::new).pass_up);
        assert!(tx.on_response(200, Bytes::new).pass_up);
        assert!(tx.on_timer(TimerKind::D).terminated);
    }
}
