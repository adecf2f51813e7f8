//! The receive task of a session: RTP and RTCP sockets drained, RTCP demultiplexed and
//! ignored, the latch applied, the last-received time and the proof by RTP recorded, event
//! packets queued for DTMF.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtp_rs::RtpReader;
use tokio::sync::{mpsc, Notify};

use super::latch::{Latch, Verdict};
use super::outbound::{Tap, ToReceiver};
use super::ports::Lease;
use super::readable::{ReadableSocket, Ready};
use crate::media::codec::Codec;
use crate::media::dtmf::event_code;
use crate::media::inband_dtmf::InbandDtmf;
use crate::media::srtp::{SrtpError, SrtpReceiver};

/// One received RTP packet of the event payload type (RFC 4733 telephone-event), for DTMF;
/// its fields are [`EventPacket`]'s. Boxed: the session's queue of them allocates its first
/// block of 32 slots with the session, a pointer each instead of a packet (2.3 KB per call),
/// and only a key press fills any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRtp(Box<EventPacket>);

impl std::ops::Deref for ReceivedRtp {
    type Target = EventPacket;

    fn deref(&self) -> &EventPacket {
        &self.0
    }
}

/// What [`ReceivedRtp`] carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPacket {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    pub from: SocketAddr,
}

/// Event packets wait here until read; when full (nobody reads), newer ones are dropped.
pub(super) const EVENT_QUEUE: usize = 64;
pub(super) const NO_EVENT_PT: u8 = 0xFF;

/// The process-wide origin of the nanosecond timestamps kept in atomics.
pub(super) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// State the receive task writes and the session reads, without locks on the packet path.
pub(super) struct Shared {
    /// Nanoseconds since `epoch()` of the last valid RTP packet; 0 = none yet.
    pub(super) last_received_ns: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) ignored: AtomicU64,
    /// RTP packets from a source other than the latched one, dropped.
    pub(super) foreign: AtomicU64,
    /// SRTP packets dropped before anything else looked at them: a tag that did not match,
    /// and replays.
    pub(super) srtp_unauthentic: AtomicU64,
    pub(super) srtp_replayed: AtomicU64,
    pub(super) event_pt: AtomicU8,
    /// The learnt source, for readers; written only when the latch moves.
    pub(super) latched: Mutex<Option<SocketAddr>>,
    /// The address proved it takes part (the caller's RTP, or the ACK of our 2xx).
    pub(super) proven: AtomicBool,
    pub(super) proven_notify: Notify,
    /// The send gates below are the only copy: the pacer's stream and a relay ask them
    /// per packet ([`crate::media::player::SendGate`], `outbound.rs`). The SDP address:
    pub(super) sdp_remote: Mutex<Option<SocketAddr>>,
    /// Bumped after each change of `sdp_remote` or `latched`, so a relay re-reads the
    /// target (under the locks) only when it moved, never per packet.
    pub(super) target_version: AtomicU64,
    /// Hold: false while the session must send nothing.
    pub(super) sending: AtomicBool,
    pub(super) require_proof: AtomicBool,
    /// End of the early-media window for an unproven address, nanoseconds since `epoch()`;
    /// 0: none.
    pub(super) unproven_until_ns: AtomicU64,
}

impl Shared {
    pub(super) fn set_proven(&self) {
        if !self.proven.swap(true, Ordering::AcqRel) {
            self.proven_notify.notify_waiters();
        }
    }

    pub(super) fn new(remote: Option<SocketAddr>) -> Shared {
        Shared {
            last_received_ns: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            srtp_unauthentic: AtomicU64::new(0),
            srtp_replayed: AtomicU64::new(0),
            event_pt: AtomicU8::new(NO_EVENT_PT),
            latched: Mutex::new(None),
            proven: AtomicBool::new(false),
            proven_notify: Notify::new(),
            sdp_remote: Mutex::new(remote),
            target_version: AtomicU64::new(0),
            sending: AtomicBool::new(true),
            require_proof: AtomicBool::new(false),
            unproven_until_ns: AtomicU64::new(0),
        }
    }

    fn set_latched(&self, addr: Option<SocketAddr>) {
        *self.latched.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        self.target_version.fetch_add(1, Ordering::Release);
    }

    pub(super) fn set_sdp_remote(&self, addr: Option<SocketAddr>) {
        *self.sdp_remote.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        self.target_version.fetch_add(1, Ordering::Release);
    }

    /// Where this session sends: the latched source, else the SDP address.
    pub(super) fn target(&self) -> Option<SocketAddr> {
        let latched = *self.latched.lock().unwrap_or_else(|e| e.into_inner());
        latched.or(*self.sdp_remote.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Nanoseconds since `epoch()` (at least 1, so 0 can mean "none").
pub(super) fn epoch_ns(t: Instant) -> u64 {
    let since = t.saturating_duration_since(epoch());
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1)
}

pub(super) struct RecvSockets {
    // Sockets before the lease (drop order: declaration order).
    pub(super) rtp: ReadableSocket,
    pub(super) rtcp: ReadableSocket,
    pub(super) _lease: Arc<Lease>,
}

/// RFC 5761 §4: on a shared port, second byte 192..=223 (PT 64..=95 with the marker bit) is
/// RTCP (SR 200, RR 201, SDES 202, BYE 203, APP 204, and feedback 205/206).
pub fn is_rtcp(data: &[u8]) -> bool {
    matches!(data.get(1), Some(192..=223))
}

/// The receive task's own state.
pub(super) struct Receiver {
    pub(super) shared: Arc<Shared>,
    pub(super) events: mpsc::Sender<ReceivedRtp>,
    pub(super) latch: Latch,
    /// A relay's direction out of this session, fed every accepted packet.
    pub(super) tap: Option<Box<dyn Tap>>,
    /// Keys heard as tones in the audio, made at the first G.711 packet of a session that
    /// negotiated no telephone-event (`media/inband_dtmf.rs`).
    pub(super) inband: Option<Box<InbandDtmf>>,
    /// Once the leg is keyed: every datagram is checked and decrypted first.
    pub(super) srtp: Option<Box<SrtpReceiver>>,
}

/// The largest datagram read whole; a longer one is cut (and then fails to parse as RTP).
const DATAGRAM_MAX: usize = 2048;

thread_local! {
    /// One receive buffer per runtime thread, lent for one datagram while a receive task runs
    /// and given back before it waits again: the thousands of receive tasks' futures hold no
    /// buffer of their own (bench/README.md "Memory per call").
    static RECV_BUF: RefCell<[u8; DATAGRAM_MAX]> = const { RefCell::new([0; DATAGRAM_MAX]) };
}

/// Reads one datagram from a socket found readable into the thread's buffer and hands it to
/// `f` (which must not read another). None: there was none after all.
fn read_one<R>(
    ready: io::Result<Ready<'_>>,
    f: impl FnOnce(&[u8], SocketAddr) -> R,
) -> Option<io::Result<R>> {
    let mut ready = match ready {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    RECV_BUF.with_borrow_mut(|buf| {
        Some(
            ready
                .recv_from(buf)?
                .map(|(n, from)| f(buf.get(..n).unwrap_or(&[]), from)),
        )
    })
}

pub(super) async fn receive(
    sockets: RecvSockets,
    mut rx: Receiver,
    mut control: mpsc::UnboundedReceiver<ToReceiver>,
) {
    let mut errors: u32 = 0;
    let mut session_alive = true;
    loop {
        tokio::select! {
            r = sockets.rtp.readable() => {
                let read = read_one(r, |data, from| {
                    // What was sent before this datagram arrived applies to it (a relay
                    // started, an SDP change): select! alone could take the datagram first.
                    while let Ok(c) = control.try_recv() {
                        rx.on_control(c);
                    }
                    rx.on_datagram(data, from);
                });
                match read {
                    None => {}
                    Some(Ok(())) => errors = 0,
                    Some(Err(e)) => {
                        // Transient on Linux (e.g. ICMP-induced); back off if it persists.
                        errors = errors.saturating_add(1);
                        tracing::debug!(error = %e, "RTP receive error");
                        if errors > 100 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            // RTCP reports are not used yet: read them so the kernel buffer never fills.
            r = sockets.rtcp.readable() => {
                if let Some(Err(_)) = read_one(r, |_, _| ()) {
                    errors = errors.saturating_add(1);
                    if errors > 100 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            c = control.recv(), if session_alive => match c {
                Some(c) => rx.on_control(c),
                // The session is going; its drop aborts this task.
                None => session_alive = false,
            },
        }
    }
}

impl Receiver {
    fn on_control(&mut self, c: ToReceiver) {
        match c {
            ToReceiver::Sdp(sdp) => self.on_sdp(sdp),
            ToReceiver::Tap(tap) => self.tap = Some(tap),
            ToReceiver::Srtp(srtp) => self.srtp = Some(srtp),
            ToReceiver::SrtpOff => self.srtp = None,
            // Only the relay that installed it removes it: a late removal from an earlier
            // relay leaves a newer one alone.
            ToReceiver::Untap(owner) => {
                if self.tap.as_ref().is_some_and(|t| t.owner() == owner) {
                    self.tap = None;
                }
            }
        }
    }

    fn on_sdp(&mut self, sdp: Option<SocketAddr>) {
        if self.latch.on_sdp(sdp) {
            // Back to the (new) SDP address until the caller's RTP latches again.
            self.shared.set_latched(None);
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let Some(srtp) = self.srtp.as_mut() else {
            return self.on_plain(data, from);
        };
        // Before the latch, the clock of the last packet or DTMF: a packet that is not
        // authentic cannot move, keep alive or press keys in a call.
        if is_rtcp(data) {
            // SRTCP: checked (its replay window kept), then ignored as RTCP is.
            let _ = srtp.unprotect_rtcp(data);
            self.shared.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match srtp.unprotect(data) {
            Ok(plain) => self.on_plain(&plain, from),
            Err(SrtpError::Replay) => {
                self.shared.srtp_replayed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared.srtp_unauthentic.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An RTP or RTCP datagram in clear (as received, or decrypted).
    fn on_plain(&mut self, data: &[u8], from: SocketAddr) {
        let shared = &self.shared;
        if is_rtcp(data) {
            shared.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(packet) = RtpReader::new(data) else {
            shared.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = Instant::now();
        match self.latch.on_packet(from, now) {
            Verdict::Foreign => {
                // Neither the time of the last packet, nor DTMF, nor the latch: a third party
                // cannot keep a call alive, press keys in it or take its audio.
                shared.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Verdict::Accept(Some(to)) => {
                // Symmetric RTP (RFC 4961): the caller's source becomes the send target; its
                // RTP also proves the address takes part.
                shared.set_latched(Some(to));
                shared.set_proven();
            }
            Verdict::Accept(None) => {}
        }
        shared
            .last_received_ns
            .store(epoch_ns(now), Ordering::Relaxed);
        shared.received.fetch_add(1, Ordering::Relaxed);
        if let Some(tap) = self.tap.as_mut() {
            tap.on_rtp(&packet, now);
        }
        let pt = packet.payload_type();
        let event_pt = shared.event_pt.load(Ordering::Relaxed);
        if pt == event_pt {
            // Only event packets are copied (a handful per key press), never the audio.
            let _ = self.events.try_send(ReceivedRtp(Box::new(EventPacket {
                payload_type: pt,
                marker: packet.mark(),
                sequence: packet.sequence_number().into(),
                timestamp: packet.timestamp(),
                ssrc: packet.ssrc(),
                payload: packet.payload().to_vec(),
                from,
            })));
        } else if self.tap.is_none() && event_pt == NO_EVENT_PT {
            // No RFC 4733 from this caller: its keys are tones in the audio. Not while a
            // relay forwards it: the other leg hears the tones themselves.
            self.hear_keys(&packet, from);
        }
    }

    /// Runs the in-band detector over a G.711 packet; each key it hears is queued as one
    /// telephone-event packet (its tone's start as the timestamp, ended), so the leg's one
    /// DTMF path takes it as it takes RFC 4733.
    fn hear_keys(&mut self, packet: &RtpReader<'_>, from: SocketAddr) {
        let Some(codec) = Codec::from_payload_type(packet.payload_type()) else {
            return;
        };
        let detector = self.inband.get_or_insert_with(Box::default);
        let mut pcm = [0i16; 160];
        let mut keys = Vec::new();
        for (i, chunk) in packet.payload().chunks(160).enumerate() {
            for (out, b) in pcm.iter_mut().zip(chunk) {
                *out = codec.decode_one(*b);
            }
            let ts = packet.timestamp().wrapping_add(160 * i as u32);
            detector.push(&pcm[..chunk.len()], ts, &mut keys);
        }
        for (key, start) in keys {
            let Some(code) = event_code(key) else {
                continue;
            };
            // End bit, volume 10, 100 ms: a whole event in one packet.
            let payload = vec![code, 0x80 | 10, 0x03, 0x20];
            let _ = self.events.try_send(ReceivedRtp(Box::new(EventPacket {
                payload_type: NO_EVENT_PT,
                marker: true,
                sequence: packet.sequence_number().into(),
                timestamp: start,
                ssrc: packet.ssrc(),
                payload,
                from,
            })));
        }
    }
}

#[cfg(test)]
mod tests;
