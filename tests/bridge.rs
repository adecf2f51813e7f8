//! The bridge end to end on real sockets: a caller dials pivotd, a callflow bridges it to a
//! scripted callee (a carrier of the account), and each side hears the other's tone —
//! checked by frequency, so across μ-law ↔ A-law transcoding too. Failures (busy, rejected,
//! no answer), CANCEL while ringing, BYE from either side, a carrier's 407.

mod common;

use std::time::Duration;

use common::bridge::*;
use common::*;

/// A server whose number 6000 bridges to `callee` through the account's carrier, with `flow`
/// as the callflow (JSON) and `extra` more account keys.
async fn server_for(callee: &Callee, flow: &str, resource_extra: &str) -> TestServer {
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {flow}
[[accounts.resources]]
id = "carrier1"
gateway = "sip:{}"
{resource_extra}
[pivot]
blacklist_cidrs = []
"#,
        callee.addr
    );
    start(&config_toml(&callflows, "", "")).await
}

const RESOURCES: &str = r#"{ module = "resources", data = { to_did = "5551234" } }"#;

/// Caller and callee each send a tone; each must hear the other's.
async fn talk(
    caller: &Caller,
    callee: &Callee,
    pivotd_a: std::net::SocketAddr,
    a_pt: u8,
    b_pt: u8,
) {
    let b_media = callee.pivotd_media();
    tokio::join!(
        send_tone(&caller.media.socket, pivotd_a, a_pt, 1000.0, 1200),
        send_tone(&callee.media.socket, b_media, b_pt, 450.0, 1200),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_callee = received_pcm(&callee.media);
    let at_caller = received_pcm(&caller.media);
    assert!(
        at_callee.len() >= 8000,
        "the callee got {} samples",
        at_callee.len()
    );
    assert!(
        at_caller.len() >= 8000,
        "the caller got {} samples",
        at_caller.len()
    );
    let share_callee = tone_share(&at_callee, 1000.0);
    let share_caller = tone_share(&at_caller, 450.0);
    assert!(
        share_callee > 0.8,
        "the callee hears the caller's 1 kHz: {share_callee}"
    );
    assert!(
        share_caller > 0.8,
        "the caller hears the callee's 450 Hz: {share_caller}"
    );
    // Each leg sees one stream: pivotd's own SSRC, not the other side's.
    assert!(callee
        .media
        .packets()
        .iter()
        .all(|p| p.pt == b_pt || p.pt == 101));
    assert!(caller
        .media
        .packets()
        .iter()
        .all(|p| p.pt == a_pt || p.pt == 101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_answers_both_sides_hear_each_other_and_the_caller_hangs_up() {
    let callee = Callee::start(Script::Answer {
        ring_ms: 300,
        codec: 0,
    })
    .await;
    let server = server_for(&callee, RESOURCES, "").await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, seen) = caller.answered("6000", &[0], 5000).await;
    assert!(
        seen.contains(&180),
        "the callee's ringing reached the caller: {seen:?}"
    );
    let invite = callee
        .received("INVITE")
        .pop()
        .expect("the carrier got an INVITE");
    assert!(
        invite.starts_with("INVITE sip:5551234@127.0.0.1:"),
        "{invite}"
    );
    // pivotd stays in the media path: its own address and codecs, not the caller's.
    assert!(!body(&invite).contains(&caller.media.addr.port().to_string()));
    assert_eq!(header(&invite, "Max-Forwards").as_deref(), Some("69"));
    talk(&caller, &callee, media_addr(&ok), 0, 0).await;
    // RFC 4733 from the caller passes through to the callee (key 5, its end packet thrice).
    for (i, (end, duration)) in [
        (false, 160u16),
        (false, 320),
        (true, 480),
        (true, 480),
        (true, 480),
    ]
    .into_iter()
    .enumerate()
    {
        let p = dtmf_packet(1000 + i as u16, 99_000, i == 0, 5, end, duration);
        caller
            .media
            .socket
            .send_to(&p, media_addr(&ok))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        eventually(3, || callee.media.packets().iter().any(|p| p.pt == 101
            && p.payload.first() == Some(&5)
            && p.payload.get(1).is_some_and(|b| b & 0x80 != 0)))
        .await,
        "the callee got the caller's key 5 as RFC 4733"
    );
    caller.bye(&ok).await;
    assert!(
        eventually(5, || !callee.received("BYE").is_empty()).await,
        "the callee got the BYE"
    );
    // A CDR per leg, each naming the other.
    let b_call_id = header(&invite, "Call-ID").unwrap();
    let store = server.handle.store.clone();
    let cdrs = || {
        store
            .cdrs(
                ACCOUNT,
                &pivotd::store::CdrQuery {
                    created_from: None,
                    created_to: None,
                    after: None,
                    limit: 10,
                },
            )
            .unwrap()
    };
    assert!(eventually(5, || cdrs().len() == 2).await, "{:?}", cdrs());
    let all = cdrs();
    let a = all
        .iter()
        .find(|c| c.call_id == caller.call_id)
        .expect("the caller's CDR");
    let b = all
        .iter()
        .find(|c| c.call_id == b_call_id)
        .expect("the callee's CDR");
    assert_eq!(a.other_leg_call_id.as_deref(), Some(b_call_id.as_str()));
    assert_eq!(
        b.other_leg_call_id.as_deref(),
        Some(caller.call_id.as_str())
    );
    assert_eq!(b.call_direction, pivotd::store::CallDirection::Outbound);
    assert!(b.to.starts_with("5551234@127.0.0.1"), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pcmu_caller_and_a_pcma_callee_hear_each_other_transcoded_and_the_callee_hangs_up() {
    let callee = Callee::start(Script::EarlyThenAnswer {
        ring_ms: 300,
        codec: 8,
    })
    .await;
    let server = server_for(&callee, RESOURCES, "").await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, seen) = caller.answered("6000", &[0], 5000).await;
    assert!(
        seen.contains(&183),
        "early media went to the caller: {seen:?}"
    );
    assert!(m_audio(&ok).contains("RTP/AVP 0"), "{ok}");
    talk(&caller, &callee, media_addr(&ok), 0, 8).await;
    callee.hang_up().await;
    let bye = caller.sip.expect("BYE ", 5000).await;
    assert!(
        bye.is_some(),
        "the caller got a BYE when the callee hung up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_carrier_gives_the_caller_486() {
    let callee = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 486,
    })
    .await;
    let server = server_for(&callee, RESOURCES, "").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let mut seen = Vec::new();
    let r = caller
        .final_response(5000, &mut seen)
        .await
        .expect("a final response");
    // resources without `_`: Kazoo's default response for USER_BUSY.
    assert_eq!(status(&r), 486, "{r}");
    assert!(
        eventually(3, || !callee.received("ACK").is_empty()).await,
        "the 486 was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_ringing_cancels_the_callee() {
    let callee = Callee::start(Script::Ring).await;
    let server = server_for(&callee, RESOURCES, "").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    assert!(caller.sip.expect("180", 5000).await.is_some());
    caller.cancel().await;
    let mut seen = Vec::new();
    let r = caller
        .final_response(5000, &mut seen)
        .await
        .expect("a final response");
    assert_eq!(status(&r), 487, "{r}");
    assert!(
        eventually(5, || !callee.received("CANCEL").is_empty()).await,
        "the callee got the CANCEL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_challenges_gets_credentials() {
    let callee = Callee::start(Script::Challenge { codec: 0 }).await;
    let server = server_for(
        &callee,
        RESOURCES,
        "username = \"trunk\"\npassword = \"secret\"",
    )
    .await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 5000).await;
    let invites = callee.received("INVITE");
    assert_eq!(invites.len(), 2, "the INVITE again with credentials");
    let auth = header(&invites[1], "Proxy-Authorization").expect("credentials");
    assert!(auth.contains("username=\"trunk\""), "{auth}");
    caller.bye(&ok).await;
}

/// Kazoo's `device` bridging example returned by a pivot server: the registered phone (a
/// callee that REGISTERed from its own socket) rings at its binding, answers, both sides hear
/// each other; its BYE ends the caller's call too (a completed bridge ends the callflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pivot_answer_bridges_to_a_registered_device_and_its_bye_ends_the_call() {
    let web = common::http::HttpServer::start(|_| {
        common::http::HttpResp::json(r#"{"module":"device","data":{"id":"d1"}}"#)
    })
    .await;
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6001"]
flow = {{ module = "pivot", data = {{ voice_url = "{}" }} }}
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
[pivot]
blacklist_cidrs = []
"#,
        web.url("/bridge")
    );
    let server = start(&config_toml(&callflows, "allow_unauthenticated = true", "")).await;
    let callee = Callee::start(Script::Answer {
        ring_ms: 200,
        codec: 0,
    })
    .await;
    let reg = callee
        .register(server.udp, "2001", "pivotd.test", "s3cret")
        .await;
    assert_eq!(status(&reg), 200, "{reg}");
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6001", &[0, 8], 8000).await;
    let invite = callee.received("INVITE").pop().expect("the phone rang");
    assert!(
        invite.starts_with(&format!("INVITE sip:2001@{} ", callee.addr)),
        "the INVITE goes to the binding: {invite}"
    );
    talk(&caller, &callee, media_addr(&ok), 0, 0).await;
    callee.hang_up().await;
    assert!(
        caller.sip.expect("BYE ", 5000).await.is_some(),
        "the caller got a BYE when the phone hung up"
    );
}

/// TwiML `<Dial action>` to a busy carrier: the action request carries Twilio's
/// `DialCallStatus=busy` and `DialSipResponseCode=486`, and its answer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twiml_dial_to_a_busy_number_reports_busy_to_its_action() {
    let web = common::http::HttpServer::start(|req| {
        if req.path().starts_with("/after") {
            common::http::HttpResp::xml(
                r#"<Response><Reject reason="busy"/></Response>"#,
            )
        } else {
            common::http::HttpResp::xml(
                r#"<Response><Dial action="/after" timeout="10"><Number>5551234</Number></Dial></Response>"#,
            )
        }
    })
    .await;
    let callee = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 486,
    })
    .await;
    let flow = format!(
        r#"{{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml" }} }}"#,
        web.url("/start")
    );
    let server = server_for(&callee, &flow, "").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let mut seen = Vec::new();
    let ok = caller
        .final_response(8000, &mut seen)
        .await
        .expect("a final response");
    // <Dial> answers the call first (as Kazoo does).
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    assert!(
        eventually(8, || web
            .requests()
            .iter()
            .any(|r| r.path().starts_with("/after")))
        .await,
        "the action was requested"
    );
    let after = web
        .requests()
        .into_iter()
        .find(|r| r.path().starts_with("/after"))
        .unwrap();
    assert_eq!(after.field("DialCallStatus").as_deref(), Some("busy"));
    assert_eq!(after.field("DialSipResponseCode").as_deref(), Some("486"));
    assert!(after.field("DialCallSid").is_some());
    assert!(!callee.received("INVITE").is_empty());
}

/// 200 bridged calls (SIPp's `uac` → pivotd → SIPp's `uas` as the carrier): every call
/// completes, and afterwards no call, transaction, dialog or RTP port is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_bridged_sipp_calls_leave_nothing_behind() {
    use std::process::Stdio;
    use std::sync::atomic::Ordering;
    let carrier_port = free_udp_port();
    let dir = tempdir();
    let uas = tokio::process::Command::new("timeout")
        .args(["90", "sipp", "-sn", "uas", "-m", "200", "-i", "127.0.0.1"])
        .args(["-p", &carrier_port.to_string(), "-nostdin", "-trace_err"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {RESOURCES}
[[accounts.resources]]
id = "carrier1"
gateway = "sip:127.0.0.1:{carrier_port}"
"#
    );
    // A load generator is a trusted source (held to the global limits only). T1 of 100 ms
    // (loopback): transactions that linger 64·T1 by RFC 3261 (Timer J, L, M) end in 6.4 s.
    let server = start(&config_toml(
        &callflows,
        "trusted_sources = [\"127.0.0.1\"]\ntimer_t1_ms = 100",
        "",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.handle.media_use();
    let uac_port = free_udp_port();
    let uac_dir = tempdir();
    let uac = tokio::process::Command::new("timeout")
        .args([
            "90", "sipp", "-sn", "uac", "-s", "6000", "-m", "200", "-r", "50",
        ])
        .args([
            "-p",
            &uac_port.to_string(),
            "-mp",
            &(uac_port + 2).to_string(),
        ])
        .args([
            "-l",
            "12",
            "-d",
            "200",
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-trace_err",
        ])
        .args(["-timeout", "60s", "-timeout_error"])
        .arg(server.udp.to_string())
        .current_dir(&uac_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("sipp");
    let text =
        String::from_utf8_lossy(&uac.stdout).into_owned() + &String::from_utf8_lossy(&uac.stderr);
    let errors: String = std::fs::read_dir(&uac_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("errors"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        uac.status.success(),
        "SIPp's calls did not all complete:\n{text}\n{errors}"
    );
    let carrier = uas.wait_with_output().await.unwrap();
    assert!(
        carrier.status.success(),
        "the carrier's side did not complete 200 calls:\n{}",
        String::from_utf8_lossy(&carrier.stdout)
    );
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 200);
    assert_drained(&server, before).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&uac_dir);
}

/// A real phone as the callee: baresip registers as device d1 and answers by itself; the
/// `device` module rings it at its binding and the caller hears the phone's audio (baresip
/// sends `media/tone-1khz.wav` as its microphone), relayed through pivotd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_module_rings_a_registered_baresip_which_answers_and_is_heard() {
    let callflows = r#"
[[accounts.callflows]]
numbers = ["6002"]
flow = { module = "device", data = { id = "d1", timeout = 10 } }
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
"#;
    let server = start(&config_toml(callflows, "allow_unauthenticated = true", "")).await;
    let phone =
        common::baresip::Baresip::start_answering(server.udp, "2001", "s3cret", "pivotd.test")
            .await;
    let registered = eventually(10, || {
        !server
            .handle
            .registrar
            .bindings_of(ACCOUNT, "d1")
            .is_empty()
    })
    .await;
    assert!(registered, "baresip did not register:\n{}", phone.log());
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6002", &[0], "").await;
    let mut seen = Vec::new();
    let ok = caller.final_response(10000, &mut seen).await;
    let ok = ok.unwrap_or_else(|| panic!("no answer; seen {seen:?}\n{}", phone.log()));
    assert_eq!(status(&ok), 200, "{ok}\n{}", phone.log());
    caller.ack(&ok).await;
    // Our RTP first: symmetric RTP on the caller's leg proves its address.
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 1500).await;
    let heard = received_pcm(&caller.media);
    assert!(
        heard.len() >= 4000,
        "the caller got {} samples\n{}",
        heard.len(),
        phone.log()
    );
    let share = tone_share(&heard[heard.len() / 2..], 1000.0);
    assert!(share > 0.5, "the caller hears the phone's 1 kHz: {share}");
    caller.bye(&ok).await;
    assert!(
        // The BYE request line in baresip's SIP trace (not "BYE" in an Allow header).
        eventually(5, || phone
            .log()
            .lines()
            .any(|l| l.trim_start().starts_with("BYE sip:")))
        .await,
        "the phone was hung up:\n{}",
        phone.log()
    );
}

/// TwiML `<Dial hangupOnStar="true">`: `*` from the caller ends the bridge (the callee gets a
/// BYE) and the document goes on (here `<Hangup/>`: the caller gets a BYE too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_from_the_caller_ends_a_dial_with_hangup_on_star_and_the_document_goes_on() {
    let web = common::http::HttpServer::start(|_| {
        common::http::HttpResp::xml(
            r#"<Response><Dial hangupOnStar="true"><Number>5551234</Number></Dial><Hangup/></Response>"#,
        )
    })
    .await;
    let callee = Callee::start(Script::Answer {
        ring_ms: 100,
        codec: 0,
    })
    .await;
    let flow = format!(
        r#"{{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml" }} }}"#,
        web.url("/start")
    );
    let server = server_for(&callee, &flow, "").await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 8000).await;
    assert!(
        eventually(5, || callee.dialog_up()).await,
        "the callee answered"
    );
    // Audio first (proves the caller's address), then * as RFC 4733 (event 10).
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 400).await;
    for (i, end) in [false, true, true, true].into_iter().enumerate() {
        let p = dtmf_packet(2000 + i as u16, 77_000, i == 0, 10, end, 480);
        caller
            .media
            .socket
            .send_to(&p, media_addr(&ok))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        eventually(5, || !callee.received("BYE").is_empty()).await,
        "* ended the bridge: the callee got a BYE"
    );
    assert!(
        caller.sip.expect("BYE ", 5000).await.is_some(),
        "the document went on to <Hangup/>"
    );
}

/// Hold and unhold mid-bridge: the caller's re-INVITE (`sendonly`, then `sendrecv`) is
/// answered by pivotd and passed to the callee as a re-INVITE of its own with `sendonly`
/// and then `sendrecv` (RFC 3264 §8.4), each acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_hold_and_unhold_reach_the_callee() {
    let callee = Callee::start(Script::Answer {
        ring_ms: 100,
        codec: 0,
    })
    .await;
    let server = server_for(&callee, RESOURCES, "").await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 5000).await;
    let reinvites = || -> Vec<String> {
        callee
            .received("INVITE")
            .into_iter()
            .filter(|r| header(r, "To").is_some_and(|t| t.contains("tag=")))
            .collect()
    };
    let held = caller.reinvite(&ok, 0, "sendonly").await;
    assert_eq!(status(&held), 200, "{held}");
    assert!(body(&held).contains("a=recvonly"), "{held}");
    assert!(
        eventually(5, || reinvites().len() == 1).await,
        "the callee got a re-INVITE"
    );
    assert!(
        body(&reinvites()[0]).contains("a=sendonly"),
        "{}",
        reinvites()[0]
    );
    assert!(
        eventually(3, || callee.received("ACK").len() >= 2).await,
        "the re-INVITE's 200 was acknowledged"
    );
    let resumed = caller.reinvite(&ok, 0, "sendrecv").await;
    assert_eq!(status(&resumed), 200, "{resumed}");
    assert!(
        eventually(5, || reinvites().len() == 2).await,
        "the callee got a second re-INVITE"
    );
    let second = &reinvites()[1];
    assert!(body(second).contains("a=sendrecv"), "{second}");
    let cseq = |m: &str| {
        header(m, "CSeq")
            .and_then(|c| {
                c.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
            })
            .unwrap_or(0)
    };
    assert!(cseq(second) > cseq(&reinvites()[0]));
    caller.bye(&ok).await;
    assert!(eventually(5, || !callee.received("BYE").is_empty()).await);
}
