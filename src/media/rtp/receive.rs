//! The receive task of a session: RTP and RTCP sockets drained, RTCP demultiplexed and
//! ignored, the latch applied, the last-received time and the proof by RTP recorded, event
//! packets queued for DTMF.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtp_rs::RtpReader;
use tokio::sync::{mpsc, Notify};

use super::latch::{Latch, Verdict};
use super::ports::Lease;
use crate::media::player::{Command, ShardHandle};

/// One received RTP packet of the event payload type (RFC 4733 telephone-event), for DTMF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRtp {
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
    pub(super) event_pt: AtomicU8,
    /// The learnt source, for readers; written only when the latch moves.
    pub(super) latched: Mutex<Option<SocketAddr>>,
    /// The address proved it takes part (the caller's RTP, or the ACK of our 2xx).
    pub(super) proven: AtomicBool,
    pub(super) proven_notify: Notify,
}

impl Shared {
    pub(super) fn set_proven(&self) {
        if !self.proven.swap(true, Ordering::AcqRel) {
            self.proven_notify.notify_waiters();
        }
    }

    fn set_latched(&self, addr: Option<SocketAddr>) {
        *self.latched.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }
}

pub(super) struct RecvSockets {
    // Sockets before the lease (drop order: declaration order).
    pub(super) rtp: tokio::net::UdpSocket,
    pub(super) rtcp: tokio::net::UdpSocket,
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
    pub(super) shard: ShardHandle,
    pub(super) id: u64,
    pub(super) events: mpsc::Sender<ReceivedRtp>,
    pub(super) latch: Latch,
}

pub(super) async fn receive(
    sockets: RecvSockets,
    mut rx: Receiver,
    mut sdp_changes: mpsc::UnboundedReceiver<Option<SocketAddr>>,
) {
    let mut buf = [0u8; 2048];
    let mut rtcp_buf = [0u8; 2048];
    let mut errors: u32 = 0;
    let mut session_alive = true;
    loop {
        tokio::select! {
            r = sockets.rtp.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    errors = 0;
                    let data = buf.get(..n).unwrap_or(&[]);
                    rx.on_datagram(data, from);
                }
                Err(e) => {
                    // Transient on Linux (e.g. ICMP-induced); back off if it persists.
                    errors = errors.saturating_add(1);
                    tracing::debug!(error = %e, "RTP receive error");
                    if errors > 100 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            },
            // RTCP reports are not used yet: read them so the kernel buffer never fills.
            r = sockets.rtcp.recv_from(&mut rtcp_buf) => {
                if r.is_err() {
                    errors = errors.saturating_add(1);
                    if errors > 100 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            change = sdp_changes.recv(), if session_alive => match change {
                Some(sdp) => rx.on_sdp(sdp),
                // The session is going; its drop aborts this task.
                None => session_alive = false,
            },
        }
    }
}

impl Receiver {
    fn on_sdp(&mut self, sdp: Option<SocketAddr>) {
        if self.latch.on_sdp(sdp) {
            // Back to the (new) SDP address until the caller's RTP latches again.
            self.shared.set_latched(None);
            self.shard.send(Command::Latch(self.id, None));
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
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
                self.shard.send(Command::Latch(self.id, Some(to)));
            }
            Verdict::Accept(None) => {}
        }
        let since_epoch = now.saturating_duration_since(epoch());
        let ns = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
        shared.last_received_ns.store(ns.max(1), Ordering::Relaxed);
        shared.received.fetch_add(1, Ordering::Relaxed);
        let pt = packet.payload_type();
        if pt == shared.event_pt.load(Ordering::Relaxed) {
            // Only event packets are copied (a handful per key press), never the audio.
            let _ = self.events.try_send(ReceivedRtp {
                payload_type: pt,
                marker: packet.mark(),
                sequence: packet.sequence_number().into(),
                timestamp: packet.timestamp(),
                ssrc: packet.ssrc(),
                payload: packet.payload().to_vec(),
                from,
            });
        }
    }
}

#[cfg(test)]
mod tests;
