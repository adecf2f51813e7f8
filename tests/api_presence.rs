//! Kazoo's presence API (Crossbar `cb_presence`) over real sockets: hand-written subscribers
//! (`common/presence.rs`) watch an id, a flow's `manual_presence` lights it (through the
//! presence core, as the runtime's module does), the listing shows the lamp and the
//! subscriptions, and `POST …/presence/{ID}` resets it: every subscriber gets a NOTIFY with
//! the idle state. Bad bodies, ids of another realm, other accounts, no token.

mod common;

use std::time::Duration;

use common::api::{Answer, Api};
use common::presence::{dialog_info, pidf, Subscriber};
use common::*;
use pivotd::presence::{PresenceControl, PresenceId, Status};
use serde_json::{json, Value};

const REALM: &str = "pivotd.test";
const KEY: &str = "7c1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f7";
const OTHER: &str = "00000000000000000000000000000002";
const OTHER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// Devices 2001 and 2002 in pivotd.test (with an api_key), 3001 in a second account.
fn config() -> String {
    let account = format!(
        r#"api_key = "{KEY}"
[[accounts.devices]]
id = "d1"
username = "2001"
password = "pass-2001"
[[accounts.devices]]
id = "d2"
username = "2002"
password = "pass-2002"
[presence]
min_expires = 2
[[accounts]]
id = "{OTHER}"
realm = "other.test"
api_key = "{OTHER_KEY}"
[[accounts.devices]]
id = "o1"
username = "3001"
password = "pass-3001"
"#
    );
    config_toml(&account, "", "")
}

/// A subscriber of device `device` to `user@pivotd.test`, subscribed, its first NOTIFY read.
async fn subscribed(server: &TestServer, device: &str, user: &str, event: &str) -> Subscriber {
    let mut s = Subscriber::new(
        server.udp,
        device,
        &format!("pass-{device}"),
        REALM,
        &format!("sip:{user}@{REALM}"),
        event,
    )
    .await;
    let r = s.subscribe(Some(600), "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(s.notify().await.state.starts_with("active"));
    s
}

/// GETs `path` until `ok` holds of the answer (the store is written through its queue), up
/// to 5 s; the last answer.
async fn get_until(api: &Api, path: &str, ok: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let a = api.get(path).await;
        if ok(&a) || tokio::time::Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn path(rest: &str) -> String {
    format!("/v2/accounts/{ACCOUNT}/presence{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_shows_lamps_and_subscriptions_and_a_reset_notifies_every_watcher() {
    let server = start(&config()).await;
    let api = Api::login(&server.handle, KEY).await;

    let a = api.get(&path("")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "success");
    assert_eq!(
        *a.data(),
        json!({"subscriptions": {}, "presentities": {}}),
        "{}",
        a.body
    );

    let mut blf = subscribed(&server, "2001", "2002", "dialog").await;
    let mut pres = subscribed(&server, "2002", "2002", "presence").await;

    // Lit by a flow's manual_presence: what the runtime's module calls.
    server
        .handle
        .presence
        .set_manual(ACCOUNT, "2002", Status::Busy)
        .unwrap();
    assert_eq!(dialog_info(&blf.notify().await).dialogs, ["confirmed"]);
    assert_eq!(pidf(&pres.notify().await).note, "On the Phone");

    // Each row says two NOTIFYs were sent (the first state, the busy one) once the store has
    // the last write.
    let a = get_until(&api, &path(""), |a| {
        let s = &a.data()["subscriptions"]["2002"];
        s["dialog"][&blf.call_id]["version"] == 2 && s["presence"][&pres.call_id]["version"] == 2
    })
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    let sub = &d["subscriptions"]["2002"]["dialog"][&blf.call_id];
    assert_eq!(sub["call_id"], blf.call_id.as_str(), "{d}");
    assert_eq!(sub["event"], "dialog");
    assert_eq!(sub["from"], "2001@pivotd.test");
    assert_eq!(sub["to"], "2002@pivotd.test");
    assert_eq!(sub["device_id"], "d1");
    assert_eq!(sub["transport"], "UDP");
    assert_eq!(sub["source_ip"], "127.0.0.1");
    assert_eq!(
        sub["source_port"],
        blf.sip.local().port().to_string().as_str()
    );
    assert!(
        sub["contact"]
            .as_str()
            .unwrap()
            .starts_with("sip:2001@127.0.0.1:"),
        "{sub}"
    );
    let expires = sub["expires"].as_u64().unwrap();
    assert!((590..=600).contains(&expires), "{sub}");
    assert_eq!(sub["version"], 2, "{sub}");
    assert!(sub["timestamp"].as_i64().unwrap() > 63_000_000_000, "{sub}");
    let sub = &d["subscriptions"]["2002"]["presence"][&pres.call_id];
    assert_eq!(
        (sub["from"].as_str(), sub["device_id"].as_str()),
        (Some("2002@pivotd.test"), Some("d2"))
    );
    assert_eq!(
        d["presentities"]["2002"],
        json!({"presentity": "2002@pivotd.test", "state": "confirmed", "status": "busy",
               "origin": "manual_presence",
               "call_id": PresenceId::parse("2002", REALM).unwrap().manual_dialog_id(),
               "subscriptions": 2}),
        "{d}"
    );
    // Crossbar's filter on the package.
    let a = api.get(&path("?event=presence")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.data()["subscriptions"]["2002"]["dialog"].is_null(),
        "{}",
        a.body
    );
    assert!(
        a.data()["subscriptions"]["2002"]["presence"].is_object(),
        "{}",
        a.body
    );

    // One id, bare or with the account's realm (`@` escaped or not).
    for id in ["/2002", "/2002@pivotd.test", "/2002%40pivotd.test"] {
        let a = api.get(&path(id)).await;
        assert_eq!(a.status, 200, "{id}: {}", a.body);
        assert_eq!(a.data()["presentities"]["2002"]["status"], "busy", "{id}");
        assert_eq!(
            a.data()["subscriptions"]["2002"]["dialog"][&blf.call_id]["from"],
            "2001@pivotd.test"
        );
        assert_eq!(a.data()["presentities"].as_object().unwrap().len(), 1);
    }
    // An id nothing lights or watches is idle, as Crossbar answers any extension.
    let a = api.get(&path("/%2A3101")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        *a.data(),
        json!({"subscriptions": {}, "presentities": {"*3101": {
            "presentity": "*3101@pivotd.test", "state": "terminated", "status": "idle",
            "subscriptions": 0}}})
    );

    // The reset: 202 as Crossbar, the lamp idle, every subscriber told.
    let a = api.post(&path("/2002"), json!({"action": "reset"})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["status"], "success");
    assert_eq!(*a.data(), json!("reset command sent for extension 2002"));
    let n = blf.notify().await;
    assert!(n.state.starts_with("active"), "{}", n.raw);
    assert!(dialog_info(&n).is_idle(), "{}", n.body);
    let p = pidf(&pres.notify().await);
    assert_eq!((p.note.as_str(), p.basic.as_str()), ("Available", "open"));
    let id = PresenceId::parse("2002", REALM).unwrap();
    assert!(server.handle.presence.lamp(&id).is_idle());
    let a = api.get(&path("/2002")).await;
    assert_eq!(
        a.data()["presentities"]["2002"]["state"],
        "terminated",
        "{}",
        a.body
    );
    assert_eq!(a.data()["presentities"]["2002"]["status"], "idle");
    assert!(
        a.data()["presentities"]["2002"]["origin"].is_null(),
        "{}",
        a.body
    );

    // A reset of an idle lamp still sends every watcher the state (a phone whose lamp is
    // stuck is put right), once.
    let a = api.post(&path("/2002"), json!({"action": "reset"})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(dialog_info(&blf.notify().await).is_idle());
    assert_eq!(pidf(&pres.notify().await).note, "Available");
    assert!(blf.next_notify(300).await.is_none());

    // Crossbar's `set` lights it as manual_presence does; its older `reset: true` resets.
    let a = api
        .post(&path("/2002"), json!({"action": "set", "state": "early"}))
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(*a.data(), json!("early command sent for extension 2002"));
    assert_eq!(dialog_info(&blf.notify().await).dialogs, ["early"]);
    assert_eq!(pidf(&pres.notify().await).note, "Busy");
    assert_eq!(server.handle.presence.lamp(&id).status, Status::Ringing);
    let a = api.post(&path("/2002"), json!({"reset": true})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(dialog_info(&blf.notify().await).is_idle());
    pres.notify().await;

    // Unsubscribed: gone from the listing.
    assert_eq!(status(&blf.refresh(0).await), 200);
    assert!(blf.notify().await.is_final());
    let a = get_until(&api, &path(""), |a| {
        a.data()["subscriptions"]["2002"]["dialog"].is_null()
    })
    .await;
    assert!(
        a.data()["subscriptions"]["2002"]["dialog"].is_null(),
        "{}",
        a.body
    );
    assert_eq!(
        a.data()["presentities"]["2002"]["subscriptions"],
        1,
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_other_realms_other_accounts_and_no_token_are_refused() {
    let server = start(&config()).await;
    let api = Api::login(&server.handle, KEY).await;
    let mut blf = subscribed(&server, "2001", "2002", "dialog").await;
    server
        .handle
        .presence
        .set_manual(ACCOUNT, "2002", Status::Busy)
        .unwrap();
    assert_eq!(dialog_info(&blf.notify().await).dialogs, ["confirmed"]);

    // Bodies: not JSON, no envelope, no or an unknown action, `set` without a valid state.
    let post = reqwest::Method::POST;
    let a = api
        .send(post.clone(), &path("/2002"), Some("{not json"))
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{}",
        a.body
    );
    let a = api
        .send(
            post.clone(),
            &path("/2002"),
            Some("{\"action\": \"reset\"}"),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.data()["data"]["required"].is_object(), "{}", a.body);
    let a = api.send(post.clone(), &path("/2002"), None).await;
    assert_eq!(a.status, 400, "{}", a.body);
    for (data, key) in [
        (json!({}), "action"),
        (json!({"action": "reboot"}), "action"),
        (json!({"reset": "yes"}), "action"),
        (json!({"action": "set"}), "state"),
        (json!({"action": "set", "state": "busy"}), "state"),
    ] {
        let a = api.post(&path("/2002"), data.clone()).await;
        assert_eq!(a.status, 400, "{data}: {}", a.body);
        assert_eq!(a.body["status"], "error");
        assert_eq!(a.body["error"], "400");
        assert_eq!(a.body["message"], "validation error");
        let rule = &a.data()[key]["invalid"];
        assert_eq!(rule["target"], "invalid", "{data}: {}", a.body);
        assert!(
            rule["message"].as_str().unwrap().contains(key),
            "{}",
            a.body
        );
    }
    let a = api.get(&path("?event=message-summary")).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        a.data()["event"]["enum"]["target"],
        json!(["dialog", "presence"])
    );

    // Ids of another realm, or no presence id at all: Crossbar's 404 bad identifier.
    for id in [
        "/3001@other.test",
        "/a%20b",
        "/a%22b",
        "/2002@",
        &format!("/{}", "x".repeat(200)),
    ] {
        for a in [
            api.get(&path(id)).await,
            api.post(&path(id), json!({"action": "reset"})).await,
        ] {
            assert_eq!(a.status, 404, "{id}: {}", a.body);
            assert_eq!(a.body["message"], "bad identifier", "{id}");
        }
    }
    // No account-wide reset in Crossbar.
    let a = api.post(&path(""), json!({"action": "reset"})).await;
    assert_eq!(a.status, 405, "{}", a.body);

    // Another account, or an account that does not exist: 403 with this token. The other
    // account's own token sees nothing of this one.
    for acc in [OTHER, "ffffffffffffffffffffffffffffffff"] {
        let p = format!("/v2/accounts/{acc}/presence");
        assert_eq!(api.get(&p).await.status, 403);
        let a = api
            .post(&format!("{p}/3001"), json!({"action": "reset"}))
            .await;
        assert_eq!(a.status, 403, "{}", a.body);
    }
    let other = Api::login(&server.handle, OTHER_KEY).await;
    let a = other.get(&format!("/v2/accounts/{OTHER}/presence")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(*a.data(), json!({"subscriptions": {}, "presentities": {}}));
    let a = other
        .post(
            &format!("/v2/accounts/{OTHER}/presence/2002@pivotd.test"),
            json!({"action": "reset"}),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.body);

    // No token, or a made-up one: 401.
    let mut anonymous = Api::new(&server.handle);
    assert_eq!(anonymous.get(&path("")).await.status, 401);
    let a = anonymous
        .post(&path("/2002"), json!({"action": "reset"}))
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    anonymous.token = "0".repeat(64);
    assert_eq!(anonymous.get(&path("/2002")).await.status, 401);

    // None of it touched the lamp.
    let id = PresenceId::parse("2002", REALM).unwrap();
    assert_eq!(server.handle.presence.lamp(&id).status, Status::Busy);
    assert!(blf.next_notify(300).await.is_none());
    let a = api.get(&path("/2002")).await;
    assert_eq!(
        a.data()["presentities"]["2002"]["status"],
        "busy",
        "{}",
        a.body
    );
}

/// Lamps nobody watches are listed too, the account's only, and an id shows the same in the
/// listing and alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lamps_lit_without_watchers_are_listed() {
    let server = start(&config()).await;
    let api = Api::login(&server.handle, KEY).await;
    let presence = &server.handle.presence;
    presence
        .set_manual(ACCOUNT, "2001", Status::Ringing)
        .unwrap();
    presence
        .set_manual(ACCOUNT, "park+1", Status::Busy)
        .unwrap();
    presence.set_manual(OTHER, "3001", Status::Busy).unwrap();
    let a = api.get(&path("")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let ps = a.data()["presentities"].as_object().unwrap();
    let keys: Vec<&String> = ps.keys().collect();
    assert_eq!(keys, ["2001", "park+1"], "{}", a.body);
    assert_eq!(ps["2001"]["state"], "early");
    assert_eq!(ps["park+1"]["state"], "confirmed");
    let one: Value = api.get(&path("/park+1")).await.data()["presentities"]["park+1"].clone();
    assert_eq!(one, ps["park+1"]);
}
