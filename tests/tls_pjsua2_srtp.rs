//! pjsua2 with SRTP over TLS (issue 15's test list: "pjsua2 registering and calling over TLS
//! with SRTP: the prompt heard by content, DTMF collected"): pjsua2 (pjsip 2.15's python
//! wheel, `tests/pjsua/phone.py` with `PHONE_SRTP=mandatory`) registers over TLS trusting the
//! test CA and calls a TwiML `<Gather>` with SRTP mandatory. pivotd answers RTP/SAVP with an
//! SDES key of its own; the phone hears the 1 kHz prompt, decrypted, and the key it sends
//! (RFC 4733, encrypted) is collected by the pivot server.

mod common;

use std::time::Duration;

use common::bridge::{sox_tone, tone_share};
use common::pjsua::Pjsua;
use common::tls::{assert_one_clean_srtp_call, gather_server, TestCa};
use common::*;

const REALM: &str = "pivotd.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_calls_over_tls_with_srtp_hears_the_prompt_and_its_key_is_collected() {
    let ca = TestCa::new("pivotd test CA");
    let (web, server) = gather_server(&ca).await;
    let dir = tempdir();
    let silence = dir.join("silence.wav");
    sox_tone(&silence, 0.0, 30);
    let mut phone = Pjsua::register_tls(
        server.handle.tls[0],
        "2001",
        "s3cret",
        REALM,
        &silence,
        None,
        &ca.ca,
        true,
    )
    .await;
    let transport = registered_transport(&server, "d1", || format!("{:?}", phone.lines())).await;
    assert_eq!(transport, "TLS");
    phone.command(&format!("dial sip:5000@{REALM}")).await;
    assert!(
        phone.expect("confirmed", 10).await.is_some(),
        "{:?}",
        phone.lines()
    );
    // pivotd's answer, as pjsua2 negotiated it: RTP/SAVP (pjsua2 takes nothing else).
    assert_eq!(
        phone.expect("media ", 5).await.as_deref(),
        Some("media RTP/SAVP"),
        "{:?}",
        phone.lines()
    );
    // The prompt plays for a while, then the key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phone.command("dtmf 7").await;
    let done = || web.requests().into_iter().find(|r| r.path() == "/done");
    assert!(
        eventually(10, || done().is_some()).await,
        "the Gather's action was not asked: {:?}",
        phone.lines()
    );
    assert_eq!(done().unwrap().field("Digits").as_deref(), Some("7"));
    // <Hangup/> ends the call; what pjsua2 heard (decrypted) is the 1 kHz prompt.
    let pcm = phone.heard(10).await;
    let from = 800.min(pcm.len());
    let to = (from + 8000).min(pcm.len());
    let share = tone_share(&pcm[from..to], 1000.0);
    assert!(share > 0.5, "pjsua2 hears the 1 kHz prompt: {share}");
    // pivotd's side (counted once the call has ended): the caller's audio was SRTP, and
    // nothing it received was refused.
    assert_one_clean_srtp_call(&server).await;
    let _ = std::fs::remove_dir_all(&dir);
}
