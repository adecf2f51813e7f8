//! The harness's figures: per step (one SIPp caller at one rate), the overload run, the table
//! on stdout and the JSON file. Column meanings are in bench/README.md ("bench/run").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::procfs;
use crate::sipp::{self, CallerStats, Ended, Transport};
use crate::web::WebSample;

#[derive(Serialize)]
pub struct Run {
    pub started_utc: String,
    pub finished_utc: String,
    pub commit: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub cpus: usize,
    pub rates: Vec<u32>,
    pub step_seconds: u32,
    pub transport: Transport,
    pub steps: Vec<Step>,
    pub overload: Option<Overload>,
    /// The server's RSS after start (before any call) and after its scenario's last step.
    pub rss: Vec<Rss>,
    /// `PEER_ASTERISK`: where the comparison Asterisk is (its rows are `A*`, `P*`, `O*`).
    pub peer: Option<String>,
    /// O against Asterisk, at twice A*'s highest clean rate.
    pub peer_overload: Option<Overload>,
    /// pivotd / Asterisk, per scenario and rate both ran.
    pub peer_ratios: Vec<PeerRatio>,
    /// The highest clean rate of each scenario both ran.
    pub peer_clean: Vec<PeerClean>,
    pub notes: Vec<String>,
}

/// One scenario at one rate: pivotd's figure divided by Asterisk's.
#[derive(Serialize)]
pub struct PeerRatio {
    pub scenario: String,
    pub rate: u32,
    pub ok_per_s: Option<f64>,
    pub invite_200_p99: Option<f64>,
    pub cpu_ms_per_call: Option<f64>,
}

/// The highest rate at which each server was clean in a scenario.
#[derive(Serialize)]
pub struct PeerClean {
    pub scenario: String,
    pub pivotd: Option<u32>,
    pub asterisk: Option<u32>,
    pub ratio: Option<f64>,
}

#[derive(Serialize)]
pub struct Rss {
    pub scenario: String,
    pub server: String,
    pub idle_kb: u64,
    pub after_kb: u64,
}

impl Run {
    pub fn new(rates: &[u32], step_seconds: u32, transport: Transport) -> Run {
        Run {
            started_utc: utc_now(),
            finished_utc: String::new(),
            commit: commit(),
            loadavg_start: procfs::loadavg(),
            loadavg_end: String::new(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            rates: rates.to_vec(),
            step_seconds,
            transport,
            steps: Vec::new(),
            overload: None,
            rss: Vec::new(),
            peer: None,
            peer_overload: None,
            peer_ratios: Vec::new(),
            peer_clean: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn finish(&mut self) {
        self.finished_utc = utc_now();
        self.loadavg_end = procfs::loadavg();
        self.peer_ratios = self.compare_peer();
        self.peer_clean = ["A", "P"]
            .into_iter()
            .filter(|sc| self.steps.iter().any(|s| s.scenario == format!("{sc}*")))
            .map(|sc| {
                let pivotd = self.highest_clean(sc);
                let asterisk = self.highest_clean(&format!("{sc}*"));
                PeerClean {
                    scenario: sc.to_string(),
                    pivotd,
                    asterisk,
                    ratio: quotient(pivotd.map(f64::from), asterisk.map(f64::from)),
                }
            })
            .collect();
    }

    /// pivotd's row over Asterisk's (`X*`) at the same scenario and rate.
    fn compare_peer(&self) -> Vec<PeerRatio> {
        let mut out = Vec::new();
        for a in self.steps.iter().filter(|s| s.scenario.ends_with('*')) {
            let base = a.scenario.trim_end_matches('*');
            let Some(p) = self
                .steps
                .iter()
                .find(|p| p.scenario == base && p.rate == a.rate)
            else {
                continue;
            };
            let cpu = |s: &Step| s.server.as_ref().and_then(|f| f.cpu_ms_per_call);
            out.push(PeerRatio {
                scenario: base.to_string(),
                rate: a.rate,
                ok_per_s: quotient(Some(p.achieved_cps), Some(a.achieved_cps)),
                // 0 ms is under SIPp's 1 ms resolution: no ratio of it.
                invite_200_p99: quotient(
                    p.invite_200_p99_ms.filter(|&v| v > 0).map(f64::from),
                    a.invite_200_p99_ms.filter(|&v| v > 0).map(f64::from),
                ),
                cpu_ms_per_call: quotient(cpu(p), cpu(a)),
            });
        }
        out
    }

    /// Scenario S's step at `rate`, if it ran.
    pub fn standin(&self, rate: u32) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.scenario == "S" && s.rate == rate)
    }

    /// The highest rate at which `scenario` was clean (see `Step::clean`).
    pub fn highest_clean(&self, scenario: &str) -> Option<u32> {
        self.steps
            .iter()
            .filter(|s| s.scenario == scenario && s.clean)
            .map(|s| s.rate)
            .max()
    }
}

/// One SIPp caller at one rate.
#[derive(Serialize)]
pub struct Step {
    pub scenario: String,
    /// Offered calls per second (SIPp's -r).
    pub rate: u32,
    pub seconds: u32,
    pub transport: Transport,
    /// Calls offered: rate × seconds (SIPp's -m).
    pub offered_calls: u64,
    pub caller: CallerStats,
    /// Calls SIPp created per second while it created them (below `rate`: SIPp fell behind).
    pub generated_cps: f64,
    /// Completed calls (BYE received and answered) per second of that same period.
    pub achieved_cps: f64,
    pub invite_200_p50_ms: Option<u32>,
    pub invite_200_p99_ms: Option<u32>,
    pub invite_200_max_ms: Option<u32>,
    /// Ms after the caller started of its first 503.
    pub first_503_ms: Option<u64>,
    /// Every offered call created, answered and completed, none failed or refused.
    pub clean: bool,
    pub server: Option<ServerFigures>,
    /// The caller SIPp's own CPU (wait4's rusage) over its run.
    pub sipp_cpu_percent: f64,
    pub sipp_exit_code: Option<i32>,
    pub wall_seconds: f64,
    pub pivot: Option<PivotFigures>,
    pub loadavg: String,
}

impl Step {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: String,
        rate: u32,
        seconds: u32,
        transport: Transport,
        mut caller: CallerStats,
        server: Option<ServerFigures>,
        ended: &Ended,
        loadavg: String,
    ) -> Step {
        let offered_calls = u64::from(rate) * u64::from(seconds);
        let per_s = |n: u64| {
            if caller.creation_seconds > 0.0 {
                n as f64 / caller.creation_seconds
            } else {
                0.0
            }
        };
        let generated_cps = per_s(caller.created);
        let achieved_cps = per_s(caller.completed);
        let mut rtt = std::mem::take(&mut caller.rtt_ms);
        let invite_200_p50_ms = sipp::quantile(&mut rtt, 0.5);
        let invite_200_p99_ms = sipp::quantile(&mut rtt, 0.99);
        let invite_200_max_ms = rtt.last().copied();
        let first_503_ms = caller.refused_at_ms.iter().min().copied();
        let clean = caller.created == offered_calls
            && caller.completed == offered_calls
            && caller.failed == 0
            && caller.refused_503 == 0;
        let wall = ended.wall.as_secs_f64();
        Step {
            scenario,
            rate,
            seconds,
            transport,
            offered_calls,
            generated_cps,
            achieved_cps,
            invite_200_p50_ms,
            invite_200_p99_ms,
            invite_200_max_ms,
            first_503_ms,
            clean,
            server,
            sipp_cpu_percent: percent(ended.cpu, ended.wall),
            sipp_exit_code: ended.code,
            wall_seconds: wall,
            pivot: None,
            loadavg,
            caller,
        }
    }
}

/// One look at the server while a step runs (every 100 ms).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Probe {
    /// Ms after the step's callers started.
    pub at_ms: u64,
    pub rss_kb: u64,
    /// pivotd's `pivotd_calls_active`.
    pub live: Option<u64>,
    /// pivotd's last 100 ms interval's least SIP queue delay (`pivotd_sip_queue_delay_seconds`).
    pub queue_delay_ms: Option<f64>,
    /// pivotd's last interval's least pacer lateness (`pivotd_rtp_pacer_lateness_seconds`).
    pub pacer_lateness_ms: Option<f64>,
    /// `pivotd_sip_overloaded`.
    pub overloaded: Option<bool>,
}

/// A standing queue this long (every message of a 100 ms interval waited at least this) means
/// the server no longer keeps up with what arrives: the overload has begun.
pub const BEHIND_MS: f64 = 1.0;

/// The server's side of a step: pivotd, or scenario S's SIPp stand-in.
#[derive(Serialize)]
pub struct ServerFigures {
    pub name: String,
    pub cpu_ms: f64,
    /// CPU time over the caller's wall time (100 = one core).
    pub cpu_percent: f64,
    /// CPU time per call answered.
    pub cpu_ms_per_call: Option<f64>,
    /// RSS before its first call (pivotd: its start; the stand-in: this step's start).
    pub rss_idle_kb: u64,
    pub rss_peak_kb: u64,
    /// RSS once the step's calls ended.
    pub rss_after_kb: u64,
    /// pivotd's `pivotd_calls_active`, highest sample (every 200 ms).
    pub live_calls_peak: Option<u64>,
    /// (RSS − idle RSS) / live calls at the sample with the most live calls.
    pub rss_per_live_call_kb: Option<f64>,
    /// 503s pivotd counted as sent for overload (`pivotd_sip_overload_503_total`) in the
    /// step, by its reason.
    pub overload_503: Option<BTreeMap<String, u64>>,
}

impl ServerFigures {
    pub fn new(
        name: &str,
        cpu: Duration,
        wall: Duration,
        calls: u64,
        samples: &[Probe],
        idle_kb: u64,
        after_kb: u64,
    ) -> ServerFigures {
        let cpu_ms = cpu.as_secs_f64() * 1000.0;
        let peak_live = samples
            .iter()
            .filter_map(|p| Some((p.live?, p.rss_kb)))
            .max_by_key(|&(live, _)| live);
        ServerFigures {
            name: name.to_string(),
            cpu_ms,
            cpu_percent: percent(cpu, wall),
            cpu_ms_per_call: (calls > 0).then(|| cpu_ms / calls as f64),
            rss_idle_kb: idle_kb,
            rss_peak_kb: samples.iter().map(|s| s.rss_kb).max().unwrap_or(0),
            rss_after_kb: after_kb,
            live_calls_peak: peak_live.map(|p| p.0),
            rss_per_live_call_kb: peak_live
                .filter(|p| p.0 > 0)
                .map(|(live, rss)| rss.saturating_sub(idle_kb) as f64 / live as f64),
            overload_503: None,
        }
    }
}

/// Scenario P's web server: requests it answered, and its own handling time; and the round
/// trip as pivotd measured it (its `pivotd_pivot_request_seconds` histogram: the bound of the
/// bucket the quantile falls in).
#[derive(Serialize)]
pub struct PivotFigures {
    pub requests: u64,
    pub service_p50_us: Option<f64>,
    pub service_p99_us: Option<f64>,
    pub round_trip_p50_ms_at_most: Option<f64>,
    pub round_trip_p99_ms_at_most: Option<f64>,
}

pub fn pivot_figures(
    mut s: WebSample,
    round_trip_p50_ms: Option<f64>,
    round_trip_p99_ms: Option<f64>,
) -> PivotFigures {
    s.service_ns.sort_unstable();
    let q = |q: f64| -> Option<f64> {
        let n = s.service_ns.len();
        (n > 0).then(|| s.service_ns[((n as f64 - 1.0) * q).round() as usize] as f64 / 1000.0)
    };
    PivotFigures {
        requests: s.requests,
        service_p50_us: q(0.5),
        service_p99_us: q(0.99),
        round_trip_p50_ms_at_most: round_trip_p50_ms,
        round_trip_p99_ms_at_most: round_trip_p99_ms,
    }
}

/// Scenario O: `rate` for `seconds`, then half of it for as long.
#[derive(Serialize)]
pub struct Overload {
    pub rate: u32,
    pub seconds: u32,
    /// The overload phase, then the one after.
    pub phases: Vec<Step>,
    /// pivotd over both phases (CPU per call: per call answered in either).
    pub server: ServerFigures,
    pub answered: u64,
    pub refused_503: u64,
    pub failed: u64,
    /// Answered calls that did not complete (no BYE from pivotd received and answered).
    pub answered_not_completed: u64,
    /// INVITE -> 200 p99 of the answered calls of both phases.
    pub answered_p99_ms: Option<u32>,
    /// Ms after the offered rate doubled of the first 503.
    pub first_503_ms: Option<u64>,
    /// Ms after the offered rate doubled when pivotd first fell behind: the first probe whose
    /// least SIP queue delay or pacer lateness over an interval was [`BEHIND_MS`] or more.
    pub behind_ms: Option<u64>,
    /// Ms after the offered rate doubled when pivotd's gate first said overloaded.
    pub gate_ms: Option<u64>,
    /// The probes of both phases (every 100 ms).
    pub probes: Vec<Probe>,
}

impl Overload {
    /// "O", or "O*" against Asterisk (its phases are named "O* overload", "O* after").
    pub fn name(&self) -> &str {
        self.phases
            .first()
            .and_then(|p| p.scenario.split(' ').next())
            .unwrap_or("O")
    }

    pub fn new(
        rate: u32,
        seconds: u32,
        phases: Vec<Step>,
        server: ServerFigures,
        probes: &[Probe],
    ) -> Overload {
        let sum = |f: fn(&CallerStats) -> u64| phases.iter().map(|p| f(&p.caller)).sum::<u64>();
        let answered = sum(|c| c.answered);
        let completed = sum(|c| c.completed);
        Overload {
            rate,
            seconds,
            answered,
            refused_503: sum(|c| c.refused_503),
            failed: sum(|c| c.failed),
            answered_not_completed: answered.saturating_sub(completed),
            answered_p99_ms: phases.iter().filter_map(|p| p.invite_200_p99_ms).max(),
            // The second phase starts `seconds` later; its 503s count from the overload's start.
            first_503_ms: phases
                .iter()
                .enumerate()
                .filter_map(|(i, p)| Some(p.first_503_ms? + i as u64 * u64::from(seconds) * 1000))
                .min(),
            behind_ms: probes
                .iter()
                .find(|p| {
                    p.queue_delay_ms.unwrap_or(0.0) >= BEHIND_MS
                        || p.pacer_lateness_ms.unwrap_or(0.0) >= BEHIND_MS
                })
                .map(|p| p.at_ms),
            gate_ms: probes
                .iter()
                .find(|p| p.overloaded == Some(true))
                .map(|p| p.at_ms),
            probes: probes.to_vec(),
            phases,
            server,
        }
    }
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    }
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn commit() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn quotient(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    opt(quotient(a, b).map(|r| format!("{r:.2}")))
}

/// SIPp's failure reasons, short: `TimeoutOnRecv:3 MaxUDPRetrans:1`.
fn reasons(c: &CallerStats) -> String {
    if c.failed_by_reason.is_empty() {
        return "-".to_string();
    }
    c.failed_by_reason
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A progress line on stderr as each step ends.
pub fn print_step(s: &Step, standin: Option<&Step>) {
    if let Some(e) = &s.caller.sipp_error {
        eprintln!("{} {}/s: SIPp created no call: {e}", s.scenario, s.rate);
    }
    let srv = s.server.as_ref();
    eprintln!(
        "{} {}/s: {} created, {} answered, {} completed, {} 503, {} failed; INVITE->200 \
         p50/p99 {}/{} ms; {} CPU {:.0} % {} ms/call{}",
        s.scenario,
        s.rate,
        s.caller.created,
        s.caller.answered,
        s.caller.completed,
        s.caller.refused_503,
        s.caller.failed,
        opt(s.invite_200_p50_ms),
        opt(s.invite_200_p99_ms),
        srv.map_or("-", |f| f.name.as_str()),
        srv.map_or(0.0, |f| f.cpu_percent),
        opt(srv
            .and_then(|f| f.cpu_ms_per_call)
            .map(|v| format!("{v:.3}"))),
        standin.map_or(String::new(), |st| format!(
            " (S: {:.0} calls/s)",
            st.achieved_cps
        )),
    );
}

pub fn print_overload(o: &Overload) {
    eprintln!(
        "{} {}/s for {} s then {}/s: {} answered, {} refused 503, {} failed, {} answered not \
         completed; p99 {} ms; behind at {} ms, overloaded at {} ms, first 503 at {} ms",
        o.name(),
        o.rate,
        o.seconds,
        o.rate / 2,
        o.answered,
        o.refused_503,
        o.failed,
        o.answered_not_completed,
        opt(o.answered_p99_ms),
        opt(o.behind_ms),
        opt(o.gate_ms),
        opt(o.first_503_ms)
    );
}

/// The whole run as a table on stdout.
pub fn print_table(run: &Run) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "bench/run {} -> {} UTC, commit {}, {} CPUs, load {} -> {}, {} s per step, -t {}",
        run.started_utc,
        run.finished_utc,
        run.commit,
        run.cpus,
        run.loadavg_start,
        run.loadavg_end,
        run.step_seconds,
        run.transport.flag()
    );
    if !run.steps.is_empty() {
        let _ = writeln!(
        t,
        "{:<4} {:>5} {:>6} {:>7} {:>7} {:>6} {:>5} {:>6} {:>9} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>7}  failed by reason",
        "scen", "rate", "calls", "gen/s", "ok/s", "done", "503", "failed", "p50/p99", "CPU%",
        "ms/call", "RSS MB", "live", "KB/cl", "sipp%", "exit", "xS ok/s", "xS p99", "xS ms/c"
    );
    }
    for s in &run.steps {
        let srv = s.server.as_ref();
        let st = if s.scenario == "S" {
            None
        } else {
            run.standin(s.rate)
        };
        let st_srv = st.and_then(|st| st.server.as_ref());
        let _ = writeln!(
            t,
            "{:<4} {:>5} {:>6} {:>7.0} {:>7.0} {:>6} {:>5} {:>6} {:>9} {:>6.0} {:>7} {:>6.1} {:>6} {:>6} {:>6.0} {:>6} | {:>6} {:>6} {:>7}  {}",
            s.scenario,
            s.rate,
            s.offered_calls,
            s.generated_cps,
            s.achieved_cps,
            s.caller.completed,
            s.caller.refused_503,
            s.caller.failed,
            format!("{}/{}", opt(s.invite_200_p50_ms), opt(s.invite_200_p99_ms)),
            srv.map_or(0.0, |f| f.cpu_percent),
            opt(srv.and_then(|f| f.cpu_ms_per_call).map(|v| format!("{v:.3}"))),
            srv.map_or(0.0, |f| f.rss_peak_kb as f64 / 1024.0),
            opt(srv.and_then(|f| f.live_calls_peak)),
            opt(srv.and_then(|f| f.rss_per_live_call_kb).map(|v| format!("{v:.1}"))),
            s.sipp_cpu_percent,
            opt(s.sipp_exit_code),
            ratio(Some(s.achieved_cps), st.map(|st| st.achieved_cps)),
            ratio(
                s.invite_200_p99_ms.map(f64::from),
                st.and_then(|st| st.invite_200_p99_ms).map(f64::from)
            ),
            ratio(
                srv.and_then(|f| f.cpu_ms_per_call),
                st_srv.and_then(|f| f.cpu_ms_per_call)
            ),
            reasons(&s.caller),
        );
        if let Some(p) = &s.pivot {
            // pivotd has no pivot latency histogram: the round trip shows as P's INVITE->200
            // minus A's at the same rate (1 ms resolution); P*'s minus A*'s for Asterisk.
            let a_name = s.scenario.replace('P', "A");
            let a = run
                .steps
                .iter()
                .find(|a| a.scenario == a_name && a.rate == s.rate);
            let diff = |f: fn(&Step) -> Option<u32>| -> String {
                match (f(s), a.and_then(f)) {
                    (Some(p), Some(a)) => format!("{:+}", i64::from(p) - i64::from(a)),
                    _ => "-".to_string(),
                }
            };
            let _ = writeln!(
                t,
                "     pivot: {} requests; round trip (pivotd's histogram) p50/p99 <= {}/{} ms; \
                 {} - {} INVITE->200 p50/p99 {}/{} ms; web server handling p50/p99 {}/{} µs",
                p.requests,
                opt(p.round_trip_p50_ms_at_most),
                opt(p.round_trip_p99_ms_at_most),
                s.scenario,
                a_name,
                diff(|x| x.invite_200_p50_ms),
                diff(|x| x.invite_200_p99_ms),
                opt(p.service_p50_us.map(|v| format!("{v:.2}"))),
                opt(p.service_p99_us.map(|v| format!("{v:.2}")))
            );
        }
    }
    if !run.peer_ratios.is_empty() {
        let _ = writeln!(
            t,
            "pivotd / Asterisk at the same rate (ok/s: above 1 is pivotd better; p99 and \
             ms/call: below 1 is)"
        );
        let _ = writeln!(
            t,
            "{:<4} {:>5} {:>7} {:>7} {:>8}",
            "scen", "rate", "ok/s", "p99", "ms/call"
        );
        for r in &run.peer_ratios {
            let f = |v: Option<f64>| opt(v.map(|v| format!("{v:.2}")));
            let _ = writeln!(
                t,
                "{:<4} {:>5} {:>7} {:>7} {:>8}",
                r.scenario,
                r.rate,
                f(r.ok_per_s),
                f(r.invite_200_p99),
                f(r.cpu_ms_per_call)
            );
        }
        for c in &run.peer_clean {
            let _ = writeln!(
                t,
                "highest clean rate, {}: pivotd {} / Asterisk {} = {}",
                c.scenario,
                opt(c.pivotd),
                opt(c.asterisk),
                opt(c.ratio.map(|v| format!("{v:.2}")))
            );
        }
    }
    for r in &run.rss {
        let _ = writeln!(
            t,
            "{} RSS, scenario {}: idle {:.1} MB, after its last step {:.1} MB",
            r.server,
            r.scenario,
            r.idle_kb as f64 / 1024.0,
            r.after_kb as f64 / 1024.0
        );
    }
    for o in run.overload.iter().chain(&run.peer_overload) {
        let _ = writeln!(
            t,
            "{}: {}/s for {} s, then {}/s for {} s ({} CPU {:.0} %, {} ms/call answered)",
            o.name(),
            o.rate,
            o.seconds,
            o.rate / 2,
            o.seconds,
            o.server.name,
            o.server.cpu_percent,
            opt(o.server.cpu_ms_per_call.map(|v| format!("{v:.3}")))
        );
        let _ = writeln!(
            t,
            "  {:<11} {:>5} {:>7} {:>8} {:>6} {:>6} {:>9} {:>9} {:>10}  failed by reason",
            "phase",
            "rate",
            "created",
            "answered",
            "503",
            "failed",
            "completed",
            "p50/p99",
            "first 503"
        );
        for p in &o.phases {
            let _ = writeln!(
                t,
                "  {:<11} {:>5} {:>7} {:>8} {:>6} {:>6} {:>9} {:>9} {:>10}  {}",
                p.scenario,
                p.rate,
                p.caller.created,
                p.caller.answered,
                p.caller.refused_503,
                p.caller.failed,
                p.caller.completed,
                format!("{}/{}", opt(p.invite_200_p50_ms), opt(p.invite_200_p99_ms)),
                opt(p.first_503_ms.map(|v| format!("{v} ms"))),
                reasons(&p.caller)
            );
        }
        let _ = writeln!(
            t,
            "  answered {}, refused with 503 {} ({} counted {}), failed {}, answered but not \
             completed {}; p99 of answered {} ms; first 503 {} after the rate doubled",
            o.answered,
            o.refused_503,
            o.server.name,
            o.server.overload_503.as_ref().map_or("-".to_string(), |m| {
                let all: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                if all.is_empty() {
                    "0".to_string()
                } else {
                    all.join(", ")
                }
            }),
            o.failed,
            o.answered_not_completed,
            opt(o.answered_p99_ms),
            opt(o.first_503_ms.map(|v| format!("{v} ms")))
        );
        if o.refused_503 == 0 {
            let _ = writeln!(t, "  {} sent no 503 under this overload", o.server.name);
        }
        if let Some(behind) = o.behind_ms {
            let _ = writeln!(
                t,
                "  behind (a standing queue of {BEHIND_MS} ms or more) at {behind} ms, its gate \
                 overloaded at {}, first 503 {} after falling behind",
                opt(o.gate_ms.map(|v| format!("{v} ms"))),
                opt(o
                    .first_503_ms
                    .map(|v| format!("{} ms", v as i64 - behind as i64)))
            );
        }
    }
    for n in &run.notes {
        let _ = writeln!(t, "note: {n}");
    }
    print!("{t}");
}
