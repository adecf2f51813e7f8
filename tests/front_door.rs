//! The SIP front door against one hostile source at a time (issue 7): scanners, sources that
//! collect 404s, too many calls or TCP connections from one address, forged log lines.
//! Each hostile source is its own loopback address (127.0.0.0/8), so the well-behaved caller
//! on 127.0.0.1 shows what the rest of the world still gets.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, UdpSocket};

const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "sleep", data = { duration = 20 } }
"#;

/// A UDP peer on a loopback source address of its own.
struct Peer {
    sock: UdpSocket,
    target: SocketAddr,
}

impl Peer {
    async fn from(ip: &str, target: SocketAddr) -> Peer {
        let sock = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        Peer { sock, target }
    }

    async fn send(&self, msg: &str) {
        self.sock
            .send_to(msg.as_bytes(), self.target)
            .await
            .unwrap();
    }

    /// The next message, or None after `ms`.
    async fn recv(&self, ms: u64) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        let got = tokio::time::timeout(Duration::from_millis(ms), self.sock.recv_from(&mut buf));
        let (n, _) = got.await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends a request and waits for its final response (provisional ones, and
    /// retransmitted answers to earlier requests, skipped), or None after `ms`.
    async fn ask(&self, msg: &str, ms: u64) -> Option<u16> {
        self.send(msg).await;
        let call_id = header(msg, "Call-ID");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = self.recv(left.as_millis() as u64).await?;
            if header(&answer, "Call-ID") == call_id && status(&answer) >= 200 {
                return Some(status(&answer));
            }
        }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
}

fn options(from: SocketAddr, user_agent: &str) -> String {
    let id = token();
    format!(
        "OPTIONS sip:pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{id};rport\r\n\
         From: <sip:probe@{from}>;tag={id}\r\nTo: <sip:pivotd.test>\r\nCall-ID: {id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite(from: SocketAddr, number: &str) -> String {
    let id = token();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n",
        ip = from.ip()
    );
    format!(
        "INVITE sip:{number}@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{id};rport\r\n\
         From: <sip:caller@{from}>;tag={id}\r\nTo: <sip:{number}@pivotd.test>\r\nCall-ID: {id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:caller@{from}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_is_not_answered_and_its_address_is_blocked() {
    let server = start(&config_toml(FLOWS, "", "")).await;
    let scanner = Peer::from("127.0.0.4", server.udp).await;
    scanner
        .send(&options(scanner.local(), "friendly-scanner"))
        .await;
    assert_eq!(scanner.recv(500).await, None, "a scanner got an answer");
    // Its address is blocked now: even a plain OPTIONS from it is dropped …
    let same = Peer::from("127.0.0.4", server.udp).await;
    same.send(&options(same.local(), "Linphone/5.0")).await;
    assert_eq!(
        same.recv(500).await,
        None,
        "a blocked address got an answer"
    );
    // … while everyone else is served.
    let phone = Peer::from("127.0.0.1", server.udp).await;
    let probe = options(phone.local(), "Linphone/5.0");
    assert_eq!(phone.ask(&probe, 2000).await, Some(200));
    let (_, m) = api_get(&server, "/metrics").await;
    assert_eq!(
        metric(&m, "pivotd_sip_source_refused_total{reason=\"scanner\"}"),
        1
    );
    assert_eq!(metric(&m, "pivotd_sip_sources_blocked"), 1);
    assert!(
        metric(
            &m,
            "pivotd_sip_source_refused_total{reason=\"source_blocked\"}"
        ) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_collecting_404s_is_throttled() {
    let server = start(&config_toml(FLOWS, "source_failures_per_minute = 10", "")).await;
    let prober = Peer::from("127.0.0.5", server.udp).await;
    let mut answered = 0;
    for n in 0..30 {
        let probe = invite(prober.local(), &format!("9{n:03}"));
        if prober.ask(&probe, 300).await == Some(404) {
            answered += 1;
        }
    }
    assert!(
        (10..=11).contains(&answered),
        "{answered} of 30 unknown numbers answered 404 before the source was blocked"
    );
    // A configured number is no answer either: the scan learns nothing more.
    prober.send(&invite(prober.local(), "5000")).await;
    assert_eq!(prober.recv(500).await, None);
    let phone = Peer::from("127.0.0.1", server.udp).await;
    let probe = options(phone.local(), "Yealink SIP-T46S");
    assert_eq!(phone.ask(&probe, 2000).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_one_source_are_capped_with_503() {
    let server = start(&config_toml(
        FLOWS,
        "source_max_calls = 2\nsource_calls_per_second = 100",
        "",
    ))
    .await;
    let flooder = Peer::from("127.0.0.6", server.udp).await;
    let mut refused = None;
    for _ in 0..3 {
        flooder.send(&invite(flooder.local(), "5000")).await;
        // The first two are live calls (100 Trying, then nothing while the flow sleeps).
        loop {
            match flooder.recv(300).await {
                Some(m) if status(&m) == 503 => {
                    refused = Some(m);
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
    }
    let refused = refused.expect("the third call from one source gets 503");
    assert!(refused.starts_with("SIP/2.0 503 Too Many Calls From Source"));
    assert!(header(&refused, "Retry-After").is_some());
    assert!(eventually(2, || server.handle.active_calls() == 2).await);
    // Another address still gets its call.
    let other = Peer::from("127.0.0.1", server.udp).await;
    other.send(&invite(other.local(), "5000")).await;
    assert_eq!(other.recv(1000).await.map(|m| status(&m)), Some(100));
    assert!(eventually(2, || server.handle.active_calls() == 3).await);
    let (_, m) = api_get(&server, "/metrics").await;
    assert_eq!(
        metric(&m, "pivotd_sip_overload_503_total{reason=\"source_calls\"}"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_calls_per_second_from_one_source_are_capped_with_503() {
    let server = start(&config_toml(FLOWS, "source_calls_per_second = 2", "")).await;
    let caller = Peer::from("127.0.0.7", server.udp).await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        caller.send(&invite(caller.local(), "5000")).await;
        let mut code = None;
        while let Some(m) = caller.recv(200).await {
            code = Some(status(&m));
            if status(&m) >= 200 {
                break;
            }
        }
        codes.push(code);
    }
    assert_eq!(codes, vec![Some(100), Some(100), Some(503), Some(503)]);
    let (_, m) = api_get(&server, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "pivotd_sip_overload_503_total{reason=\"source_call_rate\"}"
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_from_one_source_are_capped() {
    let server = start(&config_toml(FLOWS, "source_tcp_connections = 3", "")).await;
    let connect = |ip: &'static str| async move {
        let s = TcpSocket::new_v4().unwrap();
        s.bind((ip.parse::<IpAddr>().unwrap(), 0).into()).unwrap();
        s.connect(server.tcp).await.unwrap()
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect("127.0.0.8").await);
    }
    // The fourth is accepted by the kernel, then closed by pivotd without a byte.
    let mut fourth = connect("127.0.0.8").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), fourth.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection over the limit stays open: {read:?}"
    );
    // The three within the limit work, and other addresses connect.
    let mut first = RawSip::Tcp(open.remove(0), Vec::new());
    let from = first.local();
    first
        .send(options(from, "Polycom").replace("UDP", "TCP").as_bytes())
        .await;
    assert_eq!(first.recv(2000).await.map(|m| status(&m)), Some(200));
    let mut other = RawSip::tcp(server.tcp).await;
    let from = other.local();
    other
        .send(options(from, "Polycom").replace("UDP", "TCP").as_bytes())
        .await;
    assert_eq!(other.recv(2000).await.map(|m| status(&m)), Some(200));
    // Closing exactly one frees exactly one place: the next connection stays open, the one
    // after it is over the limit again.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect("127.0.0.8").await;
    let read = tokio::time::timeout(Duration::from_millis(500), again.read(&mut buf)).await;
    assert!(read.is_err(), "a connection within the limit was closed");
    let mut over = connect("127.0.0.8").await;
    let read = tokio::time::timeout(Duration::from_secs(2), over.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the limit stays open: {read:?}"
    );
    drop((first, open));
}

/// Everything the test binary logs, for the log-injection test.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("pivotd=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(b.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_values_cannot_forge_log_lines() {
    let logs = log_buffer();
    let server = start(&config_toml(FLOWS, "", "")).await;
    let caller = Peer::from("127.0.0.9", server.udp).await;
    // A dialled number that decodes to CR LF, a forged log line and a terminal escape …
    let forged = "7%0D%0A2026-12-02T00%3A00%3A00Z%20INFO%20FORGED%20admin%20login%1B%5B2J";
    assert_eq!(
        caller.ask(&invite(caller.local(), forged), 2000).await,
        Some(404)
    );
    // … and one of 30,000 characters.
    let long = "8".repeat(30_000);
    assert_eq!(
        caller.ask(&invite(caller.local(), &long), 2000).await,
        Some(404)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("\\x0D\\x0A2026-12-02T00:00:00Z INFO FORGED"),
        "the forged number is not in the log, escaped:\n{text}"
    );
    for line in text.lines() {
        assert!(!line.contains("Z INFO FORGED") || line.contains("\\x0D\\x0A2026"));
        assert!(
            !line.starts_with("2026-12-02T00:00:00Z"),
            "forged line: {line}"
        );
        assert!(
            !line.contains('\x1b'),
            "escape sequence reached the log: {line:?}"
        );
        assert!(line.len() < 2000, "a log line of {} bytes", line.len());
        // Unknown numbers are DEBUG noise, never INFO.
        if line.contains("no callflow") {
            assert!(
                line.contains("DEBUG"),
                "unknown number logged above DEBUG: {line}"
            );
        }
    }
}
