//! pivotd on a PostgreSQL store (`[store] postgres`), over real sockets: the test binary's
//! own PostgreSQL (password authentication, scram-sha-256), the HTTP API creating a user, a
//! device and a callflow, SIPp registering the device and calling the callflow, and every
//! row in the database, none in a SQLite file. A second node started on the same database
//! routes the callflow and knows the device and its binding.

mod common;

use std::sync::Arc;

use common::api::Api;
use common::http::{HttpResp, HttpServer};
use common::*;
use pivotd::config::Config;
use pivotd::server::{self, ServerHandle};
use serde_json::{json, Value};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PASS: &str = "Pg-unique-s3cret";
const PLAY_TONE: &str = r#"{"module": "play", "data": {"id": "tone-1khz"}}"#;

/// One account, realm 127.0.0.1 (SIPp's Request-URI host), on the PostgreSQL at `url`.
fn config(url: &str) -> String {
    let base = 20000 + 2 * (rand::random::<u16>() % 4500);
    format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
# SIPp calls as no device; the account has one.
allow_unauthenticated = true
[api]
listen = "127.0.0.1:0"
[store]
postgres = "{url}"
[media]
ip = "127.0.0.1"
port_min = {base}
port_max = {}
[pivot]
blacklist_cidrs = []
[[accounts]]
id = "{ACCOUNT}"
realm = "127.0.0.1"
api_key = "{KEY}"
"#,
        base + 99
    )
}

async fn boot(toml: &str) -> ServerHandle {
    let cfg = Config::from_toml_str(toml, &repo()).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    server::start(Arc::new(cfg)).await.expect("server starts")
}

async fn put(api: &Api, path: &str, data: Value) -> Value {
    let a = api
        .send(
            reqwest::Method::PUT,
            path,
            Some(&json!({ "data": data }).to_string()),
        )
        .await;
    assert_eq!(a.status, 201, "{path}: {}", a.body);
    a.data().clone()
}

fn path(kind: &str) -> String {
    format!("/v2/accounts/{ACCOUNT}/{kind}")
}

async fn call(server: &ServerHandle, number: &str) -> SippRun {
    basic_call(server.udp[0], number).await
}

async fn register(server: &ServerHandle, user: &str) -> SippRun {
    sipp(
        "register.xml",
        false,
        server.udp[0],
        &[
            "-s",
            user,
            "-au",
            user,
            "-ap",
            PASS,
            "-key",
            "domain",
            "127.0.0.1",
            "-key",
            "expires",
            "600",
        ],
    )
    .await
}

/// What the database holds, counted with the superuser's own connection.
fn count(db: &str, table: &str) -> u64 {
    common::postgres::server()
        .sql(db, &format!("SELECT count(*) FROM {table}"))
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_calls_on_postgres_and_a_second_node_on_the_same_database() {
    let url = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let toml = config(&url);

    let (callflow_id, device_id, call_id) = {
        let server = boot(&toml).await;
        assert!(server.store.is_postgres());
        let api = Api::login(&server, KEY).await;
        let user = put(
            &api,
            &path("users"),
            json!({"first_name": "Ada", "last_name": "Lovelace"}),
        )
        .await;
        let user_id = user["id"].as_str().unwrap().to_string();
        let device = put(
            &api,
            &path("devices"),
            json!({"name": "desk", "owner_id": user_id,
                   "sip": {"username": "pg2001", "password": PASS}}),
        )
        .await;
        let device_id = device["id"].as_str().unwrap().to_string();
        let flow = put(
            &api,
            &path("callflows"),
            json!({"numbers": ["12345"], "flow": {
                "module": "pivot", "data": {"voice_url": web.url("/p"), "debug": true}}}),
        )
        .await;
        let callflow_id = flow["id"].as_str().unwrap().to_string();

        // The device registers, and the callflow answers the next call, without a restart.
        let reg = register(&server, "pg2001").await;
        assert!(reg.ok, "{}", reg.output);
        let run = call(&server, "12345").await;
        assert!(run.ok, "{}", run.output);
        assert_eq!(web.requests().len(), 1);
        let call_id = web.requests()[0].field("Call-ID").unwrap();

        let s = server.store.clone();
        tokio::task::spawn_blocking(move || s.flush())
            .await
            .unwrap()
            .unwrap();
        let cdrs = api.get(&path("cdrs")).await;
        assert_eq!(cdrs.status, 200, "{}", cdrs.body);
        assert_eq!(cdrs.data()[0]["call_id"], call_id.as_str(), "{}", cdrs.body);
        let debug = api.get(&path("pivot/debug")).await;
        assert_eq!(
            debug.data()[0]["call_id"],
            call_id.as_str(),
            "{}",
            debug.body
        );
        let regs = api.get(&path("registrations")).await;
        assert_eq!(regs.data()[0]["username"], "pg2001", "{}", regs.body);
        let health = api.get("/healthz").await;
        assert_eq!(health.body["store"], "ok", "{}", health.body);
        (callflow_id, device_id, call_id)
    };

    // Every row is in PostgreSQL; the password nowhere; no SQLite file was made.
    let pg = common::postgres::server();
    for (table, n) in [
        ("users", 1),
        ("devices", 1),
        ("callflows", 1),
        ("callflow_numbers", 1),
        ("registrations", 1),
        ("cdrs", 1),
    ] {
        assert_eq!(count(&db, table), n, "{table}");
    }
    assert!(count(&db, "pivot_debug") >= 2);
    assert!(count(&db, "call_events") >= 3);
    let dump = pg.sql(&db, "SELECT doc || coalesce(ha1, '') FROM devices");
    assert!(!dump.contains(PASS), "{dump}");
    assert_eq!(pg.sql(&db, "SELECT call_id FROM cdrs"), call_id.as_str());
    assert!(
        !repo().join("pivotd.db").exists(),
        "a SQLite file was made beside the config"
    );

    // A second node on the same database: the callflow routes, the device and its binding
    // are known, the first node's records are listed.
    let server = boot(&toml).await;
    let api = Api::login(&server, KEY).await;
    let got = api
        .get(&format!("{}/{callflow_id}", path("callflows")))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let got = api.get(&format!("{}/{device_id}", path("devices"))).await;
    assert_eq!(got.data()["sip"]["username"], "pg2001", "{}", got.body);
    let regs = api.get(&path("registrations")).await;
    assert_eq!(regs.data()[0]["username"], "pg2001", "{}", regs.body);
    let cdrs = api.get(&path("cdrs")).await;
    assert_eq!(cdrs.data()[0]["call_id"], call_id.as_str(), "{}", cdrs.body);
    // The first node's call events, from PostgreSQL: its timeline, ended.
    let events = api
        .get(&format!(
            "{}/{}/events",
            path("calls"),
            call_id.replace('@', "%40")
        ))
        .await;
    assert_eq!(events.status, 200, "{}", events.body);
    let kinds: Vec<&str> = events
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"invite"), "{}", events.body);
    assert!(kinds.contains(&"pivot"), "{}", events.body);
    assert_eq!(kinds.last(), Some(&"end"), "{}", events.body);
    let run = call(&server, "12345").await;
    assert!(run.ok, "{}", run.output);
    assert_eq!(web.requests().len(), 2);
    let reg = register(&server, "pg2001").await;
    assert!(reg.ok, "{}", reg.output);
}

/// Two nodes running at once on one database: a token either issued works on the other,
/// for its account only; an unknown token is refused by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_api_tokens() {
    let url = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .unwrap();
    let toml = config(&url);
    let a = boot(&toml).await;
    let b = boot(&toml).await;
    let from_a = Api::login(&a, KEY).await;
    let from_b = Api::login(&b, KEY).await;
    for (issued, other) in [(&from_a, &b), (&from_b, &a)] {
        let mut on_other = Api::new(other);
        on_other.token = issued.token.clone();
        let r = on_other.get(&path("callflows")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = on_other
            .get("/v2/accounts/ffffffffffffffffffffffffffffffff/callflows")
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
        on_other.token = "0".repeat(64);
        let r = on_other.get(&path("callflows")).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
}

/// Polls `f` every 10 ms for up to 2 s; how long it took to hold.
async fn within_2s(what: &str, mut f: impl FnMut() -> bool) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{what}: not within 2 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// Two nodes running at once on one database: a callflow or device created, then deleted,
/// through node A's API reaches node B's routing table and directory within 2 s (LISTEN/
/// NOTIFY, no restart, no polling), B answers the call and the REGISTER, and the binding B
/// took reaches node A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_node_a_routes_the_next_call_on_node_b_within_2_s() {
    let url = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .unwrap();
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let toml = config(&url);
    let cfg = Config::from_toml_str(&toml, &repo()).unwrap();
    let a = boot(&toml).await;
    let b = boot(&toml).await;
    let api = Api::login(&a, KEY).await;
    let routed_on_b = || b.routes.route(&cfg, "22222", "127.0.0.1").is_some();
    assert!(!routed_on_b());

    let flow = put(
        &api,
        &path("callflows"),
        json!({"numbers": ["22222"], "flow": {
            "module": "pivot", "data": {"voice_url": web.url("/b")}}}),
    )
    .await;
    let took = within_2s("the callflow on node B", routed_on_b).await;
    eprintln!("callflow reached node B after {took:?}");
    let run = call(&b, "22222").await;
    assert!(run.ok, "{}", run.output);
    assert_eq!(web.requests().len(), 1);

    let device = put(
        &api,
        &path("devices"),
        json!({"name": "b", "sip": {"username": "pgb3001", "password": PASS}}),
    )
    .await;
    let known_on_b = || {
        b.registrar
            .directory()
            .find("127.0.0.1", "pgb3001")
            .is_some()
    };
    within_2s("the device on node B", known_on_b).await;
    let reg = register(&b, "pgb3001").await;
    assert!(reg.ok, "{}", reg.output);
    // The REGISTER node B took is node A's binding too (A would reach the phone).
    let device_id = device["id"].as_str().unwrap().to_string();
    within_2s("node B's REGISTER on node A", || {
        a.registrar
            .bindings_of(ACCOUNT, &device_id)
            .iter()
            .any(|r| r.contact.starts_with("sip:pgb3001@127.0.0.1:"))
    })
    .await;

    // Deletions travel too.
    for (kind, id) in [("callflows", &flow["id"]), ("devices", &device["id"])] {
        let r = api
            .send(
                reqwest::Method::DELETE,
                &format!("{}/{}", path(kind), id.as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    within_2s("the callflow gone from node B", || !routed_on_b()).await;
    within_2s("the device gone from node B", || !known_on_b()).await;
    within_2s("its binding gone from node B", || {
        b.registrar.bindings_of(ACCOUNT, &device_id).is_empty()
    })
    .await;
}
