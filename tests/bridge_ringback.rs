//! A bridge's `ringback` on real sockets: while the callee rings (180, no early media of its
//! own), the caller is sent a 183 and hears the named tone as early media, checked by
//! frequency; when the callee answers the tone stops and the two parties hear each other.

mod common;

use std::time::Duration;

use common::bridge::*;
use common::*;

/// A server whose number 6000 bridges to `callee` through the account's carrier, ringing it
/// with `ringback`.
async fn server_ringing_with(callee: &Callee, ringback: &str) -> TestServer {
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "resources", data = {{ to_did = "5551234", ringback = "{ringback}" }} }}
[[accounts.resources]]
id = "carrier1"
gateway = "sip:{}"
"#,
        callee.addr
    );
    start(&config_toml(&callflows, "", "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_ringback_is_heard_as_early_media_until_the_callee_answers() {
    let callee = Callee::start(Script::Answer {
        ring_ms: 2500,
        codec: 0,
    })
    .await;
    // A steady 600 Hz, so any stretch of it is recognisable.
    let server = server_ringing_with(&callee, "tone_stream://%(2000,0,600)").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let early = caller
        .sip
        .expect("183", 3000)
        .await
        .expect("a 183 for the ringback");
    let pivotd_a = media_addr(&early);
    // The caller's own audio proves its address (pivotd sends nothing to an unproven one).
    let mut seen = Vec::new();
    let socket = caller.media.socket.clone();
    let (_, ok) = tokio::join!(
        send_tone(&socket, pivotd_a, 0, 1000.0, 1500),
        caller.final_response(6000, &mut seen),
    );
    let ok = ok.expect("a final response");
    assert_eq!(status(&ok), 200, "{ok}\nseen {seen:?}");
    caller.ack(&ok).await;
    let ringing = received_pcm(&caller.media);
    assert!(
        ringing.len() >= 4000,
        "the caller heard {} samples of ringback",
        ringing.len()
    );
    let share = tone_share(&ringback_part(&ringing), 600.0);
    assert!(share > 0.8, "the ringback is the 600 Hz tone: {share}");

    // Answered: the ringback stops and the callee is heard instead.
    let heard_before = caller.media.packets().len();
    send_tone(&callee.media.socket, callee.pivotd_media(), 0, 450.0, 1000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: Vec<i16> = received_pcm(&caller.media)
        .into_iter()
        .skip(heard_before * 160)
        .collect();
    assert!(
        after.len() >= 4000,
        "the caller got {} samples",
        after.len()
    );
    let callee_share = tone_share(&after, 450.0);
    assert!(
        callee_share > 0.8,
        "after the answer the caller hears the callee: {callee_share}"
    );
    assert!(
        tone_share(&after, 600.0) < 0.1,
        "no ringback after the answer"
    );
    caller.bye(&ok).await;
    assert!(
        eventually(5, || !callee.received("BYE").is_empty()).await,
        "the callee got the BYE"
    );
}

/// The ringback without its first and last packets (the tone's edges are not pure).
fn ringback_part(pcm: &[i16]) -> Vec<i16> {
    let n = pcm.len();
    pcm.get(160..n.saturating_sub(160)).unwrap_or(pcm).to_vec()
}

/// A pivot answer is not checked against the media library as a config is: a `ringback`
/// naming no prompt is logged, and the caller's phone rings by itself on the callee's 180.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pivot_ringback_that_names_nothing_leaves_the_callers_phone_ringing() {
    let callee = Callee::start(Script::Answer {
        ring_ms: 500,
        codec: 0,
    })
    .await;
    let web = common::http::HttpServer::start(|_| {
        common::http::HttpResp::json(
            r#"{"module":"resources","data":{"to_did":"5551234","ringback":"no-such-prompt"}}"#,
        )
    })
    .await;
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6001"]
flow = {{ module = "pivot", data = {{ voice_url = "{}" }} }}
[[accounts.resources]]
id = "carrier1"
gateway = "sip:{}"
[pivot]
blacklist_cidrs = []
"#,
        web.url("/ring"),
        callee.addr
    );
    let server = start(&config_toml(&callflows, "", "")).await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, seen) = caller.answered("6001", &[0], 5000).await;
    assert!(seen.contains(&180), "the callee's 180 is relayed: {seen:?}");
    assert!(
        !seen.contains(&183),
        "no early media without a ringback: {seen:?}"
    );
    caller.bye(&ok).await;
}
