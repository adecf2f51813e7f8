//! Graceful overload (issue 12): a burst far beyond what the server handles at once makes the
//! SIP queue delay cross a low `overload_queue_delay_ms`; the INVITEs that come late get
//! `503` with `Retry-After` from the shard, a refused INVITE's retransmission gets the same
//! 503 (never a 200), every call that was answered completes, and once the burst is served
//! overload ends and a new call is answered again.
//!
//! Nothing here times the server: INVITEs are sent in rounds from one socket without waiting
//! until the first load refusal comes back, so a standing queue forms on any machine (a send
//! costs the sender far less than an INVITE costs the server). How many calls are answered
//! before that depends on the machine's speed: the port range may run out first, and those
//! INVITEs get `503 No Media Ports`, a refusal too.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::bridge::Caller;
use common::*;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Answers, plays a short prompt, then waits for the caller's BYE.
const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["7000"]
flow = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "sleep", data = { duration = 60 } } } }
"#;

/// The burst's source is trusted (per-source limits are not under test); the levels are low.
const SIP_EXTRA: &str = r#"trusted_sources = ["127.0.0.1"]
overload_queue_delay_ms = 5
overload_queue_delay_exit_ms = 2
overload_retry_after_s = 3"#;

/// INVITEs sent at once per round.
const ROUND: usize = 500;
/// At most this many INVITEs in all; the load gate refuses long before on any machine.
const MOST: usize = 20_000;

/// A raw UDP socket whose receive buffer holds the whole burst's answers.
async fn burst_socket(server: SocketAddr) -> RawSip {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    pivotd::sip::transport::set_receive_buffer(&sock, 16 << 20).unwrap();
    sock.set_nonblocking(true).unwrap();
    RawSip::Udp(UdpSocket::from_std(sock).unwrap(), server)
}

/// A request in the dialog of `resp` (a final response to our INVITE of `call_id`).
fn in_dialog(
    method: &str,
    cseq: u32,
    branch: &str,
    from: SocketAddr,
    call_id: &str,
    resp: &str,
) -> String {
    format!(
        "{method} sip:pivotd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{from}>;tag=f{call_id}\r\nTo: {}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        header(resp, "To").expect("a To header")
    )
}

/// The ACK of a failure: the INVITE's own branch (RFC 3261 §17.1.1.3).
fn ack_failure(from: SocketAddr, call_id: &str, resp: &str) -> String {
    in_dialog("ACK", 1, &format!("z9hG4bK{call_id}"), from, call_id, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_refused_early_and_accepted_calls_stay_whole() {
    // 1,000 port pairs: the calls answered before the gate trips hold at most these.
    let base = 20000 + 2 * (rand::random::<u16>() % 4000);
    let toml = with_port_range(&config_toml(FLOWS, SIP_EXTRA, ""), base, base + 1999);
    let server = start(&toml).await;
    let mut sip = burst_socket(server.udp).await;
    let me = sip.local();
    let media = RtpSink::bind().await;

    let mut invites: HashMap<String, String> = HashMap::new();
    // Every INVITE's final response. One load-refused call is left unacknowledged, so its
    // transaction still answers a retransmission of its INVITE.
    let mut finals: HashMap<String, String> = HashMap::new();
    let mut kept: Option<String> = None;
    let mut refused_for_load = 0usize;
    let mut refused_for_ports = 0usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut resent_at = Instant::now();
    while invites.len() < MOST && refused_for_load == 0 || finals.len() < invites.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} INVITEs answered",
            finals.len(),
            invites.len()
        );
        let sending = invites.len() < MOST && refused_for_load == 0;
        if sending {
            for _ in 0..ROUND {
                let id = format!("ovl{}-{}", invites.len(), token());
                let inv = raw_invite(me, "7000", &id, media.addr);
                sip.send(inv.as_bytes()).await;
                invites.insert(id, inv);
            }
        }
        // A datagram the kernel dropped (either way) is sent again, as a UAC would.
        if resent_at.elapsed() > Duration::from_secs(2) {
            for (id, inv) in &invites {
                if !finals.contains_key(id) {
                    sip.send(inv.as_bytes()).await;
                }
            }
            resent_at = Instant::now();
        }
        // While sending, what has come back already; then wait for the rest.
        while let Some(m) = sip.recv(if sending { 0 } else { 500 }).await {
            if !m.starts_with("SIP/2.0") || status(&m) < 200 {
                continue;
            }
            let id = header(&m, "Call-ID").expect("a Call-ID");
            if let Some(first) = finals.get(&id) {
                // A retransmission of a final response (our ACK got lost, or Timer G): the
                // same, acknowledged again.
                assert_eq!(status(first), status(&m), "{id}: {first}\nthen\n{m}");
                if status(&m) == 200 {
                    let ack = in_dialog("ACK", 1, &format!("z9hG4bK{}", token()), me, &id, &m);
                    sip.send(ack.as_bytes()).await;
                }
                continue;
            }
            match status(&m) {
                200 => {
                    let ack = in_dialog("ACK", 1, &format!("z9hG4bK{}", token()), me, &id, &m);
                    sip.send(ack.as_bytes()).await;
                }
                503 if m.starts_with("SIP/2.0 503 No Media Ports") => {
                    assert_eq!(header(&m, "Retry-After").as_deref(), Some("5"), "{m}");
                    refused_for_ports += 1;
                    sip.send(ack_failure(me, &id, &m).as_bytes()).await;
                }
                503 => {
                    assert_eq!(header(&m, "Retry-After").as_deref(), Some("3"), "{m}");
                    assert!(m.starts_with("SIP/2.0 503 Overloaded"), "{m}");
                    assert!(to_tag(&m).is_some(), "a 503 carries a To tag: {m}");
                    refused_for_load += 1;
                    if kept.is_none() {
                        kept = Some(id.clone());
                    } else {
                        sip.send(ack_failure(me, &id, &m).as_bytes()).await;
                    }
                }
                other => panic!("{id}: unexpected {other}\n{m}"),
            }
            finals.insert(id, m);
            if !sending {
                break;
            }
        }
    }
    let answered: Vec<&String> = finals
        .iter()
        .filter(|(_, m)| status(m) == 200)
        .map(|(id, _)| id)
        .collect();
    println!(
        "{} INVITEs: {} answered, {refused_for_load} refused for load, \
         {refused_for_ports} for media ports",
        invites.len(),
        answered.len()
    );
    assert!(refused_for_load > 0, "no INVITE was refused for load");
    assert!(!answered.is_empty(), "no INVITE was answered");

    // The refused INVITE sent again: its transaction answers the same 503, never a 200.
    let kept = kept.expect("a refused call kept");
    let first = finals[&kept].clone();
    sip.send(invites[&kept].as_bytes()).await;
    let again = loop {
        let m = sip
            .recv(3000)
            .await
            .expect("an answer to the retransmitted INVITE");
        if header(&m, "Call-ID").as_deref() == Some(kept.as_str()) {
            break m;
        }
    };
    assert_eq!(status(&again), 503, "{again}");
    assert_eq!(to_tag(&again), to_tag(&first), "the same response: {again}");
    sip.send(ack_failure(me, &kept, &first).as_bytes()).await;

    // Every answered call completes: its BYE is answered 200.
    let mut byes: HashMap<&str, String> = answered
        .iter()
        .map(|id| {
            let bye = in_dialog(
                "BYE",
                2,
                &format!("z9hG4bK{}", token()),
                me,
                id,
                &finals[*id],
            );
            (id.as_str(), bye)
        })
        .collect();
    for bye in byes.values() {
        sip.send(bye.as_bytes()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resent_at = Instant::now();
    while !byes.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} answered calls got no 200 to their BYE",
            byes.len()
        );
        if resent_at.elapsed() > Duration::from_secs(2) {
            for bye in byes.values() {
                sip.send(bye.as_bytes()).await;
            }
            resent_at = Instant::now();
        }
        let Some(m) = sip.recv(500).await else {
            continue;
        };
        if !m.starts_with("SIP/2.0") || header(&m, "CSeq").as_deref() != Some("2 BYE") {
            continue;
        }
        assert_eq!(status(&m), 200, "{m}");
        let id = header(&m, "Call-ID").expect("a Call-ID");
        byes.remove(id.as_str());
    }

    // Each refusal counted once (the retransmission's answer is not a new refusal).
    let (_, text) = api_get(&server, "/metrics").await;
    assert_eq!(
        metric(&text, "pivotd_sip_overload_503_total{reason=\"load\"}"),
        refused_for_load as u64
    );
    assert!(text.contains("\npivotd_sip_queue_delay_seconds "), "{text}");

    // The burst served, overload ends, and a new call is answered.
    let left = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = api_get(&server, "/metrics").await;
        if metric(&text, "pivotd_sip_overloaded") == 0 {
            break;
        }
        assert!(Instant::now() < left, "still overloaded after the burst");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, health) = api_get(&server, "/healthz").await;
    assert_eq!(code, 200, "{health}");
    assert!(health.contains("\"overloaded\":false"), "{health}");
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("7000", &[0], 5000).await;
    caller.bye(&ok).await;
    let done = loop {
        let m = caller.sip.recv(5000).await.expect("the BYE answered");
        if m.starts_with("SIP/2.0") && header(&m, "CSeq").as_deref() == Some("2 BYE") {
            break m;
        }
    };
    assert_eq!(status(&done), 200, "{done}");
}
