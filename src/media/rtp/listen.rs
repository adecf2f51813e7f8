//! The audio a session receives, handed to a listener: `pivotd call` records it and listens
//! for a prompt's end. Installed as the session's tap (the hook a relay uses), so the receive
//! task copies each accepted packet once; nothing is copied for a session nobody listens to.

use std::time::Instant;

use rtp_rs::RtpReader;
use tokio::sync::mpsc;

use super::outbound::Tap;
use crate::media::player::next_owner;

/// One received RTP packet (from the latched source), as a listener sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeardPacket {
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    pub at: Instant,
}

/// Packets a listener has not read yet; beyond this (a listener stalled for ~10 s of audio)
/// newer ones are dropped rather than growing memory.
pub const LISTEN_QUEUE: usize = 512;

pub(super) struct Listener {
    tx: mpsc::Sender<HeardPacket>,
    owner: u16,
}

impl Listener {
    pub(super) fn new() -> (Listener, mpsc::Receiver<HeardPacket>) {
        let (tx, rx) = mpsc::channel(LISTEN_QUEUE);
        let owner = next_owner();
        (Listener { tx, owner }, rx)
    }
}

impl Tap for Listener {
    fn on_rtp(&mut self, packet: &RtpReader<'_>, now: Instant) {
        let _ = self.tx.try_send(HeardPacket {
            payload_type: packet.payload_type(),
            sequence: packet.sequence_number().into(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
            payload: packet.payload().to_vec(),
            at: now,
        });
    }

    fn owner(&self) -> u16 {
        self.owner
    }
}
