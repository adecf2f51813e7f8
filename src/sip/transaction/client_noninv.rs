//! Non-INVITE client transaction (RFC 3261 §17.1.2): what pivotd sends, such as BYE.

use std::time::Duration;

use bytes::Bytes;

use super::{backoff, Out, TxNotice};
use crate::sip::timer::{TimerKind, Timers};

#[derive(Debug, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE client transaction.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: State,
    request: Bytes,
    interval: Duration,
    reliable: bool,
    timers: Timers,
}

impl ClientNonInvite {
    /// Creates the transaction and returns what to do first: send, start E (unreliable) and F.
    pub fn start(request: Bytes, reliable: bool, timers: Timers) -> (ClientNonInvite, Out) {
        let tx = ClientNonInvite {
            state: State::Trying,
            request: request.clone(),
            interval: timers.t1,
            reliable,
            timers,
        };
        let mut out = Out::send(request).timer(TimerKind::F, timers.t1x64());
        if !reliable {
            out = out.timer(TimerKind::E, timers.t1);
        }
        (tx, out)
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// A response matched this transaction.
    pub fn on_response(&mut self, code: u16) -> Out {
        match self.state {
            State::Trying | State::Proceeding if code < 200 => {
                self.state = State::Proceeding;
                Out::default()
            }
            State::Trying | State::Proceeding => {
                self.state = State::Completed;
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                Out {
                    notice: Some(TxNotice::Response),
                    pass_up: true,
                    ..Out::default()
                }
                .timer(TimerKind::K, k)
            }
            // Retransmitted finals are absorbed in Completed.
            _ => Out::default(),
        }
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Out {
        match (&self.state, kind) {
            (State::Trying, TimerKind::E) => {
                self.interval = backoff(self.interval, self.timers.t2);
                Out::send(self.request.clone()).timer(TimerKind::E, self.interval)
            }
            (State::Proceeding, TimerKind::E) => {
                self.interval = self.timers.t2;
                Out::send(self.request.clone()).timer(TimerKind::E, self.interval)
            }
            (State::Trying | State::Proceeding, TimerKind::F) => {
                self.state = State::Terminated;
                Out {
                    notice: Some(TxNotice::Timeout),
                    terminated: true,
                    ..Out::default()
                }
            }
            (State::Completed, TimerKind::K) => {
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
    fn retransmits_with_timer_e_and_times_out_at_f() {
        let t = Timers::default();
        let (mut tx, out) = ClientNonInvite::start(Bytes::from_static(b"BYE"), false, t);
        assert!(out.send.is_some());
        assert_eq!(out.timers[0], Some((TimerKind::F, t.t1 * 64)));
        assert_eq!(out.timers[1], Some((TimerKind::E, t.t1)));
        let o = tx.on_timer(TimerKind::E);
        assert!(o.send.is_some());
        assert_eq!(o.timers[0], Some((TimerKind::E, t.t1 * 2)));
        let o = tx.on_timer(TimerKind::F);
        assert_eq!(o.notice, Some(TxNotice::Timeout));
        assert!(tx.is_terminated());
    }

    #[test]
    fn final_response_completes_and_is_passed_up_once() {
        let t = Timers::default();
        let (mut tx, _) = ClientNonInvite::start(Bytes::from_static(b"BYE"), false, t);
        assert!(!tx.on_response(100).pass_up);
        assert_eq!(
            tx.on_timer(TimerKind::E).timers[0],
            Some((TimerKind::E, t.t2))
        );
        let o = tx.on_response(200);
        assert!(o.pass_up);
        assert_eq!(o.timers[0], Some((TimerKind::K, t.t4)));
        assert!(!tx.on_response(200).pass_up);
        assert!(tx.on_timer(TimerKind::E).send.is_none());
        assert!(tx.on_timer(TimerKind::K).terminated);
    }
}
