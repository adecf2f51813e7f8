//! One call's RTP session: started on a port pair, its sending handed to a pacer shard and
//! driven by commands (remote, proof, codec, hold, play), its receive task spawned beside it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::events_out::{self, SendDigitsError};
use super::latch::Latch;
use super::listen::{HeardPacket, Listener};
use super::outbound::{Outbound, ToReceiver};
use super::ports::RtpPorts;
use super::readable::ReadableSocket;
use super::receive::{
    epoch, epoch_ns, receive, ReceivedRtp, Receiver, RecvSockets, Shared, EVENT_QUEUE, NO_EVENT_PT,
};
use super::{PlayResult, RtpError};
use crate::media::player::{Command, NewStream, Pacer, SendClock, ShardHandle, StreamStats};
use crate::media::srtp::{SrtpError, SrtpKey, SrtpOut, SrtpReceiver, SrtpSender};

/// Silence of the static G.711 payload types (RFC 3551 §6: 0 PCMU, 8 PCMA).
pub fn silence_byte_for(payload_type: u8) -> u8 {
    if payload_type == 8 {
        0xD5
    } else {
        0xFF
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One call's RTP stream: receives on its socket (symmetric RTP, latched as Asterisk's
/// `strictrtp` does: the caller's source is learnt from its first packets, preferring the SDP
/// address, and then packets from any other source are dropped and counted; RTCP on the RTP
/// port ignored harmlessly), tracks the time of the last received packet, and sends through
/// the shared pacer.
///
/// Drop stops its receive task and removes it from the pacer; the port pair returns to the
/// pool once both have let go of the sockets.
pub struct RtpSession {
    id: u64,
    shard: ShardHandle,
    shared: Arc<Shared>,
    stats: Arc<StreamStats>,
    recv_task: JoinHandle<()>,
    local_port: u16,
    ssrc: u32,
    events: Mutex<Option<mpsc::Receiver<ReceivedRtp>>>,
    /// SDP changes for the receive task's latch, and a relay's tap.
    to_receiver: mpsc::UnboundedSender<ToReceiver>,
    /// The sending side a relay uses; its clock is shared with the pacer stream.
    outbound: Arc<Outbound>,
    /// SRTP for what this session sends (the pacer, a relay, DTMF), once keyed.
    srtp: Arc<SrtpOut>,
}

impl RtpSession {
    /// Must run inside a tokio runtime (the receive task is spawned on it). The silence byte
    /// used to pad a short last packet follows `codec_pt` (0 → μ-law, 8 → A-law); see
    /// [`RtpSession::set_codec`] for a dynamic payload type.
    pub fn start(
        ports: RtpPorts,
        pacer: &Pacer,
        remote: Option<SocketAddr>,
        codec_pt: u8,
    ) -> Result<RtpSession, RtpError> {
        Self::start_with_seq(ports, pacer, remote, codec_pt, rand::random())
    }

    fn start_with_seq(
        ports: RtpPorts,
        pacer: &Pacer,
        remote: Option<SocketAddr>,
        codec_pt: u8,
        seq: u16,
    ) -> Result<RtpSession, RtpError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RtpError::NoRuntime)?;
        let shard = pacer.pick().ok_or(RtpError::PacerStopped)?;
        let local_port = ports.rtp_port();
        let RtpPorts { rtp, rtcp, lease } = ports;
        // The pacer thread sends on the same descriptor (plain non-blocking sendto); the
        // runtime watches it for reads only (`readable.rs`).
        let send_socket = rtp;
        let _enter = runtime.enter();
        let sockets = RecvSockets {
            rtp: ReadableSocket::new(send_socket.clone())?,
            rtcp: ReadableSocket::new(rtcp)?,
            _lease: lease.clone(),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ssrc: u32 = rand::random();
        let stats = Arc::new(StreamStats::default());
        let shared = Arc::new(Shared::new(remote));
        let clock = Arc::new(SendClock::new(seq, rand::random()));
        let srtp = Arc::new(SrtpOut::default());
        let outbound = Arc::new(Outbound::new(
            send_socket.clone(),
            lease.clone(),
            ssrc,
            clock.clone(),
            shared.clone(),
            srtp.clone(),
        ));
        let added = shard.send(Command::Add(Box::new(NewStream {
            id,
            socket: send_socket,
            guard: lease,
            gate: shared.clone(),
            payload_type: codec_pt,
            silence: silence_byte_for(codec_pt),
            ssrc,
            clock,
            stats: stats.clone(),
            srtp: srtp.clone(),
        })));
        if !added {
            return Err(RtpError::PacerStopped);
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (to_receiver, sdp_changes) = mpsc::unbounded_channel();
        let recv_task = runtime.spawn(receive(
            sockets,
            Receiver {
                shared: shared.clone(),
                events: events_tx,
                latch: Latch::new(remote),
                tap: None,
                inband: None,
                srtp: None,
            },
            sdp_changes,
        ));
        Ok(RtpSession {
            id,
            shard,
            shared,
            stats,
            recv_task,
            local_port,
            ssrc,
            events: Mutex::new(Some(events_rx)),
            to_receiver,
            outbound,
            srtp,
        })
    }

    /// From SDP (the answer in an ACK, a re-INVITE). The same address as before changes
    /// nothing; a new one starts a new learning phase, since the dialog itself moved the media
    /// (a re-INVITE after a transfer or a failover): its first packets latch again.
    pub fn set_remote(&self, remote: Option<SocketAddr>) {
        self.shared.set_sdp_remote(remote);
        let _ = self.to_receiver.send(ToReceiver::Sdp(remote));
    }

    /// No amplification: towards an untrusted source nothing is sent until the address
    /// proved it takes part ([`RtpSession::prove`], or its first RTP packet), except inside
    /// an [`RtpSession::allow_unproven_for`] window. A play meanwhile keeps its time.
    pub fn require_proof(&self) {
        self.shared.require_proof.store(true, Ordering::Relaxed);
    }

    /// The address proved it takes part (the ACK of our 2xx): sending may start.
    pub fn prove(&self) {
        self.shared.set_proven();
    }

    /// Whether the address proved it takes part (by [`RtpSession::prove`] or its RTP).
    pub fn is_proven(&self) -> bool {
        self.shared.proven.load(Ordering::Acquire)
    }

    /// Resolves once the address has proved it takes part.
    pub async fn wait_proven(&self) {
        loop {
            let notified = self.shared.proven_notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a proof arriving in between still wakes us.
            notified.as_mut().enable();
            if self.is_proven() {
                return;
            }
            notified.await;
        }
    }

    /// Early media: packets may go to the unproven address for `d` from now (0: none), and
    /// then stop unless it proved itself meanwhile.
    pub fn allow_unproven_for(&self, d: Duration) {
        let until = Instant::now().checked_add(d);
        let until_ns = until.map_or(0, epoch_ns);
        self.shared
            .unproven_until_ns
            .store(until_ns, Ordering::Relaxed);
    }

    /// Closes an [`RtpSession::allow_unproven_for`] window now.
    pub fn end_unproven(&self) {
        self.shared.unproven_until_ns.store(0, Ordering::Relaxed);
    }

    /// Also sets the padding silence for the static G.711 types (0 PCMU, 8 PCMA).
    pub fn set_payload_type(&self, pt: u8) {
        self.set_codec(pt, silence_byte_for(pt));
    }

    /// Payload type and the codec's silence byte (0xFF μ-law, 0xD5 A-law), for when the
    /// payload type alone does not say the codec.
    pub fn set_codec(&self, pt: u8, silence_byte: u8) {
        self.shard.send(Command::SetCodec {
            id: self.id,
            payload_type: pt,
            silence: silence_byte,
            payload: None,
        });
    }

    /// A codec change during a play (a re-INVITE, the answer in the ACK): `payload` is the
    /// same audio encoded in the new codec and carries on from where the play is, so the
    /// packets after the change are the new codec's bytes under its payload type.
    pub fn switch_codec(&self, pt: u8, silence_byte: u8, payload: Arc<[u8]>) {
        self.shard.send(Command::SetCodec {
            id: self.id,
            payload_type: pt,
            silence: silence_byte,
            payload: Some(payload),
        });
    }

    /// Hold: when off, nothing is sent (a relay's packets neither), but a running play keeps
    /// its time and finishes.
    pub fn set_sending(&self, on: bool) {
        self.shared.sending.store(on, Ordering::Relaxed);
    }

    /// Time of the last valid RTP packet received (RTCP and garbage do not count).
    pub fn last_received(&self) -> Option<Instant> {
        match self.shared.last_received_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(epoch() + Duration::from_nanos(ns)),
        }
    }

    pub fn received_packets(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Datagrams on the RTP port that were not RTP (RTCP, garbage).
    pub fn ignored_packets(&self) -> u64 {
        self.shared.ignored.load(Ordering::Relaxed)
    }

    /// RTP packets dropped because they came from another source than the latched one.
    /// Keys this session with SRTP (RFC 3711): what it sends is protected with `ours`
    /// (the key in our SDP), what it receives must be authentic under `theirs` (the far
    /// end's key); a new pair (a re-INVITE's new keys) replaces the old. Never undone: a leg
    /// that negotiated SRTP sends nothing in clear.
    pub fn set_srtp(&self, ours: &SrtpKey, theirs: &SrtpKey) -> Result<(), SrtpError> {
        let sender = SrtpSender::new(ours)?;
        let receiver = SrtpReceiver::new(theirs)?;
        let _ = self.to_receiver.send(ToReceiver::Srtp(Box::new(receiver)));
        self.srtp.set(sender);
        Ok(())
    }

    /// A new key for what the far end sends (its new `a=crypto` line in an answer to our
    /// re-offer); ours, and our sending context, stay.
    pub fn set_srtp_receive(&self, theirs: &SrtpKey) -> Result<(), SrtpError> {
        let receiver = SrtpReceiver::new(theirs)?;
        let _ = self.to_receiver.send(ToReceiver::Srtp(Box::new(receiver)));
        Ok(())
    }

    /// Sends nothing at all until [`RtpSession::set_srtp`] keys it: a leg that must be SRTP
    /// and whose keys are not known yet (our late offer, answered in the ACK).
    pub fn forbid_clear(&self) {
        self.srtp.forbid_clear();
    }

    /// Plain RTP both ways again. Only for the bridge's outbound session when the far end
    /// that now decides its media (the fork that answered, after another fork's early media
    /// keyed it) answered plain: a leg's own dialog never goes back to clear.
    pub fn clear_srtp(&self) {
        let _ = self.to_receiver.send(ToReceiver::SrtpOff);
        self.srtp.clear();
    }

    /// Whether what this session sends is SRTP.
    pub fn is_srtp(&self) -> bool {
        self.srtp.is_on()
    }

    /// SRTP packets dropped: their authentication tag did not match (forged, corrupted, or
    /// another key), and packets already received (replays).
    pub fn srtp_refused_packets(&self) -> (u64, u64) {
        (
            self.shared.srtp_unauthentic.load(Ordering::Relaxed),
            self.shared.srtp_replayed.load(Ordering::Relaxed),
        )
    }

    pub fn foreign_packets(&self) -> u64 {
        self.shared.foreign.load(Ordering::Relaxed)
    }

    /// The caller's RTP source once learnt (the send target since).
    pub fn latched_remote(&self) -> Option<SocketAddr> {
        *self
            .shared
            .latched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Plays G.711 payload bytes (160 per 20 ms packet); resolves when the last packet is sent,
    /// or with Stopped when `stop_playing` (or a newer `play`) ended it. Dropping the returned
    /// future stops the playback too.
    ///
    /// The play reaches the shard when `play` is called, not when the future is first polled:
    /// a codec change sent after this call (a re-INVITE handled while the caller's task has not
    /// polled yet) then finds the play running and swaps its bytes, instead of being overtaken
    /// by bytes of the old codec under the new payload type.
    ///
    /// While a relay (`media::relay`) owns this session's sending, a play keeps its time and
    /// sends nothing: stop the relay to play to this leg.
    pub fn play(&self, payload: Arc<[u8]>) -> impl Future<Output = PlayResult> + Send + 'static {
        let result = if payload.is_empty() {
            Err(PlayResult::Finished)
        } else {
            let (done, result) = oneshot::channel();
            let sent = self.shard.send(Command::Play {
                id: self.id,
                payload,
                done,
            });
            if sent {
                Ok(result)
            } else {
                Err(PlayResult::Stopped)
            }
        };
        async move {
            match result {
                Ok(result) => result.await.unwrap_or(PlayResult::Stopped),
                Err(now) => now,
            }
        }
    }

    /// Sends `digits` to the far end as RFC 4733 telephone-events under `event_pt` (the
    /// negotiated telephone-event payload type), each `duration` long (held within
    /// [`MIN_EVENT_DURATION`](super::MIN_EVENT_DURATION)..=[`MAX_EVENT_DURATION`](super::MAX_EVENT_DURATION)),
    /// [`INTER_DIGIT_GAP`](super::INTER_DIGIT_GAP) apart, in this session's stream (its SSRC,
    /// sequence numbers and timestamps), through its gates (hold, proof, target). Characters
    /// other than `0`-`9`, `*`, `#`, `A`-`D` (either case) are skipped; at most
    /// [`MAX_DIGITS`](super::MAX_DIGITS) are sent. Resolves after the last event ends.
    ///
    /// While it runs, a play keeps its time and sends nothing; afterwards (also when the future
    /// is dropped, which ends an event cut short) the pacer sends again, continuing the
    /// sequence numbers and timestamps. A session a relay owns (bridged) is `Busy`: stop the
    /// relay first. See `events_out.rs`.
    pub async fn send_digits(
        &self,
        digits: &str,
        duration: Duration,
        event_pt: u8,
    ) -> Result<(), SendDigitsError> {
        events_out::send_digits(&self.outbound, digits, duration, event_pt).await
    }

    pub fn stop_playing(&self) {
        self.shard.send(Command::Stop(self.id));
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets this session has handed to the kernel.
    pub fn packets_sent(&self) -> u64 {
        self.stats.packets_sent.load(Ordering::Relaxed)
    }

    /// Largest lateness of this session's packets (actual send − due time).
    pub fn max_lateness(&self) -> Duration {
        Duration::from_nanos(self.stats.max_lateness_ns.load(Ordering::Relaxed))
    }

    /// Which received payload type goes to the event queue (the negotiated telephone-event).
    pub fn set_event_payload_type(&self, pt: Option<u8>) {
        self.shared
            .event_pt
            .store(pt.map_or(NO_EVENT_PT, |p| p & 0x7f), Ordering::Relaxed);
    }

    /// The sending side and the receive task's control channel, for a relay.
    pub(crate) fn relay_end(&self) -> (Arc<Outbound>, mpsc::UnboundedSender<ToReceiver>) {
        (self.outbound.clone(), self.to_receiver.clone())
    }

    /// Every RTP packet received from now on (audio and events), on a bounded queue (full:
    /// newer packets dropped). Uses the session's tap, so not for a session a relay joins:
    /// for a session that only listens (`pivotd call`).
    pub fn listen(&self) -> mpsc::Receiver<HeardPacket> {
        let (listener, rx) = Listener::new();
        let _ = self.to_receiver.send(ToReceiver::Tap(Box::new(listener)));
        rx
    }

    /// The queue of received event packets (once; later calls get None). Bounded: packets
    /// arriving while it is full are dropped.
    pub fn take_events(&self) -> Option<mpsc::Receiver<ReceivedRtp>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for RtpSession {
    fn drop(&mut self) {
        // A relay still holding this session's sending side sends nothing more on it.
        self.outbound.clock().close();
        self.recv_task.abort();
        self.shard.send(Command::Remove(self.id));
    }
}

#[cfg(test)]
mod tests;
