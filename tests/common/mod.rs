//! Test harness: a pivotd server on ephemeral loopback ports, an RTP sink standing in for the
//! caller's media port, SIPp runs, and a raw SIP socket for hand-written messages.
#![allow(dead_code)]

pub mod api;
pub mod baresip;
pub mod binary;
pub mod bridge;
pub mod cluster;
pub mod digest;
pub mod http;
pub mod kamailio;
pub mod pjsua;
pub mod postgres;
pub mod presence;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pivotd::config::Config;
use pivotd::server::{self, ServerHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;

pub const ACCOUNT: &str = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn scenario(name: &str) -> PathBuf {
    repo().join("sipp-scenarios").join(name)
}

/// A media port range of its own for each server, so parallel tests rarely meet.
fn port_range() -> (u16, u16) {
    let base = 20000 + 2 * (rand::random::<u16>() % 4500);
    (base, base + 99)
}

/// The TOML of a test server: SIP on port 0, callflows given by `callflows` (TOML
/// `[[accounts.callflows]]` tables), extra `[sip]`/`[media]` keys in `sip_extra`/`media_extra`.
pub fn config_toml(callflows: &str, sip_extra: &str, media_extra: &str) -> String {
    let (lo, hi) = port_range();
    format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
{sip_extra}
[api]
listen = "127.0.0.1:0"
[store]
sqlite = ":memory:"
[media]
ip = "127.0.0.1"
port_min = {lo}
port_max = {hi}
{media_extra}
[[accounts]]
id = "{ACCOUNT}"
realm = "pivotd.test"
{callflows}
"#
    )
}

/// `toml` (a [`config_toml`]) with the media port range `lo..=hi` instead of the usual
/// 100-port window: for tests that hold more calls at once than 50 port pairs allow.
pub fn with_port_range(toml: &str, lo: u16, hi: u16) -> String {
    toml.lines()
        .map(|l| {
            if l.starts_with("port_min = ") {
                format!("port_min = {lo}")
            } else if l.starts_with("port_max = ") {
                format!("port_max = {hi}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A raw INVITE from `from` for `number` whose SDP sends media to `media`; its Via branch is
/// `z9hG4bK{call_id}` and its From tag `f{call_id}` (an ACK of a failure reuses them).
pub fn raw_invite(from: SocketAddr, number: &str, call_id: &str, media: SocketAddr) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n",
        ip = media.ip(),
        port = media.port()
    );
    format!(
        "INVITE sip:{number}@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:caller@{from}>;tag=f{call_id}\r\nTo: <sip:{number}@pivotd.test>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:caller@{from}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

pub struct TestServer {
    pub handle: ServerHandle,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

pub async fn start(toml: &str) -> TestServer {
    let cfg = match Config::from_toml_str(toml, &repo()) {
        Ok(c) => c,
        Err(e) => panic!("test config refused: {e}\n{toml}"),
    };
    // The binary raises the open-files soft limit at start (`main`); an in-process server
    // must too, or a shell's 1024 caps a test's calls at a few hundred.
    pivotd::fdlimit::raise().expect("open-files limit raised");
    let handle = server::start(Arc::new(cfg)).await.expect("server starts");
    let udp = handle.udp[0];
    let tcp = handle.tcp[0];
    TestServer { handle, udp, tcp }
}

/// Collects the RTP packets pivotd sends to the caller's media address.
pub struct RtpSink {
    pub addr: SocketAddr,
    packets: Arc<Mutex<Vec<RtpPacket>>>,
    task: tokio::task::JoinHandle<()>,
    pub socket: Arc<UdpSocket>,
}

#[derive(Clone, Debug)]
pub struct RtpPacket {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    pub from: SocketAddr,
}

impl RtpSink {
    pub async fn bind() -> RtpSink {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let packets = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (socket.clone(), packets.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let b = &buf[..n];
                if n < 12 || b[0] >> 6 != 2 {
                    continue;
                }
                let cc = (b[0] & 0x0f) as usize;
                let start = 12 + 4 * cc;
                if n < start {
                    continue;
                }
                p.lock().unwrap().push(RtpPacket {
                    pt: b[1] & 0x7f,
                    marker: b[1] & 0x80 != 0,
                    seq: u16::from_be_bytes([b[2], b[3]]),
                    ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                    payload: b[start..].to_vec(),
                    from,
                });
            }
        });
        RtpSink {
            addr,
            packets,
            task,
            socket,
        }
    }

    pub fn packets(&self) -> Vec<RtpPacket> {
        self.packets.lock().unwrap().clone()
    }

    /// The audio payload bytes in arrival order.
    pub fn audio(&self) -> Vec<u8> {
        self.packets()
            .iter()
            .filter(|p| p.pt == 0 || p.pt == 8)
            .flat_map(|p| p.payload.clone())
            .collect()
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct SippRun {
    pub ok: bool,
    pub output: String,
}

impl SippRun {
    /// SIPp exited 0 and its statistics count `calls` calls successful, none failed.
    pub fn assert_all_completed(&self, calls: u32) {
        assert!(self.ok, "sipp failed:\n{}", self.output);
        assert_eq!(
            sipp_stat(&self.output, "Successful call"),
            Some(calls),
            "{}",
            self.output
        );
        assert_eq!(
            sipp_stat(&self.output, "Failed call"),
            Some(0),
            "{}",
            self.output
        );
    }
}

/// The cumulative count of one of SIPp's closing statistics rows ("Successful call" …).
pub fn sipp_stat(output: &str, row: &str) -> Option<u32> {
    output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(row))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|n| n.trim().parse().ok())
}

/// A free UDP port pair for SIPp's media sockets (it binds N and N+2).
fn free_media_port() -> u16 {
    for _ in 0..200 {
        let p = 30000 + 2 * (rand::random::<u16>() % 10000);
        let a = std::net::UdpSocket::bind(("127.0.0.1", p));
        let b = std::net::UdpSocket::bind(("127.0.0.1", p + 2));
        if a.is_ok() && b.is_ok() {
            return p;
        }
    }
    panic!("no free port for SIPp media")
}

/// Runs one SIPp scenario call against `target`. SIPp is a required tool: a missing binary
/// fails the test.
pub async fn sipp(scenario_file: &str, tcp: bool, target: SocketAddr, args: &[&str]) -> SippRun {
    sipp_calls(scenario_file, tcp, target, 1, args).await
}

/// One SIPp `basic_call.xml` call to `number` at `target`, its audio sent to a sink the
/// test does not read.
pub async fn basic_call(target: SocketAddr, number: &str) -> SippRun {
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    sipp(
        "basic_call.xml",
        false,
        target,
        &["-s", number, "-key", "rtp_port", &port],
    )
    .await
}

/// Runs `calls` calls of a SIPp scenario (pass `-r` in `args` for the rate).
pub async fn sipp_calls(
    scenario_file: &str,
    tcp: bool,
    target: SocketAddr,
    calls: u32,
    args: &[&str],
) -> SippRun {
    sipp_calls_from("127.0.0.1", scenario_file, tcp, target, calls, args).await
}

/// [`sipp_calls`] from another loopback source address (`127.0.0.0/8`), as a second caller.
pub async fn sipp_calls_from(
    source: &str,
    scenario_file: &str,
    tcp: bool,
    target: SocketAddr,
    calls: u32,
    args: &[&str],
) -> SippRun {
    // A port of its own: without -p SIPp takes 5060 when it is free.
    let port = if tcp {
        free_tcp_port()
    } else {
        free_udp_port()
    }
    .to_string();
    let sipp = Sipp {
        bin: Path::new("sipp"),
        transport: &["-t", if tcp { "t1" } else { "u1" }, "-p", &port],
        install: "apt-get install sip-tester",
    };
    sipp.run(source, scenario_file, target, calls, args).await
}

/// Where the TLS-capable SIPp is: `$PIVOTD_SIPP_TLS`, or where `scripts/sipp-tls.sh` installs
/// it (Debian's sipp has no TLS). A missing binary fails the test.
pub fn sipp_tls_binary() -> PathBuf {
    let path = std::env::var_os("PIVOTD_SIPP_TLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/lib/pivotd-tests/sipp-tls/sipp"));
    if !path.is_file() {
        panic!(
            "no TLS-capable SIPp at {}: run scripts/sipp-tls.sh (it builds Debian's sip-tester \
             source with TLS), or set PIVOTD_SIPP_TLS",
            path.display()
        );
    }
    path
}

/// [`sipp_calls`] over TLS (`-t l1`) with the TLS-capable SIPp ([`sipp_tls_binary`]); `args`
/// give its `-tls_cert`/`-tls_key` (absolute paths: SIPp runs in a directory of its own).
/// TLS 1.2: SIPp 3.6.1 stalls after a TLS 1.3 handshake (it reads the server's session
/// ticket on a blocking socket and waits there for more).
pub async fn sipp_tls_calls(
    scenario_file: &str,
    target: SocketAddr,
    calls: u32,
    args: &[&str],
) -> SippRun {
    let bin = sipp_tls_binary();
    // Its own TCP port: SIPp listens on 5060 by default and, over TLS, fails when that is
    // taken.
    let port = free_tcp_port().to_string();
    let sipp = Sipp {
        bin: &bin,
        transport: &["-t", "l1", "-tls_version", "1.2", "-p", &port],
        install: "scripts/sipp-tls.sh",
    };
    sipp.run("127.0.0.1", scenario_file, target, calls, args)
        .await
}

/// A SIPp binary, the transport it runs over (`-t …`), and how to install it.
struct Sipp<'a> {
    bin: &'a Path,
    transport: &'a [&'a str],
    install: &'a str,
}

impl Sipp<'_> {
    /// Runs `calls` calls of a SIPp scenario from `source`; a missing binary fails the test.
    async fn run(
        &self,
        source: &str,
        scenario_file: &str,
        target: SocketAddr,
        calls: u32,
        args: &[&str],
    ) -> SippRun {
        let calls = calls.to_string();
        let dir = tempdir();
        let path = scenario(scenario_file);
        let mp = free_media_port().to_string();
        let mut cmd = tokio::process::Command::new("timeout");
        cmd.arg("60")
            .arg(self.bin)
            .arg("-sf")
            .arg(&path)
            .args(["-m", &calls, "-i", source, "-mp", &mp, "-nostdin"])
            .args(["-timeout", "40s", "-timeout_error", "-trace_err"])
            .args(self.transport)
            .args(args)
            .arg(target.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().await.expect("run timeout/sipp");
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.status.code() == Some(127) || output.contains("sipp: No such file") {
            panic!(
                "{} is not installed ({}): {output}",
                self.bin.display(),
                self.install
            );
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains("errors") {
                    output.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        SippRun {
            ok: out.status.success(),
            output,
        }
    }
}

/// A SIPp UAS running one call of a scenario in the background, on its own port: the far
/// end pivotd dials (a carrier). Its messages are traced for the test to read.
pub struct SippUas {
    pub port: u16,
    child: tokio::process::Child,
    dir: PathBuf,
}

impl SippUas {
    /// Starts `scenario` (a path) for one call, with more SIPp arguments (`-key NAME VALUE`).
    pub fn start(scenario: &Path, args: &[&str]) -> SippUas {
        let dir = tempdir();
        let port = free_udp_port();
        // Its screen goes to a file: a pipe nobody reads would stall it once full.
        let screen = std::fs::File::create(dir.join("screen.log")).unwrap();
        let child = tokio::process::Command::new("timeout")
            .args(["30", "sipp", "-sf"])
            .arg(scenario)
            .args(["-m", "1", "-i", "127.0.0.1", "-t", "u1", "-nostdin"])
            .args([
                "-p",
                &port.to_string(),
                "-mp",
                &free_media_port().to_string(),
            ])
            .args(["-trace_err", "-trace_msg", "-message_file", "messages.log"])
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(screen.try_clone().unwrap())
            .stderr(screen)
            .kill_on_drop(true)
            .spawn()
            .expect("run timeout");
        SippUas { port, child, dir }
    }

    /// The messages SIPp sent and received so far.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.join("messages.log")).unwrap_or_default()
    }

    /// Waits for the call to end: whether SIPp's scenario passed, and what it printed.
    pub async fn finish(mut self) -> SippRun {
        let status = self.child.wait().await.expect("sipp ran");
        let mut output = std::fs::read_to_string(self.dir.join("screen.log")).unwrap_or_default();
        if status.code() == Some(127) {
            panic!("sipp is not installed (apt-get install sip-tester): {output}");
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains("errors") {
                    output.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        SippRun {
            ok: status.success(),
            output,
        }
    }
}

impl Drop for SippUas {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("pivotd-test-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The G.711 μ-law bytes pivotd sends for a shipped prompt.
pub fn prompt_pcmu(id: &str) -> Vec<u8> {
    let lib = pivotd::media::prompt::PromptLibrary::new(Some(repo().join("media")));
    let p = lib.get(id).expect("prompt");
    p.payload(pivotd::media::codec::Codec::Pcmu).to_vec()
}

/// Waits until `f` holds, up to `secs` seconds.
/// Waits (10 s at most) until `device` of the test account has a binding, and returns its
/// transport; `log` (the phone's) is shown when it did not register.
pub async fn registered_transport(
    server: &TestServer,
    device: &str,
    log: impl Fn() -> String,
) -> String {
    let bindings = || server.handle.registrar.bindings_of(ACCOUNT, device);
    let bound = eventually(10, || !bindings().is_empty()).await;
    assert!(bound, "{device} did not register:\n{}", log());
    bindings()[0].transport.clone()
}

pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A raw SIP peer over UDP, TCP or TLS, for messages SIPp cannot send.
pub enum RawSip {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
    Tls(Box<TlsStream<TcpStream>>, Vec<u8>),
}

impl RawSip {
    pub async fn udp(target: SocketAddr) -> RawSip {
        RawSip::udp_from("127.0.0.1", target).await
    }

    /// Over UDP from a loopback address of its own (`"127.0.0.4"`).
    pub async fn udp_from(ip: &str, target: SocketAddr) -> RawSip {
        let s = UdpSocket::bind((ip.parse::<std::net::IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        RawSip::Udp(s, target)
    }

    pub async fn tcp(target: SocketAddr) -> RawSip {
        RawSip::Tcp(TcpStream::connect(target).await.unwrap(), Vec::new())
    }

    /// Over TLS to `target`, trusting `ca` (the server name is `localhost`).
    pub async fn tls(target: SocketAddr, ca: &tls::TestCa) -> RawSip {
        let tcp = TcpStream::connect(target).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(ca.client_config());
        let name = "localhost".try_into().unwrap();
        let stream = connector.connect(name, tcp).await.expect("TLS handshake");
        RawSip::Tls(Box::new(stream), Vec::new())
    }

    /// The certificate the TLS server presented (DER).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            RawSip::Tls(s, _) => Some(s.get_ref().1.peer_certificates()?.first()?.to_vec()),
            _ => None,
        }
    }

    pub fn local(&self) -> SocketAddr {
        match self {
            RawSip::Udp(s, _) => s.local_addr().unwrap(),
            RawSip::Tcp(s, _) => s.local_addr().unwrap(),
            RawSip::Tls(s, _) => s.get_ref().0.local_addr().unwrap(),
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            RawSip::Udp(..) => "UDP",
            RawSip::Tcp(..) => "TCP",
            RawSip::Tls(..) => "TLS",
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            RawSip::Udp(s, t) => {
                s.send_to(bytes, *t).await.unwrap();
            }
            RawSip::Tcp(s, _) => {
                let _ = s.write_all(bytes).await;
            }
            RawSip::Tls(s, _) => {
                let _ = s.write_all(bytes).await;
                let _ = s.flush().await;
            }
        }
    }

    /// Sends over UDP at once, without giving the runtime a turn: on a current-thread
    /// runtime nothing else (pivotd's receive task included) runs meanwhile.
    pub fn send_now(&self, bytes: &[u8]) {
        match self {
            RawSip::Udp(s, t) => {
                s.try_send_to(bytes, *t).expect("a UDP send on loopback");
            }
            RawSip::Tcp(..) | RawSip::Tls(..) => panic!("send_now is for UDP"),
        }
    }

    /// The next SIP message, or None after `ms` milliseconds.
    pub async fn recv(&mut self, ms: u64) -> Option<String> {
        let fut = async {
            match self {
                RawSip::Udp(s, _) => {
                    let mut buf = vec![0u8; 65536];
                    let (n, _) = s.recv_from(&mut buf).await.ok()?;
                    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
                }
                RawSip::Tcp(s, buf) => read_message(s, buf).await,
                RawSip::Tls(s, buf) => read_message(s.as_mut(), buf).await,
            }
        };
        tokio::time::timeout(Duration::from_millis(ms), fut)
            .await
            .ok()
            .flatten()
    }

    /// Receives until a message whose first line contains `first_line` (skipping others).
    pub async fn expect(&mut self, first_line: &str, ms: u64) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let m = self.recv(left.as_millis() as u64).await?;
            if m.lines().next().unwrap_or("").contains(first_line) {
                return Some(m);
            }
        }
    }
}

/// The next whole message read from a stream into `buf`; None when it closes.
pub async fn read_message<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(msg) = take_message(buf) {
            return Some(msg);
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One whole message (by Content-Length) from a TCP buffer.
fn take_message(buf: &mut Vec<u8>) -> Option<String> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim().to_ascii_lowercase();
            (n == "content-length" || n == "l").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if buf.len() < end + len {
        return None;
    }
    let msg: Vec<u8> = buf.drain(..end + len).collect();
    Some(String::from_utf8_lossy(&msg).into_owned())
}

/// A header's value from a message text (first occurrence, case-insensitive name).
pub fn header(msg: &str, name: &str) -> Option<String> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The status code of a response text.
pub fn status(msg: &str) -> u16 {
    msg.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A UDP port on 127.0.0.1 free a moment ago (for a peer process such as SIPp to bind).
/// A TCP port on 127.0.0.1 free now.
pub fn free_tcp_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Waits up to 15 s for the server to be back to idle after calls — no call, server or client
/// transaction or dialog left, and the media use as `before` — and fails with what is left.
pub async fn assert_drained(server: &TestServer, before: pivotd::server::MediaUse) {
    assert_drained_within(server, before, 15).await;
}

/// [`assert_drained`] waiting up to `secs` (an INVITE client transaction answered with a
/// failure over UDP lingers Timer D, at least 32 s, RFC 3261 §17.1.1.2).
pub async fn assert_drained_within(
    server: &TestServer,
    before: pivotd::server::MediaUse,
    secs: u64,
) {
    use std::sync::atomic::Ordering;
    let stats = &server.handle.endpoint.stats;
    let drained = eventually(secs, || {
        server.handle.active_calls() == 0
            && stats.live_server_transactions.load(Ordering::Relaxed) == 0
            && stats.live_client_transactions.load(Ordering::Relaxed) == 0
            && stats.live_dialogs.load(Ordering::Relaxed) == 0
            && server.handle.media_use() == before
    })
    .await;
    assert!(
        drained,
        "left behind: calls {}, server tx {}, client tx {}, dialogs {}, media {:?} (was {:?})",
        server.handle.active_calls(),
        stats.live_server_transactions.load(Ordering::Relaxed),
        stats.live_client_transactions.load(Ordering::Relaxed),
        stats.live_dialogs.load(Ordering::Relaxed),
        server.handle.media_use(),
        before
    );
}

/// A random token for Call-IDs and tags.
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The To tag of a message text.
pub fn to_tag(msg: &str) -> Option<String> {
    let to = header(msg, "To")?;
    to.split(';')
        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_string))
}

/// The body of a message text.
pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// The first SDP line of a message starting with `prefix`.
pub fn sdp_line<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    body(msg).lines().find(|l| l.starts_with(prefix))
}

/// The `m=audio` line of a message's SDP.
pub fn m_audio(msg: &str) -> String {
    sdp_line(msg, "m=audio")
        .unwrap_or_else(|| panic!("no m=audio in:\n{msg}"))
        .trim()
        .to_string()
}

/// pivotd's RTP address, from the m= line of its SDP.
pub fn media_addr(msg: &str) -> SocketAddr {
    let port: u16 = m_audio(msg)
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad m= line in:\n{msg}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An RFC 4733 telephone-event packet (PT 101).
pub fn dtmf_packet(seq: u16, ts: u32, marker: bool, code: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, 101 | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[code, if end { 0x8a } else { 0x0a }]);
    p.extend_from_slice(&duration.to_be_bytes());
    p
}

/// GET `path` on the server's API over a fresh connection: the status and the whole response.
pub async fn api_get(server: &TestServer, path: &str) -> (u16, String) {
    http_get(server.handle.api.expect("the API listens"), path).await
}

/// GET `path` on an HTTP server at `addr` (a pivotd API) over a fresh connection: the status
/// and the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    (status(&out), out)
}

/// The value of one sample line of a `/metrics` text, `name{labels}` exactly as written
/// (pivotd's samples are counts).
pub fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

/// The timeline lines (`at` and text) of a call's event log, once the writer queue is flushed,
/// read from the store as the events API reads them.
pub async fn event_lines(server: &TestServer, call_id: &str) -> Vec<String> {
    let store = server.handle.store.clone();
    let call_id = call_id.to_string();
    tokio::task::spawn_blocking(move || {
        store.flush().unwrap();
        store.call_events(ACCOUNT, &call_id).unwrap()
    })
    .await
    .unwrap()
    .iter()
    .map(|e| {
        e.to_api_json()["line"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
    .collect()
}

/// Whether the last of a call's timeline `lines` reads `text` after its time.
pub fn ends_with_line(lines: &[String], text: &str) -> bool {
    lines
        .last()
        .and_then(|l| l.split_once(' '))
        .is_some_and(|(_, t)| t == text)
}

/// The debug records the server stored for a call, once its writer queue is flushed (the
/// store's reads block: off the async threads).
pub async fn stored_records(server: &TestServer, call_id: &str) -> Vec<pivotd::store::DebugRecord> {
    let store = server.handle.store.clone();
    let call_id = call_id.to_string();
    tokio::task::spawn_blocking(move || {
        store.flush().unwrap();
        store.debug_records(ACCOUNT, &call_id).unwrap()
    })
    .await
    .unwrap()
}
