//! The HTTP API over real sockets: Kazoo's documented requests (seeds 002 and 003) against a
//! running pivotd, with SIPp calls and a real pivot web server; auth, isolation, expiry,
//! bad input, unknown ids, a restart on the same SQLite file, CDRs, health and metrics.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::http::{HttpResp, HttpServer};
use common::*;
use pivotd::config::Config;
use pivotd::server::{self, ServerHandle};
use serde_json::{json, Value};

const KEY_A: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEY_B: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ACCOUNT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

const PLAY_TONE: &str = r#"{"module": "play", "data": {"id": "tone-1khz"}}"#;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/api").join(name)).expect("fixture")
}

/// Two accounts: A (realm 127.0.0.1, so SIPp's Request-URI host routes to it) with one
/// config callflow on 7000; B with its own key. `api_extra` goes under `[api]`.
fn api_config(sqlite: &Path, api_extra: &str) -> String {
    let base = 20000 + 2 * (rand::random::<u16>() % 4500);
    format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[api]
listen = "127.0.0.1:0"
{api_extra}
[store]
sqlite = "{}"
[media]
ip = "127.0.0.1"
port_min = {base}
port_max = {}
[pivot]
blacklist_cidrs = []
[[accounts]]
id = "{ACCOUNT}"
realm = "127.0.0.1"
api_key = "{KEY_A}"
[[accounts.callflows]]
name = "from the file"
numbers = ["7000"]
flow = {{ module = "play", data = {{ id = "digit-7" }} }}
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

struct Api {
    base: String,
    http: reqwest::Client,
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
    fn new(server: &ServerHandle) -> Api {
        Api {
            base: format!("http://{}", server.api.expect("api address")),
            // No pooled connections: after a 413 the server closes the connection without
            // reading the body, and a pooled reuse would race that close.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("api body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text}"));
        Answer { status, body }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    async fn put(&self, path: &str, token: &str, body: &str) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(token), Some(body.into()))
            .await
    }

    async fn auth(&self, key: &str) -> String {
        let a = self
            .send(
                reqwest::Method::PUT,
                "/v2/api_auth",
                None,
                Some(json!({"data": {"api_key": key}}).to_string()),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(a.body["status"], "success");
        a.body["auth_token"].as_str().expect("token").to_string()
    }
}

fn callflows(account: &str) -> String {
    format!("/v2/accounts/{account}/callflows")
}

/// One SIPp call to `number`; returns whether SIPp saw the call through.
async fn call(server: &ServerHandle, number: &str) -> SippRun {
    basic_call(server.udp[0], number).await
}

fn temp_db() -> (PathBuf, PathBuf) {
    let dir = tempdir();
    let db = dir.join("pivotd.db");
    (dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_callflow_is_created_and_the_next_call_hits_its_voice_url() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let token = api.auth(KEY_A).await;

    // The talk's curl request, body byte for byte but for the web server's address.
    let body = fixture("seed_003_create_callflow.json")
        .replace("http://your.server/pivot.php", &web.url("/pivot.php"));
    assert!(body.starts_with("{\"data\":{\n  \"numbers\":[\"12345\"]\n  ,\"flow\""));
    let created = api.put(&callflows(ACCOUNT), &token, &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let d = created.data();
    let id = d["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(d["numbers"], json!(["12345"]));
    assert_eq!(d["patterns"], json!([]));
    // Defaults filled in (spec e.5).
    let data = &d["flow"]["data"];
    assert_eq!(data["voice_url"], web.url("/pivot.php"));
    assert_eq!(data["method"], "get");
    assert_eq!(data["req_format"], "kazoo");
    assert_eq!(data["req_body_format"], "form");
    assert_eq!(data["debug"], false);
    assert_eq!(created.body["auth_token"], token.as_str());
    assert!(created.body["request_id"].as_str().is_some());
    assert!(created.body["revision"].as_str().unwrap().starts_with("1-"));

    // No restart: the next INVITE to 12345 runs the pivot.
    let run = call(&server, "12345").await;
    assert!(run.ok, "{}", run.output);
    let reqs = web.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path(), "/pivot.php");
    assert_eq!(reqs[0].field("Request").as_deref(), Some("12345"));
    assert_eq!(reqs[0].field("Account-ID").as_deref(), Some(ACCOUNT));
    let call_id = reqs[0].field("Call-ID").unwrap();

    // Its CDR.
    server.store.flush().unwrap();
    let cdrs = api
        .get(&format!("/v2/accounts/{ACCOUNT}/cdrs"), &token)
        .await;
    assert_eq!(cdrs.status, 200, "{}", cdrs.body);
    let list = cdrs.data().as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", cdrs.body);
    let c = &list[0];
    assert_eq!(c["call_id"], call_id.as_str());
    assert_eq!(c["to"], "12345@127.0.0.1");
    assert_eq!(c["from"], "sipp@127.0.0.1");
    assert_eq!(c["sip_code"], 200);
    assert_eq!(c["hangup_code"], "sip:200");
    // pivotd hangs up at the end of the flow: a normal BYE.
    assert_eq!(c["hangup_cause"], "NORMAL_CLEARING");
    // Not bridged: one inbound leg.
    assert_eq!(c["call_direction"], "inbound");
    assert_eq!(c["other_leg_call_id"], Value::Null);
    assert!(c["answer"].as_i64().unwrap() >= c["start"].as_i64().unwrap());
    assert!(c["end"].as_i64().unwrap() >= c["answer"].as_i64().unwrap());
    // The time filter (Gregorian seconds, as Crossbar).
    let start = c["start"].as_i64().unwrap();
    let later = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/cdrs?created_from={}", start + 3600),
            &token,
        )
        .await;
    assert_eq!(later.data(), &json!([]));
    let around = api
        .get(
            &format!(
                "/v2/accounts/{ACCOUNT}/cdrs?created_from={}&created_to={}",
                start - 5,
                start + 5
            ),
            &token,
        )
        .await;
    assert_eq!(around.data().as_array().unwrap().len(), 1);
}

/// Seed 002: two calls with debug on, one answered 404 by the web server, one given a flow
/// that fails validation; then the page's two GET requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_debug_requests_read_back_a_404_and_a_schema_error() {
    let web = HttpServer::start(|r| {
        if r.path() == "/missing.php" {
            HttpResp {
                status: 404,
                ..HttpResp::with("text/html", "<html><h1>Not Found</h1></html>\n")
            }
        } else {
            // `play` without its id: a schema error.
            HttpResp::json(r#"{"module": "play", "data": {}}"#)
        }
    })
    .await;
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let token = api.auth(KEY_A).await;

    let flow: Value = serde_json::from_str(&fixture("seed_002_debug_flow.json")).unwrap();
    for (number, path) in [("4786", "/missing.php"), ("4787", "/bad-flow.php")] {
        let mut data = flow.clone();
        data["flow"]["data"]["voice_url"] = web.url(path).into();
        data["numbers"] = json!([number]);
        // The page's flow has no `_` child; give it one so the caller gets an answer
        // (basic_call.xml wants 200 then BYE) after the failed pivot.
        data["flow"]["children"]["_"] = json!({"module": "play", "data": {"id": "digit-1"}});
        let a = api
            .put(
                &callflows(ACCOUNT),
                &token,
                &json!({ "data": data }).to_string(),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        // The seed's "GET" is accepted and stored as Kazoo's lower-case form.
        assert_eq!(a.data()["flow"]["data"]["method"], "get");
        assert_eq!(a.data()["flow"]["data"]["debug"], true);
    }
    for number in ["4786", "4787"] {
        let run = call(&server, number).await;
        assert!(run.ok, "{}", run.output);
    }
    let reqs = web.requests();
    assert_eq!(reqs.len(), 2);
    let id_404 = reqs
        .iter()
        .find(|r| r.path() == "/missing.php")
        .and_then(|r| r.field("Call-ID"))
        .unwrap();
    let id_schema = reqs
        .iter()
        .find(|r| r.path() == "/bad-flow.php")
        .and_then(|r| r.field("Call-ID"))
        .unwrap();
    server.store.flush().unwrap();

    // GET /v2/accounts/{ACCOUNT_ID}/pivot/debug, as written: only the token header.
    let list = api
        .get(&format!("/v2/accounts/{ACCOUNT}/pivot/debug"), &token)
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["status"], "success");
    assert_eq!(list.body["page_size"], 2);
    assert!(list.body.get("next_start_key").is_none());
    let rows = list.data().as_array().unwrap();
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["call_id"] == id)
            .unwrap_or_else(|| panic!("no row for {id}: {}", list.body))
            .clone()
    };
    let r404 = row(&id_404);
    assert_eq!(r404["status_code"], "404");
    assert_eq!(r404["iteration"], 1);
    assert_eq!(r404["has_schema_errors"], false);
    assert_eq!(r404["has_json_errors"], false);
    let uri = r404["uri"].as_str().unwrap();
    assert!(uri.starts_with(&web.url("/missing.php?")), "{uri}");
    assert!(uri.contains("Api-Version=2015-03-01"), "{uri}");
    assert!(r404["created"].as_i64().unwrap() > 63_000_000_000);
    assert!(r404["node"].as_str().is_some());
    assert!(r404["debug_id"].as_str().unwrap().ends_with(&id_404));
    let rs = row(&id_schema);
    assert_eq!(rs["has_schema_errors"], true);
    assert_eq!(rs["status_code"], "200");
    // Newest first.
    let created: Vec<i64> = rows
        .iter()
        .map(|r| r["created"].as_i64().unwrap())
        .collect();
    assert!(created[0] >= created[1]);

    // Paging: one per page, then the next key.
    let p1 = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/pivot/debug?page_size=1"),
            &token,
        )
        .await;
    assert_eq!(p1.body["page_size"], 1);
    let next = p1.body["next_start_key"].as_str().unwrap().to_string();
    let p2 = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/pivot/debug?page_size=1&start_key={next}"),
            &token,
        )
        .await;
    assert_eq!(p2.body["page_size"], 1);
    assert!(p2.body.get("next_start_key").is_none(), "{}", p2.body);
    assert_ne!(p1.data()[0]["call_id"], p2.data()[0]["call_id"]);

    // GET …/pivot/debug/{UUID}, the Call-ID URL-encoded (`@` as %40).
    let encoded = url::form_urlencoded::byte_serialize(id_404.as_bytes()).collect::<String>();
    assert!(encoded.contains("%40"), "{encoded}");
    let recs = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/pivot/debug/{encoded}"),
            &token,
        )
        .await;
    assert_eq!(recs.status, 200, "{}", recs.body);
    let recs = recs.data().as_array().unwrap().clone();
    assert!(recs.iter().all(|r| r["call_id"] == id_404.as_str()));
    assert!(recs.iter().all(|r| r["id"].as_str().unwrap().len() == 32));
    let req = &recs[0];
    assert_eq!(req["method"], "get");
    assert_eq!(req["req_body"], "");
    assert_eq!(req["req_headers"], json!({}));
    assert_eq!(req["uri"], uri);
    let resp = recs
        .iter()
        .find(|r| r.get("resp_status_code").is_some())
        .unwrap();
    assert_eq!(resp["resp_status_code"], "404");
    assert_eq!(resp["resp_headers"]["content-type"], "text/html");
    assert!(resp["resp_body"]
        .as_str()
        .unwrap()
        .contains("<h1>Not Found</h1>"));

    let recs = api
        .get(
            &format!(
                "/v2/accounts/{ACCOUNT}/pivot/debug/{}",
                url::form_urlencoded::byte_serialize(id_schema.as_bytes()).collect::<String>()
            ),
            &token,
        )
        .await;
    let errors = recs
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.get("schema_errors").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no schema error record: {}", recs.body));
    let by_rule = errors["schema_errors"]["flow.data.id"]
        .as_object()
        .unwrap_or_else(|| panic!("{errors}"));
    let message = by_rule.values().next().unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.starts_with("required"), "{errors}");
    assert_eq!(errors["resp_body"], r#"{"module": "play", "data": {}}"#);

    // An unknown call.
    let none = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/pivot/debug/nobody%40nowhere"),
            &token,
        )
        .await;
    assert_eq!(none.status, 404);
    assert_eq!(none.body["status"], "error");
    assert_eq!(none.body["error"], "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_accounts_and_the_auth_rate_limit() {
    let (_dir, db) = temp_db();
    let server = boot(&api_config(
        &db,
        "token_lifetime_s = 1\nauth_failures_per_minute = 3",
    ))
    .await;
    let api = Api::new(&server);
    let a = api.auth(KEY_A).await;
    let b = api.auth(KEY_B).await;
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);

    let mine = api.get(&callflows(ACCOUNT), &a).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    // B's token on A's account, and the other way round.
    let theirs = api.get(&callflows(ACCOUNT), &b).await;
    assert_eq!(theirs.status, 403, "{}", theirs.body);
    assert_eq!(theirs.body["error"], "403");
    assert_eq!(api.get(&callflows(ACCOUNT_B), &a).await.status, 403);
    assert_eq!(
        api.get(&format!("/v2/accounts/{ACCOUNT}/cdrs"), &b)
            .await
            .status,
        403
    );
    // Missing and unknown tokens.
    let none = api
        .send(reqwest::Method::GET, &callflows(ACCOUNT), None, None)
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["status"], "error");
    assert_eq!(none.body["message"], "invalid credentials");
    assert_eq!(api.get(&callflows(ACCOUNT), "bogus").await.status, 401);

    // Expiry (token_lifetime_s = 1).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let expired = api.get(&callflows(ACCOUNT), &a).await;
    assert_eq!(expired.status, 401, "{}", expired.body);

    // Failed api_auth attempts: 3 a minute, then 429, even for the right key.
    let bad = "2".repeat(64);
    for _ in 0..3 {
        let r = api
            .send(
                reqwest::Method::PUT,
                "/v2/api_auth",
                None,
                Some(json!({"data": {"api_key": bad}}).to_string()),
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let limited = api
        .send(
            reqwest::Method::PUT,
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": KEY_A}}).to_string()),
        )
        .await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.body["error"], "429");
}

/// Issue 14: a pivot node's `fallback_url` is kept (the API used to drop unknown pivot keys)
/// and checked as `voice_url` is: an http(s) URL that passes the save-time URL guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pivot_fallback_url_is_kept_and_checked_like_voice_url() {
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let t = api.auth(KEY_A).await;
    let path = callflows(ACCOUNT);
    let pivot = |fallback: &str| {
        format!(
            r#"{{"data": {{"numbers": ["302"], "flow": {{"module": "pivot", "data": {{"voice_url": "http://ivr.example/a", "fallback_url": "{fallback}"}}}}}}}}"#
        )
    };
    let created = api.put(&path, &t, &pivot("https://backup.example/b")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.data()["id"].as_str().unwrap().to_string();
    let got = api.get(&format!("{path}/{id}"), &t).await;
    assert_eq!(
        got.data()["flow"]["data"]["fallback_url"],
        "https://backup.example/b"
    );

    let r = api.put(&path, &t, &pivot("ftp://backup.example/b")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["data"]["flow.data.fallback_url"].is_object(),
        "{}",
        r.body
    );
    let r = api.put(&path, &t, &pivot("http://localhost/b")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["data"]["flow.data.fallback_url"]["invalid_url"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid client URL"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_with_the_reason_and_unknown_ids_404() {
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let t = api.auth(KEY_A).await;
    let path = callflows(ACCOUNT);
    let flow = r#"{"module": "play", "data": {"id": "digit-1"}}"#;

    // Not JSON.
    let r = api.put(&path, &t, "{\"data\": {").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["status"], "error");
    assert_eq!(r.body["error"], "400");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{}",
        r.body
    );
    // JSON, but no envelope.
    let r = api.put(&path, &t, r#"{"numbers": ["1"]}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.body["data"]["data"]["required"]["message"].is_string());
    // No number nor pattern: Kazoo's message.
    let r = api
        .put(&path, &t, &format!(r#"{{"data": {{"flow": {flow}}}}}"#))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], "validation error");
    assert_eq!(
        r.body["data"]["numbers"]["required"]["message"],
        "Callflows must be assigned at least one number or pattern"
    );
    // An invalid flow: the path of the fault.
    let r = api
        .put(
            &path,
            &t,
            r#"{"data": {"numbers": ["300"], "flow": {"module": "play", "data": {}, "children": {"_": {"module": "response", "data": {"code": "abc"}}}}}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["data"]["flow.data.id"]["required"].is_object(),
        "{}",
        r.body
    );
    let r = api
        .put(
            &path,
            &t,
            r#"{"data": {"numbers": ["300"], "flow": {"module": "play", "data": {"id": "x"}, "children": {"_": {"module": "response", "data": {"code": "abc"}}}}}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["data"]["flow.children._.data.code"]["invalid"]["message"].is_string(),
        "{}",
        r.body
    );
    let r = api
        .put(
            &path,
            &t,
            r#"{"data": {"numbers": ["300"], "flow": {"module": "transfer_to_mars"}}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["data"]["flow.module"].is_object(), "{}", r.body);
    // A bad regex.
    let r = api
        .put(
            &path,
            &t,
            &format!(r#"{{"data": {{"patterns": ["("], "flow": {flow}}}}}"#),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["data"]["patterns.0"]["format"].is_object(),
        "{}",
        r.body
    );
    // A blacklisted host at save time (j.10): localhost stays refused with cidrs = [].
    let r = api
        .put(
            &path,
            &t,
            r#"{"data": {"numbers": ["301"], "flow": {"module": "pivot", "data": {"voice_url": "http://localhost/x"}}}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["data"]["flow.data.voice_url"]["invalid_url"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid client URL"),
        "{}",
        r.body
    );
    // A number of the config file's callflow, then one of another API callflow.
    let r = api
        .put(
            &path,
            &t,
            &format!(r#"{{"data": {{"numbers": ["7000"], "flow": {flow}}}}}"#),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["data"]["numbers"]["unique"]["cause"], "7000");
    let ok = api
        .put(
            &path,
            &t,
            &format!(r#"{{"data": {{"numbers": ["8000", "8001"], "flow": {flow}}}}}"#),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let first = ok.data()["id"].as_str().unwrap().to_string();
    let r = api
        .put(
            &path,
            &t,
            &format!(r#"{{"data": {{"numbers": ["8001"], "flow": {flow}}}}}"#),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["data"]["numbers"]["unique"]["message"],
        format!("Number 8001 exists in callflow {first}")
    );
    // Nothing was stored by the refusals.
    let list = api.get(&path, &t).await;
    assert_eq!(list.data().as_array().unwrap().len(), 2, "{}", list.body);

    // Unknown ids.
    let unknown = format!("{path}/0123456789abcdef0123456789abcdef");
    assert_eq!(api.get(&unknown, &t).await.status, 404);
    let body = format!(r#"{{"data": {{"numbers": ["9"], "flow": {flow}}}}}"#);
    for m in [reqwest::Method::POST, reqwest::Method::PATCH] {
        let r = api.send(m, &unknown, Some(&t), Some(body.clone())).await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
    let r = api
        .send(reqwest::Method::DELETE, &unknown, Some(&t), None)
        .await;
    assert_eq!(r.status, 404);
    // A method the resource does not take, a bad page size, a bad time, a huge body.
    let r = api
        .send(
            reqwest::Method::PUT,
            &format!("/v2/accounts/{ACCOUNT}/cdrs"),
            Some(&t),
            Some("{}".into()),
        )
        .await;
    assert_eq!((r.status, r.body["error"].as_str()), (405, Some("405")));
    let r = api
        .get(&format!("/v2/accounts/{ACCOUNT}/cdrs?page_size=0"), &t)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["data"]["page_size"].is_object(), "{}", r.body);
    let r = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/cdrs?created_from=yesterday"),
            &t,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .get(
            &format!("/v2/accounts/{ACCOUNT}/pivot/debug?start_key=garbage"),
            &t,
        )
        .await;
    assert_eq!(r.status, 400);
    let huge = format!(r#"{{"data": {{"name": "{}"}}}}"#, "x".repeat(3 << 20));
    let r = api.put(&path, &t, &huge).await;
    assert_eq!((r.status, r.body["error"].as_str()), (413, Some("413")));
    // A route that does not exist: still the error envelope.
    let r = api.get("/v2/nothing/here", &t).await;
    assert_eq!((r.status, r.body["error"].as_str()), (404, Some("404")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_changes_routing_at_once_and_config_callflows_are_read_only() {
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let t = api.auth(KEY_A).await;
    let path = callflows(ACCOUNT);
    let created = api
        .put(
            &path,
            &t,
            r#"{"data": {"name": "first", "numbers": ["5100"], "flow": {"module": "play", "data": {"id": "digit-1"}}, "custom": "kept"}}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.data()["id"].as_str().unwrap().to_string();
    let one = format!("{path}/{id}");

    // Listing: the config's callflow and this one.
    let list = api.get(&path, &t).await;
    let rows = list.data().as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["source"], "config");
    assert_eq!(rows[0]["numbers"], json!(["7000"]));
    assert_eq!(rows[1]["id"], id.as_str());
    assert_eq!(rows[1]["name"], "first");
    assert_eq!(rows[1]["modules"], json!(["play"]));
    let got = api.get(&one, &t).await;
    assert_eq!(got.data()["custom"], "kept");
    assert_eq!(got.data()["flow"]["children"], json!({}));

    assert!(call(&server, "5100").await.ok);
    // PATCH: merge; the number moves to 5200 and routing follows at once.
    let patched = api
        .send(
            reqwest::Method::PATCH,
            &one,
            Some(&t),
            Some(r#"{"data": {"numbers": ["5200"], "name": "second"}}"#.into()),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.data()["name"], "second");
    assert_eq!(patched.data()["custom"], "kept");
    assert_eq!(patched.data()["flow"]["data"]["id"], "digit-1");
    assert!(patched.body["revision"].as_str().unwrap().starts_with("2-"));
    let gone = sipp("unknown_number.xml", false, server.udp[0], &["-s", "5100"]).await;
    assert!(gone.ok, "5100 should be unrouted now: {}", gone.output);
    assert!(call(&server, "5200").await.ok);
    // POST: replace the whole document.
    let replaced = api
        .send(
            reqwest::Method::POST,
            &one,
            Some(&t),
            Some(r#"{"data": {"patterns": ["^53"], "flow": {"module": "play", "data": {"id": "digit-3"}}}}"#.into()),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert!(replaced.data().get("custom").is_none());
    assert_eq!(replaced.data()["numbers"], json!([]));
    assert!(call(&server, "5399").await.ok);
    // DELETE.
    let del = api
        .send(reqwest::Method::DELETE, &one, Some(&t), None)
        .await;
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(api.get(&one, &t).await.status, 404);
    let gone = sipp("unknown_number.xml", false, server.udp[0], &["-s", "5399"]).await;
    assert!(gone.ok, "{}", gone.output);

    // The config's callflow: readable, not writable.
    let cfg_id = rows[0]["id"].as_str().unwrap();
    let cfg_one = format!("{path}/{cfg_id}");
    let got = api.get(&cfg_one, &t).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.data()["flow"]["data"]["id"], "digit-7");
    let r = api
        .send(reqwest::Method::DELETE, &cfg_one, Some(&t), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

/// A bridged call's two CDRs (written as the call task writes them): each leg with its
/// direction and the other leg's Call-ID, as Kazoo lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdrs_of_a_bridge_list_both_legs_linked() {
    use pivotd::store::{CallDirection, Cdr, Write};
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let t = api.auth(KEY_A).await;
    let leg = |call_id: &str, start: i64, direction, other: &str| Cdr {
        call_id: call_id.into(),
        account_id: ACCOUNT.into(),
        from: "alice@127.0.0.1".into(),
        to: "6000@127.0.0.1".into(),
        start,
        answer: Some(start + 2),
        end: start + 10,
        duration_s: 10,
        hangup_cause: "NORMAL_CLEARING".into(),
        sip_code: Some(200),
        call_direction: direction,
        other_leg_call_id: Some(other.into()),
    };
    let start = 63_900_000_000;
    assert!(server.store.write(Write::Cdr(leg(
        "a-leg@caller",
        start,
        CallDirection::Inbound,
        "b-leg@pivotd"
    ))));
    assert!(server.store.write(Write::Cdr(leg(
        "b-leg@pivotd",
        start + 1,
        CallDirection::Outbound,
        "a-leg@caller"
    ))));
    server.store.flush().unwrap();
    let r = api.get(&format!("/v2/accounts/{ACCOUNT}/cdrs"), &t).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.data().as_array().unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|c| {
            (
                c["call_id"].as_str().unwrap(),
                c["call_direction"].as_str().unwrap(),
                c["other_leg_call_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("b-leg@pivotd", "outbound", "a-leg@caller"),
            ("a-leg@caller", "inbound", "b-leg@pivotd")
        ],
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_api_callflows_and_debug_records() {
    let web = HttpServer::start(|_| HttpResp::status(404)).await;
    let (_dir, db) = temp_db();
    let toml = api_config(&db, "");
    let (id, call_id) = {
        let server = boot(&toml).await;
        let api = Api::new(&server);
        let t = api.auth(KEY_A).await;
        let body = json!({"data": {"numbers": ["6100"], "flow": {
            "module": "pivot",
            "data": {"voice_url": web.url("/p"), "debug": true},
            "children": {"_": {"module": "play", "data": {"id": "digit-1"}}}
        }}});
        let r = api.put(&callflows(ACCOUNT), &t, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(call(&server, "6100").await.ok);
        let call_id = web.requests()[0].field("Call-ID").unwrap();
        server.store.flush().unwrap();
        (r.data()["id"].as_str().unwrap().to_string(), call_id)
    };
    // Started again on the same file (tokens are not kept: log in again).
    let server = boot(&toml).await;
    let api = Api::new(&server);
    let t = api.auth(KEY_A).await;
    let got = api.get(&format!("{}/{id}", callflows(ACCOUNT)), &t).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.data()["numbers"], json!(["6100"]));
    let encoded = url::form_urlencoded::byte_serialize(call_id.as_bytes()).collect::<String>();
    let recs = api
        .get(&format!("/v2/accounts/{ACCOUNT}/pivot/debug/{encoded}"), &t)
        .await;
    assert_eq!(recs.status, 200, "{}", recs.body);
    assert!(recs.data().as_array().unwrap().len() >= 2);
    // And it still routes.
    assert!(call(&server, "6100").await.ok);
    assert_eq!(web.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_need_no_token_and_count_calls_and_pivots() {
    let web = HttpServer::start(|_| HttpResp::json(PLAY_TONE)).await;
    let (_dir, db) = temp_db();
    let server = boot(&api_config(&db, "")).await;
    let api = Api::new(&server);
    let t = api.auth(KEY_A).await;
    let body = json!({"data": {"numbers": ["6200"], "flow": {
        "module": "pivot", "data": {"voice_url": web.url("/p")}
    }}});
    assert_eq!(
        api.put(&callflows(ACCOUNT), &t, &body.to_string())
            .await
            .status,
        201
    );
    assert!(call(&server, "6200").await.ok);
    server.store.flush().unwrap();

    let http = reqwest::Client::new();
    let h = http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let h: Value = serde_json::from_str(&h.text().await.unwrap()).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"], "ok");
    assert_eq!(h["sip"]["udp"][0], server.udp[0].to_string());

    let m = http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status().as_u16(), 200);
    assert!(m.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = m.text().await.unwrap();
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert_eq!(value("pivotd_calls_total"), 1.0);
    assert_eq!(value("pivotd_calls_answered_total"), 1.0);
    assert_eq!(value("pivotd_calls_active"), 0.0);
    assert_eq!(value("pivotd_pivot_requests_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(
        value("pivotd_pivot_requests_total{outcome=\"http_error\"}"),
        0.0
    );
    // The round trip of that request, in the histogram of its outcome.
    assert_eq!(
        value("pivotd_pivot_request_seconds_count{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value("pivotd_pivot_request_seconds_bucket{outcome=\"ok\",le=\"+Inf\"}"),
        1.0
    );
    assert_eq!(
        value("pivotd_pivot_request_seconds_bucket{outcome=\"ok\",le=\"5\"}"),
        1.0
    );
    assert!(value("pivotd_pivot_request_seconds_sum{outcome=\"ok\"}") > 0.0);
    assert_eq!(
        value("pivotd_pivot_request_seconds_count{outcome=\"failed\"}"),
        0.0
    );
    assert!(value("pivotd_sip_messages_total{direction=\"in\"}") >= 3.0);
    assert!(value("pivotd_sip_messages_total{direction=\"out\"}") >= 2.0);
    // One call: INVITE and ACK in, our BYE out and the caller's 200 for it in.
    assert_eq!(
        value("pivotd_sip_requests_total{direction=\"in\",method=\"INVITE\"}"),
        1.0
    );
    assert_eq!(
        value("pivotd_sip_requests_total{direction=\"out\",method=\"BYE\"}"),
        1.0
    );
    assert_eq!(
        value("pivotd_sip_responses_total{direction=\"out\",code=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("pivotd_sip_responses_total{direction=\"out\",code=\"100\"}"),
        1.0
    );
    assert_eq!(
        value("pivotd_sip_responses_total{direction=\"in\",code=\"200\"}"),
        1.0
    );
    // The 2-second tone: about 100 packets.
    assert!(value("pivotd_rtp_packets_sent_total") >= 90.0);
    assert_eq!(value("pivotd_store_queue_dropped_total"), 0.0);
    assert!(text.contains("# TYPE pivotd_calls_total counter"));
}

/// The value of one sample line of a /metrics text (`name{labels}` as written).
async fn metric(base: &str, sample: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::metric(&text, sample) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_gauge_live_transactions_and_dialogs_during_a_call() {
    let server = start(&config_toml(
        r#"
[[accounts.callflows]]
numbers = ["5300"]
flow = { module = "play", data = { id = "tone-1khz", answer = true }, children = { _ = { module = "hangup" } } }
"#,
        "",
        "rtp_timeout_s = 0",
    ))
    .await;
    let base = format!("http://{}", server.handle.api.expect("api address"));
    let (server_tx, client_tx, dialogs) = (
        "pivotd_sip_transactions{side=\"server\"}",
        "pivotd_sip_transactions{side=\"client\"}",
        "pivotd_sip_dialogs",
    );
    assert_eq!(metric(&base, dialogs).await, 0.0);
    assert_eq!(metric(&base, client_tx).await, 0.0);

    let sink = RtpSink::bind().await;
    let mut caller = RawSip::udp(server.udp).await;
    let local = caller.local();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        sink.addr.port()
    );
    let invite = format!(
        "INVITE sip:5300@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKgauge1;rport\r\n\
From: <sip:caller@127.0.0.1>;tag=fgauge\r\nTo: <sip:5300@pivotd.test>\r\nCall-ID: gauge-call\r\n\
CSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    caller.send(invite.as_bytes()).await;
    let ok = caller.expect("200 OK", 5000).await.expect("answered");
    let to = header(&ok, "To").unwrap();
    let ack = format!(
        "ACK sip:5300@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKgauge2;rport\r\n\
From: <sip:caller@127.0.0.1>;tag=fgauge\r\nTo: {to}\r\nCall-ID: gauge-call\r\nCSeq: 1 ACK\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send(ack.as_bytes()).await;

    // During the 2-second tone: one dialog, the INVITE's server transaction (kept until
    // Timer L, RFC 6026), no client transaction yet.
    assert_eq!(metric(&base, dialogs).await, 1.0);
    assert!(metric(&base, server_tx).await >= 1.0);
    assert_eq!(metric(&base, client_tx).await, 0.0);

    // The flow hangs up: pivotd's BYE is a client transaction while it goes unanswered.
    let bye = caller
        .expect("BYE ", 6000)
        .await
        .expect("BYE after the tone");
    assert_eq!(metric(&base, client_tx).await, 1.0);
    let mut reply = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        reply.push_str(&format!("{name}: {}\r\n", header(&bye, name).unwrap()));
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    caller.send(reply.as_bytes()).await;

    // The dialog goes at once; the BYE's transaction after Timer K (T4, 5 s over UDP).
    let mut gone = false;
    for _ in 0..100 {
        if metric(&base, dialogs).await == 0.0 && metric(&base, client_tx).await == 0.0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "dialogs and client transactions did not return to 0");
}
