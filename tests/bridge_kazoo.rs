//! Kazoo's pivot bridging examples (`tests/fixtures/kazoo-bridging/`) end to end with real
//! phones: a pivot web server answers each example's JSON, its ids replaced by the test's
//! devices and users, and a caller on raw sockets is bridged through pivotd to baresip
//! (`device`, `ring_group`), pjsua2 and a scripted phone (`user`), and SIPp as a carrier
//! (`resources`, global and local). In each the callee hears the caller's tone and the caller
//! the callee's (by frequency; the phones play sox WAVs and record what they hear), RFC 4733
//! from the caller reaches pjsua2, BYE comes from the caller in some and the callee in others,
//! and the caller's CANCEL while a user's two devices ring cancels both.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::baresip::Baresip;
use common::bridge::*;
use common::http::{HttpResp, HttpServer};
use common::pjsua::Pjsua;
use common::*;
use serde_json::Value;

const REALM: &str = "pivotd.test";
/// The number whose callflow asks the pivot server.
const NUMBER: &str = "7000";
/// What the caller sends, and what the phones and the carrier send back.
const CALLER_TONE: f32 = 1000.0;
const CALLEE_TONE: f32 = 600.0;

/// One of Kazoo's examples, as JSON.
fn example(name: &str) -> Value {
    let path = repo().join("tests/fixtures/kazoo-bridging").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The example with each placeholder id (a string value) replaced by the test's.
fn with_ids(mut v: Value, ids: &[(&str, &str)]) -> Value {
    fn walk(v: &mut Value, ids: &[(&str, &str)]) {
        match v {
            Value::String(s) => {
                if let Some((_, to)) = ids.iter().find(|(from, _)| from == s) {
                    *s = (*to).to_string();
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, ids)),
            Value::Object(map) => map.values_mut().for_each(|i| walk(i, ids)),
            _ => {}
        }
    }
    walk(&mut v, ids);
    v
}

/// A pivot web server answering `answer` to every request, and a pivotd whose number 7000
/// asks it; `account` is more `[[accounts]]` TOML (devices, users, carriers), `system` the
/// system's `[[resources]]`. Callers need no credentials.
async fn pivot_to(answer: &Value, account: &str, system: &str) -> (HttpServer, TestServer) {
    let body = answer.to_string();
    let web = HttpServer::start(move |_| HttpResp::json(&body)).await;
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["{NUMBER}"]
flow = {{ module = "pivot", data = {{ voice_url = "{}" }} }}
{account}
{system}
[pivot]
blacklist_cidrs = []
"#,
        web.url("/kazoo")
    );
    let server = start(&config_toml(&callflows, "allow_unauthenticated = true", "")).await;
    (web, server)
}

/// `[[accounts.devices]]` entries: (id, username, owner) with the password `s3cret`.
fn devices(list: &[(&str, &str, Option<&str>)]) -> String {
    list.iter()
        .map(|(id, username, owner)| {
            let owner = owner.map_or(String::new(), |o| format!("owner_id = \"{o}\"\n"));
            format!(
                "[[accounts.devices]]\nid = \"{id}\"\nusername = \"{username}\"\n\
                 password = \"s3cret\"\n{owner}"
            )
        })
        .collect()
}

/// User u1 owning devices d1 (username 3001) and d2 (3002).
fn user_with_two_devices() -> String {
    let devices = devices(&[("d1", "3001", Some("u1")), ("d2", "3002", Some("u1"))]);
    format!("[[accounts.users]]\nid = \"u1\"\n{devices}")
}

/// A WAV of the callees' tone in a directory of its own, removed with it; long enough for
/// any call here (baresip hangs up when its file ends).
struct CalleeWav(PathBuf);

impl CalleeWav {
    fn new() -> CalleeWav {
        let path = tempdir().join("callee-tone.wav");
        sox_tone(&path, CALLEE_TONE, 30);
        CalleeWav(path)
    }
}

impl Drop for CalleeWav {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Waits until `device` has a binding.
async fn registered(server: &TestServer, device: &str, log: impl Fn() -> String) {
    let bound = eventually(10, || {
        !server
            .handle
            .registrar
            .bindings_of(ACCOUNT, device)
            .is_empty()
    })
    .await;
    assert!(bound, "{device} did not register:\n{}", log());
}

/// Waits for the call to be over and its RTP ports and pacer streams released (the
/// transactions linger by RFC 3261's timers, up to 32 s: not waited for).
async fn assert_call_gone(server: &TestServer, before: pivotd::server::MediaUse) {
    let gone = eventually(5, || {
        server.handle.active_calls() == 0 && server.handle.media_use() == before
    })
    .await;
    assert!(
        gone,
        "left behind: calls {}, media {:?} (was {before:?})",
        server.handle.active_calls(),
        server.handle.media_use()
    );
}

/// Asserts that `pcm` (at 8 kHz) is mostly the `freq` tone and long enough.
fn assert_tone(pcm: &[i16], freq: f32, min_samples: usize, who: &str) {
    assert!(
        pcm.len() >= min_samples,
        "{who}: {} samples, wanted {min_samples}",
        pcm.len()
    );
    let share = tone_share(pcm, freq);
    assert!(share > 0.7, "{who} hears {freq} Hz: share {share}");
}

/// The caller sends its tone for `ms` (which also proves its address to pivotd) while the
/// phone plays its own; the caller must have heard the phone's tone in the second half.
async fn caller_talks_with_a_phone(caller: &Caller, ok: &str, ms: u32, log: impl Fn() -> String) {
    send_tone(&caller.media.socket, media_addr(ok), 0, CALLER_TONE, ms).await;
    let heard = received_pcm(&caller.media);
    assert!(
        heard.len() >= 4000,
        "the caller got {} samples\n{}",
        heard.len(),
        log()
    );
    assert_tone(
        &heard[heard.len() / 2..],
        CALLEE_TONE,
        2000,
        "the caller (from the phone)",
    );
}

/// Kazoo's `device` example: the registered baresip rings and answers; each hears the other;
/// the caller hangs up and the phone gets the BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_example_rings_baresip_which_answers_and_the_caller_hangs_up() {
    let answer = with_ids(example("device.json"), &[("device_id", "d1")]);
    let (web, server) = pivot_to(&answer, &devices(&[("d1", "2001", None)]), "").await;
    let wav = CalleeWav::new();
    let phone = Baresip::start_recording(server.udp, "2001", "s3cret", REALM, &wav.0).await;
    registered(&server, "d1", || phone.log()).await;
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered(NUMBER, &[0], 10_000).await;
    assert_eq!(web.request_count(), 1, "one pivot request");
    caller_talks_with_a_phone(&caller, &ok, 1500, || phone.log()).await;
    caller.bye(&ok).await;
    assert!(
        eventually(5, || phone
            .log()
            .lines()
            .any(|l| l.trim_start().starts_with("BYE sip:")))
        .await,
        "the phone got the caller's BYE:\n{}",
        phone.log()
    );
    let heard = eventually(5, || phone.heard().is_some()).await;
    assert!(heard, "baresip recorded nothing:\n{}", phone.log());
    assert_tone(
        &phone.heard().unwrap(),
        CALLER_TONE,
        4000,
        "baresip (from the caller)",
    );
    assert_call_gone(&server, before).await;
}

/// Kazoo's `user` example: both of the user's devices ring — pjsua2 and a scripted phone
/// that only rings; pjsua2 answers, the other gets CANCEL. Each hears the other, the
/// caller's key 5 (RFC 4733) reaches pjsua2, and pjsua2 hangs up: the caller gets the BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_example_rings_both_devices_pjsua2_answers_and_hangs_up() {
    let answer = with_ids(example("user.json"), &[("user_id", "u1")]);
    let (_web, server) = pivot_to(&answer, &user_with_two_devices(), "").await;
    let wav = CalleeWav::new();
    let mut pj = Pjsua::register(server.udp, "3001", "s3cret", REALM, &wav.0, Some(600)).await;
    let ringer = Callee::start(Script::Ring).await;
    let reg = ringer.register(server.udp, "3002", REALM, "s3cret").await;
    assert_eq!(status(&reg), 200, "{reg}");
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    let (ok, seen) = caller.answered(NUMBER, &[0], 10_000).await;
    assert!(seen.contains(&180), "the caller heard ringing: {seen:?}");
    assert!(
        !ringer.received("INVITE").is_empty(),
        "the user's second device rang too"
    );
    assert!(
        eventually(5, || !ringer.received("CANCEL").is_empty()).await,
        "the device that did not answer got CANCEL"
    );
    assert!(
        eventually(5, || !ringer.received("ACK").is_empty()).await,
        "its 487 was acknowledged"
    );
    assert!(pj.expect("confirmed", 5).await.is_some());
    caller_talks_with_a_phone(&caller, &ok, 1500, || format!("{:?}", pj.lines())).await;
    send_key(&caller.media.socket, media_addr(&ok), 5).await;
    assert!(
        pj.expect("dtmf 5", 5).await.is_some(),
        "pjsua2 got the caller's key 5"
    );
    pj.command("hangup").await;
    assert!(
        caller.sip.expect("BYE ", 5000).await.is_some(),
        "the caller got a BYE when pjsua2 hung up"
    );
    let heard = pj.heard(5).await;
    assert_tone(&heard, CALLER_TONE, 4000, "pjsua2 (from the caller)");
    assert_call_gone(&server, before).await;
}

/// The caller cancels while the user's two devices (pjsua2, which does not answer, and a
/// scripted phone) ring: both get CANCEL, the caller 487.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_users_two_devices_ring_cancels_both() {
    let answer = with_ids(example("user.json"), &[("user_id", "u1")]);
    let (_web, server) = pivot_to(&answer, &user_with_two_devices(), "").await;
    let wav = CalleeWav::new();
    let pj = Pjsua::register(server.udp, "3001", "s3cret", REALM, &wav.0, None).await;
    let ringer = Callee::start(Script::Ring).await;
    let reg = ringer.register(server.udp, "3002", REALM, "s3cret").await;
    assert_eq!(status(&reg), 200, "{reg}");
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    caller.invite(NUMBER, &[0], "").await;
    assert!(caller.sip.expect("180", 8000).await.is_some(), "ringing");
    assert!(pj.expect("incoming", 5).await.is_some(), "pjsua2 rings");
    assert!(
        eventually(5, || !ringer.received("INVITE").is_empty()).await,
        "the scripted phone rings"
    );
    caller.cancel().await;
    let mut seen = Vec::new();
    let r = caller.final_response(5000, &mut seen).await;
    let r = r.unwrap_or_else(|| panic!("no final response; seen {seen:?}"));
    assert_eq!(status(&r), 487, "{r}");
    assert!(
        pj.expect("disconnected 487", 5).await.is_some(),
        "pjsua2 was cancelled"
    );
    assert!(
        eventually(5, || !ringer.received("CANCEL").is_empty()).await,
        "the scripted phone got CANCEL"
    );
    assert!(
        eventually(5, || !ringer.received("ACK").is_empty()).await,
        "its 487 was acknowledged"
    );
    assert_call_gone(&server, before).await;
}

/// Kazoo's `ring_group` example, its plain ids written as the objects Kazoo's schema wants
/// (see the fixtures' README): device 1 is baresip, device 2 a scripted phone that only
/// rings, the users do not exist (skipped) and groups are skipped. Both devices ring at once,
/// baresip answers, the other gets CANCEL; each side hears the other; the caller hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_group_example_rings_its_devices_skips_unknown_ids_and_baresip_answers() {
    // Each placeholder names its type: `device_1_id`, `user_1_id`, `group_1_id`.
    let mut answer = example("ring_group.json");
    let endpoints = answer["data"]["endpoints"].as_array_mut().unwrap();
    for e in endpoints.iter_mut() {
        let id = e.as_str().unwrap().to_string();
        let endpoint_type = id.split('_').next().unwrap().to_string();
        *e = serde_json::json!({ "endpoint_type": endpoint_type, "id": id });
    }
    let answer = with_ids(answer, &[("device_1_id", "d1"), ("device_2_id", "d2")]);
    let account = devices(&[("d1", "2001", None), ("d2", "2002", None)]);
    let (web, server) = pivot_to(&answer, &account, "").await;
    let wav = CalleeWav::new();
    let phone = Baresip::start_recording(server.udp, "2001", "s3cret", REALM, &wav.0).await;
    let ringer = Callee::start(Script::Ring).await;
    let reg = ringer.register(server.udp, "2002", REALM, "s3cret").await;
    assert_eq!(status(&reg), 200, "{reg}");
    registered(&server, "d1", || phone.log()).await;
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered(NUMBER, &[0], 10_000).await;
    assert_eq!(web.request_count(), 1, "one pivot request");
    assert!(
        !ringer.received("INVITE").is_empty(),
        "device 2 rang with device 1"
    );
    assert!(
        eventually(5, || !ringer.received("CANCEL").is_empty()).await,
        "device 2 got CANCEL when baresip answered"
    );
    assert!(
        eventually(5, || !ringer.received("ACK").is_empty()).await,
        "its 487 was acknowledged"
    );
    caller_talks_with_a_phone(&caller, &ok, 1500, || phone.log()).await;
    caller.bye(&ok).await;
    let heard = eventually(5, || phone.heard().is_some()).await;
    assert!(heard, "baresip's call did not end:\n{}", phone.log());
    assert_tone(
        &phone.heard().unwrap(),
        CALLER_TONE,
        4000,
        "baresip (from the caller)",
    );
    assert_call_gone(&server, before).await;
}

/// A SIPp carrier whose media is `sink` (a test socket named in its SDP).
fn sipp_carrier(scenario: &str, sink: &RtpSink) -> SippUas {
    let path = repo().join("tests/sipp").join(scenario);
    SippUas::start(&path, &["-key", "rtp_port", &sink.addr.port().to_string()])
}

/// A carrier that must not be dialled: any INVITE it gets fails the test.
fn decoy(callee: &Callee) -> String {
    format!("sip:{}", callee.addr)
}

/// Caller and carrier each send a tone: the carrier's side starts once pivotd relays the
/// caller's audio to it (that packet's source is pivotd's address for the carrier).
async fn caller_talks_with_the_carrier(caller: &Caller, ok: &str, carrier: &RtpSink) {
    let pivotd_b = async {
        for _ in 0..200 {
            if let Some(p) = carrier.packets().first() {
                return p.from;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pivotd relayed nothing to the carrier");
    };
    let carrier_sends = async {
        let to: SocketAddr = pivotd_b.await;
        send_tone(&carrier.socket, to, 8, CALLEE_TONE, 1200).await;
    };
    tokio::join!(
        send_tone(&caller.media.socket, media_addr(ok), 0, CALLER_TONE, 1500),
        carrier_sends,
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The carrier chose PCMA, the caller PCMU: pivotd transcodes.
    assert!(carrier.packets().iter().all(|p| p.pt == 8 || p.pt == 101));
    assert_tone(
        &received_pcm(carrier),
        CALLER_TONE,
        8000,
        "the carrier (from the caller)",
    );
    let heard = received_pcm(&caller.media);
    assert_tone(&heard, CALLEE_TONE, 8000, "the caller (from the carrier)");
}

/// The INVITE SIPp received: to the example's `to_did`.
fn assert_dialled_to_did(sipp: &SippUas) {
    let messages = sipp.messages();
    assert!(
        messages.contains("INVITE sip:+14155550000@127.0.0.1:"),
        "the carrier got the example's number:\n{messages}"
    );
}

/// Kazoo's `resources` example with `use_local_resources: false`: the system's carrier
/// (`[[resources]]`, SIPp) is dialled, not the account's; each side hears the other; the
/// carrier hangs up and the caller gets the BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_resources_example_dials_the_system_carrier_which_hangs_up() {
    let media = RtpSink::bind().await;
    let sipp = sipp_carrier("carrier_hangs_up.xml", &media);
    let account_carrier = Callee::start(Script::Answer {
        ring_ms: 0,
        codec: 0,
    })
    .await;
    let (_web, server) = pivot_to(
        &example("resources_global.json"),
        &format!(
            "[[accounts.resources]]\nid = \"local1\"\ngateway = \"{}\"\n",
            decoy(&account_carrier)
        ),
        &format!(
            "[[resources]]\nid = \"global1\"\ngateway = \"sip:127.0.0.1:{}\"\n",
            sipp.port
        ),
    )
    .await;
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    let (ok, seen) = caller.answered(NUMBER, &[0], 10_000).await;
    assert!(seen.contains(&180), "the carrier's ringing: {seen:?}");
    assert_dialled_to_did(&sipp);
    caller_talks_with_the_carrier(&caller, &ok, &media).await;
    assert!(
        caller.sip.expect("BYE ", 8000).await.is_some(),
        "the caller got a BYE when the carrier hung up"
    );
    let run = sipp.finish().await;
    assert!(run.ok, "the carrier's scenario:\n{}", run.output);
    assert!(
        account_carrier.received("INVITE").is_empty(),
        "the account's carrier was not dialled"
    );
    assert_call_gone(&server, before).await;
}

/// Kazoo's `resources` example with `use_local_resources: true`: the account's carrier
/// (`[[accounts.resources]]`, SIPp) is dialled, not the system's; each side hears the other,
/// the caller's key reaches it; the caller hangs up and the carrier gets the BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_resources_example_dials_the_accounts_carrier_and_the_caller_hangs_up() {
    let media = RtpSink::bind().await;
    let sipp = sipp_carrier("carrier.xml", &media);
    let system_carrier = Callee::start(Script::Answer {
        ring_ms: 0,
        codec: 0,
    })
    .await;
    let (_web, server) = pivot_to(
        &example("resources_local.json"),
        &format!(
            "[[accounts.resources]]\nid = \"local1\"\ngateway = \"sip:127.0.0.1:{}\"\n",
            sipp.port
        ),
        &format!(
            "[[resources]]\nid = \"global1\"\ngateway = \"{}\"\n",
            decoy(&system_carrier)
        ),
    )
    .await;
    let before = server.handle.media_use();
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered(NUMBER, &[0], 10_000).await;
    assert_dialled_to_did(&sipp);
    caller_talks_with_the_carrier(&caller, &ok, &media).await;
    // RFC 4733 from the caller reaches the carrier (key 7, its end packets).
    send_key(&caller.media.socket, media_addr(&ok), 7).await;
    assert!(
        eventually(3, || media.packets().iter().any(|p| p.pt == 101
            && p.payload.first() == Some(&7)
            && p.payload.get(1).is_some_and(|b| b & 0x80 != 0)))
        .await,
        "the carrier got the caller's key 7 as RFC 4733"
    );
    caller.bye(&ok).await;
    let run = sipp.finish().await;
    assert!(run.ok, "the carrier got the BYE:\n{}", run.output);
    assert!(
        system_carrier.received("INVITE").is_empty(),
        "the system's carrier was not dialled"
    );
    assert_call_gone(&server, before).await;
}
