//! The sending side of one leg's SRTP, shared by everything that sends on the leg's one
//! stream: the pacer (prompts), a relay (the other leg's audio) and a DTMF send take turns
//! on it (the `SendClock`), so they share one context and its rollover counter. Plain RTP
//! until keys are set; once on, never plain again for the session: no packet may leave in
//! clear on a leg that negotiated SRTP.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::SrtpSender;

#[derive(Default)]
pub struct SrtpOut {
    /// Read per packet without the lock: plain calls never take it.
    on: AtomicBool,
    sender: Mutex<Option<SrtpSender>>,
}

impl SrtpOut {
    /// Protects everything sent from now on with `sender` (a new key replaces the old one).
    pub fn set(&self, sender: SrtpSender) {
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        self.on.store(true, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// `packet` (a whole RTP packet) to `to` on `socket` (non-blocking), protected when SRTP
    /// is on.
    pub fn send_to(&self, socket: &UdpSocket, packet: &[u8], to: SocketAddr) -> io::Result<usize> {
        if !self.on.load(Ordering::Acquire) {
            return socket.send_to(packet, to);
        }
        let sealed = {
            let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
            guard.as_mut().map(|s| s.protect(packet))
        };
        match sealed {
            Some(Ok(bytes)) => socket.send_to(&bytes, to),
            // A key past its 2^48 packets: the packet is not sent (a send error to the caller).
            Some(Err(e)) => Err(io::Error::other(e)),
            // `on` is set after the sender: unreachable, and never a reason to send in clear.
            None => Err(io::Error::other("SRTP on without a key")),
        }
    }
}
