//! What the benches that run the built pivotd share (the floods, bridge_relay): the binary
//! started on loopback with a config of their own, its /metrics, and the flood's INVITE.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The benches' RTP ports: away from the tests' 20000-29999 (a bench run beside `cargo test`
/// must not take their ports) and from the 40000-49999 of setup_latency, register_storm and
/// the Asterisk of asterisk_dial.sh.
pub const MEDIA_PORTS: (u16, u16) = (50000, 59999);

/// Writes `pivotd.toml` into `dir`: SIP on an ephemeral UDP port, the API on another, an
/// in-memory store, the shipped prompts, RTP ports `media_ports` (MIN, MAX), one account
/// (realm `bench.test`) with `callflows`; `sip_extra` and `media_extra` are added to their
/// sections.
pub fn write_config(
    dir: &Path,
    sip_extra: &str,
    media_ports: (u16, u16),
    media_extra: &str,
    callflows: &str,
) -> PathBuf {
    write_config_parts(
        dir,
        &ConfigParts {
            sip_extra,
            media_ports,
            media_extra,
            callflows,
            ..ConfigParts::default()
        },
    )
}

/// What a bench sets in [`write_config_parts`]'s configuration.
#[derive(Default)]
pub struct ConfigParts<'a> {
    pub sip_extra: &'a str,
    pub media_ports: (u16, u16),
    pub media_extra: &'a str,
    pub callflows: &'a str,
    /// The prompts' directory; None: the shipped prompts (the repo's `media/`).
    pub media_dir: Option<&'a Path>,
    /// Whole sections (e.g. `[pivot]`) before the account.
    pub sections: &'a str,
    /// RTP's address; None: 127.0.0.1 (another loopback address gives a bench a port range
    /// of its own beside other runs on 127.0.0.1).
    pub media_ip: Option<&'a str>,
}

/// Writes `pivotd.toml` into `dir` (see [`write_config`]) from `parts`.
pub fn write_config_parts(dir: &Path, parts: &ConfigParts) -> PathBuf {
    let shipped = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/media"));
    let media = parts.media_dir.unwrap_or(shipped).display();
    let ConfigParts {
        sip_extra,
        media_ports: (port_min, port_max),
        media_extra,
        callflows,
        sections,
        ..
    } = parts;
    let media_ip = parts.media_ip.unwrap_or("127.0.0.1");
    let text = format!(
        r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = []
{sip_extra}
[api]
listen = "127.0.0.1:0"
[store]
sqlite = ":memory:"
[media]
dir = "{media}"
ip = "{media_ip}"
port_min = {port_min}
port_max = {port_max}
{media_extra}
{sections}
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "bench.test"
{callflows}
"#
    );
    let path = dir.join("pivotd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The TLS files of a bench (made with the openssl CLI, P-256): a CA, and a certificate it
/// signed for `localhost` and 127.0.0.1 with its key, which pivotd's TLS listener presents
/// (and SIPp too: it loads one even as a client).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes them in `dir` (`ca.pem`, `tls.pem`, `tls.key`).
    pub fn make(dir: &Path) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("TLS directory");
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(["req", "-x509", "-days", "2"])
                .args(key)
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl is missing (apt-get install openssl): {e}"));
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=bench-ca",
        ]);
        openssl(&[
            "-keyout",
            "tls.key",
            "-out",
            "tls.pem",
            "-subj",
            "/CN=localhost",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("tls.pem"),
            key: dir.join("tls.key"),
        }
    }

    /// `[sip]` keys of a TLS listener on `port` presenting these files. pivotd's ready line
    /// names no TLS address, so the bench chooses the port ([`free_tcp_port`]).
    pub fn sip_keys(&self, port: u16) -> String {
        format!(
            "tls = [\"127.0.0.1:{port}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A TCP port on 127.0.0.1 in `lo..=hi` that is free now.
pub fn free_tcp_port(lo: u16, hi: u16) -> u16 {
    for _ in 0..200 {
        let port = lo + rand::random::<u16>() % (hi - lo + 1);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {lo}-{hi}")
}

/// Starts the built pivotd; returns it with its SIP UDP and API addresses from the ready line.
pub fn start(config: &Path) -> (Child, SocketAddr, SocketAddr) {
    // PIVOTD_BIN: another build (say, main's before a change) for a before/after in one run.
    let bin = std::env::var_os("PIVOTD_BIN")
        .unwrap_or_else(|| std::ffi::OsString::from(env!("CARGO_BIN_EXE_pivotd")));
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pivotd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let addr = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|a| a.split(',').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let (udp, api) = (addr("udp="), addr("api="));
    (child, udp, api)
}

/// An INVITE from `from` to `number` (Call-ID `id`) whose PCMU offer sends media to `rtp`.
pub fn invite(from: SocketAddr, number: &str, id: &str, rtp: SocketAddr) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    );
    format!(
        "INVITE sip:{number}@bench.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{id};rport\r\n\
From: <sip:b@{from}>;tag=f{id}\r\nTo: <sip:{number}@bench.test>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:b@{from}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// The sum of the samples of /metrics whose line starts with `name` (all label sets); None
/// when /metrics could not be read or has no such sample.
pub fn metric(api: SocketAddr, name: &str) -> Option<f64> {
    samples(api, name, &[])
        .filter(|v| !v.is_empty())
        .map(|v| v.iter().sum())
}

/// The sum of the samples of `name` whose label set holds every `key="value"` of `labels`;
/// 0 when there is none (pivotd lists only the counters above 0 of a labelled family), None
/// when /metrics could not be read.
pub fn metric_labelled(api: SocketAddr, name: &str, labels: &[&str]) -> Option<f64> {
    samples(api, name, labels).map(|v| v.iter().sum())
}

/// The values of the samples of `name` in /metrics whose label set holds all of `labels`
/// (every sample when `labels` is empty); None when /metrics could not be read.
fn samples(api: SocketAddr, name: &str, labels: &[&str]) -> Option<Vec<f64>> {
    Some(samples_in(&metrics_text(api)?, name, labels))
}

/// pivotd's /metrics page (one request), None when it could not be read.
pub fn metrics_text(api: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(api).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// The values of the samples of `name` in a /metrics page whose label set holds all of
/// `labels` (every sample when `labels` is empty).
pub fn samples_in(text: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    text.lines()
        .filter(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            if rest.starts_with(' ') {
                return labels.is_empty();
            }
            let Some((set, _)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
                return false;
            };
            labels.iter().all(|want| set.split(',').any(|l| l == *want))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// One request to the API (HTTP/1.1, `Connection: close`): the status and the body.
pub fn api_request(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(api).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("X-Auth-Token: {t}\r\n"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A token for the account whose `api_key` is `key` (`PUT /v2/api_auth`).
pub fn api_token(api: SocketAddr, key: &str) -> String {
    let (status, body) = api_request(
        api,
        "PUT",
        "/v2/api_auth",
        None,
        Some(&format!(r#"{{"data": {{"api_key": "{key}"}}}}"#)),
    );
    assert_eq!(status, 201, "api_auth: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("api_auth answer");
    v["auth_token"].as_str().expect("a token").to_string()
}

/// A request in the dialog of [`invite`]'s INVITE `id` sent from `from` (the same From and
/// Call-ID): `method` to `uri` with CSeq `cseq`, Via branch `z9hG4bK{branch}`, `to` the To
/// header of pivotd's answer (with its tag). An ACK of a 2xx takes a branch of its own, the
/// ACK of a non-2xx the INVITE's (`id`), RFC 3261 §17.1.1.3.
pub fn in_dialog(
    method: &str,
    uri: &str,
    from: SocketAddr,
    id: &str,
    to: &str,
    cseq: u32,
    branch: &str,
) -> Vec<u8> {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch};rport\r\n\
From: <sip:b@{from}>;tag=f{id}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM); 0 when it cannot be read.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The CPU time (user + system) in seconds of process `pid`, all its threads, from
/// /proc/PID/stat (in clock ticks: 10 ms steps).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces; after it come field 3
    // (state) onwards, so utime (14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no field {} in /proc/{pid}/stat", i + 3))
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Datagrams the kernel dropped for each UDP socket bound to one of `addrs` (or to 0.0.0.0
/// on its port) because its receive buffer was full: the `drops` column of /proc/net/udp,
/// which lists every socket of the network namespace, another process's too (None when not
/// found). The table is read once for all of `addrs`.
pub fn udp_drops(addrs: &[SocketAddr]) -> Vec<Option<u64>> {
    let table = std::fs::read_to_string("/proc/self/net/udp").unwrap_or_default();
    // local address column -> drops; the kernel prints the address as the in-memory u32
    // (little-endian here) and the port, both in hex.
    let drops: std::collections::HashMap<&str, u64> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.get(1)?, f.last()?.parse().ok()?))
        })
        .collect();
    let key = |ip: [u8; 4], port: u16| format!("{:08X}:{:04X}", u32::from_le_bytes(ip), port);
    addrs
        .iter()
        .map(|addr| {
            let SocketAddr::V4(a) = addr else {
                return None;
            };
            drops
                .get(key(a.ip().octets(), a.port()).as_str())
                .or_else(|| drops.get(key([0; 4], a.port()).as_str()))
                .copied()
        })
        .collect()
}
