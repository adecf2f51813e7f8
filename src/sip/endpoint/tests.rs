//! The endpoint over a real UDP socket, with several shards.

use std::time::Duration;

use tokio::net::UdpSocket;

use super::shard::shard_of;
use super::*;
use crate::config::SourceLimits;
use crate::health::TaskHealth;
use crate::sip::message;
use crate::sip::source::SourceGuard;

const SHARDS: usize = 4;

async fn endpoint() -> (Arc<Endpoint>, mpsc::Receiver<NewRequest>, SocketAddr) {
    let cfg = EndpointConfig {
        transport: TransportConfig {
            udp: vec!["127.0.0.1:0".parse().expect("addr")],
            tcp: Vec::new(),
            tls: Default::default(),
            max_message_bytes: 65536,
            tcp_idle_timeout: Duration::from_secs(30),
            udp_receive_buffer: 0,
            udp_readers: 1,
            sources: SourceGuard::new(SourceLimits::default()),
            health: TaskHealth::new(),
        },
        timers: Timers::default(),
        shards: SHARDS,
        app_queue: 16,
        load: Arc::new(crate::sip::overload::LoadGate::off()),
    };
    let (ep, rx) = Endpoint::start(cfg).await.expect("endpoint starts");
    let addr = ep.transport().udp_addrs()[0];
    (ep, rx, addr)
}

fn request(method: &str, call_id_header: &str) -> String {
    format!(
        "{method} sip:1000@pivotd.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfold1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@pivotd.test>;tag=f1\r\nTo: <sip:1000@pivotd.test>\r\n\
         {call_id_header}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The response to a request of `method`, skipping others (the INVITE's 100 Trying).
async fn response_to(sock: &UdpSocket, method: &str) -> rsip::Response {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("an answer in time")
            .expect("recv");
        let Ok(rsip::SipMessage::Response(resp)) = message::parse(&buf[..n]) else {
            continue;
        };
        if message::cseq(&resp).is_some_and(|(_, m)| m.to_string() == method) {
            return resp;
        }
    }
}

/// A folded Call-ID: the pre-parse scan reads none, so the INVITE goes first to the shard of
/// the empty Call-ID, which parses it and forwards it to the shard of its real Call-ID. The
/// CANCEL, written on one line, goes straight there and finds the INVITE.
#[tokio::test]
async fn a_folded_call_id_lands_in_the_shard_of_its_call() {
    let call_id = (0..)
        .map(|i| format!("fold{i}@pivotd.test"))
        .find(|id| shard_of(id.as_bytes(), SHARDS) != shard_of(b"", SHARDS))
        .expect("a Call-ID in another shard");
    let (_ep, mut app, addr) = endpoint().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.connect(addr).await.expect("connect");

    let invite = request("INVITE", &format!("Call-ID:\r\n   {call_id}"));
    assert_eq!(Transport::quick_call_id(invite.as_bytes()), b"");
    sock.send(invite.as_bytes()).await.expect("send");
    let new = tokio::time::timeout(Duration::from_secs(5), app.recv())
        .await
        .expect("the INVITE reaches the application")
        .expect("queue open");
    assert_eq!(
        message::call_id(&new.req).as_deref(),
        Some(call_id.as_str())
    );
    assert_eq!(response_to(&sock, "INVITE").await.status_code.code(), 100);

    let cancel = request("CANCEL", &format!("Call-ID: {call_id}"));
    sock.send(cancel.as_bytes()).await.expect("send");
    assert_eq!(response_to(&sock, "CANCEL").await.status_code.code(), 200);
}
