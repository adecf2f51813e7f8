//! What a SUBSCRIBE gets, decided without sockets; one subscription's NOTIFYs and its row.

use super::*;
use crate::presence::state::Status;
use crate::sip::transport::Proto;

fn rules() -> PresenceConfig {
    PresenceConfig {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 1800,
        ..PresenceConfig::default()
    }
}

/// A SUBSCRIBE as the endpoint hands it over: parsed by the same parser.
fn subscribe(uri: &str, extra: &[&str], body: &str) -> rsip::Request {
    parsed(&raw_subscribe(uri, extra, body))
}

fn parsed(raw: &str) -> rsip::Request {
    match message::parse(raw.as_bytes()) {
        Ok(rsip::SipMessage::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn raw_subscribe(uri: &str, extra: &[&str], body: &str) -> String {
    let mut raw = format!(
        "SUBSCRIBE {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1\r\n\
         From: <sip:2001@pbx.test>;tag=sub1\r\n\
         To: <{uri}>\r\n\
         Call-ID: s1@192.0.2.1\r\n\
         CSeq: 1 SUBSCRIBE\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:2001@192.0.2.1:5062>\r\n"
    );
    for h in extra {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw
}

fn read_with(extra: &[&str]) -> Result<SubscribeRequest, SubscribeRefusal> {
    read(&subscribe("sip:2002@pbx.test", extra, ""), &rules())
}

#[test]
fn the_two_packages_are_served_with_their_event_ids() {
    let r = read_with(&["Event: dialog"]).unwrap();
    assert_eq!(r.event.package, Package::Dialog);
    assert_eq!((r.event.id, r.expires), (None, 1800));
    let r = read_with(&["Event: Presence ;id=a.b-1", "Expires: 600"]).unwrap();
    assert_eq!(r.event.package, Package::Presence);
    assert_eq!(r.event.id.as_deref(), Some("a.b-1"));
    assert_eq!(r.event.header(), "presence;id=a.b-1");
    assert_eq!(r.expires, 600);
    // Compact form `o`, other parameters (RFC 7463's) ignored, a quoted `;` is no split.
    let r = read_with(&["o: dialog;sla;x=\"a;b\""]).unwrap();
    assert_eq!((r.event.package, r.event.id), (Package::Dialog, None));
}

#[test]
fn unknown_packages_get_489_with_allow_events() {
    for event in [
        "message-summary",
        "foo",
        "presence.winfo",
        "dialog.x",
        "ua-profile",
    ] {
        let e = read_with(&[&format!("Event: {event}")]).unwrap_err();
        assert_eq!(e, SubscribeRefusal::BadEvent(event.to_string()), "{event}");
        assert_eq!(e.code(), 489);
        assert_eq!(e.reason().as_deref(), Some("Bad Event"));
        assert_eq!(
            e.headers(),
            vec![("Allow-Events", "dialog, presence".into())]
        );
    }
}

#[test]
fn malformed_event_or_expires_is_400() {
    assert_eq!(read_with(&[]), Err(SubscribeRefusal::NoEvent));
    for bad in [
        "Event: ",
        "Event: dia log",
        "Event: dialog;id=",
        "Event: dialog;id",
        "Event: dialog;id=a;id=b",
        "Event: dialog;=x",
        "Event: dialog;id=\"quoted\"",
        "Event: é",
    ] {
        assert_eq!(
            read_with(&[bad]),
            Err(SubscribeRefusal::BadEventHeader),
            "{bad}"
        );
    }
    let long = format!("Event: dialog;id={}", "a".repeat(129));
    assert_eq!(read_with(&[&long]), Err(SubscribeRefusal::BadEventHeader));
    assert_eq!(
        read_with(&["Event: dialog", "Event: presence"]),
        Err(SubscribeRefusal::BadEventHeader)
    );
    // A malformed Expires is the parser's 400, before a SUBSCRIBE gets here.
    for bad in ["soon", "-1", "1.5", "99999999999999999999"] {
        let raw = format!(
            "SUBSCRIBE sip:2002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:2002@pbx.test>\r\nCall-ID: c\r\n\
             CSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\nExpires: {bad}\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(
            matches!(
                message::parse(raw.as_bytes()),
                Err(message::ParseError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(SubscribeRefusal::NoEvent.code(), 400);
    assert_eq!(SubscribeRefusal::BadExpires.code(), 400);
}

#[test]
fn expires_is_held_within_min_and_max() {
    let e = read_with(&["Event: dialog", "Expires: 59"]).unwrap_err();
    assert_eq!(e, SubscribeRefusal::IntervalTooBrief { min: 60 });
    assert_eq!(e.code(), 423);
    assert_eq!(e.headers(), vec![("Min-Expires", "60".into())]);
    let ok = |v: &str| read_with(&["Event: dialog", v]).unwrap().expires;
    assert_eq!(ok("Expires: 60"), 60);
    assert_eq!(ok("Expires: 0"), 0);
    assert_eq!(ok("Expires: 7200"), 3600);
    assert_eq!(ok("Expires: 4294967295"), 3600);
    assert_eq!(ok("Expires: 000120"), 120);
}

#[test]
fn accept_must_admit_the_packages_body_and_bodies_are_refused() {
    let ok = |a: &str, e: &str| read_with(&[e, a]).is_ok();
    assert!(ok("Accept: application/dialog-info+xml", "Event: dialog"));
    assert!(ok(
        "Accept: multipart/related, application/rlmi+xml, Application/Dialog-Info+XML",
        "Event: dialog"
    ));
    assert!(ok("Accept: application/*", "Event: presence"));
    assert!(ok("Accept: */*", "Event: presence"));
    let e = read_with(&["Event: presence", "Accept: application/dialog-info+xml"]).unwrap_err();
    assert_eq!(e, SubscribeRefusal::NotAcceptable(Package::Presence));
    assert_eq!(e.code(), 406);
    assert_eq!(e.headers(), vec![("Accept", "application/pidf+xml".into())]);
    let r = read(
        &subscribe(
            "sip:2002@pbx.test",
            &["Event: dialog", "Content-Type: application/x"],
            "<f/>",
        ),
        &rules(),
    );
    assert_eq!(r, Err(SubscribeRefusal::Body));
    assert_eq!(SubscribeRefusal::Body.code(), 415);
}

fn config() -> Config {
    let toml = r#"
[[accounts]]
id = "a1"
realm = "pbx.test"
[[accounts]]
id = "a2"
realm = "other.test"
"#;
    Config::from_toml_str(toml, std::path::Path::new(".")).unwrap()
}

#[test]
fn a_device_watches_its_own_accounts_ids_only() {
    let cfg = config();
    let w = |uri: &str| watched(&subscribe(uri, &[], ""), &cfg, "a1");
    assert_eq!(w("sip:2002@pbx.test").unwrap().to_string(), "2002@pbx.test");
    assert_eq!(w("sip:2002@PBX.test").unwrap().to_string(), "2002@pbx.test");
    // The server named by its address: the device's realm.
    assert_eq!(
        w("sip:%2A3101@192.0.2.9:5060").unwrap().to_string(),
        "*3101@pbx.test"
    );
    let e = w("sip:2002@other.test").unwrap_err();
    assert_eq!((e.code(), e.is_source_failure()), (403, true));
    let e = w("sip:2002@elsewhere.example").unwrap_err();
    assert_eq!(e, SubscribeRefusal::DomainNotServed);
    assert_eq!(e.code(), 404);
    let e = w("sip:pbx.test").unwrap_err();
    assert_eq!(e, SubscribeRefusal::BadId(IdError::EmptyUser));
    assert_eq!(e.code(), 404);
}

fn new_sub(extra: &[&str]) -> Subscription {
    try_sub(subscribe("sip:2002@pbx.test", extra, "")).unwrap()
}

fn try_sub(req: rsip::Request) -> Result<Subscription, DialogError> {
    let asked = read(&req, &rules()).unwrap();
    let peer = Peer {
        proto: Proto::Udp,
        remote: "192.0.2.1:5062".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        conn: None,
    };
    Subscription::new(
        &req,
        "s1@192.0.2.1",
        "ourtag",
        peer,
        "127.0.0.1:5060".into(),
        &asked,
        PresenceId::parse("2002", "pbx.test").unwrap(),
        Watcher {
            account_id: "a1".into(),
            device_id: "d1".into(),
        },
        1000,
    )
}

fn text(r: &OutgoingRequest) -> String {
    String::from_utf8(r.bytes.to_vec()).unwrap()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn notify_is_sent_in_the_dialog_with_the_state_and_a_growing_version() {
    let mut s = new_sub(&["Event: dialog;id=7", "Expires: 600"]);
    assert_eq!(
        s.ok_headers(1000),
        vec![
            ("Expires", "600".to_string()),
            ("Contact", "<sip:2002@127.0.0.1:5060>".to_string())
        ]
    );
    let id = PresenceId::parse("2002", "pbx.test").unwrap();
    let first = s.notify(&Lamp::idle(), 1100, None);
    let t = text(&first);
    assert!(
        t.starts_with("NOTIFY sip:2001@192.0.2.1:5062 SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(header(&t, "From"), Some("<sip:2002@pbx.test>;tag=ourtag"));
    assert_eq!(header(&t, "To"), Some("<sip:2001@pbx.test>;tag=sub1"));
    assert_eq!(header(&t, "Call-ID"), Some("s1@192.0.2.1"));
    assert_eq!(header(&t, "Event"), Some("dialog;id=7"));
    assert_eq!(header(&t, "Subscription-State"), Some("active;expires=500"));
    assert_eq!(header(&t, "Contact"), Some("<sip:2002@127.0.0.1:5060>"));
    assert_eq!(
        header(&t, "Content-Type"),
        Some("application/dialog-info+xml")
    );
    assert!(t.contains("version=\"0\""), "{t}");
    assert_eq!(first.to, "192.0.2.1:5062".parse().unwrap());
    let second = s.notify(
        &Lamp::manual(&id, Status::Busy),
        1100,
        Some(EndReason::Timeout),
    );
    let t2 = text(&second);
    assert!(t2.contains("version=\"1\""), "{t2}");
    assert!(t2.contains("<state>confirmed</state>"), "{t2}");
    assert_eq!(
        header(&t2, "Subscription-State"),
        Some("terminated;reason=timeout")
    );
    let cseq = |t: &str| -> u32 {
        header(t, "CSeq")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    assert_eq!(cseq(&t2), cseq(&t) + 1);
    assert!(header(&t2, "CSeq").unwrap().ends_with(" NOTIFY"));
    // A NOTIFY pivotd builds parses with its own parser.
    assert!(message::parse(&second.bytes).is_ok());
}

#[test]
fn a_stored_subscription_comes_back_ahead_of_what_it_sent() {
    let mut s = new_sub(&["Event: presence", "Expires: 600"]);
    let before = text(&s.notify(&Lamp::idle(), 1000, None));
    let row = s.stored(1000);
    assert_eq!(row.presence_id, "2002@pbx.test");
    assert_eq!(row.package, "presence");
    assert_eq!(row.expires_at, 1600);
    assert_eq!(
        (row.account_id.as_str(), row.device_id.as_str()),
        ("a1", "d1")
    );
    let local: std::net::SocketAddr = "127.0.0.1:6000".parse().unwrap();
    let mut back = Subscription::restore(row.clone(), |d| {
        assert_eq!(
            (d.transport.as_str(), d.remote),
            ("UDP", "192.0.2.1:5062".parse().unwrap())
        );
        Some((local, "127.0.0.1:6000".into()))
    })
    .unwrap();
    assert_eq!(back.id(), s.id());
    assert_eq!(back.event, s.event);
    assert_eq!(back.version, 1 + RESTORE_MARGIN);
    let after = text(&back.notify(&Lamp::idle(), 1000, None));
    let cseq = |t: &str| -> u32 {
        header(t, "CSeq")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    assert_eq!(cseq(&after), cseq(&before) + 1 + RESTORE_MARGIN);
    assert!(
        after.contains("Via: SIP/2.0/UDP 127.0.0.1:6000;"),
        "{after}"
    );
    // No socket for its transport, or a row edited by hand: skipped with a reason.
    assert!(matches!(
        Subscription::restore(row.clone(), |_| None),
        Err(RestoreError::Transport(_))
    ));
    let mut bad = row;
    bad.state = "{".into();
    assert!(matches!(
        Subscription::restore(bad, |_| Some((local, String::new()))),
        Err(RestoreError::State(_))
    ));
}

#[test]
fn a_contact_pivotd_could_not_send_notify_to_is_refused() {
    let raw = raw_subscribe("sip:2002@pbx.test", &["Event: dialog"], "");
    let mut checked = 0;
    for contact in [
        "<sip:2001@192.0.2.1:507\u{20ac}0>",
        "<sip:2001@192.0.2.1?Subject=x>",
        "<tel:+15551234>",
        "<sip:2001@bad host>",
    ] {
        let odd = raw.replace("<sip:2001@192.0.2.1:5062>", contact);
        let Ok(rsip::SipMessage::Request(req)) = message::parse(odd.as_bytes()) else {
            continue;
        };
        assert_eq!(
            try_sub(req).unwrap_err(),
            DialogError::Bad("Contact"),
            "{contact}"
        );
        checked += 1;
    }
    // The parser lets these through; what it refuses never reaches presence.
    assert!(checked >= 2, "{checked}");
    let ok = raw.replace(
        "<sip:2001@192.0.2.1:5062>",
        "\"Desk\" <sip:2001;x=y@[2001:db8::1]:5062;transport=tcp>",
    );
    assert!(try_sub(parsed(&ok)).is_ok());
}

#[test]
fn the_view_of_a_stored_subscription_names_its_subscriber_and_counts() {
    let mut s = new_sub(&["Event: dialog", "Expires: 600"]);
    s.notify(&Lamp::idle(), 1000, None);
    s.notify(&Lamp::idle(), 1001, None);
    let row = s.stored(1001);
    let v = SubscriptionView::of(&row).unwrap();
    assert_eq!(v.call_id, "s1@192.0.2.1");
    assert_eq!(v.watched.to_string(), "2002@pbx.test");
    assert_eq!(v.package, Package::Dialog);
    assert_eq!(v.from.as_deref(), Some("2001@pbx.test"));
    assert_eq!(v.contact, "sip:2001@192.0.2.1:5062");
    assert_eq!(v.transport, "UDP");
    assert_eq!(v.remote, "192.0.2.1:5062".parse().unwrap());
    assert_eq!((v.account_id.as_str(), v.device_id.as_str()), ("a1", "d1"));
    assert_eq!((v.expires_at, v.version, v.updated), (1600, 2, 1001));
    let mut bad = row;
    bad.package = "message-summary".into();
    assert!(matches!(
        SubscriptionView::of(&bad),
        Err(RestoreError::Package(_))
    ));
}
