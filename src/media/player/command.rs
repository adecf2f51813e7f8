//! What sessions send to the shard that owns their stream, and how.

use std::any::Any;
use std::net::UdpSocket;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::clock::SendClock;
use super::gate::SendGate;
use super::PlayResult;

/// Per-stream counters written by the shard and read by the session.
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    pub(crate) packets_sent: AtomicU64,
    pub(crate) max_lateness_ns: AtomicU64,
}

/// Everything a shard needs to send for one session.
pub(crate) struct NewStream {
    pub(crate) id: u64,
    pub(crate) socket: Arc<UdpSocket>,
    /// Kept alive as long as the shard holds the socket (returns the port pair on drop).
    pub(crate) guard: Arc<dyn Any + Send + Sync>,
    /// Hold, proof, early media and the target: the session's, asked per packet.
    pub(crate) gate: Arc<dyn SendGate>,
    pub(crate) payload_type: u8,
    pub(crate) silence: u8,
    pub(crate) ssrc: u32,
    /// Next sequence number and timestamp, shared with a relay (see `clock.rs`).
    pub(crate) clock: Arc<SendClock>,
    pub(crate) stats: Arc<StreamStats>,
    /// The leg's SRTP sending side (plain RTP until keys are set).
    pub(crate) srtp: Arc<crate::media::srtp::SrtpOut>,
}

/// Messages from sessions (and their receive tasks) to the shard owning their stream.
pub(crate) enum Command {
    Add(Box<NewStream>),
    Remove(u64),
    SetCodec {
        id: u64,
        payload_type: u8,
        silence: u8,
        /// The running play's audio in the new codec (same length): it replaces the old
        /// bytes at the same offset, in the same command so no packet mixes PT and codec.
        payload: Option<Arc<[u8]>>,
    },
    Play {
        id: u64,
        payload: Arc<[u8]>,
        done: oneshot::Sender<PlayResult>,
    },
    Stop(u64),
}

/// A session's way to its shard.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    pub(super) tx: Sender<Command>,
}

impl ShardHandle {
    /// False when the shard is gone (its thread ended).
    pub(crate) fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok()
    }
}
