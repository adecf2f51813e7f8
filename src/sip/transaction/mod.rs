//! RFC 3261 §17 transaction state machines, one file each. They are pure: each input returns
//! an [`Out`] saying what to send, which timers to start and what to tell the transaction user;
//! the endpoint shard carries it out. That keeps them testable without sockets or clocks.

pub mod client_inv;
pub mod client_noninv;
pub mod server_inv;
pub mod server_noninv;

use std::time::Duration;

use bytes::Bytes;

use super::timer::TimerKind;

/// What the transaction user learns from a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxNotice {
    /// A final response was passed up (client transactions).
    Response,
    /// Timer B / F fired: no final response (client transactions).
    Timeout,
    /// Timer H fired in the Accepted state: the 2xx was never acknowledged (RFC 3261 §13.3.1.4).
    AckTimeout,
}

/// The effects of one input to a state machine. Fixed size: no allocation per message.
#[derive(Debug, Default)]
pub struct Out {
    pub send: Option<Bytes>,
    pub timers: [Option<(TimerKind, Duration)>; 2],
    pub notice: Option<TxNotice>,
    /// Pass the message up to the transaction user.
    pub pass_up: bool,
    pub terminated: bool,
}

impl Out {
    pub fn send(bytes: Bytes) -> Out {
        Out {
            send: Some(bytes),
            ..Out::default()
        }
    }

    pub fn timer(mut self, kind: TimerKind, after: Duration) -> Out {
        if self.timers[0].is_none() {
            self.timers[0] = Some((kind, after));
        } else {
            self.timers[1] = Some((kind, after));
        }
        self
    }

    pub fn terminated() -> Out {
        Out {
            terminated: true,
            ..Out::default()
        }
    }
}

/// Doubles a retransmission interval up to a cap (Timers A, E, G).
pub(crate) fn backoff(current: Duration, cap: Duration) -> Duration {
    (current * 2).min(cap)
}
