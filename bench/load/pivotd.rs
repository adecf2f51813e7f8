//! The pivotd under load: the built binary in a child process (`flood_common::start`) with
//! a configuration of the harness's own, and the 1 s prompt it plays.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;

use crate::flood_common;

/// Scenario A's number: answer, play the 1 s prompt, hang up (BYE from pivotd).
pub const NUMBER_STATIC: &str = "7000";
/// Scenario P's number: a pivot node asking the harness's web server.
pub const NUMBER_PIVOT: &str = "7001";
/// What A runs and what P's web server answers: the same flow.
pub const FLOW: &str =
    r#"{"module": "play", "data": {"id": "bench-1s"}, "children": {"_": {"module": "hangup"}}}"#;

/// The reasons of `pivotd_sip_overload_503_total` (README, "Health and metrics").
const OVERLOAD_REASONS: [&str; 8] = [
    "load",
    "queue_full",
    "max_calls",
    "call_rate",
    "source_calls",
    "source_call_rate",
    "source_table_full",
    "media_ports",
];

/// The counts of `after` minus those of `before`, the non-zero ones.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Writes `bench-1s.wav` into `dir`: 1 s of a 440 Hz tone, 8 kHz mono 16-bit PCM (the
/// format pivotd uses as it is).
pub fn write_prompt(dir: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.join("bench-1s.wav"), spec).expect("write prompt");
    for i in 0..8000 {
        let t = i as f64 / 8000.0;
        let s = (t * 440.0 * std::f64::consts::TAU).sin() * 16000.0;
        w.write_sample(s as i16).expect("write prompt");
    }
    w.finalize().expect("write prompt");
}

/// What the harness sets in pivotd's configuration.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub web: SocketAddr,
    pub media_ports: (u16, u16),
    pub max_calls_per_second: u32,
    /// A TLS listener presenting these (callers then dial it: `Pivotd::sip`).
    pub tls: Option<&'a flood_common::TlsFiles>,
}

/// A running pivotd: the child, the SIP address callers dial (UDP, or TLS with
/// `Setup::tls`), its API.
pub struct Pivotd {
    pub child: Child,
    pub sip: SocketAddr,
    pub api: SocketAddr,
}

impl Pivotd {
    /// Writes the configuration into `setup.dir` and starts the built pivotd with it.
    pub fn start(setup: &Setup) -> Pivotd {
        let Setup {
            dir,
            web,
            media_ports: (port_min, port_max),
            max_calls_per_second,
            tls,
        } = setup;
        // Limits high enough not to be what is measured: the load generator is trusted (no
        // per-source limits), and the global static ones are far above any offered rate, so
        // overload shows as pivotd's own behaviour.
        let mut sip_extra = format!(
            "trusted_sources = [\"127.0.0.1\"]\nmax_calls = 1000000\n\
             max_calls_per_second = {max_calls_per_second}\nudp_receive_buffer_bytes = 4194304"
        );
        // Away from SIPp's ports (base..base+55) and the RTP ports.
        let tls_port = tls.map(|_| flood_common::free_tcp_port(60000, 60999));
        if let (Some(files), Some(port)) = (tls, tls_port) {
            sip_extra = format!("{sip_extra}\n{}", files.sip_keys(port));
        }
        let callflows = format!(
            r#"[[accounts.callflows]]
numbers = ["{NUMBER_STATIC}"]
flow = '{FLOW}'
[[accounts.callflows]]
numbers = ["{NUMBER_PIVOT}"]
flow = {{ module = "pivot", data = {{ voice_url = "http://{web}/ivr" }} }}"#
        );
        let path = flood_common::write_config_parts(
            dir,
            &flood_common::ConfigParts {
                sip_extra: &sip_extra,
                media_ports: (*port_min, *port_max),
                // SIPp sends no RTP.
                media_extra: "rtp_timeout_s = 0",
                callflows: &callflows,
                // The generated 1 s prompt.
                media_dir: Some(dir),
                // The web server is on loopback.
                sections: "[pivot]\nblacklist_cidrs = []",
                media_ip: None,
            },
        );
        let (child, udp, api) = flood_common::start(&path);
        let sip = tls_port.map_or(udp, |port| SocketAddr::from(([127, 0, 0, 1], port)));
        Pivotd { child, sip, api }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `pivotd_calls_active`; None when /metrics did not answer.
    pub fn live_calls(&self) -> Option<u64> {
        flood_common::metric(self.api, "pivotd_calls_active").map(|v| v as u64)
    }

    /// 503s pivotd sent for overload (`pivotd_sip_overload_503_total`), by reason, the
    /// non-zero ones; None when /metrics did not answer.
    pub fn overload_503s(&self) -> Option<BTreeMap<String, u64>> {
        let mut by_reason = BTreeMap::new();
        for reason in OVERLOAD_REASONS {
            let label = format!("reason=\"{reason}\"");
            let n = flood_common::metric_labelled(
                self.api,
                "pivotd_sip_overload_503_total",
                &[label.as_str()],
            )? as u64;
            if n > 0 {
                by_reason.insert(reason.to_string(), n);
            }
        }
        Some(by_reason)
    }

    /// Waits (at most `limit`) until pivotd holds no call.
    pub fn drain(&self, limit: std::time::Duration) {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if self.live_calls() == Some(0) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Pivotd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pivotd's histogram of pivot round trips (`pivotd_pivot_request_seconds_bucket`, every
/// outcome summed): (upper bound in seconds, cumulative count) per bound, `+Inf` last; None
/// when /metrics could not be read.
pub fn pivot_round_trips(api: SocketAddr) -> Option<Vec<(f64, u64)>> {
    let page = flood_common::metrics_text(api)?;
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("pivotd_pivot_request_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\"")?.strip_suffix('"'));
        let le = match le {
            Some("+Inf") => f64::INFINITY,
            Some(v) => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
            None => continue,
        };
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        match buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += n as u64,
            None => buckets.push((le, n as u64)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(buckets)
}

/// The bucket bound (ms) under which `q` of the round trips between two readings of
/// [`pivot_round_trips`] fell; None when none happened in between.
pub fn round_trip_quantile_ms(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let count = |h: &[(f64, u64)], le: f64| h.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
    let total = after
        .last()?
        .1
        .saturating_sub(before.last().map_or(0, |b| b.1));
    if total == 0 {
        return None;
    }
    after
        .iter()
        .find(|&&(le, n)| n.saturating_sub(count(before, le)) as f64 >= q * total as f64)
        .map(|&(le, _)| le * 1000.0)
}
