//! The registrar end to end: SIPp, baresip, pjsua2 and a hand-written digest client register
//! against a real pivotd over UDP on 127.0.0.1 (RFC 3261 §10, RFC 7616/8760 digest).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::digest::{bindings, challenges, credentials, Registrant};
use common::*;

const REALM: &str = "pivotd.test";

/// Two devices of one user; the desk phone has an internal caller ID of its own.
const DEVICES: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "tone-1khz" } }
[[accounts.users]]
id = "u1"
caller_id = { internal = { name = "Alice", number = "2001" } }
[[accounts.devices]]
id = "d1"
owner_id = "u1"
username = "2001"
password = "s3cret"
[[accounts.devices]]
id = "d2"
owner_id = "u1"
username = "2002"
password = "other-pass"
"#;

async fn server_with(sip_extra: &str) -> TestServer {
    start(&config_toml(DEVICES, sip_extra, "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_with_digest_and_a_wrong_password_gets_403() {
    let server = server_with("").await;
    let args = |pass: &'static str| {
        [
            "-s", "2001", "-au", "2001", "-ap", pass, "-key", "domain", REALM, "-key", "expires",
            "600",
        ]
    };
    let run = sipp("register.xml", false, server.udp, &args("s3cret")).await;
    assert!(run.ok, "{}", run.output);
    let b = server.handle.registrar.bindings_of(ACCOUNT, "d1");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].expires_at > 0 && b[0].user_agent.as_deref() == Some("SIPp register.xml"));
    // Over TCP too.
    let run = sipp("register.xml", true, server.tcp, &args("s3cret")).await;
    assert!(run.ok, "{}", run.output);
    let run = sipp("register.xml", false, server.udp, &args("wrong")).await;
    assert!(!run.ok, "a wrong password registered");
    assert!(run.output.contains("403"), "{}", run.output);
    let stats = &server.handle.registrar.authenticator().stats;
    assert_eq!(stats.failures("wrong_password"), 1);
    // The same in /metrics: the failure by reason, the two bindings (UDP and TCP contacts).
    let (code, text) = api_get(&server, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        metric(
            &text,
            "pivotd_auth_failures_total{reason=\"wrong_password\"}"
        ),
        1
    );
    assert_eq!(metric(&text, "pivotd_auth_successes_total"), 2);
    assert_eq!(metric(&text, "pivotd_registrations"), 2);
}

/// Wrong passwords count against their source like a scan's 404s: past the limit, the address
/// gets no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_block_the_source() {
    let server = server_with("source_failures_per_minute = 3").await;
    let mut r = Registrant::new(server.udp, "2001", REALM).await;
    let contact = format!("Contact: <{}>\r\n", r.contact);
    for _ in 0..4 {
        let reply = r.register("guess", &contact, None).await;
        assert_eq!(status(&reply), 403, "{reply}");
    }
    // Blocked now: even an OPTIONS from there is dropped.
    let local = r.sip.local();
    let options = format!(
        "OPTIONS sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:2001@{REALM}>;tag=o\r\nTo: <sip:{REALM}>\r\n\
         Call-ID: {}@blocked\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        token(),
        token()
    );
    r.sip.send(options.as_bytes()).await;
    assert!(
        r.sip.recv(1000).await.is_none(),
        "a blocked source was answered"
    );
    let (_, text) = api_get(&server, "/metrics").await;
    assert_eq!(metric(&text, "pivotd_sip_sources_blocked"), 1);
    assert_eq!(
        metric(
            &text,
            "pivotd_auth_failures_total{reason=\"wrong_password\"}"
        ),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_refused_and_a_device_cannot_register_another_aor() {
    let server = server_with("").await;
    let mut r = Registrant::new(server.udp, "9999", REALM).await;
    let contact = format!("Contact: <{}>\r\n", r.contact);
    let reply = r.register("s3cret", &contact, None).await;
    assert_eq!(status(&reply), 403, "{reply}");
    assert_eq!(
        server
            .handle
            .registrar
            .authenticator()
            .stats
            .failures("unknown_user"),
        1
    );
    // 2001's credentials for 2002's address-of-record.
    let mut r = Registrant::new(server.udp, "2002", REALM).await;
    let first = r.send(&contact).await;
    let c = challenges(&first, "WWW-Authenticate")[0].clone();
    let auth = credentials(&c, "2001", "s3cret", "REGISTER", "sip:pivotd.test", 1, "ab");
    let reply = r.send(&format!("{contact}Authorization: {auth}\r\n")).await;
    assert_eq!(status(&reply), 403, "{reply}");
    assert!(server.handle.registrar.all_bindings().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_algorithms_are_offered_and_accepted_and_a_replay_is_refused() {
    let server = server_with("").await;
    for alg in ["MD5", "SHA-256"] {
        let mut r = Registrant::new(server.udp, "2001", REALM).await;
        let contact = format!("Contact: <{}>\r\n", r.contact);
        let first = r.send(&contact).await;
        assert_eq!(status(&first), 401);
        let offered: Vec<String> = challenges(&first, "WWW-Authenticate")
            .into_iter()
            .map(|c| c.algorithm)
            .collect();
        assert_eq!(offered, ["MD5", "SHA-256"], "{first}");
        let c = challenges(&first, "WWW-Authenticate")
            .into_iter()
            .find(|c| c.algorithm == alg)
            .unwrap();
        let auth = credentials(&c, "2001", "s3cret", "REGISTER", "sip:pivotd.test", 1, "c1");
        let line = format!("{contact}Authorization: {auth}\r\n");
        let ok = r.send(&line).await;
        assert_eq!(status(&ok), 200, "{alg}: {ok}");
        // The same credentials again (same nonce, same nc): a replay.
        let again = r.send(&line).await;
        assert_eq!(status(&again), 403, "{alg}: replay accepted: {again}");
        // The next count on the same nonce is fine.
        let auth = credentials(&c, "2001", "s3cret", "REGISTER", "sip:pivotd.test", 2, "c2");
        let next = r.send(&format!("{contact}Authorization: {auth}\r\n")).await;
        assert_eq!(status(&next), 200, "{alg}: {next}");
    }
    let stats = &server.handle.registrar.authenticator().stats;
    assert_eq!(stats.failures("replayed"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_from_before_a_restart_gets_stale_not_a_password_prompt() {
    let server = server_with("").await;
    let mut r = Registrant::new(server.udp, "2001", REALM).await;
    let contact = format!("Contact: <{}>\r\n", r.contact);
    let first = r.send(&contact).await;
    let mut c = challenges(&first, "WWW-Authenticate")[0].clone();
    // A nonce this process never issued, answered with the right password.
    c.nonce = "AAAAAGkxQ0bB9oMq2pQkVwAAAAAAAAAAAAAA".into();
    let auth = credentials(&c, "2001", "s3cret", "REGISTER", "sip:pivotd.test", 1, "c1");
    let reply = r.send(&format!("{contact}Authorization: {auth}\r\n")).await;
    assert_eq!(status(&reply), 401, "{reply}");
    let again = challenges(&reply, "WWW-Authenticate");
    assert!(again.iter().all(|c| c.stale), "{reply}");
    // The same with a wrong password is a refusal, not a hint.
    let auth = credentials(&c, "2001", "nope", "REGISTER", "sip:pivotd.test", 1, "c1");
    let reply = r.send(&format!("{contact}Authorization: {auth}\r\n")).await;
    assert_eq!(status(&reply), 403, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_min_max_two_contacts_query_and_star() {
    let server = server_with("register_min_expires = 60\nregister_max_expires = 3600").await;
    let mut desk = Registrant::new(server.udp, "2001", REALM).await;
    let mut soft = Registrant::new(server.udp, "2001", REALM).await;
    let desk_contact = format!("Contact: <{}>\r\n", desk.contact);
    // Below the minimum: 423 with Min-Expires, nothing stored.
    let r = desk
        .register("s3cret", &format!("{desk_contact}Expires: 30\r\n"), None)
        .await;
    assert_eq!(status(&r), 423, "{r}");
    assert_eq!(header(&r, "Min-Expires").as_deref(), Some("60"));
    assert!(server.handle.registrar.all_bindings().is_empty());
    // Above the maximum: cut to it; the contact's own expires wins over the header.
    let r = desk
        .register("s3cret", &format!("{desk_contact}Expires: 99999\r\n"), None)
        .await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(bindings(&r), [(desk.contact.clone(), 3600)]);
    assert!(header(&r, "Date").is_some(), "{r}");
    let r = soft
        .register(
            "s3cret",
            &format!(
                "Contact: <{}>;expires=120\r\nExpires: 600\r\n",
                soft.contact
            ),
            None,
        )
        .await;
    let mut got = bindings(&r);
    got.sort();
    let mut want = vec![(desk.contact.clone(), 3600), (soft.contact.clone(), 120)];
    want.sort();
    assert_eq!(got.len(), 2, "{r}");
    for ((gu, ge), (wu, we)) in got.iter().zip(&want) {
        assert_eq!(gu, wu);
        assert!(we - ge <= 1, "{got:?} vs {want:?}");
    }
    // No Contact: the current bindings, unchanged.
    let r = desk.register("s3cret", "", None).await;
    assert_eq!(status(&r), 200);
    assert_eq!(bindings(&r).len(), 2, "{r}");
    // `*` needs Expires: 0 …
    let r = desk
        .register("s3cret", "Contact: *\r\nExpires: 60\r\n", None)
        .await;
    assert_eq!(status(&r), 400, "{r}");
    // … and with it removes every binding of the device.
    let r = desk
        .register("s3cret", "Contact: *\r\nExpires: 0\r\n", None)
        .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(bindings(&r).is_empty(), "{r}");
    assert!(server
        .handle
        .registrar
        .bindings_of(ACCOUNT, "d1")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_expire_on_their_own_and_unregister_removes_one() {
    let server = server_with("register_min_expires = 1").await;
    let mut a = Registrant::new(server.udp, "2001", REALM).await;
    let mut b = Registrant::new(server.udp, "2001", REALM).await;
    let r = a
        .register(
            "s3cret",
            &format!("Contact: <{}>;expires=1\r\n", a.contact),
            None,
        )
        .await;
    assert_eq!(status(&r), 200, "{r}");
    let r = b
        .register(
            "s3cret",
            &format!("Contact: <{}>\r\nExpires: 600\r\n", b.contact),
            None,
        )
        .await;
    assert_eq!(bindings(&r).len(), 2, "{r}");
    assert!(
        eventually(4, || server
            .handle
            .registrar
            .bindings_of(ACCOUNT, "d1")
            .len()
            == 1)
        .await,
        "the 1 s binding did not expire"
    );
    let r = b
        .register(
            "s3cret",
            &format!("Contact: <{}>\r\nExpires: 0\r\n", b.contact),
            None,
        )
        .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(server.handle.registrar.all_bindings().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart() {
    let dir = tempdir();
    let db = dir.join("pivotd.db");
    let toml = config_toml(DEVICES, "", "").replace(
        "sqlite = \":memory:\"",
        &format!("sqlite = {:?}", path_str(&db)),
    );
    let contact;
    {
        let server = start(&toml).await;
        let mut r = Registrant::new(server.udp, "2001", REALM).await;
        contact = r.contact.clone();
        let reply = r
            .register(
                "s3cret",
                &format!("Contact: <{contact}>\r\nExpires: 600\r\n"),
                None,
            )
            .await;
        assert_eq!(status(&reply), 200, "{reply}");
        server.handle.store.flush().unwrap();
        server.handle.shutdown().await;
    }
    let server = start(&toml).await;
    let b = server.handle.registrar.bindings_of(ACCOUNT, "d1");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].contact, contact);
    assert_eq!(b[0].transport, "UDP");
    server.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// pjsua2 (pjsip 2.15), an independent SIP stack, registers with SHA-256 when it is the only
/// algorithm offered, and with the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_registers_with_sha256_and_with_the_defaults() {
    for extra in ["digest_algorithms = [\"SHA-256\"]", ""] {
        let server = server_with(extra).await;
        let out = pjsua_register(server.udp.port(), "2002", "other-pass").await;
        assert!(out.starts_with("registered 200"), "{extra}: {out}");
        // On the way out it unregistered (Expires: 0), authenticated again.
        let stats = &server.handle.registrar.authenticator().stats;
        assert_eq!(
            stats.successes.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert!(server
            .handle
            .registrar
            .bindings_of(ACCOUNT, "d2")
            .is_empty());
        let out = pjsua_register(server.udp.port(), "2002", "wrong").await;
        assert!(out.starts_with("failed 403"), "{extra}: {out}");
    }
}

async fn pjsua_register(port: u16, user: &str, password: &str) -> String {
    let script = repo().join("tests/pjsua/register.py");
    let out = tokio::process::Command::new("timeout")
        .arg("20")
        .arg("python3")
        .arg(&script)
        .args([&port.to_string(), user, password, REALM])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'pjsua2'") {
        panic!("pjsua2 is not installed (pip install pjsua2-python): {stderr}");
    }
    stdout
        .lines()
        .rfind(|l| l.starts_with("registered") || l.starts_with("failed"))
        .unwrap_or_default()
        .to_string()
        + &format!(" [{stderr}]")
}

/// baresip 1.0 (Debian 12) gives up on a challenge that offers SHA-256: it is offered MD5
/// alone by its User-Agent, and registers with the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_the_defaults() {
    let server = server_with("").await;
    let phone = common::baresip::Baresip::start(
        server.udp,
        "2001",
        "s3cret",
        REALM,
        Duration::from_secs(600),
    )
    .await;
    let registered = eventually(8, || {
        server
            .handle
            .registrar
            .bindings_of(ACCOUNT, "d1")
            .iter()
            .any(|b| b.user_agent.as_deref().unwrap_or("").contains("baresip"))
    })
    .await;
    assert!(registered, "baresip did not register:\n{}", phone.log());
    let b = server.handle.registrar.bindings_of(ACCOUNT, "d1");
    assert_eq!(b[0].source.port(), phone.sip_port, "{b:?}");
    // The same phone with a wrong password: 403 after the challenge, no binding for it.
    let wrong = common::baresip::Baresip::start(
        server.udp,
        "2002",
        "not-it",
        REALM,
        Duration::from_secs(600),
    )
    .await;
    let refused = eventually(8, || wrong.log().contains("403 Forbidden")).await;
    assert!(refused, "no 403 for a wrong password:\n{}", wrong.log());
    assert!(server
        .handle
        .registrar
        .bindings_of(ACCOUNT, "d2")
        .is_empty());
}
