//! Bad input against a running pivotd: the RFC 4475 torture corpus and malformed messages of
//! our own, over UDP and TCP. Every message is answered as RFC 4475 says, with 400, or dropped;
//! nothing crashes, no transaction or connection is left behind, and a real call still works
//! afterwards.
//!
//! The server config has no catch-all callflow, so a valid INVITE for a corpus number gets 404
//! and no call (no media) is ever set up by the barrage.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The one callflow: a number no corpus message dials.
const TONE: &str = "7000";
const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["7000"]
flow = { module = "play", data = { id = "tone-1khz" }, children = { _ = { module = "hangup" } } }
"#;

/// How long "no response" is waited for.
const SILENCE_MS: u64 = 300;

/// One entry of `tests/fixtures/rfc4475/expected.toml` (see the README there).
#[derive(serde::Deserialize, Debug)]
struct Expectation {
    section: String,
    expect: String,
    unsupported: Option<u16>,
    server_response: Option<u16>,
    /// What RFC 4475 says for the message over a stream transport, where it differs.
    over_tcp: Option<String>,
}

fn corpus_dir() -> std::path::PathBuf {
    repo().join("tests/fixtures/rfc4475")
}

fn corpus() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("dat") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).expect("read corpus file"));
        }
    }
    assert_eq!(files.len(), 50, "the corpus has 50 messages");
    files
}

fn expectations() -> BTreeMap<String, Expectation> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.toml")).expect("toml");
    toml::from_str(&text).expect("expected.toml parses")
}

/// The method of a request (first token of the first line), or None for a response.
fn method_of(raw: &[u8]) -> Option<String> {
    let first = raw.split(|b| *b == b'\n').next()?;
    let token = String::from_utf8_lossy(first)
        .split_whitespace()
        .next()?
        .to_string();
    (!token.starts_with("SIP/")).then_some(token)
}

/// The final status pivotd owes a corpus message over TCP, or None when it must send nothing.
/// From expected.toml; a valid INVITE without a `server_response` reaches routing, and with no
/// callflow for its number that is 404 (RFC 3261 §21.4.5).
fn expected_code(name: &str, exp: &Expectation, raw: &[u8]) -> Option<u16> {
    match exp.over_tcp.as_deref() {
        Some("wait") => return None,
        Some("reject_400") => return Some(400),
        Some(other) => panic!("{name}: unknown over_tcp {other}"),
        None => {}
    }
    if let Some(code) = exp.server_response {
        return Some(code);
    }
    match exp.expect.as_str() {
        "reject_400" => Some(400),
        "unsupported" => exp.unsupported,
        "drop" => None,
        "valid" if method_of(raw).as_deref() == Some("INVITE") => Some(404),
        other => panic!(
            "{name}: no server expectation for a {other} {:?}",
            method_of(raw)
        ),
    }
}

/// The ACK of a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3): the INVITE's top
/// Via (echoed as the response's first), From, Call-ID, the response's To, CSeq number + ACK.
fn ack_for(resp: &str) -> Vec<u8> {
    let cseq = header(resp, "CSeq").unwrap_or_default();
    let n = cseq.split_whitespace().next().unwrap_or("1");
    format!(
        "ACK sip:ack@pivotd.test SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {n} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(resp, "Via").unwrap_or_default(),
        header(resp, "From").unwrap_or_default(),
        header(resp, "To").unwrap_or_default(),
        header(resp, "Call-ID").unwrap_or_default(),
    )
    .into_bytes()
}

/// Sends `bytes` on `conn` and returns the final response (1xx skipped), or None after `ms`.
/// A non-2xx final to an INVITE is ACKed, as a client would, so its transaction ends.
async fn final_response(conn: &mut RawSip, ms: u64) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let m = conn.recv(left.as_millis() as u64).await?;
        let code = status(&m);
        if code >= 200 {
            let cseq = header(&m, "CSeq").unwrap_or_default();
            if code >= 300 && cseq.ends_with("INVITE") {
                conn.send(&ack_for(&m)).await;
            }
            return Some(m);
        }
    }
}

/// T1 = 20 ms: transactions end with Timer J/H after 1.28 s instead of 32 s, so the test can
/// show that all of them end.
const FAST_TIMERS: &str = "timer_t1_ms = 20\ntimer_t2_ms = 200\ntimer_t4_ms = 100";

fn live_server_transactions(server: &TestServer) -> u64 {
    server
        .handle
        .endpoint
        .stats
        .live_server_transactions
        .load(Ordering::Relaxed)
}

fn tcp_open(server: &TestServer) -> u64 {
    server
        .handle
        .endpoint
        .transport()
        .stats
        .tcp_open
        .load(Ordering::Relaxed)
}

/// OPTIONS from a fresh socket is answered 200: the server is alive and well.
async fn assert_alive(server: &TestServer, tcp: bool) {
    let target = if tcp { server.tcp } else { server.udp };
    let mut c = if tcp {
        RawSip::tcp(target).await
    } else {
        RawSip::udp(target).await
    };
    let msg = Msg::options(&c).build();
    c.send(&msg).await;
    let resp = c.expect("SIP/2.0", 3000).await;
    assert_eq!(
        resp.as_deref().map(status),
        Some(200),
        "server answers OPTIONS over {} after the barrage: {resp:?}",
        c.transport()
    );
}

/// A SIPp call with the tone callflow completes and the call count returns to 0.
async fn assert_call_works(server: &TestServer, tcp: bool) {
    let sink = RtpSink::bind().await;
    let target = if tcp { server.tcp } else { server.udp };
    let port = sink.addr.port().to_string();
    let before = server.handle.stats.answered.load(Ordering::Relaxed);
    let run = sipp(
        "basic_call.xml",
        tcp,
        target,
        &["-s", TONE, "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "sipp (tcp={tcp}) failed:\n{}", run.output);
    assert_eq!(
        server.handle.stats.answered.load(Ordering::Relaxed),
        before + 1
    );
    assert!(!sink.packets().is_empty(), "the caller heard the tone");
    assert!(
        eventually(5, || server.handle.active_calls() == 0).await,
        "active calls back to 0, not {}",
        server.handle.active_calls()
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-written messages.

/// A request built header by header, so tests can drop, repeat or break any part.
struct Msg {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Content-Length value; None: the body's length.
    content_length: Option<String>,
}

impl Msg {
    fn new(method: &str, user: &str, c: &RawSip) -> Msg {
        let local = c.local();
        let id: u64 = rand::random();
        Msg {
            request_line: format!("{method} sip:{user}@pivotd.test SIP/2.0"),
            headers: vec![
                (
                    "Via".into(),
                    format!(
                        "SIP/2.0/{} {local};branch=z9hG4bK{id:x};rport",
                        c.transport()
                    ),
                ),
                ("From".into(), format!("<sip:torture@{local}>;tag=t{id:x}")),
                ("To".into(), format!("<sip:{user}@pivotd.test>")),
                ("Call-ID".into(), format!("torture-{id:x}@127.0.0.1")),
                ("CSeq".into(), format!("1 {method}")),
                ("Max-Forwards".into(), "70".into()),
            ],
            body: Vec::new(),
            content_length: None,
        }
    }

    fn options(c: &RawSip) -> Msg {
        Msg::new("OPTIONS", "probe", c)
    }

    fn without(mut self, name: &str) -> Msg {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn with(mut self, name: &str, value: &str) -> Msg {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn set(mut self, name: &str, value: &str) -> Msg {
        for (n, v) in self.headers.iter_mut() {
            if n.eq_ignore_ascii_case(name) {
                *v = value.to_string();
            }
        }
        self
    }

    fn body(mut self, body: &[u8], content_length: Option<&str>) -> Msg {
        self.body = body.to_vec();
        self.content_length = content_length.map(str::to_string);
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.request_line);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        let cl = self
            .content_length
            .clone()
            .unwrap_or_else(|| self.body.len().to_string());
        out.push_str(&format!("Content-Length: {cl}\r\n\r\n"));
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed messages of our own.

/// What the server must do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// This final status.
    Code(u16),
    /// No response at all (dropped, or over TCP: waiting for the rest of the message).
    Nothing,
    /// Over TCP: this final status, then the server closes the connection.
    CodeThenClose(u16),
    /// Over TCP: no response, and the server closes the connection.
    Close,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    udp: Want,
    tcp: Want,
    check: Option<Check>,
}

/// A further check of a response: what it asserts, and the check.
type Check = (&'static str, fn(&str) -> bool);

fn case(name: &'static str, bytes: Vec<u8>, udp: Want, tcp: Want) -> Case {
    Case {
        name,
        bytes,
        udp,
        tcp,
        check: None,
    }
}

/// A number with no callflow: a valid INVITE to it gets 404.
const NOBODY: &str = "7001";

/// Random bytes from a fixed seed, so a failure can be replayed.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// The hand-written barrage, addressed from `c` (Via sent-by is its own address, with rport,
/// so UDP responses come back to it too).
fn own_cases(c: &RawSip) -> Vec<Case> {
    use Want::*;
    let opts = || Msg::options(c);
    let invite = || Msg::new("INVITE", NOBODY, c);
    let mut cases = Vec::new();

    // Truncated: the header cut in the middle of a line, no blank line. In a datagram the
    // message ends there (RFC 3261 §18.3) with To, Call-ID and CSeq cut off: 400. On a stream
    // it is simply not complete yet.
    let full = invite().build();
    let cut = full
        .windows(4)
        .position(|w| w == b"To: ")
        .map(|p| p + 10)
        .unwrap();
    cases.push(case(
        "truncated mid-line",
        full[..cut].to_vec(),
        Code(400),
        Nothing,
    ));

    // Content-Length larger than the body: 400 in a datagram (RFC 3261 §18.3); on a stream the
    // server waits for the rest (checked further in `tcp_waits_for_the_rest_of_a_body`).
    cases.push(case(
        "Content-Length larger than the body",
        opts().body(b"hello", Some("50")).build(),
        Code(400),
        Nothing,
    ));
    // Smaller: a datagram's extra octets are discarded (§18.3), the OPTIONS is fine. On a
    // stream the first 5 octets end the message; the rest starts a next one that never ends.
    cases.push(case(
        "Content-Length smaller than the body",
        opts().body(b"hello world", Some("5")).build(),
        Code(200),
        Code(200),
    ));
    for (name, cl) in [
        ("negative Content-Length", "-5"),
        ("non-numeric Content-Length", "five"),
        ("Content-Length beyond 64 bits", "99999999999999999999999"),
    ] {
        cases.push(case(
            name,
            opts().body(b"hello", Some(cl)).build(),
            Code(400),
            CodeThenClose(400),
        ));
    }

    // Mandatory headers (RFC 3261 §8.1.1), each missing in turn: without a Via there is no
    // address to answer (dropped); without the others, 400.
    cases.push(case(
        "no Via",
        opts().without("Via").build(),
        Nothing,
        Nothing,
    ));
    for (name, h) in [
        ("no From", "From"),
        ("no To", "To"),
        ("no Call-ID", "Call-ID"),
        ("no CSeq", "CSeq"),
    ] {
        cases.push(case(name, opts().without(h).build(), Code(400), Code(400)));
        cases.push(case(
            name,
            invite().without(h).build(),
            Code(400),
            Code(400),
        ));
    }
    cases.push(case(
        "CSeq method differs from the request's",
        opts().set("CSeq", "1 INVITE").build(),
        Code(400),
        Code(400),
    ));
    cases.push(case(
        "CSeq not a number",
        opts().set("CSeq", "one OPTIONS").build(),
        Code(400),
        Code(400),
    ));

    // Binary garbage: never a SIP message, never answered.
    cases.push(case("random bytes", garbage(1, 1500), Nothing, Nothing));
    let mut framed = garbage(2, 700);
    framed.extend_from_slice(b"\r\n\r\n");
    framed.extend_from_slice(&garbage(3, 300));
    cases.push(case(
        "random bytes with a blank line",
        framed,
        Nothing,
        Close,
    ));
    cases.push(case("NULs", vec![0u8; 1000], Nothing, Nothing));
    cases.push(case("0xFF", vec![0xFFu8; 1000], Nothing, Nothing));
    // Octets no URI may hold, in the Request-URI of an otherwise sound request: 400.
    let mut nul_in_uri = opts().build();
    nul_in_uri.splice(10..10, [0u8, 0xFF, 0]);
    cases.push(case(
        "NUL and 0xFF in the Request-URI",
        nul_in_uri,
        Code(400),
        Code(400),
    ));

    // Long but legal: a 10 000-character Request-URI user and 1000 Via headers.
    let mut long_uri = opts();
    long_uri.request_line = format!("OPTIONS sip:{}@pivotd.test SIP/2.0", "a".repeat(10_000));
    cases.push(case(
        "10k-character Request-URI",
        long_uri.build(),
        Code(200),
        Code(200),
    ));
    let mut vias = opts();
    for i in 0..999 {
        vias = vias.with(
            "Via",
            &format!("SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bKv{i}", i % 250),
        );
    }
    let mut many_vias = case("1000 Via headers", vias.build(), Code(200), Code(200));
    // RFC 3261 §8.2.6.2: the response copies every Via, in order.
    many_vias.check = Some(("the response carries the 1000 Vias", |resp| {
        let vias: Vec<&str> = resp.lines().filter(|l| l.starts_with("Via:")).collect();
        vias.len() == 1000
            && vias
                .last()
                .is_some_and(|v| v.contains("branch=z9hG4bKv998"))
    }));
    cases.push(many_vias);

    // Quoting: escaped quotes and backslashes, many of them, are a legal display name; an
    // unterminated quoted string is not (RFC 4475 §3.1.2.6).
    cases.push(case(
        "escaped quotes in a display name",
        opts()
            .set(
                "From",
                &format!(
                    "\"a \\\"b\\\" \\\\ c{}\" <sip:q@example.com>;tag=q1",
                    "\\\"".repeat(2000)
                ),
            )
            .build(),
        Code(200),
        Code(200),
    ));
    cases.push(case(
        "unterminated quoted display name",
        opts()
            .set("From", "\"never closed <sip:q@example.com>;tag=q2")
            .build(),
        Code(400),
        Code(400),
    ));
    cases.push(case(
        "nested angle brackets",
        opts()
            .set(
                "To",
                &format!("{}sip:probe@pivotd.test{}", "<".repeat(50), ">".repeat(50)),
            )
            .build(),
        Code(400),
        Code(400),
    ));
    cases
}

/// Sends one case on a fresh connection (TCP) or from `udp` and checks the outcome; returns a
/// description of what went wrong.
async fn run_case(server: &TestServer, tcp: bool, udp: &mut RawSip, case: &Case) -> Option<String> {
    let mut fresh;
    let c = if tcp {
        fresh = RawSip::tcp(server.tcp).await;
        &mut fresh
    } else {
        udp
    };
    // Addresses in the case were written for the UDP socket; over TCP the Via says UDP and a
    // wrong port, which a TCP server ignores (it answers on the connection, RFC 3261 §18.2.2).
    c.send(&case.bytes).await;
    let want = if tcp { case.tcp } else { case.udp };
    let got = match want {
        Want::Code(_) | Want::CodeThenClose(_) => final_response(c, 3000).await,
        Want::Nothing | Want::Close => c.recv(SILENCE_MS).await,
    };
    let got_code = got.as_deref().map(status);
    let want_code = match want {
        Want::Code(n) | Want::CodeThenClose(n) => Some(n),
        Want::Nothing | Want::Close => None,
    };
    let transport = if tcp { "TCP" } else { "UDP" };
    if got_code != want_code {
        return Some(format!(
            "{} over {transport}: expected {want_code:?}, got {got_code:?}\n{}",
            case.name,
            got.unwrap_or_default()
                .chars()
                .take(600)
                .collect::<String>()
        ));
    }
    if let (Some((what, check)), Some(resp)) = (case.check, got.as_deref()) {
        if !check(resp) {
            return Some(format!("{} over {transport}: not so: {what}", case.name));
        }
    }
    if matches!(want, Want::CodeThenClose(_) | Want::Close) && !closed_by_server(c, 3000).await {
        return Some(format!(
            "{} over {transport}: connection left open",
            case.name
        ));
    }
    if matches!(want, Want::Code(_) | Want::Nothing) && tcp && closed_by_server(c, 50).await {
        return Some(format!("{} over {transport}: connection closed", case.name));
    }
    None
}

/// Whether the server closes the TCP connection within `ms` (anything it still sends is
/// read and discarded).
async fn closed_by_server(c: &mut RawSip, ms: u64) -> bool {
    let RawSip::Tcp(s, _) = c else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn own_barrage(server: &TestServer, tcp: bool) {
    let mut udp = RawSip::udp(server.udp).await;
    let cases = own_cases(&udp);
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(f) = run_case(server, tcp, &mut udp, case).await {
            failures.push(f);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The corpus.

/// Every corpus file on its own TCP connection; the response is the one expected.toml names.
async fn corpus_over_tcp(server: &TestServer) {
    let table = expectations();
    let mut failures = Vec::new();
    let mut answered = 0;
    for (name, raw) in corpus() {
        let exp = table
            .get(&name)
            .unwrap_or_else(|| panic!("{name}: not in expected.toml"));
        let want = expected_code(&name, exp, &raw);
        // One connection per message: a message that breaks framing closes its connection.
        let mut c = RawSip::tcp(server.tcp).await;
        c.send(&raw).await;
        // A file may hold more than one message on a stream (TC_DBLREQ: a REGISTER, then an
        // INVITE), answered from different shards in either order: read the finals until the
        // expected one. With one message per file there is one final.
        let mut got = Vec::new();
        match want {
            Some(code) => {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(3000);
                while !got.iter().any(|m: &String| status(m) == code) {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match final_response(&mut c, left.as_millis() as u64).await {
                        Some(m) => got.push(m),
                        None => break,
                    }
                }
            }
            None => got.extend(c.recv(SILENCE_MS).await),
        }
        let codes: Vec<u16> = got.iter().map(|m| status(m)).collect();
        let ok = match want {
            Some(code) => codes.contains(&code),
            None => codes.is_empty(),
        };
        if !ok {
            failures.push(format!(
                "{name} (RFC 4475 {}): expected {want:?}, got {codes:?}\n{}",
                exp.section,
                got.join("\n")
            ));
        }
        if !codes.is_empty() {
            answered += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(answered > 30, "most of the corpus is answered: {answered}");
}

/// Every corpus file as one datagram. Their Vias carry no rport, so the answers go to the
/// sent-by port (5060, RFC 3261 §18.2.2), where nobody listens: only the server's health and
/// bookkeeping can be checked.
async fn corpus_over_udp(server: &TestServer) {
    let c = RawSip::udp(server.udp).await;
    let RawSip::Udp(sock, target) = &c else {
        unreachable!()
    };
    let received = || {
        server
            .handle
            .endpoint
            .transport()
            .stats
            .received
            .load(Ordering::Relaxed)
    };
    let before = received();
    let files = corpus();
    for raw in files.values() {
        sock.send_to(raw, *target).await.unwrap();
    }
    let n = files.len() as u64;
    assert!(
        eventually(5, || received() >= before + n).await,
        "every datagram was read: {} of {n}",
        received() - before
    );
}

// ---------------------------------------------------------------------------------------------
// The tests. Each runs one server through everything on one transport, then checks that a real
// call works and that no transaction, connection or call is left behind.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_tcp_is_answered_or_dropped_and_leaves_nothing_behind() {
    let server = start(&config_toml(FLOWS, FAST_TIMERS, "")).await;
    corpus_over_tcp(&server).await;
    own_barrage(&server, true).await;
    oversized_header_closes_the_connection(&server).await;
    tcp_waits_for_the_rest_of_a_body(&server).await;

    assert_eq!(
        server.handle.stats.total.load(Ordering::Relaxed),
        0,
        "no call was set up"
    );
    assert_alive(&server, true).await;
    assert_call_works(&server, true).await;
    // Over TCP Timers J and I are zero, so a transaction ends as soon as it is answered (an
    // INVITE once ACKed). Only an INVITE whose connection was closed before its ACK could
    // come (the second request of TC_DBLREQ) waits for Timer H, 64*T1 = 32 s.
    assert!(
        eventually(10, || live_server_transactions(&server) == 0).await,
        "server transactions left: {}",
        live_server_transactions(&server)
    );
    assert!(
        eventually(3, || tcp_open(&server) == 0).await,
        "tcp connections left open: {}",
        tcp_open(&server)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_udp_is_answered_or_dropped_and_leaves_nothing_behind() {
    let server = start(&config_toml(FLOWS, FAST_TIMERS, "")).await;
    corpus_over_udp(&server).await;
    own_barrage(&server, false).await;

    assert_eq!(
        server.handle.stats.total.load(Ordering::Relaxed),
        0,
        "no call was set up"
    );
    assert_alive(&server, false).await;
    assert_call_works(&server, false).await;
    // Over UDP every server transaction ends with Timer J (non-INVITE) or H (INVITE, whose
    // non-2xx final is never ACKed here), both 64*T1 = 32 s after its final response.
    assert!(
        eventually(10, || live_server_transactions(&server) == 0).await,
        "server transactions left: {}",
        live_server_transactions(&server)
    );
}

/// A header block over the 64 KiB cap: the server answers 513 Message Too Large (RFC 3261
/// §21.5.11), closes the connection, and serves the next connection.
async fn oversized_header_closes_the_connection(server: &TestServer) {
    let mut c = RawSip::tcp(server.tcp).await;
    let msg = Msg::options(&c)
        .with("X-Big", &"a".repeat(70 * 1024))
        .build();
    c.send(&msg).await;
    let resp = c.recv(2000).await;
    assert_eq!(
        resp.as_deref().map(status),
        Some(513),
        "oversized header: {resp:?}"
    );
    assert!(
        closed_by_server(&mut c, 3000).await,
        "oversized: connection left open"
    );
    assert_alive(server, true).await;
}

/// A body shorter than its Content-Length is waited for on a stream: completing it gets the
/// answer.
async fn tcp_waits_for_the_rest_of_a_body(server: &TestServer) {
    let mut c = RawSip::tcp(server.tcp).await;
    let msg = Msg::options(&c).body(b"0123456789", None).build();
    let (head, tail) = msg.split_at(msg.len() - 6);
    c.send(head).await;
    assert_eq!(
        c.recv(SILENCE_MS).await,
        None,
        "answered before the body was complete"
    );
    c.send(tail).await;
    let resp = c.expect("SIP/2.0", 3000).await;
    assert_eq!(resp.as_deref().map(status), Some(200), "{resp:?}");
}

/// A connection that stops half-way through a message is closed at the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tcp_message_is_reaped_at_the_idle_timeout() {
    let server = start(&config_toml(FLOWS, "tcp_idle_timeout_s = 1", "")).await;
    let mut c = RawSip::tcp(server.tcp).await;
    let msg = Msg::options(&c).body(b"hello", Some("50")).build();
    c.send(&msg).await;
    assert_eq!(c.recv(SILENCE_MS).await, None);
    let t0 = std::time::Instant::now();
    assert!(
        closed_by_server(&mut c, 4000).await,
        "stalled connection never closed"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "closed before the idle timeout"
    );
    assert!(eventually(2, || tcp_open(&server) == 0).await);
    assert_eq!(live_server_transactions(&server), 0);
    assert_alive(&server, true).await;
}

/// Sends every message from `c`, then reads answers for up to `ms`: the final status of each
/// request by its Call-ID (1xx skipped; a non-2xx final to an INVITE is ACKed).
async fn finals_by_call_id(c: &mut RawSip, msgs: &[Vec<u8>], ms: u64) -> BTreeMap<String, u16> {
    for m in msgs {
        c.send(m).await;
    }
    let mut got = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while got.len() < msgs.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = final_response(c, left.as_millis() as u64).await else {
            break;
        };
        got.insert(header(&m, "Call-ID").unwrap_or_default(), status(&m));
    }
    got
}

/// Issue 7, symptom 1: a Request-URI with a multi-byte character in its first bytes
/// (`OPTIONS ab:é SIP/2.0`) panicked the shard task that parsed it, and every later message
/// of that shard went unanswered while the process stayed up. Sent with 16 Call-IDs each (so
/// every shard gets some), each such request is answered; then OPTIONS with 16 other Call-IDs
/// from a fresh socket all get 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_request_uris_do_not_silence_a_shard() {
    let server = start(&config_toml(FLOWS, FAST_TIMERS, "")).await;
    let mut c = RawSip::udp(server.udp).await;
    let mut msgs = Vec::new();
    let mut want = BTreeMap::new();
    for _ in 0..16 {
        for (method, uri, code) in [
            // Unknown scheme `ab` (RFC 3261 §8.2.2.1).
            ("OPTIONS", "ab:é", 416),
            ("INVITE", "ab:é", 416),
            ("INVITE", "x:€𝄞", 416),
            // A SIP URI whose user is no configured number.
            ("INVITE", "sip:€@pivotd.test", 404),
        ] {
            let mut m = Msg::new(method, NOBODY, &c);
            m.request_line = format!("{method} {uri} SIP/2.0");
            let id = m
                .headers
                .iter()
                .find(|(n, _)| n == "Call-ID")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            want.insert(id, code);
            msgs.push(m.build());
        }
    }
    let got = finals_by_call_id(&mut c, &msgs, 5000).await;
    let wrong: Vec<String> = want
        .iter()
        .filter(|(id, code)| got.get(*id) != Some(code))
        .map(|(id, code)| format!("{id}: want {code}, got {:?}", got.get(id)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} multi-byte requests not answered as they should be:\n{}",
        wrong.len(),
        want.len(),
        wrong.join("\n")
    );

    let mut fresh = RawSip::udp(server.udp).await;
    let probes: Vec<Vec<u8>> = (0..16).map(|_| Msg::options(&fresh).build()).collect();
    let got = finals_by_call_id(&mut fresh, &probes, 5000).await;
    assert_eq!(got.len(), probes.len(), "OPTIONS answered: {got:?}");
    assert!(got.values().all(|&s| s == 200), "{got:?}");
    assert_alive(&server, false).await;
    assert_eq!(server.handle.stats.total.load(Ordering::Relaxed), 0);
}
