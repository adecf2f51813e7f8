//! What a pivot round trip adds to call set-up, at a steady call rate.
//!
//! Runs pivotd in-process on loopback with two numbers: 7000 answers and plays a prompt
//! directly, 7001 first asks a local web server (keep-alive HTTP/1.1) whose answer is the
//! same flow. A UDP caller places CALLS calls at RATE per second to each and measures
//! INVITE -> 200 OK with a monotonic clock; the difference of the two is the pivot cost.
//!
//! cargo bench --bench setup_latency -- [RATE] [CALLS]

#[path = "calls_common.rs"]
mod calls_common;
#[path = "../tests/common/http.rs"]
mod http;

use std::sync::Arc;

use calls_common::{place, stats};
use http::{HttpResp, HttpServer};
use pivotd::config::Config;

const FLOW: &str =
    r#"{"module": "play", "data": {"id": "digit-1"}, "children": {"_": {"module": "hangup"}}}"#;

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and a measurement is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("setup_latency: a benchmark; run it with cargo bench --bench setup_latency");
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rate: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let calls: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let web = HttpServer::start(|_| HttpResp::json(FLOW)).await;
    let toml = format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = []
max_calls_per_second = 100000
# The bench is a load generator: trusted, held to the global limits only.
trusted_sources = ["127.0.0.1"]
[api]
listen = "127.0.0.1:0"
[media]
port_min = 40000
port_max = 49999
rtp_timeout_s = 0
[pivot]
blacklist_cidrs = []
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "bench.test"
[[accounts.callflows]]
numbers = ["7000"]
flow = '{FLOW}'
[[accounts.callflows]]
numbers = ["7001"]
flow = {{ module = "pivot", data = {{ voice_url = "{}" }} }}
"#,
        web.url("/ivr")
    );
    let cfg = Config::from_toml_str(&toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("bench config");
    let server = pivotd::server::start(Arc::new(cfg)).await.expect("server");
    let addr = server.udp[0];
    // Warm up both paths (connection to the web server, prompt cache).
    place(addr, "7001", 50, 20).await;
    place(addr, "7000", 50, 20).await;
    let direct = stats(place(addr, "7000", rate, calls).await);
    let pivot = stats(place(addr, "7001", rate, calls).await);
    println!(
        "{calls} calls at {rate}/s to each number; INVITE -> 200 OK in µs (n, mean, p50, p99)"
    );
    println!(
        "direct:    n={} mean={:.0} p50={:.0} p99={:.0}",
        direct.0, direct.1, direct.2, direct.3
    );
    println!(
        "via pivot: n={} mean={:.0} p50={:.0} p99={:.0}",
        pivot.0, pivot.1, pivot.2, pivot.3
    );
    println!(
        "a pivot round trip adds {:.3} ms (mean), {:.3} ms (p50); web server connections: {}",
        (pivot.1 - direct.1) / 1000.0,
        (pivot.2 - direct.2) / 1000.0,
        web.connections.load(std::sync::atomic::Ordering::SeqCst)
    );
}
