//! SRTP's policy at the front door (issue 15): `[media] encryption` and an account's own,
//! over real sockets. SDES keys travel in the SDP, so pivotd takes them only over TLS: over
//! UDP an RTP/SAVP offer is answered as plain RTP/AVP, or refused 488 when SRTP is required,
//! as a plain offer is.

mod common;

use common::*;

const FLOW: &str = r#"[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "tone-1khz" }, children = { _ = { module = "hangup" } } }
"#;

const CRYPTO: &str =
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";

/// A raw INVITE whose offer is RTP/SAVP with an SDES line.
fn savp_invite(from: std::net::SocketAddr, call_id: &str, media: std::net::SocketAddr) -> String {
    let plain = raw_invite(from, "5000", call_id, media);
    let (head, sdp) = plain.split_once("\r\n\r\n").unwrap();
    let sdp = format!("{}{CRYPTO}", sdp.replace("RTP/AVP", "RTP/SAVP"));
    let head = head
        .lines()
        .map(|l| {
            if l.starts_with("Content-Length:") {
                format!("Content-Length: {}", sdp.len())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    format!("{head}\r\n\r\n{sdp}")
}

/// The final answer to `invite` sent over UDP.
async fn final_answer(
    server: &TestServer,
    invite: impl Fn(std::net::SocketAddr) -> String,
) -> String {
    let mut ua = RawSip::udp(server.udp).await;
    let msg = invite(ua.local());
    ua.send(msg.as_bytes()).await;
    loop {
        let m = ua.recv(5000).await.expect("a final answer");
        if status(&m) >= 200 {
            if status(&m) >= 300 {
                let ack = format!(
                    "ACK sip:5000@pivotd.test SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    header(&m, "Via").unwrap(),
                    header(&m, "From").unwrap(),
                    header(&m, "To").unwrap(),
                    header(&m, "Call-ID").unwrap()
                );
                ua.send(ack.as_bytes()).await;
            }
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_udp_an_srtp_offer_is_answered_as_plain_rtp() {
    let server = start(&config_toml(FLOW, "", "")).await;
    let sink = RtpSink::bind().await;
    let cid = format!("savp-{}", token());
    let ok = final_answer(&server, |from| savp_invite(from, &cid, sink.addr)).await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(m_audio(&ok).contains("RTP/AVP"), "{ok}");
    assert!(!ok.contains("a=crypto"), "no key over UDP: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_encryption_refuses_a_plain_offer_and_an_srtp_offer_not_over_tls() {
    let server = start(&config_toml(FLOW, "", "encryption = \"required\"")).await;
    let sink = RtpSink::bind().await;
    for savp in [false, true] {
        let cid = format!("req-{savp}-{}", token());
        let refused = final_answer(&server, |from| {
            if savp {
                savp_invite(from, &cid, sink.addr)
            } else {
                raw_invite(from, "5000", &cid, sink.addr)
            }
        })
        .await;
        assert_eq!(status(&refused), 488, "{refused}");
        assert_eq!(
            header(&refused, "Warning").as_deref(),
            Some("399 pivotd \"SRTP required\""),
            "{refused}"
        );
        // The account's event log says why.
        let lines = event_lines(&server, &cid).await;
        let why = if savp {
            "did not come over TLS"
        } else {
            "plain RTP/AVP"
        };
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("488 from server") && l.contains(why)),
            "{lines:#?}"
        );
    }
    assert_eq!(server.handle.active_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_mode_wins_over_the_media_default() {
    let flows = format!("encryption = \"off\"\n{FLOW}");
    let server = start(&config_toml(&flows, "", "encryption = \"required\"")).await;
    let sink = RtpSink::bind().await;
    let cid = format!("acct-{}", token());
    let ok = final_answer(&server, |from| raw_invite(from, "5000", &cid, sink.addr)).await;
    assert_eq!(status(&ok), 200, "{ok}");
}
