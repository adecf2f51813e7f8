//! The parser against the RFC 4475 torture corpus, mutations of it, and the URIs rsip misreads.

use super::headers::{parse_via, top_via_of, values};
use super::uri::check_request_uri;
use super::*;
use crate::sip::normalize::{frame, normalize};
use crate::sip::outgoing::response;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rsip::message::HasHeaders;
use rsip::{Method, Request, SipMessage};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(serde::Deserialize, Debug)]
struct Expectation {
    section: String,
    expect: String,
    unsupported: Option<u16>,
    #[allow(dead_code)]
    server_response: Option<u16>,
    parses: Option<bool>,
    #[allow(dead_code)]
    note: Option<String>,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475")
}

fn corpus() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("fixture dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("dat") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("file name")
                .to_string();
            files.insert(name, std::fs::read(&path).expect("read fixture"));
        }
    }
    files
}

fn expectations() -> BTreeMap<String, Expectation> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.toml")).expect("toml");
    toml::from_str(&text).expect("expected.toml parses")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(format!("{name}.dat"))).expect("fixture")
}

fn outcome(r: &Result<SipMessage, ParseError>) -> String {
    match r {
        Ok(SipMessage::Request(req)) => format!("Ok(request {})", req.method()),
        Ok(SipMessage::Response(resp)) => format!("Ok(response {})", resp.status_code()),
        Err(ParseError::Unparsable(r)) => format!("Unparsable({r})"),
        Err(ParseError::Invalid { reason, request }) => {
            format!("Invalid({reason}, request: {})", request.is_some())
        }
        Err(e @ ParseError::Unsupported { .. }) => format!("Unsupported({e})"),
    }
}

#[test]
fn rfc4475_corpus_meets_expectations() {
    let files = corpus();
    let table = expectations();
    assert_eq!(files.len(), 50, "the corpus has 50 messages");
    let missing: Vec<_> = files.keys().filter(|k| !table.contains_key(*k)).collect();
    assert!(missing.is_empty(), "no expectation for {missing:?}");
    let extra: Vec<_> = table.keys().filter(|k| !files.contains_key(*k)).collect();
    assert!(extra.is_empty(), "expectation without file: {extra:?}");

    let mut failures = Vec::new();
    for (name, raw) in &files {
        let exp = &table[name];
        let r = parse(raw);
        let ok = match exp.expect.as_str() {
            "valid" => matches!(r, Ok(SipMessage::Request(_))),
            "unsupported" => matches!(
                &r,
                Err(ParseError::Unsupported { why, request })
                    if Some(why.code()) == exp.unsupported && top_via_of(request.headers()).is_some()
            ),
            "reject_400" => matches!(
                &r,
                Err(ParseError::Invalid { request: Some(req), .. })
                    if top_via_of(req.headers()).is_some()
            ),
            "drop" => match &r {
                Ok(SipMessage::Response(_)) => true,
                Ok(SipMessage::Request(_)) => false,
                Err(ParseError::Unparsable(_)) => exp.parses != Some(true),
                Err(ParseError::Invalid { request: None, .. }) => exp.parses != Some(true),
                Err(_) => false,
            },
            other => panic!("{name}: unknown expectation {other}"),
        };
        if !ok {
            failures.push(format!(
                "{name} (RFC 4475 {}): expected {}, got {}",
                exp.section,
                exp.expect,
                outcome(&r)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn request(name: &str) -> Request {
    match parse(&load(name)) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{name}: {}", outcome(&other)),
    }
}

#[test]
fn wsinv_reads_like_the_rfc_says() {
    let req = request("TC_WSINV");
    let msg = SipMessage::Request(req.clone());
    assert_eq!(req.method(), &Method::Invite);
    assert_eq!(call_id(&msg).as_deref(), Some("wsinv.ndaksdj@192.0.2.1"));
    assert_eq!(cseq(&msg), Some((9, Method::Invite)));
    assert_eq!(max_forwards(&req), Some(68));
    assert_eq!(to_tag(&msg).as_deref(), Some("1918181833n"));
    assert_eq!(from_tag(&msg).as_deref(), Some("98asjd8"));
    let vias: Vec<TopVia> = values(req.headers(), "Via")
        .map(|v| parse_via(v).expect("via"))
        .collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host, "192.0.2.2");
    assert_eq!(vias[0].branch.as_deref(), Some("390skdjuw"));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].host, "spindle.example.com");
    assert_eq!(vias[1].branch.as_deref(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].host, "192.168.255.111");
    assert_eq!(vias[2].branch.as_deref(), Some("z9hG4bK30239"));
    assert_eq!(header_value(&msg, "subject").as_deref(), Some(""));
    assert_eq!(
        header_value(&msg, "NewFangledHeader").as_deref(),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        header_value(&msg, "UnknownHeaderWithUnusualValue").as_deref(),
        Some(";;,,;;,;")
    );
    assert_eq!(
        header_value(&msg, "m").as_deref(),
        Some("\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com>;newparam=newvalue;secondparam;q=0.33")
    );
    assert_eq!(req.body().len(), 150);
    assert!(req.body().starts_with(b"v=0\r\n"));
}

#[test]
fn longreq_keeps_all_34_via_hops_in_order() {
    let req = request("TC_LONGREQ_V");
    let hosts: Vec<String> = values(req.headers(), "Via")
        .map(|v| parse_via(v).expect("via").host)
        .collect();
    assert_eq!(hosts.len(), 34);
    assert_eq!(hosts[0], "sip33.example.com");
    assert_eq!(hosts[32], "sip1.example.com");
    assert_eq!(hosts[33], "host.example.com");
    assert_eq!(req.body().len(), 150);
}

#[test]
fn datagram_content_length_rules() {
    // Extra octets after Content-Length are discarded (RFC 3261 §18.3).
    let req = request("TC_DBLREQ");
    assert_eq!(req.method(), &Method::Register);
    assert!(req.body().is_empty());
    // Binary multipart body kept exactly.
    let req = request("TC_MPART01");
    assert_eq!(req.body().len(), 553);
    assert!(req.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    // No Content-Length on a datagram: the body is the rest.
    let req = request("TC_INV2543_I");
    assert!(req.body().starts_with(b"v=0\r\n"));
    assert!(req.body().ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
    let msg = SipMessage::Request(req.clone());
    assert_eq!(top_via(&msg).and_then(|v| v.branch), None);
    assert_eq!(from_tag(&msg), None);
    assert_eq!(max_forwards(&req), None);
}

#[test]
fn invalid_reasons_name_the_problem() {
    let reason = |name: &str| match parse(&load(name)) {
        Err(ParseError::Invalid { reason, .. }) => reason,
        other => panic!("{name}: {}", outcome(&other)),
    };
    assert!(reason("TC_CLERR_I").contains("Content-Length"));
    assert!(reason("TC_MCL01_I").contains("Content-Length"));
    assert!(reason("TC_MISMATCH01_V").contains("CSeq"));
    assert!(reason("TC_MULTI01_I").contains("more than one"));
    assert!(reason("TC_INSUF_I").contains("missing"));
    assert!(reason("TC_QUOTBAL_I").contains("quoted"));
}

#[test]
fn unsupported_keeps_headers_for_the_answer() {
    match parse(&load("TC_INTMETH")) {
        Err(ParseError::Unsupported { why, request }) => {
            assert_eq!(why, Unsupported::Method);
            let code = why.code();
            let msg = SipMessage::Request(request.clone());
            assert_eq!(
                call_id(&msg).as_deref(),
                Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
            );
            assert_eq!(from_tag(&msg).as_deref(), Some("_token~1'+`*%!-."));
            let resp = response(&request, code, None, Some("abc"));
            let text = resp.to_string();
            assert!(text.starts_with("SIP/2.0 501 "), "{text}");
            assert!(text.contains("CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~"));
        }
        other => panic!("{}", outcome(&other)),
    }
}

/// The stateless answers to what rsip cannot read: each reason's code, phrase and headers,
/// as the shard sends them.
#[test]
fn unsupported_requests_get_their_code_phrase_and_headers() {
    for (name, why, status_line, allow) in [
        (
            "TC_INTMETH",
            Unsupported::Method,
            "SIP/2.0 501 Not Implemented",
            true,
        ),
        (
            "TC_BADVERS_V",
            Unsupported::Version,
            "SIP/2.0 505 Version Not Supported",
            false,
        ),
        (
            "TC_UNKSCM_V",
            Unsupported::Scheme,
            "SIP/2.0 416 Unsupported URI Scheme",
            false,
        ),
    ] {
        let Err(ParseError::Unsupported { why: got, request }) = parse(&load(name)) else {
            panic!("{name}: not unsupported");
        };
        assert_eq!(got, why, "{name}");
        let bytes = crate::sip::outgoing::response_bytes(
            &request,
            why.code(),
            Some(why.reason()),
            None,
            why.headers(),
            None,
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with(&format!("{status_line}\r\n")),
            "{name}: {text}"
        );
        let has_allow = text.contains(&format!("\r\nAllow: {}\r\n", crate::sip::ALLOW));
        assert_eq!(has_allow, allow, "{name}: {text}");
    }
}

/// One Content-Type check for every SDP a request carries (INVITE, re-INVITE, ACK): the
/// media type without case, parameters and §25.1's whitespace around `/` allowed.
#[test]
fn sdp_bodies_are_known_by_their_media_type() {
    for ct in [
        "application/sdp",
        "Application/SDP",
        "application/sdp;charset=utf-8",
        " application/sdp ; version=1",
        "application / sdp",
    ] {
        assert!(media_type_is(ct, "application/sdp"), "{ct:?}");
    }
    for ct in [
        "application/sdpx",
        "application/sd",
        "text/plain",
        "application",
        "",
        "/",
    ] {
        assert!(!media_type_is(ct, "application/sdp"), "{ct:?}");
    }
    let with = |method: &str, ctype: Option<&str>, body: &str| {
        let ctype = ctype
            .map(|c| format!("Content-Type: {c}\r\n"))
            .unwrap_or_default();
        let raw = format!(
            "{method} sip:100@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=a\r\nTo: <sip:100@example.com>\r\n\
             Call-ID: sdp1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{ctype}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse(raw.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{}", outcome(&other)),
        }
    };
    for method in ["INVITE", "ACK"] {
        let r = with(method, Some("application/SDP; x=y"), "v=0\r\n");
        assert_eq!(sdp_body(&r), Ok(Some(&b"v=0\r\n"[..])), "{method}");
        assert_eq!(sdp_body(&with(method, None, "")), Ok(None), "{method}");
        assert_eq!(sdp_body(&with(method, None, " \r\n")), Ok(None), "{method}");
        assert_eq!(
            sdp_body(&with(method, None, "v=0")),
            Err(NotSdp),
            "{method}"
        );
        let r = with(method, Some("application/sdpfoo"), "v=0");
        assert_eq!(sdp_body(&r), Err(NotSdp), "{method}");
    }
}

#[test]
fn responses_reparse_as_valid_sip() {
    for (name, raw) in corpus() {
        // Answers to invalid requests echo their bad headers: rsip must still read them.
        let (req, echoes_bad_headers) = match parse(&raw) {
            Ok(SipMessage::Request(r)) => (r, false),
            Err(ParseError::Unsupported { request, .. }) => (request, false),
            Err(ParseError::Invalid {
                request: Some(r), ..
            }) => (r, true),
            _ => continue,
        };
        for (code, reason, tag) in [
            (200u16, None, Some("t1")),
            (400, Some("Bad Request: x"), None),
            (486, None, Some("t2")),
            (100, None, None),
        ] {
            let resp = response(&req, code, reason, tag);
            let bytes = resp.to_string().into_bytes();
            if echoes_bad_headers {
                let back = SipMessage::try_from(&bytes[..]);
                assert!(
                    matches!(back, Ok(SipMessage::Response(_))),
                    "{name}: {resp}"
                );
                continue;
            }
            let back = match parse(&bytes) {
                Ok(SipMessage::Response(r)) => r,
                other => panic!("{name} {code}: {} in\n{}", outcome(&other), resp),
            };
            assert_eq!(u16::from(back.status_code().clone()), code);
            let back = SipMessage::Response(back);
            let orig = SipMessage::Request(req.clone());
            assert_eq!(call_id(&back), call_id(&orig), "{name}");
            assert_eq!(cseq(&back), cseq(&orig), "{name}");
            assert_eq!(from_tag(&back), from_tag(&orig), "{name}");
            assert_eq!(top_via(&back), top_via(&orig), "{name}");
            let vias = |m: &SipMessage| values(m.headers(), "Via").count();
            assert_eq!(vias(&back), vias(&orig), "{name}");
            let want_tag = to_tag(&orig).or(tag.map(str::to_string));
            assert_eq!(to_tag(&back), want_tag, "{name}");
            assert_eq!(header_value(&back, "Content-Length").as_deref(), Some("0"));
            if let Some(r) = reason {
                assert!(resp
                    .to_string()
                    .starts_with(&format!("SIP/2.0 {code} {r}\r\n")));
            }
        }
    }
}

fn mutate(rng: &mut StdRng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    let n = rng.gen_range(1..=4);
    for _ in 0..n {
        let len = v.len().max(1);
        match rng.gen_range(0..8) {
            0 => v.truncate(rng.gen_range(0..len)),
            1 => {
                let i = rng.gen_range(0..len);
                if let Some(b) = v.get_mut(i) {
                    *b = rng.gen();
                }
            }
            2 => {
                let i = rng.gen_range(0..=v.len());
                let tokens: [&[u8]; 10] = [
                    b"\r\n", b"\n", b" ", b",", b"\"", b"<", b">", b";", b":", b"\r\n ",
                ];
                let t = tokens[rng.gen_range(0..tokens.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 => {
                let a = rng.gen_range(0..=v.len());
                let b = rng.gen_range(a..=v.len());
                v.drain(a..b);
            }
            4 => {
                let a = rng.gen_range(0..=v.len());
                let b = rng.gen_range(a..=v.len().min(a + 64));
                let chunk: Vec<u8> = v[a..b].to_vec();
                let i = rng.gen_range(0..=v.len());
                v.splice(i..i, chunk);
            }
            5 => {
                let i = rng.gen_range(0..=v.len());
                let cl: &[u8] = match rng.gen_range(0..4) {
                    0 => b"Content-Length: 99999999999999999999999\r\n",
                    1 => b"l: 5\r\n",
                    2 => b"Via: SIP/2.0/UDP a, ,,\r\n",
                    _ => b"v:\r\n\r\n",
                };
                v.splice(i..i, cl.iter().copied());
            }
            6 => v.iter_mut().for_each(|b| {
                if *b == b'\r' {
                    *b = b' ';
                }
            }),
            _ => {
                let i = rng.gen_range(0..=v.len());
                v.insert(i, 0);
            }
        }
    }
    v
}

#[test]
fn mutated_corpus_never_panics() {
    let mut rng = StdRng::seed_from_u64(4475);
    let files: Vec<Vec<u8>> = corpus().into_values().collect();
    let mut outcomes = [0usize; 4];
    for i in 0..4000 {
        let src = &files[i % files.len()];
        let m = mutate(&mut rng, src);
        match parse(&m) {
            Ok(_) => outcomes[0] += 1,
            Err(ParseError::Invalid { .. }) => outcomes[1] += 1,
            Err(ParseError::Unsupported { .. }) => outcomes[2] += 1,
            Err(ParseError::Unparsable(_)) => outcomes[3] += 1,
        }
        let _ = normalize(&m);
        let _ = frame(&m, 65536);
        let _ = frame(&m, 200);
        let cut = rng.gen_range(0..=m.len());
        let _ = frame(&m[..cut], 65536);
    }
    // The mutations must reach every kind of outcome, or they test too little.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}

#[test]
fn stream_framing_of_the_corpus_with_content_length() {
    for (name, raw) in corpus() {
        let Ok(norm) = normalize(&raw) else { continue };
        if !norm
            .windows(15)
            .any(|w| w.eq_ignore_ascii_case(b"content-length:"))
        {
            assert_eq!(
                frame(&norm, 65536),
                crate::sip::normalize::Frame::Invalid,
                "{name}"
            );
            continue;
        }
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&norm);
        stream.extend_from_slice(&norm);
        assert_eq!(
            frame(&stream, 65536),
            crate::sip::normalize::Frame::KeepAlive(4)
        );
        let rest = &stream[4..];
        assert_eq!(
            frame(rest, 65536),
            crate::sip::normalize::Frame::Complete(norm.len()),
            "{name}"
        );
        assert_eq!(
            frame(&rest[..norm.len() - 1], 65536),
            crate::sip::normalize::Frame::Incomplete,
            "{name}"
        );
    }
}

/// The errors' texts are the reason phrases of the 400s that answer them: they read as before
/// they were types.
#[test]
fn header_errors_read_as_reason_phrases() {
    let cases: [(HeaderError, &str); 6] = [
        (HeaderError::Missing("Via"), "missing Via"),
        (
            HeaderError::MoreThanOne("Max-Forwards"),
            "more than one Max-Forwards",
        ),
        (
            HeaderError::Malformed("Via", GrammarError::NoSentBy),
            "malformed Via: no sent-by",
        ),
        (
            HeaderError::Malformed("From", GrammarError::BareUri),
            "malformed From: URI with ?, comma or whitespace must be inside <>",
        ),
        (GrammarError::CSeqNumber.into(), "malformed CSeq number"),
        (
            HeaderError::CSeqMethodMismatch,
            "CSeq method does not match the request method",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
    assert_eq!(
        RequestUriError::Headers.to_string(),
        "headers in the Request-URI"
    );
}

#[test]
fn method_names_are_rsips_own() {
    // `method_name` stands in for rsip's Display on the wire: the same text for every method
    // rsip knows, and `known_method` reads each back (case-sensitively).
    for m in Method::all() {
        assert_eq!(method_name(m), m.to_string());
        assert_eq!(super::headers::known_method(&m.to_string()), Some(m));
    }
    assert_eq!(super::headers::known_method("invite"), None);
    assert_eq!(super::headers::known_method("FOO"), None);
}

#[test]
fn response_bytes_write_what_the_built_response_holds() {
    // The bytes are written from the request's headers; the built Response copies the same
    // ones: the two agree, a To without a tag gets ours, and a second From is not copied.
    let raw = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1\r\n\
               Via: SIP/2.0/UDP h2;branch=z9hG4bK2\r\nFrom: <sip:x@y>;tag=f\r\n\
               To: <sip:a@b> \r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nMax-Forwards: 70\r\n\
               Content-Length: 0\r\n\r\n";
    let req = Request::try_from(raw.as_bytes()).expect("parse");
    let bytes = crate::sip::outgoing::response_bytes(&req, 180, None, Some("t9"), &[], None);
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let built = response(&req, 180, None, Some("t9"));
    let mut expected = "SIP/2.0 180 Ringing\r\n".to_string();
    for h in built.headers.iter() {
        expected.push_str(&format!("{h}\r\n"));
    }
    expected.push_str("\r\n");
    assert_eq!(text, expected);
    assert!(text.contains("\r\nTo: <sip:a@b>;tag=t9\r\n"), "{text}");
    assert_eq!(text.matches("Via: ").count(), 2, "{text}");
}

mod request_uri {
    use super::*;

    #[allow(clippy::result_large_err)]
    fn req(line: &str) -> Result<SipMessage, ParseError> {
        parse(
            format!(
                "{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
    }

    fn uri_of(line: &str) -> rsip::Uri {
        match req(line) {
            Ok(SipMessage::Request(r)) => r.uri,
            Err(e) => panic!("{line}: {e}"),
            Ok(_) => panic!("{line}: response"),
        }
    }

    #[test]
    fn request_uris_rsip_misreads_are_read_by_hand() {
        let u = uri_of("OPTIONS sip:first.last@example.com SIP/2.0");
        assert_eq!(u.auth.map(|a| a.user).as_deref(), Some("first.last"));
        assert_eq!(u.host_with_port.host.to_string(), "example.com");

        let u = uri_of("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0");
        assert_eq!(
            u.auth.map(|a| a.user).as_deref(),
            Some("user;par=u%40example.net")
        );

        let u = uri_of("OPTIONS sip:bob@[2001:db8::1]:5070;lr SIP/2.0");
        assert_eq!(
            u.host_with_port.host,
            rsip::Host::IpAddr("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(u.host_with_port.port, Some(rsip::Port::from(5070)));
        assert_eq!(u.params, vec![rsip::Param::Lr]);
    }

    #[test]
    fn bad_request_uris_get_400_or_416() {
        for line in [
            "OPTIONS <sip:a@b> SIP/2.0",
            "OPTIONS sip:a@b?Route=x SIP/2.0",
            "OPTIONS sip:a@b; lr SIP/2.0",
            "OPTIONS a@b SIP/2.0",
        ] {
            assert!(
                matches!(
                    req(line),
                    Err(ParseError::Invalid {
                        request: Some(_),
                        ..
                    })
                ),
                "{line}"
            );
        }
        assert!(matches!(
            req("OPTIONS tel:+15551234 SIP/2.0"),
            Err(ParseError::Unsupported {
                why: Unsupported::Scheme,
                ..
            })
        ));
        // rsip alone reads this one as user "foo", password "bar" and no scheme.
        assert_eq!(
            uri_of("OPTIONS foo:bar@pivotd.test SIP/2.0").scheme,
            Some(rsip::Scheme::Other("foo".into()))
        );
        assert_eq!(
            uri_of("OPTIONS sip:bar@pivotd.test SIP/2.0").scheme,
            Some(rsip::Scheme::Sip)
        );
    }

    #[test]
    fn top_via_reads_rport_and_received() {
        let v: TopVia = "SIP/2.0/udp 10.0.0.1:5070 ; branch=z9hG4bKx;rport;received=1.2.3.4"
            .parse()
            .expect("via");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received.as_deref(), Some("1.2.3.4"));
        assert_eq!(v.sent_by, "10.0.0.1:5070");
        let v: TopVia = "SIP/2.0/TCP [::1]:5061;rport=5062".parse().expect("v6");
        assert_eq!(v.host, "[::1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport, Some(Some(5062)));
        assert!("SIP/2.0/UDP".parse::<TopVia>().is_err());
        assert!("SIP/2.0/UDP h:99999".parse::<TopVia>().is_err());
    }

    /// Issue 7, symptom 1: a multi-byte character in the first bytes of the Request-URI
    /// panicked the shard that parsed it (`uri[..4]` cut a character in two).
    #[test]
    fn multibyte_request_uris_are_answered_not_panicked_on() {
        for method in ["OPTIONS", "INVITE"] {
            match req_with_method(method, &format!("{method} ab:é SIP/2.0")) {
                Err(ParseError::Unsupported {
                    why: Unsupported::Scheme,
                    request,
                }) => {
                    assert!(top_via_of(request.headers()).is_some())
                }
                other => panic!("{method} ab:é: {:?}", other.map(|m| m.to_string())),
            }
        }
        for uri in [
            "ab:é", "sip€", "sipé:x", "sip:é", "sips:€", "a:𝄞", "é", "ab:", "x:€€",
        ] {
            let _ = check_request_uri(uri);
        }
        assert!(check_request_uri("sip:a@b?x=1").is_err());
        assert!(check_request_uri("SIPS:a@b?x=1").is_err());
        assert!(check_request_uri("ab:é?x").is_ok());
    }

    /// Every multi-byte character at every byte position of the request line: no panic, and
    /// anything that is still a request with a Via can be answered.
    #[test]
    fn multibyte_characters_anywhere_in_the_request_line() {
        let mut answered = 0;
        for line in [
            "OPTIONS sip:a@b SIP/2.0",
            "INVITE sips:1234@pivotd.test SIP/2.0",
            // A scheme shorter than `sip:`: the character lands inside the first 4 bytes.
            "MESSAGE im:bob@pivotd.test SIP/2.0",
        ] {
            let method = line.split(' ').next().unwrap_or_default();
            for ch in ["é", "€", "𝄞", "\u{80}"] {
                for at in 0..=line.len() {
                    let mut l = line.as_bytes().to_vec();
                    l.splice(at..at, ch.bytes());
                    let l = String::from_utf8_lossy(&l).into_owned();
                    match req_with_method(method, &l) {
                        Ok(SipMessage::Request(r)) => {
                            let _ = response(&r, 200, None, Some("t"));
                            answered += 1;
                        }
                        Err(ParseError::Unsupported { request, .. })
                        | Err(ParseError::Invalid {
                            request: Some(request),
                            ..
                        }) => {
                            let _ = response(&request, 400, Some(&l), None);
                            answered += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        assert!(answered > 100, "{answered}");
    }

    #[allow(clippy::result_large_err)]
    fn req_with_method(method: &str, line: &str) -> Result<SipMessage, ParseError> {
        parse(
            format!(
                "{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
    }
}
