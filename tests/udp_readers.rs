//! `[sip] udp_readers`: several sockets (SO_REUSEPORT), each with its own reader, on one UDP
//! address. Many sources are all answered from that one address, and a caller's messages keep
//! their order (a CANCEL sent right behind its INVITE cancels it).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

const READERS: usize = 4;

const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["1003"]
flow = { module = "sleep", data = { duration = 20 } }
"#;

async fn server() -> TestServer {
    let sip = format!("trusted_sources = [\"127.0.0.1\"]\nudp_readers = {READERS}");
    start(&config_toml(FLOWS, &sip, "")).await
}

/// The next datagram on `sock` within `ms`: its text and where it came from.
async fn recv(sock: &UdpSocket, ms: u64) -> Option<(String, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_millis(ms), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

fn options(from: SocketAddr, id: &str) -> String {
    format!(
        "OPTIONS sip:pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{id};rport\r\n\
         From: <sip:probe@{from}>;tag=f{id}\r\nTo: <sip:pivotd.test>\r\nCall-ID: {id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The CANCEL of [`raw_invite`]'s INVITE (same branch, tags, Call-ID and CSeq number, §9.1),
/// or the ACK of its failure (To carrying the answer's tag, §17.1.1.3).
fn cancel_or_ack(method: &str, from: SocketAddr, call_id: &str, to_tag: &str) -> String {
    format!(
        "{method} sip:1003@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:caller@{from}>;tag=f{call_id}\r\nTo: <sip:1003@pivotd.test>{to_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sources_are_all_answered_from_the_one_address() {
    let server = server().await;
    let transport = server.handle.endpoint.transport();
    // One address, READERS sockets (each with its receive buffer).
    assert_eq!(transport.udp_addrs(), [server.udp]);
    assert_eq!(transport.udp_receive_buffers().len(), READERS);
    let (code, health) = api_get(&server, "/healthz").await;
    assert_eq!(code, 200, "{health}");
    assert!(health.contains(&server.udp.to_string()), "{health}");

    let mut sources = Vec::new();
    for i in 0..50 {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let id = format!("opt{i}-{}", token());
        let me = sock.local_addr().unwrap();
        sock.send_to(options(me, &id).as_bytes(), server.udp)
            .await
            .unwrap();
        sources.push((sock, id));
    }
    for (sock, id) in &sources {
        let (answer, from) = recv(sock, 5000)
            .await
            .unwrap_or_else(|| panic!("no answer to {id}"));
        assert_eq!(status(&answer), 200, "{answer}");
        assert_eq!(header(&answer, "Call-ID").as_deref(), Some(id.as_str()));
        // From the address the request went to, whichever socket read it.
        assert_eq!(from, server.udp, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_right_behind_its_invite_cancels_it_for_every_caller() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut callers = Vec::new();
    // Each caller its own socket (one 5-tuple, so one reader): INVITE then CANCEL at once. Were
    // they read out of order, the CANCEL would find no transaction (481) and the call ring on.
    for i in 0..25 {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = sock.local_addr().unwrap();
        let call_id = format!("c{i}-{}", token());
        let invite = raw_invite(me, "1003", &call_id, sink.addr);
        sock.send_to(invite.as_bytes(), server.udp).await.unwrap();
        let cancel = cancel_or_ack("CANCEL", me, &call_id, "");
        sock.send_to(cancel.as_bytes(), server.udp).await.unwrap();
        callers.push((sock, me, call_id));
    }
    for (sock, me, call_id) in &callers {
        let mut finals = Vec::new();
        let mut to_tag = String::new();
        while finals.len() < 2 {
            let (m, from) = recv(sock, 5000)
                .await
                .unwrap_or_else(|| panic!("{call_id}: got {finals:?}, then nothing"));
            assert_eq!(from, server.udp);
            if status(&m) >= 200 {
                let cseq = header(&m, "CSeq").unwrap_or_default();
                if cseq.ends_with("INVITE") {
                    to_tag = to_tag_param(&m);
                }
                finals.push((status(&m), cseq));
            }
        }
        finals.sort();
        assert_eq!(
            finals,
            [(200, "1 CANCEL".to_string()), (487, "1 INVITE".to_string())],
            "{call_id}"
        );
        let ack = cancel_or_ack("ACK", *me, call_id, &to_tag);
        sock.send_to(ack.as_bytes(), server.udp).await.unwrap();
    }
    assert!(eventually(5, || server.handle.active_calls() == 0).await);
    assert_eq!(
        server
            .handle
            .stats
            .answered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// `;tag=…` of a response's To, as it goes on the ACK's To.
fn to_tag_param(msg: &str) -> String {
    to_tag(msg).map(|t| format!(";tag={t}")).unwrap_or_default()
}
