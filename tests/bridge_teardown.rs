//! Bridged calls ending together. When hundreds of callers hang up at once (the bridge_relay
//! bench at 400 calls), their BYEs and the callees' answers to pivotd's own BYEs reach a UDP
//! socket faster than its receive task reads them; what the kernel's buffer cannot hold is
//! dropped unread, and a caller whose BYE (and its retransmissions) met a full buffer stays
//! in a bridged call pivotd never heard the end of. `[sip] udp_receive_buffer_bytes` sizes
//! that buffer.
//!
//! The burst is made deterministic: the test runs on a current-thread runtime and sends it
//! without awaiting, so pivotd's receive task cannot read until the whole burst is queued.
//! The caller's BYE comes last, after the BYEs of calls that already ended elsewhere (481).

mod common;

use std::net::UdpSocket as StdUdp;
use std::time::Duration;

use common::bridge::*;
use common::*;

/// Datagrams in the burst, the caller's BYE last. Linux charges each about 1280 bytes of
/// buffer, so the kernel's default (212992 bytes) holds about 166 of them.
const BURST: usize = 1000;

/// A server whose 6000 bridges to `callee`, with `sip_extra` in `[sip]`. The burst comes from
/// 127.0.0.1: trusted, or the per-source request rate would drop it first. One UDP reader: with
/// several (`udp_readers`), the caller's socket and the burst's may hash to different sockets,
/// and the caller's BYE would not queue behind the burst.
async fn server(callee: &Callee, sip_extra: &str) -> TestServer {
    carrier_server(
        callee,
        &format!("trusted_sources = [\"127.0.0.1\"]\nudp_readers = 1\n{sip_extra}"),
    )
    .await
}

/// The BYE of a call pivotd no longer has (another caller of the same moment).
fn stray_bye(from: std::net::SocketAddr, i: usize) -> String {
    format!(
        "BYE sip:pivotd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKburst{i}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@pivotd.test>;tag=b{i}\r\n\
         To: <sip:6000@pivotd.test>;tag=ended{i}\r\nCall-ID: burst-{i}@bridge-teardown\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A bridged call, then a burst of BURST BYEs ending with its caller's, queued at pivotd's
/// socket before pivotd may read any. Returns the caller (to read its answer), the callee and
/// the server.
async fn bridged_call_then_burst(sip_extra: &str) -> (Caller, Callee, TestServer) {
    let callee = Callee::start(Script::Answer {
        ring_ms: 0,
        codec: 0,
    })
    .await;
    let server = server(&callee, sip_extra).await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 5000).await;
    assert!(callee.dialog_up(), "the callee answered");
    // Everything of the set-up read (the ACK included): the burst starts on an empty buffer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.handle.active_calls(), 1);

    let others = StdUdp::bind("127.0.0.1:0").expect("bind");
    let from = others.local_addr().expect("addr");
    for i in 0..BURST - 1 {
        others
            .send_to(stray_bye(from, i).as_bytes(), server.udp)
            .expect("send");
    }
    let bye = caller.bye_request(&ok);
    caller.sip.send_now(bye.as_bytes());
    (caller, callee, server)
}

/// The answer to the caller's BYE, if one comes within `ms`.
async fn bye_answer(caller: &mut Caller, ms: u64) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = caller.sip.recv(left.as_millis().max(1) as u64).await?;
        if m.starts_with("SIP/2.0") && header(&m, "CSeq").is_some_and(|c| c.ends_with("BYE")) {
            return Some(m);
        }
    }
}

/// BYE requests pivotd's endpoint read.
fn byes_read(server: &TestServer) -> u64 {
    server
        .handle
        .endpoint
        .stats
        .messages
        .requests()
        .into_iter()
        .find(|(d, m, _)| *d == pivotd::sip::endpoint::Direction::In && *m == rsip::Method::Bye)
        .map_or(0, |(_, _, n)| n)
}

#[tokio::test]
async fn a_callers_bye_at_the_end_of_a_burst_is_answered_and_ends_the_bridge() {
    // The default `udp_receive_buffer_bytes` (4 MiB) holds the burst.
    let (mut caller, callee, server) = bridged_call_then_burst("").await;
    let granted = server.handle.endpoint.transport().udp_receive_buffers();
    assert!(
        granted.iter().all(|&b| b >= BURST * 1280),
        "the kernel gave pivotd's SIP socket {granted:?} bytes, too few for the burst: \
         net.core.rmem_max caps SO_RCVBUF for a process without CAP_NET_ADMIN"
    );
    let answer = bye_answer(&mut caller, 5000)
        .await
        .expect("the caller's BYE, last of the burst, is answered");
    assert_eq!(status(&answer), 200, "{answer}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (server.handle.active_calls() > 0 || callee.received("BYE").is_empty())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.handle.active_calls(), 0, "the bridged call ended");
    assert_eq!(callee.received("BYE").len(), 1, "the callee was hung up");
    assert_eq!(
        byes_read(&server),
        BURST as u64,
        "every BYE of the burst read"
    );
}

#[tokio::test]
async fn with_the_kernels_default_buffer_the_same_burst_loses_the_callers_bye() {
    // Why the key exists: the burst overflows the kernel's default buffer, its tail (the
    // caller's BYE) is dropped unread, and the call stays up.
    let rmem_default: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .expect("Linux: /proc/sys/net/core/rmem_default")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        rmem_default * 2 < BURST * 1280,
        "net.core.rmem_default {rmem_default} holds the whole burst: this test needs the \
         usual default (212992)"
    );
    let (mut caller, _callee, server) =
        bridged_call_then_burst("udp_receive_buffer_bytes = 0").await;
    assert!(
        bye_answer(&mut caller, 1500).await.is_none(),
        "the caller's BYE was dropped by the kernel, not answered"
    );
    assert_eq!(server.handle.active_calls(), 1, "the call is still up");
    let read = byes_read(&server);
    assert!(
        read < BURST as u64,
        "pivotd read {read} BYEs: the burst should not have fit"
    );
}
