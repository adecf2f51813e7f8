//! Who may call (RFC 3261 §22.3): with devices configured, an INVITE is challenged (407) and
//! served only with a device's credentials, whose identity reaches the pivot request; a
//! carrier's `inbound_cidrs` need no credentials; OPTIONS is never challenged.

mod common;

use std::time::Duration;

use common::baresip::Baresip;
use common::digest::{challenges, credentials};
use common::http::{HttpResp, HttpServer};
use common::*;

const REALM: &str = "pivotd.test";
const PLAY_TONE: &str = r#"{"module": "play", "data": {"id": "tone-1khz"}}"#;

/// 5000 pivots to `web`; device 2001 belongs to user u1 (caller ID "Alice" 2001), and a
/// carrier sends from 127.0.0.3.
fn flows(web: &HttpServer) -> String {
    format!(
        r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = {{ module = "pivot", data = {{ voice_url = "{}" }} }}
[[accounts.users]]
id = "u1"
caller_id = {{ internal = {{ name = "Alice", number = "2001" }} }}
[[accounts.devices]]
id = "d1"
owner_id = "u1"
username = "2001"
password = "s3cret"
[[accounts.resources]]
id = "carrier1"
gateway = "sip:127.0.0.3:5060"
inbound_cidrs = ["127.0.0.3/32"]
[pivot]
blacklist_cidrs = []
"#,
        web.url("/start")
    )
}

/// Sends an INVITE from `sip` (CSeq `cseq`, with `extra` header lines) and returns its final
/// response, acknowledging it when it is not a 2xx.
async fn invite(sip: &mut RawSip, call_id: &str, cseq: u32, extra: &str) -> String {
    let local = sip.local();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        local.port() + 2
    );
    let branch = token();
    let head = format!(
        "INVITE sip:5000@{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Desk\" <sip:2001@{REALM}>;tag=caller{call_id}\r\n\
         To: <sip:5000@{REALM}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} INVITE\r\n\
         Contact: <sip:2001@{local}>\r\n\
         {extra}Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sip.send(head.as_bytes()).await;
    loop {
        let m = sip.recv(3000).await.expect("a final response to INVITE");
        let ours = header(&m, "CSeq").is_some_and(|c| c == format!("{cseq} INVITE"));
        if status(&m) < 200 || !ours {
            continue;
        }
        if status(&m) >= 300 {
            let to = header(&m, "To").unwrap_or_default();
            let ack = format!(
                "ACK sip:5000@{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
                 Max-Forwards: 70\r\nFrom: \"Desk\" <sip:2001@{REALM}>;tag=caller{call_id}\r\nTo: {to}\r\n\
                 Call-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
            );
            sip.send(ack.as_bytes()).await;
        }
        return m;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_is_challenged_refused_with_a_wrong_password_and_served_with_the_right_one() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server = start(&config_toml(&flows(&web), "", "")).await;
    let mut sip = RawSip::udp(server.udp).await;
    let call_id = format!("{}@auth-test", token());
    let r = invite(&mut sip, &call_id, 1, "").await;
    assert_eq!(status(&r), 407, "{r}");
    let offered = challenges(&r, "Proxy-Authenticate");
    assert_eq!(offered.len(), 2, "{r}");
    assert_eq!(offered[0].realm, REALM);
    let uri = format!("sip:5000@{REALM}");
    let wrong = credentials(&offered[0], "2001", "nope", "INVITE", &uri, 1, "c1");
    let r = invite(
        &mut sip,
        &call_id,
        2,
        &format!("Proxy-Authorization: {wrong}\r\n"),
    )
    .await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(
        web.requests().is_empty(),
        "a refused call reached the pivot server"
    );
    let right = credentials(&offered[1], "2001", "s3cret", "INVITE", &uri, 1, "c2");
    let r = invite(
        &mut sip,
        &call_id,
        3,
        &format!("Proxy-Authorization: {right}\r\n"),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(eventually(3, || !web.requests().is_empty()).await);
    let req = &web.requests()[0];
    let f = |k: &str| {
        req.field(k)
            .unwrap_or_else(|| panic!("no {k} in {}", req.query()))
    };
    // The device's owner and its caller ID, not the From header's "Desk".
    assert_eq!(f("User-ID"), "u1");
    assert_eq!(f("Caller-ID-Name"), "Alice");
    assert_eq!(f("Caller-ID-Number"), "2001");
    assert_eq!(f("Account-ID"), ACCOUNT);
    let stats = &server.handle.registrar.authenticator().stats;
    assert_eq!(stats.failures("wrong_password"), 1);
    // Inside the authenticated dialog nothing is challenged: ACK, then BYE gets its 200.
    let local = sip.local();
    let to = header(&r, "To").unwrap();
    let dialog = format!(
        "Max-Forwards: 70\r\nFrom: \"Desk\" <sip:2001@{REALM}>;tag=caller{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
    );
    let ack = format!(
        "ACK sip:5000@{local} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n{dialog}CSeq: 3 ACK\r\nContent-Length: 0\r\n\r\n",
        token()
    );
    sip.send(ack.as_bytes()).await;
    let bye = format!(
        "BYE sip:5000@{local} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n{dialog}CSeq: 4 BYE\r\nContent-Length: 0\r\n\r\n",
        token()
    );
    sip.send(bye.as_bytes()).await;
    let r = sip.expect("SIP/2.0", 3000).await.expect("an answer to BYE");
    let r = if header(&r, "CSeq").is_some_and(|c| c == "4 BYE") {
        r
    } else {
        sip.expect("SIP/2.0 200", 3000).await.expect("200 to BYE")
    };
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "CSeq").as_deref(), Some("4 BYE"), "{r}");
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_not_challenged_and_strangers_get_407_then_403() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server = start(&config_toml(&flows(&web), "", "")).await;
    let run = sipp("options.xml", false, server.udp, &[]).await;
    assert!(run.ok, "{}", run.output);
    // SIPp's basic call has no credentials: the 407 fails it, and nothing reaches pivot.
    let run = sipp(
        "basic_call.xml",
        false,
        server.udp,
        &["-s", "5000", "-key", "rtp_port", "9"],
    )
    .await;
    assert!(!run.ok, "an unauthenticated call was served");
    assert!(run.output.contains("407"), "{}", run.output);
    assert!(web.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_is_served_by_source_without_credentials() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server = start(&config_toml(&flows(&web), "", "")).await;
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let run = sipp_calls_from(
        "127.0.0.3",
        "basic_call.xml",
        false,
        server.udp,
        1,
        &["-s", "5000", "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "{}", run.output);
    let req = &web.requests()[0];
    assert!(req.field("User-ID").is_none(), "{}", req.query());
    assert_eq!(req.field("Caller-ID-Number").as_deref(), Some("sipp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_serves_strangers_but_still_identifies_devices() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server = start(&config_toml(
        &flows(&web),
        "allow_unauthenticated = true",
        "",
    ))
    .await;
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let run = sipp(
        "basic_call.xml",
        false,
        server.udp,
        &["-s", "5000", "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "{}", run.output);
    // A known device's From is still challenged, so its calls carry its identity.
    let mut sip = RawSip::udp(server.udp).await;
    let r = invite(&mut sip, &format!("{}@known", token()), 1, "").await;
    assert_eq!(status(&r), 407, "{r}");
}

/// baresip 1.0 registers, dials 5000, answers the 407 with its password, and the pivot
/// request names its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_through_a_challenge_and_pivot_sees_the_device() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server = start(&config_toml(&flows(&web), "", "")).await;
    let phone = Baresip::start_with(
        server.udp,
        "2001",
        "s3cret",
        REALM,
        Duration::from_secs(600),
        &[&format!("/dial sip:5000@{REALM}")],
    )
    .await;
    let reached = eventually(10, || !web.requests().is_empty()).await;
    assert!(reached, "no pivot request:\n{}", phone.log());
    let req = &web.requests()[0];
    assert_eq!(
        req.field("User-ID").as_deref(),
        Some("u1"),
        "{}",
        req.query()
    );
    assert_eq!(req.field("Caller-ID-Name").as_deref(), Some("Alice"));
    let log = phone.log();
    assert!(log.contains("407 Proxy Authentication Required"), "{log}");
}
