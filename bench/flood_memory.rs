//! Does pivotd give memory back after a flood?
//!
//! Starts the built pivotd binary (so its global allocator is the one measured) on loopback,
//! reads its RSS from /proc/PID/status idle, floods it from one 127.0.0.1 socket with INVITEs
//! to a number that answers (RATE/s for SECONDS s, never acknowledged, never answered) plus
//! garbage datagrams, reads RSS right after, waits until /metrics shows no call, transaction or
//! dialog left, waits SETTLE seconds more and reads RSS again. Prints figures; asserts nothing.
//!
//! cargo bench --bench flood_memory -- [RATE] [SECONDS] [SETTLE]   (defaults 3000 2 10)

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// Garbage datagrams sent per INVITE: a scanner's noise beside the calls.
const GARBAGE_PER_INVITE: usize = 1;
/// Longest wait for the server to finish the flood's calls and transactions (64·T1 = 32 s
/// for the unacknowledged 2xx and unanswered BYEs, plus slack).
const QUIET_TIMEOUT: Duration = Duration::from_secs(120);

#[allow(dead_code)]
#[path = "flood_common.rs"]
mod flood_common;
use flood_common::{invite, metric, start, status_kb, write_config, MEDIA_PORTS};

/// The worst case for memory: the flooding address is trusted, so the per-source limits do
/// not turn the flood away and every INVITE becomes a transaction (most become calls).
const SIP: &str = r#"max_calls_per_second = 100000
trusted_sources = ["127.0.0.1"]"#;
const CALLFLOWS: &str = r#"
[[accounts.callflows]]
numbers = ["7000"]
flow = { module = "play", data = { id = "digit-1", answer = true }, children = { _ = { module = "hangup" } } }
"#;

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Calls, transactions and dialogs still alive (None if /metrics did not answer).
fn live(api: SocketAddr) -> Option<f64> {
    Some(
        metric(api, "pivotd_calls_active")?
            + metric(api, "pivotd_sip_transactions").unwrap_or(0.0)
            + metric(api, "pivotd_sip_dialogs")?,
    )
}

/// Sends `rate`/s INVITEs for `secs` seconds from one socket, in 10 ms slices, with garbage
/// between them; reads nothing back (an attacker does not).
fn flood(server: SocketAddr, rate: u32, secs: u32) -> (u32, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("flood socket");
    // Where the SDP points: bound so the RTP sent there is not met by ICMP, never read.
    let rtp_sink = UdpSocket::bind("127.0.0.1:0").expect("rtp sink");
    let rtp = rtp_sink.local_addr().expect("sink addr");
    let local = sock.local_addr().expect("local");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let slices = secs * 100;
    let started = Instant::now();
    let (mut invites, mut garbage) = (0u32, 0usize);
    for slice in 0..slices {
        let due = (u64::from(rate) * u64::from(slice + 1) / 100) as u32;
        while invites < due {
            let _ = sock.send_to(
                &invite(local, "7000", &format!("flood-{invites}"), rtp),
                server,
            );
            invites += 1;
            for _ in 0..GARBAGE_PER_INVITE {
                let len = rng.gen_range(1..1400);
                let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let _ = sock.send_to(&bytes, server);
                garbage += 1;
            }
        }
        let next = started + Duration::from_millis(10 * u64::from(slice + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    drop(rtp_sink);
    (invites, garbage)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and a measurement is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flood_memory: a benchmark; run it with cargo bench --bench flood_memory");
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (rate, secs, settle) = (arg(1, 3000), arg(2, 2).min(10), arg(3, 10));

    let dir = std::env::temp_dir().join(format!("pivotd-flood-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mut child, udp, api) = start(&write_config(
        &dir,
        SIP,
        MEDIA_PORTS,
        "rtp_timeout_s = 0",
        CALLFLOWS,
    ));
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(1));
    let idle = status_kb(pid, "VmRSS");

    let t0 = Instant::now();
    let (invites, garbage) = flood(udp, rate, secs);
    let flood_s = t0.elapsed().as_secs_f64();
    let after = status_kb(pid, "VmRSS");
    let admitted = metric(api, "pivotd_calls_total").unwrap_or(0.0);

    let quiet_from = Instant::now();
    let mut quiet = false;
    let mut peak = after;
    while quiet_from.elapsed() < QUIET_TIMEOUT {
        peak = peak.max(status_kb(pid, "VmRSS"));
        if live(api) == Some(0.0) {
            quiet = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let quiet_s = quiet_from.elapsed().as_secs_f64();
    let at_quiet = status_kb(pid, "VmRSS");
    std::thread::sleep(Duration::from_secs(u64::from(settle)));
    let settled = status_kb(pid, "VmRSS");
    let hwm = status_kb(pid, "VmHWM");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "flood: {invites} INVITEs ({rate}/s for {secs} s, sent in {flood_s:.1} s) + {garbage} \
         garbage datagrams from one 127.0.0.1 socket; {admitted} calls admitted"
    );
    println!("RSS idle:                      {:7.1} MB", mb(idle));
    println!(
        "RSS right after the flood:     {:7.1} MB (highest seen while draining {:.1} MB, VmHWM {:.1} MB)",
        mb(after),
        mb(peak),
        mb(hwm)
    );
    if quiet {
        println!(
            "no call, transaction or dialog left after {quiet_s:.1} s: RSS {:.1} MB",
            mb(at_quiet)
        );
    } else {
        println!(
            "still busy after {quiet_s:.0} s (RSS {:.1} MB): the settle figure is not idle",
            mb(at_quiet)
        );
    }
    println!(
        "RSS {settle} s after that:          {:7.1} MB; after/idle = {:.2}",
        mb(settled),
        settled as f64 / idle.max(1) as f64
    );
}
