//! A session's sending as a relay sees it: the socket, the SSRC and clock of its one outgoing
//! stream, and the gates (hold, proof, target) that it and the pacer's stream ask; and the hook
//! through which a relay takes the packets another session receives.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rtp_rs::RtpReader;

use super::ports::Lease;
use super::receive::{epoch_ns, Shared};
use crate::media::player::{Blocked, SendClock, SendGate, TargetCache};
use crate::media::srtp::{SrtpOut, SrtpReceiver};

/// One relay direction, run by the receive task of the session the packets come from.
pub(crate) trait Tap: Send {
    /// Each RTP packet the session accepted (from its latched source), as it arrives.
    fn on_rtp(&mut self, packet: &RtpReader<'_>, now: Instant);
    /// The relay that installed it (removal is by owner).
    fn owner(&self) -> u16;
}

/// What the session (and a relay) tell its receive task.
pub(crate) enum ToReceiver {
    /// A new SDP address (the latch may start learning again).
    Sdp(Option<SocketAddr>),
    Tap(Box<dyn Tap>),
    /// Removes the tap if the relay `owner` installed it.
    Untap(u16),
    /// From now on, only SRTP packets authentic under this key are taken (RFC 3711).
    Srtp(Box<SrtpReceiver>),
    /// Plain RTP again: the bridge's outbound session handed to a far end that answered
    /// plain (`RtpSession::clear_srtp`).
    SrtpOff,
}

/// A session's sending side, shared with a relay (`RtpSession::outbound`).
pub(crate) struct Outbound {
    // Field order matters: the socket closes before the lease returns the port to the pool.
    socket: Arc<UdpSocket>,
    _lease: Arc<Lease>,
    ssrc: u32,
    clock: Arc<SendClock>,
    shared: Arc<Shared>,
    srtp: Arc<SrtpOut>,
}

impl Outbound {
    pub(super) fn new(
        socket: Arc<UdpSocket>,
        lease: Arc<Lease>,
        ssrc: u32,
        clock: Arc<SendClock>,
        shared: Arc<Shared>,
        srtp: Arc<SrtpOut>,
    ) -> Outbound {
        Outbound {
            socket,
            _lease: lease,
            ssrc,
            clock,
            shared,
            srtp,
        }
    }

    pub(crate) fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub(crate) fn clock(&self) -> &SendClock {
        &self.clock
    }

    /// Where a packet may go now: the session's gates, as the pacer asks them.
    pub(crate) fn gate(
        &self,
        now: Instant,
        cache: &mut TargetCache,
    ) -> Result<SocketAddr, Blocked> {
        self.shared.check(now, cache)
    }

    /// Non-blocking `sendto` on the session's RTP socket (the descriptor its pacer uses),
    /// protected when the leg negotiated SRTP.
    pub(crate) fn send(&self, packet: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.srtp.send_to(&self.socket, packet, to)
    }
}

/// Not on hold, proven or inside the early-media window, to the latched source or else the
/// SDP address. Lock-free unless the target moved since `cache` was filled.
impl SendGate for Shared {
    fn check(&self, now: Instant, cache: &mut TargetCache) -> Result<SocketAddr, Blocked> {
        let s = self;
        if !s.sending.load(Ordering::Relaxed) {
            return Err(Blocked::Held);
        }
        let allowed = !s.require_proof.load(Ordering::Relaxed)
            || s.proven.load(Ordering::Acquire)
            || epoch_ns(now) < s.unproven_until_ns.load(Ordering::Relaxed);
        if !allowed {
            return Err(Blocked::Unproven);
        }
        let version = s.target_version.load(Ordering::Acquire);
        if cache.version != Some(version) {
            cache.addr = s.target();
            cache.version = Some(version);
        }
        cache.addr.ok_or(Blocked::NoRemote)
    }
}
