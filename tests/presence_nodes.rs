//! Presence across nodes (issue 13), over real sockets: two pivotd nodes in this process on
//! one PostgreSQL database (the test binary's own, `common/postgres.rs`), subscribers
//! (`common/presence.rs`) on node B, the lamps changed on node A — by the presence API, by a
//! call that rings a phone registered there — and seen on B within 2 s; an API reset on B
//! clearing a lamp set on A; and the lamps of a node that stopped announcing going out.

mod common;

use std::time::{Duration, Instant};

use common::api::Api;
use common::bridge::{Callee, Caller, Script};
use common::presence::{self, pidf, Notify, Subscriber};
use common::*;
use pivotd::presence::{PresenceId, Status};
use serde_json::json;

const REALM: &str = "pivotd.test";
const KEY: &str = "5a1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f5";

/// Within what a change on one node must reach the other's subscribers.
const ASKED_MS: u64 = 2000;

/// 6002 rings device d2 (2002); w1 (2009) only watches. Announcing every `announce_s`
/// seconds: a node's call lamps are believed for three times that on the other.
fn config(url: &str, announce_s: u32) -> String {
    let account = format!(
        r#"api_key = "{KEY}"
[[accounts.callflows]]
numbers = ["6002"]
flow = {{ module = "device", data = {{ id = "d2", timeout = 15 }} }}
[[accounts.devices]]
id = "d2"
username = "2002"
password = "pass-2002"
[[accounts.devices]]
id = "w1"
username = "2009"
password = "pass-2009"
"#
    );
    config_toml(
        &account,
        "allow_unauthenticated = true",
        &format!("[presence]\nannounce_interval_s = {announce_s}"),
    )
    .replace("sqlite = \":memory:\"", &format!("postgres = \"{url}\""))
}

/// A new database's URL and name.
async fn database() -> (String, String) {
    let url = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    (url, db)
}

/// Two nodes on a new database announcing every second, and the database's name.
async fn two_nodes() -> (TestServer, TestServer, String) {
    let (url, db) = database().await;
    let a = start(&config(&url, 1)).await;
    let b = start(&config(&url, 1)).await;
    (a, b, db)
}

/// Runs `sql` on database `db` as the superuser; what it printed.
async fn sql(db: &str, sql: &str) -> String {
    let (db, sql) = (db.to_string(), sql.to_string());
    tokio::task::spawn_blocking(move || common::postgres::server().sql(&db, &sql))
        .await
        .unwrap()
}

/// A call to 6002 on node A, ringing phone 2002 registered there (it answers after 1 s):
/// the phone and the caller, its INVITE sent.
async fn call_on(a: &TestServer) -> (Callee, Caller) {
    let callee = Callee::start(Script::Answer {
        ring_ms: 1000,
        codec: 0,
    })
    .await;
    let r = callee.register(a.udp, "2002", REALM, "pass-2002").await;
    assert_eq!(status(&r), 200, "{r}");
    let mut caller = Caller::new(a.udp).await;
    caller.invite("6002", &[0], "").await;
    (callee, caller)
}

/// The watcher w1 (2009) on `server` of `user@pivotd.test`, its first NOTIFY taken.
async fn watch(server: &TestServer, user: &str, event: &str) -> Subscriber {
    presence::watch(server.udp, REALM, user, event).await
}

/// The next NOTIFY, which must come within the 2 s asked.
async fn soon(s: &mut Subscriber) -> Notify {
    s.next_notify(ASKED_MS)
        .await
        .unwrap_or_else(|| panic!("no NOTIFY for {} within {ASKED_MS} ms", s.target))
}

/// The state of the one `<dialog>` a dialog-info NOTIFY shows (`idle` when none), and its
/// `call-id` and `direction`.
fn shown(n: &Notify) -> (String, String, String) {
    let s = presence::shown(n);
    (s.state, s.call_id, s.direction)
}

fn id(user: &str) -> PresenceId {
    PresenceId::parse(user, REALM).unwrap()
}

async fn presence_post(server: &TestServer, user: &str, data: serde_json::Value) {
    let api = Api::login(&server.handle, KEY).await;
    let path = format!("/v2/accounts/{ACCOUNT}/presence/{user}");
    let a = api.post(&path, data).await;
    assert_eq!(a.status, 202, "{}", a.body);
}

/// A lamp set by the presence API on node A (as a flow's `manual_presence` sets it) reaches
/// node B's dialog and PIDF subscribers, and so does its going out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lamp_set_on_one_node_reaches_the_subscribers_of_another() {
    let (a, b, _db) = two_nodes().await;
    let mut blf = watch(&b, "2100", "dialog").await;
    let mut pres = watch(&b, "2100", "presence").await;

    presence_post(&a, "2100", json!({"action": "set", "state": "confirmed"})).await;
    let (d, p) = tokio::join!(soon(&mut blf), soon(&mut pres));
    let (state, call_id, _) = shown(&d);
    assert_eq!(state, "confirmed", "{}", d.body);
    // Kazoo's dialog of a lamp set by hand: the MD5 of the id.
    assert_eq!(call_id, id("2100").manual_dialog_id());
    assert_eq!(pidf(&p).note, "On the Phone", "{}", p.body);
    assert_eq!(b.handle.presence.lamp(&id("2100")).status, Status::Busy);

    presence_post(&a, "2100", json!({"action": "set", "state": "early"})).await;
    assert_eq!(shown(&soon(&mut blf).await).0, "early");
    assert_eq!(pidf(&soon(&mut pres).await).note, "Busy");

    presence_post(&a, "2100", json!({"action": "set", "state": "terminated"})).await;
    assert_eq!(shown(&soon(&mut blf).await).0, "idle");
    assert_eq!(pidf(&soon(&mut pres).await).note, "Available");
    assert!(b.handle.presence.lit().is_empty());
    // One NOTIFY per change, nothing after.
    assert!(blf.next_notify(500).await.is_none());
}

/// A call on node A ringing a phone registered there lights the phone's lamp on node B's
/// subscribers: early, confirmed, kept lit while the call lasts (longer than the 3 s node B
/// believes one announcement: A says it again every second), idle when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_one_node_lights_the_lamp_on_another_until_it_ends() {
    let (a, b, _db) = two_nodes().await;
    let mut blf = watch(&b, "2002", "dialog").await;
    let mut pres = watch(&b, "2002", "presence").await;
    let (callee, mut caller) = call_on(&a).await;

    let (d, p) = tokio::join!(soon(&mut blf), soon(&mut pres));
    let (state, call_id, direction) = shown(&d);
    assert_eq!((state.as_str(), direction.as_str()), ("early", "recipient"));
    assert_eq!(pidf(&p).note, "Busy");
    assert!(eventually(3, || !callee.received("INVITE").is_empty()).await);
    let invite = callee.received("INVITE").pop().unwrap();
    assert_eq!(Some(call_id.clone()), header(&invite, "Call-ID"));

    let ok = caller
        .final_response(5000, &mut Vec::new())
        .await
        .expect("answered");
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    let (d, p) = tokio::join!(soon(&mut blf), soon(&mut pres));
    assert_eq!(shown(&d), ("confirmed".into(), call_id, "recipient".into()));
    assert_eq!(pidf(&p).note, "On the Phone");

    // Past the 3 s an announcement is believed: still lit, not a NOTIFY more.
    assert!(blf.next_notify(4500).await.is_none(), "the lamp moved");
    assert_eq!(b.handle.presence.lamp(&id("2002")).status, Status::Busy);

    caller.bye(&ok).await;
    let (d, p) = tokio::join!(soon(&mut blf), soon(&mut pres));
    assert_eq!(shown(&d).0, "idle", "{}", d.body);
    assert_eq!(pidf(&p).note, "Available");
    assert!(b.handle.presence.lit().is_empty());
    assert!(eventually(3, || !callee.received("BYE").is_empty()).await);
}

/// An API reset on node B clears a lamp node A set: B's watchers and A's see it idle, and
/// the store keeps no lamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_one_node_clears_a_lamp_set_on_another() {
    let (a, b, db) = two_nodes().await;
    let mut on_a = watch(&a, "2100", "dialog").await;
    let mut on_b = watch(&b, "2100", "dialog").await;
    presence_post(&a, "2100", json!({"action": "set", "state": "confirmed"})).await;
    assert_eq!(shown(&soon(&mut on_a).await).0, "confirmed");
    assert_eq!(shown(&soon(&mut on_b).await).0, "confirmed");

    presence_post(&b, "2100", json!({"action": "reset"})).await;
    let (da, db_) = tokio::join!(soon(&mut on_a), soon(&mut on_b));
    assert_eq!(shown(&da).0, "idle", "{}", da.body);
    assert_eq!(shown(&db_).0, "idle", "{}", db_.body);
    assert!(a.handle.presence.lamp(&id("2100")).is_idle());
    let rows =
        move || common::postgres::server().sql(&db, "SELECT count(*) FROM presence_states") == "0";
    let cleared = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !rows() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        rows()
    });
    assert!(cleared.await.unwrap(), "the stored lamp is gone");
}

/// What a node that then stops (dies, loses the database) said its calls light is believed
/// for the time it gave, then goes out on every node. The node here is the database itself,
/// speaking for a node that never says anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lamps_of_a_node_that_stops_announcing_go_out() {
    let (_a, b, db) = two_nodes().await;
    let mut blf = watch(&b, "2100", "dialog").await;
    let payload = r#"presence:0000dead0000dead:{"v":1,"ttl":2,"items":[{"id":"2100@pivotd.test","k":"calls","status":"busy","dialog":{"id":"gone-1","call_id":"gone-1","direction":"initiator"}}]}"#;
    sql(
        &db,
        &format!("SELECT pg_notify('pivotd_changes', '{payload}')"),
    )
    .await;
    let lit = soon(&mut blf).await;
    let heard = Instant::now();
    assert_eq!(
        shown(&lit),
        ("confirmed".into(), "gone-1".into(), "initiator".into())
    );
    let out = blf.next_notify(5000).await.expect("the lamp goes out");
    let after = heard.elapsed();
    assert_eq!(shown(&out).0, "idle", "{}", out.body);
    // The 2 s it was given (the sweep runs every second), not sooner.
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_millis(3500),
        "{after:?}"
    );
    assert!(b.handle.presence.lit().is_empty());
}

/// A node starting while another carries a call hears that call's lamp at once (it asks
/// the others), not at the other's next periodic announcement (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_hears_the_lamps_of_calls_already_up() {
    let (url, _db) = database().await;
    let a = start(&config(&url, 30)).await;
    let (_callee, mut caller) = call_on(&a).await;
    let ok = caller
        .final_response(5000, &mut Vec::new())
        .await
        .expect("answered");
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    assert!(
        eventually(3, || a.handle.presence.lamp(&id("2002")).status
            == Status::Busy)
        .await
    );

    let b = start(&config(&url, 30)).await;
    let started = Instant::now();
    let lit = eventually(3, || {
        b.handle.presence.lamp(&id("2002")).status == Status::Busy
    })
    .await;
    assert!(
        lit && started.elapsed() <= Duration::from_millis(ASKED_MS),
        "{:?}",
        started.elapsed()
    );
    // A phone subscribing on B is told at once.
    let mut blf = Subscriber::new(
        b.udp,
        "2009",
        "pass-2009",
        REALM,
        &format!("sip:2002@{REALM}"),
        "dialog",
    )
    .await;
    let r = blf.subscribe(Some(600), "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(shown(&blf.notify().await).0, "confirmed");
    caller.bye(&ok).await;
    assert_eq!(shown(&soon(&mut blf).await).0, "idle");
}

/// A node whose listening connection was cut misses what was said meanwhile: once it is
/// back, it reads the lamps set as a whole from the store again, and its watchers see a lamp
/// set on another node while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_messages_reads_the_lamps_again_when_back() {
    let (a, b, db) = two_nodes().await;
    let mut blf = watch(&b, "2100", "dialog").await;
    let listeners = "FROM pg_stat_activity WHERE datname = current_database() \
                     AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()";
    sql(
        &db,
        &format!("SELECT count(pg_terminate_backend(pid)) {listeners}"),
    )
    .await;
    // Gone (both nodes'); they come back after a second.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sql(&db, &format!("SELECT count(*) {listeners}")).await != "0" {
        assert!(Instant::now() < deadline, "the listeners did not go");
    }
    presence_post(&a, "2100", json!({"action": "set", "state": "confirmed"})).await;
    let n = blf.next_notify(5000).await.expect("told once back");
    assert_eq!(shown(&n).0, "confirmed", "{}", n.body);
    assert_eq!(b.handle.presence.lamp(&id("2100")).status, Status::Busy);
}
