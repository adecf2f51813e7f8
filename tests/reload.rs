//! SIGHUP (`systemctl reload`) and the log format, on the built binary: a changed callflow
//! is followed by the next call, a changed listen address is named as not applied, a broken
//! file is refused with its problems and the config in force stays; `--log-format json`
//! prints one JSON object per line, and under journald the text has no timestamps.

mod common;

use common::api::{Answer, Api};
use common::binary::{pivotd, spawn_config, write_config, KillOnDrop, LogLines};
use common::digest::Registrant;
use common::presence::{dialog_info, Subscriber};
use common::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};

/// 5000 refuses with 486: SIPp's basic call fails.
const BUSY: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "response", data = { code = 486 } }
"#;

/// 5000 answers, plays a prompt and hangs up: SIPp's basic call passes.
const ANSWER: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "welcome" }, children = { _ = { module = "hangup" } } }
"#;

/// The same number with a module that does not exist: the file does not pass the check.
const BROKEN: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "no_such_module" }
"#;

fn hangup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -HUP failed");
}

/// The binary with its log collected at INFO, `extra` arguments first.
fn spawn_logged(
    config: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (
    KillOnDrop,
    LogLines,
    std::net::SocketAddr,
    std::path::PathBuf,
) {
    let path = write_config(config);
    let mut cmd = pivotd();
    cmd.args(extra)
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let (mut child, udp) = spawn_config(cmd, &path);
    let log = LogLines::collect(&mut child);
    (KillOnDrop(child), log, udp, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_follows_a_changed_callflow_names_what_needs_a_restart_and_refuses_a_broken_file() {
    let base = config_toml(BUSY, "", "");
    let (mut child, log, udp, path) = spawn_logged(&base, &[], &[]);

    let before = basic_call(udp, "5000").await;
    assert!(
        !before.ok,
        "5000 answered before the reload:\n{}",
        before.output
    );

    // The callflow changes, and so does the UDP listen address (which needs a restart).
    let moved = format!("udp = [\"127.0.0.1:{}\"]", free_udp_port());
    let changed = base
        .replace(BUSY, ANSWER)
        .replacen("udp = [\"127.0.0.1:0\"]", &moved, 1);
    assert_ne!(
        changed,
        base.replace(BUSY, ANSWER),
        "the listen address was not changed"
    );
    std::fs::write(&path, &changed).unwrap();
    hangup(&child);
    let reloaded = log.wait_for(&["config reloaded"], 15);
    assert!(reloaded.is_some(), "no reload logged: {:#?}", log.lines());
    let kept = log.wait_for(&["sip.udp", "not applied until restart"], 1);
    assert!(
        kept.is_some(),
        "the listen address change not named: {:#?}",
        log.lines()
    );
    // Nothing else changed, so nothing else is named.
    let named = log
        .lines()
        .iter()
        .filter(|l| l.contains("not applied until restart"))
        .count();
    assert_eq!(named, 1, "{:#?}", log.lines());

    // The next call follows the new flow, on the address bound at start.
    let after = basic_call(udp, "5000").await;
    assert!(
        after.ok,
        "5000 did not follow the reloaded flow:\n{}",
        after.output
    );

    // A broken file: every problem logged with its key, the config in force stays.
    std::fs::write(&path, base.replace(BUSY, BROKEN)).unwrap();
    hangup(&child);
    let refused = log.wait_for(&["reload refused"], 15);
    assert!(refused.is_some(), "no refusal logged: {:#?}", log.lines());
    let problem = log.wait_for(&["accounts[0].callflows[0].flow", "no_such_module"], 1);
    assert!(
        problem.is_some(),
        "the problem not logged with its key: {:#?}",
        log.lines()
    );
    let still = basic_call(udp, "5000").await;
    assert!(
        still.ok,
        "the config in force did not stay:\n{}",
        still.output
    );

    assert!(child.try_wait().unwrap().is_none(), "pivotd exited");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// In process, through `ServerHandle::reload`: a device's new password and a per-source
/// limit are in force for the next REGISTER; nothing needing a restart changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_devices_and_source_limits_in_force_for_the_next_request() {
    let device = |password: &str| {
        format!(
            "[[accounts.devices]]\nid = \"d1\"\nusername = \"2001\"\npassword = \"{password}\"\n"
        )
    };
    // The media dir absolute, so the file in its temp folder means what the test's text does.
    let media = format!("dir = \"{}\"", repo().join("media").display());
    let base = config_toml(&device("old"), "", &media);
    let path = write_config(&base);
    let server = start(&base).await;
    let mut phone = Registrant::new(server.udp, "2001", "pivotd.test").await;
    let contact = format!("Contact: <{}>\r\n", phone.contact);
    let reply = phone.register("old", &contact, None).await;
    assert_eq!(status(&reply), 200, "{reply}");

    let changed = base.replace(&device("old"), &device("new")).replacen(
        "[sip]\n",
        "[sip]\nsource_failures_per_minute = 1\n",
        1,
    );
    std::fs::write(&path, &changed).unwrap();
    let kept = server.handle.reload(&path).await.expect("the file reloads");
    assert!(kept.is_empty(), "{kept:?}");

    let reply = phone.register("old", &contact, None).await;
    assert_eq!(status(&reply), 403, "the old password still works: {reply}");
    let reply = phone.register("new", &contact, None).await;
    assert_eq!(status(&reply), 200, "the new password does not: {reply}");
    // A second failure is over the reloaded limit of one a minute (the start's was 20).
    let reply = phone.register("old", &contact, None).await;
    assert_eq!(status(&reply), 403, "{reply}");
    let (_, text) = api_get(&server, "/metrics").await;
    assert_eq!(metric(&text, "pivotd_sip_sources_blocked"), 1, "{text}");

    // A broken file changes nothing.
    std::fs::write(&path, base.replace(&device("old"), BROKEN)).unwrap();
    let refused = server.handle.reload(&path).await;
    assert!(refused.is_err(), "a broken file was put in force");
}

/// A second and a third account of the reload tests (`config_toml`'s is the first).
const SECOND: &str = "00000000000000000000000000000002";
const THIRD: &str = "00000000000000000000000000000003";

/// An API key: `c` 64 times.
fn key(c: char) -> String {
    c.to_string().repeat(64)
}

/// A test config (its media ports chosen once) whose accounts [`Accounts::with`] fills in,
/// the media dir absolute so the file means the same in its temp folder.
struct Accounts(String);

impl Accounts {
    fn new() -> Accounts {
        let media = format!("dir = \"{}\"", repo().join("media").display());
        Accounts(config_toml("@ACCOUNTS@", "", &media))
    }

    /// The config with the first account's API key `first_key` and the accounts `more`.
    fn with(&self, first_key: &str, more: &str) -> String {
        self.0
            .replace("@ACCOUNTS@", &format!("api_key = \"{first_key}\"\n{more}"))
    }
}

/// One more account: `id` in `realm` with the API key `api_key` and `devices` (TOML).
fn account(id: &str, realm: &str, api_key: &str, devices: &str) -> String {
    format!("[[accounts]]\nid = \"{id}\"\nrealm = \"{realm}\"\napi_key = \"{api_key}\"\n{devices}")
}

/// `PUT /v2/api_auth` with `key`, its answer whatever it is.
async fn api_auth(server: &TestServer, key: &str) -> Answer {
    Api::new(&server.handle)
        .send(
            reqwest::Method::PUT,
            "/v2/api_auth",
            Some(&json!({"data": {"api_key": key}}).to_string()),
        )
        .await
}

/// The status of the debug pages' login form posted with `key` (303: a session).
async fn ui_login(server: &TestServer, key: &str) -> u16 {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = server.handle.api.expect("the API listens");
    http.post(format!("http://{api}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("api_key={key}"))
        .send()
        .await
        .expect("ui request")
        .status()
        .as_u16()
}

fn callflows(account: &str) -> String {
    format!("/v2/accounts/{account}/callflows")
}

/// Through `ServerHandle::reload` (what SIGHUP calls), the HTTP API follows the accounts of
/// the file: a changed key replaces the old one, a removed account's key and the tokens
/// already issued for it are refused, a new account's key opens its resources and the debug
/// pages at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_api_keys_in_force_and_ends_a_removed_accounts_tokens() {
    let accounts = Accounts::new();
    let base = accounts.with(&key('a'), &account(SECOND, "second.test", &key('b'), ""));
    let path = write_config(&base);
    let server = start(&base).await;
    let second = Api::login(&server.handle, &key('b')).await;
    assert_eq!(second.get(&callflows(SECOND)).await.status, 200);

    let changed = accounts.with(&key('A'), &account(THIRD, "third.test", &key('c'), ""));
    std::fs::write(&path, &changed).unwrap();
    let kept = server.handle.reload(&path).await.expect("the file reloads");
    assert!(kept.is_empty(), "{kept:?}");

    // The first account's key changed: the old one is refused, the new one works.
    let old = api_auth(&server, &key('a')).await;
    assert_eq!(
        old.status, 401,
        "the replaced key still works: {}",
        old.body
    );
    let first = Api::login(&server.handle, &key('A')).await;
    assert_eq!(first.get(&callflows(ACCOUNT)).await.status, 200);
    assert_eq!(ui_login(&server, &key('a')).await, 401);

    // The removed account: its key, and the token issued before the reload, refused.
    let gone = api_auth(&server, &key('b')).await;
    assert_eq!(
        gone.status, 401,
        "a removed account's key works: {}",
        gone.body
    );
    let a = second.get(&callflows(SECOND)).await;
    assert_eq!(a.status, 401, "a removed account's token works: {}", a.body);

    // The new account: its key gives a token for its resources, and a session.
    let third = Api::login(&server.handle, &key('c')).await;
    let a = third.get(&callflows(THIRD)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(ui_login(&server, &key('c')).await, 303);
}

/// A device of an account the reload added subscribes to an id of its account, and that
/// id's lamp, set over the API as the account's, reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lets_a_new_accounts_device_watch_its_lamps() {
    let accounts = Accounts::new();
    let base = accounts.with(&key('a'), "");
    let path = write_config(&base);
    let server = start(&base).await;
    let device =
        "[[accounts.devices]]\nid = \"t1\"\nusername = \"3001\"\npassword = \"pass-3001\"\n";
    let changed = accounts.with(&key('a'), &account(THIRD, "third.test", &key('c'), device));
    std::fs::write(&path, &changed).unwrap();
    let kept = server.handle.reload(&path).await.expect("the file reloads");
    assert!(kept.is_empty(), "{kept:?}");

    let mut watcher = Subscriber::new(
        server.udp,
        "3001",
        "pass-3001",
        "third.test",
        "sip:3002@third.test",
        "dialog",
    )
    .await;
    let r = watcher.subscribe(Some(600), "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(dialog_info(&watcher.notify().await).is_idle());

    let api = Api::login(&server.handle, &key('c')).await;
    let a = api
        .post(
            &format!("/v2/accounts/{THIRD}/presence/3002"),
            json!({"action": "set", "state": "confirmed"}),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(dialog_info(&watcher.notify().await).dialogs, ["confirmed"]);
}

/// Listening on 0.0.0.0 without `[sip] advertise` would put 0.0.0.0 in Via, Contact and SDP:
/// `check-config` passes the file but warns, naming the key.
#[test]
fn check_config_warns_of_a_wildcard_address_without_advertise() {
    let wildcard =
        config_toml("", "", "").replacen("udp = [\"127.0.0.1:0\"]", "udp = [\"0.0.0.0:0\"]", 1);
    assert!(wildcard.contains("0.0.0.0:0"));
    let check = |text: &str| {
        let out = pivotd()
            .arg("check-config")
            .arg(write_config(text))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = check(&wildcard);
    assert!(
        warned.contains("warning: sip.advertise: unset while sip.udp listen on a wildcard"),
        "{warned}"
    );
    let advertised = wildcard.replacen("[sip]\n", "[sip]\nadvertise = \"127.0.0.1\"\n", 1);
    assert!(!check(&advertised).contains("sip.advertise"));
}

#[test]
fn log_format_json_prints_one_json_object_per_line() {
    let (mut child, log, _udp, _path) =
        spawn_logged(&config_toml("", "", ""), &["--log-format", "json"], &[]);
    let line = log.wait_for(&["pivotd listening"], 15);
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.unwrap_or_else(|| panic!("no listening line: {:#?}", log.lines()));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["fields"]["message"], "pivotd listening", "{line}");
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["timestamp"].is_string(), "{line}");
    for l in log.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&l).is_ok(),
            "a line that is not JSON: {l}"
        );
    }
}

#[test]
fn the_log_format_flag_is_global() {
    let path = write_config(&config_toml("", "", ""));
    let out = pivotd()
        .arg("check-config")
        .arg(&path)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = pivotd()
        .args(["--log-format", "xml", "check-config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "an unknown log format was accepted");
}

#[test]
fn text_logs_have_no_colours_and_no_timestamps_under_journald() {
    let config = config_toml("", "", "");
    let (mut child, plain, _, _) = spawn_logged(&config, &[], &[]);
    let line = plain.wait_for(&["pivotd listening"], 15);
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.unwrap_or_else(|| panic!("no listening line: {:#?}", plain.lines()));
    assert!(!line.contains('\u{1b}'), "colours on a pipe: {line:?}");
    assert!(
        line.starts_with(|c: char| c.is_ascii_digit()),
        "no timestamp: {line:?}"
    );

    let (mut child, journal, _, _) = spawn_logged(&config, &[], &[("JOURNAL_STREAM", "8:12345")]);
    let line = journal.wait_for(&["pivotd listening"], 15);
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.unwrap_or_else(|| panic!("no listening line: {:#?}", journal.lines()));
    assert!(!line.contains('\u{1b}'), "colours under journald: {line:?}");
    assert!(
        line.trim_start().starts_with("INFO"),
        "a timestamp under journald: {line:?}"
    );
}
