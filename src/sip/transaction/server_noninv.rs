//! Non-INVITE server transaction (RFC 3261 §17.2.2).

use bytes::Bytes;

use super::Out;
use crate::sip::timer::{TimerKind, Timers};

#[derive(Debug)]
enum State {
    Trying,
    Proceeding {
        provisional: Bytes,
    },
    /// Final sent; request retransmissions get it again until Timer J.
    Completed {
        response: Bytes,
    },
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: State,
    reliable: bool,
    timers: Timers,
}

impl ServerNonInvite {
    pub fn new(reliable: bool, timers: Timers) -> ServerNonInvite {
        ServerNonInvite {
            state: State::Trying,
            reliable,
            timers,
        }
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    pub fn has_final(&self) -> bool {
        matches!(self.state, State::Completed { .. } | State::Terminated)
    }

    /// Whether its owner may still hear from it (a CANCEL before the final response).
    pub fn may_notify(&self) -> bool {
        !self.has_final()
    }

    /// A retransmitted request: absorbed in Trying, answered with the last response otherwise.
    pub fn on_retransmission(&self) -> Out {
        match &self.state {
            State::Proceeding { provisional } => Out::send(provisional.clone()),
            State::Completed { response } => Out::send(response.clone()),
            _ => Out::default(),
        }
    }

    pub fn respond(&mut self, code: u16, bytes: Bytes) -> Out {
        match self.state {
            State::Trying | State::Proceeding { .. } => {}
            _ => return Out::default(),
        }
        if code < 200 {
            self.state = State::Proceeding {
                provisional: bytes.clone(),
            };
            return Out::send(bytes);
        }
        self.state = State::Completed {
            response: bytes.clone(),
        };
        // Timer J: 64*T1 for unreliable transports, zero for reliable ones.
        let j = if self.reliable {
            std::time::Duration::ZERO
        } else {
            self.timers.t1x64()
        };
        Out::send(bytes).timer(TimerKind::J, j)
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Out {
        match (&self.state, kind) {
            (State::Completed { .. }, TimerKind::J) => {
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
    fn the_owner_is_needed_until_the_final() {
        let mut tx = ServerNonInvite::new(false, Timers::default());
        assert!(tx.may_notify());
        tx.respond(200, Bytes::from_static(b"200"));
        assert!(!tx.may_notify());
    }

    #[test]
    fn final_is_resent_on_retransmission_until_timer_j() {
        let t = Timers::default();
        let mut tx = ServerNonInvite::new(false, t);
        assert!(tx.on_retransmission().send.is_none());
        let out = tx.respond(200, Bytes::from_static(b"200"));
        assert_eq!(out.timers[0], Some((TimerKind::J, t.t1 * 64)));
        assert_eq!(tx.on_retransmission().send.as_deref(), Some(&b"200"[..]));
        assert!(tx.on_timer(TimerKind::J).terminated);
        assert!(tx.on_retransmission().send.is_none());
    }

    #[test]
    fn reliable_timer_j_is_zero() {
        let mut tx = ServerNonInvite::new(true, Timers::default());
        let out = tx.respond(481, Bytes::from_static(b"481"));
        assert_eq!(
            out.timers[0],
            Some((TimerKind::J, std::time::Duration::ZERO))
        );
    }
}
