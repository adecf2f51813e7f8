//! The TwiML parser: each verb with its attributes and defaults, verbs kept to be skipped,
//! documents refused, and relative URLs.

use super::*;

fn verbs(doc: &str) -> Vec<Verb> {
    match parse(doc.as_bytes()) {
        Ok(v) => v,
        Err(e) => panic!("{e}: {doc}"),
    }
}

fn say(text: &str) -> Verb {
    Verb::Say {
        text: text.into(),
        voice: "".into(),
        language: "en-US".into(),
        loop_count: 1,
    }
}

#[test]
fn gather_with_nested_say_and_relative_action() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
        <Response>
          <Gather action="handle-key.php" numDigits="4" timeout="10">
            <Say voice="woman" language="en-gb">
              Please enter
              your PIN
            </Say>
            <Pause/>
            <Play loop="2">beep.wav</Play>
          </Gather>
          <Say>We did not get your PIN.</Say>
        </Response>"#;
    let v = verbs(doc);
    assert_eq!(
        v,
        vec![
            Verb::Gather {
                action: Some("handle-key.php".into()),
                method: Method::Post,
                num_digits: Some(4),
                timeout_s: 10,
                finish_on_key: Some('#'),
                nested: vec![
                    Verb::Say {
                        text: "Please enter your PIN".into(),
                        voice: "woman".into(),
                        language: "en-GB".into(),
                        loop_count: 1,
                    },
                    Verb::Pause { length_s: 1 },
                    Verb::Play {
                        url: "beep.wav".into(),
                        loop_count: 2
                    },
                ],
            },
            say("We did not get your PIN."),
        ]
    );
    let base = url::Url::parse("http://ivr.example/app/start.php?x=1").unwrap();
    let Verb::Gather {
        action: Some(action),
        ..
    } = &v[0]
    else {
        panic!("not a gather")
    };
    assert_eq!(
        resolve_url(&base, action).unwrap().as_str(),
        "http://ivr.example/app/handle-key.php"
    );
}

#[test]
fn gather_defaults_and_options() {
    let v = verbs(
        r#"<Response><Gather/><Gather finishOnKey="" method="get" timeout="99999">
           <Dial>1</Dial></Gather><Gather finishOnKey="12"/></Response>"#,
    );
    assert_eq!(
        v[0],
        Verb::Gather {
            action: None,
            method: Method::Post,
            num_digits: None,
            timeout_s: 5,
            finish_on_key: Some('#'),
            nested: vec![],
        }
    );
    assert_eq!(
        v[1],
        Verb::Gather {
            action: None,
            method: Method::Get,
            num_digits: None,
            timeout_s: 3600,
            finish_on_key: None,
            nested: vec![Verb::Unknown("Dial".into())],
        }
    );
    assert!(matches!(&v[2], Verb::Invalid { verb, .. } if verb == "Gather"));
}

#[test]
fn redirect_hangup_reject_pause_play() {
    let v = verbs(
        r#"<Response>
             <Play loop="0"> http://media.example/a.mp3 </Play>
             <Pause length="3"></Pause>
             <Redirect method="GET">/next</Redirect>
             <Redirect>next.xml</Redirect>
             <Reject reason="busy"/>
             <Reject/>
             <Hangup/>
           </Response>"#,
    );
    assert_eq!(
        v,
        vec![
            Verb::Play {
                url: "http://media.example/a.mp3".into(),
                loop_count: 0
            },
            Verb::Pause { length_s: 3 },
            Verb::Redirect {
                url: "/next".into(),
                method: Method::Get
            },
            Verb::Redirect {
                url: "next.xml".into(),
                method: Method::Post
            },
            Verb::Reject {
                reason: RejectReason::Busy
            },
            Verb::Reject {
                reason: RejectReason::Rejected
            },
            Verb::Hangup,
        ]
    );
}

#[test]
fn invalid_verbs_are_kept_for_skipping() {
    let v = verbs(
        r#"<Response><Play/><Pause length="-1"/><Say loop="x">a</Say>
           <Redirect method="PUT">a</Redirect><Reject reason="nope"/></Response>"#,
    );
    let names: Vec<_> = v
        .iter()
        .map(|x| match x {
            Verb::Invalid { verb, .. } => verb.as_str(),
            _ => "valid",
        })
        .collect();
    assert_eq!(names, ["Play", "Pause", "Say", "Redirect", "Reject"]);
    let reasons: Vec<_> = v
        .iter()
        .map(|x| match x {
            Verb::Invalid { reason, .. } => reason.as_str(),
            _ => "valid",
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "no media URL",
            "length \"-1\" is not a whole number",
            "loop \"x\" is not a whole number",
            "method \"PUT\" is neither GET nor POST",
            "reason \"nope\" is neither rejected nor busy"
        ]
    );
    let v = verbs(
        r#"<Response><Gather finishOnKey="ab"/><Gather numDigits="0"/><Redirect/></Response>"#,
    );
    assert_eq!(
        v,
        [
            Verb::Invalid {
                verb: "Gather".into(),
                reason: "finishOnKey \"ab\" is not one key of 0-9 * #".into()
            },
            Verb::Invalid {
                verb: "Gather".into(),
                reason: "numDigits must be at least 1".into()
            },
            Verb::Invalid {
                verb: "Redirect".into(),
                reason: "no URL".into()
            },
        ]
    );
}

#[test]
fn entities_cdata_and_ssml_text() {
    let v = verbs(
        "\u{feff}<Response><Say>Tom &amp; Jerry &lt;3 &#x41;&#66; <![CDATA[<raw> & ]]>end</Say>\
         <Say>Hello <emphasis>big</emphasis> world</Say>\
         <Play>http://m.example/a.wav?x=1&amp;y=2</Play></Response>",
    );
    assert_eq!(
        v,
        vec![
            say("Tom & Jerry <3 AB <raw> & end"),
            say("Hello big world"),
            Verb::Play {
                url: "http://m.example/a.wav?x=1&y=2".into(),
                loop_count: 1
            },
        ]
    );
}

#[test]
fn say_is_capped() {
    let long = "a".repeat(MAX_SAY_CHARS + 10);
    let v = verbs(&format!("<Response><Say>{long}</Say></Response>"));
    let Some(Verb::Say { text, .. }) = v.first() else {
        panic!("no say")
    };
    assert_eq!(text.chars().count(), MAX_SAY_CHARS);
}

#[test]
fn unknown_verbs_are_kept_to_be_skipped() {
    let v = verbs("<Response><Sms>hi</Sms><Enqueue>q</Enqueue></Response>");
    assert_eq!(
        v,
        vec![Verb::Unknown("Sms".into()), Verb::Unknown("Enqueue".into())]
    );
}

fn dial(doc: &str) -> Dial {
    match verbs(&format!("<Response>{doc}</Response>")).pop() {
        Some(Verb::Dial(d)) => d,
        other => panic!("{doc}: {other:?}"),
    }
}

fn number(n: &str) -> Target {
    Target::Number {
        number: n.into(),
        local: false,
    }
}

/// The verb a `<Dial>` that cannot run becomes: `(unsupported, reason)`.
fn refused(doc: &str) -> (bool, String) {
    match verbs(&format!("<Response>{doc}</Response>")).pop() {
        Some(Verb::Unsupported { verb, reason }) if verb == "Dial" => (true, reason),
        Some(Verb::Invalid { verb, reason }) if verb == "Dial" => (false, reason),
        other => panic!("{doc}: {other:?}"),
    }
}

#[test]
fn dial_a_bare_number_with_kazoos_defaults() {
    let d = dial("<Dial> +1 (415) 555-0100 </Dial>");
    assert_eq!(
        d,
        Dial {
            targets: vec![number("+14155550100")],
            action: None,
            method: Method::Post,
            timeout: Duration::from_secs(20),
            time_limit: Duration::from_secs(14400),
            caller_id: None,
            hangup_on_star: false,
            ignored: vec![],
        }
    );
    // A `+` counts only in front; letters and punctuation go (Kazoo's cleanup).
    assert_eq!(
        dial("<Dial>1+800-FLOWERS 2</Dial>").targets,
        [number("18002")]
    );
    assert_eq!(dial("<Dial>++44 20</Dial>").targets, [number("+4420")]);
    assert_eq!(
        dial("<Dial><![CDATA[+33 1 23]]></Dial>").targets,
        [number("+33123")]
    );
}

#[test]
fn dial_nouns_ring_at_once_in_document_order() {
    let d = dial(
        r#"<Dial>
             <Number>+1 415 555 0100</Number>
             <Number sendDigits="ww123">2000</Number>
             <Sip>sip:alice@pbx.example;transport=tcp</Sip>
             <User> u-1 </User>
             <Device>dev1</Device>
           </Dial>"#,
    );
    assert_eq!(
        d.targets,
        [
            number("+14155550100"),
            number("2000"),
            Target::Sip {
                uri: "sip:alice@pbx.example;transport=tcp".into()
            },
            Target::User { id: "u-1".into() },
            Target::Device { id: "dev1".into() },
        ]
    );
    assert_eq!(
        d.ignored,
        [Ignored::Attribute {
            element: "Number".into(),
            name: "sendDigits".into()
        }]
    );
    assert_eq!(
        d.ignored[0].to_string(),
        "<Number sendDigits> is not supported: ignored"
    );
    assert_eq!(
        dial("<Dial><Sip>SIPS:bob@example.com</Sip></Dial>").targets,
        [Target::Sip {
            uri: "SIPS:bob@example.com".into()
        }]
    );
}

#[test]
fn dial_attributes() {
    let d = dial(
        r#"<Dial action="after-dial.php" method="get" timeout="7" timeLimit="60"
                 callerId="+15550001" hangupOnStar="true">100</Dial>"#,
    );
    assert_eq!(d.action.as_deref(), Some("after-dial.php"));
    assert_eq!(d.method, Method::Get);
    assert_eq!(d.timeout, Duration::from_secs(7));
    assert_eq!(d.time_limit, Duration::from_secs(60));
    assert_eq!(d.caller_id.as_deref(), Some("+15550001"));
    assert!(d.hangup_on_star);
    assert!(d.ignored.is_empty());
    assert_eq!(
        d.bridge_request(),
        BridgeRequest {
            endpoints: vec![BridgeEndpoint::now(number("100"))],
            timeout: Duration::from_secs(7),
            caller_id: Some(CallerIdOverride {
                name: None,
                number: Some("+15550001".into()),
            }),
            can_call_self: false,
            time_limit: Some(Duration::from_secs(60)),
            hangup_on_star: true,
            ringback: None,
        }
    );

    // 0 is the default; large values are capped.
    let d = dial(r#"<Dial timeout="0" timeLimit="0">1</Dial>"#);
    assert_eq!(
        (d.timeout, d.time_limit),
        (Duration::from_secs(20), Duration::from_secs(14400))
    );
    let d = dial(r#"<Dial timeout="99999999999" timeLimit="86400">1</Dial>"#);
    assert_eq!(
        (d.timeout, d.time_limit),
        (
            Duration::from_secs(u64::from(MAX_SECONDS)),
            Duration::from_secs(14400)
        )
    );
    let d = dial(r#"<Dial hangupOnStar="FALSE" record="false" strategy="simultaneous">1</Dial>"#);
    assert!(!d.hangup_on_star);
    assert!(d.ignored.is_empty(), "{:?}", d.ignored);
}

#[test]
fn dial_attributes_pivotd_does_not_act_on_are_reported() {
    let d = dial(
        r##"<Dial strategy="single" hangupOn="#" answerOnBridge="true"
                 callerId="Alice &lt;a@b&gt;">1</Dial>"##,
    );
    assert_eq!(d.caller_id, None);
    let reported: Vec<String> = d.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        reported,
        [
            "<Dial strategy> is not supported: ignored",
            "<Dial hangupOn> is not supported: ignored",
            "<Dial answerOnBridge> is not supported: ignored",
            "callerId \"Alice <a@b>\" is not a caller ID number: the caller's own is sent",
        ]
    );
    let long = "1".repeat(MAX_CALLER_ID_CHARS + 1);
    let d = dial(&format!(r#"<Dial callerId="{long}">1</Dial>"#));
    assert_eq!((d.caller_id, d.ignored.len()), (None, 1));
}

#[test]
fn dial_record_is_refused() {
    for mode in [
        "true",
        "record-from-answer",
        "record-from-ringing-dual",
        "yes",
    ] {
        let (unsupported, reason) = refused(&format!(r#"<Dial record="{mode}">1</Dial>"#));
        assert!(unsupported, "{mode}");
        assert_eq!(
            reason,
            format!("record={mode:?}: pivotd does not record calls")
        );
    }
    for off in ["false", "do-not-record", "", "False"] {
        dial(&format!(r#"<Dial record="{off}">1</Dial>"#));
    }
}

#[test]
fn dial_conference_queue_and_client_are_not_supported() {
    for noun in ["Conference", "Queue", "Client", "Foo"] {
        assert_eq!(
            refused(&format!("<Dial><{noun}>x</{noun}></Dial>")),
            (true, format!("<{noun}> is not supported")),
        );
    }
    // One unsupported noun refuses the whole verb: nobody is rung.
    assert_eq!(
        refused("<Dial><Number>1</Number><Client>bob</Client></Dial>"),
        (true, "<Client> is not supported".into())
    );
}

#[test]
fn dial_garbage_is_invalid() {
    let long_number = "9".repeat(MAX_NUMBER_DIGITS + 1);
    let long_uri = format!("sip:{}@x", "a".repeat(MAX_SIP_URI_CHARS));
    let long_id = "i".repeat(MAX_ID_CHARS + 1);
    let too_many = "<Number>1</Number>".repeat(MAX_DIAL_NOUNS + 1);
    let cases = [
        ("<Dial/>".to_string(), "nothing to dial"),
        ("<Dial>  </Dial>".into(), "nothing to dial"),
        ("<Dial><Number/></Dial>".into(), "nothing to dial"),
        (
            "<Dial>call me</Dial>".into(),
            "\"call me\" is not a number to dial",
        ),
        ("<Dial>+</Dial>".into(), "\"+\" is not a number to dial"),
        (
            format!("<Dial>{long_number}</Dial>"),
            "is not a number to dial",
        ),
        (
            "<Dial>1<Number>2</Number></Dial>".into(),
            "text beside the nouns",
        ),
        (format!("<Dial>{too_many}</Dial>"), "more than 10 nouns"),
        (
            "<Dial><Sip>tel:+1555</Sip></Dial>".into(),
            "is not a sip: or sips: URI",
        ),
        (
            "<Dial><Sip>sip:</Sip></Dial>".into(),
            "is not a sip: or sips: URI",
        ),
        (
            "<Dial><Sip>sip:bob@</Sip></Dial>".into(),
            "is not a sip: or sips: URI",
        ),
        (
            "<Dial><Sip>sip:a b@c</Sip></Dial>".into(),
            "is not a sip: or sips: URI",
        ),
        (
            "<Dial><Sip>sip:é@c</Sip></Dial>".into(),
            "is not a sip: or sips: URI",
        ),
        (
            "<Dial><Sip>alice</Sip></Dial>".into(),
            "is not a sip: or sips: URI",
        ),
        (
            format!("<Dial><Sip>{long_uri}</Sip></Dial>"),
            "is not a sip: or sips: URI",
        ),
        (
            "<Dial><User> </User></Dial>".into(),
            "<User> \"\" is not an id",
        ),
        (
            "<Dial><Device>a b</Device></Dial>".into(),
            "<Device> \"a b\" is not an id",
        ),
        (
            format!("<Dial><Device>{long_id}</Device></Dial>"),
            "is not an id",
        ),
        (
            r#"<Dial timeout="soon">1</Dial>"#.into(),
            "timeout \"soon\" is not a whole number",
        ),
        (
            r#"<Dial timeLimit="-1">1</Dial>"#.into(),
            "timeLimit \"-1\" is not a whole number",
        ),
        (
            r#"<Dial hangupOnStar="1">1</Dial>"#.into(),
            "hangupOnStar \"1\" is neither true nor false",
        ),
        (
            r#"<Dial method="PUT">1</Dial>"#.into(),
            "method \"PUT\" is neither GET nor POST",
        ),
    ];
    // A long value is quoted in part, so the reason still reads.
    assert_eq!(
        refused(&format!("<Dial><Sip>{long_uri}</Sip></Dial>")).1,
        format!("\"sip:{}…\" is not a sip: or sips: URI", "a".repeat(36))
    );
    for (doc, want) in cases {
        let (unsupported, reason) = refused(&doc);
        assert!(!unsupported, "{doc}");
        assert!(reason.contains(want), "{doc}: {reason}");
    }
}

#[test]
fn bad_documents() {
    assert_eq!(
        parse(b"<Reply><Hangup/></Reply>"),
        Err(TwimlError::BadRoot("Reply".into()))
    );
    assert_eq!(
        parse(b"<response/>"),
        Err(TwimlError::BadRoot("response".into()))
    );
    assert_eq!(parse(b"  "), Err(TwimlError::NoRoot));
    assert_eq!(parse(b"\xff<Response/>"), Err(TwimlError::NotUtf8));
    for bad in [
        "<Response><Say>a</Play></Response>",
        "<Response><Say>a</Say>",
        "<Response><Say x=1>a</Say></Response>",
        "<Response><Say a=\"1\" a=\"2\">a</Say></Response>",
        "<Response><Say>&bogus;</Say></Response>",
        "<Response/><Response/>",
        "<Response/>junk",
        "junk<Response/>",
        "{\"module\":\"play\"}",
    ] {
        assert!(
            matches!(parse(bad.as_bytes()), Err(TwimlError::Malformed { .. })),
            "{bad}: {:?}",
            parse(bad.as_bytes())
        );
    }
    let deep = format!(
        "<Response>{}{}</Response>",
        "<a>".repeat(MAX_DEPTH),
        "</a>".repeat(MAX_DEPTH)
    );
    assert_eq!(parse(deep.as_bytes()), Err(TwimlError::TooDeep));
    let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert_eq!(parse(&big), Err(TwimlError::TooLarge));
}

#[test]
fn url_resolution() {
    let base = url::Url::parse("https://ivr.example/app/v1/start.xml?a=1#f").unwrap();
    let cases = [
        ("next.xml", "https://ivr.example/app/v1/next.xml"),
        ("/root.xml", "https://ivr.example/root.xml"),
        ("../up.xml?b=2", "https://ivr.example/app/up.xml?b=2"),
        ("./same", "https://ivr.example/app/v1/same"),
        ("?c=3", "https://ivr.example/app/v1/start.xml?c=3"),
        ("", "https://ivr.example/app/v1/start.xml?a=1"),
        ("//other.example/x", "https://other.example/x"),
        ("http://abs.example/y#frag", "http://abs.example/y"),
        (" spaced.xml ", "https://ivr.example/app/v1/spaced.xml"),
    ];
    for (reference, want) in cases {
        assert_eq!(
            resolve_url(&base, reference).map(|u| u.to_string()),
            Ok(want.to_string()),
            "{reference}"
        );
    }
    assert_eq!(
        resolve_url(&base, "file:///etc/passwd"),
        Err(ResolveError::Scheme("file".into()))
    );
    assert!(matches!(
        resolve_url(&base, "http://[::1"),
        Err(ResolveError::Invalid { .. })
    ));
}

/// The voice stays as written (mapped when spoken, `voice.rs`); the language is the author's,
/// else the one a Polly or Google voice implies, else en-US.
#[test]
fn say_languages_come_from_the_attribute_then_the_voice() {
    let v = verbs(
        r#"<Response>
             <Say voice="Polly.Joanna">a</Say>
             <Say voice=" Google.de-DE-Standard-A ">b</Say>
             <Say voice="Polly.Hans" language="en-gb">c</Say>
             <Say voice="nonsense">d</Say>
           </Response>"#,
    );
    let said: Vec<(&str, &str)> = v
        .iter()
        .map(|verb| match verb {
            Verb::Say {
                voice, language, ..
            } => (voice.as_str(), language.as_str()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        said,
        [
            ("Polly.Joanna", "en-US"),
            ("Google.de-DE-Standard-A", "de-DE"),
            ("Polly.Hans", "en-GB"),
            ("nonsense", "en-US"),
        ]
    );
}
