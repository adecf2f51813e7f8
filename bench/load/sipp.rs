//! Driving SIPp: one caller process per step (`bench/sipp/load_uac.xml`), the stand-in
//! server of scenario S (`bench/sipp/load_uas.xml`), and reading what SIPp wrote:
//! `-trace_stat` (its counters, the last row final), `-trace_counts` (per scenario message:
//! the 200s and 503s received, the BYEs answered), `-trace_rtt` (one INVITE -> 200 time per
//! call, 1 ms resolution) and `-trace_logs` (the time of each 503, ms since SIPp started).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procfs;

pub const UAC_XML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/sipp/load_uac.xml");
pub const UAS_XML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/sipp/load_uas.xml");

/// Socket buffers of every SIPp: above ~2,000 calls/s the kernel's default drops datagrams.
const BUFF_SIZE: &str = "4194304";

/// `-t u1` (one socket for all calls: one 5-tuple), `-t un` (a socket per call), or `-t l1`
/// (one TLS connection for all calls, to pivotd's TLS listener, with the TLS-capable SIPp).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Transport {
    #[serde(rename = "u1")]
    U1,
    #[serde(rename = "un")]
    Un,
    #[serde(rename = "l1")]
    L1,
}

/// Where scripts/sipp-tls.sh installs the TLS-capable SIPp (Debian's has no TLS);
/// `PIVOTD_SIPP_TLS` overrides it, as in the tests.
const SIPP_TLS: &str = "/usr/local/lib/pivotd-tests/sipp-tls/sipp";

/// The TLS files SIPp presents over `-t l1` (`flood_common::TlsFiles`, made by the harness).
pub const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-load/tls");

impl Transport {
    pub fn flag(self) -> &'static str {
        match self {
            Transport::U1 => "u1",
            Transport::Un => "un",
            Transport::L1 => "l1",
        }
    }

    /// The SIPp that speaks it.
    pub fn sipp(self) -> std::ffi::OsString {
        match self {
            Transport::L1 => std::env::var_os("PIVOTD_SIPP_TLS").unwrap_or_else(|| SIPP_TLS.into()),
            _ => "sipp".into(),
        }
    }

    /// `-t` and, over TLS, SIPp's certificate and TLS 1.2 (SIPp 3.6.1 stalls after a TLS 1.3
    /// handshake: it reads the server's session ticket on a blocking socket).
    pub fn args(self) -> Vec<String> {
        let mut args = vec!["-t".to_string(), self.flag().to_string()];
        if self == Transport::L1 {
            for a in ["-tls_version", "1.2", "-tls_cert"] {
                args.push(a.to_string());
            }
            args.push(format!("{TLS_DIR}/tls.pem"));
            args.push("-tls_key".to_string());
            args.push(format!("{TLS_DIR}/tls.key"));
        }
        args
    }

    /// How to install its SIPp.
    pub fn install(self) -> &'static str {
        match self {
            Transport::L1 => "run scripts/sipp-tls.sh",
            _ => "apt-get install sip-tester",
        }
    }
}

/// A SIPp process the harness started.
pub struct Sipp {
    pub pid: u32,
    pub started: Instant,
    /// Reaped by `wait` (wait4, for its rusage), not by std: dropping a Child never waits.
    _child: Child,
}

/// How a SIPp process ended.
pub struct Ended {
    /// Its exit code (SIPp: 0 all calls succeeded, 1 some failed); None when killed.
    pub code: Option<i32>,
    /// Its own CPU time (user + system, from wait4's rusage).
    pub cpu: Duration,
    pub wall: Duration,
}

/// A caller: `calls` calls to `number` at `target`, `rate` new calls per second.
pub struct Caller<'a> {
    pub dir: &'a Path,
    pub target: SocketAddr,
    pub number: &'a str,
    pub rate: u32,
    pub calls: u64,
    pub port: u16,
    pub media_port: u16,
    pub transport: Transport,
}

impl Caller<'_> {
    pub fn spawn(&self) -> Sipp {
        std::fs::create_dir_all(self.dir).expect("step directory");
        let calls = self.calls.to_string();
        let child = Command::new(self.transport.sipp())
            .current_dir(self.dir)
            .args(["-sf", UAC_XML, "-s", self.number, "-i", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .args(["-mp", &self.media_port.to_string()])
            .args(self.transport.args())
            // With a socket per call, SIPp refuses to start when its default of 50,000 sockets
            // exceeds the open-files limit; past this many it reuses the ones it has.
            .args(["-max_socket", "10000"])
            .args(["-r", &self.rate.to_string(), "-rp", "1000"])
            .args(["-m", &calls])
            // The limit of open calls must not throttle the offered rate.
            .args(["-l", &calls])
            .args(["-buff_size", BUFF_SIZE])
            // A call that gets no answer, or no BYE, fails after 10 s, not after Timer B.
            .args(["-recv_timeout", "10000"])
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-trace_counts"])
            .args(["-trace_rtt", "-rtt_freq", "1", "-trace_logs", "-trace_err"])
            .arg(self.target.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start sipp ({e}); {}", self.transport.install()));
        Sipp {
            pid: child.id(),
            started: Instant::now(),
            _child: child,
        }
    }
}

/// Scenario S's stand-in server on `port`: answers, waits 1 s, sends BYE.
pub fn spawn_standin(dir: &Path, port: u16, media_port: u16, transport: Transport) -> Sipp {
    std::fs::create_dir_all(dir).expect("step directory");
    // Over UDP it takes either caller (`u1`, `un`); over TLS it listens for one.
    let transport = if transport == Transport::L1 {
        transport
    } else {
        Transport::U1
    };
    let child = Command::new(transport.sipp())
        .current_dir(dir)
        .args(["-sf", UAS_XML, "-i", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
        .args(transport.args())
        .args([
            "-buff_size",
            BUFF_SIZE,
            "-nostdin",
            "-trace_stat",
            "-fd",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start sipp ({e}); {}", transport.install()));
    Sipp {
        pid: child.id(),
        started: Instant::now(),
        _child: child,
    }
}

impl Sipp {
    /// Waits for the process to end, killing it at `deadline`; reaps it with wait4 for its
    /// CPU time.
    pub fn wait(&self, deadline: Instant) -> Ended {
        let pid = self.pid as libc::pid_t;
        let mut killed = false;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let flags = if killed { 0 } else { libc::WNOHANG };
            // SAFETY: pid is our own child; status and usage point to live locals.
            let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            if r == pid {
                let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
                let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
                return Ended {
                    code,
                    cpu,
                    wall: self.started.elapsed(),
                };
            }
            if r < 0 {
                // Not our child any more (already reaped): nothing to measure.
                return Ended {
                    code: None,
                    cpu: Duration::ZERO,
                    wall: self.started.elapsed(),
                };
            }
            if Instant::now() >= deadline && !killed {
                self.kill();
                killed = true;
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL to this SIPp (by its pid: only the processes the harness started).
    pub fn kill(&self) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
        }
    }

    /// Its CPU ticks so far (the stand-in, read before it is stopped).
    pub fn cpu_ticks(&self) -> Option<u64> {
        procfs::cpu_ticks(self.pid)
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// What one caller process counted.
#[derive(Debug, Default, Serialize, Clone)]
pub struct CallerStats {
    /// INVITEs SIPp created (calls started).
    pub created: u64,
    /// 200 OKs to the INVITE received (calls accepted).
    pub answered: u64,
    /// 503s received (calls refused).
    pub refused_503: u64,
    /// BYEs from the server received and answered 200 (calls completed as intended).
    pub completed: u64,
    /// SIPp's failed calls, all reasons.
    pub failed: u64,
    /// SIPp's failed calls by its reason (its stat columns `Failed…`), the non-zero ones.
    pub failed_by_reason: BTreeMap<String, u64>,
    pub retransmissions: u64,
    pub dead_call_msgs: u64,
    pub out_of_call_msgs: u64,
    /// Seconds SIPp took to create all its calls (interpolated between its 1 s rows).
    pub creation_seconds: f64,
    /// INVITE -> 200 per answered call, ms (1 ms resolution). SIPp writes its samples every
    /// `-rtt_freq` calls and not at exit, so the harness asks for every one (costs SIPp no
    /// measurable CPU at 2,000 calls/s).
    #[serde(skip)]
    pub rtt_ms: Vec<u32>,
    pub rtt_samples: usize,
    /// Ms after SIPp started of each 503 received.
    #[serde(skip)]
    pub refused_at_ms: Vec<u64>,
    /// SIPp's first error line when it created no call (it could not start).
    pub sipp_error: Option<String>,
    /// Every second of SIPp's run, cumulative counts.
    pub series: Vec<Tick>,
}

/// One row of SIPp's `-trace_counts` file (written every second).
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Tick {
    /// Seconds since SIPp started.
    pub t: f64,
    pub invites: u64,
    pub answered: u64,
    pub refused_503: u64,
    pub byes: u64,
}

/// Reads the files a caller SIPp wrote in its directory.
pub fn caller_stats(dir: &Path) -> CallerStats {
    let mut s = CallerStats::default();
    if let Some(rows) = read_csv(dir, "_.csv") {
        if let Some(last) = rows.last() {
            s.created = last.get("OutgoingCall(C)").copied().unwrap_or(0.0) as u64;
            s.failed = last.get("FailedCall(C)").copied().unwrap_or(0.0) as u64;
            s.retransmissions = last.get("Retransmissions(C)").copied().unwrap_or(0.0) as u64;
            s.dead_call_msgs = last.get("DeadCallMsgs(C)").copied().unwrap_or(0.0) as u64;
            s.out_of_call_msgs = last.get("OutOfCallMsgs(C)").copied().unwrap_or(0.0) as u64;
            for (k, v) in last {
                let reason = k.strip_prefix("Failed").and_then(|r| r.strip_suffix("(C)"));
                if let Some(reason) = reason {
                    if reason != "Call" && *v > 0.0 {
                        s.failed_by_reason.insert(reason.to_string(), *v as u64);
                    }
                }
            }
        }
    }
    if let Some(rows) = read_csv(dir, "_counts.csv") {
        let col = |suffix: &str| -> Option<String> {
            rows.first()?
                .keys()
                .filter(|k| k.ends_with(suffix))
                .min_by_key(|k| {
                    k.split('_')
                        .next()
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or(u32::MAX)
                })
                .cloned()
        };
        let (c_inv, c_200, c_503, c_bye, c_ok) = (
            col("_INVITE_Sent"),
            col("_200_Recv"),
            col("_503_Recv"),
            col("_BYE_Recv"),
            col("_200_Sent"),
        );
        let get = |row: &BTreeMap<String, f64>, c: &Option<String>| -> u64 {
            c.as_ref().and_then(|c| row.get(c)).copied().unwrap_or(0.0) as u64
        };
        if let Some(last) = rows.last() {
            s.answered = get(last, &c_200);
            s.refused_503 = get(last, &c_503);
            s.completed = get(last, &c_ok);
        }
        s.series = rows
            .iter()
            .filter_map(|r| {
                Some(Tick {
                    t: *r.get("ElapsedTime")?,
                    invites: get(r, &c_inv),
                    answered: get(r, &c_200),
                    refused_503: get(r, &c_503),
                    byes: get(r, &c_bye),
                })
            })
            .collect();
    }
    s.creation_seconds = creation_seconds(&s.series, s.created);
    s.rtt_ms = read_rtt(dir);
    s.rtt_samples = s.rtt_ms.len();
    s.refused_at_ms = read_refused(dir);
    if s.created == 0 {
        s.sipp_error = find(dir, "_errors.log")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| {
                let line = t.lines().find(|l| l.contains(": "))?;
                Some(line.split_once(": ")?.1.to_string())
            });
    }
    s
}

/// When SIPp's INVITE counter reached `total`: interpolated between the two rows around it
/// (the counts file's times have µs; the stat file's only whole seconds).
fn creation_seconds(series: &[Tick], total: u64) -> f64 {
    let total = total as f64;
    for w in series.windows(2) {
        let (t0, n0, t1, n1) = (w[0].t, w[0].invites as f64, w[1].t, w[1].invites as f64);
        if n1 >= total && n0 < total && n1 > n0 {
            return t0 + (total - n0) / (n1 - n0) * (t1 - t0);
        }
    }
    series.last().map_or(0.0, |p| p.t)
}

/// The single file in `dir` whose name ends with `suffix` (SIPp names them
/// `<scenario>_<pid><suffix>`), as rows of column -> number. Times (`hh:mm:ss:µs`) become
/// seconds; the date columns become their epoch seconds.
fn read_csv(dir: &Path, suffix: &str) -> Option<Vec<BTreeMap<String, f64>>> {
    let path = find(dir, suffix)?;
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(';'))
                .filter_map(|(k, v)| Some((k.to_string(), number(v)?)))
                .collect()
        })
        .collect();
    Some(rows)
}

/// A SIPp stat field as a number: plain numbers, `hh:mm:ss` or `hh:mm:ss:µs` durations
/// (seconds), and dates written as `date<TAB>time<TAB>epoch` (the epoch).
fn number(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Ok(n) = v.parse() {
        return Some(n);
    }
    if let Some(epoch) = v.rsplit('\t').next().filter(|_| v.contains('\t')) {
        return epoch.parse().ok();
    }
    let parts: Vec<f64> = v
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [h, m, s] => Some(h * 3600.0 + m * 60.0 + s),
        [h, m, s, us] => Some(h * 3600.0 + m * 60.0 + s + us / 1e6),
        _ => None,
    }
}

fn find(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix) && n.starts_with("load_"))
        })
}

/// `Date_ms;response_time_ms;rtd_no` rows: the response times.
fn read_rtt(dir: &Path) -> Vec<u32> {
    let Some(text) = find(dir, "_rtt.csv").and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
        .collect()
}

/// `refused <ms>` lines of the caller's log.
fn read_refused(dir: &Path) -> Vec<u64> {
    let Some(text) = find(dir, "_logs.log").and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("refused ")?.trim().parse().ok())
        .collect()
}

/// The q-quantile (0..=1) of `v` (sorted in place); None when empty.
pub fn quantile(v: &mut [u32], q: f64) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    Some(v[i.min(v.len() - 1)])
}
