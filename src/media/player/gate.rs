//! Whether a stream may send now, and where: hold, the proof against amplification, the
//! early-media window, the latched source before the SDP address. The session keeps these
//! (`rtp/receive.rs` `Shared`); the pacer's stream and a relay both ask it, so one rule
//! decides for both senders.

use std::net::SocketAddr;
use std::time::Instant;

/// Why a packet could not be sent on a session now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// On hold (`set_sending(false)`).
    Held,
    /// No amplification: the address has not proved it takes part.
    Unproven,
    /// Neither a latched source nor an SDP address.
    NoRemote,
}

/// The send target as last read, re-read only when the session's target moved.
#[derive(Debug, Default)]
pub(crate) struct TargetCache {
    pub(crate) version: Option<u64>,
    pub(crate) addr: Option<SocketAddr>,
}

/// A session's send gates, read on every packet (lock-free unless the target moved).
pub(crate) trait SendGate: Send + Sync {
    fn check(&self, now: Instant, cache: &mut TargetCache) -> Result<SocketAddr, Blocked>;
}
