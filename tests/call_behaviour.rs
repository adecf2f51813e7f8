//! Dialog and call behaviour over real sockets, with hand-written SIP: BYE, 2xx
//! retransmission, re-INVITE (codec change, hold, offerless), late offer, in-dialog requests,
//! error responses, limits, RTP timeout, symmetric RTP, the port pool, early media, the
//! `response` module, CANCEL over TCP and graceful shutdown; no amplification towards an
//! address that never proved itself, the strict RTP latch, and no BYE before the ACK.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["1000"]
flow = { module = "play", data = { id = "tone-1khz", endless_playback = true, terminators = [] } }
[[accounts.callflows]]
numbers = ["1001"]
flow = { module = "play", data = { id = "digit-1", answer = false } }
[[accounts.callflows]]
numbers = ["1002"]
flow = { module = "response", data = { code = 486, message = "Gone Fishing" } }
[[accounts.callflows]]
numbers = ["1004"]
flow = { module = "play", data = { id = "tone-1khz" }, children = { _ = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "hangup" } } } } }
[[accounts.callflows]]
numbers = ["1003"]
flow = { module = "sleep", data = { duration = 20 } }
[[accounts.callflows]]
numbers = ["1005"]
flow = { module = "collect_dtmf", data = { timeout = 1 }, children = { _ = { module = "hangup" } } }
[[accounts.callflows]]
numbers = ["1006"]
flow = { module = "play", data = { id = "tone-1khz", answer = false, endless_playback = true, terminators = [] } }
[[accounts.callflows]]
numbers = ["1007"]
flow = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "hangup" } } }
[[accounts.callflows]]
numbers = ["1008"]
flow = { module = "play", data = { id = "tone-1khz", endless_playback = true }, children = { _ = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "hangup" } } } } }
"#;

/// The server of most tests: no limits, no RTP timeout.
async fn server() -> TestServer {
    start(&config_toml(FLOWS, "", "")).await
}

/// A hand-driven caller: one dialog over one socket.
struct Ua {
    sip: RawSip,
    number: String,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    invite_cseq: u32,
}

impl Ua {
    async fn udp(server: &TestServer, number: &str) -> Ua {
        Ua::new(RawSip::udp(server.udp).await, number)
    }

    async fn tcp(server: &TestServer, number: &str) -> Ua {
        Ua::new(RawSip::tcp(server.tcp).await, number)
    }

    fn new(sip: RawSip, number: &str) -> Ua {
        Ua {
            sip,
            number: number.to_string(),
            call_id: format!("{}@test.invalid", token()),
            from_tag: token(),
            to_tag: None,
            cseq: 0,
            invite_cseq: 0,
        }
    }

    /// A request in this dialog (To-tag once known) with the given CSeq.
    fn build(
        &self,
        method: &str,
        uri: &str,
        cseq: u32,
        extra: &[&str],
        body: Option<(&str, &str)>,
    ) -> String {
        let local = self.sip.local();
        let transport = self.sip.transport();
        let tcp = if transport == "TCP" {
            ";transport=tcp"
        } else {
            ""
        };
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let mut m = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:caller@test.invalid>;tag={}\r\n\
             To: <sip:{}@pivotd.test>{to_tag}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local}{tcp}>\r\n",
            token(),
            self.from_tag,
            self.number,
            self.call_id,
        );
        for h in extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        match body {
            Some((ctype, b)) => {
                m.push_str(&format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                ));
            }
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m
    }

    fn uri(&self) -> String {
        format!("sip:{}@pivotd.test", self.number)
    }

    /// Sends a request with the next CSeq; returns that CSeq.
    async fn send(&mut self, method: &str, extra: &[&str], body: Option<(&str, &str)>) -> u32 {
        self.cseq += 1;
        if method == "INVITE" {
            self.invite_cseq = self.cseq;
        }
        let m = self.build(method, &self.uri(), self.cseq, extra, body);
        self.sip.send(m.as_bytes()).await;
        self.cseq
    }

    async fn invite(&mut self, sdp: Option<&str>) {
        self.send("INVITE", &[], sdp.map(|s| ("application/sdp", s)))
            .await;
    }

    /// The next final response (1xx skipped), or a panic after `ms`.
    async fn final_response(&mut self, ms: u64) -> String {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.sip.recv(left.as_millis() as u64).await else {
                panic!("no final response within {ms} ms");
            };
            if m.starts_with("SIP/2.0 ") && status(&m) >= 200 {
                return m;
            }
        }
    }

    /// Sends an INVITE and waits for its 200, taking the To-tag.
    async fn invite_ok(&mut self, sdp: Option<&str>) -> String {
        self.invite(sdp).await;
        let resp = self.final_response(3000).await;
        assert_eq!(status(&resp), 200, "INVITE answered:\n{resp}");
        if self.to_tag.is_none() {
            self.to_tag = to_tag(&resp);
        }
        resp
    }

    /// The ACK of our last INVITE's 2xx (its own branch, §13.2.2.4).
    async fn ack(&mut self, sdp: Option<&str>) {
        let m = self.build(
            "ACK",
            &self.uri(),
            self.invite_cseq,
            &[],
            sdp.map(|s| ("application/sdp", s)),
        );
        self.sip.send(m.as_bytes()).await;
    }

    /// Sends a request and returns the final response to it (other messages skipped).
    async fn transact(
        &mut self,
        method: &str,
        extra: &[&str],
        body: Option<(&str, &str)>,
    ) -> String {
        let cseq = self.send(method, extra, body).await;
        self.response_to(cseq, method).await
    }

    /// The final response whose CSeq is `cseq method` (retransmissions of others skipped).
    async fn response_to(&mut self, cseq: u32, method: &str) -> String {
        let deadline = Instant::now() + Duration::from_millis(3000);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.sip.recv(left.as_millis() as u64).await else {
                panic!("no response to {method}");
            };
            let cseq_line = header(&m, "CSeq").unwrap_or_default();
            if m.starts_with("SIP/2.0 ")
                && status(&m) >= 200
                && cseq_line == format!("{cseq} {method}")
            {
                return m;
            }
        }
    }

    /// A re-INVITE answered 200 and acknowledged (ACK with `ack_sdp` for an offerless one).
    async fn reinvite(&mut self, sdp: Option<&str>, ack_sdp: Option<&str>) -> String {
        let body = sdp.map(|s| ("application/sdp", s));
        let resp = self.transact("INVITE", &[], body).await;
        assert_eq!(status(&resp), 200, "re-INVITE answered:\n{resp}");
        self.invite_cseq = self.cseq;
        self.ack(ack_sdp).await;
        resp
    }
}

/// An SDP offer/answer of the caller: `fmts` on the m= line, `attrs` lines after it.
fn sdp(port: u16, fmts: &str, attrs: &[&str]) -> String {
    let mut s = format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {fmts}\r\n"
    );
    for a in attrs {
        s.push_str(a);
        s.push_str("\r\n");
    }
    s
}

fn pcmu_offer(port: u16) -> String {
    sdp(
        port,
        "0 8 101",
        &[
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=sendrecv",
        ],
    )
}

/// The o= line's session version (RFC 4566 §5.2).
fn sdp_version(msg: &str) -> u64 {
    sdp_line(msg, "o=")
        .and_then(|o| o.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no o= version in:\n{msg}"))
}

fn has_attr(msg: &str, attr: &str) -> bool {
    body(msg).lines().any(|l| l.trim() == attr)
}

/// Packets the sink receives during `d`.
async fn packets_during(sink: &RtpSink, d: Duration) -> Vec<RtpPacket> {
    let before = sink.packets().len();
    tokio::time::sleep(d).await;
    sink.packets()[before..].to_vec()
}

async fn wait_packets(sink: &RtpSink, n: usize) {
    assert!(
        eventually(3, || sink.packets().len() >= n).await,
        "expected {n} RTP packets, got {}",
        sink.packets().len()
    );
}

fn rtp_packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xFFu8; 160]);
    p
}

/// Sends PCMU RTP every 20 ms from `socket` to `to` until aborted.
fn send_rtp(socket: Arc<UdpSocket>, to: SocketAddr) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let ssrc = rand::random();
        for n in 0u16.. {
            tick.tick().await;
            let _ = socket
                .send_to(&rtp_packet(n, u32::from(n) * 160, ssrc), to)
                .await;
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A call to 1000 (endless tone) answered and acknowledged, RTP to `sink`.
async fn answered_call(server: &TestServer, sink: &RtpSink) -> (Ua, String) {
    let mut ua = Ua::udp(server, "1000").await;
    let ok = ua.invite_ok(Some(&pcmu_offer(sink.addr.port()))).await;
    ua.ack(None).await;
    (ua, ok)
}

// ---------------------------------------------------------------------------------------
// BYE, 2xx retransmission

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_mid_prompt_gets_200_stops_rtp_and_ends_the_call() {
    bye_mid_prompt(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_mid_prompt_over_tcp() {
    bye_mid_prompt(true).await;
}

async fn bye_mid_prompt(tcp: bool) {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = if tcp {
        Ua::tcp(&server, "1000").await
    } else {
        Ua::udp(&server, "1000").await
    };
    let ok = ua.invite_ok(Some(&pcmu_offer(sink.addr.port()))).await;
    if tcp {
        assert!(
            header(&ok, "Contact").is_some_and(|c| c.contains("transport=tcp")),
            "{ok}"
        );
    }
    ua.ack(None).await;
    assert_eq!(
        m_audio(&ok).split_whitespace().nth(3),
        Some("0"),
        "PCMU chosen"
    );
    wait_packets(&sink, 10).await;
    assert_eq!(server.handle.active_calls(), 1);
    let resp = ua.transact("BYE", &[], None).await;
    assert_eq!(status(&resp), 200, "{resp}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = packets_during(&sink, Duration::from_millis(400)).await;
    assert!(
        after.is_empty(),
        "{} RTP packets after the BYE",
        after.len()
    );
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_200_is_retransmitted_with_timer_g_until_the_ack() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    ua.invite(Some(&pcmu_offer(sink.addr.port()))).await;
    let mut times = Vec::new();
    while times.len() < 3 {
        let m = ua
            .sip
            .expect("SIP/2.0 200", 2500)
            .await
            .expect("a 200 (or its retransmission)");
        times.push(Instant::now());
        ua.to_tag = to_tag(&m);
    }
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Timer G: T1 (500 ms), then 2*T1 (1 s).
    assert!((350..=800).contains(&gaps[0]), "first gap {gaps:?}");
    assert!((800..=1400).contains(&gaps[1]), "second gap {gaps:?}");
    ua.ack(None).await;
    // The next retransmission would come 2 s after the last.
    let more = ua.sip.expect("SIP/2.0 200", 2600).await;
    assert!(more.is_none(), "200 retransmitted after the ACK");
    assert_eq!(server.handle.active_calls(), 1, "the call is still up");
}

/// Fast RFC 3261 timers: T1 = 20 ms makes Timer H (64*T1) 1.28 s instead of 32 s.
const FAST_TIMERS: &str = "timer_t1_ms = 20\ntimer_t2_ms = 200";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_never_acknowledged_by_a_caller_sending_rtp_ends_with_bye_at_timer_h() {
    let server = start(&config_toml(FLOWS, FAST_TIMERS, "")).await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    ua.invite(Some(&pcmu_offer(sink.addr.port()))).await;
    let started = Instant::now();
    let first = ua.sip.expect("SIP/2.0 200", 2000).await.expect("200");
    ua.to_tag = to_tag(&first);
    // Its RTP proves the caller takes part, though its ACK never comes.
    let _rtp = send_rtp(sink.socket.clone(), media_addr(&first));
    // Never ACKed: the 200 is retransmitted, then Timer H gives up and pivotd sends BYE
    // (RFC 3261 §13.3.1.4).
    let bye = ua
        .sip
        .expect("BYE ", 5000)
        .await
        .expect("BYE after Timer H");
    let waited = started.elapsed();
    assert_bye_in_dialog(&ua, &bye);
    assert!(
        waited >= Duration::from_millis(1200),
        "BYE after {waited:?}"
    );
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}

/// Symptom 4 of issue 7 (RFC 3261 §15): the flow answers and hangs up at once, the caller's
/// ACK comes a second later: the BYE waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_waits_for_the_ack_of_our_200() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1005").await;
    ua.invite(Some(&pcmu_offer(sink.addr.port()))).await;
    let ok = ua.sip.expect("SIP/2.0 200", 3000).await.expect("200");
    ua.to_tag = to_tag(&ok);
    // The ACK is withheld for a second: only the 200 (and its retransmissions) may come.
    let withheld = Instant::now() + Duration::from_millis(1000);
    while let Some(m) = ua.sip.recv(ms_until(withheld)).await {
        assert!(m.starts_with("SIP/2.0 200"), "before the ACK:\n{m}");
    }
    ua.ack(None).await;
    let acked = Instant::now();
    let bye = ua
        .sip
        .expect("BYE ", 2000)
        .await
        .expect("BYE after the ACK");
    assert!(acked.elapsed() < Duration::from_millis(1000), "BYE late");
    assert_bye_in_dialog(&ua, &bye);
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 1);
}

/// Milliseconds left until `t` (0 once past).
fn ms_until(t: Instant) -> u64 {
    t.saturating_duration_since(Instant::now()).as_millis() as u64
}

/// Symptoms 3 and 4 of issue 7: a caller that neither acknowledges the 200 nor sends RTP
/// never proved its address: Timer H ends the call without a BYE (a deliberate deviation from
/// §13.3.1.4's SHOULD), and the 200's retransmissions stop there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_never_acknowledged_by_a_silent_caller_ends_without_bye() {
    let server = start(&config_toml(FLOWS, FAST_TIMERS, "")).await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1005").await;
    ua.invite(Some(&pcmu_offer(sink.addr.port()))).await;
    let started = Instant::now();
    let mut oks = Vec::new();
    let until = started + Duration::from_millis(3000);
    while let Some(m) = ua.sip.recv(ms_until(until)).await {
        assert!(!m.starts_with("BYE "), "a BYE to an unproven caller:\n{m}");
        if m.starts_with("SIP/2.0 200") {
            oks.push(started.elapsed());
        }
    }
    assert!(oks.len() >= 3, "the 200 is retransmitted: {oks:?}");
    let last = *oks.last().unwrap();
    assert!(
        last < Duration::from_millis(1800),
        "200 retransmitted after Timer H (1.28 s): {oks:?}"
    );
    assert_eq!(server.handle.active_calls(), 0, "Timer H ended the call");
    assert!(sink.packets().is_empty(), "RTP to an unproven address");
    let stats = &server.handle.endpoint.stats;
    assert!(
        eventually(3, || stats.live_server_transactions.load(Ordering::Relaxed)
            == 0
            && stats.live_dialogs.load(Ordering::Relaxed) == 0)
        .await
    );
}

/// UDP may deliver the caller's BYE before its ACK: the dialog ends, and so do the 2xx
/// retransmissions (its transaction still ends at Timer H, keeping the gauge right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_before_the_ack_stops_the_200_retransmissions() {
    // T1 = 100 ms: Timer G resends at 0.1, 0.3, 0.7, 1.5 s; Timer H at 6.4 s.
    let server = start(&config_toml(FLOWS, "timer_t1_ms = 100", "")).await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    ua.invite_ok(Some(&pcmu_offer(sink.addr.port()))).await;
    let cseq = ua.send("BYE", &[], None).await;
    let r = ua.response_to(cseq, "BYE").await;
    assert_eq!(status(&r), 200, "{r}");
    let ended = Instant::now();
    while let Some(m) = ua.sip.recv(ms_until(ended + Duration::from_secs(2))).await {
        let invite_200 = m.starts_with("SIP/2.0 200")
            && header(&m, "CSeq").is_some_and(|c| c.ends_with("INVITE"));
        // One already due as the dialog was ending may pass; none later (before, they
        // went on at 0.3, 0.7, 1.5 s).
        assert!(
            !invite_200 || ended.elapsed() < Duration::from_millis(250),
            "200 retransmitted {:?} after the dialog ended",
            ended.elapsed()
        );
    }
    assert!(sink.packets().is_empty(), "RTP before any proof");
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
    let stats = &server.handle.endpoint.stats;
    assert!(
        eventually(8, || stats.live_server_transactions.load(Ordering::Relaxed)
            == 0
            && stats.live_dialogs.load(Ordering::Relaxed) == 0)
        .await,
        "server tx {}, dialogs {}",
        stats.live_server_transactions.load(Ordering::Relaxed),
        stats.live_dialogs.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------
// re-INVITE

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_right_after_ack_switches_to_pcma_and_versions_follow_rfc3264() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let (mut ua, ok) = answered_call(&server, &sink).await;
    let v1 = sdp_version(&ok);
    let pcma = sdp(sink.addr.port(), "8", &["a=rtpmap:8 PCMA/8000"]);
    let r = ua.reinvite(Some(&pcma), None).await;
    assert_eq!(m_audio(&r).split_whitespace().nth(3), Some("8"), "{r}");
    assert_eq!(m_audio(&r).split_whitespace().count(), 4, "only PCMA: {r}");
    assert!(has_attr(&r, "a=rtpmap:8 PCMA/8000"), "{r}");
    let v2 = sdp_version(&r);
    assert!(v2 > v1, "changed answer keeps version {v1} -> {v2}");
    // The same offer again: the answer does not change, nor does its version.
    let r = ua.reinvite(Some(&pcma), None).await;
    assert_eq!(sdp_version(&r), v2, "unchanged answer changed version");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = packets_during(&sink, Duration::from_millis(300)).await;
    assert!(after.len() >= 8, "RTP keeps coming: {}", after.len());
    assert!(after.iter().all(|p| p.pt == 8), "PT after the re-INVITE");
    // The bytes are A-law, not μ-law relabelled: each packet is a slice of the A-law prompt.
    let lib = pivotd::media::prompt::PromptLibrary::new(Some(repo().join("media")));
    let tone = lib.get("tone-1khz").expect("prompt");
    let alaw = tone.payload(pivotd::media::codec::Codec::Pcma);
    for p in &after {
        assert!(
            alaw.chunks(160).any(|c| c == &p.payload[..]),
            "a PT 8 packet carries bytes that are not the A-law prompt"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_stops_our_rtp_and_unhold_resumes_it() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let (mut ua, ok) = answered_call(&server, &sink).await;
    wait_packets(&sink, 5).await;
    let port = sink.addr.port();
    let hold = sdp(port, "0", &["a=rtpmap:0 PCMU/8000", "a=sendonly"]);
    let r = ua.reinvite(Some(&hold), None).await;
    assert!(has_attr(&r, "a=recvonly"), "hold answered recvonly:\n{r}");
    assert!(sdp_version(&r) > sdp_version(&ok));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = packets_during(&sink, Duration::from_millis(500)).await;
    assert!(held.is_empty(), "{} packets sent while on hold", held.len());
    let unhold = sdp(port, "0", &["a=rtpmap:0 PCMU/8000", "a=sendrecv"]);
    let r = ua.reinvite(Some(&unhold), None).await;
    assert!(has_attr(&r, "a=sendrecv"), "{r}");
    let resumed = packets_during(&sink, Duration::from_millis(500)).await;
    assert!(
        resumed.len() >= 15,
        "only {} packets after unhold",
        resumed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offerless_reinvite_gets_an_offer_and_the_ack_answer_applies() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let (mut ua, ok) = answered_call(&server, &sink).await;
    wait_packets(&sink, 5).await;
    let resp = ua.transact("INVITE", &[], None).await;
    assert_eq!(status(&resp), 200, "{resp}");
    ua.invite_cseq = ua.cseq;
    let m = m_audio(&resp);
    let fmts: Vec<&str> = m.split_whitespace().skip(3).collect();
    assert_eq!(fmts, ["0", "8", "101"], "an offer: {m}");
    assert!(has_attr(&resp, "a=rtpmap:101 telephone-event/8000"));
    assert!(
        sdp_version(&resp) > sdp_version(&ok),
        "a new offer is a changed description"
    );
    let answer = sdp(sink.addr.port(), "8", &["a=rtpmap:8 PCMA/8000"]);
    ua.ack(Some(&answer)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after = packets_during(&sink, Duration::from_millis(300)).await;
    assert!(after.len() >= 8, "RTP keeps coming: {}", after.len());
    assert!(after.iter().all(|p| p.pt == 8), "PCMA answered in the ACK");
    assert_eq!(server.handle.active_calls(), 1);
}

/// UDP may deliver a re-INVITE before the ACK of the previous one's 2xx: both ACKs count,
/// only the right one carries the answer to our offer, and no 2xx is left retransmitting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_overtaken_by_the_next_reinvite_still_counts() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let (mut ua, _) = answered_call(&server, &sink).await;
    wait_packets(&sink, 3).await;
    let r = ua
        .transact(
            "INVITE",
            &[],
            Some(("application/sdp", &pcmu_offer(sink.addr.port()))),
        )
        .await;
    assert_eq!(status(&r), 200, "{r}");
    let first = ua.cseq;
    let r = ua.transact("INVITE", &[], None).await;
    assert_eq!(status(&r), 200, "{r}");
    let second = ua.cseq;
    // The ACKs in the wrong order: the offerless re-INVITE's (with the answer) first.
    ua.invite_cseq = second;
    let answer = sdp(sink.addr.port(), "8", &["a=rtpmap:8 PCMA/8000"]);
    ua.ack(Some(&answer)).await;
    ua.invite_cseq = first;
    ua.ack(None).await;
    let acked = Instant::now();
    // Whatever pivotd sends in the next 2.6 s: neither 200 may come again (Timer G would
    // resend at 0.5, 1, 2 s), and no BYE.
    while let Some(m) = ua
        .sip
        .recv(2600u64.saturating_sub(acked.elapsed().as_millis() as u64))
        .await
    {
        assert!(!m.starts_with("BYE "), "pivotd hung up:\n{m}");
        if m.starts_with("SIP/2.0 200") && acked.elapsed() > Duration::from_millis(100) {
            panic!("2xx retransmitted after its ACK:\n{m}");
        }
    }
    let after = packets_during(&sink, Duration::from_millis(300)).await;
    assert!(after.len() >= 8, "audio goes on: {}", after.len());
    assert!(
        after.iter().all(|p| p.pt == 8),
        "the answer in the right ACK applies"
    );
    assert_eq!(server.handle.active_calls(), 1);
}

// ---------------------------------------------------------------------------------------
// Offer/answer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_offer_answer_in_ack_sends_audio_with_the_chosen_codec() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    let ok = ua.invite_ok(None).await;
    let m = m_audio(&ok);
    let fmts: Vec<&str> = m.split_whitespace().skip(3).collect();
    assert_eq!(fmts, ["0", "8", "101"], "{ok}");
    assert!(has_attr(&ok, "a=rtpmap:0 PCMU/8000"));
    assert!(has_attr(&ok, "a=rtpmap:8 PCMA/8000"));
    assert!(has_attr(&ok, "a=rtpmap:101 telephone-event/8000"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.packets().is_empty(), "audio before the answer");
    let answer = sdp(sink.addr.port(), "8", &["a=rtpmap:8 PCMA/8000"]);
    ua.ack(Some(&answer)).await;
    wait_packets(&sink, 10).await;
    let packets = sink.packets();
    assert!(packets.iter().all(|p| p.pt == 8));
    let lib = pivotd::media::prompt::PromptLibrary::new(Some(repo().join("media")));
    let tone = lib.get("tone-1khz").expect("prompt");
    let alaw = tone.payload(pivotd::media::codec::Codec::Pcma);
    // Audio from the start of the prompt, in A-law.
    assert_eq!(&packets[0].payload[..], &alaw[..160], "first packet");
    for p in &packets {
        assert!(
            alaw.chunks(160).any(|c| c == &p.payload[..]),
            "not A-law prompt bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telephone_event_at_8000_is_chosen_among_two() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    let offer = sdp(
        sink.addr.port(),
        "0 96 101",
        &[
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:96 telephone-event/48000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
        ],
    );
    let ok = ua.invite_ok(Some(&offer)).await;
    ua.ack(None).await;
    let fmts: Vec<String> = m_audio(&ok)
        .split_whitespace()
        .skip(3)
        .map(str::to_string)
        .collect();
    assert_eq!(fmts, ["0", "101"], "{ok}");
    assert!(has_attr(&ok, "a=rtpmap:101 telephone-event/8000"));
    assert!(!body(&ok).contains("48000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_with_audio_and_video_gets_both_m_lines_video_refused() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    let offer = format!(
        "{}m=video 9000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        pcmu_offer(sink.addr.port())
    );
    let ok = ua.invite_ok(Some(&offer)).await;
    ua.ack(None).await;
    let m_lines: Vec<&str> = body(&ok).lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines.len(), 2, "{ok}");
    assert!(m_lines[0].starts_with("m=audio "), "{ok}");
    assert_ne!(media_addr(&ok).port(), 0);
    assert!(m_lines[1].starts_with("m=video 0 "), "video refused: {ok}");
    wait_packets(&sink, 5).await;
    // A re-INVITE with the same offer keeps both lines.
    let r = ua.reinvite(Some(&offer), None).await;
    assert_eq!(
        body(&r).lines().filter(|l| l.starts_with("m=")).count(),
        2,
        "{r}"
    );
    assert_eq!(sdp_version(&r), sdp_version(&ok), "nothing changed");
    // An offerless re-INVITE: our offer keeps both m= lines (RFC 3264 §8).
    let r = ua.transact("INVITE", &[], None).await;
    assert_eq!(status(&r), 200, "{r}");
    ua.invite_cseq = ua.cseq;
    let m_lines: Vec<&str> = body(&r).lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines.len(), 2, "{r}");
    assert!(m_lines[0].ends_with(" RTP/AVP 0 8 101"), "{r}");
    assert!(m_lines[1].starts_with("m=video 0 "), "{r}");
    let answer = format!(
        "{}m=video 0 RTP/AVP 96\r\n",
        sdp(sink.addr.port(), "0", &["a=rtpmap:0 PCMU/8000"])
    );
    ua.ack(Some(&answer)).await;
    let after = packets_during(&sink, Duration::from_millis(300)).await;
    assert!(after.len() >= 8, "audio goes on: {}", after.len());
    assert_eq!(server.handle.active_calls(), 1);
}

// ---------------------------------------------------------------------------------------
// In-dialog requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dialog_options_info_unknown_method_unknown_tag_and_old_cseq() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let (mut ua, _) = answered_call(&server, &sink).await;
    let r = ua.transact("OPTIONS", &[], None).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        header(&r, "Allow").is_some_and(|a| a.contains("INVITE")),
        "{r}"
    );
    let r = ua
        .transact(
            "INFO",
            &[],
            Some(("application/dtmf-relay", "Signal=1\r\nDuration=160\r\n")),
        )
        .await;
    assert_eq!(status(&r), 200, "{r}");
    let r = ua
        .transact("MESSAGE", &[], Some(("text/plain", "hi")))
        .await;
    assert_eq!(status(&r), 405, "{r}");
    let allow = header(&r, "Allow").unwrap_or_default();
    assert!(allow.contains("BYE") && !allow.contains("MESSAGE"), "{r}");
    let r = ua.transact("NOTIFY", &["Event: dialog"], None).await;
    assert_eq!(status(&r), 405, "{r}");
    // A lower CSeq than the last one (§12.2.2): 500.
    let stale = ua.build("OPTIONS", &ua.uri(), 1, &[], None);
    ua.sip.send(stale.as_bytes()).await;
    let r = ua.response_to(1, "OPTIONS").await;
    assert_eq!(status(&r), 500, "{r}");
    // BYE with a To-tag pivotd never gave: 481, and the call carries on.
    let real = ua.to_tag.replace("not-ours".into());
    let r = ua.transact("BYE", &[], None).await;
    assert_eq!(status(&r), 481, "{r}");
    ua.to_tag = real;
    assert_eq!(server.handle.active_calls(), 1);
    assert!(!packets_during(&sink, Duration::from_millis(200))
        .await
        .is_empty());
    let r = ua.transact("BYE", &[], None).await;
    assert_eq!(status(&r), 200, "{r}");
}

// ---------------------------------------------------------------------------------------
// Errors out of dialog

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_dialog_errors_each_get_their_response() {
    let server = server().await;
    for tcp in [false, true] {
        let mut ua = if tcp {
            Ua::tcp(&server, "1000").await
        } else {
            Ua::udp(&server, "1000").await
        };
        let r = ua
            .transact("MESSAGE", &[], Some(("text/plain", "hi")))
            .await;
        assert_eq!(status(&r), 405, "{r}");
        assert!(
            header(&r, "Allow").is_some_and(|a| a.contains("INVITE")
                && a.contains("REGISTER")
                && a.contains("SUBSCRIBE")),
            "{r}"
        );
        // SUBSCRIBE is served (presence): only a device may subscribe, so it is challenged.
        let r = ua.transact("SUBSCRIBE", &["Event: presence"], None).await;
        assert_eq!(status(&r), 407, "{r}");
        // The registrar challenges (no device exists here, so no answer will do).
        let r = ua.transact("REGISTER", &[], None).await;
        assert_eq!(status(&r), 401, "{r}");
        assert!(header(&r, "WWW-Authenticate").is_some(), "{r}");
        let r = ua.transact("REGISTER", &["Require: foo"], None).await;
        assert_eq!(status(&r), 420, "{r}");
        // 416: a Request-URI scheme pivotd does not serve.
        for uri in ["tel:+15551234", "foo:bar@pivotd.test"] {
            ua.cseq += 1;
            let m = ua.build("OPTIONS", uri, ua.cseq, &[], None);
            ua.sip.send(m.as_bytes()).await;
            let r = ua.response_to(ua.cseq, "OPTIONS").await;
            assert_eq!(status(&r), 416, "{uri}: {r}");
        }
        let r = ua
            .transact("INVITE", &[], Some(("text/plain", "hello")))
            .await;
        assert_eq!(status(&r), 415, "{r}");
        assert!(header(&r, "Accept").is_some_and(|a| a.contains("application/sdp")));
        ua.ack(None).await;
        let r = ua.transact("INVITE", &["Require: foo"], None).await;
        assert_eq!(status(&r), 420, "{r}");
        assert_eq!(header(&r, "Unsupported").as_deref(), Some("foo"), "{r}");
        let mut nobody = if tcp {
            Ua::tcp(&server, "9999").await
        } else {
            Ua::udp(&server, "9999").await
        };
        let r = nobody
            .transact("INVITE", &[], Some(("application/sdp", &pcmu_offer(4000))))
            .await;
        assert_eq!(status(&r), 404, "{r}");
        let g729 = sdp(4000, "18", &["a=rtpmap:18 G729/8000"]);
        let r = ua
            .transact("INVITE", &[], Some(("application/sdp", &g729)))
            .await;
        assert_eq!(status(&r), 488, "{r}");
        // RFC 4475 §3.3.11: Max-Forwards 0 on a request pivotd answers itself.
        ua.cseq += 1;
        let m = ua
            .build("OPTIONS", &ua.uri(), ua.cseq, &[], None)
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        ua.sip.send(m.as_bytes()).await;
        let r = ua.response_to(ua.cseq, "OPTIONS").await;
        assert_eq!(status(&r), 200, "OPTIONS with Max-Forwards 0: {r}");
    }
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_with_max_forwards_zero_is_answered_normally() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    ua.cseq += 1;
    ua.invite_cseq = ua.cseq;
    let m = ua
        .build(
            "INVITE",
            &ua.uri(),
            ua.cseq,
            &[],
            Some(("application/sdp", &pcmu_offer(sink.addr.port()))),
        )
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    ua.sip.send(m.as_bytes()).await;
    let r = ua.final_response(3000).await;
    assert_eq!(status(&r), 200, "{r}");
    ua.to_tag = to_tag(&r);
    ua.ack(None).await;
    wait_packets(&sink, 5).await;
    let r = ua.transact("BYE", &[], None).await;
    assert_eq!(status(&r), 200);
}

// ---------------------------------------------------------------------------------------
// Limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_calls_refuses_the_second_call_and_the_first_keeps_playing() {
    let server = start(&config_toml(FLOWS, "max_calls = 1", "")).await;
    let sink = RtpSink::bind().await;
    let (mut first, _) = answered_call(&server, &sink).await;
    wait_packets(&sink, 5).await;
    let mut second = Ua::udp(&server, "1000").await;
    second.invite(Some(&pcmu_offer(4000))).await;
    let r = second.final_response(3000).await;
    assert_eq!(status(&r), 503, "{r}");
    assert!(header(&r, "Retry-After").is_some(), "{r}");
    second.ack(None).await;
    let during = packets_during(&sink, Duration::from_millis(400)).await;
    assert!(during.len() >= 15, "first call's audio: {}", during.len());
    let r = first.transact("BYE", &[], None).await;
    assert_eq!(status(&r), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_calls_per_second_refuses_the_third_invite_within_a_second() {
    let server = start(&config_toml(FLOWS, "max_calls_per_second = 2", "")).await;
    let mut codes = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let mut ua = Ua::udp(&server, "1002").await;
        ua.invite(Some(&pcmu_offer(4000))).await;
        last = ua.final_response(3000).await;
        codes.push(status(&last));
        ua.ack(None).await;
    }
    assert_eq!(codes, [486, 486, 503], "{last}");
    assert!(header(&last, "Retry-After").is_some(), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_call_duration_ends_the_call_with_bye() {
    let server = start(&config_toml(FLOWS, "max_call_duration_s = 1", "")).await;
    let sink = RtpSink::bind().await;
    let started = Instant::now();
    let (mut ua, _) = answered_call(&server, &sink).await;
    let bye = ua
        .sip
        .expect("BYE ", 4000)
        .await
        .expect("a BYE from pivotd");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_millis(2600),
        "BYE after {after:?}"
    );
    assert_eq!(
        header(&bye, "Call-ID").as_deref(),
        Some(ua.call_id.as_str())
    );
    assert_bye_in_dialog(&ua, &bye);
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
    let lines = event_lines(&server, &ua.call_id).await;
    assert!(
        ends_with_line(&lines, "BYE from server (max duration)"),
        "{lines:#?}"
    );
}

/// pivotd's BYE belongs to the dialog (RFC 3261 §12.2.1.1): our Contact as Request-URI,
/// its tag in From, ours in To, a CSeq of its own.
fn assert_bye_in_dialog(ua: &Ua, bye: &str) {
    let local = ua.sip.local();
    assert!(
        bye.starts_with(&format!("BYE sip:caller@{local}")),
        "Request-URI is the caller's Contact:\n{bye}"
    );
    let from = header(bye, "From").unwrap_or_default();
    let to = header(bye, "To").unwrap_or_default();
    let ours = ua.to_tag.clone().unwrap_or_default();
    assert!(from.ends_with(&format!(";tag={ours}")), "From: {from}");
    assert!(to.ends_with(&format!(";tag={}", ua.from_tag)), "To: {to}");
    assert!(
        header(bye, "CSeq").is_some_and(|c| c.ends_with(" BYE")),
        "{bye}"
    );
}

// ---------------------------------------------------------------------------------------
// RTP timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_hung_up_after_rtp_timeout() {
    let server = start(&config_toml(FLOWS, "", "rtp_timeout_s = 1")).await;
    let sink = RtpSink::bind().await;
    let started = Instant::now();
    let (mut ua, _) = answered_call(&server, &sink).await;
    let bye = ua.sip.expect("BYE ", 4000).await.expect("BYE for no RTP");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        header(&bye, "Call-ID").as_deref(),
        Some(ua.call_id.as_str())
    );
    assert_eq!(server.handle.stats.rtp_timeouts.load(Ordering::Relaxed), 1);
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
    let lines = event_lines(&server, &ua.call_id).await;
    assert!(
        ends_with_line(&lines, "BYE from server (RTP timeout)"),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_sending_rtp_or_on_hold_is_not_hung_up() {
    let server = start(&config_toml(FLOWS, "", "rtp_timeout_s = 1")).await;
    // One caller talks all along.
    let sink = RtpSink::bind().await;
    let (mut talker, ok) = answered_call(&server, &sink).await;
    let _rtp = send_rtp(sink.socket.clone(), media_addr(&ok));
    // Another puts the call on hold right away and then sends nothing.
    let held_sink = RtpSink::bind().await;
    let (mut holder, _) = answered_call(&server, &held_sink).await;
    let hold = sdp(
        held_sink.addr.port(),
        "0",
        &["a=rtpmap:0 PCMU/8000", "a=sendonly"],
    );
    holder.reinvite(Some(&hold), None).await;
    let bye = talker.sip.expect("BYE ", 2600).await;
    assert!(bye.is_none(), "a talking caller was hung up");
    let bye = holder.sip.expect("BYE ", 200).await;
    assert!(bye.is_none(), "a caller on hold was hung up");
    assert_eq!(server.handle.active_calls(), 2);
    assert_eq!(server.handle.stats.rtp_timeouts.load(Ordering::Relaxed), 0);
    for ua in [&mut talker, &mut holder] {
        let r = ua.transact("BYE", &[], None).await;
        assert_eq!(status(&r), 200, "{r}");
    }
}

// ---------------------------------------------------------------------------------------
// Symmetric RTP, port pool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_goes_where_the_callers_rtp_comes_from() {
    let server = server().await;
    let named = RtpSink::bind().await;
    let actual = RtpSink::bind().await;
    let (mut ua, ok) = answered_call(&server, &named).await;
    let _rtp = send_rtp(actual.socket.clone(), media_addr(&ok));
    wait_packets(&actual, 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let to_named = packets_during(&named, Duration::from_millis(300)).await;
    assert!(to_named.is_empty(), "audio still goes to the SDP address");
    let r = ua.transact("BYE", &[], None).await;
    assert_eq!(status(&r), 200);
}

/// A config whose media range holds exactly one port pair.
fn one_pair_config() -> String {
    let toml = config_toml(FLOWS, "", "");
    // Below the kernel's ephemeral range (32768+), where other tests' sockets land, and
    // away from the ranges of config_toml (20000+) and SIPp (30000+).
    let port = loop {
        let p = 10000 + 2 * (rand::random::<u16>() % 5000);
        let a = std::net::UdpSocket::bind(("127.0.0.1", p));
        let b = std::net::UdpSocket::bind(("127.0.0.1", p + 1));
        if a.is_ok() && b.is_ok() {
            break p;
        }
    };
    let mut out = String::new();
    for line in toml.lines() {
        if line.starts_with("port_min") {
            out.push_str(&format!("port_min = {port}\n"));
        } else if line.starts_with("port_max") {
            out.push_str(&format!("port_max = {}\n", port + 1));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_ports_return_to_the_pool_when_a_call_ends() {
    let server = start(&one_pair_config()).await;
    for round in 0..2 {
        let sink = RtpSink::bind().await;
        let (mut ua, _) = answered_call(&server, &sink).await;
        wait_packets(&sink, 3).await;
        if round == 0 {
            let mut other = Ua::udp(&server, "1000").await;
            other.invite(Some(&pcmu_offer(4000))).await;
            let r = other.final_response(3000).await;
            assert_eq!(status(&r), 503, "no port pair left: {r}");
            assert!(header(&r, "Retry-After").is_some());
            other.ack(None).await;
        }
        let r = ua.transact("BYE", &[], None).await;
        assert_eq!(status(&r), 200);
        assert!(eventually(3, || server.handle.active_calls() == 0).await);
        // The pacer thread lets go of the sockets on its next command pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 2);
}

// ---------------------------------------------------------------------------------------
// Early media, response module, CANCEL over TCP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_without_answer_sends_183_and_early_audio_then_480() {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1001").await;
    ua.invite(Some(&pcmu_offer(sink.addr.port()))).await;
    let p = ua.sip.expect("SIP/2.0 183", 3000).await.expect("183");
    assert!(header(&p, "Content-Type").is_some_and(|c| c.contains("application/sdp")));
    assert!(m_audio(&p).starts_with("m=audio "), "{p}");
    assert!(to_tag(&p).is_some(), "183 carries a To-tag");
    wait_packets(&sink, 5).await;
    let fin = ua.final_response(3000).await;
    assert_eq!(status(&fin), 480, "{fin}");
    ua.ack(None).await;
    // The whole prompt arrived as early media. Its last packet and the 480 leave on
    // different sockets: under load the 480 may be read first.
    let expected = prompt_pcmu("digit-1");
    eventually(2, || sink.audio().len() >= expected.len()).await;
    let audio = sink.audio();
    assert!(
        audio.len() >= expected.len(),
        "{} of {}",
        audio.len(),
        expected.len()
    );
    assert_eq!(&audio[..expected.len()], &expected[..]);
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_module_sends_its_code_and_reason() {
    let server = server().await;
    let mut ua = Ua::udp(&server, "1002").await;
    ua.invite(Some(&pcmu_offer(4000))).await;
    let r = ua.final_response(3000).await;
    assert!(r.starts_with("SIP/2.0 486 Gone Fishing\r\n"), "{r}");
    ua.ack(None).await;
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_over_tcp_gets_200_and_487() {
    let server = server().await;
    let mut ua = Ua::tcp(&server, "1003").await;
    ua.invite(Some(&pcmu_offer(4000))).await;
    let trying = ua
        .sip
        .expect("SIP/2.0 100", 3000)
        .await
        .expect("100 Trying");
    let via = header(&trying, "Via").expect("Via");
    assert!(eventually(3, || server.handle.active_calls() == 1).await);
    // CANCEL: same Via branch, CSeq number and Request-URI as the INVITE (§9.1).
    let invite = ua.build("INVITE", &ua.uri(), ua.invite_cseq, &[], None);
    let cancel: String = invite
        .lines()
        .map(|l| {
            if l.starts_with("Via:") {
                format!("Via: {via}")
            } else if l.starts_with("CSeq:") {
                format!("CSeq: {} CANCEL", ua.invite_cseq)
            } else {
                l.replacen("INVITE sip:", "CANCEL sip:", 1)
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    ua.sip.send(cancel.as_bytes()).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = ua
            .sip
            .recv(3000)
            .await
            .expect("responses to CANCEL and INVITE");
        if status(&m) >= 200 {
            got.push((status(&m), header(&m, "CSeq").unwrap_or_default()));
        }
    }
    got.sort();
    let n = ua.invite_cseq;
    assert_eq!(
        got,
        [(200, format!("{n} CANCEL")), (487, format!("{n} INVITE"))]
    );
    ua.ack(None).await;
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_calls_then_byes_the_live_one() {
    let server = start(&config_toml(FLOWS, "shutdown_grace_s = 1", "")).await;
    let sink = RtpSink::bind().await;
    let (mut ua, _) = answered_call(&server, &sink).await;
    wait_packets(&sink, 3).await;
    let handle = Arc::new(server.handle);
    let h = handle.clone();
    let started = Instant::now();
    let shutdown = tokio::spawn(async move { h.shutdown().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = Ua::udp_to(server.udp, "1000").await;
    late.invite(Some(&pcmu_offer(4000))).await;
    let r = late.final_response(3000).await;
    assert_eq!(status(&r), 503, "{r}");
    assert!(header(&r, "Retry-After").is_some());
    late.ack(None).await;
    // A proxy's OPTIONS probe hears the same: take this node out of the set.
    let mut probe = Ua::udp_to(server.udp, "1000").await;
    let r = probe.transact("OPTIONS", &[], None).await;
    assert_eq!(status(&r), 503, "{r}");
    assert_eq!(header(&r, "Retry-After").as_deref(), Some("30"), "{r}");
    assert_eq!(handle.active_calls(), 1, "the live call is still up");
    let bye = ua
        .sip
        .expect("BYE ", 4000)
        .await
        .expect("BYE at the end of the grace");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "BYE before the grace ended"
    );
    assert_eq!(
        header(&bye, "Call-ID").as_deref(),
        Some(ua.call_id.as_str())
    );
    tokio::time::timeout(Duration::from_secs(8), shutdown)
        .await
        .expect("shutdown returns")
        .expect("shutdown task");
    assert_eq!(handle.active_calls(), 0);
}

impl Ua {
    async fn udp_to(target: SocketAddr, number: &str) -> Ua {
        Ua::new(RawSip::udp(target).await, number)
    }
}

// ---------------------------------------------------------------------------------------
// DTMF: a key stops the prompt (barge-in), from RFC 4733 events or SIP INFO

async fn barge_in(via_info: bool) {
    let server = server().await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1004").await;
    let ok = ua.invite_ok(Some(&pcmu_offer(sink.addr.port()))).await;
    ua.ack(None).await;
    wait_packets(&sink, 15).await;
    if via_info {
        let r = ua
            .transact(
                "INFO",
                &[],
                Some(("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")),
            )
            .await;
        assert_eq!(status(&r), 200, "{r}");
    } else {
        let to = media_addr(&ok);
        let ts = 777_000;
        let packets = [
            (true, false, 160),
            (false, false, 320),
            (false, true, 480),
            (false, true, 480),
            (false, true, 480),
        ];
        for (seq, (marker, end, dur)) in (100u16..).zip(packets) {
            sink.socket
                .send_to(&dtmf_packet(seq, ts, marker, 5, end, dur), to)
                .await
                .unwrap();
        }
    }
    let bye = ua
        .sip
        .expect("BYE ", 5000)
        .await
        .expect("the flow goes on and hangs up");
    assert!(bye.contains(&ua.call_id));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let audio = sink.audio();
    let tone = prompt_pcmu("tone-1khz");
    let digit = prompt_pcmu("digit-1");
    // The tone was cut short, then digit-1 played whole (padded to a packet).
    assert!(
        audio.len() < tone.len(),
        "the whole tone played: {} bytes",
        audio.len()
    );
    let played_tone = audio.len() - digit.len().div_ceil(160) * 160;
    assert!(
        played_tone >= 15 * 160,
        "tone stopped before the key: {played_tone}"
    );
    assert_eq!(
        &audio[..played_tone],
        &tone[..played_tone],
        "the tone's start"
    );
    assert_eq!(
        &audio[played_tone..played_tone + digit.len()],
        &digit[..],
        "then digit-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rfc4733_key_stops_the_prompt_and_the_flow_goes_on() {
    barge_in(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_info_key_stops_the_prompt_and_the_flow_goes_on() {
    barge_in(true).await;
}

// ---------------------------------------------------------------------------------------
// No amplification: the SDP's address gets RTP only once it proved it takes part

/// A third party's UDP port on 127.0.0.2: every datagram it receives.
struct ThirdParty {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    _task: AbortOnDrop,
}

impl ThirdParty {
    async fn bind() -> ThirdParty {
        let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok(n) = socket.recv(&mut buf).await {
                g.lock().unwrap().push(buf[..n].to_vec());
            }
        });
        ThirdParty {
            addr,
            got,
            _task: AbortOnDrop(task),
        }
    }

    fn bytes(&self) -> usize {
        self.got.lock().unwrap().iter().map(Vec::len).sum()
    }

    /// The RTP payloads received (pivotd's packets have a 12-byte header).
    fn audio(&self) -> Vec<u8> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|d| d.get(12..).unwrap_or(&[]).to_vec())
            .collect()
    }
}

/// An offer naming the third party's address as the caller's media address.
fn offer_naming(third: &ThirdParty) -> String {
    pcmu_offer(third.addr.port()).replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.2")
}

/// Symptom 3 of issue 7: one spoofable INVITE naming 127.0.0.2 as its media address, with
/// no ACK and no RTP, makes pivotd send nothing there, and no BYE to its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_invite_aims_no_rtp_and_no_bye_at_anyone() {
    let server = start(&config_toml(FLOWS, FAST_TIMERS, "")).await;
    let third = ThirdParty::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    ua.invite(Some(&offer_naming(&third))).await;
    let until = Instant::now() + Duration::from_millis(3000);
    let mut oks = 0;
    while let Some(m) = ua.sip.recv(ms_until(until)).await {
        assert!(!m.starts_with("BYE "), "BYE to the forged source:\n{m}");
        oks += usize::from(m.starts_with("SIP/2.0 200"));
    }
    assert!(oks >= 1, "the INVITE was answered");
    assert_eq!(third.bytes(), 0, "RTP aimed at 127.0.0.2");
    assert_eq!(server.handle.active_calls(), 0, "Timer H ended the call");
}

/// A trusted source (a carrier, a proxy in front) needs no proof: audio goes to its SDP
/// address before any ACK, and a 200 it never acknowledges ends with a BYE (§13.3.1.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_source_gets_audio_before_its_ack_and_a_bye_at_timer_h() {
    let sip = format!("{FAST_TIMERS}\ntrusted_sources = [\"127.0.0.1/32\"]");
    let server = start(&config_toml(FLOWS, &sip, "")).await;
    let media = ThirdParty::bind().await;
    let mut ua = Ua::udp(&server, "1000").await;
    ua.invite(Some(&offer_naming(&media))).await;
    let bye = ua.sip.expect("BYE ", 5000).await;
    assert!(bye.is_some(), "no BYE to the trusted source at Timer H");
    assert!(
        media.bytes() > 0,
        "no audio to a trusted source before its ACK"
    );
}

/// The same call acknowledged (a second late): the address is the caller's after all, and
/// it hears the whole prompt from its start, then a BYE comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_call_hears_the_whole_prompt_from_its_start() {
    let server = server().await;
    let media = ThirdParty::bind().await;
    let mut ua = Ua::udp(&server, "1007").await;
    ua.invite_ok(Some(&offer_naming(&media))).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(media.bytes(), 0, "RTP before the ACK");
    ua.ack(None).await;
    let bye = ua
        .sip
        .expect("BYE ", 4000)
        .await
        .expect("BYE after the prompt");
    assert_bye_in_dialog(&ua, &bye);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let prompt = prompt_pcmu("digit-1");
    let audio = media.audio();
    assert!(
        audio.len() >= prompt.len() && audio.len() < prompt.len() + 160,
        "{} bytes of a {}-byte prompt",
        audio.len(),
        prompt.len()
    );
    assert_eq!(
        &audio[..prompt.len()],
        &prompt[..],
        "the prompt from its start"
    );
}

/// Early media (183 and a prompt before any answer) has no ACK to prove the address: it
/// stops after `early_media_unproven_s`, unless the caller's RTP has arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_early_media_stops_after_its_seconds_unless_the_caller_sends_rtp() {
    let server = start(&config_toml(FLOWS, "", "early_media_unproven_s = 1")).await;
    let silent_sink = RtpSink::bind().await;
    let talking_sink = RtpSink::bind().await;
    let mut silent = Ua::udp(&server, "1006").await;
    let mut talking = Ua::udp(&server, "1006").await;
    silent
        .invite(Some(&pcmu_offer(silent_sink.addr.port())))
        .await;
    talking
        .invite(Some(&pcmu_offer(talking_sink.addr.port())))
        .await;
    silent.sip.expect("SIP/2.0 183", 3000).await.expect("183");
    let started = Instant::now();
    let p = talking.sip.expect("SIP/2.0 183", 3000).await.expect("183");
    let _rtp = send_rtp(talking_sink.socket.clone(), media_addr(&p));
    wait_packets(&silent_sink, 10).await;
    // Past the window (1 s from the 183) with a margin: the silent caller gets nothing more.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed())).await;
    let silent_after = packets_during(&silent_sink, Duration::from_millis(700)).await;
    let talking_after = packets_during(&talking_sink, Duration::from_millis(700)).await;
    assert!(
        silent_after.is_empty(),
        "{} early packets to an unproven address after its second",
        silent_after.len()
    );
    let n = silent_sink.packets().len();
    assert!((25..=70).contains(&n), "{n} packets in the unproven second");
    assert!(
        talking_after.len() >= 25,
        "the caller sending RTP lost its early media: {}",
        talking_after.len()
    );
}

// ---------------------------------------------------------------------------------------
// Strict RTP latch

/// Once the caller's RTP latched, a second source with another SSRC can neither take the
/// audio, nor press keys, nor keep the call alive (RTP bleed, strictrtp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_a_second_source_after_the_latch_is_dropped() {
    let server = start(&config_toml(FLOWS, "", "rtp_timeout_s = 1")).await;
    let sink = RtpSink::bind().await;
    let intruder = RtpSink::bind().await;
    let mut ua = Ua::udp(&server, "1008").await;
    let ok = ua.invite_ok(Some(&pcmu_offer(sink.addr.port()))).await;
    ua.ack(None).await;
    let to = media_addr(&ok);
    // The caller talks for a moment from its SDP address, then falls silent.
    let talk = send_rtp(sink.socket.clone(), to);
    wait_packets(&sink, 10).await;
    drop(talk);
    // Another address, another SSRC: a stream and a key press (5), all along.
    let _stream = send_rtp(intruder.socket.clone(), to);
    let key = [
        (true, false, 160),
        (false, false, 320),
        (false, true, 480),
        (false, true, 480),
    ];
    for (seq, (marker, end, dur)) in (100u16..).zip(key) {
        intruder
            .socket
            .send_to(&dtmf_packet(seq, 555_000, marker, 5, end, dur), to)
            .await
            .unwrap();
    }
    // The intruder's packets do not count as the caller's: the RTP timeout hangs up.
    let bye = ua.sip.expect("BYE ", 5000).await.expect("BYE for no RTP");
    assert_bye_in_dialog(&ua, &bye);
    assert_eq!(server.handle.stats.rtp_timeouts.load(Ordering::Relaxed), 1);
    assert!(intruder.packets().is_empty(), "the intruder got our audio");
    // The key did not stop the tone: all the caller heard is tone, never digit-1.
    let tone = prompt_pcmu("tone-1khz");
    let packets = sink.packets();
    assert!(packets.len() >= 30, "{} packets", packets.len());
    for p in &packets {
        assert!(
            tone.chunks(160).any(|c| c == &p.payload[..]),
            "a packet that is not the tone: the intruder's key was taken"
        );
    }
}
