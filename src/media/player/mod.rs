//! Shared pacing clocks for outgoing RTP.
//!
//! A [`Pacer`] runs a few shard threads. Each shard owns the send state of the streams assigned
//! to it (round-robin across shards) and is driven by commands over its own channel, so the
//! per-packet work touches no lock and allocates nothing: it writes the 12-byte header and the
//! 160 payload bytes into one reused buffer and hands it to a non-blocking `sendto`.
//!
//! Why threads and not tokio tasks: the budget is "every packet within 2 ms of its due time"
//! with thousands of calls while the same two cores also run SIP. A tokio task shares its
//! worker with whatever else is queued there and tokio's timer has 1 ms granularity; a
//! dedicated thread sleeping on an absolute deadline is woken by the kernel within tens of
//! microseconds.
//!
//! Why phase slots: one 20 ms tick sending 2,500 packets back to back takes several
//! milliseconds, so the last stream would always be late. Each shard splits the 20 ms period
//! into `slots` phases (1 ms each by default) and puts a new stream in the least loaded one;
//! a stream's packets are due at `start + n*20ms + slot*20ms/slots`, which never drifts.
//!
//! `pacer.rs`: the [`Pacer`] handle, its shard threads and summed counters; `command.rs`: what
//! a session sends its shard; `shard.rs`: a shard's thread and its streams by phase slot;
//! `stream.rs`: one stream's send state and the building of its packets; `grid.rs`: the
//! subtick timing; `gate.rs`: the send gates a stream asks the session; `clock.rs`: a stream's sequence and timestamp, shared with a relay
//! (`media/relay/`) that takes the sending over while two legs are bridged.

use std::time::Duration;

mod clock;
mod command;
mod gate;
mod grid;
mod pacer;
mod shard;
mod stream;

pub(crate) use clock::{next_owner, ClockState, SendClock, CLOSED, PACER};
pub(crate) use command::{Command, NewStream, ShardHandle, StreamStats};
pub(crate) use gate::{Blocked, SendGate, TargetCache};
pub use pacer::{Pacer, PacerStats};

/// Packet interval (ptime 20).
pub const PTIME: Duration = Duration::from_millis(20);
/// G.711 at 8 kHz: 160 samples (= bytes) per 20 ms packet; the RTP timestamp step.
pub const SAMPLES_PER_PACKET: u32 = 160;
/// Phase slots per 20 ms period when none are given: 1 ms apart.
pub const DEFAULT_SLOTS: u32 = 20;
/// Packets later than this count as late in [`PacerStats::late_packets`] (the load budget).
pub const LATE_THRESHOLD: Duration = Duration::from_millis(2);

/// How a `play` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayResult {
    /// The last packet was sent (or, when sending is off, its time has passed).
    Finished,
    /// `stop_playing`, a newer `play`, or the session going away ended it early.
    Stopped,
}
