//! The sending side of one leg's SRTP, shared by everything that sends on the leg's one
//! stream: the pacer (prompts), a relay (the other leg's audio) and a DTMF send take turns
//! on it (the `SendClock`), so they share one context and its rollover counter. Plain RTP
//! until keys are set; once on, never plain again on the leg's dialog: no packet may leave in
//! clear on a leg that negotiated SRTP. The one way back ([`SrtpOut::clear`]) is the bridge's
//! outbound session handed to another far end (another fork's dialog) that answered plain.
//! A leg that must be SRTP before its keys are known sends nothing
//! ([`SrtpOut::forbid_clear`]: on, without a key).

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

    /// Nothing leaves until [`SrtpOut::set`]: on, without a key (each send is an error).
    pub fn forbid_clear(&self) {
        self.on.store(true, Ordering::Release);
    }

    /// Plain again (the key dropped): see the module's comment for the one case.
    pub fn clear(&self) {
        self.on.store(false, Ordering::Release);
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether it is keyed (not merely forbidding clear): what a call counts as SRTP.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
            && self
                .sender
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
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
            // Not keyed yet where clear is forbidden (or a clear racing this send): never a
            // reason to send in clear.
            None => Err(io::Error::other("SRTP on without a key")),
        }
    }
}
