//! TwiML and Kazoo follow-ups over real sockets: a hand-driven caller (raw SIP over UDP, RTP
//! collected by an `RtpSink`, RFC 4733 digits sent from the sink's socket to pivotd's RTP port)
//! calls pivotd, which asks a real HTTP server started by the test. What the caller hears and
//! what the web server receives show what was carried out (spec d, j.3, j.11, j.17, j.18).

mod common;

use common::http::{HttpReq, HttpResp, HttpServer};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// Servers

/// A server whose 7000 runs `flow` (a TOML inline table), with the pivot blacklist emptied
/// (the web server is on 127.0.0.1) and `extra` lines after `[pivot]` (more `[pivot]` keys,
/// then other sections such as `[tts]`).
async fn server(flow: &str, extra: &str) -> TestServer {
    let flows = format!(
        r#"
[[accounts.callflows]]
numbers = ["7000"]
flow = {flow}
[pivot]
blacklist_cidrs = []
{extra}
"#
    );
    start(&config_toml(&flows, "", "")).await
}

/// 7000 pivots to `voice_url` asking for TwiML (GET, the pivot default).
async fn twiml_server(voice_url: &str, extra: &str) -> TestServer {
    server(
        &format!(r#"{{ module = "pivot", data = {{ voice_url = "{voice_url}", req_format = "twiml" }} }}"#),
        extra,
    )
    .await
}

// ---------------------------------------------------------------------------------------
// The caller (after tests/call_behaviour.rs's `Ua`)

struct Ua {
    sip: RawSip,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
}

impl Ua {
    async fn new(server: &TestServer) -> Ua {
        Ua {
            sip: RawSip::udp(server.udp).await,
            call_id: format!("{}@test.invalid", token()),
            from_tag: token(),
            to_tag: None,
            cseq: 0,
        }
    }

    fn request(&self, method: &str, cseq: u32, body: Option<&str>) -> String {
        let local = self.sip.local();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let mut m = format!(
            "{method} sip:7000@pivotd.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:caller@test.invalid>;tag={}\r\n\
             To: <sip:7000@pivotd.test>{to_tag}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local}>\r\n",
            token(),
            self.from_tag,
            self.call_id,
        );
        match body {
            Some(b) => m.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m
    }

    async fn invite(&mut self, rtp_port: u16) {
        self.cseq += 1;
        let m = self.request("INVITE", self.cseq, Some(&pcmu_offer(rtp_port)));
        self.sip.send(m.as_bytes()).await;
    }

    /// The next final response to the INVITE (1xx skipped); panics after `ms`.
    async fn final_response(&mut self, ms: u64) -> String {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.sip.recv(left.as_millis() as u64).await else {
                panic!("no final response within {ms} ms");
            };
            if m.starts_with("SIP/2.0 ") && status(&m) >= 200 {
                return m;
            }
        }
    }

    async fn ack(&mut self) {
        let m = self.request("ACK", self.cseq, None);
        self.sip.send(m.as_bytes()).await;
    }

    /// Waits for pivotd's BYE and answers it 200; panics after `ms`.
    async fn bye(&mut self, ms: u64) -> String {
        let bye = self
            .sip
            .expect("BYE ", ms)
            .await
            .unwrap_or_else(|| panic!("no BYE within {ms} ms"));
        assert_eq!(
            header(&bye, "Call-ID").as_deref(),
            Some(self.call_id.as_str())
        );
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for line in bye.lines() {
            let name = line.split(':').next().unwrap_or("").trim();
            if ["via", "from", "to", "call-id", "cseq"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                ok.push_str(line);
                ok.push_str("\r\n");
            }
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        self.sip.send(ok.as_bytes()).await;
        bye
    }
}

fn pcmu_offer(port: u16) -> String {
    format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    )
}

/// An answered call: the caller's SIP, its RTP sink and pivotd's RTP address.
struct Call {
    ua: Ua,
    sink: RtpSink,
    media: SocketAddr,
    seq: u16,
    ts: u32,
}

impl Call {
    /// Calls 7000, expects a 200 within `ms` and acknowledges it.
    async fn answered(server: &TestServer, ms: u64) -> Call {
        let sink = RtpSink::bind().await;
        let mut ua = Ua::new(server).await;
        ua.invite(sink.addr.port()).await;
        let ok = ua.final_response(ms).await;
        assert_eq!(status(&ok), 200, "INVITE answered:\n{ok}");
        ua.to_tag = to_tag(&ok);
        ua.ack().await;
        Call {
            ua,
            sink,
            media: media_addr(&ok),
            seq: 1000,
            ts: 50_000,
        }
    }

    /// Keys `key` as one RFC 4733 event: start, update, three end packets, 20 ms apart.
    async fn key(&mut self, key: char) {
        let code = match key {
            '0'..='9' => key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("no DTMF key {key}"),
        };
        self.ts = self.ts.wrapping_add(8000);
        for (marker, end, dur) in [
            (true, false, 160),
            (false, false, 320),
            (false, true, 480),
            (false, true, 480),
            (false, true, 480),
        ] {
            self.seq = self.seq.wrapping_add(1);
            let p = dtmf_packet(self.seq, self.ts, marker, code, end, dur);
            self.sink.socket.send_to(&p, self.media).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn keys(&mut self, keys: &str) {
        for k in keys.chars() {
            self.key(k).await;
        }
    }

    async fn wait_audio(&self, packets: usize) {
        assert!(
            eventually(10, || self.sink.packets().len() >= packets).await,
            "expected {packets} RTP packets, got {}",
            self.sink.packets().len()
        );
    }

    /// The audio received, once the BYE came (and late packets had time to land).
    async fn audio_after_bye(&mut self, ms: u64) -> Vec<u8> {
        self.ua.bye(ms).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.sink.audio()
    }
}

/// The audio is exactly the prompt (its last packet padded).
fn is_prompt(audio: &[u8], id: &str) -> bool {
    let p = prompt_pcmu(id);
    audio.len() >= p.len() && audio[..p.len()] == p[..] && audio.len() < p.len() + 160
}

/// The audio ends with the whole prompt, starting on a packet boundary after other audio;
/// returns the bytes that came before it.
fn ends_with_prompt(audio: &[u8], id: &str) -> Option<usize> {
    let p = prompt_pcmu(id);
    let padded = p.len().div_ceil(160) * 160;
    let start = audio.len().checked_sub(padded)?;
    (start % 160 == 0 && audio[start..start + p.len()] == p[..]).then_some(start)
}

/// A web server's requests once it has `n`, waiting up to 5 s.
async fn requests(web: &HttpServer, n: usize) -> Vec<HttpReq> {
    eventually(5, || web.requests().len() >= n).await;
    web.requests()
}

// ---------------------------------------------------------------------------------------
// TwiML

/// Gather with a nested Say (espeak-ng through the default TTS hook) and a relative action:
/// the caller keys 4, 2, # during the Say; the action request (POST, TwiML names) carries
/// Digits=42; its answer plays the tone and hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_with_say_posts_the_digits_to_the_action_and_runs_its_answer() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/app/ivr" => HttpResp::xml(
            r#"<Response>
                 <Gather action="done" timeout="3">
                   <Say voice="woman">Please enter your code, then press the pound key. Thank you.</Say>
                 </Gather>
                 <Say>We did not get your code.</Say>
               </Response>"#,
        ),
        "/app/done" => {
            HttpResp::xml("<Response><Play>/media/tone.wav</Play><Hangup/></Response>")
        }
        "/media/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = twiml_server(&web.url("/app/ivr"), "").await;
    let mut call = Call::answered(&server, 5000).await;
    // The Say is playing: key during it (the first key stops it).
    call.wait_audio(10).await;
    call.keys("42#").await;
    let audio = call.audio_after_bye(8000).await;

    let reqs = web.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/app/ivr", "/app/done", "/media/tone.wav"]);
    let first = &reqs[0];
    assert_eq!(first.method, "GET");
    assert!(first.field("Digits").is_none(), "{}", first.query());
    let action = &reqs[1];
    assert_eq!(action.method, "POST", "Gather's method defaults to POST");
    assert_eq!(
        action.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        action.field("Digits").as_deref(),
        Some("42"),
        "the # ends it"
    );
    assert_eq!(
        action.field("CallSid").as_deref(),
        Some(call.ua.call_id.as_str())
    );
    assert_eq!(action.field("AccountSid").as_deref(), Some(ACCOUNT));
    assert_eq!(action.field("CallStatus").as_deref(), Some("in-progress"));
    assert!(action.field("Call-ID").is_none(), "TwiML names only");

    let said = ends_with_prompt(&audio, "tone-1khz")
        .unwrap_or_else(|| panic!("the tone did not end the audio ({} bytes)", audio.len()));
    assert!(said >= 10 * 160, "the Say played first: {said} bytes");
}

/// Without `action`, Gather posts to the document's own URL (spec d), as configured: the
/// parameters pivotd added to the GET that fetched it are not carried along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_without_action_posts_to_the_document_url() {
    let web = HttpServer::start(|r: &HttpReq| match r.method.as_str() {
        "GET" => HttpResp::xml(
            r#"<Response><Gather numDigits="1"><Pause length="3"/></Gather></Response>"#,
        ),
        _ => HttpResp::xml("<Response><Hangup/></Response>"),
    })
    .await;
    let server = twiml_server(&web.url("/ivr?app=1"), "").await;
    let mut call = Call::answered(&server, 3000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.key('5').await;
    call.ua.bye(5000).await;
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let action = &reqs[1];
    assert_eq!(
        (action.method.as_str(), action.target.as_str()),
        ("POST", "/ivr?app=1")
    );
    assert_eq!(action.field("Digits").as_deref(), Some("5"));
}

/// Redirect with a relative URL: document B (TwiML names, POST) plays digit-3 from a served
/// WAV and hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_fetches_the_relative_url_and_runs_the_new_document() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/flows/a" => HttpResp::xml("<Response><Redirect>b?step=2</Redirect><Hangup/></Response>"),
        "/flows/b" => {
            HttpResp::xml("<Response><Play>../media/three.wav</Play><Hangup/></Response>")
        }
        "/media/three.wav" => HttpResp::wav("digit-3.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = twiml_server(&web.url("/flows/a"), "").await;
    let mut call = Call::answered(&server, 5000).await;
    let audio = call.audio_after_bye(5000).await;
    assert!(
        is_prompt(&audio, "digit-3"),
        "caller got {} bytes",
        audio.len()
    );
    let reqs = web.requests();
    let targets: Vec<(&str, &str)> = reqs.iter().map(|r| (r.path(), r.query())).collect();
    assert_eq!(
        targets[1..],
        [("/flows/b", "step=2"), ("/media/three.wav", "")]
    );
    let b = &reqs[1];
    assert_eq!(b.method, "POST", "Redirect's method defaults to POST");
    assert_eq!(
        b.field("CallSid").as_deref(),
        Some(call.ua.call_id.as_str())
    );
    assert_eq!(b.field("ApiVersion").as_deref(), Some("2010-04-01"));
    assert_eq!(b.field("AccountSid").as_deref(), Some(ACCOUNT));
    assert!(b.field("Call-ID").is_none() && b.field("Digits").is_none());
}

/// `<Hangup/>` answers and hangs up at once; a document that ends without one also ends the
/// call (spec j.11), with a BYE once answered, else 480 (spec j.19).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_and_the_end_of_the_document_end_the_call() {
    for (doc, answered) in [
        ("<Response><Hangup/></Response>", true),
        (r#"<Response><Pause length="0"/></Response>"#, true),
        ("<Response></Response>", false),
    ] {
        let web = HttpServer::start(move |_| HttpResp::xml(doc)).await;
        let server = twiml_server(&web.url("/ivr"), "").await;
        if answered {
            let started = Instant::now();
            let mut call = Call::answered(&server, 3000).await;
            call.ua.bye(2000).await;
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{doc}: {:?}",
                started.elapsed()
            );
            assert!(call.sink.audio().is_empty(), "{doc}: nothing to hear");
        } else {
            let sink = RtpSink::bind().await;
            let mut ua = Ua::new(&server).await;
            ua.invite(sink.addr.port()).await;
            let resp = ua.final_response(3000).await;
            assert_eq!(status(&resp), 480, "{doc}:\n{resp}");
        }
        assert_eq!(web.requests().len(), 1, "{doc}");
        assert!(
            eventually(3, || server.handle.active_calls() == 0).await,
            "{doc}"
        );
    }
}

/// Spec j.17: a Gather with no input goes on with the next verb, and makes no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_without_input_goes_on_with_the_next_verb() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/ivr" => HttpResp::xml(
            r#"<Response><Gather timeout="1"><Say>x</Say></Gather><Play>tone.wav</Play></Response>"#,
        ),
        "/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = twiml_server(&web.url("/ivr"), "").await;
    let mut call = Call::answered(&server, 5000).await;
    let audio = call.audio_after_bye(8000).await;
    let said = ends_with_prompt(&audio, "tone-1khz")
        .unwrap_or_else(|| panic!("the tone did not end the audio ({} bytes)", audio.len()));
    assert!(said > 0, "the Say played before the tone");
    let reqs = web.requests();
    let paths: Vec<(&str, &str)> = reqs.iter().map(|r| (r.method.as_str(), r.path())).collect();
    assert_eq!(
        paths,
        [("GET", "/ivr"), ("GET", "/tone.wav")],
        "no action request"
    );
}

/// `<Reject>` on an unanswered call: busy → 486, rejected (and the default) → 503 (Kazoo, spec d).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_refuses_the_unanswered_call() {
    for (doc, code) in [
        (r#"<Response><Reject reason="busy"/></Response>"#, 486),
        (r#"<Response><Reject reason="rejected"/></Response>"#, 503),
        ("<Response><Reject/><Hangup/></Response>", 503),
    ] {
        let web = HttpServer::start(move |_| HttpResp::xml(doc)).await;
        let server = twiml_server(&web.url("/ivr"), "").await;
        let sink = RtpSink::bind().await;
        let mut ua = Ua::new(&server).await;
        ua.invite(sink.addr.port()).await;
        let resp = ua.final_response(3000).await;
        assert_eq!(status(&resp), code, "{doc}:\n{resp}");
        assert!(sink.packets().is_empty(), "{doc}: no early media");
        assert!(
            eventually(3, || server.handle.active_calls() == 0).await,
            "{doc}"
        );
    }
}

/// A Dial without `action` that fails (no carrier is configured here) goes on with the next
/// verb, as Twilio does; a verb pivotd does not know is skipped (spec j.11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_and_unknown_verbs_go_on_with_the_next_verb() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/ivr" => HttpResp::xml(
            "<Response><Dial>123</Dial><Foo/><Sms>hi</Sms><Play>tone.wav</Play></Response>",
        ),
        "/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = twiml_server(&web.url("/ivr"), "").await;
    let mut call = Call::answered(&server, 5000).await;
    let audio = call.audio_after_bye(5000).await;
    assert!(
        is_prompt(&audio, "tone-1khz"),
        "caller got {} bytes",
        audio.len()
    );
}

/// Spec j.18: a server that always redirects to itself is cut off after
/// `[pivot] max_requests_per_call` requests, and the call ends (BYE once answered, else 480).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_ends_at_max_requests_per_call() {
    for answered in [true, false] {
        let doc = if answered {
            r#"<Response><Pause length="0"/><Redirect>loop</Redirect></Response>"#
        } else {
            "<Response><Redirect>loop</Redirect></Response>"
        };
        let web = HttpServer::start(move |_| HttpResp::xml(doc)).await;
        let server = twiml_server(&web.url("/loop"), "max_requests_per_call = 5").await;
        if answered {
            let mut call = Call::answered(&server, 3000).await;
            call.ua.bye(5000).await;
        } else {
            let sink = RtpSink::bind().await;
            let mut ua = Ua::new(&server).await;
            ua.invite(sink.addr.port()).await;
            let resp = ua.final_response(5000).await;
            assert_eq!(status(&resp), 480, "{resp}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(web.requests().len(), 5, "answered: {answered}");
        assert!(eventually(3, || server.handle.active_calls() == 0).await);
    }
}

// ---------------------------------------------------------------------------------------
// Kazoo follow-ups: the Digits forms (spec j.3)

/// 7000 pivots (Kazoo format) to /start, which answers a `collect_dtmf` of 2 digits (named
/// `pin` when `named`) whose `_` child pivots (POST) to /next. Unnamed, /next plays digit-2;
/// named, /next answers one more (unnamed) `collect_dtmf` of 1 digit whose child pivots (GET)
/// to /last, which plays digit-2.
async fn collect_then_pivot(named: bool) -> (HttpServer, TestServer) {
    let web = HttpServer::start(move |r: &HttpReq| {
        let host = r.header("host").unwrap_or("");
        let name = if named {
            r#", "collection_name": "pin""#
        } else {
            ""
        };
        match (r.path(), named) {
            ("/start", _) => HttpResp::json(&format!(
                r#"{{"module": "collect_dtmf", "data": {{"max_digits": 2{name}}},
                    "children": {{"_": {{"module": "pivot",
                        "data": {{"voice_url": "http://{host}/next", "method": "post"}}}}}}}}"#
            )),
            ("/next", true) => HttpResp::json(&format!(
                r#"{{"module": "collect_dtmf", "data": {{"max_digits": 1}},
                    "children": {{"_": {{"module": "pivot",
                        "data": {{"voice_url": "http://{host}/last"}}}}}}}}"#
            )),
            ("/next", false) | ("/last", true) => {
                HttpResp::json(r#"{"module": "play", "data": {"id": "digit-2"}}"#)
            }
            _ => HttpResp::status(404),
        }
    })
    .await;
    let server = server(
        &format!(
            r#"{{ module = "pivot", data = {{ voice_url = "{}" }} }}"#,
            web.url("/start")
        ),
        "",
    )
    .await;
    (web, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_collection_is_sent_as_plain_digits() {
    let (web, server) = collect_then_pivot(false).await;
    let mut call = Call::answered(&server, 3000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.keys("42").await;
    let audio = call.audio_after_bye(5000).await;
    assert!(is_prompt(&audio, "digit-2"), "{} bytes", audio.len());
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].field("Digits").is_none(), "{}", reqs[0].query());
    let next = &reqs[1];
    assert_eq!(next.method, "POST");
    assert_eq!(next.field("Digits").as_deref(), Some("42"));
    assert!(
        next.form().iter().all(|(k, _)| !k.starts_with("Digits[")),
        "plain form only: {:?}",
        String::from_utf8_lossy(&next.body)
    );
    assert_eq!(next.field("Call-ID"), reqs[0].field("Call-ID"));
}

/// A named collection switches every collection to the object form, and collections
/// accumulate over the call: /last sees the pin and the later unnamed key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_collection_switches_to_the_object_form_and_collections_accumulate() {
    let (web, server) = collect_then_pivot(true).await;
    let mut call = Call::answered(&server, 3000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.keys("42").await;
    assert!(
        eventually(5, || web.requests().len() >= 2).await,
        "no follow-up"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.key('7').await;
    let audio = call.audio_after_bye(5000).await;
    assert!(is_prompt(&audio, "digit-2"), "{} bytes", audio.len());
    let reqs = requests(&web, 3).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/start", "/next", "/last"]);
    let next = &reqs[1];
    assert_eq!(next.field("Digits[pin]").as_deref(), Some("42"));
    assert!(next.field("Digits").is_none(), "no plain Digits beside it");
    let last = &reqs[2];
    assert_eq!(last.field("Digits[pin]").as_deref(), Some("42"));
    assert_eq!(last.field("Digits[default]").as_deref(), Some("7"));
    assert!(last.field("Digits").is_none());
}

/// Issue 14: Twilio's voice names are spoken, not skipped. `Polly.Joanna` reaches the hook as
/// the female voice in en-US, an unknown name as the default (male) voice, a name the
/// operator's `[tts] voices` holds as that voice (in the language its name implies); all are
/// heard before the document's tone. A wrapper around espeak-ng writes down the voice and
/// language each synthesis was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_voice_names_are_spoken_and_an_unknown_one_with_the_default_voice() {
    let dir = tempdir();
    let asked = dir.join("asked");
    let hook = script(
        &dir,
        "hook.sh",
        &format!(
            r#"echo "$1 $2" >> '{}'; exec espeak-ng -v "$1" -w "$3" -- "$5""#,
            path_str(&asked)
        ),
    );
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/ivr" => HttpResp::xml(
            r#"<Response>
                 <Say voice="Polly.Joanna">Hello there.</Say>
                 <Say voice="nonsense">Goodbye now.</Say>
                 <Say voice="Polly.Brian">Cheerio.</Say>
                 <Play>/media/tone.wav</Play>
                 <Hangup/>
               </Response>"#,
        ),
        "/media/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = twiml_server(
        &web.url("/ivr"),
        &format!(
            "[tts]\ncommand = [\"{hook}\", \"{{voice}}\", \"{{language}}\", \"{{out}}\", \"--\", \"{{text}}\"]\n\
             voices = {{ female = \"en+f3\", male = \"en+m3\", \"Polly.Brian\" = \"en+m1\" }}\n"
        ),
    )
    .await;
    let mut call = Call::answered(&server, 5000).await;
    let audio = call.audio_after_bye(10_000).await;
    let before_tone = ends_with_prompt(&audio, "tone-1khz")
        .unwrap_or_else(|| panic!("the tone did not end the audio ({} bytes)", audio.len()));
    let asked = std::fs::read_to_string(&asked).unwrap_or_default();
    assert_eq!(
        asked.lines().collect::<Vec<_>>(),
        ["en+f3 en-US", "en+m3 en-US", "en+m1 en-GB"],
        "the hook's voice and language for each Say"
    );
    // μ-law silence is 0xFF / 0x7F: speech before the tone, over half a second of it.
    let speech = audio[..before_tone]
        .iter()
        .filter(|&&b| b != 0xFF && b != 0x7F)
        .count();
    assert!(
        speech > 4000,
        "{speech} bytes of speech in {before_tone} before the tone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// TTS failures take `_`

/// A pivot answer's `tts` node with a `_` child playing digit-1: with `command` as the TTS
/// hook, the caller hears digit-1 and nothing before it, within `within`.
async fn tts_failure_plays_underscore(command: &str, within: Duration) {
    let web = HttpServer::start(|_| {
        HttpResp::json(
            r#"{"module": "tts", "data": {"text": "This is never heard."},
                "children": {"_": {"module": "play", "data": {"id": "digit-1"}}}}"#,
        )
    })
    .await;
    let server = server(
        &format!(
            r#"{{ module = "pivot", data = {{ voice_url = "{}" }} }}"#,
            web.url("/ivr")
        ),
        &format!("[tts]\ncommand = {command}\ntimeout_ms = 500\n"),
    )
    .await;
    let started = Instant::now();
    let mut call = Call::answered(&server, 5000).await;
    let audio = call.audio_after_bye(5000).await;
    assert!(
        is_prompt(&audio, "digit-1"),
        "{command}: caller got {} bytes",
        audio.len()
    );
    assert!(
        started.elapsed() < within,
        "{command}: took {:?}",
        started.elapsed()
    );
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path_str(&path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tts_hook_takes_the_underscore_branch() {
    let dir = tempdir();
    let fails = script(&dir, "fails.sh", "echo 'no voice' >&2; exit 1");
    tts_failure_plays_underscore(
        &format!(r#"["{fails}", "{{out}}"]"#),
        Duration::from_secs(3),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tts_hook_takes_the_underscore_branch() {
    tts_failure_plays_underscore(
        r#"["/nonexistent/pivotd-tts-hook", "{out}", "--", "{text}"]"#,
        Duration::from_secs(3),
    )
    .await;
}

/// The hook outlives `[tts] timeout_ms` (500 ms here; 10 s by default): killed, then `_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tts_hook_is_killed_at_the_timeout_and_takes_the_underscore_branch() {
    let dir = tempdir();
    let slow = script(&dir, "slow.sh", "sleep 30");
    tts_failure_plays_underscore(&format!(r#"["{slow}", "{{out}}"]"#), Duration::from_secs(4))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spec b.5: with `cdr_url`, the CDR of a TwiML-driven call is posted (form-encoded) when
/// the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdr_url_gets_the_cdr_when_the_call_ends() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/ivr" => HttpResp::xml("<Response><Play>tone.wav</Play><Hangup/></Response>"),
        "/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        "/cdr" => HttpResp::status(200),
        _ => HttpResp::status(404),
    })
    .await;
    let server = server(
        &format!(
            r#"{{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml", cdr_url = "{}" }} }}"#,
            web.url("/ivr"),
            web.url("/cdr")
        ),
        "",
    )
    .await;
    let mut call = Call::answered(&server, 5000).await;
    call.audio_after_bye(5000).await;
    let cdr = requests(&web, 3)
        .await
        .into_iter()
        .find(|r| r.path() == "/cdr");
    let cdr = cdr.expect("a CDR request");
    assert_eq!(cdr.method, "POST");
    assert_eq!(
        cdr.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        cdr.field("Call-ID").as_deref(),
        Some(call.ua.call_id.as_str())
    );
    assert_eq!(cdr.field("Account-ID").as_deref(), Some(ACCOUNT));
    assert_eq!(
        cdr.field("Hangup-Cause").as_deref(),
        Some("NORMAL_CLEARING")
    );
    let billed: u64 = cdr.field("Billing-Seconds").unwrap().parse().unwrap();
    assert!(billed >= 1, "the 2 s tone was billed: {billed}");
}

// ---------------------------------------------------------------------------------------
// Follow-ups fail like first requests (issue 7): a failed Redirect or Gather action runs the
// pivot node's `_` child, with the first request's metrics outcome and debug records.

/// How a follow-up fails.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    /// To 192.0.2.1, which the test server's `blacklist_cidrs` holds: refused, never asked.
    Blacklisted,
    /// A reference that resolves to no http(s) URL.
    NotHttp,
    /// To a closed port.
    Unreachable,
    /// Answered 500.
    Status500,
    /// Answered 200 with an HTML page: neither TwiML nor Kazoo JSON.
    Garbage,
    /// Answered after the node's `req_timeout_ms` (500 ms).
    Timeout,
}

impl Failure {
    /// The `pivotd_pivot_requests_total` outcome that counts it (as for a first request).
    fn outcome(self) -> &'static str {
        match self {
            Failure::Blacklisted | Failure::NotHttp => "refused",
            Failure::Unreachable | Failure::Timeout => "failed",
            Failure::Status500 => "http_error",
            Failure::Garbage => "invalid",
        }
    }

    /// The follow-up URL as written in the document; `closed` is a port nobody listens on.
    fn target(self, closed: u16) -> String {
        match self {
            Failure::Blacklisted => "http://192.0.2.1/app/next".into(),
            Failure::NotHttp => "ftp://files.example/app/next".into(),
            Failure::Unreachable => format!("http://127.0.0.1:{closed}/app/next"),
            Failure::Status500 => "broken".into(),
            Failure::Garbage => "garbage".into(),
            Failure::Timeout => "slow".into(),
        }
    }

    /// The path the web server sees the follow-up request on, if it sees it.
    fn path(self) -> Option<&'static str> {
        match self {
            Failure::Status500 => Some("/app/broken"),
            Failure::Garbage => Some("/app/garbage"),
            Failure::Timeout => Some("/app/slow"),
            _ => None,
        }
    }

    /// The debug records of the failed request (the node has `debug = true`), as a first
    /// request's: an error record when no answer came, the response when one did, and the
    /// answer's error record when it could not be read.
    fn records(self) -> Vec<pivotd::store::RecordKind> {
        use pivotd::store::RecordKind::*;
        match self {
            Failure::Blacklisted | Failure::NotHttp => vec![Error],
            Failure::Unreachable | Failure::Timeout => vec![Request, Error],
            Failure::Status500 => vec![Request, Response],
            Failure::Garbage => vec![Request, Response, Error],
        }
    }
}

/// Where the follow-up is made.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    /// `<Redirect>` as the first verb: the call is still ringing.
    RedirectUnanswered,
    /// `<Redirect>` after a `<Pause>` has answered the call.
    RedirectAnswered,
    /// A `<Gather>` action, after the caller keyed 5 (Gather answers the call).
    GatherAction,
}

impl Trigger {
    fn document(self, target: &str) -> String {
        match self {
            Trigger::RedirectUnanswered => {
                format!("<Response><Redirect>{target}</Redirect></Response>")
            }
            Trigger::RedirectAnswered => {
                format!(r#"<Response><Pause length="0"/><Redirect>{target}</Redirect></Response>"#)
            }
            Trigger::GatherAction => format!(
                r#"<Response><Gather numDigits="1" timeout="5" action="{target}"/></Response>"#
            ),
        }
    }
}

/// 7000 pivots (TwiML, `debug = true`, 500 ms timeout) to /app/ivr, which answers `trigger`'s
/// document; the node's `_` child pivots to /sorry, which answers a Kazoo `play` of digit-1.
/// The follow-up fails as `failure` says: the caller must hear digit-1 — the `_` child — and
/// nothing else, and the failure must be counted and recorded as a first request's would be.
async fn follow_up_failure_takes_the_underscore_branch(failure: Failure, trigger: Trigger) {
    let what = format!("{failure:?} at {trigger:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let doc = trigger.document(&failure.target(closed_port));
    let web = HttpServer::start(move |r: &HttpReq| match r.path() {
        "/app/ivr" => HttpResp::xml(&doc),
        "/app/broken" => HttpResp::status(500),
        "/app/garbage" => HttpResp::with("text/html", "<html><body>Oops</body></html>"),
        "/app/slow" => HttpResp {
            delay: Duration::from_secs(3),
            ..HttpResp::xml("<Response><Hangup/></Response>")
        },
        "/sorry" => HttpResp::json(r#"{"module": "play", "data": {"id": "digit-1"}}"#),
        _ => HttpResp::status(404),
    })
    .await;
    let flows = format!(
        r#"
[[accounts.callflows]]
numbers = ["7000"]
flow = {{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml", req_timeout_ms = 500, debug = true }}, children = {{ _ = {{ module = "pivot", data = {{ voice_url = "{}", req_format = "twiml" }} }} }} }}
[pivot]
blacklist_cidrs = ["192.0.2.0/24"]
"#,
        web.url("/app/ivr"),
        web.url("/sorry")
    );
    let server = start(&config_toml(&flows, "", "")).await;

    // Unanswered, a failure that ended the call would be a 480 here.
    let mut call = Call::answered(&server, 5000).await;
    if trigger == Trigger::GatherAction {
        tokio::time::sleep(Duration::from_millis(200)).await;
        call.key('5').await;
    }
    let audio = call.audio_after_bye(8000).await;
    assert!(
        is_prompt(&audio, "digit-1"),
        "{what}: the _ branch was not taken: the caller got {} bytes",
        audio.len()
    );

    let reqs = requests(&web, 2).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path()).collect();
    let expected: Vec<&str> = ["/app/ivr"]
        .into_iter()
        .chain(failure.path())
        .chain(["/sorry"])
        .collect();
    assert_eq!(paths, expected, "{what}");
    let sorry = reqs.iter().find(|r| r.path() == "/sorry").unwrap();
    let status = match trigger {
        Trigger::RedirectUnanswered => "ringing",
        _ => "in-progress",
    };
    assert_eq!(sorry.field("CallStatus").as_deref(), Some(status), "{what}");
    if trigger == Trigger::GatherAction && failure.path().is_some() {
        assert_eq!(reqs[1].field("Digits").as_deref(), Some("5"), "{what}");
    }

    let outcomes = server.handle.pivot_stats.outcomes();
    let count = |label: &str| outcomes.iter().find(|(l, _)| *l == label).unwrap().1;
    assert_eq!(count(failure.outcome()), 1, "{what}: {outcomes:?}");
    assert_eq!(count("ok"), 2, "{what}: /app/ivr and /sorry: {outcomes:?}");

    // The node's debug flag covers its follow-ups (iteration 2); /sorry's node has none.
    let records = stored_records(&server, &call.ua.call_id).await;
    let second: Vec<_> = records
        .iter()
        .filter(|r| r.iteration == 2)
        .map(|r| r.kind)
        .collect();
    assert_eq!(second, failure.records(), "{what}: {records:?}");
    assert!(
        records.iter().all(|r| r.iteration <= 2),
        "{what}: {records:?}"
    );
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}

async fn every_trigger_takes_the_underscore_branch(failure: Failure) {
    for trigger in [
        Trigger::RedirectUnanswered,
        Trigger::RedirectAnswered,
        Trigger::GatherAction,
    ] {
        follow_up_failure_takes_the_underscore_branch(failure, trigger).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_the_guard_refuses_takes_the_underscore_branch() {
    every_trigger_takes_the_underscore_branch(Failure::Blacklisted).await;
    every_trigger_takes_the_underscore_branch(Failure::NotHttp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_follow_up_takes_the_underscore_branch() {
    every_trigger_takes_the_underscore_branch(Failure::Unreachable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_answered_500_takes_the_underscore_branch() {
    every_trigger_takes_the_underscore_branch(Failure::Status500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_answered_with_garbage_takes_the_underscore_branch() {
    every_trigger_takes_the_underscore_branch(Failure::Garbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_that_times_out_takes_the_underscore_branch() {
    every_trigger_takes_the_underscore_branch(Failure::Timeout).await;
}

/// A Kazoo answer replaces the pivot node (spec b.3): a `pivot` nested in it is a node of its
/// own, and its failed TwiML follow-up runs *its* `_` child (digit-1), not the first node's
/// (digit-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_pivots_failed_follow_up_takes_its_own_underscore_branch() {
    let web = HttpServer::start(|r: &HttpReq| {
        let host = r.header("host").unwrap_or("");
        match r.path() {
            "/start" => HttpResp::json(&format!(
                r#"{{"module": "pivot", "data": {{"voice_url": "http://{host}/inner", "req_format": "twiml"}},
                    "children": {{"_": {{"module": "play", "data": {{"id": "digit-1"}}}}}}}}"#
            )),
            "/inner" => HttpResp::xml("<Response><Redirect>broken</Redirect></Response>"),
            "/broken" => HttpResp::status(500),
            _ => HttpResp::status(404),
        }
    })
    .await;
    let server = server(
        &format!(
            r#"{{ module = "pivot", data = {{ voice_url = "{}" }}, children = {{ _ = {{ module = "play", data = {{ id = "digit-2" }} }} }} }}"#,
            web.url("/start")
        ),
        "",
    )
    .await;
    let mut call = Call::answered(&server, 5000).await;
    let audio = call.audio_after_bye(5000).await;
    assert!(
        is_prompt(&audio, "digit-1"),
        "the nested node's _ was not taken: {} bytes",
        audio.len()
    );
    let paths: Vec<String> = web
        .requests()
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(paths, ["/start", "/inner", "/broken"]);
}

// ---------------------------------------------------------------------------------------
// In-band DTMF (keys as tones in the audio, for callers without telephone-event)

/// `keys` as μ-law RTP packets (20 ms each, from `seq`/`ts`): per key 100 ms of its two
/// tones, then 100 ms of silence.
fn tone_packets(keys: &str, seq: &mut u16, ts: &mut u32) -> Vec<Vec<u8>> {
    use pivotd::media::codec::Codec;
    let freqs = |k: char| -> (f32, f32) {
        let rows = [697.0, 770.0, 852.0, 941.0];
        let cols = [1209.0, 1336.0, 1477.0];
        let i = "123456789*0#".find(k).expect("a key");
        (rows[i / 3], cols[i % 3])
    };
    let mut pcm: Vec<i16> = Vec::new();
    for k in keys.chars() {
        let (r, c) = freqs(k);
        for n in 0..800 {
            let t = n as f32 / 8000.0;
            let v = 6000.0 * (std::f32::consts::TAU * r * t).sin()
                + 6000.0 * (std::f32::consts::TAU * c * t).sin();
            pcm.push(v as i16);
        }
        pcm.extend([0i16; 800]);
    }
    Codec::Pcmu
        .encode(&pcm)
        .chunks(160)
        .map(|payload| {
            *seq = seq.wrapping_add(1);
            *ts = ts.wrapping_add(160);
            let mut p = vec![0x80, 0];
            p.extend(seq.to_be_bytes());
            p.extend(ts.to_be_bytes());
            p.extend(0x5eed_u32.to_be_bytes());
            p.extend(payload);
            p
        })
        .collect()
}

/// A Gather of three keys whose action request comes back; the flow then hangs up.
async fn gather_server() -> HttpServer {
    HttpServer::start(|r: &HttpReq| match r.path() {
        "/app/ivr" => HttpResp::xml(
            r#"<Response><Gather numDigits="3" action="done" timeout="2"><Pause length="5"/></Gather><Hangup/></Response>"#,
        ),
        _ => HttpResp::xml("<Response><Hangup/></Response>"),
    })
    .await
}

/// A caller offering PCMU alone (no telephone-event) presses 4, 2, 7 as tones in its audio:
/// pivotd hears them (Goertzel, `media/inband_dtmf.rs`) and the Gather's action gets
/// Digits=427.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sent_as_tones_by_a_caller_without_telephone_event_are_gathered() {
    let web = gather_server().await;
    let server = twiml_server(&web.url("/app/ivr"), "").await;
    let sink = RtpSink::bind().await;
    let mut ua = Ua::new(&server).await;
    ua.cseq += 1;
    let offer = format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        sink.addr.port()
    );
    let invite = ua.request("INVITE", ua.cseq, Some(&offer));
    ua.sip.send(invite.as_bytes()).await;
    let ok = ua.final_response(5000).await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(
        !ok.contains("telephone-event"),
        "no RFC 4733 in the answer: {ok}"
    );
    ua.to_tag = to_tag(&ok);
    ua.ack().await;
    let media = media_addr(&ok);

    let (mut seq, mut ts) = (100u16, 8000u32);
    for p in tone_packets("427", &mut seq, &mut ts) {
        sink.socket.send_to(&p, media).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ua.bye(8000).await;
    let reqs = requests(&web, 2).await;
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(
        reqs[1].field("Digits").as_deref(),
        Some("427"),
        "{:?}",
        reqs[1]
    );
    // The timeline: each key heard, then the Gather's digits and where they went.
    let lines = event_lines(&server, &ua.call_id).await;
    let texts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(_, t)| t)
        .collect();
    let keys: Vec<&str> = texts
        .iter()
        .filter_map(|t| t.strip_prefix("DTMF "))
        .collect();
    assert_eq!(keys, ["4", "2", "7"], "{lines:#?}");
    assert!(
        texts.contains(&"digits 427 collected as Digits"),
        "{lines:#?}"
    );
    // The action's answer is a Hangup.
    assert!(
        ends_with_line(&lines, "BYE from server (flow ended)"),
        "{lines:#?}"
    );
}

/// A caller that offered telephone-event sends its keys that way: tones in its audio are
/// audio, not keys (the Gather times out with nothing and the document's Hangup runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tones_from_a_caller_with_telephone_event_are_not_keys() {
    let web = gather_server().await;
    let server = twiml_server(&web.url("/app/ivr"), "").await;
    let mut call = Call::answered(&server, 5000).await;
    let (mut seq, mut ts) = (call.seq, call.ts);
    for p in tone_packets("427", &mut seq, &mut ts) {
        call.sink.socket.send_to(&p, call.media).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.ua.bye(8000).await;
    let reqs = web.requests();
    assert_eq!(reqs.len(), 1, "no action request: {reqs:?}");
}
