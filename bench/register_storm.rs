//! A REGISTER storm beside calls: SIPp registers with digest authentication at RATE per second
//! while a UDP caller places calls at 50 per second; prints the registrations sustained and
//! INVITE -> 200 OK before and during the storm, compared as ratios in one run.
//!
//! cargo bench --bench register_storm -- [RATE] [SECONDS]
//!
//! SIPp shares the machine's cores with pivotd: on 2 cores the storm's own CPU is part of what
//! the calls feel.

#[path = "calls_common.rs"]
mod calls_common;

use std::sync::Arc;
use std::time::Instant;

use calls_common::{place, stats};
use pivotd::config::Config;

const CALL_RATE: u32 = 50;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("register_storm: a benchmark; run it with cargo bench --bench register_storm");
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rate: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seconds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let toml = r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = []
max_calls_per_second = 100000
# SIPp and the caller are load generators: trusted, held to the global limits only.
trusted_sources = ["127.0.0.1"]
# The calls come from the load generator, not a device.
allow_unauthenticated = true
register_max_contacts = 100
[api]
listen = "127.0.0.1:0"
[media]
port_min = 40000
port_max = 49999
rtp_timeout_s = 0
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "bench.test"
[[accounts.callflows]]
numbers = ["7000"]
flow = { module = "play", data = { id = "digit-1" }, children = { _ = { module = "hangup" } } }
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
"#;
    let cfg = Config::from_toml_str(toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("bench config");
    let server = pivotd::server::start(Arc::new(cfg)).await.expect("server");
    let addr = server.udp[0];
    place(addr, "7000", CALL_RATE, 50).await;
    let calls = CALL_RATE * seconds;
    let quiet = stats(place(addr, "7000", CALL_RATE, calls).await);

    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/sipp-scenarios/register.xml");
    let dir = std::env::temp_dir().join(format!("pivotd-register-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let total = (rate * seconds).to_string();
    // A port of its own: SIPp takes 5060 when it is free (and `-p 0` means the same).
    let sipp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
        .to_string();
    let storm = tokio::process::Command::new("timeout")
        .arg((seconds + 30).to_string())
        .args(["sipp", "-sf", scenario])
        .args(["-s", "2001", "-au", "2001", "-ap", "s3cret"])
        .args(["-key", "domain", "bench.test", "-key", "expires", "600"])
        .args(["-r", &rate.to_string(), "-m", &total, "-l", "2000"])
        .args([
            "-buff_size",
            "4194304",
            "-nostdin",
            "-trace_stat",
            "-fd",
            "1",
        ])
        .args(["-i", "127.0.0.1", "-p", &sipp_port])
        .arg(addr.to_string())
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let t0 = Instant::now();
    let (storm, during) = tokio::join!(storm, place(addr, "7000", CALL_RATE, calls));
    let during = stats(during);
    let elapsed = t0.elapsed().as_secs_f64();
    let out = storm.expect("run sipp");
    let auth = &server.registrar.authenticator().stats;
    let ok = auth.successes.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "REGISTER storm: {ok} authenticated REGISTERs in {elapsed:.1} s = {:.0}/s (asked {rate}/s; sipp exit {:?})",
        ok as f64 / elapsed,
        out.status.code()
    );
    println!("{CALL_RATE} calls/s, INVITE -> 200 OK in µs (n, mean, p50, p99)");
    println!(
        "quiet:       n={} mean={:.0} p50={:.0} p99={:.0}",
        quiet.0, quiet.1, quiet.2, quiet.3
    );
    println!(
        "during storm: n={} mean={:.0} p50={:.0} p99={:.0}",
        during.0, during.1, during.2, during.3
    );
    println!(
        "ratio during/quiet: mean {:.2}, p50 {:.2}, p99 {:.2}",
        during.1 / quiet.1,
        during.2 / quiet.2,
        during.3 / quiet.3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
