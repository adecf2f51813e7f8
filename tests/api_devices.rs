//! Devices, users and registrations over the HTTP API, against a running pivotd: Crossbar's
//! CRUD, passwords never returned nor stored, a device created over the API registering at
//! once with SIPp (and again after a restart on the same SQLite file), username clashes,
//! the directory following users' caller IDs, and the account's bindings as Kazoo lists them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use pivotd::config::Config;
use pivotd::registrar::directory::DeviceEntry;
use pivotd::server::{self, ServerHandle};
use serde_json::{json, Value};

const KEY_A: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEY_B: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ACCOUNT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const REALM: &str = "pbx.test";
/// The password of the API device: searched for in every answer and in the SQLite files.
const PASS: &str = "Zq7-unique-s3cret";

/// Account A (realm pbx.test) with a config user and a config device; account B.
fn config(sqlite: &Path) -> String {
    let base = 20000 + 2 * (rand::random::<u16>() % 4500);
    format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[api]
listen = "127.0.0.1:0"
[store]
sqlite = "{}"
[media]
ip = "127.0.0.1"
port_min = {base}
port_max = {}
[[accounts]]
id = "{ACCOUNT}"
realm = "{REALM}"
api_key = "{KEY_A}"
[[accounts.users]]
id = "cfguser"
first_name = "Config"
[[accounts.devices]]
id = "cfgdev"
name = "front desk"
username = "desk100"
password = "file-password"
[[accounts]]
id = "{ACCOUNT_B}"
realm = "b.test"
api_key = "{KEY_B}"
"#,
        sqlite.display(),
        base + 99
    )
}

async fn boot(toml: &str) -> ServerHandle {
    let cfg = Config::from_toml_str(toml, &repo()).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    server::start(Arc::new(cfg)).await.expect("server starts")
}

fn temp_db() -> (PathBuf, PathBuf) {
    let dir = tempdir();
    let db = dir.join("pivotd.db");
    (dir, db)
}

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl Api {
    async fn login(server: &ServerHandle, key: &str) -> Api {
        let mut api = Api {
            base: format!("http://{}", server.api.expect("api address")),
            http: reqwest::Client::new(),
            token: String::new(),
        };
        let a = api
            .send(
                reqwest::Method::PUT,
                "/v2/api_auth",
                Some(json!({"data": {"api_key": key}})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        api.token = a.body["auth_token"].as_str().unwrap().to_string();
        api
    }

    /// One request; every answer is checked for the password.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-auth-token", &self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("api body");
        assert!(!text.contains(PASS), "the password came back: {text}");
        assert!(
            !text.contains("file-password"),
            "a config password came back: {text}"
        );
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text}"));
        Answer { status, body }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn put(&self, path: &str, data: Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(json!({ "data": data })))
            .await
    }
    async fn post(&self, path: &str, data: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(json!({ "data": data })))
            .await
    }
    async fn patch(&self, path: &str, data: Value) -> Answer {
        self.send(reqwest::Method::PATCH, path, Some(json!({ "data": data })))
            .await
    }
    async fn delete(&self, path: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

fn devices(account: &str) -> String {
    format!("/v2/accounts/{account}/devices")
}

fn users(account: &str) -> String {
    format!("/v2/accounts/{account}/users")
}

fn registrations(account: &str) -> String {
    format!("/v2/accounts/{account}/registrations")
}

/// A 400 validation error about `key`, in the callflows' envelope.
fn assert_invalid(a: &Answer, key: &str, rule: &str) {
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["status"], "error");
    assert_eq!(a.body["error"], "400");
    assert_eq!(a.body["message"], "validation error", "{}", a.body);
    assert!(
        a.data()[key][rule]["message"].is_string(),
        "no {key}.{rule} in {}",
        a.body
    );
}

/// One REGISTER (challenged, then answered) with SIPp's register.xml.
async fn register(server: &ServerHandle, user: &str, password: &str) -> SippRun {
    sipp(
        "register.xml",
        false,
        server.udp[0],
        &[
            "-s", user, "-au", user, "-ap", password, "-key", "domain", REALM, "-key", "expires",
            "600",
        ],
    )
    .await
}

/// Every byte SQLite holds for the store: the file, its WAL and shared memory.
fn db_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        all.extend(std::fs::read(p).unwrap_or_default());
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_users_crud_never_return_nor_store_the_password() {
    let (_dir, db) = temp_db();
    let server = boot(&config(&db)).await;
    let api = Api::login(&server, KEY_A).await;

    // A user, Kazoo's fields and one of our own.
    let u = api
        .put(
            &users(ACCOUNT),
            json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@pbx.test",
                   "caller_id": {"internal": {"name": "Ada L", "number": "2001"}}, "team": "ops"}),
        )
        .await;
    assert_eq!(u.status, 201, "{}", u.body);
    let user_id = u.data()["id"].as_str().unwrap().to_string();
    assert_eq!(user_id.len(), 32);
    assert_eq!(u.data()["team"], "ops");
    assert_eq!(u.data()["enabled"], true);
    assert!(u.body["revision"].as_str().unwrap().starts_with("1-"));
    let list = api.get(&users(ACCOUNT)).await;
    let ids: Vec<&str> = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cfguser", user_id.as_str()]);
    assert_eq!(list.data()[0]["source"], "config");
    assert_eq!(list.data()[1]["email"], "ada@pbx.test");

    // A device owned by the user: the password is taken, never shown.
    let d = api
        .put(
            &devices(ACCOUNT),
            json!({"name": "Ada's desk", "owner_id": user_id, "presence_id": "2001",
                   "caller_id": {"external": {"number": "+15550002001"}},
                   "sip": {"username": "ada2001", "password": PASS, "invite_format": "contact"},
                   "mac_address": "00:04:f2:00:00:01"}),
        )
        .await;
    assert_eq!(d.status, 201, "{}", d.body);
    let dev = d.data()["id"].as_str().unwrap().to_string();
    assert_eq!(
        d.data()["sip"],
        json!({"username": "ada2001", "invite_format": "contact"})
    );
    assert_eq!(d.data()["mac_address"], "00:04:f2:00:00:01");
    assert_eq!(d.data()["enabled"], true);
    let got = api.get(&format!("{}/{dev}", devices(ACCOUNT))).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.data()["sip"]["username"], "ada2001");
    assert!(got.data()["sip"].get("password").is_none());
    let list = api.get(&devices(ACCOUNT)).await;
    let rows = list.data().as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", list.body);
    assert_eq!(rows[0]["id"], "cfgdev");
    assert_eq!(rows[0]["username"], "desk100");
    assert_eq!(rows[0]["source"], "config");
    assert_eq!(rows[1]["username"], "ada2001");
    assert_eq!(rows[1]["owner_id"], user_id.as_str());
    // The config device reads without its password and cannot be changed here.
    let cfg_dev = api.get(&format!("{}/cfgdev", devices(ACCOUNT))).await;
    assert_eq!(cfg_dev.data()["sip"], json!({"username": "desk100"}));
    let r = api
        .patch(
            &format!("{}/cfgdev", devices(ACCOUNT)),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // The directory has the device at once, its caller ID filled from its owner.
    let entry = server
        .registrar
        .directory()
        .find(REALM, "ada2001")
        .expect("in the directory");
    assert_eq!(entry.device_id, dev);
    assert_eq!(entry.ha1, DeviceEntry::ha1s("ada2001", REALM, PASS));
    assert_eq!(entry.caller_id.internal.name.as_deref(), Some("Ada L"));
    assert_eq!(
        entry.caller_id.external.number.as_deref(),
        Some("+15550002001")
    );
    // A change of the owner reaches it.
    let p = api
        .patch(
            &format!("{}/{user_id}", users(ACCOUNT)),
            json!({"caller_id": {"internal": {"name": "Ada Lovelace"}}}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.data()["caller_id"]["internal"]["number"], "2001");
    let entry = server.registrar.directory().find(REALM, "ada2001").unwrap();
    assert_eq!(
        entry.caller_id.internal.name.as_deref(),
        Some("Ada Lovelace")
    );

    // PATCH and POST without a password keep the credentials while the username stays.
    let path = format!("{}/{dev}", devices(ACCOUNT));
    let p = api.patch(&path, json!({"name": "Ada's phone"})).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body["revision"].as_str().unwrap().starts_with("2-"));
    let mut whole = p.data().clone();
    whole["name"] = "Ada's old phone".into();
    let r = api.post(&path, whole).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["name"], "Ada's old phone");
    assert_eq!(
        server
            .registrar
            .directory()
            .find(REALM, "ada2001")
            .unwrap()
            .ha1,
        DeviceEntry::ha1s("ada2001", REALM, PASS)
    );
    // A new username needs the password again; with it the login moves.
    let r = api
        .patch(&path, json!({"sip": {"username": "ada2002"}}))
        .await;
    assert_invalid(&r, "sip.password", "required");
    assert!(r.data()["sip.password"]["required"]["message"]
        .as_str()
        .unwrap()
        .contains("needed again"));
    let r = api
        .patch(
            &path,
            json!({"sip": {"username": "ada2002", "password": PASS}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(server
        .registrar
        .directory()
        .find(REALM, "ada2001")
        .is_none());
    assert!(server
        .registrar
        .directory()
        .find(REALM, "ada2002")
        .is_some());

    // Clashes: the config device's username (any case), another API device's.
    let clash = api
        .put(
            &devices(ACCOUNT),
            json!({"name": "x", "sip": {"username": "DESK100", "password": PASS}}),
        )
        .await;
    assert_invalid(&clash, "sip.username", "unique");
    assert_eq!(clash.data()["sip.username"]["unique"]["cause"], "DESK100");
    assert!(clash.data()["sip.username"]["unique"]["message"]
        .as_str()
        .unwrap()
        .contains("cfgdev"));
    let clash = api
        .put(
            &devices(ACCOUNT),
            json!({"name": "x", "sip": {"username": "ada2002", "password": PASS}}),
        )
        .await;
    assert_invalid(&clash, "sip.username", "unique");
    // Another account may have it.
    let b = Api::login(&server, KEY_B).await;
    let r = b
        .put(
            &devices(ACCOUNT_B),
            json!({"name": "x", "sip": {"username": "ada2002", "password": PASS}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        b.get(&devices(ACCOUNT_B))
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Bad bodies: why, in the same envelope.
    assert_invalid(
        &api.put(&devices(ACCOUNT), json!({"sip": {}})).await,
        "name",
        "required",
    );
    assert_invalid(
        &api.put(
            &devices(ACCOUNT),
            json!({"name": "x", "owner_id": "nobody"}),
        )
        .await,
        "owner_id",
        "not_found",
    );
    assert_invalid(
        &api.put(
            &devices(ACCOUNT),
            json!({"name": "x", "sip": {"username": "a1", "password": "shrt"}}),
        )
        .await,
        "sip.password",
        "minLength",
    );
    assert_invalid(
        &api.put(&users(ACCOUNT), json!({"first_name": "A"})).await,
        "last_name",
        "required",
    );
    let not_json = api
        .send(reqwest::Method::PUT, &devices(ACCOUNT), None)
        .await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);

    // A user who owns a device stays; the device goes, then the user.
    let r = api.delete(&format!("{}/{user_id}", users(ACCOUNT))).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.data()["cause"], json!([dev]));
    let r = api.delete(&path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.get(&path).await.status, 404);
    assert!(server
        .registrar
        .directory()
        .find(REALM, "ada2002")
        .is_none());
    let r = api.delete(&format!("{}/{user_id}", users(ACCOUNT))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        api.get(&format!("{}/{user_id}", users(ACCOUNT)))
            .await
            .status,
        404
    );

    // Not in the SQLite files either; the HA1s are.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (doc, ha1): (String, String) = conn
        .query_row(
            "SELECT doc, ha1 FROM devices WHERE account_id = ?1",
            [ACCOUNT_B],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(!doc.contains(PASS) && !doc.contains("password"), "{doc}");
    let md5 = &DeviceEntry::ha1s("ada2002", "b.test", PASS)[0].1;
    assert!(ha1.contains(md5.as_str()), "{ha1}");
    drop(conn);
    let bytes = db_bytes(&db);
    assert!(!bytes.is_empty());
    assert!(
        !contains(&bytes, PASS),
        "the password is in the SQLite files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_device_registers_at_once_shows_in_registrations_and_survives_a_restart() {
    let (_dir, db) = temp_db();
    let toml = config(&db);
    let dev = {
        let server = boot(&toml).await;
        let api = Api::login(&server, KEY_A).await;
        let u = api
            .put(
                &users(ACCOUNT),
                json!({"first_name": "Bo", "last_name": "B"}),
            )
            .await;
        let owner = u.data()["id"].as_str().unwrap().to_string();
        let d = api
            .put(
                &devices(ACCOUNT),
                json!({"name": "softphone", "owner_id": owner, "sip": {"username": "bo3001", "password": PASS}}),
            )
            .await;
        assert_eq!(d.status, 201, "{}", d.body);
        let dev = d.data()["id"].as_str().unwrap().to_string();
        assert_eq!(api.get(&registrations(ACCOUNT)).await.data(), &json!([]));

        // No restart: the phone registers now; a wrong password does not.
        let run = register(&server, "bo3001", PASS).await;
        assert!(run.ok, "{}", run.output);
        let wrong = register(&server, "bo3001", "not-the-password").await;
        assert!(
            !wrong.ok && wrong.output.contains("SIP/2.0 403"),
            "{}",
            wrong.output
        );

        let regs = api.get(&registrations(ACCOUNT)).await;
        assert_eq!(regs.status, 200, "{}", regs.body);
        let rows = regs.data().as_array().unwrap();
        assert_eq!(rows.len(), 1, "{}", regs.body);
        let r = &rows[0];
        assert_eq!(r["username"], "bo3001");
        assert_eq!(r["device_id"], dev.as_str());
        assert_eq!(r["authorizing_id"], dev.as_str());
        assert_eq!(r["authorizing_type"], "device");
        assert_eq!(r["owner_id"], owner.as_str());
        assert_eq!(r["realm"], REALM);
        assert_eq!(r["account_realm"], REALM);
        assert_eq!(r["user_agent"], "SIPp register.xml");
        assert_eq!(r["source_ip"], "127.0.0.1");
        assert_eq!(r["contact_ip"], "127.0.0.1");
        assert!(
            r["contact"]
                .as_str()
                .unwrap()
                .starts_with("sip:bo3001@127.0.0.1:"),
            "{r}"
        );
        assert!(r["call_id"].as_str().is_some_and(|c| !c.is_empty()));
        let expires = r["expires"].as_u64().unwrap();
        assert!((590..=600).contains(&expires), "{expires}");
        assert!(r["event_timestamp"].as_i64().unwrap() > 63_000_000_000);
        // Another account sees none of them.
        let b = Api::login(&server, KEY_B).await;
        assert_eq!(b.get(&registrations(ACCOUNT_B)).await.data(), &json!([]));
        server.store.flush().unwrap();
        dev
    };

    // Started again on the same file: the device is in the directory, its binding is back.
    let server = boot(&toml).await;
    let api = Api::login(&server, KEY_A).await;
    let regs = api.get(&registrations(ACCOUNT)).await;
    assert_eq!(regs.data().as_array().unwrap().len(), 1, "{}", regs.body);
    assert_eq!(regs.data()[0]["username"], "bo3001");
    let run = register(&server, "bo3001", PASS).await;
    assert!(run.ok, "{}", run.output);

    // Disabled: out of the directory, its bindings gone; enabled again, it registers.
    let path = format!("{}/{dev}", devices(ACCOUNT));
    let r = api.patch(&path, json!({"enabled": false})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.get(&registrations(ACCOUNT)).await.data(), &json!([]));
    let off = register(&server, "bo3001", PASS).await;
    assert!(!off.ok, "{}", off.output);
    let r = api.patch(&path, json!({"enabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(register(&server, "bo3001", PASS).await.ok);

    // Deleted: its bindings go with it, and it can no longer register.
    assert_eq!(
        api.get(&registrations(ACCOUNT))
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = api.delete(&path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.get(&registrations(ACCOUNT)).await.data(), &json!([]));
    let gone = register(&server, "bo3001", PASS).await;
    assert!(
        !gone.ok && gone.output.contains("SIP/2.0 403"),
        "{}",
        gone.output
    );
    server.store.flush().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM registrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}
