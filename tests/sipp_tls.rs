//! SIPp over TLS (`-t l1`) against pivotd's TLS listener: a basic call that hears the prompt
//! and is hung up, and a digest-authenticated REGISTER. Debian's sipp has no TLS: these run
//! the SIPp that scripts/sipp-tls.sh builds from Debian's source (`common::sipp_tls_binary`).
//! Certificates are made per test (`common::tls`). SIPp 3.6.1 does not verify pivotd's: its
//! `-tls_ca` fails without a CRL file as well.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::tls::{tls_keys, TestCa};
use common::*;

const FLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "tone-1khz" }, children = { _ = { module = "hangup" } } }
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
"#;

/// A server with a TLS listener presenting a certificate of `ca`, callers without
/// credentials served; and SIPp's own TLS arguments: its certificate and key (SIPp loads one
/// even as a client).
async fn tls_server(ca: &TestCa) -> (TestServer, Vec<String>) {
    let (cert, key) = ca.issue("server", "pivotd-test");
    let (sipp_cert, sipp_key) = ca.issue("sipp", "sipp");
    let sip = tls_keys(&cert, &key, "allow_unauthenticated = true");
    let server = start(&config_toml(FLOWS, &sip, "")).await;
    let path = |p: &std::path::Path| p.display().to_string();
    let args = vec![
        "-tls_cert".to_string(),
        path(&sipp_cert),
        "-tls_key".to_string(),
        path(&sipp_key),
    ];
    (server, args)
}

/// Open SIP connections of `transport` ("tls", "tcp") in `/metrics`.
async fn connections(server: &TestServer, transport: &str) -> u64 {
    let (_, text) = api_get(server, "/metrics").await;
    metric(
        &text,
        &format!("pivotd_sip_connections{{transport=\"{transport}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_over_tls_hears_the_prompt_and_is_hung_up() {
    let ca = TestCa::new("pivotd-sipp-tls-ca");
    let (server, tls_args) = tls_server(&ca).await;
    let target: SocketAddr = server.handle.tls[0];
    let sink = RtpSink::bind().await;
    let mut args = vec![
        "-s".to_string(),
        "5000".to_string(),
        "-key".to_string(),
        "rtp_port".to_string(),
        sink.addr.port().to_string(),
    ];
    args.extend(tls_args);
    let call = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp_tls_calls("basic_call.xml", target, 1, &args).await
    });
    // pivotd's side while the call is up (the prompt lasts seconds): the call's one
    // connection is a TLS one, and no plain TCP one is open.
    let (mut tls_seen, mut tcp_seen) = (0, 0);
    while !call.is_finished() {
        tls_seen = tls_seen.max(connections(&server, "tls").await);
        tcp_seen = tcp_seen.max(connections(&server, "tcp").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = call.await.expect("the SIPp task");
    run.assert_all_completed(1);
    assert_eq!(tls_seen, 1, "one TLS connection while the call was up");
    assert_eq!(tcp_seen, 0, "no plain TCP connection");
    let (_, text) = api_get(&server, "/metrics").await;
    assert_eq!(metric(&text, "pivotd_sip_tls_handshakes_failed_total"), 0);
    // The caller heard the prompt (the BYE came after it; give the last packet a moment).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let prompt = prompt_pcmu("tone-1khz");
    let audio = sink.audio();
    assert!(
        audio.len() >= prompt.len() && audio[..prompt.len()] == prompt[..],
        "the caller did not hear the prompt ({} bytes, prompt {})",
        audio.len(),
        prompt.len()
    );
}

/// SIPp's REGISTER over TLS answers the 401 with the device's password; the binding pivotd
/// keeps says TLS (what it would ring the device over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_over_tls_with_digest_and_the_binding_is_tls() {
    let ca = TestCa::new("pivotd-sipp-tls-ca");
    let (server, tls_args) = tls_server(&ca).await;
    let mut args = vec![
        "-s",
        "2001",
        "-au",
        "2001",
        "-ap",
        "s3cret",
        "-key",
        "domain",
        "pivotd.test",
        "-key",
        "expires",
        "600",
    ];
    args.extend(tls_args.iter().map(String::as_str));
    let run = sipp_tls_calls("register.xml", server.handle.tls[0], 1, &args).await;
    assert!(run.ok, "sipp REGISTER over TLS failed:\n{}", run.output);
    let bindings = server.handle.registrar.bindings_of(ACCOUNT, "d1");
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0].transport, "TLS");
}
