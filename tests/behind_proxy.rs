//! pivotd behind a proxy (issue 13, `[sip] trusted_proxies`): a request forwarded by a trusted
//! proxy is the caller's — its address read from the Via the proxy stamped (`received`,
//! `rport`) — for carrier matching, credentials and per-source limits, while responses and
//! in-dialog requests go back through the proxy (Record-Route). The proxy here is a raw socket
//! on 127.0.0.1 that writes what Kamailio would; a direct caller's second Via is never believed.

mod common;

use std::net::SocketAddr;

use common::*;

/// 5000 answers, plays a short prompt and hangs up (so pivotd sends a BYE).
const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "digit-7" }, children = { _ = { module = "hangup" } } }
"#;

/// A carrier sending from 127.0.0.3, and a device (so an unknown caller is challenged).
const CARRIER_AND_DEVICE: &str = r#"
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
[[accounts.resources]]
id = "carrier1"
gateway = "sip:127.0.0.3:5060"
inbound_cidrs = ["127.0.0.3/32"]
"#;

const PROXY: &str = "trusted_proxies = [\"127.0.0.1/32\"]\n";

/// Where the caller's media goes: the discard port, nothing listens.
fn media() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

/// `msg` (one Via, `;rport` last on it) as the proxy at `proxy` forwards it: the caller's Via
/// stamped with the address the proxy saw it from (`seen`), the proxy's own Via on top and its
/// Record-Route.
fn via_proxy(msg: &str, proxy: SocketAddr, seen: SocketAddr) -> String {
    let (line, rest) = msg.split_once("\r\n").unwrap();
    let stamped = format!(";received={};rport={}\r\n", seen.ip(), seen.port());
    let rest = rest.replacen(";rport\r\n", &stamped, 1);
    format!(
        "{line}\r\nVia: SIP/2.0/UDP {proxy};branch=z9hG4bKp{};rport\r\n\
         Record-Route: <sip:{proxy};lr>\r\n{rest}",
        token()
    )
}

/// The next final response to an INVITE whose Call-ID is one of `call_ids` (provisional
/// responses and pivotd's own requests skipped), or a panic after 5 s.
async fn final_response(sip: &mut RawSip, call_ids: &[&str]) -> String {
    loop {
        let m = sip.recv(5000).await.expect("a final response");
        let ours = header(&m, "Call-ID").is_some_and(|c| call_ids.contains(&c.as_str()));
        if m.starts_with("SIP/2.0") && ours && status(&m) >= 200 {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_behind_the_proxy_is_answered_and_the_bye_follows_its_record_route() {
    let toml = config_toml(&format!("{FLOWS}{CARRIER_AND_DEVICE}"), PROXY, "");
    let server = start(&toml).await;
    let mut proxy = RawSip::udp(server.udp).await;
    let p = proxy.local();

    // The proxy's own probe: one Via, answered as any OPTIONS.
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK{};rport\r\n\
         From: <sip:proxy@{p}>;tag=o1\r\nTo: <sip:{}>\r\nCall-ID: probe-{}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        server.udp,
        token(),
        server.udp,
        token()
    );
    proxy.send(options.as_bytes()).await;
    let answer = proxy
        .recv(3000)
        .await
        .expect("an answer to the proxy's OPTIONS");
    assert_eq!(status(&answer), 200, "{answer}");

    // The carrier's INVITE, from behind a NAT as the proxy saw it.
    let call_id = format!("carrier-{}", token());
    let caller: SocketAddr = "10.0.0.5:5060".parse().unwrap();
    let invite = raw_invite(caller, "5000", &call_id, media());
    let seen: SocketAddr = "127.0.0.3:40000".parse().unwrap();
    proxy.send(via_proxy(&invite, p, seen).as_bytes()).await;
    let ok = final_response(&mut proxy, &[&call_id]).await;
    assert_eq!(
        status(&ok),
        200,
        "the carrier is served without credentials: {ok}"
    );
    let record_route = format!("<sip:{p};lr>");
    assert_eq!(
        header(&ok, "Record-Route").as_deref(),
        Some(record_route.as_str()),
        "the 2xx copies the Record-Route: {ok}"
    );
    // Both Vias come back, the top one (the proxy's) first: the response goes to the proxy.
    assert!(ok.contains(&format!("Via: SIP/2.0/UDP {p};")), "{ok}");

    let to = header(&ok, "To").unwrap();
    let ack = format!(
        "ACK sip:caller@{caller} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bKpa{call_id}\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bKa{call_id};received={};rport={}\r\n\
         From: <sip:caller@{caller}>;tag=f{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n",
        seen.ip(),
        seen.port()
    );
    proxy.send(ack.as_bytes()).await;

    // pivotd hangs up after the prompt: its BYE goes to the proxy, routed by the route set.
    let bye = loop {
        let m = proxy.recv(10_000).await.expect("pivotd's BYE");
        if m.starts_with("BYE ") {
            break m;
        }
    };
    assert!(
        bye.starts_with(&format!("BYE sip:caller@{caller} SIP/2.0")),
        "the BYE's Request-URI is the caller's Contact: {bye}"
    );
    assert_eq!(
        header(&bye, "Route").as_deref(),
        Some(record_route.as_str()),
        "{bye}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_via_is_believed_only_from_the_trusted_proxy() {
    let toml = config_toml(&format!("{FLOWS}{CARRIER_AND_DEVICE}"), PROXY, "");
    let server = start(&toml).await;

    // A direct caller on 127.0.0.4 claiming, with a second Via, to relay the carrier.
    let mut direct = RawSip::udp_from("127.0.0.4", server.udp).await;
    let call_id = format!("forged-{}", token());
    let invite = raw_invite(direct.local(), "5000", &call_id, media());
    let (first, rest) = invite.split_once(";rport\r\n").unwrap();
    let forged = format!(
        "{first};rport\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKx;received=127.0.0.3;\
         rport=5060\r\n{rest}"
    );
    direct.send(forged.as_bytes()).await;
    let refused = final_response(&mut direct, &[&call_id]).await;
    assert_eq!(
        status(&refused),
        407,
        "an unknown caller is challenged: {refused}"
    );

    // Through the proxy, a caller that is not the carrier is not the carrier either.
    let mut proxy = RawSip::udp(server.udp).await;
    let call_id = format!("stranger-{}", token());
    let invite = raw_invite("10.0.0.6:5060".parse().unwrap(), "5000", &call_id, media());
    let seen: SocketAddr = "192.0.2.20:5060".parse().unwrap();
    proxy
        .send(via_proxy(&invite, proxy.local(), seen).as_bytes())
        .await;
    let refused = final_response(&mut proxy, &[&call_id]).await;
    assert_eq!(status(&refused), 407, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_rate_is_limited_per_caller_behind_the_proxy() {
    // No device: unknown callers are served; one new call per second per source.
    let sip = format!("{PROXY}source_calls_per_second = 1\n");
    let server = start(&config_toml(FLOWS, &sip, "")).await;
    let mut proxy = RawSip::udp(server.udp).await;
    let p = proxy.local();
    let a: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let b: SocketAddr = "192.0.2.11:5060".parse().unwrap();
    let calls = [
        (format!("a1-{}", token()), a),
        (format!("a2-{}", token()), a),
        (format!("b1-{}", token()), b),
    ];
    for (call_id, seen) in &calls {
        let invite = raw_invite("10.0.0.7:5060".parse().unwrap(), "5000", call_id, media());
        proxy.send(via_proxy(&invite, p, *seen).as_bytes()).await;
    }
    let ids: Vec<&str> = calls.iter().map(|(c, _)| c.as_str()).collect();
    let mut codes = std::collections::HashMap::new();
    while codes.len() < calls.len() {
        let m = final_response(&mut proxy, &ids).await;
        codes.insert(header(&m, "Call-ID").unwrap(), status(&m));
    }
    let code = |i: usize| codes[&calls[i].0];
    // A's two calls reach admission in either order (their Call-IDs pick different shards).
    let mut a_codes = [code(0), code(1)];
    a_codes.sort_unstable();
    assert_eq!(
        a_codes,
        [200, 503],
        "one call of A's in the second: {codes:?}"
    );
    assert_eq!(code(2), 200, "caller B has its own limit: {codes:?}");
    let metrics = api_get(&server, "/metrics").await.1;
    let sample = "pivotd_sip_overload_503_total{reason=\"source_call_rate\"}";
    assert_eq!(metric(&metrics, sample), 1, "{metrics}");
}
