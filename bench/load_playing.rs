//! Scenario B of the load benchmark: thousands of long playing calls, and how punctual their
//! RTP is.
//!
//! Starts the built pivotd binary on loopback (RTP ports 40000-59999, a 4 MiB SIP receive
//! buffer, 127.0.0.1 trusted, call limits out of the way) with a callflow that plays a 1 kHz
//! tone endlessly, and ramps calls up — placed at RATE/s over a few SIP sockets, each ACKed —
//! to each step of concurrent calls, holding every step for HOLD seconds. After the last
//! step the bench hangs every call up (BYE) and waits for pivotd to be idle again.
//!
//! The receiver is one thread with one epoll loop draining its sockets with recvmmsg: a
//! sample of the calls (SAMPLE, chosen evenly) each send to a socket of their own, the rest to
//! a few shared sinks whose packets are only counted. For a sampled stream each packet is
//! due at the first packet's arrival + (rtp_ts − first_ts) / 8000 s (the stream's own clock);
//! its lateness is arrival − due, from the kernel's receive timestamp (SO_TIMESTAMPNS: when
//! the datagram reached the socket, so the receiver thread's own delays do not count; on
//! loopback that is pivotd's sendto). Packets of a stream's first second are left out.
//! Sequence gaps (missing numbers), timestamp errors (a step that is not 160 × the sequence
//! step, and the packets' worth of audio such steps skip) and the packets/s received
//! against 50/s per live call are counted too.
//!
//! Per step: live calls (pivotd_calls_active), pivotd's CPU over the hold (/proc/PID/stat)
//! and per playing call, RSS and its slope per call from the step before; then RSS idle, at
//! its peak (VmHWM) and after the hang-up. A table on stdout and JSON (default
//! target/bench-load-playing.json). Asserts nothing.
//!
//! With `--asterisk PEERS` (the directory build-asterisk.sh filled) the same calls go to the
//! comparison Asterisk instead (bench/asterisk_peer.sh `configure-playing`: extension 7100
//! answers and plays a 10 s 1 kHz tone over and over); its CPU and RSS are measured the same
//! way, and the figures only pivotd's /metrics has are left out.
//!
//! cargo bench --bench load_playing -- [--steps 1000,2500,5000] [--hold-seconds 10]
//!     [--sample 200] [--rate 500] [--sip-sockets 4] [--sinks 4] [--json FILE]
//!     [--media-ports 40000-59999] [--media-ip 127.0.0.1] [--rss-until SECONDS]
//!     [--asterisk PEERS]

#[allow(dead_code)]
#[path = "load/asterisk.rs"]
mod asterisk;
#[allow(dead_code)]
#[path = "calls_common.rs"]
mod calls_common;
#[allow(dead_code)]
#[path = "flood_common.rs"]
mod flood_common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use calls_common::{header, ok_for};
use flood_common::{cpu_seconds, in_dialog, invite, metric, start, status_kb, udp_drops};
use pivotd::sip::transport::set_receive_buffer;

const USAGE: &str = "load_playing: scenario B of the load benchmark (long playing calls, RTP \
lateness); run it with\n  cargo bench --bench load_playing -- [--steps 1000,2500,5000] \
[--hold-seconds 10] [--sample 200] [--rate 500] [--sip-sockets 4] [--sinks 4] [--json FILE] \
[--media-ports 40000-59999] [--media-ip 127.0.0.1] [--rss-until SECONDS] [--asterisk PEERS]";

/// The default: 20,000 ports, 10,000 even/odd pairs, so 5,000 calls fit with room for pairs
/// that other programs hold (pivotd skips those). Away from the tests' 20000-29999; it
/// overlaps the ranges of the other benches, so run them one at a time (or give each its own
/// `--media-ports`, or its own loopback address with `--media-ip`).
const MEDIA_PORTS: (u16, u16) = (40000, 59999);
/// Limits out of the way: what is measured is playing, not admission.
const SIP: &str = r#"max_calls = 100000
max_calls_per_second = 100000
udp_receive_buffer_bytes = 4194304
trusted_sources = ["127.0.0.1"]"#;
/// The bench sends no RTP, so the RTP timeout is off.
const MEDIA: &str = "rtp_timeout_s = 0";
const NUMBER: &str = "7100";
const CALLFLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["7100"]
flow = { module = "play", data = { id = "tone-1khz", endless_playback = true } }
"#;

/// PCMU: 8000 Hz, 20 ms packets.
const NS_PER_TS: i64 = 1_000_000_000 / 8000;
const TS_PER_PACKET: i64 = 160;
const PACKETS_PER_S: f64 = 50.0;
/// A stream's packets in its first second are not measured (its start is set-up, not
/// playing).
const WARMUP_NS: i64 = 1_000_000_000;
/// Before a hold starts, after the last call of its ramp was answered.
const SETTLE: Duration = Duration::from_secs(1);
/// After the hang-up, once pivotd has no call left, before RSS is read again.
const AFTER_SETTLE: Duration = Duration::from_secs(5);
/// The receive buffer of each sink and sampled socket.
const RX_BUFFER: usize = 4 << 20;
/// Datagrams read per recvmmsg.
const BATCH: usize = 64;
/// The receiver's pause between rounds of reading (far below what the buffers hold).
const NAP: Duration = Duration::from_millis(2);
/// An INVITE or BYE with no answer is sent again after RETRY × the times sent, up to TRIES
/// times.
const RETRY: Duration = Duration::from_secs(1);
const TRIES: u32 = 5;
/// Longest wait for a ramp's calls to be answered, or for the hang-up to finish.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    steps: Vec<usize>,
    hold: Duration,
    sample: usize,
    rate: f64,
    sip_sockets: usize,
    sinks: usize,
    json: PathBuf,
    /// Call the comparison Asterisk built in this directory instead of pivotd.
    asterisk: Option<PathBuf>,
    /// pivotd's RTP ports (two per call): another range keeps two runs at once apart.
    media_ports: (u16, u16),
    /// RSS read again every 5 s after the hang-up's first reading, up to this many seconds
    /// after the last call ended (the ended calls' transactions live up to 32 s longer).
    rss_until: Option<Duration>,
    /// pivotd's RTP address (another loopback address: a port range of its own).
    media_ip: String,
}

fn options() -> Options {
    let mut o = Options {
        steps: vec![1000, 2500, 5000],
        hold: Duration::from_secs(10),
        sample: 200,
        rate: 500.0,
        sip_sockets: 4,
        sinks: 4,
        json: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/bench-load-playing.json"
        )),
        asterisk: None,
        media_ports: MEDIA_PORTS,
        rss_until: None,
        media_ip: "127.0.0.1".to_string(),
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let bad = |what: &str| -> ! { panic!("{what}\n{USAGE}") };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| bad(&format!("{flag} wants a value")));
        let number = |v: &str| -> f64 {
            v.parse()
                .ok()
                .filter(|n: &f64| *n > 0.0)
                .unwrap_or_else(|| bad(&format!("{flag} {v}: a number above 0")))
        };
        match flag.as_str() {
            "--steps" => o.steps = value.split(',').map(|v| number(v) as usize).collect(),
            "--hold-seconds" => o.hold = Duration::from_secs_f64(number(&value)),
            "--sample" => o.sample = number(&value) as usize,
            "--rate" => o.rate = number(&value),
            "--sip-sockets" => o.sip_sockets = number(&value) as usize,
            "--sinks" => o.sinks = number(&value) as usize,
            "--json" => o.json = PathBuf::from(value),
            "--asterisk" => o.asterisk = Some(PathBuf::from(value)),
            "--rss-until" => o.rss_until = Some(Duration::from_secs_f64(number(&value))),
            "--media-ports" => {
                o.media_ports = value
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .filter(|(a, b)| a < b)
                    .unwrap_or_else(|| bad(&format!("--media-ports {value}: MIN-MAX")))
            }
            "--media-ip" => {
                let ip: std::net::IpAddr = value
                    .parse()
                    .unwrap_or_else(|_| bad(&format!("--media-ip {value}: an IP address")));
                o.media_ip = ip.to_string();
            }
            _ => bad(&format!("unknown option {flag}")),
        }
    }
    if o.steps.windows(2).any(|w| w[1] <= w[0]) {
        bad("--steps must rise");
    }
    o
}

/// The server under test: pivotd (with its /metrics), or the comparison Asterisk.
enum Server {
    Pivotd {
        child: std::process::Child,
        api: SocketAddr,
    },
    Asterisk(asterisk::Asterisk),
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Pivotd { .. } => "pivotd",
            Server::Asterisk(_) => "asterisk",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Server::Pivotd { child, .. } => child.id(),
            Server::Asterisk(a) => a.pid(),
        }
    }

    /// A pivotd metric; None for Asterisk.
    fn metric(&self, name: &str) -> Option<f64> {
        match self {
            Server::Pivotd { api, .. } => metric(*api, name),
            Server::Asterisk(_) => None,
        }
    }

    /// Its calls in progress.
    fn live(&self) -> Option<f64> {
        match self {
            Server::Pivotd { api, .. } => metric(*api, "pivotd_calls_active"),
            Server::Asterisk(a) => a.live_calls().map(|n| n as f64),
        }
    }

    fn stop(self) {
        match self {
            Server::Pivotd { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Dropping it stops it.
            Server::Asterisk(a) => drop(a),
        }
    }
}

/// Starts the server under test: pivotd with this bench's configuration in `dir`, or the
/// Asterisk in `peers` with extension 7100 playing a tone written into `dir`.
fn start_server(o: &Options, dir: &std::path::Path) -> (Server, SocketAddr) {
    match &o.asterisk {
        None => {
            let config = flood_common::write_config_parts(
                dir,
                &flood_common::ConfigParts {
                    sip_extra: SIP,
                    media_ports: o.media_ports,
                    media_extra: MEDIA,
                    callflows: CALLFLOWS,
                    media_ip: Some(&o.media_ip),
                    ..Default::default()
                },
            );
            let (child, sip, api) = start(&config);
            (Server::Pivotd { child, api }, sip)
        }
        Some(peers) => {
            let prompt = dir.join("tone-10s");
            write_tone(&prompt.with_extension("wav"), 10);
            asterisk::configure_playing(peers, &prompt)
                .unwrap_or_else(|e| panic!("configuring Asterisk: {e}"));
            let a = asterisk::Asterisk::start(peers)
                .unwrap_or_else(|e| panic!("starting Asterisk: {e}"));
            (Server::Asterisk(a), asterisk::SIP)
        }
    }
}

/// `seconds` of a 1 kHz tone at -6 dBFS, 8 kHz mono 16-bit PCM (what pivotd's `tone-1khz` plays).
fn write_tone(path: &std::path::Path, seconds: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("write tone");
    for n in 0..8000 * seconds {
        let v = (2.0 * std::f64::consts::PI * 1000.0 * f64::from(n) / 8000.0).sin() * 16384.0;
        w.write_sample(v as i16).expect("write tone");
    }
    w.finalize().expect("write tone");
}

/// Where a call is in its life, as the bench sees it.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Inviting,
    Answered,
    Refused(u16),
    Byeing,
    Ended,
    /// pivotd sent the BYE (a playing call should not end by itself).
    EndedByServer,
}

struct Call {
    state: State,
    /// When the INVITE (or the BYE) was last sent, and how many times.
    sent: Instant,
    tries: u32,
    /// A provisional answer came: the INVITE is not retransmitted any more.
    provisional: bool,
    /// pivotd's To header (with its tag) and Contact, from the 200.
    to: String,
    contact: String,
}

/// The calls and the sockets they use; a call's index is in its Call-ID.
struct Calls {
    server: SocketAddr,
    sip: Vec<UdpSocket>,
    calls: Mutex<Vec<Call>>,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn socket(&self, i: usize) -> &UdpSocket {
        &self.sip[i % self.sip.len()]
    }

    fn local(&self, i: usize) -> SocketAddr {
        self.socket(i).local_addr().expect("sip addr")
    }

    fn send(&self, i: usize, msg: &[u8]) {
        let _ = self.socket(i).send_to(msg, self.server);
    }

    fn send_invite(&self, i: usize, rtp: SocketAddr) {
        self.send(i, &invite(self.local(i), NUMBER, &call_id(i), rtp));
    }

    fn send_bye(&self, i: usize, call: &Call) {
        let id = call_id(i);
        let bye = in_dialog(
            "BYE",
            &call.contact,
            self.local(i),
            &id,
            &call.to,
            2,
            &format!("b{id}"),
        );
        self.send(i, &bye);
    }

    fn count(&self, state: State) -> usize {
        self.lock().iter().filter(|c| c.state == state).count()
    }
}

fn call_id(i: usize) -> String {
    format!("lp{i}-{}", std::process::id())
}

fn call_index(msg: &str) -> Option<usize> {
    let id = header(msg, "Call-ID")?;
    let (i, pid) = id.strip_prefix("lp")?.split_once('-')?;
    (pid == std::process::id().to_string())
        .then(|| i.parse().ok())
        .flatten()
}

/// Reads one SIP socket until `stop`: ACKs every final answer to an INVITE (again for a
/// retransmitted 2xx), notes the answers to BYEs, answers a BYE from pivotd.
fn sip_reader(calls: Arc<Calls>, which: usize, stop: Arc<AtomicBool>) {
    let sock = &calls.sip[which];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let local = sock.local_addr().expect("sip addr");
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("sip socket: {e}"),
        };
        let msg = String::from_utf8_lossy(&buf[..n]);
        let Some(i) = call_index(&msg) else { continue };
        let id = call_id(i);
        let mut reply = None;
        if let Some(rest) = msg.strip_prefix("SIP/2.0 ") {
            let code: u16 = rest.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let cseq = header(&msg, "CSeq").unwrap_or("");
            let to = header(&msg, "To").unwrap_or("").to_string();
            let mut all = calls.lock();
            let Some(call) = all.get_mut(i) else { continue };
            if cseq.ends_with("INVITE") {
                if code < 200 {
                    call.provisional = true;
                    continue;
                }
                if (200..300).contains(&code) {
                    if call.state == State::Inviting {
                        call.state = State::Answered;
                        call.to = to;
                        call.contact = header(&msg, "Contact")
                            .and_then(|c| c.split_once('<')?.1.split_once('>'))
                            .map_or(format!("sip:{NUMBER}@bench.test"), |(uri, _)| {
                                uri.to_string()
                            });
                    }
                    // A 2xx's ACK is a transaction of its own: a branch of its own.
                    let branch = format!("a{id}");
                    let ack = in_dialog("ACK", &call.contact, local, &id, &call.to, 1, &branch);
                    reply = Some(ack);
                } else {
                    if call.state == State::Inviting {
                        call.state = State::Refused(code);
                    }
                    let uri = format!("sip:{NUMBER}@bench.test");
                    reply = Some(in_dialog("ACK", &uri, local, &id, &to, 1, &id));
                }
            } else if cseq.ends_with("BYE") && code >= 200 && call.state == State::Byeing {
                call.state = State::Ended;
            }
        } else if msg.starts_with("BYE ") {
            if let Some(call) = calls.lock().get_mut(i) {
                call.state = State::EndedByServer;
            }
            reply = Some(ok_for(&msg).into_bytes());
        }
        if let Some(r) = reply {
            let _ = sock.send_to(&r, from);
        }
    }
}

/// Places calls `from..to` at `rate`/s, then resends INVITEs that drew no answer at all until
/// every one is answered or refused (or ANSWER_TIMEOUT). Returns the calls still unanswered.
fn ramp(
    calls: &Calls,
    from: usize,
    to: usize,
    rate: f64,
    rtp: &dyn Fn(usize) -> SocketAddr,
) -> usize {
    let started = Instant::now();
    for (k, i) in (from..to).enumerate() {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        calls.lock().push(Call {
            state: State::Inviting,
            sent: Instant::now(),
            tries: 1,
            provisional: false,
            to: String::new(),
            contact: String::new(),
        });
        calls.send_invite(i, rtp(i));
    }
    let waiting = Instant::now();
    loop {
        let mut resend = Vec::new();
        let pending = {
            let mut all = calls.lock();
            let mut pending = 0;
            for (i, c) in all.iter_mut().enumerate().skip(from) {
                if c.state != State::Inviting {
                    continue;
                }
                pending += 1;
                if !c.provisional && c.tries < TRIES && c.sent.elapsed() > RETRY * c.tries {
                    c.tries += 1;
                    c.sent = Instant::now();
                    resend.push(i);
                }
            }
            pending
        };
        for i in resend {
            calls.send_invite(i, rtp(i));
        }
        if pending == 0 || waiting.elapsed() > ANSWER_TIMEOUT {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a BYE for every answered call at `rate`/s, resending those with no answer; returns
/// the calls whose BYE drew no final answer within ANSWER_TIMEOUT.
fn hang_up(calls: &Calls, rate: f64) -> usize {
    let answered: Vec<usize> = calls
        .lock()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.state == State::Answered)
        .map(|(i, _)| i)
        .collect();
    let started = Instant::now();
    for (k, &i) in answered.iter().enumerate() {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut all = calls.lock();
        let call = &mut all[i];
        call.state = State::Byeing;
        call.sent = Instant::now();
        call.tries = 1;
        calls.send_bye(i, call);
    }
    let waiting = Instant::now();
    loop {
        let mut all = calls.lock();
        let mut pending = 0;
        for (i, c) in all.iter_mut().enumerate() {
            if c.state != State::Byeing {
                continue;
            }
            pending += 1;
            if c.tries < TRIES && c.sent.elapsed() > RETRY * c.tries {
                c.tries += 1;
                c.sent = Instant::now();
                calls.send_bye(i, c);
            }
        }
        drop(all);
        if pending == 0 || waiting.elapsed() > ANSWER_TIMEOUT {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A clock as i64 nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC: turns the kernel's receive timestamps (realtime) into
/// the monotonic clock. Both run at the same (NTP-disciplined) rate; only a step of the wall
/// clock moves it, which the run checks at its end.
fn realtime_offset() -> i64 {
    (0..5)
        .map(|_| {
            let m0 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            (m1 - m0, r - (m0 + m1) / 2)
        })
        .min()
        .map_or(0, |(_, off)| off)
}

/// One sampled stream's state in the receiver.
#[derive(Default)]
struct Stream {
    started: bool,
    ssrc: u32,
    /// The first packet: its arrival (kernel stamp and user clock, monotonic ns).
    anchor_kernel: i64,
    anchor_user: i64,
    /// The last packet: its sequence number, raw timestamp, and timestamp unwrapped and
    /// counted from the first packet.
    seq: u16,
    ts: u32,
    rel_ts: i64,
    /// Its slot in the receiver's earliest offsets (a new one after an SSRC change).
    slot: usize,
}

/// What the receiver saw in one phase (a ramp, a hold, the hang-up).
#[derive(Default)]
struct Phase {
    /// Lateness (ns) of each measured packet: from the kernel's stamp, and from the time the
    /// receiver thread read it.
    late_kernel: Vec<i64>,
    late_user: Vec<i64>,
    /// The stream slot of each `late_kernel` value, and that lateness measured from the
    /// stream's earliest packet instead of its first: a first packet that was itself late
    /// makes the packets after it look early, and a packet cannot leave before its time, so
    /// the earliest (arrival − due) is the stream's true anchor. Filled at the end.
    late_slot: Vec<u32>,
    late_earliest: Vec<i64>,
    /// Receiver thread's delay: read − kernel stamp (ns).
    read_delay: Vec<i64>,
    sampled_packets: u64,
    sink_packets: u64,
    /// Sequence numbers missing, timestamp steps not 160 × the sequence step, packets
    /// older than the last (reordered or duplicated), SSRC changes, packets with no kernel
    /// stamp, datagrams that are not RTP.
    gaps: u64,
    ts_errors: u64,
    /// Packets' worth of audio the timestamps jumped over beyond the sequence step (a
    /// sender that skipped to the present after a stall keeps its sequence consecutive).
    ts_skipped: u64,
    reordered: u64,
    ssrc_changes: u64,
    unstamped: u64,
    not_rtp: u64,
}

/// recvmmsg buffers for BATCH datagrams (and their control messages).
struct Batch {
    bufs: Vec<[u8; 2048]>,
    ctrl: Vec<[u64; 16]>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![[0; 2048]; BATCH],
            ctrl: vec![[0; 16]; BATCH],
            // SAFETY: iovec and mmsghdr are plain C structs; all-zero is a valid value, and
            // `recv` sets every pointer before use.
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            hdrs: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Reads the datagrams waiting on `fd` (at most BATCH) without blocking; returns how many.
    fn recv(&mut self, fd: RawFd) -> usize {
        for k in 0..BATCH {
            self.iov[k] = libc::iovec {
                iov_base: self.bufs[k].as_mut_ptr().cast(),
                iov_len: self.bufs[k].len(),
            };
            let h = &mut self.hdrs[k].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iov[k];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[k].as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of::<[u64; 16]>() as _;
            h.msg_flags = 0;
            self.hdrs[k].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by self that outlive the call, with
        // their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    fn datagram(&self, k: usize) -> &[u8] {
        let len = (self.hdrs[k].msg_len as usize).min(self.bufs[k].len());
        &self.bufs[k][..len]
    }

    /// The SO_TIMESTAMPNS stamp of datagram `k` (realtime ns), if the kernel attached one.
    fn stamp(&self, k: usize) -> Option<i64> {
        let h = &self.hdrs[k].msg_hdr;
        // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros walk
        // only within it, and the timespec is read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    return Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }
}

/// The receiver's sockets: one per sampled call, a few sinks for the rest.
struct Receiver {
    samples: Vec<UdpSocket>,
    sinks: Vec<UdpSocket>,
}

/// Sinks' epoll tokens have this bit set; samples' are their index.
const SINK: u64 = 1 << 32;

impl Receiver {
    fn bind(samples: usize, sinks: usize) -> Receiver {
        let socket = |stamped: bool| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("receiver socket");
            let _ = set_receive_buffer(&s, RX_BUFFER);
            if stamped {
                let on: libc::c_int = 1;
                // SAFETY: setsockopt reads the int it is given, of the size it is told.
                let rc = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_TIMESTAMPNS,
                        (&on as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
            }
            s
        };
        Receiver {
            samples: (0..samples).map(|_| socket(true)).collect(),
            sinks: (0..sinks).map(|_| socket(false)).collect(),
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.samples
            .iter()
            .chain(&self.sinks)
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Drains every socket until `stop`, recording into `phases[phase]`; returns the phases.
    fn run(
        self,
        phases: usize,
        phase: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        offset: i64,
    ) -> Vec<Phase> {
        let mut out: Vec<Phase> = (0..phases).map(|_| Phase::default()).collect();
        let mut streams: Vec<Stream> = (0..self.samples.len()).map(|_| Stream::default()).collect();
        // SAFETY: epoll_create1 makes a new descriptor; closed below.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            ep >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        let tokens =
            (0..self.samples.len() as u64).chain((0..self.sinks.len() as u64).map(|i| SINK | i));
        for (s, token) in self.samples.iter().chain(&self.sinks).zip(tokens) {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: registers a socket this function owns; the kernel copies the event.
            let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
            assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut batch = Batch::new();
        // Per stream slot, the lowest lateness seen from its first packet (0: the first).
        let mut earliest: Vec<i64> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            // Lateness comes from the kernel's stamps, so reading late costs no accuracy;
            // napping lets datagrams gather into full batches, which keeps the receiver's
            // CPU (taken from pivotd's two cores) low.
            std::thread::sleep(NAP);
            // SAFETY: the kernel writes at most events.len() events into the vector.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
            let p = phase.load(Ordering::Relaxed).min(phases - 1);
            for ev in events.iter().take(usize::try_from(n).unwrap_or(0)) {
                let token = ev.u64;
                if token & SINK != 0 {
                    let fd = self.sinks[(token & !SINK) as usize].as_raw_fd();
                    loop {
                        let got = batch.recv(fd);
                        out[p].sink_packets += got as u64;
                        if got < BATCH {
                            break;
                        }
                    }
                    continue;
                }
                let i = token as usize;
                let fd = self.samples[i].as_raw_fd();
                loop {
                    let got = batch.recv(fd);
                    let read = clock_ns(libc::CLOCK_MONOTONIC);
                    for k in 0..got {
                        let stamp = batch.stamp(k).map(|s| s - offset);
                        let d = batch.datagram(k);
                        packet(&mut streams[i], &mut earliest, &mut out[p], d, stamp, read);
                    }
                    if got < BATCH {
                        break;
                    }
                }
            }
        }
        // SAFETY: closes the descriptor made above, once.
        unsafe { libc::close(ep) };
        for p in &mut out {
            p.late_earliest = (p.late_kernel.iter().zip(&p.late_slot))
                .map(|(l, &slot)| l - earliest[slot as usize])
                .collect();
        }
        out
    }
}

/// One datagram of a sampled stream: `kernel` its receive stamp, `read` when the receiver
/// read it (monotonic ns).
fn packet(
    s: &mut Stream,
    earliest: &mut Vec<i64>,
    p: &mut Phase,
    d: &[u8],
    kernel: Option<i64>,
    read: i64,
) {
    if d.len() < 12 || d[0] >> 6 != 2 {
        p.not_rtp += 1;
        return;
    }
    p.sampled_packets += 1;
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    let Some(kernel) = kernel else {
        p.unstamped += 1;
        return;
    };
    if s.started && s.ssrc != ssrc {
        p.ssrc_changes += 1;
        s.started = false;
    }
    if !s.started {
        *s = Stream {
            started: true,
            ssrc,
            anchor_kernel: kernel,
            anchor_user: read,
            seq,
            ts,
            rel_ts: 0,
            slot: earliest.len(),
        };
        earliest.push(0);
        return;
    }
    let step = i64::from(seq.wrapping_sub(s.seq) as i16);
    if step <= 0 {
        p.reordered += 1;
        return;
    }
    p.gaps += (step - 1) as u64;
    let ts_step = i64::from(ts.wrapping_sub(s.ts) as i32);
    if ts_step != TS_PER_PACKET * step {
        p.ts_errors += 1;
        let skipped = (ts_step - TS_PER_PACKET * step) / TS_PER_PACKET;
        p.ts_skipped += u64::try_from(skipped).unwrap_or(0);
    }
    s.seq = seq;
    s.ts = ts;
    s.rel_ts += ts_step;
    let due = s.rel_ts * NS_PER_TS;
    let late = kernel - (s.anchor_kernel + due);
    earliest[s.slot] = earliest[s.slot].min(late);
    if kernel - s.anchor_kernel >= WARMUP_NS {
        p.late_kernel.push(late);
        p.late_slot.push(s.slot as u32);
        p.late_user.push(read - (s.anchor_user + due));
        p.read_delay.push(read - kernel);
    }
}

/// p50, p99 and max of `v` (ns) in ms; zeros when empty.
fn quantiles(v: &mut [i64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)] as f64 / 1e6;
    (at(50), at(99), v[v.len() - 1] as f64 / 1e6)
}

/// What the bench measured at one step.
struct Step {
    target: usize,
    answered: usize,
    refused: usize,
    unanswered: usize,
    live_gauge: Option<f64>,
    rtp_streams: Option<f64>,
    ramp_s: f64,
    hold_s: f64,
    cpu_pct: f64,
    bench_cpu_pct: f64,
    rss_kb: u64,
    late_packets: Option<f64>,
    send_errors: Option<f64>,
    /// pivotd_rtp_packets_sent_total over the hold: what pivotd says it sent, against what
    /// arrived.
    sent_packets: Option<f64>,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and thousands of calls have no place in the test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("{USAGE}");
        return;
    }
    let o = options();
    let total = *o.steps.last().expect("at least one step");
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let dir = std::env::temp_dir().join(format!("pivotd-load-playing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (srv, server) = start_server(&o, &dir);
    let pid = srv.pid();

    // Every STRIDE-th call is sampled: the sample spreads evenly over the ramp.
    let samples = o.sample.min(total);
    let stride = (total / samples.max(1)).max(1);
    let receiver = Receiver::bind(samples, o.sinks);
    let sample_addrs: Vec<SocketAddr> = receiver
        .samples
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    let sink_addrs: Vec<SocketAddr> = receiver
        .sinks
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    let rx_addrs = receiver.addrs();
    let rtp = move |i: usize| -> SocketAddr {
        if i % stride == 0 && i / stride < sample_addrs.len() {
            sample_addrs[i / stride]
        } else {
            sink_addrs[i % sink_addrs.len()]
        }
    };
    let phases = 2 * o.steps.len() + 1;
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let offset = realtime_offset();
    let rx = {
        let (phase, stop) = (phase.clone(), stop.clone());
        std::thread::spawn(move || receiver.run(phases, phase, stop, offset))
    };
    let calls = Arc::new(Calls {
        server,
        sip: (0..o.sip_sockets)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("sip socket");
                let _ = set_receive_buffer(&s, RX_BUFFER);
                s
            })
            .collect(),
        calls: Mutex::new(Vec::with_capacity(total)),
    });
    let readers: Vec<_> = (0..o.sip_sockets)
        .map(|k| {
            let (calls, stop) = (calls.clone(), stop.clone());
            std::thread::spawn(move || sip_reader(calls, k, stop))
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = status_kb(pid, "VmRSS");
    let idle_from = (Instant::now(), cpu_seconds(pid));
    std::thread::sleep(Duration::from_secs(1));
    let idle_cpu = (cpu_seconds(pid) - idle_from.1) / idle_from.0.elapsed().as_secs_f64() * 100.0;

    let mut steps = Vec::new();
    let mut placed = 0;
    for (k, &target) in o.steps.iter().enumerate() {
        phase.store(2 * k, Ordering::Relaxed);
        let t0 = Instant::now();
        let unanswered = ramp(&calls, placed, target, o.rate, &rtp);
        let ramp_s = t0.elapsed().as_secs_f64();
        placed = target;
        std::thread::sleep(SETTLE);
        let late0 = srv.metric("pivotd_rtp_late_packets_total");
        let errors0 = srv.metric("pivotd_rtp_send_errors_total");
        let sent0 = srv.metric("pivotd_rtp_packets_sent_total");
        phase.store(2 * k + 1, Ordering::Relaxed);
        let (h0, cpu0, bench0) = (
            Instant::now(),
            cpu_seconds(pid),
            cpu_seconds(std::process::id()),
        );
        std::thread::sleep(o.hold);
        let (cpu1, bench1) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
        let hold_s = h0.elapsed().as_secs_f64();
        phase.store(2 * k + 2, Ordering::Relaxed);
        let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let step = Step {
            target,
            answered: calls.count(State::Answered),
            refused: calls
                .lock()
                .iter()
                .filter(|c| matches!(c.state, State::Refused(_)))
                .count(),
            unanswered,
            live_gauge: srv.live(),
            rtp_streams: srv.metric("pivotd_rtp_streams"),
            ramp_s,
            hold_s,
            cpu_pct: (cpu1 - cpu0) / hold_s * 100.0,
            bench_cpu_pct: (bench1 - bench0) / hold_s * 100.0,
            rss_kb: status_kb(pid, "VmRSS"),
            late_packets: delta(late0, srv.metric("pivotd_rtp_late_packets_total")),
            send_errors: delta(errors0, srv.metric("pivotd_rtp_send_errors_total")),
            sent_packets: delta(sent0, srv.metric("pivotd_rtp_packets_sent_total")),
        };
        eprintln!(
            "step {target}: {} answered, ramp {ramp_s:.1} s, server CPU {:.1} %, RSS {:.1} MB",
            step.answered,
            step.cpu_pct,
            step.rss_kb as f64 / 1024.0
        );
        steps.push(step);
    }

    phase.store(phases - 1, Ordering::Relaxed);
    let peak_rss = status_kb(pid, "VmHWM");
    let ended_by_server = calls.count(State::EndedByServer);
    let t0 = Instant::now();
    let bye_unanswered = hang_up(&calls, o.rate.max(1000.0));
    let hangup_s = t0.elapsed().as_secs_f64();
    let idle_wait = Instant::now();
    let mut live_after = srv.live();
    while live_after != Some(0.0) && idle_wait.elapsed() < IDLE_TIMEOUT {
        std::thread::sleep(Duration::from_millis(200));
        live_after = srv.live();
    }
    let idle_since = Instant::now();
    std::thread::sleep(AFTER_SETTLE);
    let after_rss = status_kb(pid, "VmRSS");
    let mut later_rss = Vec::new();
    let mut at = AFTER_SETTLE;
    while o.rss_until.is_some_and(|until| at < until) {
        at += AFTER_SETTLE;
        std::thread::sleep(at.saturating_sub(idle_since.elapsed()));
        later_rss.push((at.as_secs(), status_kb(pid, "VmRSS")));
    }
    let drops: u64 = udp_drops(&rx_addrs).iter().flatten().sum();
    let offset_moved_us = (realtime_offset() - offset) as f64 / 1e3;
    stop.store(true, Ordering::Relaxed);
    let mut rx_phases = rx.join().expect("receiver thread");
    for r in readers {
        r.join().expect("sip reader");
    }
    let name = srv.name();
    srv.stop();
    let _ = std::fs::remove_dir_all(&dir);

    report(
        &o,
        &steps,
        &mut rx_phases,
        Summary {
            server: name,
            loadavg: loadavg.trim().to_string(),
            samples,
            stride,
            idle_rss,
            idle_cpu,
            peak_rss,
            after_rss,
            later_rss,
            live_after,
            hangup_s,
            bye_unanswered,
            ended_by_server,
            receiver_drops: drops,
            offset_moved_us,
        },
    );
}

/// The run's figures besides the steps.
struct Summary {
    /// "pivotd" or "asterisk".
    server: &'static str,
    loadavg: String,
    samples: usize,
    stride: usize,
    idle_rss: u64,
    idle_cpu: f64,
    peak_rss: u64,
    after_rss: u64,
    /// (seconds after the last call ended, RSS KB), with `--rss-until`.
    later_rss: Vec<(u64, u64)>,
    live_after: Option<f64>,
    hangup_s: f64,
    bye_unanswered: usize,
    ended_by_server: usize,
    receiver_drops: u64,
    offset_moved_us: f64,
}

fn report(o: &Options, steps: &[Step], rx: &mut [Phase], s: Summary) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    println!(
        "load_playing against {}: steps {:?}, hold {:.0} s, {} sampled streams (every {}th call), ramp {}/s; loadavg at start {}",
        s.server,
        o.steps,
        o.hold.as_secs_f64(),
        s.samples,
        s.stride,
        o.rate,
        s.loadavg
    );
    println!();
    println!(
        "media over each hold: lateness in ms from the kernel's receive stamp against each stream's \
         first packet (p50 p99 max, >2ms packets), and (*) against its earliest packet; `read p99` \
         the receiver thread's delay; `ramp p99*` over the ramp before the hold"
    );
    println!(
        "{:>6} {:>6} {:>10} {:>10} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>8} {:>9}",
        "calls",
        "live",
        "pkts/s",
        "expected",
        "ratio",
        "p50",
        "p99",
        "max",
        ">2ms",
        "p99*",
        "max*",
        "gaps",
        "ts_err",
        "skipped",
        "read p99",
        "ramp p99*"
    );
    let mut json_steps = Vec::new();
    let mut prev = (0usize, s.idle_rss, s.idle_cpu);
    let mut cost_rows = Vec::new();
    for (k, st) in steps.iter().enumerate() {
        let (ramp_p99, ramp_max) = {
            let (_, p99, max) = quantiles(&mut rx[2 * k].late_earliest);
            (p99, max)
        };
        let h = &mut rx[2 * k + 1];
        let over_2ms = h.late_kernel.iter().filter(|&&l| l > 2_000_000).count();
        // Early packets mean a stream's first packet (its anchor) was itself late.
        let early_2ms = h.late_kernel.iter().filter(|&&l| l < -2_000_000).count();
        let measured = h.late_kernel.len();
        let (p50, p99, max) = quantiles(&mut h.late_kernel);
        let over_2ms_earliest = h.late_earliest.iter().filter(|&&l| l > 2_000_000).count();
        let (e50, e99, emax) = quantiles(&mut h.late_earliest);
        let (u50, u99, umax) = quantiles(&mut h.late_user);
        let (_, read99, readmax) = quantiles(&mut h.read_delay);
        let received = (h.sampled_packets + h.sink_packets) as f64 / st.hold_s;
        let live = st.live_gauge.map_or(st.answered as f64, |g| g);
        let expected = st.answered as f64 * PACKETS_PER_S;
        println!(
            "{:>6} {:>6} {:>10.0} {:>10.0} {:>6.3} {:>7.2} {:>7.2} {:>7.2} {:>7} {:>7.2} {:>7.2} {:>6} {:>6} {:>7} {:>8.2} {:>9.2}",
            st.target,
            opt(st.live_gauge),
            received,
            expected,
            received / expected.max(1.0),
            p50,
            p99,
            max,
            over_2ms,
            e99,
            emax,
            h.gaps,
            h.ts_errors,
            h.ts_skipped,
            read99,
            ramp_p99,
        );
        let per_call = st.cpu_pct / live.max(1.0);
        let marginal = (st.cpu_pct - prev.2) / (live - prev.0 as f64).max(1.0);
        let rss_slope = (st.rss_kb as f64 - prev.1 as f64) / (live - prev.0 as f64).max(1.0);
        // pivotd's CPU per packet that arrived: fair when pivotd falls behind and sends less.
        let us_per_packet = st.cpu_pct * 1e4 / received.max(1.0);
        cost_rows.push((st, per_call, marginal, us_per_packet, rss_slope));
        json_steps.push(serde_json::json!({
            "calls": st.target,
            "answered": st.answered,
            "refused": st.refused,
            "unanswered": st.unanswered,
            "live_calls_gauge": st.live_gauge,
            "rtp_streams_gauge": st.rtp_streams,
            "ramp_seconds": st.ramp_s,
            "hold_seconds": st.hold_s,
            "packets_per_second": received,
            "expected_packets_per_second": expected,
            "lateness_ms": {"p50": p50, "p99": p99, "max": max, "packets": measured, "over_2ms": over_2ms, "early_over_2ms": early_2ms},
            "lateness_from_earliest_ms": {"p50": e50, "p99": e99, "max": emax, "over_2ms": over_2ms_earliest},
            "lateness_read_ms": {"p50": u50, "p99": u99, "max": umax},
            "receiver_read_delay_ms": {"p99": read99, "max": readmax},
            "ramp_lateness_from_earliest_ms": {"p99": ramp_p99, "max": ramp_max},
            "sequence_gaps": h.gaps,
            "timestamp_errors": h.ts_errors,
            "timestamp_skipped_packets": h.ts_skipped,
            "reordered": h.reordered,
            "ssrc_changes": h.ssrc_changes,
            "unstamped": h.unstamped,
            "not_rtp": h.not_rtp,
            "ramp_sequence_gaps": rx[2 * k].gaps,
            "ramp_timestamp_errors": rx[2 * k].ts_errors,
            "pivotd_rtp_late_packets": st.late_packets,
            "pivotd_rtp_send_errors": st.send_errors,
            "pivotd_rtp_packets_sent_per_second": st.sent_packets.map(|n| n / st.hold_s),
            "server_cpu_percent": st.cpu_pct,
            "server_cpu_percent_per_call": per_call,
            "server_cpu_percent_per_added_call": marginal,
            "server_cpu_us_per_packet_received": us_per_packet,
            "bench_cpu_percent": st.bench_cpu_pct,
            "rss_kb": st.rss_kb,
            "rss_kb_per_added_call": rss_slope,
        }));
        prev = (live as usize, st.rss_kb, st.cpu_pct);
    }
    println!();
    println!(
        "cost over each hold (CPU % of one core; per call = total / live, per added call = change \
         from the step before / calls added; µs of the server's CPU per packet received; late(pvd) = \
         pivotd_rtp_late_packets_total over the hold; KB / add = RSS change / calls added)"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>9} {:>10} {:>8} {:>7} {:>9} {:>11} {:>9} {:>9}",
        "calls",
        "answered",
        "refused",
        "server %",
        "% / call",
        "% / add",
        "µs/pkt",
        "bench %",
        "late(pvd)",
        "RSS MB",
        "KB / add"
    );
    for (st, per_call, marginal, per_packet, slope) in cost_rows {
        println!(
            "{:>6} {:>8} {:>8} {:>9.1} {:>10.4} {:>8.4} {:>7.2} {:>9.1} {:>11} {:>9.1} {:>9.1}",
            st.target,
            st.answered,
            st.refused,
            st.cpu_pct,
            per_call,
            marginal,
            per_packet,
            st.bench_cpu_pct,
            opt(st.late_packets),
            st.rss_kb as f64 / 1024.0,
            slope
        );
    }
    println!();
    println!(
        "RSS idle {:.1} MB, peak (VmHWM) {:.1} MB, after hanging up {:.1} MB (after/idle {:.2}); idle CPU {:.1} %",
        s.idle_rss as f64 / 1024.0,
        s.peak_rss as f64 / 1024.0,
        s.after_rss as f64 / 1024.0,
        s.after_rss as f64 / s.idle_rss.max(1) as f64,
        s.idle_cpu
    );
    if !s.later_rss.is_empty() {
        let later: Vec<String> = s
            .later_rss
            .iter()
            .map(|(t, kb)| format!("{t} s {:.1} MB", *kb as f64 / 1024.0))
            .collect();
        println!(
            "RSS after the last call ended: {} s {:.1} MB, {}",
            AFTER_SETTLE.as_secs(),
            s.after_rss as f64 / 1024.0,
            later.join(", ")
        );
    }
    println!(
        "hang-up: {:.1} s, {} BYEs unanswered, live calls after {}; {} calls ended by the server; receiver sockets' kernel drops {}; wall clock moved {:.0} µs against monotonic",
        s.hangup_s,
        s.bye_unanswered,
        opt(s.live_after),
        s.ended_by_server,
        s.receiver_drops,
        s.offset_moved_us
    );
    let json = serde_json::json!({
        "scenario": "B",
        "server": s.server,
        "loadavg_at_start": s.loadavg,
        "steps_requested": o.steps,
        "hold_seconds": o.hold.as_secs_f64(),
        "rate": o.rate,
        "sampled_streams": s.samples,
        "steps": json_steps,
        "rss_kb": {"idle": s.idle_rss, "peak": s.peak_rss, "after": s.after_rss, "later": s.later_rss},
        "idle_cpu_percent": s.idle_cpu,
        "hangup_seconds": s.hangup_s,
        "bye_unanswered": s.bye_unanswered,
        "live_calls_after": s.live_after,
        "ended_by_server": s.ended_by_server,
        "receiver_kernel_drops": s.receiver_drops,
        "wall_clock_moved_us": s.offset_moved_us,
    });
    if let Some(parent) = o.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&o.json, serde_json::to_string_pretty(&json).expect("json"))
        .unwrap_or_else(|e| panic!("{}: {e}", o.json.display()));
    println!("JSON: {}", o.json.display());
}
