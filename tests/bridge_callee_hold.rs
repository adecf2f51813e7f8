//! The callee's hold reaches the caller (RFC 3264 §8.4): a caller dials pivotd, pivotd
//! bridges it to a scripted callee (the account's carrier), and when the callee re-INVITEs
//! with `sendonly` (then `sendrecv`) pivotd answers it itself and sends the caller a
//! re-INVITE of its own in the caller's dialog. Audio is checked by content before, during
//! and after the hold; a caller that refuses the hold (488) or crosses it (491) keeps the call.

mod common;

use std::time::Duration;

use common::bridge::*;
use common::*;

/// T1 of 100 ms (loopback): the transactions RFC 3261 keeps 64·T1 end in 6.4 s, so the
/// server can be checked for leftovers.
const FAST_TIMERS: &str = "timer_t1_ms = 100";
/// How long a refused re-INVITE's client transaction lingers (Timer D over UDP: 32 s
/// whatever T1), and some.
const AFTER_TIMER_D: u64 = 40;

/// The session id and version of a message's o= line.
fn origin(msg: &str) -> (String, u64) {
    let o = sdp_line(msg, "o=").unwrap_or_else(|| panic!("no o= line in\n{msg}"));
    let mut f = o.split_whitespace().skip(1);
    let id = f.next().unwrap_or_default().to_string();
    let version = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (id, version)
}

/// The CSeq number of a message.
fn cseq(msg: &str) -> u32 {
    header(msg, "CSeq")
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A caller bridged to a callee that answers with PCMU, hearing each other: the caller, the
/// callee, the server, its media use before the call, and pivotd's 200 to the caller.
async fn bridged() -> (Caller, Callee, TestServer, pivotd::server::MediaUse, String) {
    let callee = Callee::start(Script::Answer {
        ring_ms: 100,
        codec: 0,
    })
    .await;
    let server = carrier_server(&callee, FAST_TIMERS).await;
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 5000).await;
    hear_each_other(
        &caller,
        &callee,
        media_addr(&ok),
        (0, 1000.0),
        (0, 450.0),
        1000,
    )
    .await;
    (caller, callee, server, before, ok)
}

/// The callee holds with `sendonly`: pivotd answers it `recvonly` (RFC 3264 §6.1).
async fn callee_holds(callee: &Callee) {
    let answer = callee.reinvite(0, "sendonly").await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        body(&answer).contains("a=recvonly"),
        "recvonly answers sendonly:\n{answer}"
    );
}

/// pivotd's ACK of its re-INVITE `reinvite` reaches the caller.
async fn acked(caller: &mut Caller, reinvite: &str) {
    let ack = caller
        .sip
        .expect("ACK ", 3000)
        .await
        .expect("pivotd ACKs the caller's answer to its re-INVITE");
    assert_eq!(cseq(&ack), cseq(reinvite), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callees_hold_and_resume_reach_the_caller_and_audio_flows_after() {
    let (mut caller, callee, server, before, ok) = bridged().await;
    let pivotd_a = media_addr(&ok);
    let (session, first_version) = origin(&ok);

    callee_holds(&callee).await;
    let hold = caller
        .next_reinvite(5000)
        .await
        .expect("the caller gets a re-INVITE when the callee holds");
    assert!(body(&hold).contains("a=sendonly"), "{hold}");
    let (hold_session, hold_version) = origin(&hold);
    assert_eq!(hold_session, session, "the same session:\n{hold}");
    assert!(hold_version > first_version, "a new version:\n{hold}");
    assert_eq!(media_addr(&hold), pivotd_a, "the same media address");
    assert!(
        header(&hold, "Call-ID").as_deref() == Some(caller.call_id.as_str()),
        "in the caller's dialog:\n{hold}"
    );
    caller.respond(&hold, 200, Some("recvonly")).await;
    acked(&mut caller, &hold).await;

    // On hold: the callee's music still reaches the caller (the relay runs on), and nothing
    // goes to the callee, which said it receives nothing.
    let (a_seen, b_seen) = (caller.media.packets().len(), callee.media.packets().len());
    tokio::join!(
        send_tone(&caller.media.socket, pivotd_a, 0, 1000.0, 600),
        send_tone(&callee.media.socket, callee.pivotd_media(), 0, 300.0, 600),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let music = pcm_of(caller.media.packets().get(a_seen..).unwrap_or(&[]));
    assert!(
        music.len() >= 3200,
        "the caller got {} samples",
        music.len()
    );
    let share = tone_share(&music, 300.0);
    assert!(share > 0.8, "the caller hears the callee's music: {share}");
    assert_eq!(
        callee.media.packets().len(),
        b_seen,
        "nothing is sent to a callee that holds"
    );
    // Then the callee sends nothing for a while.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let answer = callee.reinvite(0, "sendrecv").await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(body(&answer).contains("a=sendrecv"), "{answer}");
    let resume = caller
        .next_reinvite(5000)
        .await
        .expect("the caller gets a re-INVITE when the callee resumes");
    assert!(body(&resume).contains("a=sendrecv"), "{resume}");
    assert!(cseq(&resume) > cseq(&hold));
    let (resume_session, resume_version) = origin(&resume);
    assert_eq!(resume_session, session);
    assert!(resume_version > hold_version, "{resume}");
    caller.respond(&resume, 200, Some("sendrecv")).await;
    acked(&mut caller, &resume).await;

    // Fresh audio both ways (new tones: nothing stale passes for it).
    hear_each_other(&caller, &callee, pivotd_a, (0, 1300.0), (0, 700.0), 1000).await;

    callee.hang_up().await;
    let bye = caller
        .sip
        .expect("BYE ", 5000)
        .await
        .expect("the callee's BYE ends the caller's leg");
    caller.respond(&bye, 200, None).await;
    assert_drained(&server, before).await;
}

/// The caller refuses the hold (488): the call stays up, no re-INVITE follows for the
/// resume (the caller was never held), and audio flows both ways once the callee resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_refuses_the_hold_keeps_the_call() {
    let (mut caller, callee, server, before, ok) = bridged().await;
    callee_holds(&callee).await;
    let hold = caller.next_reinvite(5000).await.expect("a re-INVITE");
    assert!(body(&hold).contains("a=sendonly"), "{hold}");
    caller.respond(&hold, 488, None).await;
    acked(&mut caller, &hold).await;

    let answer = callee.reinvite(0, "sendrecv").await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        caller.next_reinvite(1000).await.is_none(),
        "nothing to resume: the caller refused the hold"
    );
    hear_each_other(
        &caller,
        &callee,
        media_addr(&ok),
        (0, 1300.0),
        (0, 700.0),
        1000,
    )
    .await;
    caller.bye(&ok).await;
    assert!(eventually(5, || !callee.received("BYE").is_empty()).await);
    assert_drained_within(&server, before, AFTER_TIMER_D).await;
}

/// Glare both ways: the caller's own re-INVITE while pivotd's is pending gets 491 (RFC 3261
/// §14.2), and pivotd's re-INVITE answered 491 goes again within 2 s (§14.1: pivotd did not
/// choose the caller's Call-ID), is accepted, and the resume follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_crosses_the_callers_reinvite_is_sent_again() {
    let (mut caller, callee, server, before, ok) = bridged().await;
    callee_holds(&callee).await;
    let hold = caller.next_reinvite(5000).await.expect("a re-INVITE");
    let crossed = caller.reinvite(&ok, 0, "sendrecv").await;
    assert_eq!(status(&crossed), 491, "{crossed}");
    caller.respond(&hold, 491, None).await;
    acked(&mut caller, &hold).await;
    let sent_at = tokio::time::Instant::now();
    let again = caller
        .next_reinvite(5000)
        .await
        .expect("pivotd tries its re-INVITE again");
    assert!(
        sent_at.elapsed() <= Duration::from_millis(2500),
        "{:?}",
        sent_at.elapsed()
    );
    assert!(cseq(&again) > cseq(&hold));
    assert!(body(&again).contains("a=sendonly"), "{again}");
    caller.respond(&again, 200, Some("recvonly")).await;
    acked(&mut caller, &again).await;

    let answer = callee.reinvite(0, "sendrecv").await;
    assert_eq!(status(&answer), 200, "{answer}");
    let resume = caller.next_reinvite(5000).await.expect("the resume");
    assert!(body(&resume).contains("a=sendrecv"), "{resume}");
    caller.respond(&resume, 200, Some("sendrecv")).await;
    acked(&mut caller, &resume).await;
    hear_each_other(
        &caller,
        &callee,
        media_addr(&ok),
        (0, 1300.0),
        (0, 700.0),
        1000,
    )
    .await;
    callee.hang_up().await;
    let bye = caller.sip.expect("BYE ", 5000).await.expect("a BYE");
    caller.respond(&bye, 200, None).await;
    assert_drained_within(&server, before, AFTER_TIMER_D).await;
}

/// While the callee holds, the caller's own re-INVITEs are answered right (RFC 3264 §6.1):
/// `sendonly` gets `recvonly`, `inactive` gets `inactive`, and `sendrecv` gets `sendonly`
/// (the callee still holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_callee_holds_the_callers_offers_get_the_right_answers() {
    let (mut caller, callee, _server, _before, ok) = bridged().await;
    callee_holds(&callee).await;
    let hold = caller.next_reinvite(5000).await.expect("a re-INVITE");
    caller.respond(&hold, 200, Some("recvonly")).await;
    acked(&mut caller, &hold).await;
    for (offer, answer) in [
        ("sendonly", "recvonly"),
        ("inactive", "inactive"),
        ("sendrecv", "sendonly"),
    ] {
        let resp = caller.reinvite(&ok, 0, offer).await;
        assert_eq!(status(&resp), 200, "{resp}");
        assert!(
            body(&resp).contains(&format!("a={answer}")),
            "{offer} is answered {answer}:\n{resp}"
        );
    }
}
