//! SIPp against a running pivotd: the scenarios in `sipp-scenarios/` run as tests.

mod common;

use common::http::{HttpReq, HttpResp, HttpServer};
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "tone-1khz" }, children = { _ = { module = "hangup" } } }
[[accounts.callflows]]
numbers = ["5001"]
flow = { module = "sleep", data = { duration = 20 } }
[[accounts.callflows]]
numbers = ["5002"]
flow = { module = "sleep", data = { duration = 1 }, children = { _ = { module = "play", data = { id = "digit-1" } } } }
[[accounts.callflows]]
numbers = ["5003"]
flow = { module = "collect_dtmf", data = { timeout = 1 }, children = { _ = { module = "hangup" } } }
"#;

/// The audio a caller receives is the prompt, byte for byte, in well-formed RTP.
fn assert_received_prompt(sink: &RtpSink, id: &str) {
    let packets = sink.packets();
    let expected = prompt_pcmu(id);
    assert!(!packets.is_empty(), "no RTP received");
    let audio = sink.audio();
    // The last packet is padded with μ-law silence up to 160 bytes.
    assert!(
        audio.len() >= expected.len() && audio.len() < expected.len() + 160,
        "received {} bytes of audio, prompt has {}",
        audio.len(),
        expected.len()
    );
    assert_eq!(
        &audio[..expected.len()],
        &expected[..],
        "audio differs from the prompt"
    );
    assert!(audio[expected.len()..].iter().all(|b| *b == 0xFF));
    let ssrc = packets[0].ssrc;
    assert!(packets[0].marker, "first packet carries the marker bit");
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "sequence numbers are consecutive"
        );
        // 160 per packet; a pacer that fell more than 60 ms behind (a stalled test machine)
        // skips to the present, so its timestamp moves on by the time it lost, in whole
        // packets, while the sequence stays consecutive and no audio is lost.
        let step = w[1].ts.wrapping_sub(w[0].ts);
        assert!(
            step >= 160 && step % 160 == 0 && step < 8000 * 5,
            "timestamps advance by 160 (or whole packets after a stall): {step}"
        );
        assert_eq!(w[1].ssrc, ssrc);
        assert!(!w[1].marker);
        assert_eq!(w[1].pt, 0, "PCMU was negotiated");
    }
}

async fn basic_call(tcp: bool) {
    let server = start(&config_toml(FLOWS, "", "")).await;
    let sink = RtpSink::bind().await;
    let target = if tcp { server.tcp } else { server.udp };
    let port = sink.addr.port().to_string();
    let run = sipp(
        "basic_call.xml",
        tcp,
        target,
        &["-s", "5000", "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    // The BYE came after the whole prompt; give the last packet a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_received_prompt(&sink, "tone-1khz");
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 1);
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 1);
    assert!(eventually(5, || server.handle.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_call_over_udp_plays_the_prompt_and_hangs_up() {
    basic_call(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_call_over_tcp_plays_the_prompt_and_hangs_up() {
    basic_call(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gets_200_and_487() {
    let server = start(&config_toml(FLOWS, "", "")).await;
    let run = sipp("cancel.xml", false, server.udp, &["-s", "5001"]).await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 0);
    assert!(
        eventually(5, || server.handle.active_calls() == 0).await,
        "the call ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_answered_with_allow_accept_supported() {
    let server = start(&config_toml(FLOWS, "", "")).await;
    for tcp in [false, true] {
        let target = if tcp { server.tcp } else { server.udp };
        let run = sipp("options.xml", tcp, target, &[]).await;
        assert!(run.ok, "sipp (tcp={tcp}) failed:\n{}", run.output);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_sent_twice_is_one_transaction_and_one_call() {
    let server = start(&config_toml(FLOWS, "", "")).await;
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let run = sipp(
        "invite_twice.xml",
        false,
        server.udp,
        &["-s", "5002", "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert_eq!(
        server.handle.stats.total.load(Ordering::Relaxed),
        1,
        "one call"
    );
    assert_eq!(
        server
            .handle
            .endpoint
            .stats
            .server_transactions
            .load(Ordering::Relaxed),
        1,
        "one INVITE server transaction (the ACK makes none, the BYE is pivotd's own)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_number_gets_404() {
    let server = start(&config_toml(FLOWS, "", "")).await;
    for tcp in [false, true] {
        let target = if tcp { server.tcp } else { server.udp };
        let run = sipp("unknown_number.xml", tcp, target, &["-s", "9999"]).await;
        assert!(run.ok, "sipp (tcp={tcp}) failed:\n{}", run.output);
    }
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_only_an_unsupported_codec_gets_488() {
    let server = start(&config_toml(FLOWS, "", "")).await;
    let run = sipp("no_common_codec.xml", false, server.udp, &["-s", "5000"]).await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_leave_no_transaction_dialog_port_or_stream_behind() {
    // Fast RFC 3261 timers, so every transaction ends (Timer H/J/K) within the test.
    let server = start(&config_toml(
        r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "hangup" } } }
"#,
        // SIPp at 40 calls/s is a load generator: trusted, as the README says to list one.
        "timer_t1_ms = 20\ntimer_t2_ms = 200\ntimer_t4_ms = 100\ntrusted_sources = [\"127.0.0.1\"]",
        "",
    ))
    .await;
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let before = server.handle.media_use();
    for tcp in [false, true] {
        let target = if tcp { server.tcp } else { server.udp };
        let run = sipp_calls(
            "basic_call.xml",
            tcp,
            target,
            60,
            &[
                "-s", "5000", "-key", "rtp_port", &port, "-r", "40", "-l", "30",
            ],
        )
        .await;
        assert!(run.ok, "sipp (tcp={tcp}) failed:\n{}", run.output);
    }
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 120);
    assert_drained(&server, before).await;
}

// ---------------------------------------------------------------------------------------
// Packet loss: SIPp `-lost 10` drops a tenth of what it sends (INVITEs, ACKs, CANCELs, 200s
// to BYE). RFC 3261's retransmissions must carry every call through.

const LOSSY_CALLS: u32 = 50;

/// Fast RFC 3261 timers for the lossy runs: a lost message is retransmitted (and a BYE
/// waiting for a lost ACK goes) within tenths of a second rather than seconds.
const LOSSY_TIMERS: &str = "timer_t1_ms = 100\ntimer_t2_ms = 1000";

/// Short calls (answered and hung up at once) are where a BYE sent before the ACK hurts: the
/// caller that lost our 200 gets a BYE for a call it never saw answered (RFC 3261 §15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_calls_all_complete_with_ten_percent_loss() {
    let server = start(&config_toml(FLOWS, LOSSY_TIMERS, "")).await;
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let run = sipp_calls(
        "basic_call.xml",
        false,
        server.udp,
        LOSSY_CALLS,
        &[
            "-s", "5003", "-key", "rtp_port", &port, "-r", "10", "-l", "20", "-lost", "10",
        ],
    )
    .await;
    run.assert_all_completed(LOSSY_CALLS);
    // One call per call, however often its INVITE was resent.
    let total = server.handle.stats.total.load(Ordering::Relaxed);
    assert_eq!(total, u64::from(LOSSY_CALLS));
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_calls_all_complete_with_ten_percent_loss() {
    let web = HttpServer::start(|_: &HttpReq| {
        HttpResp::json(r#"{"module": "play", "data": {"id": "digit-2"}}"#)
    })
    .await;
    let flows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "collect_dtmf", data = {{ max_digits = 4, collection_name = "pin", interdigit_timeout = 3000 }}, children = {{ _ = {{ module = "pivot", data = {{ voice_url = "{}" }} }} }} }}
[pivot]
blacklist_cidrs = []
"#,
        web.url("/pin")
    );
    let server = start(&config_toml(&flows, LOSSY_TIMERS, "")).await;
    let run = sipp_calls(
        "ivr_dtmf.xml",
        false,
        server.udp,
        LOSSY_CALLS,
        &["-s", "6000", "-r", "10", "-l", "40", "-lost", "10"],
    )
    .await;
    run.assert_all_completed(LOSSY_CALLS);
    // Every call's keys (1, 2, then # to end) reached the flow.
    let reqs = web.requests();
    assert_eq!(reqs.len(), LOSSY_CALLS as usize);
    for r in &reqs {
        assert_eq!(
            r.field("Digits[pin]").as_deref(),
            Some("12"),
            "{}",
            r.query()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_all_complete_with_ten_percent_loss() {
    let server = start(&config_toml(FLOWS, LOSSY_TIMERS, "")).await;
    let run = sipp_calls(
        "cancel_lossy.xml",
        false,
        server.udp,
        LOSSY_CALLS,
        &["-s", "5001", "-r", "10", "-l", "20", "-lost", "10"],
    )
    .await;
    run.assert_all_completed(LOSSY_CALLS);
    assert_eq!(server.handle.stats.answered.load(Ordering::Relaxed), 0);
    assert!(
        eventually(5, || server.handle.active_calls() == 0).await,
        "every call ended"
    );
}
