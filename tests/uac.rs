//! pivotd as a UAC (the bridge's second leg, issue 10): an INVITE built by `sip::uac` goes
//! through the endpoint's INVITE client transaction to SIPp's built-in UAS, which rings and
//! answers; pivotd ACKs the 2xx and hangs up with a BYE that SIPp answers.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use pivotd::sip::endpoint::DialogEvent;
use pivotd::sip::transport::{Peer, Proto};
use pivotd::sip::uac::{InviteSpec, OutboundInvite};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_invite_rings_is_answered_acked_and_hung_up() {
    let server = start(&config_toml("", "", "")).await;
    let port = free_udp_port();
    let dir = tempdir();
    let uas = tokio::process::Command::new("timeout")
        .args(["30", "sipp", "-sn", "uas", "-m", "1", "-i", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-nostdin", "-trace_err"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let uas_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let inv = OutboundInvite::new(InviteSpec {
        request_uri: format!("sip:service@{uas_addr}"),
        to: format!("<sip:service@{uas_addr}>"),
        from: "\"pivotd\" <sip:b2bua@pivotd.test>".into(),
        local_host: server.udp.to_string(),
        peer: Peer {
            proto: Proto::Udp,
            remote: uas_addr,
            local: server.udp,
            conn: None,
        },
        route: Vec::new(),
        max_forwards: 70,
        contact_user: "b2bua".into(),
        sdp: Some(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                .into(),
        ),
    });
    let endpoint = &server.handle.endpoint;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let invite_id = endpoint.send_request(&inv.call_id, inv.request(), Some(tx.clone()));
    let mut codes = Vec::new();
    let ok = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a response in time")
            .expect("events");
        match ev {
            DialogEvent::Response { id, resp } if id == invite_id => {
                let code = resp.status_code.code();
                codes.push(code);
                if code >= 200 {
                    break resp;
                }
            }
            DialogEvent::Timeout { .. } => panic!("INVITE timed out; codes {codes:?}"),
            _ => {}
        }
    };
    assert_eq!(ok.status_code.code(), 200, "{codes:?}");
    assert!(
        codes.contains(&180),
        "the ringing reached the owner: {codes:?}"
    );
    // The 2xx's ACK is sent as is (no transaction), then a BYE in a transaction.
    let ack = inv.ack_for_2xx(&ok).expect("a Contact in the 200");
    endpoint
        .transport()
        .send(ack.proto, ack.to, ack.conn, ack.bytes);
    let bye = inv.bye_after_2xx(&ok).unwrap();
    let bye_id = endpoint.send_request(&inv.call_id, bye, Some(tx));
    let bye_ok = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a BYE response in time")
            .expect("events")
        {
            DialogEvent::Response { id, resp } if id == bye_id => break resp,
            DialogEvent::Timeout { id } if id == bye_id => panic!("BYE timed out"),
            _ => {}
        }
    };
    assert_eq!(bye_ok.status_code.code(), 200);
    let out = uas.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "SIPp's UAS call did not complete:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
