//! What the call-placing benches share: a UDP caller that places calls at a steady rate and
//! times INVITE -> 200 OK with a monotonic clock, acknowledging and answering the BYE.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

pub fn invite(local: SocketAddr, number: &str, id: &str, rtp: u16) -> String {
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

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The 200 OK to request `msg` (its Via, From, To, Call-ID and CSeq copied).
pub fn ok_for(msg: &str) -> String {
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in msg.lines().filter(|l| {
        let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        matches!(n.as_str(), "via" | "from" | "to" | "call-id" | "cseq")
    }) {
        ok.push_str(l);
        ok.push_str("\r\n");
    }
    ok.push_str("Content-Length: 0\r\n\r\n");
    ok
}

/// Places `calls` calls to `number` at `rate`/s; returns INVITE->200 times in microseconds.
pub async fn place(server: SocketAddr, number: &str, rate: u32, calls: u32) -> Vec<f64> {
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
                let _ = s.send_to(ok_for(&msg).as_bytes(), from).await;
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

pub fn stats(mut v: Vec<f64>) -> (usize, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len().max(1);
    let mean = v.iter().sum::<f64>() / n as f64;
    (v.len(), mean, v[n / 2], v[(n * 99 / 100).min(n - 1)])
}
