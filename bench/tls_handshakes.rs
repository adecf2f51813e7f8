//! TLS handshakes per second against pivotd's SIP TLS listener (issue 15): the built pivotd
//! (`target/release/pivotd`, or `PIVOTD_BIN`) on a port in 40000-59999, and C connectors
//! (tokio-rustls clients, session resumption off: every handshake is a full one, ECDHE with
//! pivotd's P-256 certificate) that connect, handshake, send a CRLF keep-alive ping and read
//! pivotd's pong (so pivotd's side of the handshake is done too), and close with a reset (no
//! TIME_WAIT left to exhaust the ephemeral ports), for SECONDS with TLS 1.3 then SECONDS with
//! TLS 1.2 (what SIPp 3.6.1 speaks). Prints handshakes/s, the client's time from connect to
//! pong (p50, p99) and pivotd's CPU per handshake, with the handshakes pivotd counted as
//! failed.
//!
//!   cargo bench --bench tls_handshakes [-- SECONDS [CONNECTORS]]   (default 5 s, 8)
//!
//! The connectors share the 2 cores with pivotd: the rate is the box's, and pivotd's CPU per
//! handshake is the figure that carries to a bigger one.

#[allow(dead_code)]
#[path = "flood_common.rs"]
mod flood_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio_rustls::TlsConnector;

use flood_common::TlsFiles;

/// What one phase measured.
struct Phase {
    handshakes: u64,
    errors: u64,
    seconds: f64,
    micros: Vec<u32>,
    cpu_seconds: f64,
    failed_in_pivotd: f64,
}

fn client_config(ca: &std::path::Path, version: &'static SupportedProtocolVersion) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("TLS version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A full handshake each time: no tickets, no session IDs offered.
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// One connector: handshakes until `until`; their durations (µs) and the errors.
async fn connector(target: SocketAddr, tls: TlsConnector, until: Instant) -> (Vec<u32>, u64) {
    let name = ServerName::try_from("localhost").expect("name");
    let (mut micros, mut errors) = (Vec::new(), 0);
    while Instant::now() < until {
        let start = Instant::now();
        let done = async {
            let tcp = TcpStream::connect(target).await?;
            tcp.set_nodelay(true)?;
            // Closed with a reset: the client side keeps no TIME_WAIT (a zero linger does
            // not block on drop).
            socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO))?;
            let mut stream = tls.connect(name.clone(), tcp).await?;
            // A TLS 1.3 client is done before pivotd has read its Finished: a CRLF ping
            // answered (RFC 5626 keep-alive) shows pivotd's side of the handshake complete.
            stream.write_all(b"\r\n\r\n").await?;
            let mut pong = [0u8; 2];
            stream.read_exact(&mut pong).await?;
            Ok::<_, std::io::Error>(pong == *b"\r\n")
        };
        match tokio::time::timeout(Duration::from_secs(5), done).await {
            Ok(Ok(true)) => {
                micros.push(start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
            }
            _ => errors += 1,
        }
    }
    (micros, errors)
}

async fn phase(
    target: SocketAddr,
    api: SocketAddr,
    pid: u32,
    config: ClientConfig,
    connectors: usize,
    seconds: u64,
) -> Phase {
    let tls = TlsConnector::from(Arc::new(config));
    let failed0 = failed(api);
    let cpu0 = flood_common::cpu_seconds(pid);
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connectors)
        .map(|_| tokio::spawn(connector(target, tls.clone(), until)))
        .collect();
    let (mut micros, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (m, e) = t.await.expect("connector");
        micros.extend(m);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = flood_common::cpu_seconds(pid) - cpu0;
    micros.sort_unstable();
    Phase {
        handshakes: micros.len() as u64,
        errors,
        seconds,
        micros,
        cpu_seconds,
        failed_in_pivotd: failed(api) - failed0,
    }
}

fn failed(api: SocketAddr) -> f64 {
    flood_common::metric(api, "pivotd_sip_tls_handshakes_failed_total").unwrap_or(f64::NAN)
}

fn quantile(v: &[u32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    f64::from(v[i]) / 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("tls_handshakes: a benchmark; run it with cargo bench --bench tls_handshakes");
        return;
    }
    let nums: Vec<u64> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let seconds = nums.first().copied().unwrap_or(5).clamp(1, 30);
    let connectors = nums.get(1).copied().unwrap_or(8).clamp(1, 256) as usize;

    let dir = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/bench-tls-handshakes"
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let files = TlsFiles::make(&dir);
    let port = flood_common::free_tcp_port(40000, 59999);
    // The connectors are a load generator: trusted, held to the global limits only.
    let sip = format!(
        "{}\ntrusted_sources = [\"127.0.0.1\"]",
        files.sip_keys(port)
    );
    let config = flood_common::write_config(&dir, &sip, flood_common::MEDIA_PORTS, "", "");
    let (mut child, _udp, api) = flood_common::start(&config);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = child.id();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tls_handshakes: {connectors} connectors, {seconds} s per version, pivotd {target}; load {}",
        load.trim()
    );
    println!("| version | handshakes/s | client p50 | client p99 | pivotd CPU per handshake | errors (client / pivotd) |");
    println!("|---|---|---|---|---|---|");
    for (name, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let p = phase(
            target,
            api,
            pid,
            client_config(&files.ca, version),
            connectors,
            seconds,
        )
        .await;
        let per_s = p.handshakes as f64 / p.seconds;
        let cpu_us = if p.handshakes > 0 {
            p.cpu_seconds * 1e6 / p.handshakes as f64
        } else {
            f64::NAN
        };
        println!(
            "| {name} | {per_s:.0} | {:.2} ms | {:.2} ms | {cpu_us:.0} µs | {} / {} |",
            quantile(&p.micros, 0.5),
            quantile(&p.micros, 0.99),
            p.errors,
            p.failed_in_pivotd
        );
        // Let pivotd close the last connections before the next phase.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
