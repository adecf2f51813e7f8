//! The pure decisions of admission: which refusal, and what it answers and counts.

use super::*;

/// A request as the endpoint hands it over: parsed by the same parser.
fn request(method: &str, uri: &str, extra: &[&str], body: &str) -> rsip::Request {
    let mut raw = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
         From: <sip:alice@example.com>;tag=a\r\n\
         To: <sip:100@example.com>\r\n\
         Call-ID: adm1@example.com\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:alice@192.0.2.1>\r\n"
    );
    for h in extra {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    match message::parse(raw.as_bytes()) {
        Ok(rsip::SipMessage::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn invite(extra: &[&str], body: &str) -> rsip::Request {
    request("INVITE", "sip:100@example.com", extra, body)
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\n";

#[test]
fn accept_admits_sdp_only_when_listed() {
    assert!(accepts_sdp("application/sdp"));
    assert!(accepts_sdp("text/plain, Application/SDP;level=1"));
    assert!(accepts_sdp("application/*"));
    assert!(accepts_sdp("*/*"));
    assert!(!accepts_sdp("text/nobodyKnowsThis"));
    assert!(!accepts_sdp(""));
    assert!(!accepts_sdp("application/sdpx"));
}

#[test]
fn rate_limiter_allows_a_second_of_burst_then_refuses() {
    let mut r = RateLimiter::new(10);
    let allowed = (0..20).filter(|_| r.allow()).count();
    assert_eq!(allowed, 10);
}

#[test]
fn rate_limiter_at_zero_allows_everything() {
    let mut r = RateLimiter::new(0);
    assert!((0..1000).all(|_| r.allow()));
}

#[test]
fn uri_schemes_other_than_sip_and_sips_are_unsupported() {
    let mut uri = invite(&[], "").uri;
    assert!(message::scheme_supported(&uri, false));
    uri.scheme = Some(rsip::Scheme::Sips);
    assert!(message::scheme_supported(&uri, true));
    // RFC 5630: a sips: Request-URI only over TLS.
    assert!(!message::scheme_supported(&uri, false));
    uri.scheme = Some(rsip::Scheme::Other("tel".into()));
    assert!(!message::scheme_supported(&uri, true));
    // rsip turns a `foo:bar@host` URI into no scheme; the parser puts `foo` back.
    let req = request("OPTIONS", "foo:bar@example.com", &[], "");
    assert_eq!(answer_other(&req, true, false).unwrap_err().code(), 416);
    let req = request("OPTIONS", "sips:pbx.test", &[], "");
    assert_eq!(answer_other(&req, false, false).unwrap_err().code(), 416);
    assert_eq!(
        answer_other(&req, true, false).unwrap(),
        Answer::Capabilities
    );
}

/// The 416 admission sends and the one the parser's stateless answer sends are one decision.
#[test]
fn the_416_of_admission_is_the_parsers() {
    let refusal = Refusal::UnsupportedScheme;
    assert_eq!(refusal.code(), 416);
    assert_eq!(refusal.code(), Unsupported::Scheme.code());
    assert_eq!(refusal.reason().as_deref(), Some("Unsupported URI Scheme"));
    assert!(refusal.headers().is_empty());
    assert!(!refusal.is_source_failure());
}

#[test]
fn require_is_refused_with_the_tags_in_unsupported() {
    assert!(check_require(&invite(&[], "")).is_ok());
    let req = invite(&["Require: 100rel", "Require: timer , foo"], "");
    let refusal = check_require(&req).unwrap_err();
    assert_eq!(refusal.code(), 420);
    assert_eq!(
        refusal.headers(),
        vec![("Unsupported", Cow::from("100rel, timer , foo"))]
    );
    assert!(!refusal.is_source_failure());
}

#[test]
fn a_body_must_be_sdp() {
    assert_eq!(
        check_content(&invite(&[], "")).unwrap(),
        None,
        "no body, no offer"
    );
    // Only whitespace is no body (no offer).
    assert_eq!(check_content(&invite(&[], "\r\n  ")).unwrap(), None);
    let sdp = invite(&["Content-Type: Application/SDP ; charset=x"], SDP);
    assert_eq!(
        check_content(&sdp).unwrap(),
        Some(SDP.as_bytes()),
        "an offer"
    );
    for ctype in [
        &["Content-Type: text/plain"][..],
        &["Content-Type: application/sdpx"][..],
        &[][..],
    ] {
        let refusal = check_content(&invite(ctype, SDP)).unwrap_err();
        assert!(matches!(refusal, Refusal::NotSdp), "{ctype:?}");
        assert_eq!(refusal.code(), 415);
        assert_eq!(
            refusal.headers(),
            vec![("Accept", Cow::from("application/sdp"))]
        );
    }
}

#[test]
fn an_accept_without_sdp_is_refused_406() {
    let req = invite(&["Accept: text/nobodyKnowsThis"], "");
    let refusal = check_content(&req).unwrap_err();
    assert!(matches!(refusal, Refusal::SdpNotAccepted));
    assert_eq!(refusal.code(), 406);
    let req = invite(&["Accept: application/*"], "");
    assert!(check_content(&req).is_ok());
    // The body is judged first: a non-SDP body with a bad Accept is 415.
    let req = invite(&["Accept: text/plain", "Content-Type: text/plain"], "hello");
    assert!(matches!(check_content(&req), Err(Refusal::NotSdp)));
}

#[test]
fn options_gets_capabilities_unless_it_requires_an_extension() {
    let req = request("OPTIONS", "sip:100@example.com", &[], "");
    assert_eq!(
        answer_other(&req, true, false).unwrap(),
        Answer::Capabilities
    );
    let req = request("OPTIONS", "sip:100@example.com", &["Require: foo"], "");
    assert!(matches!(answer_other(&req, true, false), Err(Refusal::Extension(t)) if t == "foo"));
}

#[test]
fn options_while_draining_gets_the_shutdown_refusal() {
    let req = request("OPTIONS", "sip:100@example.com", &[], "");
    let refusal = answer_other(&req, true, true).unwrap_err();
    assert_eq!(refusal.code(), 503);
    assert!(matches!(refusal, Refusal::ShuttingDown));
}

#[test]
fn in_dialog_methods_outside_a_dialog_get_481_and_count_against_the_source() {
    for method in ["BYE", "INFO", "PRACK", "UPDATE"] {
        let req = request(method, "sip:100@example.com", &[], "");
        let refusal = answer_other(&req, true, false).unwrap_err();
        assert!(matches!(refusal, Refusal::NoDialog), "{method}");
        assert_eq!(refusal.code(), 481);
        assert!(refusal.is_source_failure());
    }
}

#[test]
fn other_methods_get_405_with_allow_and_count_against_the_source() {
    for method in [
        "REGISTER",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
        "REFER",
        "NOTIFY",
    ] {
        let req = request(method, "sip:100@example.com", &[], "");
        let refusal = answer_other(&req, true, false).unwrap_err();
        assert!(matches!(refusal, Refusal::NotAllowed), "{method}");
        assert_eq!(refusal.code(), 405);
        assert_eq!(refusal.headers(), vec![("Allow", Cow::from(ALLOW))]);
        assert!(refusal.is_source_failure());
    }
}

#[test]
fn a_stray_ack_gets_nothing_and_a_bad_scheme_416_first() {
    let req = request("ACK", "sip:100@example.com", &[], "");
    assert_eq!(answer_other(&req, true, false).unwrap(), Answer::Nothing);
    let mut req = request("REGISTER", "sip:example.com", &[], "");
    req.uri.scheme = Some(rsip::Scheme::Other("tel".into()));
    let refusal = answer_other(&req, true, false).unwrap_err();
    assert!(matches!(refusal, Refusal::UnsupportedScheme));
    // Refused for its scheme, it does not count against the source.
    assert!(!refusal.is_source_failure());
    req.method = rsip::Method::Ack;
    assert_eq!(answer_other(&req, true, false).unwrap(), Answer::Nothing);
}

#[test]
fn overload_refusals_say_why_and_when_to_retry() {
    let expect = [
        (Overload::MaxCalls, "Too Many Calls", "5"),
        (Overload::CallRate, "Call Rate Limit", "1"),
        (Overload::SourceCalls, "Too Many Calls From Source", "5"),
        (Overload::SourceCallRate, "Call Rate Limit For Source", "1"),
        (Overload::SourceTableFull, "Too Many Sources", "5"),
        (Overload::MediaPorts, "No Media Ports", "5"),
    ];
    assert_eq!(expect.len(), Overload::ALL.len());
    for (why, phrase, retry) in expect {
        let refusal = Refusal::Overload(why);
        assert_eq!(refusal.code(), 503);
        assert_eq!(refusal.reason().as_deref(), Some(phrase));
        assert_eq!(refusal.headers(), vec![("Retry-After", Cow::from(retry))]);
        assert!(!refusal.is_source_failure());
    }
    assert_eq!(
        Overload::of_source(SourceRefusal::CallRate),
        Overload::SourceCallRate
    );
    assert_eq!(
        Overload::of_source(SourceRefusal::TableFull),
        Overload::SourceTableFull
    );
    assert_eq!(
        Overload::of_source(SourceRefusal::Calls),
        Overload::SourceCalls
    );
}

#[test]
fn the_other_refusals_answer_as_before() {
    let shutting = Refusal::ShuttingDown;
    assert_eq!(
        (shutting.code(), shutting.reason().as_deref()),
        (503, Some("Shutting Down"))
    );
    assert_eq!(shutting.headers(), vec![("Retry-After", Cow::from("30"))]);
    let no_flow = Refusal::NoCallflow;
    assert_eq!((no_flow.code(), no_flow.reason()), (404, None));
    assert!(no_flow.is_source_failure());
    let offer = Refusal::IncompatibleOffer;
    assert_eq!(offer.code(), 488);
    assert_eq!(
        offer.headers(),
        vec![(
            "Warning",
            Cow::from("305 pivotd \"Incompatible media format\"")
        )]
    );
    let dialog = Refusal::BadDialog(DialogError::Missing("Contact"));
    assert_eq!(dialog.code(), 400);
    assert_eq!(dialog.reason().as_deref(), Some("missing Contact header"));
}

/// The 503s for a source's own limits are the source guard's count of the calls it refused;
/// the global reasons are counted by admission. Each refusal is counted once.
#[test]
fn overload_counts_source_refusals_once() {
    let guard = SourceGuard::new(crate::config::SourceLimits {
        max_calls: 1,
        ..Default::default()
    });
    let stats = OverloadStats::default();
    let _slot = guard.admit_call("192.0.2.1".parse().unwrap()).unwrap();
    let why = guard.admit_call("192.0.2.1".parse().unwrap()).unwrap_err();
    let overload = Overload::of_source(why);
    assert_eq!(overload, Overload::SourceCalls);
    stats.count(overload);
    stats.count(Overload::MaxCalls);
    for o in Overload::ALL {
        let want = u64::from(matches!(o, Overload::SourceCalls | Overload::MaxCalls));
        assert_eq!(stats.get(o, &guard.stats), want, "{}", o.label());
    }
    assert_eq!(guard.stats.refused(SourceRefusal::Calls), 1);
}

/// A SUBSCRIBE's refusals are presence's: admission answers them with presence's code,
/// reason and headers, and counts only a probe of another account against the source.
#[test]
fn subscription_refusals_answer_as_presence_decides() {
    let bad = Refusal::Subscription(SubscribeRefusal::BadEvent("foo".into()));
    assert_eq!(bad.code(), 489);
    assert_eq!(bad.reason().as_deref(), Some("Bad Event"));
    assert_eq!(
        bad.headers(),
        vec![("Allow-Events", Cow::from("dialog, presence"))]
    );
    assert!(!bad.is_source_failure());
    let brief = Refusal::Subscription(SubscribeRefusal::IntervalTooBrief { min: 60 });
    assert_eq!(brief.code(), 423);
    assert_eq!(brief.headers(), vec![("Min-Expires", Cow::from("60"))]);
    let other = Refusal::Subscription(SubscribeRefusal::OtherAccount);
    assert_eq!(other.code(), 403);
    assert!(other.is_source_failure());
    // SUBSCRIBE is served now: it is in Allow.
    assert!(ALLOW.split(", ").any(|m| m == "SUBSCRIBE"));
}
