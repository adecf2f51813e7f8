//! The debug page (`/ui`, issue 14) over real sockets: SIPp calls pivotd, pivotd asks a real
//! HTTP server, and the call is read back from the page — in headless Chromium (Debian's
//! `chromium`, driven over the DevTools protocol by `tests/ui/browse.py`), and over plain
//! HTTP for the login, the sessions, the accounts' separation, escaping and the headers.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::api::Api;
use common::http::{HttpResp, HttpServer};
use common::*;
use serde_json::Value;

const KEY: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
const OTHER: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const OTHER_KEY: &str = "7f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a1908";

/// What the test pivot server answers: a prompt, and a key the flow ignores holding markup.
const ANSWER: &str =
    r#"{"module": "play", "data": {"id": "digit-1"}, "note": "<script>alert(1)</script>"}"#;

/// A server whose 6000 pivots to `voice_url` with `debug: true` for the account with `KEY`,
/// and a second account (`OTHER`, `OTHER_KEY`) with no calls.
async fn server(voice_url: &str) -> TestServer {
    let flows = format!(
        r#"api_key = "{KEY}"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ voice_url = "{voice_url}", debug = true }} }}
[[accounts]]
id = "{OTHER}"
realm = "other.test"
api_key = "{OTHER_KEY}"
[pivot]
blacklist_cidrs = []
"#
    );
    // Two accounts: a call finds its own by realm, the host SIPp dials.
    let toml =
        config_toml(&flows, "", "").replace(r#"realm = "pivotd.test""#, r#"realm = "127.0.0.1""#);
    start(&toml).await
}

/// A pivot server answering [`ANSWER`], a server asking it, one SIPp call to 6000 (pivotd
/// plays the prompt and hangs up), and the call's Call-ID once its records are written.
async fn server_with_a_call() -> (HttpServer, TestServer, String) {
    let web = HttpServer::start(|_| HttpResp::json(ANSWER)).await;
    let server = server(&web.url("/start")).await;
    let run = basic_call(server.udp, "6000").await;
    assert!(run.ok, "sipp failed:\n{}", run.output);
    assert!(eventually(5, || server.handle.active_calls() == 0).await);
    let store = server.handle.store.clone();
    let calls = tokio::task::spawn_blocking(move || {
        store.flush().unwrap();
        store.recent_calls(ACCOUNT, None, 10).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call_id = calls[0].call_id.clone();
    (web, server, call_id)
}

/// One answer of the page, not followed when it redirects.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The session cookie's `name=value` from `Set-Cookie`.
    fn session_cookie(&self) -> String {
        let c = self.header("set-cookie");
        assert!(c.starts_with("pivotd_ui="), "no session cookie: {c:?}");
        c.split(';').next().unwrap().to_string()
    }
}

/// A request to the page: `cookie` sent as is, `form` as a url-encoded POST body, `origin`
/// as the Origin header.
async fn ui(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    origin: Option<&str>,
) -> Page {
    let base = format!("http://{}", server.handle.api.expect("the API listens"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = match form {
        Some(f) => http
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(f.to_string()),
        None => http.get(format!("{base}{path}")),
    };
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = req.send().await.expect("ui request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("ui body");
    Page {
        status,
        headers,
        body,
    }
}

/// A session for the account whose API key is `key`, through the login form.
async fn login(server: &TestServer, key: &str) -> String {
    let p = ui(
        server,
        "/ui/login",
        None,
        Some(&format!("api_key={key}")),
        None,
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    p.session_cookie()
}

fn call_path(call_id: &str) -> String {
    let encoded: String = call_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/ui/calls/{encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_and_reads_the_timeline_of_a_call() {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "chromium is missing: install Debian's chromium package (scripts/test.sh does)"
    );
    let (web, server, call_id) = server_with_a_call().await;
    let base = format!("http://{}", server.handle.api.unwrap());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let shot = dir.join(format!("call-{:08x}.png", rand::random::<u32>()));
    let script = repo().join("tests/ui/browse.py");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .args([&base, KEY, &path_str(&shot), "60"])
        .kill_on_drop(true)
        .output();
    // The script has its own 60 s deadline; this one covers a Python that hangs.
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("browse.py did not finish in 90 s")
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browse.py failed:\n{stderr}");
    let page: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    println!("screenshot: {}", shot.display());
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{}",
        png.len()
    );

    assert_eq!(page["login_title"], "Log in · pivotd", "{page}");
    let list = page["list_text"].as_str().unwrap();
    assert!(list.contains("Recent calls"), "{list}");
    assert!(list.contains("sipp@127.0.0.1 → 6000"), "{list}");
    assert!(list.contains("BYE from server (flow ended)"), "{list}");
    assert_eq!(
        page["url"].as_str().unwrap(),
        format!("{base}{}", call_path(&call_id))
    );
    let rows: Vec<&str> = page["timeline"]
        .as_array()
        .expect("timeline rows")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let has = |f: &dyn Fn(&str) -> bool| rows.iter().any(|r| f(r));
    assert!(
        has(&|r| r.contains("INVITE from sipp@127.0.0.1 to 6000 → 100")),
        "{rows:#?}"
    );
    let start = web.url("/start");
    assert!(
        has(&|r| r.contains(&format!("pivot GET {start} 200 (")) && r.ends_with("kazoo: play")),
        "{rows:#?}"
    );
    assert!(
        has(&|r| r.ends_with("BYE from server (flow ended)")),
        "{rows:#?}"
    );
    assert!(rows[0].starts_with("0.0"), "{rows:#?}");
    // The pivot iteration with its debug records, the markup in the answer as text.
    let text = page["text"].as_str().unwrap();
    assert!(text.contains("Request 1: GET"), "{text}");
    assert!(text.contains("<script>alert(1)</script>"), "{text}");
    assert!(text.contains("Call-ID"), "the request's fields: {text}");
    assert_eq!(
        page["dialogs"],
        Value::Array(vec![]),
        "a script ran: {page}"
    );
    assert_eq!(page["cookie_visible"], "", "the session cookie is HttpOnly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_the_right_one_opens_a_session_until_logout() {
    let server = server("http://127.0.0.1:9/unused").await;
    let first = ui(&server, "/ui", None, None, None).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains(r#"name="api_key""#), "{}", first.body);

    let wrong = ui(&server, "/ui/login", None, Some("api_key=nope"), None).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("Wrong API key."), "{}", wrong.body);
    assert!(wrong.body.contains(r#"name="api_key""#), "the form again");
    assert_eq!(wrong.header("set-cookie"), "");

    let ok = ui(
        &server,
        "/ui/login",
        None,
        Some(&format!("api_key={KEY}")),
        Some(&format!("http://{}", server.handle.api.unwrap())),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.header("location"), "/ui");
    let set = ok.header("set-cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=3600"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = ok.session_cookie();
    let list = ui(&server, "/ui", Some(&cookie), None, None).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Recent calls"), "{}", list.body);
    assert!(
        list.body.contains("No calls recorded yet."),
        "{}",
        list.body
    );
    assert!(list.body.contains(ACCOUNT), "{}", list.body);

    let out = ui(&server, "/ui/logout", Some(&cookie), Some(""), None).await;
    assert_eq!(out.status, 303);
    assert!(
        out.header("set-cookie").starts_with("pivotd_ui=;")
            && out.header("set-cookie").contains("Max-Age=0"),
        "{}",
        out.header("set-cookie")
    );
    // The token is revoked: the old cookie is worth nothing.
    let after = ui(&server, "/ui", Some(&cookie), None, None).await;
    assert!(after.body.contains(r#"name="api_key""#), "{}", after.body);

    // api_auth's failure limit (10 a minute by default) counts the form's failures too.
    for _ in 0..9 {
        let p = ui(&server, "/ui/login", None, Some("api_key=nope"), None).await;
        assert_eq!(p.status, 401);
    }
    let limited = ui(
        &server,
        "/ui/login",
        None,
        Some(&format!("api_key={KEY}")),
        None,
    )
    .await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.header("set-cookie"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_token_from_api_auth_opens_a_session_and_leaves_the_url() {
    let server = server("http://127.0.0.1:9/unused").await;
    let api = Api::login(&server.handle, KEY).await;
    let p = ui(
        &server,
        &format!("/ui?auth_token={}", api.token),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.header("location"), "/ui", "the token out of the URL");
    let cookie = p.session_cookie();
    assert_eq!(cookie, format!("pivotd_ui={}", api.token));
    let list = ui(&server, "/ui", Some(&cookie), None, None).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Recent calls"), "{}", list.body);

    let bad = ui(&server, "/ui?auth_token=0123abcd", None, None, None).await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    assert!(bad.body.contains("unknown or has expired"), "{}", bad.body);
    assert!(bad.body.contains(r#"name="api_key""#), "{}", bad.body);
    assert_eq!(bad.header("set-cookie"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_call_is_not_visible() {
    let (_web, server, call_id) = server_with_a_call().await;
    let path = call_path(&call_id);
    let ours = login(&server, KEY).await;
    let theirs = login(&server, OTHER_KEY).await;
    let seen = ui(&server, &path, Some(&ours), None, None).await;
    assert_eq!(seen.status, 200, "{}", seen.body);

    let p = ui(&server, &path, Some(&theirs), None, None).await;
    assert_eq!(p.status, 404, "{}", p.body);
    assert!(p.body.contains("No such call"), "{}", p.body);
    assert!(!p.body.contains("sipp@"), "{}", p.body);
    let list = ui(&server, "/ui", Some(&theirs), None, None).await;
    assert!(
        list.body.contains("No calls recorded yet."),
        "{}",
        list.body
    );
    assert!(!list.body.contains("a class=\"call\""), "{}", list.body);
    // Without a session: the login form, not the call.
    let anonymous = ui(&server, &path, None, None, None).await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.body.contains(r#"name="api_key""#),
        "{}",
        anonymous.body
    );
    let unknown = ui(&server, "/ui/calls/nope%40h", Some(&ours), None, None).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pivot_answer_with_markup_is_shown_as_text_under_the_security_headers() {
    let (_web, server, call_id) = server_with_a_call().await;
    let cookie = login(&server, KEY).await;
    let page = ui(&server, &call_path(&call_id), Some(&cookie), None, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"));
    let login_form = ui(&server, "/ui", None, None, None).await;
    let css = ui(&server, "/ui/style.css", None, None, None).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    let missing = ui(&server, "/ui/no/such/page", Some(&cookie), None, None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-type").starts_with("text/html"));
    for p in [&page, &login_form, &css, &missing] {
        let csp = p.header("content-security-policy");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'none'"), "{csp}");
        assert_eq!(p.header("x-content-type-options"), "nosniff");
        assert_eq!(p.header("cache-control"), "no-store");
        assert_eq!(p.header("referrer-policy"), "no-referrer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_from_another_origin_is_refused() {
    let server = server("http://127.0.0.1:9/unused").await;
    let evil = Some("http://evil.example");
    let p = ui(
        &server,
        "/ui/login",
        None,
        Some(&format!("api_key={KEY}")),
        evil,
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert_eq!(p.header("set-cookie"), "", "no session for a foreign form");
    let cookie = login(&server, KEY).await;
    let out = ui(&server, "/ui/logout", Some(&cookie), Some(""), evil).await;
    assert_eq!(out.status, 403, "{}", out.body);
    let still = ui(&server, "/ui", Some(&cookie), None, None).await;
    assert!(still.body.contains("Recent calls"), "{}", still.body);
}
