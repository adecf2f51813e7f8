//! Pivot over real sockets: SIPp calls pivotd, pivotd asks a real HTTP server started by the
//! test, and the caller's audio shows what was carried out — the answer's prompt, or the
//! pivot node's `_` child (digit-1) when the request fails.

mod common;

use common::http::{HttpReq, HttpResp, HttpServer};
use common::*;
use std::time::Duration;

/// A server whose 6000 pivots to `voice_url` (data given as TOML inline-table fields), with
/// digit-1 on the `_` branch. `blacklist` is the `[pivot]` blacklist_cidrs line.
async fn pivot_server(data: &str, blacklist: &str) -> TestServer {
    let flows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ {data} }}, children = {{ _ = {{ module = "play", data = {{ id = "digit-1" }} }} }} }}
[pivot]
{blacklist}
"#
    );
    start(&config_toml(&flows, "", "")).await
}

/// One SIPp call to 6000; returns the audio the caller received.
async fn call(server: &TestServer) -> Vec<u8> {
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let run = sipp(
        "basic_call.xml",
        false,
        server.udp,
        &["-s", "6000", "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sink.audio()
}

fn starts_with_prompt(audio: &[u8], id: &str) -> bool {
    let p = prompt_pcmu(id);
    audio.len() >= p.len() && audio[..p.len()] == p[..] && audio.len() < p.len() + 160
}

const PLAY_TONE: &str = r#"{"module": "play", "data": {"id": "tone-1khz"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_get_sends_the_call_fields_and_runs_the_returned_flow() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server = pivot_server(
        &format!("voice_url = \"{}\"", web.url("/ivr?app=1")),
        "blacklist_cidrs = []",
    )
    .await;
    let audio = call(&server).await;
    assert!(
        starts_with_prompt(&audio, "tone-1khz"),
        "caller got {} bytes",
        audio.len()
    );
    let reqs = web.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path()), ("GET", "/ivr"));
    assert!(r.query().starts_with("app=1&"), "{}", r.query());
    let f = |k: &str| {
        r.field(k)
            .unwrap_or_else(|| panic!("no {k} in {}", r.query()))
    };
    assert_eq!(f("Account-ID"), ACCOUNT);
    assert_eq!(f("Api-Version"), "2015-03-01");
    assert_eq!(f("Direction"), "inbound");
    assert_eq!(f("Request"), "6000");
    assert_eq!(f("To"), "6000");
    assert_eq!(f("From"), "sipp");
    assert_eq!(f("From-Realm"), "127.0.0.1");
    assert_eq!(f("Caller-ID-Name"), "SIPp");
    assert_eq!(f("Caller-ID-Number"), "sipp");
    assert!(f("Call-ID").contains("@127.0.0.1"));
    assert_eq!(f("Custom-SIP-Headers[X-Test-Header]"), "basic");
    assert!(r.field("Digits").is_none(), "no digits yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_form_and_post_json_carry_the_same_fields() {
    for body_format in ["form", "json"] {
        let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
        let server = pivot_server(
            &format!(
                "voice_url = \"{}\", method = \"POST\", req_body_format = \"{body_format}\"",
                web.url("/ivr")
            ),
            "blacklist_cidrs = []",
        )
        .await;
        let audio = call(&server).await;
        assert!(starts_with_prompt(&audio, "tone-1khz"));
        let r = &web.requests()[0];
        assert_eq!(r.method, "POST");
        assert!(r.query().is_empty());
        match body_format {
            "form" => {
                assert_eq!(
                    r.header("content-type"),
                    Some("application/x-www-form-urlencoded")
                );
                assert_eq!(r.field("Request").as_deref(), Some("6000"));
                assert_eq!(r.field("Account-ID").as_deref(), Some(ACCOUNT));
            }
            _ => {
                assert_eq!(r.header("content-type"), Some("application/json"));
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["Request"], "6000");
                assert_eq!(v["Account-ID"], ACCOUNT);
                assert_eq!(v["Custom-SIP-Headers"]["X-Test-Header"], "basic");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twiml_request_names_and_a_relative_play_url() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/twiml" => HttpResp::xml("<Response><Play>media/tone.wav</Play><Hangup/></Response>"),
        "/media/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = pivot_server(
        &format!(
            "voice_url = \"{}\", req_format = \"twiml\"",
            web.url("/twiml")
        ),
        "blacklist_cidrs = []",
    )
    .await;
    let audio = call(&server).await;
    assert!(
        starts_with_prompt(&audio, "tone-1khz"),
        "caller got {} bytes",
        audio.len()
    );
    let reqs = web.requests();
    let first = &reqs[0];
    for (k, v) in [
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("Direction", "inbound"),
        ("To", "6000"),
        ("From", "sipp"),
        ("CallerName", "SIPp"),
    ] {
        assert_eq!(
            first.field(k).as_deref(),
            Some(v),
            "{k} in {}",
            first.query()
        );
    }
    assert!(first.field("CallSid").is_some());
    assert!(
        first.field("Call-ID").is_none(),
        "kazoo names are not sent in twiml format"
    );
    assert_eq!(
        reqs[1].path(),
        "/media/tone.wav",
        "relative to the document's URL"
    );
}

/// Every failure reaches the `_` child: the caller hears digit-1.
async fn falls_back(resp: HttpResp, extra: &str) -> HttpServer {
    let web = HttpServer::start(move |_| resp.clone()).await;
    let server = pivot_server(
        &format!("voice_url = \"{}\"{extra}", web.url("/ivr")),
        "blacklist_cidrs = []",
    )
    .await;
    let audio = call(&server).await;
    assert!(
        starts_with_prompt(&audio, "digit-1"),
        "the _ branch was not taken: {} bytes of audio",
        audio.len()
    );
    web
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_2xx_status_takes_the_underscore_branch() {
    falls_back(HttpResp::status(500), "").await;
    falls_back(HttpResp::status(404), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_unreadable_body_takes_the_underscore_branch() {
    falls_back(HttpResp::status(204), "").await;
    falls_back(HttpResp::with("text/plain", "hello"), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_schema_errors_take_the_underscore_branch() {
    falls_back(HttpResp::json(r#"{"module":"#), "").await;
    falls_back(HttpResp::json(r#"{"module":"play","data":{"id":5}}"#), "").await;
    falls_back(HttpResp::json(r#"{"flow":{"module":"play"}}"#), "").await;
    falls_back(HttpResp::xml("<Reply><Hangup/></Reply>"), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_takes_the_underscore_branch() {
    let slow = HttpResp {
        delay: Duration::from_secs(3),
        ..HttpResp::json(PLAY_TONE)
    };
    falls_back(slow, ", req_timeout_ms = 300").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_takes_the_underscore_branch() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ivr", closed.local_addr().unwrap());
    drop(closed);
    let server = pivot_server(&format!("voice_url = \"{url}\""), "blacklist_cidrs = []").await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_blacklist_refuses_127_0_0_1_without_contacting_it() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    // blacklist_cidrs left out is the default list, which holds 127.0.0.0/8. A literal
    // 127.0.0.1 voice_url is refused when the config is loaded (see the next test), so this
    // one names the host `localhost` (the host list is emptied): it resolves, locally, to
    // loopback, and every resolved address must pass.
    let url = format!("http://localhost:{}/ivr", web.addr.port());
    let server = pivot_server(&format!("voice_url = \"{url}\""), "blacklist_hosts = []").await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"));
    assert_eq!(
        web.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the web server was contacted"
    );
}

#[test]
fn a_blacklisted_literal_voice_url_is_refused_when_the_config_is_loaded() {
    let toml = config_toml(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = { module = "pivot", data = { voice_url = "http://127.0.0.1:9/ivr" } }
"#,
        "",
        "",
    );
    let err = pivotd::callflow::check::from_toml_str(&toml, &repo()).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|p| p.key == "accounts[0].callflows[0].flow.data.voice_url"),
        "{err}"
    );
}

/// The IVR of the issue: pivot → tts → collect_dtmf with a pivot child; SIPp keys 1, 2, # as
/// RFC 2833 events; the follow-up request carries the digits; its answer is played and the
/// call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivr_with_tts_and_rfc2833_digits_sends_them_in_the_follow_up() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/start" => {
            let pin_url = format!("http://{}/pin", r.header("host").unwrap_or(""));
            HttpResp::json(&format!(
                r#"{{"module": "tts", "data": {{"text": "Enter your pin, then the pound key."}},
                 "children": {{"_": {{"module": "collect_dtmf",
                   "data": {{"max_digits": 4, "collection_name": "pin", "interdigit_timeout": 3000}},
                   "children": {{"_": {{"module": "pivot", "data": {{"voice_url": "{pin_url}"}}}}}}}}}}}}"#
            ))
        }
        "/pin" => HttpResp::json(r#"{"module": "play", "data": {"id": "digit-2"}}"#),
        _ => HttpResp::status(404),
    })
    .await;
    let server = pivot_server(
        &format!("voice_url = \"{}\"", web.url("/start")),
        "blacklist_cidrs = []",
    )
    .await;
    let run = sipp("ivr_dtmf.xml", false, server.udp, &["-s", "6000"]).await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].path(), "/pin");
    assert_eq!(
        reqs[1].field("Digits[pin]").as_deref(),
        Some("12"),
        "follow-up query: {}",
        reqs[1].query()
    );
    assert_eq!(reqs[1].field("Call-ID"), reqs[0].field("Call-ID"));
}

/// Spec e.1 / j.4: with `debug` on, the request and response records of a real call are
/// stored; with it off, only the schema-error (and JSON-error) records are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_records_of_real_calls_are_stored() {
    use pivotd::store::RecordKind;
    // debug on, the web server answers 404
    let web = HttpServer::start(|_| HttpResp::status(404)).await;
    let server = pivot_server(
        &format!("voice_url = \"{}\", debug = true", web.url("/ivr")),
        "blacklist_cidrs = []",
    )
    .await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"));
    let call_id = web.requests()[0].field("Call-ID").unwrap();
    let records = stored_records(&server, &call_id).await;
    let kinds: Vec<RecordKind> = records.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![RecordKind::Request, RecordKind::Response],
        "{records:?}"
    );
    assert!(records[0].doc["uri"].as_str().unwrap().contains("/ivr?"));
    assert_eq!(records[0].doc["method"], "get", "as in Kazoo's records");
    assert_eq!(records[1].doc["resp_status_code"], "404");
    assert_eq!(records[0].iteration, 1);
    assert!(records[0].created > 63_000_000_000, "Gregorian seconds");

    // debug off, a flow that fails validation: only the schema error is stored
    let web = HttpServer::start(|_| HttpResp::json(r#"{"module":"play","data":{"id":5}}"#)).await;
    let server = pivot_server(
        &format!("voice_url = \"{}\"", web.url("/ivr")),
        "blacklist_cidrs = []",
    )
    .await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"));
    let call_id = web.requests()[0].field("Call-ID").unwrap();
    let records = stored_records(&server, &call_id).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].kind, RecordKind::Error);
    assert!(
        records[0].doc.to_string().contains("flow.data.id"),
        "{}",
        records[0].doc
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failure_body_over_the_cap_and_reset_take_the_underscore_branch() {
    // https to a plain HTTP server: the TLS handshake fails.
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let url = format!("https://{}/ivr", web.addr);
    let server = pivot_server(&format!("voice_url = \"{url}\""), "blacklist_cidrs = []").await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"), "TLS");

    // A body over the 1 MiB cap.
    let big = format!(
        "{{\"module\": \"play\", \"data\": {{\"id\": \"tone-1khz\", \"x\": \"{}\"}}}}",
        "a".repeat(1 << 21)
    );
    falls_back(HttpResp::json(&big), "").await;

    // A server that accepts and closes at once: connection reset / closed.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let server = pivot_server(
        &format!("voice_url = \"http://{addr}/ivr\""),
        "blacklist_cidrs = []",
    )
    .await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"), "reset");
    closer.abort();
}

/// The README's worked example end to end: examples/pivot_server.py (Python, stdlib) answers
/// tts + collect_dtmf + pivot, then `say` of the PIN; SIPp keys 1, 2, # and is hung up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worked_example_pivot_server_drives_a_call() {
    use tokio::io::AsyncBufReadExt;
    let mut py = tokio::process::Command::new("python3")
        .arg(repo().join("examples/pivot_server.py"))
        .arg("0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut lines = tokio::io::BufReader::new(py.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the server's port line");
    let addr = line.rsplit(' ').next().unwrap().to_string();
    let server = pivot_server(
        &format!("voice_url = \"http://{addr}/start\", debug = true"),
        "blacklist_cidrs = []",
    )
    .await;
    let run = sipp("ivr_dtmf.xml", false, server.udp, &["-s", "6000"]).await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    let store = server.handle.store.clone();
    let calls = tokio::task::spawn_blocking(move || {
        store.flush().unwrap();
        store.debug_calls(ACCOUNT, 10).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(calls.len(), 1);
    let call_id = calls[0].call_id.clone();
    let records = stored_records(&server, &call_id).await;
    let pin_request = records
        .iter()
        .find(|r| r.doc["uri"].as_str().is_some_and(|u| u.contains("/pin?")))
        .expect("the follow-up request was made");
    assert!(
        pin_request.doc["uri"]
            .as_str()
            .unwrap()
            .contains("Digits[pin]=12"),
        "{}",
        pin_request.doc
    );
    let _ = py.kill().await;
}

/// An account with a `pivot_secret` signs its requests: the web server recomputes
/// base64(HMAC-SHA256(secret, URL + body)) and compares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_an_account_with_a_secret_are_signed() {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    for method in ["get", "post"] {
        let flows = format!(
            r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ voice_url = "{}", method = "{method}" }} }}
[pivot]
blacklist_cidrs = []
"#,
            web.url("/ivr")
        );
        let toml = config_toml(&flows, "", "").replace(
            "realm = \"pivotd.test\"",
            "realm = \"pivotd.test\"\npivot_secret = \"s3cret\"",
        );
        let server = start(&toml).await;
        call(&server).await;
    }
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2);
    for r in reqs {
        let url = format!("http://{}{}", web.addr, r.target);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(url.as_bytes());
        mac.update(&r.body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(
            r.header("x-pivotd-signature"),
            Some(expected.as_str()),
            "{} {}",
            r.method,
            r.target
        );
    }
}

/// A closed port on 127.0.0.1: a URL nobody answers.
fn unreachable_url(path: &str) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{path}", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// Twilio's `fallback_url`: when `voice_url` answers 500 the same request (method, fields)
/// goes to the fallback, whose answer is run; with `debug` both requests are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_url_answering_500_is_followed_by_the_fallback_url() {
    let web = HttpServer::start(|r| match r.path() {
        "/fallback" => HttpResp::json(PLAY_TONE),
        _ => HttpResp::status(500),
    })
    .await;
    let server = pivot_server(
        &format!(
            "voice_url = \"{}\", fallback_url = \"{}\", method = \"post\", debug = true",
            web.url("/ivr"),
            web.url("/fallback")
        ),
        "blacklist_cidrs = []",
    )
    .await;
    let audio = call(&server).await;
    assert!(
        starts_with_prompt(&audio, "tone-1khz"),
        "the fallback's answer was not run: {} bytes of audio",
        audio.len()
    );
    let reqs = web.requests();
    let asked: Vec<(&str, &str)> = reqs.iter().map(|r| (r.method.as_str(), r.path())).collect();
    assert_eq!(asked, [("POST", "/ivr"), ("POST", "/fallback")]);
    assert_eq!(reqs[0].form(), reqs[1].form(), "the same fields");
    let call_id = reqs[0].field("Call-ID").unwrap();
    let records = stored_records(&server, &call_id).await;
    use pivotd::store::RecordKind::{Request, Response};
    let seen: Vec<_> = records.iter().map(|r| (r.kind, r.iteration)).collect();
    assert_eq!(
        seen,
        [(Request, 1), (Response, 1), (Request, 2), (Response, 2)],
        "{records:?}"
    );
    assert!(records[2].doc["uri"]
        .as_str()
        .unwrap()
        .ends_with("/fallback"));
    assert_eq!(records[1].doc["resp_status_code"], "500");
    assert_eq!(records[3].doc["resp_status_code"], "200");
}

/// An unreachable `voice_url` is a failure like a 500: the fallback's TwiML is carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_voice_url_is_followed_by_the_fallback_url() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/fb/twiml" => HttpResp::xml("<Response><Play>tone.wav</Play><Hangup/></Response>"),
        "/fb/tone.wav" => HttpResp::wav("tone-1khz.wav"),
        _ => HttpResp::status(404),
    })
    .await;
    let server = pivot_server(
        &format!(
            "voice_url = \"{}\", fallback_url = \"{}\", req_format = \"twiml\"",
            unreachable_url("/ivr"),
            web.url("/fb/twiml")
        ),
        "blacklist_cidrs = []",
    )
    .await;
    let audio = call(&server).await;
    assert!(
        starts_with_prompt(&audio, "tone-1khz"),
        "the fallback's TwiML was not run: {} bytes of audio",
        audio.len()
    );
    let reqs = web.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path()).collect();
    // The relative Play resolves against the fallback's URL, the document's own.
    assert_eq!(paths, ["/fb/twiml", "/fb/tone.wav"]);
    assert!(
        reqs[0].field("CallSid").is_some(),
        "TwiML names: {}",
        reqs[0].query()
    );
}

/// Both fail → `_`; a fallback the URL guard refuses (every address of `localhost` is in the
/// blacklist) fails without being contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_fallback_url_fails_too_the_underscore_branch_runs() {
    let web = HttpServer::start(|_| HttpResp::status(503)).await;
    let server = pivot_server(
        &format!(
            "voice_url = \"{}\", fallback_url = \"{}\"",
            web.url("/ivr"),
            web.url("/fallback")
        ),
        "blacklist_cidrs = []",
    )
    .await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"));
    let paths: Vec<String> = web
        .requests()
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(paths, ["/ivr", "/fallback"]);

    let guarded = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let server =
        pivot_server(
            &format!(
            "voice_url = \"http://[::1]:{}/ivr\", fallback_url = \"http://localhost:{}/fallback\"",
            unreachable_url("/").rsplit(':').next().unwrap().trim_end_matches('/'),
            guarded.addr.port()
        ),
            "blacklist_cidrs = [\"127.0.0.0/8\"]\nblacklist_hosts = []",
        )
        .await;
    assert!(starts_with_prompt(&call(&server).await, "digit-1"));
    assert_eq!(
        guarded.connection_count(),
        0,
        "the refused fallback was contacted"
    );
}
