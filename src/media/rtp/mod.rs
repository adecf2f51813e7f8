//! RTP port pairs and per-call RTP sessions.
//!
//! A session's receive side is a tokio task on its socket (strict symmetric RTP latch,
//! last-received time, RTCP drained); its send side lives in a [`Pacer`] shard, reached through
//! commands, so per-packet work takes no lock.
//!
//! `ports.rs`: the port pool and its pairs; `session.rs`: the session and the commands it sends
//! its pacer shard; `receive.rs`: the receive task (RTCP demux, proof by RTP, event packets);
//! `latch.rs`: the strict symmetric-RTP latch; `outbound.rs`: a session's sending side as a
//! relay (`media/relay/`) uses it, and the tap through which a relay reads its packets;
//! `listen.rs`: that tap used to hand the received audio to a listener (`pivotd call`);
//! `events_out.rs`: DTMF sent as RFC 4733 telephone-events on that same sending side;
//! `readable.rs`: the receive task's sockets, watched by the runtime for reads only.
//!
//! [`Pacer`]: super::player::Pacer

use std::io;
use std::net::IpAddr;

mod events_out;
mod latch;
mod listen;
mod outbound;
mod ports;
mod readable;
mod receive;
mod session;
#[cfg(test)]
pub(crate) mod test_support;

pub use super::player::PlayResult;
pub(crate) use super::player::{Blocked, TargetCache};
pub use events_out::{
    SendDigitsError, DEFAULT_EVENT_DURATION, INTER_DIGIT_GAP, MAX_DIGITS, MAX_EVENT_DURATION,
    MIN_EVENT_DURATION,
};
pub use latch::LEARNING_WINDOW;
pub use listen::{HeardPacket, LISTEN_QUEUE};
pub(crate) use outbound::{Outbound, Tap, ToReceiver};
pub use ports::{PortPool, RtpPorts};
pub use receive::{is_rtcp, EventPacket, ReceivedRtp};
pub use session::{silence_byte_for, RtpSession};

/// Errors of port allocation and session start.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    #[error("RTP port range {min}-{max} holds no even/odd port pair")]
    EmptyRange { min: u16, max: u16 },
    #[error("no free RTP port pair in {min}-{max}")]
    Exhausted { min: u16, max: u16 },
    #[error("cannot bind RTP port {port} on {ip}: {source}")]
    Bind {
        ip: IpAddr,
        port: u16,
        source: io::Error,
    },
    #[error("RTP socket: {0}")]
    Io(#[from] io::Error),
    #[error("an RTP session must be started inside a tokio runtime")]
    NoRuntime,
    #[error("the RTP pacer has no running shard")]
    PacerStopped,
}
