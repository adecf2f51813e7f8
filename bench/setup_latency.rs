//! What a pivot round trip adds to call set-up, at a steady call rate.
//!
//! Runs pivotd in-process on loopback with two numbers: 7000 answers and plays a prompt
//! directly, 7001 first asks a local web server (keep-alive HTTP/1.1) whose answer is the
//! same flow. A UDP caller places CALLS calls at RATE per second to each and measures
//! INVITE -> 200 OK with a monotonic clock; the difference of the two is the pivot cost.
//!
//! cargo bench --bench setup_latency -- [RATE] [CALLS]

#[path = "../tests/common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HttpResp, HttpServer};
use pivotd::config::Config;
use tokio::net::UdpSocket;

const FLOW: &str =
    r#"{"module": "play", "data": {"id": "digit-1"}, "children": {"_": {"module": "hangup"}}}"#;

fn invite(local: SocketAddr, number: &str, id: &str, rtp: u16) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    format!(
        "INVITE sip:{number}@bench.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{id};rport\r\n\
From: <sip:bench@127.0.0.1>;tag=f{id}\r\nTo: <sip:{number}@bench.test>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:bench@{local}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Places `calls` calls to `number` at `rate`/s; returns INVITE->200 times in microseconds.
async fn place(server: SocketAddr, number: &str, rate: u32, calls: u32) -> Vec<f64> {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp = sink.local_addr().unwrap().port();
    let local = sock.local_addr().unwrap();
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        Default::default();
    let times: Arc<std::sync::Mutex<Vec<f64>>> = Default::default();
    let (s, st, tm) = (sock.clone(), sent.clone(), times.clone());
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut done = 0;
        while done < calls {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                break;
            };
            let now = Instant::now();
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let id = header(&msg, "Call-ID").unwrap_or("").to_string();
            if msg.starts_with("SIP/2.0 200")
                && header(&msg, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
            {
                let started = st.lock().unwrap().remove(&id);
                if let Some(t0) = started {
                    tm.lock()
                        .unwrap()
                        .push(now.duration_since(t0).as_secs_f64() * 1e6);
                    let to = header(&msg, "To").unwrap_or("");
                    let ack = format!(
                        "ACK sip:x@bench.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKa{id};rport\r\n\
From: <sip:bench@127.0.0.1>;tag=f{id}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                    );
                    let _ = s.send_to(ack.as_bytes(), from).await;
                }
            } else if msg.starts_with("BYE ") {
                let mut ok = String::from("SIP/2.0 200 OK\r\n");
                for l in msg.lines().filter(|l| {
                    let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                    matches!(n.as_str(), "via" | "from" | "to" | "call-id" | "cseq")
                }) {
                    ok.push_str(l);
                    ok.push_str("\r\n");
                }
                ok.push_str("Content-Length: 0\r\n\r\n");
                let _ = s.send_to(ok.as_bytes(), from).await;
                done += 1;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..calls {
        tick.tick().await;
        let id = format!("{number}-{i}-{}", std::process::id());
        let m = invite(local, number, &id, rtp);
        sent.lock().unwrap().insert(id, Instant::now());
        sock.send_to(m.as_bytes(), server).await.unwrap();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    let t = times.lock().unwrap().clone();
    t
}

fn stats(mut v: Vec<f64>) -> (usize, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len().max(1);
    let mean = v.iter().sum::<f64>() / n as f64;
    (v.len(), mean, v[n / 2], v[(n * 99 / 100).min(n - 1)])
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and a measurement is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("setup_latency: a benchmark; run it with cargo bench --bench setup_latency");
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rate: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let calls: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let web = HttpServer::start(|_| HttpResp::json(FLOW)).await;
    let toml = format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = []
max_calls_per_second = 100000
# The bench is a load generator: trusted, held to the global limits only.
trusted_sources = ["127.0.0.1"]
[api]
listen = "127.0.0.1:0"
[media]
port_min = 40000
port_max = 49999
rtp_timeout_s = 0
[pivot]
blacklist_cidrs = []
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "bench.test"
[[accounts.callflows]]
numbers = ["7000"]
flow = '{FLOW}'
[[accounts.callflows]]
numbers = ["7001"]
flow = {{ module = "pivot", data = {{ voice_url = "{}" }} }}
"#,
        web.url("/ivr")
    );
    let cfg = Config::from_toml_str(&toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("bench config");
    let server = pivotd::server::start(Arc::new(cfg)).await.expect("server");
    let addr = server.udp[0];
    // Warm up both paths (connection to the web server, prompt cache).
    place(addr, "7001", 50, 20).await;
    place(addr, "7000", 50, 20).await;
    let direct = stats(place(addr, "7000", rate, calls).await);
    let pivot = stats(place(addr, "7001", rate, calls).await);
    println!(
        "{calls} calls at {rate}/s to each number; INVITE -> 200 OK in µs (n, mean, p50, p99)"
    );
    println!(
        "direct:    n={} mean={:.0} p50={:.0} p99={:.0}",
        direct.0, direct.1, direct.2, direct.3
    );
    println!(
        "via pivot: n={} mean={:.0} p50={:.0} p99={:.0}",
        pivot.0, pivot.1, pivot.2, pivot.3
    );
    println!(
        "a pivot round trip adds {:.3} ms (mean), {:.3} ms (p50); web server connections: {}",
        (pivot.1 - direct.1) / 1000.0,
        (pivot.2 - direct.2) / 1000.0,
        web.connections.load(std::sync::atomic::Ordering::SeqCst)
    );
}
