//! The SIP work of one call of scenario A, without sockets or tasks: parsing what SIPp sends
//! (INVITE, ACK, the 200 to pivotd's BYE), stamping the Via of each request, and writing
//! pivotd's 100 and 200 (with SDP). CPU time per call, one thread, so a before/after of
//! the parser and builder is not buried in the noise of a shared machine.
//!
//! cargo bench --bench sip_messages -- [CALLS]

use std::net::SocketAddr;

use pivotd::sip::message::parse;
use pivotd::sip::outgoing::response_bytes;
use pivotd::sip::transport::{stamp_via, Peer, Proto};

/// Messages as SIPp's `bench/sipp/load_uac.xml` writes them, call number `n`.
fn messages(n: u64) -> [String; 3] {
    let (l, r) = ("127.0.0.1:18010", "127.0.0.1:5060");
    let sdp = "v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let invite = format!(
        "INVITE sip:7000@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-4242-{n}-0;rport\r\n\
         From: <sip:load@{l}>;tag=4242L{n}\r\nTo: <sip:7000@bench.test>\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:load@{l};transport=UDP>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let ack = format!(
        "ACK sip:7000@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-4242-{n}-5;rport\r\n\
         From: <sip:load@{l}>;tag=4242L{n}\r\nTo: <sip:7000@bench.test>;tag=abcdefgh12345678\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\nCSeq: 1 ACK\r\n\
         Contact: <sip:load@{l};transport=UDP>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let bye_ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {r};branch=z9hG4bKabcdefghijklmnop;rport=5060\r\n\
         From: <sip:7000@bench.test>;tag=abcdefgh12345678\r\nTo: <sip:load@{l}>;tag=4242L{n}\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    [invite, ack, bye_ok]
}

/// This thread's CPU time, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the call writes.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "sip_messages: a benchmark; run it with cargo bench --bench sip_messages -- [CALLS]"
        );
        return;
    }
    let calls: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let peer = Peer {
        proto: Proto::Udp,
        remote: "127.0.0.1:18010".parse::<SocketAddr>().expect("addr"),
        local: "127.0.0.1:5060".parse::<SocketAddr>().expect("addr"),
        conn: None,
    };
    let sdp = b"v=0\r\no=pivotd 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let texts: Vec<[String; 3]> = (0..1000).map(messages).collect();
    let invites: Vec<rsip::Request> = texts
        .iter()
        .map(|[invite, _, _]| match parse(invite.as_bytes()) {
            Ok(rsip::SipMessage::Request(req)) => req,
            _ => panic!("the INVITE parses"),
        })
        .collect();
    let mut bytes_out = 0usize;
    // Five rounds of each; the least CPU time is the figure (the least disturbed by the
    // machine's other work; thread CPU time, so waiting for a core does not count).
    let (mut parsing, mut writing) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let start = thread_cpu();
        for i in 0..calls {
            let [invite, ack, ok] = &texts[(i % 1000) as usize];
            let Ok(rsip::SipMessage::Request(mut req)) = parse(invite.as_bytes()) else {
                panic!("the INVITE parses");
            };
            stamp_via(&mut req, &peer);
            let Ok(rsip::SipMessage::Request(mut ack)) = parse(ack.as_bytes()) else {
                panic!("the ACK parses");
            };
            stamp_via(&mut ack, &peer);
            let Ok(rsip::SipMessage::Response(_)) = parse(ok.as_bytes()) else {
                panic!("the 200 parses");
            };
        }
        parsing = parsing.min((thread_cpu() - start) * 1e6 / calls as f64);
        let start = thread_cpu();
        for i in 0..calls {
            let req = &invites[(i % 1000) as usize];
            bytes_out += response_bytes(req, 100, None, None, &[], None).len();
            let contact = [("Contact", "<sip:7000@127.0.0.1:5060>")];
            let answer = response_bytes(
                req,
                200,
                None,
                Some("abcdefgh12345678"),
                &contact,
                Some(("application/sdp", sdp)),
            );
            bytes_out += answer.len();
        }
        writing = writing.min((thread_cpu() - start) * 1e6 / calls as f64);
    }
    println!(
        "sip_messages: {calls} calls x 5 rounds, least CPU per call: parsing {parsing:.2} us \
         (INVITE, ACK, 200; the requests' Vias stamped), writing {writing:.2} us (100, 200 \
         with SDP); {bytes_out} bytes out"
    );
}
