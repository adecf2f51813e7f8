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
        voice: "male".into(),
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
                        voice: "female".into(),
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
fn unknown_verbs_and_dial() {
    let v = verbs(
        r#"<Response><Sms>hi</Sms><Dial callerId="+1555" timeout="20">+1 415 555</Dial>
           <Dial><Number>100</Number><Sip>sip:a@b</Sip></Dial></Response>"#,
    );
    assert_eq!(v[0], Verb::Unknown("Sms".into()));
    assert_eq!(
        v[1],
        Verb::Dial {
            action: None,
            method: Method::Post,
            timeout_s: 20,
            caller_id: Some("+1555".into()),
            number: Some("+1 415 555".into()),
            nouns: vec![],
        }
    );
    assert!(matches!(&v[2], Verb::Dial { number: None, nouns, .. }
        if nouns == &[("Number".to_string(), "100".to_string()), ("Sip".to_string(), "sip:a@b".to_string())]));
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
