//! Does a flood from one address disturb the audio of another caller's call?
//!
//! Starts the built pivotd binary on loopback with the default per-source limits, places one
//! long call from 127.0.0.1 (a looping tone, ACKed) and records when each of its RTP packets
//! arrives; after QUIET seconds, floods from 127.0.0.2 (INVITEs at RATE/s for SECONDS s, each a
//! new call, never acknowledged, plus as many garbage datagrams). Prints the call's pacing —
//! |inter-arrival − 20 ms| at p50, p99 and max — before and during the flood, and the ratio.
//! Asserts nothing.
//!
//! cargo bench --bench flood_pacing -- [RATE] [SECONDS] [QUIET]   (defaults 3000 2 3)

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "flood_common.rs"]
mod flood_common;
use flood_common::{invite, start, write_config, MEDIA_PORTS};

/// 7000: a short prompt then BYE (what the flood calls); 7001: the measured call, a tone
/// looping for far longer than the bench.
const CALLFLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["7000"]
flow = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "hangup" } } }
[[accounts.callflows]]
numbers = ["7001"]
flow = { module = "play", data = { id = "tone-1khz", loop_count = 100 } }
"#;

/// The measured call: answered and ACKed; its RTP arrival times are recorded by a thread.
fn measured_call(server: SocketAddr) -> (Arc<Mutex<Vec<Instant>>>, UdpSocket) {
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("rtp");
    let rtp_addr = rtp.local_addr().expect("rtp addr");
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let a = arrivals.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while rtp.recv_from(&mut buf).is_ok() {
            a.lock().expect("arrivals").push(Instant::now());
        }
    });
    let sip = UdpSocket::bind("127.0.0.1:0").expect("sip");
    sip.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let from = sip.local_addr().expect("sip addr");
    sip.send_to(&invite(from, "7001", "measured", rtp_addr), server)
        .expect("send");
    let mut buf = vec![0u8; 65536];
    let ok = loop {
        let (n, _) = sip
            .recv_from(&mut buf)
            .expect("an answer to the measured call");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.starts_with("SIP/2.0 200") {
            break msg;
        }
    };
    let to = ok
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .expect("To")
        .to_string();
    let ack = format!(
        "ACK sip:7001@bench.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKack;rport\r\n\
From: <sip:b@{from}>;tag=fmeasured\r\nTo: {to}\r\nCall-ID: measured\r\nCSeq: 1 ACK\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(ack.as_bytes(), server).expect("ack");
    (arrivals, sip)
}

/// p50, p99 and max of |inter-arrival − 20 ms| (ms) for packets in [from, to).
fn pacing(arrivals: &[Instant], from: Instant, to: Instant) -> (usize, f64, f64, f64) {
    let w: Vec<Instant> = arrivals
        .iter()
        .copied()
        .filter(|t| *t >= from && *t < to)
        .collect();
    let mut dev: Vec<f64> = w
        .windows(2)
        .map(|p| ((p[1] - p[0]).as_secs_f64() * 1000.0 - 20.0).abs())
        .collect();
    dev.sort_by(|a, b| a.total_cmp(b));
    let at = |q: usize| dev.get((dev.len() * q / 100).min(dev.len().saturating_sub(1)));
    (
        w.len(),
        at(50).copied().unwrap_or(0.0),
        at(99).copied().unwrap_or(0.0),
        dev.last().copied().unwrap_or(0.0),
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and a flood has no place in the test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flood_pacing: a benchmark; run it with cargo bench --bench flood_pacing");
        return;
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rate = args.first().copied().unwrap_or(3000);
    let secs = args.get(1).copied().unwrap_or(2);
    let quiet = args.get(2).copied().unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("pivotd-pacing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mut child, server, _) = start(&write_config(&dir, "", MEDIA_PORTS, "", CALLFLOWS));
    let (arrivals, _sip) = measured_call(server);
    std::thread::sleep(Duration::from_millis(300));
    let quiet_from = Instant::now();
    std::thread::sleep(Duration::from_secs(quiet));
    let flood_from = Instant::now();
    let sock = UdpSocket::bind("127.0.0.2:0").expect("a second loopback address");
    let local = sock.local_addr().expect("local");
    let sink = UdpSocket::bind("127.0.0.2:0").expect("sink");
    let sink_addr = sink.local_addr().expect("sink addr");
    let mut sent = 0u64;
    let end = flood_from + Duration::from_secs(secs);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while Instant::now() < end {
        let due = (flood_from.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let _ = sock.send_to(
                &invite(local, "7000", &format!("flood{sent}"), sink_addr),
                server,
            );
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let garbage: Vec<u8> = (0..(x % 1400) as usize)
                .map(|i| (x >> (i % 56)) as u8)
                .collect();
            let _ = sock.send_to(&garbage, server);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let flood_to = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let a = arrivals.lock().expect("arrivals").clone();
    let (nq, p50q, p99q, maxq) = pacing(&a, quiet_from, flood_from);
    let (nf, p50f, p99f, maxf) = pacing(&a, flood_from, flood_to);
    println!(
        "flood from 127.0.0.2: {sent} INVITEs + {sent} garbage datagrams in {secs} s (default per-source limits)"
    );
    println!("live call pacing |Δt − 20 ms| in ms:   packets   p50    p99    max");
    println!("  before the flood                     {nq:7}  {p50q:5.2}  {p99q:5.2}  {maxq:5.2}");
    println!("  during the flood                     {nf:7}  {p50f:5.2}  {p99f:5.2}  {maxf:5.2}");
    println!(
        "  p99 during / before                  {:.2}",
        if p99q > 0.0 { p99f / p99q } else { f64::NAN }
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
