//! The binary's contract: check-config, start-up errors in one clear line, and SIGTERM with a
//! grace period (new INVITEs 503, live calls BYE after the grace, exit 0).

mod common;

use common::binary::{pivotd, spawn_config, write_config};
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

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
fn zero_udp_readers_is_refused_with_its_key_and_range() {
    let path = write_config("[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\nudp_readers = 0\n");
    let out = pivotd().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sip.udp_readers") && err.contains("0 is out of range 1..=256"),
        "{err}"
    );
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
    let mut cmd = pivotd();
    cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
    spawn_with(cmd, config)
}

/// `spawn` with the command given (the binary itself, or a wrapper such as prlimit), whose
/// environment and stderr the caller sets.
fn spawn_with(cmd: Command, config: &str) -> (std::process::Child, SocketAddr) {
    spawn_config(cmd, &write_config(config))
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
fn the_office_example_config_is_valid() {
    let path = repo().join("examples").join("office.toml");
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

/// A limit from /proc/PID/limits: (soft, hard) of the "Max open files" line.
fn open_files_limits(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open files line in\n{text}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn start_raises_the_soft_open_files_limit_to_the_hard_one() {
    // Our own hard limit: raising it needs CAP_SYS_RESOURCE, which a container's root may lack.
    let hard = open_files_limits("self").1;
    assert!(hard > 1024, "needs a hard open-files limit above 1024");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile=1024:{hard}"))
        .arg(env!("CARGO_BIN_EXE_pivotd"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let (mut child, _udp) = spawn_with(cmd, &config_toml("", "", ""));
    // prlimit execs pivotd: the child's pid is pivotd's.
    let limits = open_files_limits(&child.id().to_string());
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(limits, (hard, hard), "soft limit not raised");
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("open-files limit"))
        .unwrap_or_else(|| panic!("no open-files line at INFO:\n{log}"));
    assert!(
        line.contains("soft 1024") && line.contains(&format!("soft {hard}")),
        "{line}"
    );
}

#[test]
fn check_config_warns_when_max_calls_need_more_descriptors_than_the_hard_limit() {
    let text = |max_calls: u32| {
        format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\nmax_calls = {max_calls}\n\
             [media]\nport_min = 30000\nport_max = 39999\n"
        )
    };
    let check = |path: &std::path::Path| {
        Command::new("prlimit")
            .arg("--nofile=256:256")
            .arg(env!("CARGO_BIN_EXE_pivotd"))
            .arg("check-config")
            .arg(path)
            .output()
            .unwrap()
    };
    let busy = write_config(&text(1000));
    let out = check(&busy);
    let err = String::from_utf8_lossy(&out.stderr);
    // A warning, not a problem: the file is valid and may run elsewhere.
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    let needed =
        pivotd::fdlimit::Budget::for_config(&pivotd::callflow::check::load(&busy).unwrap())
            .needed()
            .to_string();
    for part in [
        "warning",
        "(256)",
        "1000 concurrent calls",
        &format!("{needed} descriptors"),
        &format!("LimitNOFILE={needed}"),
        &format!("ulimit -n {needed}"),
        "[sip] max_calls",
    ] {
        assert!(err.contains(part), "no {part:?} in:\n{err}");
    }

    let small = write_config(&text(10));
    let out = check(&small);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
