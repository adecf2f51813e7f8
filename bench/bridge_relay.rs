//! What pivotd's RTP relay costs on bridged calls: added latency, packets relayed per second,
//! CPU per relayed packet, and the set-up time of N bridged calls.
//!
//! Runs pivotd in-process on loopback. Number 6000 bridges (the `resources` module) to a
//! carrier gateway that is a scripted callee in this process, answering every INVITE with a
//! fresh RTP socket. N callers dial 6000 at once (INVITE -> 200 timed), then caller and callee
//! of every call each send 50 RTP packets/s (160-byte payloads) for a warm-up second and
//! SECONDS of steady period. Each payload's first 8 bytes carry the send time (ns since a
//! shared Instant); the receiving side subtracts it from its receive time.
//!
//! Two runs, each in a child process of its own and each with its own baseline: the callee
//! answers PCMU (bytes relayed unchanged: latency is measured), then the callee answers PCMA
//! (pivotd transcodes μ-law <-> A-law, so payload bytes change: packets and CPU only). The
//! baseline is the same senders sending socket to socket, no pivotd. CPU is
//! getrusage(RUSAGE_SELF) over the steady period, so it includes the load generator; the
//! relay's own cost per packet is the run's figure minus the baseline's.
//!
//! After the run every caller hangs up at once, each BYE a client transaction retransmitted
//! as RFC 3261 says (T1, 2·T1, … capped at T2, until Timer F). Printed on stderr: the answers
//! to the BYEs and how many times each was sent, the calls pivotd still holds 3 s later, the
//! BYEs and ACKs pivotd's endpoint read, its SIP socket's receive buffer and the datagrams
//! the kernel dropped there (and at the callee's and callers' sockets) for a full buffer.
//! Separate processes because calls left over from one run were seen to take the next run's
//! CPU.
//!
//! Where the calls go (CPU is then that server's process alone, from /proc/PID/stat, and the
//! load generator's CPU is left out):
//! - `--process`: the built pivotd binary in a child process (the same configuration);
//! - `--target ADDR --pid PID --callee-port PORT`: a SIP server already running at ADDR (the
//!   Asterisk of `bench/asterisk_dial.sh`) that bridges number 6000 to the callee, which then
//!   listens on 127.0.0.1:PORT so that the server's configuration can name it. Of the
//!   report after BYE, what the caller and callee see and the kernel's drops at the server's
//!   socket are known; the calls it holds and what its endpoint read are not.
//!
//! Run it (N concurrent calls, default 100; SECONDS of steady period, default 10; a third
//! argument `pcmu` or `pcma` runs only that half in this process):
//!
//! cargo bench --bench bridge_relay -- [N] [SECONDS] [pcmu|pcma] [--process | --target ADDR --pid PID --callee-port PORT]
//!
//! pivotd's RTP ports are 50000-59999 (`BRIDGE_RELAY_PORTS=MIN-MAX` to change them), away
//! from the 20000-29999 the tests use. `BRIDGE_RELAY_SIP_RCVBUF=BYTES` sets pivotd's
//! `[sip] udp_receive_buffer_bytes` (0: the kernel's default), in-process and `--process`.

#[allow(dead_code)]
#[path = "calls_common.rs"]
mod calls_common;
#[allow(dead_code)]
#[path = "flood_common.rs"]
mod flood_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calls_common::{header, invite, stats};
use clap::{Parser, ValueEnum};
use pivotd::sip::endpoint::Direction;
use pivotd::sip::transport::set_receive_buffer;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const PACKET_MS: u64 = 20;
const WARMUP: Duration = Duration::from_secs(1);

/// One end of a media stream: the socket it sends from and receives on, and where it sends.
struct Leg {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    /// The payload type it sends (0 PCMU, 8 PCMA), as its SDP negotiated.
    pt: u8,
}

/// The CPU time (user + system) in µs of this process (None) or of process `pid` (all its
/// threads, from /proc/PID/stat, in clock ticks: 10 ms steps).
fn cpu_us(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct it is given.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        return tv(ru.ru_utime) + tv(ru.ru_stime);
    };
    flood_common::cpu_seconds(pid) * 1e6
}

/// The media address of an SDP body (c= and m=audio).
fn sdp_addr(msg: &str) -> Option<SocketAddr> {
    let ip = msg
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim();
    let port = msg
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?;
    format!("{ip}:{port}").parse().ok()
}

fn callee_sdp(port: u16, codec: u8) -> String {
    let name = if codec == 8 { "PCMA" } else { "PCMU" };
    format!(
        "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {codec}\r\na=rtpmap:{codec} {name}/8000\r\na=sendrecv\r\n"
    )
}

/// A response to `req` (Via, From, Call-ID, CSeq, Record-Route copied), with a To tag.
fn response(req: &str, code: u16, me: SocketAddr, sdp: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {code} Bench\r\n");
    for line in req.lines().skip(1) {
        let lower = line.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|h| lower.starts_with(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    let to = header(req, "To").unwrap_or_default();
    if to.contains("tag=") {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag=callee\r\n"));
    }
    out.push_str(&format!("Contact: <sip:callee@{me}>\r\n"));
    match sdp {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

/// The carrier: answers every INVITE at once with 200 and a new RTP socket offering `codec`;
/// each answered call's leg (socket, pivotd's media address) goes to `legs`.
async fn callee(socket: Arc<UdpSocket>, codec: u8, legs: mpsc::UnboundedSender<Leg>) {
    let me = socket.local_addr().unwrap();
    let mut answered: std::collections::HashMap<String, String> = Default::default();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.starts_with("SIP/2.0") || msg.starts_with("ACK ") {
            continue;
        }
        let answer = if msg.starts_with("INVITE ") {
            let id = header(&msg, "Call-ID").unwrap_or("").to_string();
            if let Some(ok) = answered.get(&id) {
                ok.clone() // a retransmission
            } else {
                let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                let port = rtp.local_addr().unwrap().port();
                let peer = sdp_addr(&msg).expect("SDP in pivotd's INVITE");
                let _ = legs.send(Leg {
                    socket: rtp,
                    peer,
                    pt: codec,
                });
                let ok = response(&msg, 200, me, Some(&callee_sdp(port, codec)));
                answered.insert(id, ok.clone());
                ok
            }
        } else {
            response(&msg, 200, me, None)
        };
        let _ = socket.send_to(answer.as_bytes(), from).await;
    }
}

/// A bridged call from the caller's side once answered.
struct Call {
    sip: UdpSocket,
    leg: Leg,
    ok: String,
    from: SocketAddr,
    id: String,
    setup_us: f64,
}

/// Places one call to 6000 offering PCMU; INVITE retransmitted every 500 ms, ACKs the 200.
async fn place(server: SocketAddr, i: usize) -> Option<Call> {
    let sip = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.ok()?);
    let local = sip.local_addr().ok()?;
    let id = format!("relay-{i}-{}", std::process::id());
    let inv = invite(local, "6000", &id, rtp.local_addr().ok()?.port());
    let t0 = Instant::now();
    let mut buf = vec![0u8; 65536];
    // Retransmitted every 500 ms until a provisional answer (RFC 3261 17.1.1.2).
    let mut provisional = false;
    for _ in 0..20 {
        if !provisional {
            sip.send_to(inv.as_bytes(), server).await.ok()?;
        }
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                r = sip.recv_from(&mut buf) => {
                    let (n, from) = r.ok()?;
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if !msg.starts_with("SIP/2.0 ")
                        || !header(&msg, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
                    {
                        continue;
                    }
                    let code: u16 = msg[8..11].parse().unwrap_or(0);
                    if code < 200 {
                        provisional = true;
                        continue;
                    }
                    if code >= 300 {
                        eprintln!("call {i}: {}", msg.lines().next().unwrap_or(""));
                        return None;
                    }
                    let setup_us = t0.elapsed().as_secs_f64() * 1e6;
                    sip.send_to(ack(local, &id, &msg).as_bytes(), from).await.ok()?;
                    let peer = sdp_addr(&msg)?;
                    return Some(Call {
                        sip,
                        leg: Leg {
                            socket: rtp,
                            peer,
                            pt: 0,
                        },
                        ok: msg,
                        from,
                        id,
                        setup_us,
                    });
                }
            }
        }
    }
    None
}

/// The ACK of the INVITE's 2xx `ok`.
fn ack(local: SocketAddr, id: &str, ok: &str) -> String {
    format!(
        "ACK sip:x@bench.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKa{id};rport\r\n\
From: <sip:bench@127.0.0.1>;tag=f{id}\r\nTo: {}\r\nCall-ID: {id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(ok, "To").unwrap_or("")
    )
}

/// RFC 3261 T1 and T2, and Timer F (64·T1): how a UAC retransmits a non-INVITE request.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMER_F: Duration = Duration::from_secs(32);

/// Hangs up like a UAC (RFC 3261 §17.1.2.2): the BYE is retransmitted after T1, 2·T1, …
/// capped at T2, until a final answer or Timer F. A retransmitted 2xx of the INVITE (our ACK
/// was lost) is acknowledged again. Returns the answer's code ("none" at Timer F) and how
/// many times the BYE was sent.
async fn hang_up(call: Arc<Call>) -> (String, u32) {
    let Ok(local) = call.sip.local_addr() else {
        return ("no socket".into(), 0);
    };
    let id = &call.id;
    let bye = format!(
        "BYE sip:x@bench.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKb{id};rport\r\n\
From: <sip:bench@127.0.0.1>;tag=f{id}\r\nTo: {}\r\nCall-ID: {id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&call.ok, "To").unwrap_or("")
    );
    let started = Instant::now();
    let mut interval = T1;
    let mut sent = 0;
    let mut buf = vec![0u8; 65536];
    while started.elapsed() < TIMER_F {
        let _ = call.sip.send_to(bye.as_bytes(), call.from).await;
        sent += 1;
        let wait = tokio::time::sleep(interval.min(TIMER_F.saturating_sub(started.elapsed())));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                r = call.sip.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    let Some(cseq) = header(&msg, "CSeq") else { continue };
                    let code = msg.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)).unwrap_or("");
                    if cseq.ends_with("INVITE") && code.starts_with('2') {
                        let _ = call.sip.send_to(ack(local, id, &call.ok).as_bytes(), from).await;
                    } else if cseq.ends_with("BYE") && !code.starts_with('1') && !code.is_empty() {
                        return (code.to_string(), sent);
                    }
                }
            }
        }
        interval = (interval * 2).min(T2);
    }
    ("none".into(), sent)
}

/// A sending leg: socket, destination, payload type, SSRC.
type Stream = (Arc<UdpSocket>, SocketAddr, u8, u32);

/// What one steady period measured.
struct Measured {
    sent: u64,
    received: u64,
    secs: f64,
    /// CPU of the process measured (this one, or the server's).
    cpu_us: f64,
    /// One-way latencies in µs (empty when payloads are transcoded).
    latency: Vec<f64>,
}

/// Every leg sends 50 packets/s to its peer and receives; counts, latencies and the CPU of
/// `cpu_of` (None: this process) are taken over the steady period after WARMUP.
async fn measure(legs: Vec<Leg>, secs: u64, with_latency: bool, cpu_of: Option<u32>) -> Measured {
    let epoch = Instant::now();
    let t_start = tokio::time::Instant::from_std(epoch) + WARMUP;
    let t_end = t_start + Duration::from_secs(secs);
    // One sender task for all legs, ticking every millisecond: leg i sends on the ticks
    // i mod 20, so the packets of a 20 ms period are spread and the generator wakes 1000
    // times a second rather than once per packet.
    let slots_n = PACKET_MS as usize;
    let mut slots: Vec<Vec<Stream>> = vec![Vec::new(); slots_n];
    for (i, leg) in legs.iter().enumerate() {
        slots[i % slots_n].push((leg.socket.clone(), leg.peer, leg.pt, rand::random()));
    }
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::from_std(epoch),
            Duration::from_millis(1),
        );
        let mut p = [0xffu8; 172];
        p[0] = 0x80;
        let mut sent = 0u64;
        for k in 0usize.. {
            let at = tick.tick().await;
            if at >= t_end {
                break;
            }
            let seq = (k / slots_n) as u32;
            for (s, peer, pt, ssrc) in &slots[k % slots_n] {
                p[1] = *pt;
                p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
                p[4..8].copy_from_slice(&(seq * 160).to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let ns = epoch.elapsed().as_nanos() as u64;
                p[12..20].copy_from_slice(&ns.to_be_bytes());
                let _ = s.send_to(&p, *peer).await;
                if at >= t_start {
                    sent += 1;
                }
            }
        }
        sent
    });
    let mut receivers = Vec::new();
    for leg in legs {
        let s = leg.socket;
        let receiver = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut received = 0u64;
            let mut lat = Vec::new();
            let end = tokio::time::sleep_until(t_end);
            tokio::pin!(end);
            loop {
                tokio::select! {
                    _ = &mut end => break,
                    r = s.recv_from(&mut buf) => {
                        let Ok((n, _)) = r else { break };
                        let now = epoch.elapsed();
                        // RTP of PCMU or PCMA only: a server's RTCP (to the RTP port + 1, which
                        // may be another leg's socket) is not a relayed packet.
                        if n < 20
                            || !matches!(buf[1] & 0x7f, 0 | 8)
                            || tokio::time::Instant::now() < t_start
                        {
                            continue;
                        }
                        received += 1;
                        if with_latency {
                            let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                            let now = now.as_nanos() as u64;
                            if sent <= now {
                                lat.push((now - sent) as f64 / 1000.0);
                            }
                        }
                    }
                }
            }
            (received, lat)
        });
        receivers.push(receiver);
    }
    tokio::time::sleep_until(t_start).await;
    let cpu0 = cpu_us(cpu_of);
    let w0 = Instant::now();
    tokio::time::sleep_until(t_end).await;
    let cpu = cpu_us(cpu_of) - cpu0;
    let wall = w0.elapsed().as_secs_f64();
    let mut m = Measured {
        sent: 0,
        received: 0,
        secs: wall,
        cpu_us: cpu,
        latency: Vec::new(),
    };
    m.sent = sender.await.unwrap_or(0);
    for receiver in receivers {
        let (r, lat) = receiver.await.unwrap_or_default();
        m.received += r;
        m.latency.extend(lat);
    }
    m
}

/// Where the calls go (from the command line).
enum Target {
    /// pivotd in this process.
    InProcess,
    /// The built pivotd binary in a child process.
    Process,
    /// A SIP server already running: where it listens, its pid, the callee port it dials.
    External {
        sip: SocketAddr,
        pid: u32,
        callee_port: u16,
    },
}

/// The server of one run.
enum Server {
    InProcess(pivotd::server::ServerHandle),
    /// The child pivotd (killed when dropped, also on a panic) and its API address.
    Process(Killed, SocketAddr),
    External(u32),
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// The process whose CPU is measured (None: this one).
    fn pid(&self) -> Option<u32> {
        match self {
            Server::InProcess(_) => None,
            Server::Process(child, _) => Some(child.0.id()),
            Server::External(pid) => Some(*pid),
        }
    }

    /// The calls it still holds, where it can tell.
    fn active_calls(&self) -> Option<usize> {
        match self {
            Server::InProcess(s) => Some(s.active_calls()),
            Server::Process(_, api) => {
                flood_common::metric(*api, "pivotd_calls_active").map(|v| v as usize)
            }
            Server::External(_) => None,
        }
    }

    /// The requests of `method` its endpoint read (retransmissions not counted), where it
    /// can tell.
    fn requests_read(&self, method: rsip::Method) -> Option<u64> {
        match self {
            Server::InProcess(s) => Some(
                s.endpoint
                    .stats
                    .messages
                    .requests()
                    .into_iter()
                    .find(|(d, m, _)| *d == Direction::In && *m == method)
                    .map_or(0, |(_, _, n)| n),
            ),
            Server::Process(_, api) => flood_common::metric_labelled(
                *api,
                "pivotd_sip_requests_total",
                &["direction=\"in\"", &format!("method=\"{method}\"")],
            )
            .map(|v| v as u64),
            Server::External(_) => None,
        }
    }

    /// Its SIP socket's receive buffer: what the kernel gave in this process; for a child
    /// pivotd, what its configuration asked (`asked`: the key, None for pivotd's default).
    fn sip_receive_buffer(&self, asked: Option<u64>) -> String {
        match self {
            Server::InProcess(s) => {
                format!("{:?} bytes", s.endpoint.transport().udp_receive_buffers())
            }
            Server::Process(..) => match asked {
                Some(b) => format!("asked {b} bytes"),
                None => "asked pivotd's default".to_string(),
            },
            Server::External(_) => "?".to_string(),
        }
    }
}

/// The pivotd configuration of the bench: number 6000 bridges (`resources`) to `gateway`;
/// media ports from `media_ports()`; `[sip] udp_receive_buffer_bytes` = `rcvbuf` when given.
fn pivotd_config(
    dir: &std::path::Path,
    gateway: SocketAddr,
    rcvbuf: Option<u64>,
) -> std::path::PathBuf {
    // The bench is a load generator: trusted, held to the global limits only.
    let mut sip = "max_calls_per_second = 100000\ntrusted_sources = [\"127.0.0.1\"]".to_string();
    if let Some(bytes) = rcvbuf {
        sip.push_str(&format!("\nudp_receive_buffer_bytes = {bytes}"));
    }
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "resources", data = {{ to_did = "5551234" }} }}
[[accounts.resources]]
id = "carrier1"
gateway = "sip:{gateway}"
"#
    );
    flood_common::write_config(dir, &sip, media_ports(), "rtp_timeout_s = 0", &callflows)
}

/// pivotd's RTP port range: `BRIDGE_RELAY_PORTS=MIN-MAX`, by default the benches' 50000-59999
/// (`flood_common::MEDIA_PORTS`). Each call holds two pairs (caller's and callee's session).
fn media_ports() -> (u16, u16) {
    let Ok(range) = std::env::var("BRIDGE_RELAY_PORTS") else {
        return flood_common::MEDIA_PORTS;
    };
    range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .filter(|(a, b)| a < b)
        .unwrap_or_else(|| panic!("BRIDGE_RELAY_PORTS={range}: expected MIN-MAX"))
}

/// `BRIDGE_RELAY_SIP_RCVBUF=BYTES`: pivotd's `udp_receive_buffer_bytes` (0: the kernel's
/// default, as pivotd had before the key); unset, None (pivotd's default).
fn sip_rcvbuf() -> Option<u64> {
    let v = std::env::var("BRIDGE_RELAY_SIP_RCVBUF").ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("BRIDGE_RELAY_SIP_RCVBUF={v}: a number of bytes")),
    )
}

/// Datagrams the kernel dropped for the UDP socket bound to `addr` because its receive
/// buffer was full (None when not found).
fn udp_drops(addr: SocketAddr) -> Option<u64> {
    flood_common::udp_drops(&[addr]).pop().flatten()
}

/// N bridged calls through `target` (a fresh pivotd unless external) whose callee answers
/// `codec`; returns set-up times (µs), the total set-up wall time, and the steady-period
/// figures.
async fn relay_run(n: usize, secs: u64, codec: u8, target: &Target) -> (Vec<f64>, f64, Measured) {
    let callee_port = match target {
        Target::External { callee_port, .. } => *callee_port,
        _ => 0,
    };
    let rcvbuf = sip_rcvbuf();
    if rcvbuf.is_some() && matches!(target, Target::External { .. }) {
        eprintln!("BRIDGE_RELAY_SIP_RCVBUF is for pivotd: ignored with --target");
    }
    let callee_sip = Arc::new(
        UdpSocket::bind(("127.0.0.1", callee_port))
            .await
            .unwrap_or_else(|e| panic!("callee on 127.0.0.1:{callee_port}: {e}")),
    );
    // The load generator's one SIP socket takes the server's N INVITEs and N BYEs at once: a
    // buffer as large as pivotd's, so the generator is not where datagrams are lost.
    let _ = set_receive_buffer(callee_sip.as_ref(), 4 << 20);
    let gateway = callee_sip.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let callee_task = tokio::spawn(callee(callee_sip, codec, tx));
    let dir = std::env::temp_dir().join(format!("pivotd-bridge-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (server, addr) = match target {
        Target::InProcess => {
            let cfg = pivotd::callflow::check::load(&pivotd_config(&dir, gateway, rcvbuf))
                .expect("bench config");
            let server = pivotd::server::start(Arc::new(cfg)).await.expect("server");
            let addr = server.udp[0];
            (Server::InProcess(server), addr)
        }
        Target::Process => {
            let (child, udp, api) = flood_common::start(&pivotd_config(&dir, gateway, rcvbuf));
            (Server::Process(Killed(child), api), udp)
        }
        Target::External { sip, pid, .. } => (Server::External(*pid), *sip),
    };

    let t0 = Instant::now();
    let placing: Vec<_> = (0..n).map(|i| tokio::spawn(place(addr, i))).collect();
    let mut calls = Vec::new();
    for p in placing {
        if let Ok(Some(c)) = p.await {
            calls.push(c);
        }
    }
    let setup_wall = t0.elapsed().as_secs_f64();
    let setup: Vec<f64> = calls.iter().map(|c| c.setup_us).collect();
    let mut legs: Vec<Leg> = Vec::new();
    while legs.len() < calls.len() {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some(l)) => legs.push(l),
            _ => break,
        }
    }
    if calls.len() < n || legs.len() < n {
        eprintln!(
            "only {} of {n} calls answered ({} callee legs)",
            calls.len(),
            legs.len()
        );
    }
    legs.extend(calls.iter().map(|c| Leg {
        socket: c.leg.socket.clone(),
        peer: c.leg.peer,
        pt: 0,
    }));
    let m = measure(legs, secs, codec == 0, server.pid()).await;
    // Every caller hangs up at once (the first BYEs leave in one burst), each BYE its own
    // client transaction.
    let calls: Vec<Arc<Call>> = calls.into_iter().map(Arc::new).collect();
    let hanging_up: Vec<_> = calls
        .iter()
        .map(|c| tokio::spawn(hang_up(c.clone())))
        .collect();
    let mut answers: std::collections::BTreeMap<String, usize> = Default::default();
    let mut sends: std::collections::BTreeMap<u32, usize> = Default::default();
    for h in hanging_up {
        let (code, sent) = h.await.unwrap_or_else(|_| ("panic".into(), 0));
        *answers.entry(code).or_default() += 1;
        *sends.entry(sent).or_default() += 1;
    }
    eprintln!("BYEs answered: {answers:?}; calls by times their BYE was sent: {sends:?}");
    // Wait (at most 3 s) for every call to end, and report what is left.
    let ending = Instant::now();
    if server.active_calls().is_some() {
        while server.active_calls().unwrap_or(0) > 0 && ending.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "calls left {:.1} s after BYE: {}",
            ending.elapsed().as_secs_f64(),
            server
                .active_calls()
                .map_or("?".to_string(), |c| c.to_string())
        );
    }
    // Where BYEs were lost: the kernel's drops on each socket (a full receive buffer), and
    // what the server's endpoint read (pivotd only).
    let known = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    let caller_drops: u64 = calls
        .iter()
        .filter_map(|c| c.sip.local_addr().ok().and_then(udp_drops))
        .sum();
    let byes_sent: usize = sends.iter().map(|(k, v)| *k as usize * v).sum();
    let server_side = match &server {
        Server::External(_) => format!(
            "the server's endpoint: not known; its SIP socket {addr}: datagrams dropped by the \
             kernel {}",
            known(udp_drops(addr))
        ),
        _ => format!(
            "read by pivotd {}; ACKs read {} of {}; pivotd's SIP socket: receive buffer {}, \
             datagrams dropped by the kernel {}",
            known(server.requests_read(rsip::Method::Bye)),
            known(server.requests_read(rsip::Method::Ack)),
            calls.len(),
            server.sip_receive_buffer(rcvbuf),
            known(udp_drops(addr)),
        ),
    };
    eprintln!(
        "BYEs sent {byes_sent}, {server_side}; dropped at the callee's socket {}, at the \
         callers' {caller_drops}",
        known(udp_drops(gateway)),
    );
    drop(server);
    callee_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    (setup, setup_wall, m)
}

/// The same senders, N pairs of sockets sending to each other directly.
async fn baseline(n: usize, secs: u64) -> Measured {
    let mut legs = Vec::new();
    for _ in 0..n {
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        legs.push(Leg {
            socket: a,
            peer: pb,
            pt: 0,
        });
        legs.push(Leg {
            socket: b,
            peer: pa,
            pt: 0,
        });
    }
    measure(legs, secs, true, None).await
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn row(name: &str, m: &mut Measured, base_cpu_per_pkt: Option<f64>) -> f64 {
    let per_pkt = m.cpu_us / m.received.max(1) as f64;
    let lat = if m.latency.is_empty() {
        "            -          -          -".to_string()
    } else {
        let max = m.latency.iter().cloned().fold(0.0, f64::max);
        format!(
            "{:>13.0} {:>10.0} {:>10.0}",
            pct(&mut m.latency, 50),
            pct(&mut m.latency, 99),
            max
        )
    };
    let added = base_cpu_per_pkt
        .map(|b| format!("{:>10.2}", per_pkt - b))
        .unwrap_or_else(|| format!("{:>10}", "-"));
    println!(
        "{name:<14} {:>9} {:>9} {:>9.0} {lat} {:>8.1} {:>8.2} {added}",
        m.sent,
        m.received,
        m.received as f64 / m.secs,
        m.cpu_us / m.secs / 1e4,
        per_pkt,
    );
    per_pkt
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    Pcmu,
    Pcma,
}

#[derive(Parser)]
#[command(about = "N bridged calls with RTP both ways through pivotd or another server")]
struct Args {
    /// Concurrent calls.
    #[arg(default_value_t = 100)]
    n: usize,
    /// Seconds of steady period.
    #[arg(default_value_t = 10)]
    secs: u64,
    /// The callee's codec; without it each codec runs in a child process of its own.
    #[arg(value_enum)]
    codec: Option<Codec>,
    /// Passed by cargo bench.
    #[arg(long, hide = true)]
    bench: bool,
    /// Calls go to the built pivotd binary in a child process.
    #[arg(long, conflicts_with = "target")]
    process: bool,
    /// Calls go to the SIP server at this address, which bridges 6000 to the callee.
    #[arg(long, requires_all = ["pid", "callee_port"])]
    target: Option<SocketAddr>,
    /// The process id of the server at --target (its CPU is measured).
    #[arg(long, requires = "target")]
    pid: Option<u32>,
    /// The callee's UDP port on 127.0.0.1 (the one --target dials).
    #[arg(long, requires = "target")]
    callee_port: Option<u16>,
}

impl Args {
    fn target(&self) -> Target {
        match (self.target, self.pid, self.callee_port) {
            (Some(sip), Some(pid), Some(callee_port)) => Target::External {
                sip,
                pid,
                callee_port,
            },
            _ if self.process => Target::Process,
            _ => Target::InProcess,
        }
    }

    /// The options that choose the target, for the child processes.
    fn target_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.process {
            out.push("--process".to_string());
        }
        if let (Some(sip), Some(pid), Some(port)) = (self.target, self.pid, self.callee_port) {
            out.extend([
                "--target".to_string(),
                sip.to_string(),
                "--pid".to_string(),
                pid.to_string(),
                "--callee-port".to_string(),
                port.to_string(),
            ]);
        }
        out
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and a measurement is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bridge_relay: a benchmark; run it with cargo bench --bench bridge_relay");
        return;
    }
    let args = Args::parse();
    let (n, secs) = (args.n, args.secs);
    let target = args.target();
    let codec: u8 = match args.codec {
        Some(Codec::Pcmu) => 0,
        Some(Codec::Pcma) => 8,
        None => {
            // Each relay run in a process of its own: calls a run leaves in pivotd (see the
            // report after BYE) must not share the next run's CPU.
            println!(
                "{n} bridged calls, 50 packets/s per call per direction, {secs} s steady after {} s warm-up",
                WARMUP.as_secs()
            );
            for mode in ["pcmu", "pcma"] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--bench", &n.to_string(), &secs.to_string(), mode])
                    .args(args.target_args())
                    .status()
                    .expect("run the bench in a child process");
                assert!(status.success(), "{mode} run failed");
            }
            match target {
                Target::InProcess => println!(
                    "latency is receive − send time (same clock); CPU is the whole process (pivotd + \
                     load generator) per packet received; 'minus base' is the relay's own cost per \
                     relayed packet (the baseline is measured again in each run's process)"
                ),
                _ => println!(
                    "latency is receive − send time (same clock); the relay rows' CPU is the \
                     server process's alone (/proc/PID/stat, 10 ms ticks) per packet received; \
                     the base row's is the load generator's"
                ),
            }
            return;
        }
    };
    let name = if codec == 8 { "PCMA" } else { "PCMU" };

    let mut base = baseline(n, secs).await;
    let (setup, wall, mut relay) = relay_run(n, secs, codec, &target).await;

    println!("--- callee answers {name}");
    if setup.is_empty() {
        println!("set-up: no call answered");
    } else {
        let s = stats(setup);
        println!(
            "set-up: {} of {n} answered in {:.1} ms; INVITE -> 200 per call µs: mean={:.0} p50={:.0} p99={:.0}",
            s.0,
            wall * 1e3,
            s.1,
            s.2,
            s.3
        );
    }
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>13} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "run",
        "sent",
        "received",
        "pkts/s",
        "lat p50 µs",
        "p99 µs",
        "max µs",
        "CPU %",
        "CPU µs/p",
        "minus base"
    );
    let b = row("direct (base)", &mut base, None);
    let (label, minus_base) = match target {
        Target::InProcess => ("relay", Some(b)),
        Target::Process => ("pivotd", None),
        Target::External { .. } => ("target", None),
    };
    row(&format!("{label} {name}"), &mut relay, minus_base);
    if !relay.latency.is_empty() && !base.latency.is_empty() {
        println!(
            "added latency (relay − direct): p50 {:.0} µs, p99 {:.0} µs",
            pct(&mut relay.latency, 50) - pct(&mut base.latency, 50),
            pct(&mut relay.latency, 99) - pct(&mut base.latency, 99)
        );
    }
}
