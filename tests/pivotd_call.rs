//! `pivotd call` (issue 14): the real binary calls a pivotd started in the test, on real
//! loopback sockets, against a pivot server of the test's; its timeline, its exit status, the
//! digits the pivot server receives and the audio it records are checked.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http::{HttpReq, HttpResp, HttpServer};
use common::tls::{assert_one_clean_srtp_call, TestCa};
use common::*;
use pivotd::media::codec::Codec;
use serde_json::Value;

const KEY: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";

/// What one run of `pivotd call` printed and its exit status.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The `--json` lines, each an object.
    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{self}")))
            .collect()
    }

    /// The plain timeline's texts (after the time).
    fn texts(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|l| l.split_once(' ').map_or("", |(_, t)| t))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `pivotd call ARGS` (at most 60 s).
async fn pivotd_call(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pivotd"));
    cmd.arg("call").args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("pivotd call ends within 60 s")
        .expect("pivotd call runs");
    Run {
        status: out.status.code().expect("an exit status"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A server whose 6000 pivots to `voice_url`, whose account has an API key; `extra` adds
/// TOML (devices, other callflows).
async fn pivot_server(voice_url: &str, extra: &str) -> TestServer {
    pivot_server_with(voice_url, extra, "", "").await
}

/// [`pivot_server`] with `[sip]` and `[media]` keys of its own (a TLS listener, SRTP off).
async fn pivot_server_with(voice_url: &str, extra: &str, sip: &str, media: &str) -> TestServer {
    let flows = format!(
        r#"api_key = "{KEY}"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ voice_url = "{voice_url}" }} }}
{extra}
[pivot]
blacklist_cidrs = []
"#
    );
    start(&config_toml(&flows, sip, media)).await
}

/// An IVR: `/start` plays digit-1 and collects three keys (`*` ends a collection, so `#`
/// is one of them) as `pin`, then POSTs them to `/pin`, which plays digit-2; the flow then
/// ends and pivotd hangs up.
fn ivr() -> impl Fn(&HttpReq) -> HttpResp + Send + Sync + 'static {
    |r: &HttpReq| match r.path() {
        "/start" => {
            let pin_url = format!("http://{}/pin", r.header("host").unwrap_or(""));
            HttpResp::json(&format!(
                r#"{{"module": "play", "data": {{"id": "digit-1"}},
                 "children": {{"_": {{"module": "collect_dtmf",
                   "data": {{"max_digits": 3, "terminators": ["*"], "collection_name": "pin",
                             "timeout": 5000, "interdigit_timeout": 3000}},
                   "children": {{"_": {{"module": "pivot", "data": {{"voice_url": "{pin_url}", "method": "POST"}}}}}}}}}}}}"#
            ))
        }
        "/pin" => HttpResp::json(r#"{"module": "play", "data": {"id": "digit-2"}}"#),
        _ => HttpResp::status(404),
    }
}

fn api_url(server: &TestServer) -> String {
    format!("http://{}", server.handle.api.expect("the API listens"))
}

/// Where `needle` starts in `hay`, if anywhere.
fn find(hay: &[i16], needle: &[i16]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn wav_samples(path: &Path) -> Vec<i16> {
    let reader = hound::WavReader::open(path).expect("the recording is a WAV");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 8000, 16),
        "8 kHz 16-bit mono"
    );
    reader.into_samples::<i16>().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ivr_call_prints_both_sides_records_the_prompt_and_exits_0() {
    let web = HttpServer::start(ivr()).await;
    let server = pivot_server(&web.url("/start"), "").await;
    let dir = tempdir();
    let wav = dir.join("heard.wav");
    let run = pivotd_call(&[
        "6000",
        "--server",
        &server.udp.to_string(),
        "--digits",
        "12#",
        "--digits-after",
        "1s",
        "--record",
        &path_str(&wav),
        "--api",
        &api_url(&server),
        "--api-key",
        KEY,
        "--json",
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    let lines = run.json();
    let line = |e: &Value| e["line"].as_str().unwrap_or("").to_string();
    let texts: Vec<String> = lines.iter().map(line).collect();
    // Ours and the server's, each event once, in time order.
    let first = &lines[0];
    assert_eq!(first["source"], "caller", "{run}");
    assert_eq!(first["line"], "0.000 INVITE → 100 → 200", "{run}");
    let start = web.url("/start");
    let pivot = lines
        .iter()
        .find(|e| e["source"] == "server" && e["kind"] == "pivot")
        .unwrap_or_else(|| panic!("no pivot request: {run}"));
    assert_eq!(pivot["url"], Value::from(start.as_str()), "{run}");
    assert_eq!(pivot["status"], 200, "{run}");
    assert!(
        texts.iter().any(|t| t.ends_with(" sent digits 12#")),
        "{run}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.ends_with(" digits 12# collected as Digits[pin]")),
        "{run}"
    );
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|e| e["source"] == "server")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "{run}");
    let times: Vec<f64> = lines[..lines.len() - 1]
        .iter()
        .map(|e| e["at"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{run}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary", "{run}");
    assert_eq!(summary["answered"], true);
    assert_eq!(summary["ended_by"], "server");
    assert_eq!(summary["reason"], "BYE from server (flow ended)", "{run}");
    assert_eq!(summary["exit_status"], 0);
    let call_id = summary["call_id"].as_str().unwrap();
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2, "{run}");
    assert_eq!(reqs[0].field("Call-ID").as_deref(), Some(call_id));
    assert_eq!(reqs[1].field("Digits[pin]").as_deref(), Some("12#"));
    // What it heard is the prompts pivotd played, sample for sample.
    let heard = wav_samples(&wav);
    for id in ["digit-1", "digit-2"] {
        let prompt = Codec::Pcmu.decode(&prompt_pcmu(id));
        assert!(
            find(&heard, &prompt).is_some(),
            "{id} is not in the {} samples recorded",
            heard.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_go_when_the_prompt_heard_ends() {
    let web = HttpServer::start(ivr()).await;
    let server = pivot_server(&web.url("/start"), "").await;
    let run = pivotd_call(&[
        "6000",
        "--server",
        &server.udp.to_string(),
        "--digits",
        "12#",
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2, "{run}");
    assert_eq!(
        reqs[1].field("Digits[pin]").as_deref(),
        Some("12#"),
        "{run}"
    );
    // After the prompt (0.63 s, its speech a little shorter) and half a second of quiet.
    let sent_at: f64 = run
        .stdout
        .lines()
        .find(|l| l.ends_with(" sent digits 12#"))
        .unwrap_or_else(|| panic!("{run}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.6..4.0).contains(&sent_at), "{run}");
    let texts = run.texts();
    assert_eq!(
        texts.last().copied(),
        Some("ended: BYE from server"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_without_a_callflow_exits_1_and_shows_the_404() {
    let web = HttpServer::start(|_| HttpResp::status(500)).await;
    let server = pivot_server(&web.url("/unused"), "").await;
    let run = pivotd_call(&[
        "9999",
        "--server",
        &server.udp.to_string(),
        "--api",
        &api_url(&server),
        "--api-key",
        KEY,
    ])
    .await;
    assert_eq!(run.status, 1, "{run}");
    let texts = run.texts();
    assert_eq!(texts[0], "INVITE → 100 → 404 Not Found", "{run}");
    assert!(
        texts.contains(&"404 from server (no callflow for the number)"),
        "{run}"
    );
    assert_eq!(
        texts.last().copied(),
        Some("ended: 404 Not Found from server (no callflow for the number)"),
        "{run}"
    );
    assert_eq!(web.request_count(), 0);
}

const DEVICE: &str = r#"
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "digit-3" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_answers_the_challenge_with_its_credentials() {
    let web = HttpServer::start(|_| HttpResp::status(500)).await;
    let server = pivot_server(&web.url("/unused"), DEVICE).await;
    let target = server.udp.to_string();
    let call = |password: Option<&'static str>| {
        let target = target.clone();
        async move {
            let mut args = vec!["5000@pivotd.test", "--server", &target];
            if let Some(p) = password {
                args.extend(["--user", "2001", "--password", p]);
            }
            pivotd_call(&args).await
        }
    };
    let run = call(Some("s3cret")).await;
    assert_eq!(run.status, 0, "{run}");
    assert_eq!(
        run.texts()[0],
        "INVITE → 100 → 407 → INVITE with credentials of 2001 → 100 → 200",
        "{run}"
    );
    assert_eq!(
        run.texts().last().copied(),
        Some("ended: BYE from server"),
        "{run}"
    );
    // Without credentials, or with wrong ones: refused, exit 1.
    let run = call(None).await;
    assert_eq!(run.status, 1, "{run}");
    assert!(
        run.texts()[0]
            .ends_with("→ 407 Proxy Authentication Required (give --user and --password)"),
        "{run}"
    );
    let run = call(Some("wrong")).await;
    assert_eq!(run.status, 1, "{run}");
    assert!(
        run.texts()
            .last()
            .unwrap()
            .starts_with("ended: 403 Forbidden from server"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tcp() {
    let web = HttpServer::start(ivr()).await;
    let server = pivot_server(&web.url("/start"), "").await;
    let run = pivotd_call(&[
        "6000",
        "--server",
        &server.tcp.to_string(),
        "--tcp",
        "--digits",
        "12#",
        "--digits-after",
        "1s",
        "--from",
        "1001",
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    assert_eq!(run.texts()[0], "INVITE → 100 → 200", "{run}");
    // `--from` is the caller the pivot server sees.
    assert_eq!(web.requests()[0].field("From").as_deref(), Some("1001"));
    assert_eq!(
        web.requests()[1].field("Digits[pin]").as_deref(),
        Some("12#")
    );
    assert_eq!(
        run.texts().last().copied(),
        Some("ended: BYE from server"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_after_ends_with_bye_from_the_caller_and_exit_0() {
    let web = HttpServer::start(|_| {
        HttpResp::json(
            r#"{"module": "play", "data": {"id": "tone-1khz", "endless_playback": true}}"#,
        )
    })
    .await;
    let server = pivot_server(&web.url("/long"), "").await;
    let run = pivotd_call(&[
        "6000",
        "--server",
        &server.udp.to_string(),
        "--hangup-after",
        "1500ms",
        "--api",
        &api_url(&server),
        "--api-key",
        KEY,
        "--json",
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    let lines = run.json();
    let summary = lines.last().unwrap();
    assert_eq!(summary["ended_by"], "caller", "{run}");
    assert_eq!(summary["reason"], "BYE from caller (--hangup-after 1.5 s)");
    let at = summary["at"].as_f64().unwrap();
    assert!((1.5..5.0).contains(&at), "{run}");
    // The server saw it so too.
    let server_end = lines
        .iter()
        .find(|e| e["source"] == "server" && e["kind"] == "end")
        .unwrap_or_else(|| panic!("no server end: {run}"));
    assert_eq!(server_end["by"], "caller", "{run}");
    assert_eq!(server_end["how"], "BYE", "{run}");
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_the_timeline_of_a_call_placed_by_sipp() {
    let web =
        HttpServer::start(|_| HttpResp::json(r#"{"module": "play", "data": {"id": "digit-4"}}"#))
            .await;
    let server = pivot_server(&web.url("/start"), "").await;
    let sipp = basic_call(server.udp, "6000").await;
    assert!(sipp.ok, "sipp failed:\n{}", sipp.output);
    let call_id = web.requests()[0].field("Call-ID").expect("a Call-ID");
    let store = server.handle.store.clone();
    tokio::task::spawn_blocking(move || store.flush().unwrap())
        .await
        .unwrap();
    let run = pivotd_call(&[
        "--show",
        &call_id,
        "--api",
        &api_url(&server),
        "--api-key",
        KEY,
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    let texts = run.texts();
    assert!(
        texts[0].starts_with("INVITE from sipp@127.0.0.1 to 6000 → 100"),
        "{run}"
    );
    assert!(texts.iter().any(|t| t.starts_with("pivot GET ")), "{run}");
    assert!(
        texts.iter().any(|t| t.starts_with("playing digit-4 (")),
        "{run}"
    );
    assert_eq!(
        texts.last().copied(),
        Some("ended: BYE from server (flow ended)"),
        "{run}"
    );
    // A call the server does not know: an error, exit 2.
    let run = pivotd_call(&[
        "--show",
        "no-such-call@127.0.0.1",
        "--api",
        &api_url(&server),
        "--api-key",
        KEY,
    ])
    .await;
    assert_eq!(run.status, 2, "{run}");
    assert!(
        run.stderr
            .contains("no events for call no-such-call@127.0.0.1"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_exits_2_before_calling() {
    let web = HttpServer::start(ivr()).await;
    let server = pivot_server(&web.url("/start"), "").await;
    let wrong = "0".repeat(64);
    let run = pivotd_call(&[
        "6000",
        "--server",
        &server.udp.to_string(),
        "--api",
        &api_url(&server),
        "--api-key",
        &wrong,
    ])
    .await;
    assert_eq!(run.status, 2, "{run}");
    assert!(
        run.stderr
            .contains("pivotd call: the API refused the key (401: invalid credentials)"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
    assert_eq!(web.request_count(), 0, "no call was placed");
    // A usage error is 2 as well.
    let run = pivotd_call(&["6000", "--digits", "12x"]).await;
    assert_eq!(run.status, 2, "{run}");
    assert!(run.stderr.contains("not a DTMF key"), "{run}");
}

/// `--tls --srtp` (issue 15): the caller connects over TLS (the server's certificate verified
/// against the test CA, by `--ca`), offers RTP/SAVP with SDES keys, and pivotd answers with
/// one: the prompts it hears are decrypted sample for sample into the recording, its digits
/// (SRTP too) reach the pivot server, and pivotd counts an SRTP call with no packet refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_with_srtp_hears_the_prompts_and_its_digits_are_collected() {
    let ca = TestCa::new("pivotd test CA");
    let web = HttpServer::start(ivr()).await;
    let server = pivot_server_with(&web.url("/start"), "", &ca.sip_tls_keys(""), "").await;
    let tls = server.handle.tls[0];
    let dir = tempdir();
    let wav = dir.join("heard.wav");
    let run = pivotd_call(&[
        "6000",
        "--server",
        &tls.to_string(),
        "--tls",
        "--ca",
        &path_str(&ca.ca),
        "--srtp",
        "--digits",
        "12#",
        "--digits-after",
        "1s",
        "--record",
        &path_str(&wav),
        "--json",
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    let lines = run.json();
    assert_eq!(lines[0]["line"], "0.000 INVITE → 100 → 200", "{run}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["srtp"], "AES_CM_128_HMAC_SHA1_80", "{run}");
    assert_eq!(summary["reason"], "BYE from server", "{run}");
    assert!(
        lines.iter().any(|e| e["kind"] == "srtp"
            && e["line"]
                .as_str()
                .unwrap_or("")
                .ends_with(" SRTP AES_CM_128_HMAC_SHA1_80")),
        "{run}"
    );
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2, "{run}");
    assert_eq!(
        reqs[1].field("Digits[pin]").as_deref(),
        Some("12#"),
        "{run}"
    );
    let heard = wav_samples(&wav);
    for id in ["digit-1", "digit-2"] {
        let prompt = Codec::Pcmu.decode(&prompt_pcmu(id));
        assert!(
            find(&heard, &prompt).is_some(),
            "{id} is not in the {} samples recorded",
            heard.len()
        );
    }
    // pivotd's side (counted once the call has ended): one SRTP call, nothing it received
    // refused.
    assert_one_clean_srtp_call(&server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server whose certificate the caller cannot verify: exit 2 before any INVITE, saying
/// why, whether its CA is not trusted or the name it carries is not the one called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_exits_2() {
    let ca = TestCa::new("pivotd test CA");
    let stranger = TestCa::new("someone else's CA");
    let web = HttpServer::start(ivr()).await;
    let server = pivot_server_with(&web.url("/start"), "", &ca.sip_tls_keys(""), "").await;
    let tls = server.handle.tls[0].to_string();
    let run = pivotd_call(&[
        "6000",
        "--server",
        &tls,
        "--tls",
        "--ca",
        &path_str(&stranger.ca),
    ])
    .await;
    assert_eq!(run.status, 2, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "pivotd call: the certificate of {tls} does not verify for 127.0.0.1"
        )),
        "{run}"
    );
    assert!(run.stderr.contains("--ca FILE"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    // The right CA, the wrong name.
    let run = pivotd_call(&[
        "6000@pbx.example.test",
        "--server",
        &tls,
        "--tls",
        "--ca",
        &path_str(&ca.ca),
    ])
    .await;
    assert_eq!(run.status, 2, "{run}");
    assert!(
        run.stderr.contains("does not verify for pbx.example.test"),
        "{run}"
    );
    // --tls-name names the one it carries.
    let run = pivotd_call(&[
        "6000@pbx.example.test",
        "--server",
        &tls,
        "--tls",
        "--ca",
        &path_str(&ca.ca),
        "--tls-name",
        "localhost",
        "--hangup-after",
        "300ms",
    ])
    .await;
    assert_eq!(run.status, 0, "{run}");
    assert_eq!(
        run.texts().last().copied(),
        Some("ended: BYE from caller (--hangup-after 0.3 s)"),
        "{run}"
    );
    assert!(eventually(3, || web.request_count() == 1).await, "{run}");
}

/// `--srtp` to a server whose SRTP is off: its answer names none of our keys, so the caller
/// hangs up at once rather than talk in clear, and says why (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_usable_key_is_hung_up_with_exit_1() {
    let ca = TestCa::new("pivotd test CA");
    let web = HttpServer::start(ivr()).await;
    let tls_keys = ca.sip_tls_keys("");
    let server = pivot_server_with(&web.url("/start"), "", &tls_keys, "encryption = \"off\"").await;
    let run = pivotd_call(&[
        "6000",
        "--server",
        &server.handle.tls[0].to_string(),
        "--tls",
        "--ca",
        &path_str(&ca.ca),
        "--srtp",
        "--json",
    ])
    .await;
    assert_eq!(run.status, 1, "{run}");
    let lines = run.json();
    let summary = lines.last().unwrap();
    assert_eq!(summary["answered"], true, "{run}");
    assert_eq!(summary["ended_by"], "caller", "{run}");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .starts_with("BYE from caller (the answer has no usable SRTP key: "),
        "{run}"
    );
    assert_eq!(summary["srtp"], Value::Null, "{run}");
    assert!(eventually(3, || server.handle.active_calls() == 0).await);
}
