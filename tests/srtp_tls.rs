//! SRTP on the call path over TLS (issue 15), end to end: pivotd's own offer in the 200 to an
//! INVITE without one (a late offer) carries SDES keys by the same policy as a fork's offer,
//! keyed by the answer in the ACK (and with SRTP required, an ACK that cannot key it ends the
//! call, nothing sent in clear); and `required`'s RTP/SAVP offer to a bridged phone (two
//! baresips with `mediaenc=srtp-mand` hear each other; a phone without SRTP fails the fork).
//! A raw TLS client (tokio-rustls, `RawSip::tls`) opens pivotd's SRTP with the crate's own
//! `media::srtp`, so what is heard is checked by content.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use common::baresip::{logged_message, Baresip};
use common::bridge::{pcm_of, send_tone, tone_share, Caller, ToneFile};
use common::http::{HttpReq, HttpResp, HttpServer};
use common::tls::TestCa;
use common::*;
use pivotd::media::srtp::sdes::{self, CryptoLine};
use pivotd::media::srtp::{SrtpKey, SrtpReceiver};

const REALM: &str = "pivotd.test";

/// 5000 plays the 1 kHz tone (looped) then hangs up.
const PLAY_FLOW: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "tone-1khz", loop_count = 10 }, children = { _ = { module = "hangup" } } }
"#;

/// A server with a TLS listener (a certificate `ca` signed), unauthenticated callers allowed,
/// the account's own keys first (`encryption = …`).
async fn tls_server(ca: &TestCa, account_keys: &str, callflows: &str) -> TestServer {
    let (cert, key) = ca.issue("server", "pivotd-test");
    let sip = format!(
        "tls = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\nallow_unauthenticated = true\n",
        cert.display(),
        key.display()
    );
    start(&config_toml(
        &format!("{account_keys}\n{callflows}"),
        &sip,
        "",
    ))
    .await
}

fn tls_addr(server: &TestServer) -> SocketAddr {
    server.handle.tls[0]
}

/// An INVITE for 5000 without a body (a late offer), over `sip`'s transport.
fn offerless_invite(sip: &RawSip, call_id: &str) -> String {
    let local = sip.local();
    let t = sip.transport();
    let scheme_param = if t == "TLS" { ";transport=tls" } else { "" };
    format!(
        "INVITE sip:5000@{REALM} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{REALM}>;tag=f{call_id}\r\nTo: <sip:5000@{REALM}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local}{scheme_param}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The ACK of `ok` carrying `sdp` (the answer to pivotd's offer), or none.
fn ack_with(sip: &RawSip, ok: &str, call_id: &str, sdp: Option<&str>) -> String {
    let local = sip.local();
    let body = sdp.map_or("Content-Length: 0\r\n\r\n".to_string(), |b| {
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
    });
    format!(
        "ACK sip:5000@{REALM} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{REALM}>;tag=f{call_id}\r\nTo: {}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\n{body}",
        token(),
        header(ok, "To").unwrap()
    )
}

/// An answer SDP: PCMU at `media`, on `proto`, with `crypto` lines.
fn answer_sdp(media: SocketAddr, proto: &str, crypto: &[String]) -> String {
    let mut sdp = format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n",
        media.port()
    );
    for c in crypto {
        sdp.push_str(&format!("a=crypto:{c}\r\n"));
    }
    sdp
}

/// The `a=crypto` values of a message's SDP.
fn crypto_values(msg: &str) -> Vec<String> {
    body(msg)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=crypto:").map(str::to_string))
        .collect()
}

/// The datagram an `RtpSink` packet was (pivotd sends no CSRC and no extension).
fn datagram(p: &RtpPacket) -> Vec<u8> {
    let mut d = vec![0x80, p.pt | if p.marker { 0x80 } else { 0 }];
    d.extend_from_slice(&p.seq.to_be_bytes());
    d.extend_from_slice(&p.ts.to_be_bytes());
    d.extend_from_slice(&p.ssrc.to_be_bytes());
    d.extend_from_slice(&p.payload);
    d
}

/// Sends an offerless INVITE over TLS and returns pivotd's 200 (its offer).
async fn late_offer_call(sip: &mut RawSip, call_id: &str) -> String {
    let invite = offerless_invite(sip, call_id);
    sip.send(invite.as_bytes()).await;
    sip.expect("SIP/2.0 200", 5000)
        .await
        .expect("200 with pivotd's offer")
}

/// `encryption = "optional"` over TLS: an INVITE without SDP gets a 200 whose offer is
/// RTP/AVP with one SDES line per suite (best effort, as a fork's offer); the ACK answers
/// with one of them and its own key; what pivotd plays is SRTP under the key of the line
/// chosen, and opens to the prompt's bytes (none of them readable on the wire).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_offer_over_tls_carries_sdes_keys_and_the_acks_answer_keys_the_call() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "encryption = \"optional\"", PLAY_FLOW).await;
    let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
    let call_id = token();
    let ok = late_offer_call(&mut sip, &call_id).await;
    assert!(m_audio(&ok).contains(" RTP/AVP "), "{ok}");
    let offered = crypto_values(&ok);
    assert_eq!(offered.len(), 3, "one line per suite: {ok}");
    // We choose pivotd's second line (AES_CM_128_HMAC_SHA1_32) and answer with our key.
    let theirs: CryptoLine = sdes::parse_value(offered[1].as_bytes()).expect("a usable line");
    let ours = CryptoLine {
        tag: theirs.tag,
        key: SrtpKey::generate(theirs.key.suite),
    };
    let media = RtpSink::bind().await;
    let sdp = answer_sdp(media.addr, "RTP/AVP", &[ours.to_value()]);
    let ack = ack_with(&sip, &ok, &call_id, Some(&sdp));
    sip.send(ack.as_bytes()).await;

    let enough = eventually(5, || media.packets().len() >= 50).await;
    assert!(enough, "pivotd plays: {} packets", media.packets().len());
    let prompt = prompt_pcmu("tone-1khz");
    let mut opener = SrtpReceiver::new(&theirs.key).unwrap();
    let mut audio = Vec::new();
    for p in media.packets() {
        assert!(
            !p.payload
                .windows(32)
                .any(|w| prompt.windows(32).any(|q| q == w)),
            "audio in clear on the wire"
        );
        let plain = opener
            .unprotect(&datagram(&p))
            .expect("SRTP under pivotd's key");
        audio.extend_from_slice(plain.get(12..).unwrap_or(&[]));
    }
    let head = prompt.get(..1600).expect("a prompt of 200 ms at least");
    assert!(
        audio.windows(head.len()).any(|w| w == head),
        "the prompt's bytes, opened ({} bytes)",
        audio.len()
    );
    // Over TLS with SRTP, the call is counted as one once it ends.
    let bye = ack_with(&sip, &ok, &call_id, None)
        .replacen("ACK sip:", "BYE sip:", 1)
        .replace("CSeq: 1 ACK", "CSeq: 2 BYE");
    sip.send(bye.as_bytes()).await;
    assert!(
        sip.expect("SIP/2.0 200", 3000).await.is_some(),
        "BYE answered"
    );
}

/// `encryption = "required"`: the late offer over TLS is RTP/SAVP with SDES lines. An ACK
/// whose answer is plain RTP/AVP, or that has no SDP, cannot be refused: pivotd ends the call
/// with a BYE that says why (`Reason`), the event log too, and not one packet reaches the
/// caller's media in clear. Over UDP a late offer cannot carry keys: 488 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_srtp_ends_a_late_offer_whose_ack_cannot_key_it() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "encryption = \"required\"", PLAY_FLOW).await;
    for plain_answer in [true, false] {
        let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
        let call_id = token();
        let ok = late_offer_call(&mut sip, &call_id).await;
        assert!(m_audio(&ok).contains(" RTP/SAVP "), "{ok}");
        assert_eq!(crypto_values(&ok).len(), 3, "{ok}");
        let media = RtpSink::bind().await;
        let sdp = answer_sdp(media.addr, "RTP/AVP", &[]);
        let ack = ack_with(&sip, &ok, &call_id, plain_answer.then_some(sdp.as_str()));
        // The caller's RTP before and after, as a phone sends: it latches nothing into clear.
        pivotd_media_poke(&media, &ok).await;
        sip.send(ack.as_bytes()).await;
        let bye = sip
            .expect("BYE ", 5000)
            .await
            .unwrap_or_else(|| panic!("pivotd ends the call (plain answer: {plain_answer})"));
        let reason = header(&bye, "Reason").unwrap_or_else(|| panic!("a Reason: {bye}"));
        assert!(
            reason.starts_with("SIP ;cause=488") && reason.contains("SRTP is required"),
            "{reason}"
        );
        pivotd_media_poke(&media, &ok).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            media.packets().is_empty(),
            "nothing in clear: {:?}",
            media.packets().len()
        );
        let lines = event_lines(&server, &call_id).await;
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("BYE from server") && l.contains("SRTP is required")),
            "{lines:#?}"
        );
    }
    // Over UDP: no keys may be offered, so no late offer either.
    let mut udp = RawSip::udp(server.udp).await;
    let invite = offerless_invite(&udp, &token());
    udp.send(invite.as_bytes()).await;
    let refused = udp.expect("SIP/2.0 488", 5000).await.expect("488 over UDP");
    assert_eq!(
        header(&refused, "Warning").as_deref(),
        Some("399 pivotd \"SRTP required\"")
    );
    let gone = eventually(5, || server.handle.active_calls() == 0).await;
    assert!(gone, "{} calls left", server.handle.active_calls());
}

/// A few plain RTP packets from the caller's media socket to pivotd's offered port.
async fn pivotd_media_poke(media: &RtpSink, ok: &str) {
    for seq in 0..3u16 {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        let _ = media.socket.send_to(&p, media_addr(ok)).await;
    }
}

/// 6002 rings device d1 (2001); when the bridge fails, its `_` child plays the 1 kHz tone.
/// d2 (2002) is the calling phone.
const BRIDGE_FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["6002"]
flow = { module = "device", data = { id = "d1", timeout = 10 }, children = { _ = { module = "play", data = { id = "tone-1khz", loop_count = 3 } } } }
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
[[accounts.devices]]
id = "d2"
username = "2002"
password = "s3cret"
"#;

/// Waits until `device` has a binding over TLS.
async fn registered_over_tls(server: &TestServer, device: &str, log: impl Fn() -> String) {
    assert_eq!(registered_transport(server, device, log).await, "TLS");
}

/// The phone d2 (`mediaenc=srtp-mand`) calls 6002 over TLS, sending `freq` for `secs`; the
/// phone d1 (`b_params`) is registered first and sends 1 kHz. Both phones, once the caller's
/// call has ended (its recording is closed).
async fn call_between_phones(
    server: &TestServer,
    ca: &TestCa,
    b_params: &str,
    a_tone: &ToneFile,
    b_tone: &ToneFile,
) -> (Baresip, Baresip) {
    let b = Baresip::start_tls(
        tls_addr(server),
        "2001",
        "s3cret",
        REALM,
        &ca.ca,
        b_tone.path(),
        &[],
        b_params,
    )
    .await;
    registered_over_tls(server, "d1", || b.log()).await;
    let a = Baresip::start_tls(
        tls_addr(server),
        "2002",
        "s3cret",
        REALM,
        &ca.ca,
        a_tone.path(),
        &[&format!("/dial sip:6002@{REALM}")],
        ";mediaenc=srtp-mand",
    )
    .await;
    let ended = eventually(30, || a.heard().is_some()).await;
    assert!(
        ended,
        "the caller's call did not end:\n{}\n---- callee:\n{}",
        a.log(),
        b.log()
    );
    (a, b)
}

/// `encryption = "required"`: two baresips over TLS with `mediaenc=srtp-mand`. pivotd answers
/// the caller with SRTP and offers the bridged phone RTP/SAVP with its own SDES lines; both
/// legs are SRTP and each phone hears the other's tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_srtp_bridges_two_phones_over_tls_and_each_hears_the_other() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "encryption = \"required\"", BRIDGE_FLOWS).await;
    let (a_tone, b_tone) = (ToneFile::new(450.0, 8), ToneFile::new(1000.0, 30));
    let (a, b) = call_between_phones(
        &server,
        &ca,
        ";answermode=auto;mediaenc=srtp-mand",
        &a_tone,
        &b_tone,
    )
    .await;
    let (a_log, b_log) = (a.log(), b.log());
    let invite = logged_message(&b_log, "INVITE sip:2001-", "m=audio")
        .unwrap_or_else(|| panic!("no INVITE in the callee's log:\n{b_log}"));
    assert!(invite.contains(" RTP/SAVP "), "{invite}");
    assert_eq!(invite.matches("a=crypto:").count(), 3, "{invite}");
    let answered = logged_message(&a_log, "SIP/2.0 200 ", "m=audio")
        .unwrap_or_else(|| panic!("no 200 with SDP in the caller's log:\n{a_log}"));
    assert!(answered.contains(" RTP/SAVP "), "{answered}");
    let heard_by_a = a.heard().unwrap();
    let share = tone_share(&heard_by_a[heard_by_a.len() / 2..], 1000.0);
    assert!(share > 0.5, "the caller hears the callee's 1 kHz: {share}");
    let b_ended = eventually(10, || b.heard().is_some()).await;
    assert!(b_ended, "the callee's call did not end:\n{b_log}");
    let heard_by_b = b.heard().unwrap();
    let share = tone_share(&heard_by_b[heard_by_b.len() / 2..], 450.0);
    assert!(share > 0.3, "the callee hears the caller's 450 Hz: {share}");
}

/// `encryption = "required"`: the bridged phone has no SRTP. Its fork fails (it cannot answer
/// the RTP/SAVP offer with a key), the bridge's failure branch plays to the caller (heard,
/// encrypted, by the caller), and the phone never hears the caller in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_srtp_fails_the_fork_to_a_phone_without_srtp() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "encryption = \"required\"", BRIDGE_FLOWS).await;
    let (a_tone, b_tone) = (ToneFile::new(450.0, 20), ToneFile::new(700.0, 30));
    let (a, b) = call_between_phones(&server, &ca, ";answermode=auto", &a_tone, &b_tone).await;
    let b_log = b.log();
    let invite = logged_message(&b_log, "INVITE sip:2001-", "m=audio")
        .unwrap_or_else(|| panic!("no INVITE in the callee's log:\n{b_log}"));
    assert!(invite.contains(" RTP/SAVP "), "{invite}");
    // baresip without SRTP refuses the RTP/SAVP offer.
    assert!(b_log.contains("SIP/2.0 488 "), "{b_log}");
    // The failure branch's 1 kHz, heard by the caller through SRTP.
    let heard_by_a = a.heard().unwrap();
    let share = tone_share(&heard_by_a[heard_by_a.len() / 2..], 1000.0);
    assert!(share > 0.5, "the caller hears the failure branch: {share}");
    // The callee heard nothing of the caller.
    if let Some(pcm) = b.heard() {
        let share = tone_share(&pcm, 450.0);
        assert!(share < 0.1, "the callee heard the caller in clear: {share}");
    }
}

/// What a [`TlsFork`] does with pivotd's INVITE.
#[derive(Clone, Copy)]
enum ForkScript {
    /// 183 at once with early media keyed: pivotd's first `a=crypto` line, a key of ours.
    EarlySrtp,
    /// 200 after 1 s with plain RTP/AVP (it has no SRTP), then BYE's 200.
    AnswerPlain,
}

/// A callee's SIP UAS over TLS (a `<Sip>` target at `sips:…@localhost:PORT`), with its
/// own media sink; it keeps the requests it got.
struct TlsFork {
    addr: SocketAddr,
    media: RtpSink,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFork {
    async fn start(ca: &TestCa, script: ForkScript) -> TlsFork {
        let (cert, key) = ca.issue(&format!("fork-{}", token()), "localhost");
        let acceptor = common::tls::acceptor(&cert, &key);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let media = RtpSink::bind().await;
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, m) = (requests.clone(), media.addr);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r) = (acceptor.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (mut rd, wr) = tokio::io::split(tls);
                    let wr = Arc::new(tokio::sync::Mutex::new(wr));
                    let mut buf = Vec::new();
                    while let Some(msg) = read_message(&mut rd, &mut buf).await {
                        r.lock().unwrap().push(msg.clone());
                        let Some((answer, delay)) = fork_answer(&msg, script, addr, m) else {
                            continue;
                        };
                        let wr = wr.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let mut w = wr.lock().await;
                            let _ = w.write_all(answer.as_bytes()).await;
                            let _ = w.flush().await;
                        });
                    }
                });
            }
        });
        TlsFork {
            addr,
            media,
            requests,
            task,
        }
    }

    fn uri(&self, user: &str) -> String {
        format!("sips:{user}@localhost:{}", self.addr.port())
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TlsFork {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fork's response to a request and when it goes: its INVITE's (by script), 200 to a
/// BYE, 200 and 487 to a CANCEL.
fn fork_answer(
    req: &str,
    script: ForkScript,
    us: SocketAddr,
    media: SocketAddr,
) -> Option<(String, Duration)> {
    let method = req.split_whitespace().next()?;
    let copied: String = ["Via", "From", "Call-ID", "CSeq"]
        .iter()
        .filter_map(|h| header(req, h).map(|v| format!("{h}: {v}\r\n")))
        .collect();
    let to = header(req, "To")?;
    let to = if to.contains("tag=") {
        to
    } else {
        format!("{to};tag=fork")
    };
    let response = |code: u16, reason: &str, sdp: Option<String>| {
        let body = sdp.unwrap_or_default();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "SIP/2.0 {code} {reason}\r\n{copied}To: {to}\r\nContact: <sip:fork@{us};transport=tls>\r\n\
             {ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    match (method, script) {
        ("INVITE", ForkScript::EarlySrtp) => {
            let offered = crypto_values(req);
            let first: CryptoLine = sdes::parse_value(offered.first()?.as_bytes()).ok()?;
            let ours = CryptoLine {
                tag: first.tag,
                key: SrtpKey::generate(first.key.suite),
            };
            let sdp = answer_sdp(media, "RTP/AVP", &[ours.to_value()]);
            Some((response(183, "Session Progress", Some(sdp)), Duration::ZERO))
        }
        ("INVITE", ForkScript::AnswerPlain) => {
            let sdp = answer_sdp(media, "RTP/AVP", &[]);
            Some((response(200, "OK", Some(sdp)), Duration::from_millis(1000)))
        }
        ("BYE", _) => Some((response(200, "OK", None), Duration::ZERO)),
        ("CANCEL", _) => {
            // The CANCEL's 200; the INVITE's 487 follows (same Via, From, Call-ID, To).
            let ok = response(200, "OK", None);
            let invite_cseq = header(req, "CSeq")?.replace("CANCEL", "INVITE");
            let terminated = response(487, "Request Terminated", None).replace(
                &format!("CSeq: {}", header(req, "CSeq")?),
                &format!("CSeq: {invite_cseq}"),
            );
            Some((format!("{ok}{terminated}"), Duration::ZERO))
        }
        _ => None,
    }
}

/// A server whose 6100 runs a TwiML `<Dial>` (10 s) of the `<Sip>` URIs `targets` (on
/// `localhost`, trusted through `tls_ca_file`), the account's `encryption` as given; with
/// its web server.
async fn dial_server(
    ca: &TestCa,
    encryption: &str,
    targets: &[String],
) -> (HttpServer, TestServer) {
    let sips: String = targets.iter().map(|t| format!("<Sip>{t}</Sip>")).collect();
    let twiml = format!("<Response><Dial timeout=\"10\">{sips}</Dial></Response>");
    let web = HttpServer::start(move |r: &HttpReq| match r.path() {
        "/dial" => HttpResp::xml(&twiml),
        _ => HttpResp::status(404),
    })
    .await;
    let callflows = format!(
        r#"encryption = "{encryption}"
sip_targets = ["localhost"]
[[accounts.callflows]]
numbers = ["6100"]
flow = {{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml" }} }}
[pivot]
blacklist_cidrs = []
"#,
        web.url("/dial")
    );
    let (cert, key) = ca.issue("server", "pivotd-test");
    let sip = format!(
        "tls = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         allow_unauthenticated = true\ntls_ca_file = \"{}\"\n",
        cert.display(),
        key.display(),
        ca.ca.display()
    );
    (web, start(&config_toml(&callflows, &sip, "")).await)
}

/// Two forks ring at once over TLS (`encryption = "optional"`, a TwiML `<Dial>` of two `<Sip>`
/// URIs): fork A's early media (183) keys the bridge's outbound session with A's SRTP, then
/// fork B answers plain RTP. B's dialog decides:
/// the session is plain again, and B hears the caller's tone (before the fix it got SRTP
/// under A's keys, noise to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answering_fork_decides_the_keys_after_another_forks_srtp_early_media() {
    let ca = TestCa::new("pivotd test CA");
    let early = TlsFork::start(&ca, ForkScript::EarlySrtp).await;
    let plain = TlsFork::start(&ca, ForkScript::AnswerPlain).await;
    let (_web, server) = dial_server(&ca, "optional", &[early.uri("a"), plain.uri("b")]).await;
    let mut caller = Caller::new(server.udp).await;
    // `<Dial>` answers the caller first (as Twilio does); the forks ring after.
    let (ok, _) = caller.answered("6100", &[0], 10_000).await;
    let b_answered = eventually(5, || plain.requests().iter().any(|r| r.starts_with("ACK "))).await;
    assert!(
        b_answered,
        "B answered and was acknowledged\nA: {:#?}\nB: {:#?}",
        early.requests(),
        plain.requests()
    );
    // A rang with its SRTP early media until B answered: then it was cancelled.
    let a_cancelled = eventually(5, || {
        early.requests().iter().any(|r| r.starts_with("CANCEL "))
    })
    .await;
    assert!(a_cancelled, "{:#?}", early.requests());
    // Each fork was offered keys of its own; A's 183 keyed the session first.
    for fork in [&early, &plain] {
        let invite = fork
            .requests()
            .into_iter()
            .find(|r| r.starts_with("INVITE "))
            .expect("each fork got an INVITE");
        assert_eq!(crypto_values(&invite).len(), 3, "{invite}");
    }
    let seen_b = plain.media.packets().len();
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 1500).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let packets = plain.media.packets();
    let heard = pcm_of(packets.get(seen_b..).unwrap_or(&[]));
    assert!(heard.len() >= 6000, "B got {} samples", heard.len());
    assert!(
        packets.iter().all(|p| p.payload.len() == 160),
        "plain RTP only (an SRTP packet carries a tag)"
    );
    let share = tone_share(&heard, 450.0);
    assert!(
        share > 0.8,
        "the plain callee hears the caller's 450 Hz: {share}"
    );
    caller.bye(&ok).await;
    // A's early media reached a caller the `<Dial>` had answered: no 183 after the 200.
    let lines = event_lines(&server, &caller.call_id).await;
    let answered = lines.iter().position(|l| l.ends_with("→ 200"));
    let after = &lines[answered.expect("the caller's 200 is logged")..];
    assert!(!after.iter().any(|l| l.contains("→ 18")), "{lines:#?}");
}

/// `encryption = "required"`: a callee over TLS answers pivotd's RTP/SAVP offer 200 with
/// plain RTP (no key). That answer is no answer: the fork is hung up (ACK, then BYE), the
/// bridge fails at once rather than at its timeout, and not one packet reaches the callee's
/// media. The caller (over TLS, keyed by its ACK's answer to pivotd's late offer) is hung up
/// when the TwiML ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_srtp_hangs_up_a_fork_that_answers_plain_rtp() {
    let ca = TestCa::new("pivotd test CA");
    let plain = TlsFork::start(&ca, ForkScript::AnswerPlain).await;
    let (_web, server) = dial_server(&ca, "required", &[plain.uri("b")]).await;
    let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
    let call_id = token();
    let invite = offerless_invite(&sip, &call_id).replace("5000@", "6100@");
    sip.send(invite.as_bytes()).await;
    let ok = sip
        .expect("SIP/2.0 200", 5000)
        .await
        .expect("200 with pivotd's offer");
    let theirs: CryptoLine = sdes::parse_value(crypto_values(&ok)[0].as_bytes()).unwrap();
    let ours = CryptoLine {
        tag: theirs.tag,
        key: SrtpKey::generate(theirs.key.suite),
    };
    let media = RtpSink::bind().await;
    let sdp = answer_sdp(media.addr, "RTP/SAVP", &[ours.to_value()]);
    let ack = ack_with(&sip, &ok, &call_id, Some(&sdp)).replace("5000@", "6100@");
    sip.send(ack.as_bytes()).await;
    let started = std::time::Instant::now();
    let hung_up = eventually(5, || plain.requests().iter().any(|r| r.starts_with("BYE "))).await;
    assert!(
        hung_up,
        "the plain fork is hung up: {:#?}",
        plain.requests()
    );
    let invite = plain
        .requests()
        .into_iter()
        .find(|r| r.starts_with("INVITE "))
        .unwrap();
    assert!(m_audio(&invite).contains(" RTP/SAVP "), "{invite}");
    let bye = sip.expect("BYE ", 5000).await;
    assert!(bye.is_some(), "the caller is hung up after the failed Dial");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "at once, not at the Dial's timeout: {:?}",
        started.elapsed()
    );
    assert!(
        plain.media.packets().is_empty(),
        "no audio to the plain callee: {} packets",
        plain.media.packets().len()
    );
}
