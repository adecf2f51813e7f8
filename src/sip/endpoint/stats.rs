//! What the endpoint counts: transactions, dialogs, overload and panics, and every SIP
//! message by method or status code, in and out.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the endpoint did.
#[derive(Default, Debug)]
pub struct EndpointStats {
    /// Server transactions ever created.
    pub server_transactions: AtomicU64,
    /// Client transactions ever created.
    pub client_transactions: AtomicU64,
    /// 503s for a full application queue.
    pub overload_503: AtomicU64,
    /// Gauge: server transactions alive now (they end with their timers, RFC 3261 §17.2).
    pub live_server_transactions: AtomicU64,
    /// Gauge: client transactions alive now.
    pub live_client_transactions: AtomicU64,
    /// Gauge: dialogs registered now.
    pub live_dialogs: AtomicU64,
    /// Messages by method and code.
    pub messages: SipCounters,
}

/// SIP messages by method (requests) and status code (responses), in and out: fixed arrays
/// of atomics, so counting takes no lock.
pub struct SipCounters {
    requests: [[AtomicU64; METHODS.len()]; 2],
    responses: [[AtomicU64; 600]; 2],
}

/// The methods rsip knows, in the order of the counters.
pub const METHODS: [rsip::Method; 14] = [
    rsip::Method::Ack,
    rsip::Method::Bye,
    rsip::Method::Cancel,
    rsip::Method::Info,
    rsip::Method::Invite,
    rsip::Method::Message,
    rsip::Method::Notify,
    rsip::Method::Options,
    rsip::Method::PRack,
    rsip::Method::Publish,
    rsip::Method::Refer,
    rsip::Method::Register,
    rsip::Method::Subscribe,
    rsip::Method::Update,
];

/// Direction of a counted message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In = 0,
    Out = 1,
}

impl Default for SipCounters {
    fn default() -> Self {
        SipCounters {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl std::fmt::Debug for SipCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SipCounters")
    }
}

impl SipCounters {
    pub fn request(&self, dir: Direction, method: rsip::Method) {
        if let Some(i) = METHODS.iter().position(|m| *m == method) {
            self.requests[dir as usize][i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn response(&self, dir: Direction, code: u16) {
        if let Some(c) = self.responses[dir as usize].get(usize::from(code).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Non-zero request counts: (direction, method, count).
    pub fn requests(&self) -> Vec<(Direction, rsip::Method, u64)> {
        let mut out = Vec::new();
        for (d, dir) in [Direction::In, Direction::Out].into_iter().enumerate() {
            for (i, m) in METHODS.iter().enumerate() {
                let n = self.requests[d][i].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((dir, *m, n));
                }
            }
        }
        out
    }

    /// Non-zero response counts: (direction, code, count).
    pub fn responses(&self) -> Vec<(Direction, u16, u64)> {
        let mut out = Vec::new();
        for (d, dir) in [Direction::In, Direction::Out].into_iter().enumerate() {
            for (i, c) in self.responses[d].iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((dir, i as u16 + 100, n));
                }
            }
        }
        out
    }
}
