//! A relay's counters, per direction, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a packet was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Comfort noise (RFC 3389, PT 13): pivotd does not generate or pass it.
    ComfortNoise,
    /// Neither the leg's audio nor its telephone-event payload type.
    UnknownPayloadType,
    /// A telephone-event for a leg that negotiated none.
    NoEventPayloadType,
    /// The destination leg is on hold (`set_sending(false)`).
    Held,
    /// The destination's address has not proved it takes part (no amplification).
    Unproven,
    /// The destination has no address yet.
    NoRemote,
    /// Larger than the relay's buffer.
    TooLong,
    /// The relay no longer owns the destination's stream (stopped, or the session ended).
    NotOwner,
    /// `sendto` failed (full socket buffer, unreachable).
    SendError,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::ComfortNoise,
        DropReason::UnknownPayloadType,
        DropReason::NoEventPayloadType,
        DropReason::Held,
        DropReason::Unproven,
        DropReason::NoRemote,
        DropReason::TooLong,
        DropReason::NotOwner,
        DropReason::SendError,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ComfortNoise => "comfort_noise",
            DropReason::UnknownPayloadType => "unknown_pt",
            DropReason::NoEventPayloadType => "no_event_pt",
            DropReason::Held => "held",
            DropReason::Unproven => "unproven",
            DropReason::NoRemote => "no_remote",
            DropReason::TooLong => "too_long",
            DropReason::NotOwner => "not_owner",
            DropReason::SendError => "send_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One direction's counters, written by the forwarding task, read by the bridge.
#[derive(Debug, Default)]
pub(super) struct Counters {
    relayed: AtomicU64,
    transcoded: AtomicU64,
    events: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    pub(super) fn relayed(&self, transcoded: bool, event: bool) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
        if transcoded {
            self.transcoded.fetch_add(1, Ordering::Relaxed);
        }
        if event {
            self.events.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn dropped(&self, why: DropReason) {
        if let Some(c) = self.dropped.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn snapshot(&self) -> DirectionStats {
        let mut dropped = [0; DropReason::ALL.len()];
        for (d, c) in dropped.iter_mut().zip(&self.dropped) {
            *d = c.load(Ordering::Relaxed);
        }
        DirectionStats {
            relayed: self.relayed.load(Ordering::Relaxed),
            transcoded: self.transcoded.load(Ordering::Relaxed),
            events_mapped: self.events.load(Ordering::Relaxed),
            dropped,
        }
    }
}

/// One direction's counts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets sent to the other leg (audio and events).
    pub relayed: u64,
    /// Of those, audio converted between μ-law and A-law.
    pub transcoded: u64,
    /// Of those, telephone-events sent under the other leg's payload type.
    pub events_mapped: u64,
    dropped: [u64; DropReason::ALL.len()],
}

impl DirectionStats {
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.dropped.get(why.index()).copied().unwrap_or(0)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

/// Both directions' counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// From leg A (the caller) to leg B.
    pub a_to_b: DirectionStats,
    pub b_to_a: DirectionStats,
}
