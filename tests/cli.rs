//! The binary's contract: check-config, start-up errors in one clear line, and SIGTERM with a
//! grace period (new INVITEs 503, live calls BYE after the grace, exit 0).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

fn pivotd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pivotd"))
}

fn write_config(text: &str) -> std::path::PathBuf {
    let dir = tempdir();
    let path = dir.join("pivotd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_a_good_file() {
    let path = write_config(&config_toml(
        r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "welcome" } }
"#,
        "",
        "",
    ));
    let out = pivotd().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_config_names_every_problem_with_its_key() {
    let path = write_config(
        r#"
[sip]
udp = ["not an address"]
[media]
port_min = 30000
port_max = 20000
[[accounts]]
id = "a1"
realm = "x.test"
[[accounts.callflows]]
numbers = ["1"]
flow = { module = "no_such_module" }
[[accounts.callflows]]
numbers = ["2"]
flow = { module = "play", data = { id = "no-such-prompt" } }
"#,
    );
    let out = pivotd().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "sip.udp",
        "media.port_min",
        "accounts[0].callflows[0].flow",
        "accounts[0].callflows[1].flow.data.id",
    ] {
        assert!(err.contains(key), "no problem reported for {key}:\n{err}");
    }
    assert!(err.contains("no_such_module"), "{err}");
}

#[test]
fn a_listen_address_in_use_is_one_clear_line_not_a_panic() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = write_config(&format!(
        "[sip]\nudp = [\"{addr}\"]\ntcp = []\n[media]\nport_min = 31000\nport_max = 31099\n"
    ));
    let out = pivotd().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&addr.to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("cannot listen on udp"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unreadable_media_dir_is_reported_at_start() {
    let path = write_config(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[media]\ndir = \"/nonexistent/prompts\"\n",
    );
    let out = pivotd().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("media.dir"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Starts the binary on ephemeral ports and returns it with its UDP address.
fn spawn(config: &str) -> (std::process::Child, SocketAddr) {
    let path = write_config(config);
    let mut child = pivotd()
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let udp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp="))
        .and_then(|a| a.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ready line: {line:?}"));
    (child, udp)
}

fn invite(local: SocketAddr, number: &str, call_id: &str, rtp_port: u16) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    format!(
        "INVITE sip:{number}@pivotd.test SIP/2.0\r\n\
Via: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
From: <sip:caller@127.0.0.1>;tag=f{call_id}\r\n\
To: <sip:{number}@pivotd.test>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:caller@{local}>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[tokio::test]
async fn sigterm_refuses_new_calls_then_ends_live_ones_after_the_grace_and_exits_0() {
    let (mut child, udp) = spawn(&config_toml(
        r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "sleep", data = { duration = 30 }, children = { _ = { module = "hangup" } } }
[[accounts.callflows]]
numbers = ["5001"]
flow = { module = "play", data = { id = "welcome", answer = true }, children = { _ = { module = "sleep", data = { duration = 30 } } } }
"#,
        "shutdown_grace_s = 2",
        "rtp_timeout_s = 0",
    ));
    let sink = RtpSink::bind().await;
    let mut caller = RawSip::udp(udp).await;
    let local = caller.local();
    caller
        .send(invite(local, "5001", "live-call", sink.addr.port()).as_bytes())
        .await;
    let ok = caller
        .expect("200 OK", 5000)
        .await
        .expect("the live call is answered");
    let to = header(&ok, "To").unwrap();
    let ack = format!(
        "ACK sip:5001@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKack1;rport\r\n\
From: <sip:caller@127.0.0.1>;tag=flive-call\r\nTo: {to}\r\nCall-ID: live-call\r\nCSeq: 1 ACK\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send(ack.as_bytes()).await;

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // During the grace period a new INVITE is refused with 503.
    let mut second = RawSip::udp(udp).await;
    let l2 = second.local();
    second
        .send(invite(l2, "5000", "new-call", 9).as_bytes())
        .await;
    let refused = second
        .expect("SIP/2.0 5", 3000)
        .await
        .expect("new INVITE answered");
    assert_eq!(status(&refused), 503, "{refused}");
    assert!(header(&refused, "Retry-After").is_some());

    // After the grace, the live call gets a BYE.
    let bye = caller
        .expect("BYE ", 6000)
        .await
        .expect("BYE after the grace period");
    assert!(bye.contains("Call-ID: live-call"));
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pivotd did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit status {code:?}");
}

#[test]
fn the_example_config_is_valid() {
    let path = repo().join("examples").join("pivotd.toml");
    let out = pivotd().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_pivot_example_config_is_valid() {
    let path = repo().join("examples").join("pivot.toml");
    let out = pivotd().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
