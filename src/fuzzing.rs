//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the deterministic mutation test
//! (`tests/mutation.rs`, on the stable toolchain inside `cargo test`).
//!
//! Each one takes arbitrary bytes, feeds them to one parser of outside input, and then does
//! with the result what pivotd does next (accessors, answers, negotiation, validation). None
//! may panic whatever the bytes. The few `assert!`s below are invariants: a failure is a bug
//! (pivotd would send what it cannot read back itself), reported by the fuzzer like a panic.
//!
//! Not part of pivotd's behaviour: nothing in the server calls these.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use rsip::message::HasHeaders;
use rsip::SipMessage;

use crate::callflow::check;
use crate::flow::modules::pivot::{BodyFormat, Method, ReqFormat};
use crate::flow::{DigitCollections, Node};
use crate::logsafe::wire;
use crate::media::codec::Codec;
use crate::media::dtmf::{self, DtmfReceiver, TelephoneEvent};
use crate::media::{rtp, sdp};
use crate::pivot::guard::UrlGuard;
use crate::pivot::request::{self, PivotState};
use crate::pivot::{kazoo, twiml};
use crate::routing::Routes;
use crate::sip::dialog::Dialog;
use crate::sip::message::{self, ParseError};
use crate::sip::normalize;
use crate::sip::outgoing;
use crate::sip::transport::{self, Peer, Proto, Transport};

/// What [`sip_message`] made of its input (the mutation test checks every kind is reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SipOutcome {
    Request,
    Response,
    /// Answered 400 (a request with a usable Via) or dropped.
    Invalid,
    /// Answered 416, 501 or 505.
    Unsupported,
    Unparsable,
}

fn peer() -> Peer {
    Peer {
        proto: Proto::Udp,
        remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 5062),
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
        conn: None,
    }
}

/// Header names the server and the tests look up (full and compact forms).
const LOOKED_UP: &[&str] = &[
    "Call-ID",
    "i",
    "Via",
    "v",
    "Contact",
    "m",
    "Content-Type",
    "c",
    "Content-Length",
    "l",
    "Max-Forwards",
    "Expires",
    "User-Agent",
    "Require",
    "Accept",
    "Supported",
    "k",
    "X-Unknown",
];

/// The SIP front door: framing, normaliser, parser, every accessor, the Via stamping, the
/// answers (`outgoing::response`, `outgoing::response_bytes`), a dialog built from the request,
/// the call facts a pivot request carries, and the SDP or DTMF body.
pub fn sip_message(data: &[u8]) -> SipOutcome {
    let _ = Transport::quick_call_id(data);
    let _ = normalize::frame(data, 65536);
    let _ = normalize::frame(data, 300);
    let _ = normalize::normalize_headers_lenient(data);
    match message::parse(data) {
        Ok(SipMessage::Request(mut req)) => {
            accessors(&req);
            answers(&mut req, true);
            server_side(&req);
            SipOutcome::Request
        }
        Ok(SipMessage::Response(resp)) => {
            accessors(&resp);
            let _ = resp.to_string();
            SipOutcome::Response
        }
        Err(ParseError::Invalid {
            request: Some(mut req),
            reason,
        }) => {
            accessors(&req);
            let _ = outgoing::response_bytes(&req, 400, Some(&reason), None, &[], None);
            answers(&mut req, false);
            SipOutcome::Invalid
        }
        Err(ParseError::Invalid { request: None, .. }) => SipOutcome::Invalid,
        Err(ParseError::Unsupported { why, mut request }) => {
            accessors(&request);
            let (code, reason) = (why.code(), Some(why.reason()));
            let _ = outgoing::response_bytes(&request, code, reason, None, why.headers(), None);
            answers(&mut request, false);
            SipOutcome::Unsupported
        }
        Err(ParseError::Unparsable(_)) => SipOutcome::Unparsable,
    }
}

fn accessors(msg: &impl HasHeaders) {
    let _ = message::call_id(msg);
    let _ = message::cseq(msg);
    let _ = message::from_tag(msg);
    let _ = message::to_tag(msg);
    let _ = message::top_via(msg);
    for name in LOOKED_UP {
        let _ = message::header_value(msg, name);
    }
    for h in msg.headers().iter() {
        let (name, _) = message::header_name_value(h);
        // The server matches header names by byte ranges (`X-` prefixes): they must be
        // ASCII tokens, which the normaliser guarantees.
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
            "header name {name:?}"
        );
    }
}

/// What the transport and the endpoint do with a request they answer: stamp the Via, then
/// build responses. `valid`: the request parsed cleanly, so pivotd's own answers to it must
/// parse as responses.
fn answers(req: &mut rsip::Request, valid: bool) {
    let reply_to = transport::stamp_via(req, &peer());
    let _ = reply_to;
    let _ = message::max_forwards(req);
    // What the registrar and the caller check read of a request.
    if let Ok(message::Contacts::List(list)) = message::contacts(req) {
        for c in &list {
            // Equivalence (RFC 3261 §19.1.4) is reflexive, whatever the URI.
            assert!(message::uri_equivalent(&c.uri, &c.uri), "{:?}", c.uri);
        }
    }
    let _ = message::header_aor(req, "From");
    let _ = message::header_aor(req, "To");
    for (code, reason, tag) in [
        (100u16, None, None),
        (200, None, Some("t1")),
        (486, Some("Busy Here"), Some("t2")),
        (603, Some("a\r\nb"), None),
    ] {
        let r = outgoing::response(req, code, reason, tag);
        let _ = r.to_string();
        let bytes = outgoing::response_bytes(
            req,
            code,
            reason,
            tag,
            &[("Allow", crate::sip::ALLOW)],
            (code == 200).then_some(("application/sdp", &b"v=0\r\n"[..])),
        );
        if valid {
            assert!(
                matches!(message::parse(&bytes), Ok(SipMessage::Response(_))),
                "pivotd cannot read its own {code} answer:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// What the server reads of a request it acts on: the typed From/To, the Request-URI, a
/// dialog, the pivot request made of the call's facts, and the body.
fn server_side(req: &rsip::Request) {
    // The same reading of the INVITE admission does.
    let user = message::percent_decode(req.uri.user().unwrap_or(""));
    let host = req.uri.host_with_port.host.to_string();
    let _ = req.to_string();
    // What the server logs of them.
    let _ = (wire(&user).to_string(), wire(&host).to_string());
    let call_id = message::call_id(req).unwrap_or_default();
    let info = crate::call::info::call_info(req, &call_id, "acct", &user, &host);
    let mut digits = DigitCollections::new();
    digits.append(&user, &host);
    let state = PivotState::new(&info, &digits);
    if let Ok(url) = url::Url::parse("http://pivot.example/voice?x=1") {
        for format in [ReqFormat::Kazoo, ReqFormat::Twiml] {
            let params = request::params(&state, format);
            let _ = request::build(&url, Method::Get, BodyFormat::Form, &params);
            let _ = request::build(&url, Method::Post, BodyFormat::Json, &params).signature(b"k");
        }
    }
    if let Ok(mut d) = Dialog::from_request(req, &call_id, "lt", peer(), "127.0.0.1:5060".into()) {
        d.refresh_target(&req.headers);
        if let Some((n, m)) = message::cseq(req) {
            let _ = d.accept_remote_cseq(n, &m);
        }
        let _ = d.contact(&user);
        let _ = d.request(rsip::Method::Bye, &[], None);
    }
    let ctype = message::header_value(req, "Content-Type").unwrap_or_default();
    let _ = dtmf::info_digit(&ctype, req.body());
    if let Ok(Some(body)) = message::sdp_body(req) {
        let _ = sdp(body);
    }
}

/// SDP offer/answer: parse, negotiate (as an offer and as an answer), and build the answer and
/// a new offer keeping the m= lines. Our answer must parse and negotiate to the same codec.
pub fn sdp(data: &[u8]) -> Option<sdp::Negotiated> {
    let text = std::str::from_utf8(data).ok()?;
    let offer = sdp::parse(text).ok()?;
    let local = sdp::LocalSession {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 20000,
        session_id: 1,
        version: 1,
        crypto: Vec::new(),
        savp: false,
    };
    let _ = sdp::offer_keeping_lines(&local, &offer, 101, sdp::Direction::SendOnly);
    let _ = sdp::negotiate_answer(&offer);
    let neg = sdp::negotiate(&offer).ok()?;
    let _ = sdp::answer(&local, &neg);
    let ours = sdp::answer_to_offer(&local, &offer, &neg);
    let back = sdp::parse(&ours);
    assert!(back.is_ok(), "our answer does not parse: {back:?}\n{ours}");
    if let Ok(back) = back {
        let again = sdp::negotiate_answer(&back);
        assert!(
            again.as_ref().is_ok_and(|a| a.codec == neg.codec
                && a.codec_pt == neg.codec_pt
                && a.dtmf_pt == neg.dtmf_pt),
            "our answer negotiates to {again:?}, not {neg:?}\n{ours}"
        );
    }
    assert_ne!(
        neg.dtmf_pt,
        Some(neg.codec_pt),
        "telephone-event on the audio payload type"
    );
    Some(neg)
}

/// The RTP receive path: RFC 4733 events, and in-band keys in the other packets' audio. The
/// input is a list of datagrams, each preceded by its length (one byte); the first byte is
/// the telephone-event payload type. Every datagram is also read as a SIP INFO DTMF body.
/// Returns the digits recognised.
pub fn rtp_dtmf(data: &[u8]) -> Vec<char> {
    let Some((&event_pt, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut receiver = DtmfReceiver::new();
    let mut inband = crate::media::inband_dtmf::InbandDtmf::new();
    let mut digits = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        rest = next;
        let _ = dtmf::info_digit("application/dtmf-relay", packet);
        let _ = dtmf::info_digit("application/dtmf", packet);
        let _ = TelephoneEvent::parse(packet);
        if rtp::is_rtcp(packet) {
            continue;
        }
        let Ok(p) = rtp_rs::RtpReader::new(packet) else {
            continue;
        };
        let _ = (
            p.sequence_number(),
            p.csrc().count(),
            p.extension(),
            p.padding(),
        );
        let payload = p.payload();
        let _ = Codec::Pcma.decode(payload);
        if p.payload_type() == event_pt & 0x7f {
            digits.extend(receiver.on_packet(p.ssrc(), p.timestamp(), p.mark(), payload));
        } else {
            // What a caller without telephone-event sends: its keys are tones in the audio.
            let mut keys = Vec::new();
            inband.push(&Codec::Pcmu.decode(payload), p.timestamp(), &mut keys);
            digits.extend(keys.into_iter().map(|(k, _)| k));
        }
    }
    digits
}

/// A FreeSWITCH tone stream as a `ringback` or `play` id names it (UTF-8 checked first, as
/// a JSON string would be): the tone made must last as long as its cadence says.
pub fn tone_spec(data: &[u8]) -> Result<std::time::Duration, crate::media::tone::ToneSpecError> {
    let text = std::str::from_utf8(data).map_err(|_| crate::media::tone::ToneSpecError::Syntax)?;
    let tone = crate::media::tone::from_spec(text)?;
    Ok(tone.duration())
}

/// An SDES `a=crypto` value, then (after the first newline) a packet as it arrives on an SRTP
/// leg: the value parsed as an offer's line is; if it gives a key, the packet is checked and
/// decrypted with it, then protected back. What comes back says how far it got.
pub fn srtp(data: &[u8]) -> SrtpOutcome {
    use crate::media::srtp::{sdes, SrtpReceiver, SrtpSender};
    let (value, packet) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            data.get(..i).unwrap_or_default(),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (data, &[][..]),
    };
    let Ok(line) = sdes::parse_value(value) else {
        return SrtpOutcome::Refused;
    };
    let (Ok(mut rx), Ok(mut tx)) = (SrtpReceiver::new(&line.key), SrtpSender::new(&line.key))
    else {
        return SrtpOutcome::Refused;
    };
    let opened = rx.unprotect(packet).is_ok();
    let _ = rx.unprotect_rtcp(packet);
    let _ = tx.protect(packet);
    SrtpOutcome::Keyed { opened }
}

/// What [`srtp`] got to.
#[derive(Debug, PartialEq, Eq)]
pub enum SrtpOutcome {
    Refused,
    Keyed { opened: bool },
}

/// A TwiML document: parse, then resolve every URL it names against the document's URL as
/// the runtime does.
pub fn twiml(data: &[u8]) -> Result<usize, twiml::TwimlError> {
    let _ = kazoo::choose_format(Some("text/xml"), data);
    let _ = kazoo::decode(None, data);
    let verbs = twiml::parse(data)?;
    let base = url::Url::parse("https://pivot.example/app/doc.xml?a=1").ok();
    fn urls(v: &twiml::Verb, out: &mut Vec<String>) {
        match v {
            twiml::Verb::Play { url, .. } | twiml::Verb::Redirect { url, .. } => {
                out.push(url.clone())
            }
            twiml::Verb::Gather { action, nested, .. } => {
                out.extend(action.clone());
                nested.iter().for_each(|n| urls(n, out));
            }
            twiml::Verb::Dial(dial) => {
                let _ = dial.bridge_request();
                out.extend(dial.action.clone())
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    verbs.iter().for_each(|v| urls(v, &mut found));
    if let Some(base) = base {
        let guard = UrlGuard::default();
        for u in &found {
            if let Ok(resolved) = twiml::resolve_url(&base, u) {
                let _ = guard.check_parsed(&resolved);
            }
        }
    }
    Ok(verbs.len())
}

/// A Kazoo JSON answer: format choice, JSON, callflow validation, the save-time URL checks,
/// and the round trip (a validated flow written out validates again to the same flow).
pub fn kazoo_json(data: &[u8]) -> Result<(), kazoo::AnswerError> {
    for ct in [Some("application/json"), Some("text/plain; x=1"), None] {
        let _ = kazoo::choose_format(ct, data);
    }
    let _ = kazoo::decode(Some("application/json; charset=utf-8"), data);
    let node = kazoo::decode_flow(data)?;
    flow_checks(&node);
    Ok(())
}

fn flow_checks(node: &Node) {
    let mut problems = Vec::new();
    check::check_node_urls(node, "flow", &UrlGuard::default(), &mut problems);
    node.visit(&mut |n| {
        let _ = n.module.media_ids();
    });
    let json = node.to_json();
    let back = Node::from_json(&json);
    assert!(
        back.as_ref().is_ok_and(|b| b == node),
        "a validated flow does not read back: {back:?}\n{json}"
    );
}

/// The config loader on arbitrary text, with a base folder that does not exist (relative
/// paths then name nothing), then the routing it sets up.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    match check::from_toml_str(text, Path::new("/nonexistent/pivotd-fuzz")) {
        Ok(cfg) => {
            let _ = Routes::new().route(&cfg, "1234", "pivotd.test");
            let _ = cfg.media.port_pairs();
            let _ = cfg.sip.timers();
            for a in &cfg.accounts {
                for c in &a.callflows {
                    flow_checks(&c.flow);
                }
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// A media file as a pivot web server serves it for `<Play>` (or the TTS hook writes it):
/// WAV or MP3 sniffing and decoding, resampling, G.711 encoding.
pub fn media_file(data: &[u8]) -> bool {
    match crate::media::prompt::Prompt::decode("fuzz", data) {
        Ok(p) => {
            let _ = (p.payload(Codec::Pcmu).len(), p.duration());
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// An Authorization / Proxy-Authorization value: `Credentials::parse`, then the response
/// check with both algorithms' HA1. True when it parsed.
pub fn digest_credentials(data: &[u8]) -> bool {
    use crate::sip::auth::answer::ReceivedChallenge;
    use crate::sip::auth::digest::{Algorithm, Credentials};
    // The same bytes as a challenge a carrier sent: read, then answered.
    if let Ok(c) = ReceivedChallenge::parse(data) {
        let _ = c.answer("u", "p", "INVITE", "sip:x@y", 1, "c");
    }
    let Ok(c) = Credentials::parse(data) else {
        return false;
    };
    for alg in Algorithm::ALL {
        let ha1 = alg.ha1(&c.username, &c.realm, "secret");
        let _ = c.verify(&ha1, "REGISTER");
    }
    true
}

/// What [`subscribe`] made of its input (the mutation test checks both are reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscribeOutcome {
    /// A SUBSCRIBE presence would serve: its NOTIFYs were built and read back.
    Accepted,
    /// Refused with a code (or not a request the parser passes).
    Refused,
}

/// A SUBSCRIBE (or any message): the parser, then what admission and the presence task do
/// with it — `subscription::read` (Event, Accept, body, Expires), `subscription::watched`
/// (the Request-URI as a presence id in the device's account), a subscription and its
/// NOTIFYs in both packages for each lamp. Invariants: each NOTIFY parses again, and its
/// body is well-formed XML whatever the ids carried. The bytes are also read as a
/// `manual_presence` id.
pub fn subscribe(data: &[u8]) -> SubscribeOutcome {
    use crate::config::{Config, PresenceConfig};
    use crate::presence::state::{Lamp, PresenceId, Status};
    use crate::presence::subscription::{self, Event, Package, Subscription, Watcher};

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PresenceId::parse(text, "pivotd.test");
    }
    let _ = subscription::parse_event(data);
    let Ok(SipMessage::Request(req)) = message::parse(data) else {
        return SubscribeOutcome::Refused;
    };
    let rules = PresenceConfig {
        min_expires: 2,
        ..PresenceConfig::default()
    };
    let asked = match subscription::read(&req, &rules) {
        Ok(a) => a,
        Err(e) => {
            let _ = (e.code(), e.reason(), e.headers());
            return SubscribeOutcome::Refused;
        }
    };
    let toml = "[[accounts]]\nid = \"a1\"\nrealm = \"pivotd.test\"\n\
                [[accounts]]\nid = \"a2\"\nrealm = \"other.test\"\n";
    let Ok(cfg) = Config::from_toml_str(toml, Path::new("/nonexistent")) else {
        return SubscribeOutcome::Refused;
    };
    let watched = match subscription::watched(&req, &cfg, "a1") {
        Ok(w) => w,
        Err(e) => {
            let _ = (e.code(), e.reason(), e.headers());
            return SubscribeOutcome::Refused;
        }
    };
    let watcher = Watcher {
        account_id: "a1".into(),
        device_id: "d1".into(),
    };
    let call_id = message::call_id(&req).unwrap_or_default();
    for package in Package::ALL {
        let asked = subscription::SubscribeRequest {
            event: Event {
                package,
                id: asked.event.id.clone(),
            },
            ..asked.clone()
        };
        let Ok(mut sub) = Subscription::new(
            &req,
            &call_id,
            "lt",
            peer(),
            "127.0.0.1:5060".into(),
            &asked,
            watched.clone(),
            watcher.clone(),
            1000,
        ) else {
            return SubscribeOutcome::Refused;
        };
        let id = PresenceId::parse(watched.user(), watched.realm()).ok();
        for status in Status::ALL {
            let lamp = id
                .as_ref()
                .map_or_else(Lamp::idle, |id| Lamp::manual(id, status));
            let notify = sub.notify(&lamp, 1000, None);
            let sent = match message::parse(&notify.bytes) {
                Ok(SipMessage::Request(r)) => r,
                other => panic!(
                    "a NOTIFY pivotd built does not parse ({other:?}):\n{}",
                    String::from_utf8_lossy(&notify.bytes)
                ),
            };
            let text = std::str::from_utf8(&sent.body).expect("bodies are UTF-8");
            let mut r = quick_xml::Reader::from_str(text);
            loop {
                match r.read_event() {
                    Ok(quick_xml::events::Event::Eof) => break,
                    Ok(_) => {}
                    Err(e) => panic!("a NOTIFY body is not XML ({e}):\n{text}"),
                }
            }
        }
        let _ = sub.stored(1000);
    }
    SubscribeOutcome::Accepted
}

/// What [`presence_message`] made of its input (the mutation test checks both are reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeMessageOutcome {
    /// A message read (its bad items left out), applied to a lamps table and written again.
    Read,
    /// Not a message (too long, not JSON, another version).
    Unreadable,
}

/// Another node's presence message (`Change::Presence`'s body, as the listener hands it:
/// text), read by `presence::state::parse`, applied to a lamps table as the presence task
/// does (`Lamps::hear`, `expire`, what is owed back), each lamp it shows rendered as both
/// NOTIFY bodies. Invariant: what was read, written again by `encode`, reads back the same
/// items, each message within the size limit.
pub fn presence_message(data: &[u8]) -> NodeMessageOutcome {
    use crate::presence::body;
    use crate::presence::state::{self, Lamps, NodeMessage, Origin};
    use std::time::{Duration, Instant};

    let text = String::from_utf8_lossy(data);
    let Some(message) = state::parse(&text) else {
        return NodeMessageOutcome::Unreadable;
    };
    if let NodeMessage::News { ttl, items } = &message {
        let mut again = Vec::new();
        for m in state::encode(items, *ttl) {
            assert!(m.len() <= state::MAX_MESSAGE_BYTES, "{} bytes", m.len());
            match state::parse(&m) {
                Some(NodeMessage::News { items, .. }) => again.extend(items),
                other => panic!("our own message not read back: {other:?}\n{m}"),
            }
        }
        assert_eq!(&again, items, "read back otherwise");
    }
    let mut lamps = Lamps::default();
    lamps.share();
    let now = Instant::now();
    let _ = lamps.hear("0123456789abcdef", message, now);
    for (id, lamp) in lamps.lit() {
        let _ = body::dialog_info(&id, 1, &lamp);
        let _ = body::pidf(&id, &lamp);
    }
    let _ = state::encode(&lamps.take_outbox(), Duration::from_secs(90));
    lamps.expire(now + state::MAX_TTL);
    // Lamps set as a whole stay (the store keeps them); a node's calls do not.
    let calls_left = lamps
        .lit()
        .into_iter()
        .any(|(_, l)| l.origin == Origin::Call);
    assert!(!calls_left, "a node's call lamps outlive the longest ttl");
    NodeMessageOutcome::Read
}
