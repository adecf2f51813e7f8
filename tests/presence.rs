//! Presence (issue 11) over real sockets: a hand-written subscriber (`common/presence.rs`,
//! digest answers from `common/digest.rs`) subscribes to `Event: dialog` and
//! `Event: presence`, SIPp places the calls whose pivot answer is Kazoo's `manual_presence`
//! example, and the NOTIFY bodies are read as XML. Refresh, unsubscribe, expiry, a one-time
//! fetch, every refusal, a subscriber that answers 481, and a restart on the same store.

mod common;

use std::sync::atomic::Ordering;

use common::http::{HttpResp, HttpServer};
use common::presence::{dialog_info, pidf, Subscriber};
use common::*;
use pivotd::presence::{PresenceControl, PresenceId, Status};

const REALM: &str = "pivotd.test";
const OTHER_ACCOUNT: &str = "00000000000000000000000000000002";

/// Kazoo's example (applications/pivot/doc/kazoo/presence.md), with the status asked for.
fn kazoo_example(status: &str) -> String {
    format!(
        r#"{{
    "module": "manual_presence",
    "data": {{
        "presence_id": "username",
        "status": "{status}"
    }}
}}"#
    )
}

/// The pivot server: `/ringing`, `/busy`, `/idle` answer Kazoo's example with that status.
async fn web() -> HttpServer {
    HttpServer::start(|r| {
        let status = r.path().trim_start_matches('/');
        HttpResp::json(&kazoo_example(status))
    })
    .await
}

/// Devices 2001 and 2002 in pivotd.test, 3001 in a second account; numbers 5001–5003 pivot
/// to the ringing, busy and idle answers, called by a carrier from 127.0.0.3 (SIPp's calls
/// are no device's); `presence` keys added to `[presence]`.
fn config(web: &HttpServer, presence: &str) -> String {
    let flows = format!(
        r#"
[[accounts.callflows]]
numbers = ["5001"]
flow = {{ module = "pivot", data = {{ voice_url = "{ringing}" }} }}
[[accounts.callflows]]
numbers = ["5002"]
flow = {{ module = "pivot", data = {{ voice_url = "{busy}" }} }}
[[accounts.callflows]]
numbers = ["5003"]
flow = {{ module = "pivot", data = {{ voice_url = "{idle}" }} }}
[[accounts.devices]]
id = "d1"
username = "2001"
password = "pass-2001"
[[accounts.devices]]
id = "d2"
username = "2002"
password = "pass-2002"
[[accounts.resources]]
id = "carrier1"
gateway = "sip:127.0.0.3:5060"
inbound_cidrs = ["127.0.0.3/32"]
[pivot]
blacklist_cidrs = []
[presence]
min_expires = 2
{presence}
[[accounts]]
id = "{OTHER_ACCOUNT}"
realm = "other.test"
[[accounts.devices]]
id = "o1"
username = "3001"
password = "pass-3001"
"#,
        ringing = web.url("/ringing"),
        busy = web.url("/busy"),
        idle = web.url("/idle"),
    );
    config_toml(&flows, "", "")
}

/// A subscriber of device 2001 (or 2002) to `user@pivotd.test`.
async fn subscriber(server: &TestServer, device: &str, user: &str, event: &str) -> Subscriber {
    Subscriber::new(
        server.udp,
        device,
        &format!("pass-{device}"),
        REALM,
        &format!("sip:{user}@{REALM}"),
        event,
    )
    .await
}

/// One SIPp call from the carrier to `number` (the flow answers, sets the lamp, ends with
/// BYE).
async fn call(server: &TestServer, number: &str) {
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let run = sipp_calls_from(
        "127.0.0.3",
        "basic_call.xml",
        false,
        server.udp,
        1,
        &["-s", number, "-key", "rtp_port", &port],
    )
    .await;
    assert!(run.ok, "call to {number}: {}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pivot_answers_manual_presence_reaches_dialog_and_presence_subscribers() {
    let web = web().await;
    let server = start(&config(&web, "")).await;

    let mut blf = subscriber(&server, "2001", "username", "dialog").await;
    let r = blf
        .subscribe(Some(600), "Accept: application/dialog-info+xml\r\n")
        .await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "Expires").as_deref(), Some("600"), "{r}");
    assert!(to_tag(&r).is_some(), "{r}");
    assert!(header(&r, "Contact").is_some(), "{r}");
    let n = blf.notify().await;
    assert_eq!(n.event, "dialog");
    assert_eq!(n.call_id, blf.call_id);
    assert!(n.state.starts_with("active;expires="), "{}", n.raw);
    let d = dialog_info(&n);
    assert_eq!((d.version, d.state.as_str()), (0, "full"));
    assert_eq!(d.entity, "sip:username@pivotd.test");
    assert!(d.dialogs.is_empty(), "idle: {d:?}");

    let mut pres = subscriber(&server, "2002", "username", "presence").await;
    let r = pres.subscribe(None, "").await;
    assert_eq!(status(&r), 200, "{r}");
    // No Expires asked: the default.
    assert_eq!(header(&r, "Expires").as_deref(), Some("3600"), "{r}");
    let p = pidf(&pres.notify().await);
    assert_eq!(p.entity, "sip:username@pivotd.test");
    assert_eq!((p.basic.as_str(), p.note.as_str()), ("open", "Available"));
    assert!(p.activities.is_empty(), "{p:?}");

    let mut version = 0;
    let mut cseq = n.cseq;
    for (number, state, note, activity) in [
        ("5001", "early", "Busy", "rpid:busy"),
        ("5002", "confirmed", "On the Phone", "rpid:on-the-phone"),
    ] {
        call(&server, number).await;
        let n = blf.notify().await;
        version += 1;
        assert!(n.cseq > cseq, "CSeq grows: {} then {}", cseq, n.cseq);
        cseq = n.cseq;
        let d = dialog_info(&n);
        assert_eq!(d.version, version, "{}", n.body);
        assert_eq!(d.dialogs, [state], "{}", n.body);
        let p = pidf(&pres.notify().await);
        assert_eq!(p.basic, "open");
        assert_eq!(p.note, note);
        assert_eq!(p.activities, [activity]);
    }
    let id = PresenceId::parse("username", REALM).unwrap();
    assert_eq!(server.handle.presence.lamp(&id).status, Status::Busy);

    // The state is kept: a new subscriber sees it at once.
    let mut late = subscriber(&server, "2002", "username", "dialog").await;
    assert_eq!(status(&late.subscribe(Some(120), "").await), 200);
    assert_eq!(dialog_info(&late.notify().await).dialogs, ["confirmed"]);

    call(&server, "5003").await;
    let d = dialog_info(&blf.notify().await);
    assert!(d.is_idle(), "{d:?}");
    assert_eq!(d.version, version + 1);
    let p = pidf(&pres.notify().await);
    assert_eq!((p.note.as_str(), p.basic.as_str()), ("Available", "open"));
    assert!(p.activities.is_empty());
    assert!(dialog_info(&late.notify().await).is_idle());
    assert!(server.handle.presence.lamp(&id).is_idle());
    assert_eq!(web.requests().len(), 3);
    // Nothing more: one NOTIFY per change and watcher.
    assert!(blf.next_notify(300).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_unsubscribe_expiry_and_fetch() {
    let web = web().await;
    let server = start(&config(&web, "max_expires = 900")).await;
    let presence = &server.handle.presence;

    let mut s = subscriber(&server, "2001", "2002", "dialog").await;
    assert_eq!(status(&s.subscribe(Some(600), "").await), 200);
    let first = s.notify().await;
    assert_eq!(presence.subscriptions(), 1);

    // A refresh in the dialog: 200 with the new expiry, and the state again at once.
    let r = s.refresh(300).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "Expires").as_deref(), Some("300"));
    let n = s.notify().await;
    assert_eq!(n.call_id, first.call_id);
    assert!(n.cseq > first.cseq);
    assert!(
        n.state == "active;expires=300" || n.state == "active;expires=299",
        "{}",
        n.state
    );
    assert_eq!(dialog_info(&n).version, 1);
    // Longer than max_expires: cut.
    let r = s.refresh(5000).await;
    assert_eq!(header(&r, "Expires").as_deref(), Some("900"), "{r}");
    s.notify().await;

    // Unsubscribe: 200, then a last NOTIFY with the state, terminated.
    let r = s.refresh(0).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "Expires").as_deref(), Some("0"));
    let last = s.notify().await;
    assert_eq!(last.state, "terminated;reason=timeout");
    assert!(dialog_info(&last).is_idle());
    assert!(s.next_notify(300).await.is_none());
    // The dialog is gone.
    assert_eq!(status(&s.refresh(600).await), 481);
    assert!(eventually(3, || presence.subscriptions() == 0).await);

    // Expiry: the last NOTIFY comes by itself when the time is up.
    let mut e = subscriber(&server, "2001", "2002", "presence").await;
    let r = e.subscribe(Some(2), "").await;
    assert_eq!(header(&r, "Expires").as_deref(), Some("2"), "{r}");
    assert!(e.notify().await.state.starts_with("active"));
    let last = e.next_notify(5000).await.expect("a NOTIFY at expiry");
    assert_eq!(last.state, "terminated;reason=timeout");
    assert_eq!(pidf(&last).note, "Available");
    assert!(eventually(3, || presence.subscriptions() == 0).await);

    // Expires: 0 out of a dialog fetches the state once (RFC 6665 §4.4.3).
    presence
        .set_manual(ACCOUNT, "2002", Status::Ringing)
        .unwrap();
    let mut f = subscriber(&server, "2002", "2002", "dialog").await;
    let r = f.subscribe(Some(0), "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "Expires").as_deref(), Some("0"));
    let only = f.notify().await;
    assert_eq!(only.state, "terminated;reason=timeout");
    assert_eq!(dialog_info(&only).dialogs, ["early"]);
    assert!(f.next_notify(300).await.is_none());
    assert!(eventually(3, || presence.subscriptions() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_407_403_489_423_and_400() {
    let web = web().await;
    let server = start(&config(&web, "")).await;

    // No credentials: challenged like an INVITE; a wrong password: 403.
    let mut s = subscriber(&server, "2001", "2002", "dialog").await;
    let r = s.send("Expires: 600\r\n").await;
    assert_eq!(status(&r), 407, "{r}");
    assert!(!common::digest::challenges(&r, "Proxy-Authenticate").is_empty());
    let mut wrong = subscriber(&server, "2001", "2002", "dialog").await;
    wrong.password = "nope".into();
    assert_eq!(status(&wrong.subscribe(Some(600), "").await), 403);

    // Another account's id: 403 after authentication.
    let mut other = Subscriber::new(
        server.udp,
        "2001",
        "pass-2001",
        REALM,
        "sip:3001@other.test",
        "dialog",
    )
    .await;
    let r = other.subscribe(Some(600), "").await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(r.starts_with("SIP/2.0 403 Not Your Account"), "{r}");

    // Packages not served: 489 with Allow-Events.
    for event in ["foo", "message-summary"] {
        let mut s = subscriber(&server, "2001", "2002", event).await;
        let r = s.subscribe(Some(600), "").await;
        assert_eq!(status(&r), 489, "{event}: {r}");
        assert_eq!(
            header(&r, "Allow-Events").as_deref(),
            Some("dialog, presence")
        );
    }
    // Too short: 423 with Min-Expires.
    let mut s = subscriber(&server, "2001", "2002", "dialog").await;
    let r = s.subscribe(Some(1), "").await;
    assert_eq!(status(&r), 423, "{r}");
    assert_eq!(header(&r, "Min-Expires").as_deref(), Some("2"));
    // Malformed: no Event, a bad Expires, an Accept without the package's type.
    let mut s = subscriber(&server, "2001", "2002", "dialog").await;
    s.omit_event = true;
    let r = s.subscribe(Some(600), "").await;
    assert_eq!(status(&r), 400, "{r}");
    let mut s = subscriber(&server, "2001", "2002", "dialog").await;
    assert_eq!(status(&s.send("Expires: soon\r\n").await), 400);
    let r = s.send("Event: dialog;id=\r\n").await;
    assert_eq!(status(&r), 400, "{r}");
    let r = s.send("Accept: application/pidf+xml\r\n").await;
    assert_eq!(status(&r), 406, "{r}");
    assert_eq!(server.handle.presence.subscriptions(), 0);
    assert!(s.next_notify(200).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_answers_481_is_removed() {
    let web = web().await;
    let server = start(&config(&web, "")).await;
    let presence = &server.handle.presence;
    let mut gone = subscriber(&server, "2001", "2002", "dialog").await;
    gone.notify_answer = 481;
    assert_eq!(status(&gone.subscribe(Some(600), "").await), 200);
    gone.notify().await;
    let mut stays = subscriber(&server, "2002", "2002", "dialog").await;
    assert_eq!(status(&stays.subscribe(Some(600), "").await), 200);
    stays.notify().await;
    assert!(eventually(3, || presence.subscriptions() == 1).await);
    assert!(presence.stats.notify_failures.load(Ordering::Relaxed) >= 1);

    presence.set_manual(ACCOUNT, "2002", Status::Busy).unwrap();
    assert_eq!(dialog_info(&stays.notify().await).dialogs, ["confirmed"]);
    assert!(gone.next_notify(1500).await.is_none());
    // Its dialog is gone too.
    assert_eq!(status(&gone.refresh(600).await), 481);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_lamps_survive_a_restart() {
    let web = web().await;
    let dir = tempdir();
    let db = dir.join("pivotd.db");
    let toml = config(&web, "").replace(
        "sqlite = \":memory:\"",
        &format!("sqlite = {:?}", path_str(&db)),
    );
    let (mut s, before) = {
        let server = start(&toml).await;
        let mut s = subscriber(&server, "2001", "2002", "dialog").await;
        assert_eq!(status(&s.subscribe(Some(600), "").await), 200);
        s.notify().await;
        server
            .handle
            .presence
            .set_manual(ACCOUNT, "2002", Status::Busy)
            .unwrap();
        let before = s.notify().await;
        assert_eq!(dialog_info(&before).dialogs, ["confirmed"]);
        server.handle.store.flush().unwrap();
        server.handle.shutdown().await;
        (s, before)
    };
    let server = start(&toml).await;
    // At start, the stored subscription gets the kept state in its old dialog.
    let n = s.notify().await;
    assert_eq!(n.call_id, before.call_id);
    assert!(n.cseq > before.cseq, "{} then {}", before.cseq, n.cseq);
    assert!(n.state.starts_with("active;expires="), "{}", n.state);
    let d = dialog_info(&n);
    assert_eq!(d.dialogs, ["confirmed"]);
    assert!(d.version > dialog_info(&before).version);
    assert_eq!(server.handle.presence.subscriptions(), 1);
    // The dialog goes on at the new address: a refresh is answered in it.
    s.set_server(server.udp);
    let r = s.refresh(600).await;
    assert_eq!(status(&r), 200, "{r}");
    s.notify().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIPp's `subscribe.xml` for each package: 407, 200, the state at once, the lamp a pivot
/// answer lights, unsubscribe and the last NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_subscribes_sees_the_lamp_lit_by_a_call_and_unsubscribes() {
    let web = web().await;
    let server = start(&config(&web, "")).await;
    let presence = server.handle.presence.clone();
    for event in ["dialog", "presence"] {
        let sent = presence.stats.notifies.load(Ordering::Relaxed);
        let target = server.udp;
        let run = tokio::spawn(async move {
            sipp(
                "subscribe.xml",
                false,
                target,
                &[
                    "-s",
                    "username",
                    "-au",
                    "2001",
                    "-ap",
                    "pass-2001",
                    "-key",
                    "from",
                    "2001",
                    "-key",
                    "domain",
                    REALM,
                    "-key",
                    "event",
                    event,
                ],
            )
            .await
        });
        // Once SIPp holds its subscription and has had the first NOTIFY, the lamp is lit.
        let subscribed = eventually(15, || {
            presence.subscriptions() == 1 && presence.stats.notifies.load(Ordering::Relaxed) > sent
        })
        .await;
        assert!(subscribed, "SIPp did not subscribe ({event})");
        call(&server, "5002").await;
        let run = run.await.unwrap();
        assert!(run.ok, "{event}: {}", run.output);
        call(&server, "5003").await;
        assert!(eventually(3, || presence.subscriptions() == 0).await);
    }
}
