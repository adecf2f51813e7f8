//! RTP port pairs and per-call RTP sessions.
//!
//! A session's receive side is a tokio task on its socket (strict symmetric RTP latch,
//! last-received time, RTCP drained); its send side lives in a [`Pacer`] shard, reached through
//! commands, so per-packet work takes no lock.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtp_rs::RtpReader;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

pub use super::player::PlayResult;
use super::player::{Command, NewStream, Pacer, ShardHandle, StreamStats};

/// Errors of port allocation and session start.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    #[error("RTP port range {min}-{max} holds no even/odd port pair")]
    EmptyRange { min: u16, max: u16 },
    #[error("no free RTP port pair in {min}-{max}")]
    Exhausted { min: u16, max: u16 },
    #[error("cannot bind RTP port {port} on {ip}: {source}")]
    Bind {
        ip: IpAddr,
        port: u16,
        source: io::Error,
    },
    #[error("RTP socket: {0}")]
    Io(#[from] io::Error),
    #[error("an RTP session must be started inside a tokio runtime")]
    NoRuntime,
    #[error("the RTP pacer has no running shard")]
    PacerStopped,
}

/// Even/odd UDP port pairs from [min, max]; a pair returns to the pool when its `RtpPorts`
/// (and every socket made from it) drops. RFC 3550 §11: RTP on an even port, RTCP on the next.
pub struct PortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    total: usize,
    // Only touched at call set-up and tear-down, never per packet.
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Result<Arc<PortPool>, RtpError> {
        let first = u32::from(min) + u32::from(min) % 2;
        let free: VecDeque<u16> = (first..u32::from(max))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if free.is_empty() {
            return Err(RtpError::EmptyRange { min, max });
        }
        Ok(Arc::new(PortPool {
            ip,
            min,
            max,
            total: free.len(),
            free: Mutex::new(free),
        }))
    }

    /// Takes a pair and binds both sockets. Pairs that another program holds are skipped
    /// (and kept for later); `Exhausted` when no pair could be bound (the SIP layer's 503).
    pub fn allocate(self: &Arc<Self>) -> Result<RtpPorts, RtpError> {
        let attempts = self.available();
        for _ in 0..attempts {
            let Some(port) = self.queue().pop_front() else {
                break;
            };
            match bind_pair(self.ip, port) {
                Ok((rtp, rtcp)) => {
                    return Ok(RtpPorts {
                        rtp,
                        rtcp,
                        lease: Arc::new(Lease {
                            pool: Some(self.clone()),
                            port,
                        }),
                    })
                }
                Err((p, e)) => {
                    self.queue().push_back(port);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        // Wrong address or no permission: every port would fail alike.
                        return Err(RtpError::Bind {
                            ip: self.ip,
                            port: p,
                            source: e,
                        });
                    }
                }
            }
        }
        Err(RtpError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    /// Pairs in the pool (some may be held by other programs).
    pub fn available(&self) -> usize {
        self.queue().len()
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.total
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> Result<(UdpSocket, UdpSocket), (u16, io::Error)> {
    let rtp = UdpSocket::bind((ip, port)).map_err(|e| (port, e))?;
    let rtcp_port = port.wrapping_add(1);
    let rtcp = UdpSocket::bind((ip, rtcp_port)).map_err(|e| (rtcp_port, e))?;
    for s in [&rtp, &rtcp] {
        s.set_nonblocking(true).map_err(|e| (port, e))?;
    }
    Ok((rtp, rtcp))
}

/// Returns the pair to its pool when the last socket made from it has closed.
struct Lease {
    pool: Option<Arc<PortPool>>,
    port: u16,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            // Back of the queue: a just-freed pair is reused last, so late packets of the
            // old call are unlikely to reach a new one.
            pool.queue().push_back(self.port);
        }
    }
}

/// A bound RTP/RTCP socket pair taken from a [`PortPool`].
pub struct RtpPorts {
    // Sockets before the lease: they close before the pair goes back to the pool.
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: Arc<Lease>,
}

impl RtpPorts {
    pub fn rtp_port(&self) -> u16 {
        self.lease.port
    }

    pub fn rtcp_port(&self) -> u16 {
        self.rtcp.local_addr().map_or(0, |a| a.port())
    }

    /// Two sockets on kernel-chosen ports, outside any pool (tests, tools).
    pub fn ephemeral(ip: IpAddr) -> Result<RtpPorts, RtpError> {
        let rtp = UdpSocket::bind((ip, 0))?;
        let rtcp = UdpSocket::bind((ip, 0))?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        let port = rtp.local_addr()?.port();
        Ok(RtpPorts {
            rtp,
            rtcp,
            lease: Arc::new(Lease { pool: None, port }),
        })
    }
}

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
const EVENT_QUEUE: usize = 64;
const NO_EVENT_PT: u8 = 0xFF;

/// The process-wide origin of the nanosecond timestamps kept in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// How long after the first RTP packet from an address other than the SDP one a packet from
/// the SDP address still takes the latch (strictrtp's learning): long enough for a caller whose
/// first packet lost a race to a stray or forged one, short enough that the stream settles.
pub const LEARNING_WINDOW: Duration = Duration::from_millis(500);

/// State the receive task writes and the session reads, without locks on the packet path.
struct Shared {
    /// Nanoseconds since `epoch()` of the last valid RTP packet; 0 = none yet.
    last_received_ns: AtomicU64,
    received: AtomicU64,
    ignored: AtomicU64,
    /// RTP packets from a source other than the latched one, dropped.
    foreign: AtomicU64,
    event_pt: AtomicU8,
    /// The learnt source, for readers; written only when the latch moves.
    latched: Mutex<Option<SocketAddr>>,
    /// The address proved it takes part (the caller's RTP, or the ACK of our 2xx).
    proven: AtomicBool,
    proven_notify: Notify,
}

impl Shared {
    fn set_proven(&self) {
        if !self.proven.swap(true, Ordering::AcqRel) {
            self.proven_notify.notify_waiters();
        }
    }

    fn set_latched(&self, addr: Option<SocketAddr>) {
        *self.latched.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }
}

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
    /// SDP changes for the receive task's latch.
    to_receiver: mpsc::UnboundedSender<Option<SocketAddr>>,
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
        // A second descriptor of the same socket for the pacer thread: plain non-blocking
        // sendto, independent of the runtime's readiness tracking.
        let send_socket = Arc::new(rtp.try_clone()?);
        let _enter = runtime.enter();
        let sockets = RecvSockets {
            rtp: tokio::net::UdpSocket::from_std(rtp)?,
            rtcp: tokio::net::UdpSocket::from_std(rtcp)?,
            _lease: lease.clone(),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ssrc: u32 = rand::random();
        let stats = Arc::new(StreamStats::default());
        let shared = Arc::new(Shared {
            last_received_ns: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            event_pt: AtomicU8::new(NO_EVENT_PT),
            latched: Mutex::new(None),
            proven: AtomicBool::new(false),
            proven_notify: Notify::new(),
        });
        let added = shard.send(Command::Add(Box::new(NewStream {
            id,
            socket: send_socket,
            guard: lease,
            remote,
            payload_type: codec_pt,
            silence: silence_byte_for(codec_pt),
            ssrc,
            seq,
            ts_base: rand::random(),
            stats: stats.clone(),
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
                shard: shard.clone(),
                id,
                events: events_tx,
                latch: Latch::new(remote),
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
        })
    }

    /// From SDP (the answer in an ACK, a re-INVITE). The same address as before changes
    /// nothing; a new one starts a new learning phase, since the dialog itself moved the media
    /// (a re-INVITE after a transfer or a failover): its first packets latch again.
    pub fn set_remote(&self, remote: Option<SocketAddr>) {
        self.shard.send(Command::SetRemote(self.id, remote));
        let _ = self.to_receiver.send(remote);
    }

    /// No amplification: towards an untrusted source nothing is sent until the address
    /// proved it takes part ([`RtpSession::prove`], or its first RTP packet), except inside
    /// an [`RtpSession::allow_unproven_for`] window. A play meanwhile keeps its time.
    pub fn require_proof(&self) {
        self.shard.send(Command::RequireProof(self.id));
    }

    /// The address proved it takes part (the ACK of our 2xx): sending may start.
    pub fn prove(&self) {
        self.shared.set_proven();
        self.shard.send(Command::Proven(self.id));
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
        self.shard.send(Command::UnprovenUntil(self.id, until));
    }

    /// Closes an [`RtpSession::allow_unproven_for`] window now.
    pub fn end_unproven(&self) {
        self.shard.send(Command::UnprovenUntil(self.id, None));
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

    /// Hold: when off, nothing is sent, but a running play keeps its time and finishes.
    pub fn set_sending(&self, on: bool) {
        self.shard.send(Command::SetSending(self.id, on));
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

    /// The queue of received event packets (once; later calls get None). Bounded: packets
    /// arriving while it is full are dropped.
    pub fn take_events(&self) -> Option<mpsc::Receiver<ReceivedRtp>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for RtpSession {
    fn drop(&mut self) {
        self.recv_task.abort();
        self.shard.send(Command::Remove(self.id));
    }
}

struct RecvSockets {
    // Sockets before the lease (drop order: declaration order).
    rtp: tokio::net::UdpSocket,
    rtcp: tokio::net::UdpSocket,
    _lease: Arc<Lease>,
}

/// RFC 5761 §4: on a shared port, second byte 192..=223 (PT 64..=95 with the marker bit) is
/// RTCP (SR 200, RR 201, SDES 202, BYE 203, APP 204, and feedback 205/206).
pub fn is_rtcp(data: &[u8]) -> bool {
    matches!(data.get(1), Some(192..=223))
}

/// The strict symmetric-RTP latch (Asterisk's `strictrtp`): which sources' packets count.
#[derive(Debug)]
struct Latch {
    /// The SDP address: its packets win the latch during the learning phase.
    sdp: Option<SocketAddr>,
    state: LatchState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatchState {
    /// No RTP yet.
    Learning,
    /// First packets came from `addr`, not the SDP address: it is the target, but a packet
    /// from the SDP address before `until` still takes the latch.
    Candidate { addr: SocketAddr, until: Instant },
    /// Settled for the rest of the call (or until a re-INVITE moves the SDP address): other
    /// sources are dropped, so a stream arriving later from a new address and SSRC cannot
    /// take the call's audio (RTP bleed).
    Latched(SocketAddr),
}

/// What the latch made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// From the caller; `Some` when the send target moves to this address.
    Accept(Option<SocketAddr>),
    /// From another source: dropped and counted.
    Foreign,
}

impl Latch {
    fn new(sdp: Option<SocketAddr>) -> Latch {
        Latch {
            sdp,
            state: LatchState::Learning,
        }
    }

    fn on_packet(&mut self, from: SocketAddr, now: Instant) -> Verdict {
        match self.state {
            LatchState::Learning => {
                self.state = if Some(from) == self.sdp {
                    LatchState::Latched(from)
                } else {
                    LatchState::Candidate {
                        addr: from,
                        until: now + LEARNING_WINDOW,
                    }
                };
                Verdict::Accept(Some(from))
            }
            LatchState::Candidate { addr, until } => {
                if now >= until {
                    self.state = LatchState::Latched(addr);
                    return self.on_packet(from, now);
                }
                if from == addr {
                    Verdict::Accept(None)
                } else if Some(from) == self.sdp {
                    self.state = LatchState::Latched(from);
                    Verdict::Accept(Some(from))
                } else {
                    Verdict::Foreign
                }
            }
            LatchState::Latched(addr) if from == addr => Verdict::Accept(None),
            LatchState::Latched(_) => Verdict::Foreign,
        }
    }

    /// A new SDP address: true when it starts a new learning phase.
    fn on_sdp(&mut self, sdp: Option<SocketAddr>) -> bool {
        if sdp == self.sdp {
            return false;
        }
        self.sdp = sdp;
        self.state = LatchState::Learning;
        true
    }
}

/// The receive task's own state.
struct Receiver {
    shared: Arc<Shared>,
    shard: ShardHandle,
    id: u64,
    events: mpsc::Sender<ReceivedRtp>,
    latch: Latch,
}

async fn receive(
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
mod tests {
    use super::*;
    use rtp_rs::{RtpPacketBuilder, Seq};
    use std::net::Ipv4Addr;
    use tokio::net::UdpSocket as TokioUdp;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A range of `pairs` port pairs below the kernel's ephemeral range that is free right now
    /// (a pool cannot use port 0; probing keeps parallel tests apart).
    fn free_range(pairs: u16) -> (u16, u16) {
        loop {
            let base = 20_000 + 2 * (rand::random::<u16>() % 5_000);
            let max = base + 2 * pairs - 1;
            let probes: Result<Vec<_>, _> =
                (base..=max).map(|p| UdpSocket::bind((LOCAL, p))).collect();
            if probes.is_ok() {
                return (base, max);
            }
        }
    }

    fn rtp_packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(pt)
            .sequence(Seq::from(seq))
            .ssrc(42)
            .timestamp(7)
            .payload(payload)
            .build()
            .unwrap()
    }

    struct Got {
        at: Instant,
        data: Vec<u8>,
    }

    /// Collects datagrams until `quiet` passes without one.
    fn collect(sock: Arc<TokioUdp>, quiet: Duration) -> JoinHandle<Vec<Got>> {
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(Ok(n)) = tokio::time::timeout(quiet, sock.recv(&mut buf)).await {
                out.push(Got {
                    at: Instant::now(),
                    data: buf[..n].to_vec(),
                });
            }
            out
        })
    }

    async fn receiver() -> (Arc<TokioUdp>, SocketAddr) {
        let s = TokioUdp::bind((LOCAL, 0)).await.unwrap();
        let a = s.local_addr().unwrap();
        (Arc::new(s), a)
    }

    fn session(pacer: &Pacer, remote: Option<SocketAddr>) -> RtpSession {
        RtpSession::start(RtpPorts::ephemeral(LOCAL).unwrap(), pacer, remote, 0).unwrap()
    }

    async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cond()
    }

    #[test]
    fn port_pool_allocates_pairs_and_gets_them_back() {
        let (min, max) = free_range(2);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        assert_eq!(pool.available(), 2);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a.rtp_port() % 2, 0);
        assert_eq!(a.rtcp_port(), a.rtp_port() + 1);
        assert_ne!(a.rtp_port(), b.rtp_port());
        assert!(matches!(pool.allocate(), Err(RtpError::Exhausted { .. })));
        assert_eq!(pool.available(), 0);
        let freed = a.rtp_port();
        drop(a);
        assert_eq!(pool.available(), 1);
        let c = pool.allocate().unwrap();
        assert_eq!(c.rtp_port(), freed);
        drop((b, c));
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn port_pool_skips_ports_held_elsewhere() {
        let (min, max) = free_range(2);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        // Someone else holds the RTCP port of the first pair.
        let squatter = UdpSocket::bind((LOCAL, min + 1)).unwrap();
        let a = pool.allocate().unwrap();
        assert_eq!(a.rtp_port(), min + 2);
        assert!(matches!(pool.allocate(), Err(RtpError::Exhausted { .. })));
        // The held pair was kept in the pool, not lost.
        assert_eq!(pool.available(), 1);
        drop(squatter);
        assert_eq!(pool.allocate().unwrap().rtp_port(), min);
    }

    #[test]
    fn port_pool_rejects_empty_ranges() {
        assert!(matches!(
            PortPool::new(LOCAL, 20001, 20001),
            Err(RtpError::EmptyRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCAL, 20001, 20002),
            Err(RtpError::EmptyRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCAL, 65535, 65535),
            Err(RtpError::EmptyRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCAL, 30000, 20000),
            Err(RtpError::EmptyRange { .. })
        ));
        assert_eq!(PortPool::new(LOCAL, 20001, 20005).unwrap().capacity(), 2);
        assert_eq!(PortPool::new(LOCAL, 20001, 20004).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(LOCAL, 20000, 20003).unwrap().capacity(), 2);
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let pacer = Pacer::start(1);
        let r = RtpSession::start(RtpPorts::ephemeral(LOCAL).unwrap(), &pacer, None, 0);
        assert!(matches!(r, Err(RtpError::NoRuntime)));
    }

    #[test]
    fn handles_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<Pacer>();
        shared::<RtpSession>();
        shared::<Arc<PortPool>>();
        shared::<RtpPorts>();
    }

    #[test]
    fn rtcp_demux_by_second_byte() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x81, 201]));
        assert!(is_rtcp(&[0x81, 223]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80])); // PCMU with marker
        assert!(!is_rtcp(&[0x80, 101]));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plays_one_second_paced_and_well_formed() {
        let pacer = Pacer::start(2);
        let (rx, to) = receiver().await;
        // Start near the wrap so the sequence wraps mid-prompt.
        let s = RtpSession::start_with_seq(
            RtpPorts::ephemeral(LOCAL).unwrap(),
            &pacer,
            Some(to),
            8,
            0xFFE0,
        )
        .unwrap();
        let prompt: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
        let got = collect(rx, Duration::from_millis(300));
        assert_eq!(
            s.play(Arc::from(prompt.clone())).await,
            PlayResult::Finished
        );
        let got = got.await.unwrap();
        assert_eq!(got.len(), 50);
        let mut audio = Vec::new();
        let first = RtpReader::new(&got[0].data).unwrap();
        for (i, g) in got.iter().enumerate() {
            let p = RtpReader::new(&g.data).unwrap();
            assert_eq!(p.version(), 2);
            assert_eq!(p.payload_type(), 8);
            assert_eq!(p.ssrc(), first.ssrc());
            assert_eq!(p.ssrc(), s.ssrc());
            assert_eq!(p.mark(), i == 0, "marker only on the first packet (i={i})");
            let i16 = i as u16;
            assert_eq!(u16::from(p.sequence_number()), 0xFFE0u16.wrapping_add(i16));
            assert_eq!(
                p.timestamp(),
                first.timestamp().wrapping_add(160 * i as u32)
            );
            assert_eq!(p.payload().len(), 160);
            audio.extend_from_slice(p.payload());
        }
        assert_eq!(audio, prompt);
        let span = got[49].at - got[0].at;
        assert!(
            span >= Duration::from_millis(900) && span <= Duration::from_millis(1300),
            "span {span:?}"
        );
        let mean = span / 49;
        assert!(
            mean >= Duration::from_millis(18) && mean <= Duration::from_millis(27),
            "mean {mean:?}"
        );
        assert_eq!(s.packets_sent(), 50);
        let stats = pacer.stats();
        assert_eq!(stats.packets_sent, 50);
        assert_eq!(stats.streams, 1);
        assert!(stats.max_lateness < Duration::from_millis(500), "{stats:?}");
        assert_eq!(s.max_lateness(), stats.max_lateness);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_last_packet_is_padded_with_alaw_silence_and_timestamps_run_over_gaps() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        s.set_payload_type(8);
        let got = collect(rx, Duration::from_millis(300));
        assert_eq!(
            s.play(Arc::from(vec![1u8; 200])).await,
            PlayResult::Finished
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            s.play(Arc::from(vec![2u8; 160])).await,
            PlayResult::Finished
        );
        let got = got.await.unwrap();
        assert_eq!(got.len(), 3);
        let p: Vec<RtpReader> = got
            .iter()
            .map(|g| RtpReader::new(&g.data).unwrap())
            .collect();
        let mut second = vec![1u8; 40];
        second.resize(160, 0xD5);
        assert_eq!(p[1].payload(), &second[..]);
        assert_eq!(p[1].payload_type(), 8);
        // New talkspurt: marker again, consecutive seq, timestamp advanced over the pause.
        assert!(p[2].mark());
        assert_eq!(
            u16::from(p[2].sequence_number()),
            u16::from(p[1].sequence_number()).wrapping_add(1)
        );
        let gap = p[2].timestamp().wrapping_sub(p[1].timestamp());
        assert_eq!(gap % 160, 0);
        assert!(
            gap >= 160 * 5,
            "timestamp gap {gap} should cover the ~100 ms pause"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_playing_resolves_stopped_and_silences() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        let got = collect(rx, Duration::from_millis(300));
        let (result, ()) = tokio::join!(s.play(Arc::from(vec![0u8; 160 * 250])), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.stop_playing();
        });
        assert_eq!(result, PlayResult::Stopped);
        let got = got.await.unwrap();
        // ~10 expected; loose for a loaded machine.
        assert!(got.len() >= 5 && got.len() <= 40, "{} packets", got.len());
        assert_eq!(s.packets_sent(), got.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_play_stops_the_running_one() {
        let pacer = Pacer::start(1);
        let s = session(&pacer, None);
        let (a, b) = tokio::join!(s.play(Arc::from(vec![0u8; 160 * 100])), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.play(Arc::from(vec![0u8; 320])).await
        });
        assert_eq!(a, PlayResult::Stopped);
        assert_eq!(b, PlayResult::Finished);
        // No remote: nothing sent, but plays still keep time.
        assert_eq!(s.packets_sent(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn symmetric_rtp_latches_to_the_first_source() {
        let pacer = Pacer::start(1);
        let (sdp_rx, sdp_to) = receiver().await;
        let (nat_rx, _) = receiver().await;
        let s = session(&pacer, Some(sdp_to));
        let target: SocketAddr = (LOCAL, s.local_port()).into();
        nat_rx
            .send_to(&rtp_packet(0, 1, &[0xFF; 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.latched_remote().is_some()).await);
        assert_eq!(s.latched_remote(), Some(nat_rx.local_addr().unwrap()));
        // A later SDP address does not undo the latch.
        s.set_remote(Some(sdp_to));
        let from_sdp = collect(sdp_rx, Duration::from_millis(200));
        let from_nat = collect(nat_rx, Duration::from_millis(200));
        assert_eq!(
            s.play(Arc::from(vec![3u8; 480])).await,
            PlayResult::Finished
        );
        assert_eq!(from_nat.await.unwrap().len(), 3);
        assert_eq!(from_sdp.await.unwrap().len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rtcp_and_garbage_are_ignored_and_last_received_updates() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        let target: SocketAddr = (LOCAL, s.local_port()).into();
        let other = TokioUdp::bind((LOCAL, 0)).await.unwrap();
        // RTCP receiver report (RFC 3550 §6.4.2), garbage, an RTP version 1 packet, a truncated header.
        let rr = [
            0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,
        ];
        other.send_to(&rr, target).await.unwrap();
        other
            .send_to(b"\xde\xad\xbe\xef garbage", target)
            .await
            .unwrap();
        other.send_to(&[0x40; 20], target).await.unwrap();
        other.send_to(&[0x80, 0], target).await.unwrap();
        other
            .send_to(&[0x90, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0], target)
            .await
            .unwrap();
        other.send_to(&rr, target).await.unwrap();
        assert!(
            wait_for(|| s.ignored_packets() == 6).await,
            "ignored {}",
            s.ignored_packets()
        );
        assert_eq!(s.received_packets(), 0);
        assert_eq!(s.last_received(), None);
        assert_eq!(s.latched_remote(), None);
        // Still plays to the SDP address.
        let got = collect(rx, Duration::from_millis(200));
        assert_eq!(
            s.play(Arc::from(vec![9u8; 320])).await,
            PlayResult::Finished
        );
        assert_eq!(got.await.unwrap().len(), 2);
        // A real RTP packet counts and stamps the time.
        let before = Instant::now();
        other
            .send_to(&rtp_packet(0, 5, &[0xFF; 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.received_packets() == 1).await);
        let t = s.last_received().unwrap();
        assert!(t >= before && t <= Instant::now(), "{t:?} vs {before:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn telephone_events_reach_the_event_queue_and_it_stays_bounded() {
        let pacer = Pacer::start(1);
        let s = session(&pacer, None);
        s.set_event_payload_type(Some(101));
        let target: SocketAddr = (LOCAL, s.local_port()).into();
        let other = TokioUdp::bind((LOCAL, 0)).await.unwrap();
        other
            .send_to(&rtp_packet(0, 1, &[0xFF; 160]), target)
            .await
            .unwrap();
        other
            .send_to(&rtp_packet(101, 2, &[5, 0x8a, 0, 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.received_packets() == 2).await);
        let mut events = s.take_events().unwrap();
        assert!(s.take_events().is_none());
        let e = events.recv().await.unwrap();
        assert_eq!(e.payload_type, 101);
        assert_eq!(e.sequence, 2);
        assert_eq!(e.payload, vec![5, 0x8a, 0, 160]);
        assert!(events.try_recv().is_err());
        // Nobody reading: the queue holds at most EVENT_QUEUE packets.
        for seq in 0..(EVENT_QUEUE as u16 + 20) {
            other
                .send_to(&rtp_packet(101, seq, &[1, 0, 0, 0]), target)
                .await
                .unwrap();
        }
        assert!(wait_for(|| s.received_packets() == 2 + EVENT_QUEUE as u64 + 20).await);
        let mut n = 0;
        while events.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, EVENT_QUEUE);
    }

    /// The call task may handle a re-INVITE between starting a play and first polling it:
    /// the codec switch must still find the play and swap its bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_codec_switch_before_the_play_is_polled_swaps_its_bytes() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        let got = collect(rx, Duration::from_millis(200));
        let playing = s.play(Arc::from(vec![0x11u8; 160 * 5]));
        s.switch_codec(8, 0xD5, Arc::from(vec![0x22u8; 160 * 5]));
        assert_eq!(playing.await, PlayResult::Finished);
        let got = got.await.unwrap();
        assert_eq!(got.len(), 5);
        for g in &got {
            let p = RtpReader::new(&g.data).unwrap();
            assert_eq!(p.payload_type(), 8);
            assert!(
                p.payload().iter().all(|&b| b == 0x22),
                "old codec's bytes under PT 8"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hold_sends_nothing_but_the_play_keeps_time() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        s.set_sending(false);
        let got = collect(rx, Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(
            s.play(Arc::from(vec![0u8; 160 * 10])).await,
            PlayResult::Finished
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(got.await.unwrap().len(), 0);
        s.set_sending(true);
        assert_eq!(
            s.play(Arc::from(vec![0u8; 160])).await,
            PlayResult::Finished
        );
        assert_eq!(s.packets_sent(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_stops_sending_and_frees_the_port() {
        let (min, max) = free_range(1);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = RtpSession::start(pool.allocate().unwrap(), &pacer, Some(to), 0).unwrap();
        assert_eq!(s.local_port(), min);
        assert_eq!(pool.available(), 0);
        let got = collect(rx, Duration::from_millis(300));
        // Dropping the play future stops the playback.
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            s.play(Arc::from(vec![0u8; 160 * 100])),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(pacer.stats().streams, 1);
        drop(s);
        assert!(wait_for(|| pool.available() == 1).await);
        assert_eq!(pacer.stats().streams, 0);
        let n = got.await.unwrap().len();
        assert!((2..=25).contains(&n), "{n} packets");
        // The pair really is free: it binds again.
        let again = pool.allocate().unwrap();
        assert_eq!(again.rtp_port(), min);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_sessions_on_one_pacer_all_deliver() {
        const N: usize = 200;
        const PACKETS: usize = 25;
        let pacer = Pacer::start(2);
        let mut sessions = Vec::new();
        let mut collectors = Vec::new();
        for _ in 0..N {
            let (rx, to) = receiver().await;
            sessions.push(Arc::new(session(&pacer, Some(to))));
            collectors.push(collect(rx, Duration::from_millis(500)));
        }
        let prompt: Arc<[u8]> = (0..160 * PACKETS)
            .map(|i| (i % 256) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut plays = tokio::task::JoinSet::new();
        for s in &sessions {
            let (s, p) = (s.clone(), prompt.clone());
            plays.spawn(async move { s.play(p).await });
        }
        while let Some(r) = plays.join_next().await {
            assert_eq!(r.unwrap(), PlayResult::Finished);
        }
        for (i, c) in collectors.into_iter().enumerate() {
            let got = c.await.unwrap();
            assert_eq!(got.len(), PACKETS, "receiver {i}");
            let first = RtpReader::new(&got[0].data).unwrap();
            let mut audio = Vec::new();
            for (j, g) in got.iter().enumerate() {
                let p = RtpReader::new(&g.data).unwrap();
                assert_eq!(
                    u16::from(p.sequence_number()),
                    u16::from(first.sequence_number()).wrapping_add(j as u16)
                );
                assert_eq!(p.ssrc(), sessions[i].ssrc());
                audio.extend_from_slice(p.payload());
            }
            assert_eq!(&audio[..], &prompt[..]);
        }
        let stats = pacer.stats();
        assert_eq!(stats.packets_sent, (N * PACKETS) as u64);
        assert_eq!(stats.streams, N);
        assert_eq!(stats.send_errors, 0);
    }

    fn rtp_from(ssrc: u32, pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(pt)
            .sequence(Seq::from(seq))
            .ssrc(ssrc)
            .timestamp(7)
            .payload(payload)
            .build()
            .unwrap()
    }

    #[test]
    fn latch_prefers_the_sdp_address_while_learning_then_holds() {
        let sdp: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let nat: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The SDP address first: latched at once, everything else foreign.
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.on_packet(sdp, t0), Verdict::Accept(Some(sdp)));
        assert_eq!(l.on_packet(nat, ms(1)), Verdict::Foreign);
        assert_eq!(l.on_packet(sdp, ms(2)), Verdict::Accept(None));
        // Another source first: a candidate the SDP address can still displace...
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept(Some(nat)));
        assert_eq!(l.on_packet(nat, ms(10)), Verdict::Accept(None));
        assert_eq!(l.on_packet(other, ms(20)), Verdict::Foreign);
        assert_eq!(l.on_packet(sdp, ms(30)), Verdict::Accept(Some(sdp)));
        // ...and then never again: no re-latch to the earlier source.
        assert_eq!(l.on_packet(nat, ms(40)), Verdict::Foreign);
        // After the learning window the candidate is final: the SDP address is foreign too.
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept(Some(nat)));
        let late = LEARNING_WINDOW.as_millis() as u64 + 1;
        assert_eq!(l.on_packet(sdp, ms(late)), Verdict::Foreign);
        assert_eq!(l.on_packet(nat, ms(late + 1)), Verdict::Accept(None));
        // A re-INVITE moving the SDP address starts a new learning phase; the same one not.
        assert!(!l.on_sdp(Some(sdp)));
        assert_eq!(l.on_packet(sdp, ms(late + 2)), Verdict::Foreign);
        assert!(l.on_sdp(Some(other)));
        assert_eq!(
            l.on_packet(other, ms(late + 3)),
            Verdict::Accept(Some(other))
        );
        assert_eq!(l.on_packet(nat, ms(late + 4)), Verdict::Foreign);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_latched_other_sources_are_dropped_and_counted() {
        let pacer = Pacer::start(1);
        let (caller, caller_addr) = receiver().await;
        let (intruder, _) = receiver().await;
        let s = session(&pacer, Some(caller_addr));
        s.set_event_payload_type(Some(101));
        let mut events = s.take_events().unwrap();
        let target: SocketAddr = (LOCAL, s.local_port()).into();
        caller
            .send_to(&rtp_from(1, 0, 1, &[0xFF; 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.latched_remote() == Some(caller_addr)).await);
        assert!(s.is_proven());
        let last = s.last_received();
        // Another address with another SSRC: audio and a key press.
        for seq in 0..5 {
            intruder
                .send_to(&rtp_from(99, 0, seq, &[0xFF; 160]), target)
                .await
                .unwrap();
        }
        intruder
            .send_to(&rtp_from(99, 101, 9, &[5, 0x8a, 0, 160]), target)
            .await
            .unwrap();
        assert!(
            wait_for(|| s.foreign_packets() == 6).await,
            "foreign {}",
            s.foreign_packets()
        );
        assert_eq!(s.received_packets(), 1);
        assert_eq!(
            s.last_received(),
            last,
            "foreign packets do not count as heard"
        );
        assert_eq!(s.latched_remote(), Some(caller_addr));
        assert!(
            events.try_recv().is_err(),
            "a foreign key press reached DTMF"
        );
        // The audio still goes to the caller.
        let to_caller = collect(caller, Duration::from_millis(200));
        let to_intruder = collect(intruder, Duration::from_millis(200));
        assert_eq!(
            s.play(Arc::from(vec![3u8; 480])).await,
            PlayResult::Finished
        );
        assert_eq!(to_caller.await.unwrap().len(), 3);
        assert_eq!(to_intruder.await.unwrap().len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sdp_address_wins_the_latch_during_learning() {
        let pacer = Pacer::start(1);
        let (sdp_rx, sdp_to) = receiver().await;
        let (first_rx, first_addr) = receiver().await;
        let s = session(&pacer, Some(sdp_to));
        let target: SocketAddr = (LOCAL, s.local_port()).into();
        first_rx
            .send_to(&rtp_from(7, 0, 1, &[0xFF; 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.latched_remote() == Some(first_addr)).await);
        sdp_rx
            .send_to(&rtp_from(8, 0, 1, &[0xFF; 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.latched_remote() == Some(sdp_to)).await);
        first_rx
            .send_to(&rtp_from(7, 0, 2, &[0xFF; 160]), target)
            .await
            .unwrap();
        assert!(wait_for(|| s.foreign_packets() == 1).await);
        assert_eq!(s.latched_remote(), Some(sdp_to));
        let to_sdp = collect(sdp_rx, Duration::from_millis(200));
        let to_first = collect(first_rx, Duration::from_millis(200));
        assert_eq!(
            s.play(Arc::from(vec![3u8; 320])).await,
            PlayResult::Finished
        );
        assert_eq!(to_sdp.await.unwrap().len(), 2);
        assert_eq!(to_first.await.unwrap().len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unproven_address_gets_nothing_until_it_proves_itself() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = Arc::new(session(&pacer, Some(to)));
        s.require_proof();
        let got = collect(rx.clone(), Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(
            s.play(Arc::from(vec![1u8; 160 * 10])).await,
            PlayResult::Finished
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "the play keeps time"
        );
        assert_eq!(got.await.unwrap().len(), 0);
        assert_eq!(s.packets_sent(), 0);
        // The ACK proves it: a waiter wakes, and sending starts.
        let w = s.clone();
        let waiter = tokio::spawn(async move { w.wait_proven().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        s.prove();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("wait_proven resolves")
            .unwrap();
        let got = collect(rx, Duration::from_millis(200));
        assert_eq!(
            s.play(Arc::from(vec![1u8; 320])).await,
            PlayResult::Finished
        );
        assert_eq!(got.await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_callers_rtp_proves_its_address() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        s.require_proof();
        assert!(!s.is_proven());
        rx.send_to(&rtp_from(1, 0, 1, &[0xFF; 160]), (LOCAL, s.local_port()))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), s.wait_proven())
            .await
            .expect("proven by RTP");
        let got = collect(rx, Duration::from_millis(200));
        assert_eq!(
            s.play(Arc::from(vec![1u8; 320])).await,
            PlayResult::Finished
        );
        assert_eq!(got.await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unproven_early_audio_stops_when_its_window_closes() {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        s.require_proof();
        s.allow_unproven_for(Duration::from_millis(200));
        let got = collect(rx, Duration::from_millis(300));
        let started = Instant::now();
        // One second of audio: about 200 ms of it goes out, the rest keeps time silently.
        assert_eq!(
            s.play(Arc::from(vec![1u8; 160 * 50])).await,
            PlayResult::Finished
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
        let n = got.await.unwrap().len();
        assert!((5..=14).contains(&n), "{n} packets in a 200 ms window");
    }
}
