//! Busy lamps that follow real calls (issue 11, "Real calls"), over real sockets: a phone's
//! presence id goes ringing while a bridge rings it, busy while it talks, idle when the call
//! ends, by whichever side; the calling device's lamp is early, then busy; a user's phones
//! rung at once all ring and only the one that answers stays lit. Seen by hand-written
//! subscribers (`common/presence.rs`) on both packages, their documents read as XML, and by
//! baresip's `presence` module as a real watcher.

mod common;

use common::baresip::Baresip;
use common::bridge::{Callee, Caller, Script};
use common::digest::{challenges, credentials};
use common::presence::{self, dialog_info, pidf, shown, Shown, Subscriber};
use common::*;
use pivotd::presence::{PresenceId, Status};

const REALM: &str = "pivotd.test";

/// 6002 rings device d2 (2002); 6003 rings user u1's phones d3 (3001) and d4 (3002), u1's
/// `presence_id` being `alice`; d1 (2001) places calls; w1 (2009) only watches.
fn config(sip_extra: &str) -> String {
    let flows = r#"
[[accounts.callflows]]
numbers = ["6002"]
flow = { module = "device", data = { id = "d2", timeout = 15 } }
[[accounts.callflows]]
numbers = ["6003"]
flow = { module = "user", data = { id = "u1", timeout = 15 } }
[[accounts.users]]
id = "u1"
presence_id = "alice"
[[accounts.devices]]
id = "d1"
username = "2001"
password = "pass-2001"
[[accounts.devices]]
id = "d2"
username = "2002"
password = "pass-2002"
[[accounts.devices]]
id = "d3"
owner_id = "u1"
username = "3001"
password = "pass-3001"
[[accounts.devices]]
id = "d4"
owner_id = "u1"
username = "3002"
password = "pass-3002"
[[accounts.devices]]
id = "w1"
username = "2009"
password = "pass-2009"
"#;
    config_toml(flows, sip_extra, "")
}

/// The watcher w1 (2009) on `server` of `user@pivotd.test`, its first NOTIFY taken.
async fn watch(server: &TestServer, user: &str, event: &str) -> Subscriber {
    presence::watch(server.udp, REALM, user, event).await
}

/// A callee registered as `user` (password `pass-<user>`).
async fn phone(server: &TestServer, user: &str, script: Script) -> Callee {
    let callee = Callee::start(script).await;
    let r = callee
        .register(server.udp, user, REALM, &format!("pass-{user}"))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    callee
}

/// The next NOTIFYs of a dialog watcher and a presence watcher: the dialog's state and the
/// PIDF note must be `state` and `note`; returns the dialog shown (None when idle).
async fn expect(
    blf: &mut Subscriber,
    pres: &mut Subscriber,
    state: &str,
    note: &str,
) -> Option<Shown> {
    let (d, p) = tokio::join!(blf.notify(), pres.notify());
    let p = pidf(&p);
    assert_eq!((p.basic.as_str(), p.note.as_str()), ("open", note), "{p:?}");
    if state == "idle" {
        assert!(dialog_info(&d).is_idle(), "{}", d.body);
        return None;
    }
    let s = shown(&d);
    assert_eq!(s.state, state, "{}", d.body);
    Some(s)
}

fn id(user: &str) -> PresenceId {
    PresenceId::parse(user, REALM).unwrap()
}

/// Device d1 (2001) calls `number`: challenged first (no lamp for a call not placed), then
/// placed with its credentials (RFC 3261 §22.3) from a new caller.
async fn device_call(server: &TestServer, number: &str) -> Caller {
    let mut probe = Caller::new(server.udp).await;
    probe.invite(number, &[0], "").await;
    let r = probe
        .final_response(3000, &mut Vec::new())
        .await
        .expect("a challenge");
    assert_eq!(status(&r), 407, "{r}");
    let c = challenges(&r, "Proxy-Authenticate")
        .into_iter()
        .find(|c| c.algorithm.eq_ignore_ascii_case("MD5"))
        .expect("an MD5 challenge");
    let uri = format!("sip:{number}@{REALM}");
    let auth = credentials(&c, "2001", "pass-2001", "INVITE", &uri, 1, &token());
    let mut caller = Caller::new(server.udp).await;
    caller
        .invite(number, &[0], &format!("Proxy-Authorization: {auth}\r\n"))
        .await;
    caller
}

/// A bridged call to a registered phone: its lamp rings, is busy once answered and goes out
/// when the call ends, hung up by the caller or by the phone.
async fn bridged_call(callee_hangs_up: bool) {
    let server = start(&config("allow_unauthenticated = true")).await;
    let presence = server.handle.presence.clone();
    let mut blf = watch(&server, "2002", "dialog").await;
    let mut pres = watch(&server, "2002", "presence").await;
    let callee = phone(
        &server,
        "2002",
        Script::Answer {
            ring_ms: 1500,
            codec: 0,
        },
    )
    .await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6002", &[0], "").await;

    let ringing = expect(&mut blf, &mut pres, "early", "Busy").await.unwrap();
    // Lit as the INVITE leaves: the phone may not have it yet.
    assert!(eventually(3, || !callee.received("INVITE").is_empty()).await);
    let invite = callee.received("INVITE").pop().expect("the phone rang");
    assert_eq!(ringing.direction, "recipient");
    assert_eq!(Some(ringing.call_id.clone()), header(&invite, "Call-ID"));
    // The caller as the remote party: the From the phone is sent.
    assert_eq!(ringing.remote, format!("sip:1000@{REALM}"));
    assert!(ringing.local_tag.is_none(), "no tag of the phone's yet");

    let ok = caller
        .final_response(5000, &mut Vec::new())
        .await
        .expect("answered");
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    let busy = expect(&mut blf, &mut pres, "confirmed", "On the Phone")
        .await
        .unwrap();
    assert_eq!(busy.direction, "recipient");
    assert_eq!(busy.call_id, ringing.call_id);
    // The phone's own tag (its To tag), now that its 200 gave it.
    assert!(busy.local_tag.as_deref().is_some_and(|t| !t.is_empty()));
    assert_eq!(presence.lamp(&id("2002")).status, Status::Busy);

    if callee_hangs_up {
        callee.hang_up().await;
        assert!(caller.sip.expect("BYE ", 5000).await.is_some());
    } else {
        caller.bye(&ok).await;
        assert!(eventually(5, || !callee.received("BYE").is_empty()).await);
    }
    expect(&mut blf, &mut pres, "idle", "Available").await;
    assert!(presence.lamp(&id("2002")).is_idle());
    assert!(presence.lit().is_empty(), "{:?}", presence.lit());
    // One NOTIFY per change, nothing after.
    assert!(blf.next_notify(300).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_lights_the_phone_until_the_caller_hangs_up() {
    bridged_call(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_lights_the_phone_until_the_phone_hangs_up() {
    bridged_call(true).await;
}

/// The calling device's own lamp: a device (2001, authenticated as RFC 3261 §22.3 asks)
/// calls a phone; its lamp is early (`initiator`) while the call rings, busy once answered,
/// idle after — and the phone's lamp follows as the callee's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calling_devices_lamp_is_early_then_busy_then_idle() {
    let server = start(&config("")).await;
    let presence = server.handle.presence.clone();
    let mut blf = watch(&server, "2001", "dialog").await;
    let mut pres = watch(&server, "2001", "presence").await;
    let callee = phone(
        &server,
        "2002",
        Script::Answer {
            ring_ms: 1500,
            codec: 0,
        },
    )
    .await;

    let mut caller = device_call(&server, "6002").await;

    let early = expect(&mut blf, &mut pres, "early", "Busy").await.unwrap();
    assert_eq!(early.direction, "initiator");
    assert_eq!(early.call_id, caller.call_id);
    // Its own From tag as the local tag, what it dialled as the remote party.
    let from_tag = header(&caller.invite, "From")
        .and_then(|f| f.split("tag=").nth(1).map(str::to_string))
        .unwrap();
    assert_eq!(early.local_tag.as_deref(), Some(from_tag.as_str()));
    assert_eq!(early.remote, format!("sip:6002@{REALM}"));
    // The phone it rings is lit too, as the callee (once the flow's bridge rings it).
    let rung = eventually(3, || presence.lamp(&id("2002")).status == Status::Ringing).await;
    assert!(rung, "{:?}", presence.lit());

    let ok = caller
        .final_response(5000, &mut Vec::new())
        .await
        .expect("answered");
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    let busy = expect(&mut blf, &mut pres, "confirmed", "On the Phone")
        .await
        .unwrap();
    assert_eq!(
        (busy.direction.as_str(), busy.call_id.as_str()),
        ("initiator", caller.call_id.as_str())
    );

    caller.bye(&ok).await;
    expect(&mut blf, &mut pres, "idle", "Available").await;
    assert!(
        eventually(3, || presence.lit().is_empty()).await,
        "{:?}",
        presence.lit()
    );
    assert!(eventually(3, || !callee.received("BYE").is_empty()).await);
}

/// A call that ends before it is answered puts out both lamps: the caller's (device 2001)
/// and the phone's — the caller cancelling, or the phone refusing (486).
async fn ended_while_ringing(cancel: bool) {
    let server = start(&config("")).await;
    let presence = server.handle.presence.clone();
    let mut caller_blf = watch(&server, "2001", "dialog").await;
    let mut phone_blf = watch(&server, "2002", "dialog").await;
    let script = if cancel {
        Script::Ring
    } else {
        Script::Reject {
            ring_ms: 1000,
            code: 486,
        }
    };
    let callee = phone(&server, "2002", script).await;
    let mut caller = device_call(&server, "6002").await;
    let (c, p) = tokio::join!(caller_blf.notify(), phone_blf.notify());
    assert_eq!(shown(&c).state, "early", "{}", c.body);
    assert_eq!(shown(&p).state, "early", "{}", p.body);
    if cancel {
        caller.cancel().await;
    }
    let last = caller
        .final_response(5000, &mut Vec::new())
        .await
        .expect("a final response");
    assert!(status(&last) >= 400, "{last}");
    let (c, p) = tokio::join!(caller_blf.notify(), phone_blf.notify());
    assert!(dialog_info(&c).is_idle(), "{}", c.body);
    assert!(dialog_info(&p).is_idle(), "{}", p.body);
    assert!(presence.lit().is_empty(), "{:?}", presence.lit());
    if cancel {
        assert!(eventually(3, || !callee.received("CANCEL").is_empty()).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_puts_out_the_callers_and_the_phones_lamps() {
    ended_while_ringing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_puts_out_the_callers_and_the_phones_lamps() {
    ended_while_ringing(false).await;
}

/// A user's two phones rung at once: both ring (and so does the user's `presence_id`); the
/// one that answers is busy, the other goes idle at once; all idle after the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_phones_ring_together_and_only_the_one_that_answers_stays_lit() {
    let server = start(&config("allow_unauthenticated = true")).await;
    let presence = server.handle.presence.clone();
    let mut blf_a = watch(&server, "3001", "dialog").await;
    let mut blf_b = watch(&server, "3002", "dialog").await;
    let mut blf_user = watch(&server, "alice", "dialog").await;
    let mut pres_b = watch(&server, "3002", "presence").await;
    let answers = phone(
        &server,
        "3001",
        Script::Answer {
            ring_ms: 2000,
            codec: 0,
        },
    )
    .await;
    let rings = phone(&server, "3002", Script::Ring).await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6003", &[0], "").await;

    let (a, b, u) = tokio::join!(blf_a.notify(), blf_b.notify(), blf_user.notify());
    let (a, b, u) = (shown(&a), shown(&b), shown(&u));
    assert_eq!((a.state.as_str(), b.state.as_str()), ("early", "early"));
    assert_ne!(a.call_id, b.call_id, "one INVITE each");
    // The user's id shows one of its phones' dialogs.
    assert_eq!(u.state, "early");
    assert!([&a.call_id, &b.call_id].contains(&&u.call_id), "{u:?}");
    assert_eq!(pidf(&pres_b.notify().await).note, "Busy");

    let ok = caller
        .final_response(6000, &mut Vec::new())
        .await
        .expect("answered");
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    let (a2, b2) = tokio::join!(blf_a.notify(), blf_b.notify());
    let a2 = shown(&a2);
    assert_eq!(
        (a2.state.as_str(), a2.call_id.as_str()),
        ("confirmed", a.call_id.as_str())
    );
    assert!(
        dialog_info(&b2).is_idle(),
        "the phone that did not answer: {}",
        b2.body
    );
    assert_eq!(pidf(&pres_b.notify().await).note, "Available");
    assert!(eventually(3, || !rings.received("CANCEL").is_empty()).await);
    // The user's lamp: busy with the answering phone's dialog (ringing ones never show over
    // it; the other's end changes nothing).
    let mut u2 = shown(&blf_user.notify().await);
    if u2.state == "early" {
        // The other phone's dialog showed until the answer: the next one is the answer.
        u2 = shown(&blf_user.notify().await);
    }
    assert_eq!(
        (u2.state.as_str(), u2.call_id.as_str()),
        ("confirmed", a.call_id.as_str())
    );

    caller.bye(&ok).await;
    let (a3, u3) = tokio::join!(blf_a.notify(), blf_user.notify());
    assert!(dialog_info(&a3).is_idle(), "{}", a3.body);
    assert!(dialog_info(&u3).is_idle(), "{}", u3.body);
    assert!(presence.lit().is_empty(), "{:?}", presence.lit());
    assert!(eventually(3, || !answers.received("BYE").is_empty()).await);
    assert!(blf_b.next_notify(300).await.is_none());
}

/// baresip's `presence` module as the watcher: it subscribes (`Event: presence`) to a phone
/// from its address book, and logs the phone going busy when a call rings it and back
/// online when the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresips_presence_module_sees_a_call_light_a_phone() {
    let server = start(&config("allow_unauthenticated = true")).await;
    let presence = server.handle.presence.clone();
    let watcher = Baresip::start_watching(
        server.udp,
        "2009",
        "pass-2009",
        REALM,
        &format!("sip:2002@{REALM}"),
    )
    .await;
    let subscribed = eventually(10, || presence.subscriptions() == 1).await;
    assert!(subscribed, "baresip did not subscribe:\n{}", watcher.log());
    // The first NOTIFY (open, Available) makes the contact Online; only a change after it
    // is logged, so the call waits until baresip has answered it (its trace shows the
    // NOTIFY and its 200, both with a NOTIFY CSeq).
    let answered_first = eventually(5, || {
        let log = watcher.log();
        let notify_cseqs = log
            .lines()
            .filter(|l| l.starts_with("CSeq:") && l.trim_end().ends_with(" NOTIFY"))
            .count();
        log.contains("NOTIFY sip:") && notify_cseqs >= 2
    })
    .await;
    assert!(
        answered_first,
        "no NOTIFY answered by baresip:\n{}",
        watcher.log()
    );
    assert!(
        watcher.log().contains("Event: presence"),
        "baresip subscribes to the presence package:\n{}",
        watcher.log()
    );

    let callee = phone(
        &server,
        "2002",
        Script::Answer {
            ring_ms: 1000,
            codec: 0,
        },
    )
    .await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6002", &[0], 5000).await;
    let changed = |from: &str, to: &str| {
        let log = strip_ansi(&watcher.log());
        let line = format!("<sip:2002@{REALM}> changed status from {from} to {to}");
        log.contains(&line)
    };
    assert!(
        eventually(5, || changed("Online", "Busy")).await,
        "baresip did not see the phone busy:\n{}",
        watcher.log()
    );
    caller.bye(&ok).await;
    assert!(
        eventually(5, || changed("Busy", "Online")).await,
        "baresip did not see the phone free again:\n{}",
        watcher.log()
    );
    assert!(!callee.received("INVITE").is_empty());
}

/// baresip's log without its colour escapes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
