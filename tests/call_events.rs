//! The per-call event log (issue 14) over real sockets: SIPp calls pivotd, pivotd asks a real
//! HTTP server, and the call's timeline is read back from
//! `GET /v2/accounts/{ACCOUNT_ID}/calls/{CALL_ID}/events` — recorded for every call, without
//! `debug: true`, in order, ending with how the call ended and who ended it.

mod common;

use common::api::{Answer, Api};
use common::http::{HttpReq, HttpResp, HttpServer};
use common::*;
use serde_json::Value;

const KEY: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";

/// A server whose 6000 pivots to `voice_url` (no `debug`), whose account has an API key.
async fn pivot_server(voice_url: &str) -> TestServer {
    let flows = format!(
        r#"api_key = "{KEY}"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ voice_url = "{voice_url}" }} }}
[pivot]
blacklist_cidrs = []
"#
    );
    start(&config_toml(&flows, "", "")).await
}

/// A Call-ID of its own for a SIPp call (`-cid_str`), with the `@` Call-IDs have.
fn call_id(tag: &str) -> String {
    format!("events-{tag}-{:08x}@127.0.0.1", rand::random::<u32>())
}

/// The call's events from the API, once the store's queue is written (the Call-ID
/// percent-encoded in the path, as a client must).
async fn events(server: &TestServer, call_id: &str) -> Answer {
    let store = server.handle.store.clone();
    tokio::task::spawn_blocking(move || store.flush().unwrap())
        .await
        .unwrap();
    let api = Api::login(&server.handle, KEY).await;
    let encoded = call_id.replace('@', "%40");
    api.get(&format!("/v2/accounts/{ACCOUNT}/calls/{encoded}/events"))
        .await
}

/// The events' timeline lines, after checking the envelope and each event's `at`.
fn lines(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "success");
    let data = answer.data().as_array().expect("a list of events");
    let mut last_at = 0.0;
    data.iter()
        .map(|e| {
            let at = e["at"].as_f64().expect("at, in seconds");
            assert!(at >= last_at, "events out of order: {data:?}");
            last_at = at;
            let line = e["line"].as_str().expect("a line").to_string();
            assert!(
                line.starts_with(&format!("{at:.3} ")),
                "{line} does not start with its time {at}"
            );
            assert!(e["kind"].is_string(), "{e}");
            line
        })
        .collect()
}

/// `line` without its time.
fn text(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, t)| t)
}

/// Whether `texts` holds `wanted` in this order (others may come between).
fn in_order(texts: &[&str], wanted: &[&dyn Fn(&str) -> bool]) -> bool {
    let mut it = texts.iter();
    wanted.iter().all(|w| it.any(|t| w(t)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pivot_ivr_leaves_its_timeline_in_order_ended_by_the_server() {
    let web = HttpServer::start(|r: &HttpReq| match r.path() {
        "/start" => {
            let pin_url = format!("http://{}/pin", r.header("host").unwrap_or(""));
            HttpResp::json(&format!(
                r#"{{"module": "play", "data": {{"id": "digit-1"}},
                 "children": {{"_": {{"module": "collect_dtmf",
                   "data": {{"max_digits": 4, "collection_name": "pin", "interdigit_timeout": 3000}},
                   "children": {{"_": {{"module": "pivot", "data": {{"voice_url": "{pin_url}", "method": "POST"}}}}}}}}}}}}"#
            ))
        }
        "/pin" => HttpResp::json(r#"{"module": "play", "data": {"id": "digit-2"}}"#),
        _ => HttpResp::status(404),
    })
    .await;
    let server = pivot_server(&web.url("/start")).await;
    let cid = call_id("ivr");
    let run = sipp(
        "ivr_dtmf.xml",
        false,
        server.udp,
        &["-s", "6000", "-cid_str", &cid],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert_eq!(web.request_count(), 2);
    assert_eq!(web.requests()[0].field("Call-ID").as_deref(), Some(&*cid));

    let answer = events(&server, &cid).await;
    let lines = lines(&answer);
    let texts: Vec<&str> = lines.iter().map(|l| text(l)).collect();
    let start = web.url("/start");
    let pin = web.url("/pin");
    assert!(lines[0].starts_with("0.0"), "{lines:#?}");
    assert!(
        texts[0].starts_with("INVITE from sipp@127.0.0.1 to 6000 → 100"),
        "{lines:#?}"
    );
    let ok = in_order(
        &texts,
        &[
            &|t| t.starts_with(&format!("pivot GET {start} 200 (")) && t.ends_with("kazoo: play"),
            &|t| t == "→ 200",
            &|t| t.starts_with("playing digit-1 ("),
            &|t| t == "digits 12 collected as Digits[pin]",
            &|t| t.starts_with(&format!("pivot POST {pin} 200 (")) && t.ends_with("kazoo: play"),
            &|t| t.starts_with("playing digit-2 ("),
        ],
    );
    assert!(ok, "{lines:#?}");
    let keys: Vec<&str> = texts
        .iter()
        .filter_map(|t| t.strip_prefix("DTMF "))
        .collect();
    assert_eq!(keys, ["1", "2", "#"], "{lines:#?}");
    assert_eq!(
        texts.last().copied(),
        Some("BYE from server (flow ended)"),
        "{lines:#?}"
    );
    // The fields beside the line: the pivot request's, as data.
    let data = answer.data().as_array().unwrap();
    let first_pivot = data.iter().find(|e| e["kind"] == "pivot").unwrap();
    assert_eq!(first_pivot["method"], "GET");
    assert_eq!(first_pivot["url"], Value::from(start));
    assert_eq!(first_pivot["status"], 200);
    assert_eq!(first_pivot["format"], "kazoo");
    assert_eq!(first_pivot["first"], "play");
    assert!(first_pivot["ms"].is_u64());
    let seqs: Vec<u64> = data.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..data.len() as u64).collect::<Vec<_>>());
    // Recorded without `debug: true`: no debug record was kept, the events were.
    assert!(stored_records(&server, &cid).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_caller_hangs_up_ends_with_bye_from_caller() {
    let web = HttpServer::start(|_| {
        HttpResp::json(
            r#"{"module": "play", "data": {"id": "tone-1khz", "endless_playback": true}}"#,
        )
    })
    .await;
    let server = pivot_server(&web.url("/long")).await;
    let cid = call_id("bye");
    let run = sipp(
        "caller_bye.xml",
        false,
        server.udp,
        &["-s", "6000", "-cid_str", &cid],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
    let lines = lines(&events(&server, &cid).await);
    let texts: Vec<&str> = lines.iter().map(|l| text(l)).collect();
    assert!(texts[0].starts_with("INVITE "), "{lines:#?}");
    assert!(texts.contains(&"→ 200"), "{lines:#?}");
    assert_eq!(texts.last().copied(), Some("BYE from caller"), "{lines:#?}");
    // The caller listened 1.5 s before hanging up.
    let end_at: f64 = lines
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.4..10.0).contains(&end_at), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_says_its_code_and_an_unknown_call_is_404() {
    let web = HttpServer::start(|_| HttpResp::status(500)).await;
    let server = pivot_server(&web.url("/unused")).await;
    let cid = call_id("404");
    let run = sipp(
        "unknown_number.xml",
        false,
        server.udp,
        &["-s", "9999", "-cid_str", &cid],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    let lines = lines(&events(&server, &cid).await);
    let texts: Vec<&str> = lines.iter().map(|l| text(l)).collect();
    assert_eq!(
        texts,
        [
            "INVITE from sipp@127.0.0.1 to 9999 → 100",
            "404 from server (no callflow for the number)"
        ],
        "{lines:#?}"
    );
    assert_eq!(web.request_count(), 0);

    let unknown = events(&server, "no-such-call@127.0.0.1").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.body["status"], "error");
    assert_eq!(unknown.body["error"], "404");
    assert_eq!(unknown.body["data"]["cause"], "no-such-call@127.0.0.1");
    // The same auth as the other account APIs: no token, no events.
    let path = format!(
        "/v2/accounts/{ACCOUNT}/calls/{}/events",
        cid.replace('@', "%40")
    );
    let anonymous = Api::new(&server.handle).get(&path).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_before_the_answer_ends_with_cancel_from_caller() {
    let web =
        HttpServer::start(|_| HttpResp::json(r#"{"module": "sleep", "data": {"duration": 20}}"#))
            .await;
    let server = pivot_server(&web.url("/wait")).await;
    let cid = call_id("cancel");
    let run = sipp(
        "cancel.xml",
        false,
        server.udp,
        &["-s", "6000", "-cid_str", &cid],
    )
    .await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert!(eventually(5, || server.handle.active_calls() == 0).await);
    let lines = lines(&events(&server, &cid).await);
    let texts: Vec<&str> = lines.iter().map(|l| text(l)).collect();
    assert!(texts[0].starts_with("INVITE "), "{lines:#?}");
    assert!(
        texts[1].starts_with(&format!("pivot GET {} 200 (", web.url("/wait")))
            && texts[1].ends_with("kazoo: sleep"),
        "{lines:#?}"
    );
    assert_eq!(texts[2], "sleep 20.0 s", "{lines:#?}");
    assert!(!texts.iter().any(|t| t.starts_with("→ 200")), "{lines:#?}");
    assert_eq!(
        texts.last().copied(),
        Some("CANCEL from caller"),
        "{lines:#?}"
    );
}
