//! `bench/run`'s orchestrator: SIPp against pivotd at stepped call rates, one SIPp caller per
//! step, with pivotd's CPU and memory read from /proc. Scenarios (bench/README.md, "bench/run"):
//!
//! - S: SIPp caller -> SIPp stand-in (answers, 1 s, BYE): the load generator's own ceiling;
//! - A: pivotd answers, plays a 1 s 8 kHz WAV, hangs up (a static callflow);
//! - P: the same, but a pivot node asks a local web server, which answers that flow;
//! - O: twice the highest clean rate of A for a while, then half of that;
//! - B: run by `bench/load_playing.rs` (its own bench, started from here).
//!
//! With `PEER_ASTERISK=PEERS` (where build-asterisk.sh put Asterisk), A, P and O also run
//! against that Asterisk (rows `A*`, `P*`, `O*`), each right after pivotd's, and the table
//! gives pivotd / Asterisk per rate.
//!
//! cargo bench --bench load -- [--scenarios S,A,P,O,B] [--rates 250,500,...] [--step-seconds N]
//!     [--json FILE] [--transport u1|un|l1] [--overload-rate N] [--overload-seconds N]
//!     [--media-ports MIN-MAX] [--base-port N] [--pivotd-max-cps N]

mod asterisk;
#[allow(dead_code)]
#[path = "../flood_common.rs"]
mod flood_common;
mod pivotd;
mod procfs;
mod report;
mod sipp;
mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asterisk::Asterisk;
use pivotd::{Pivotd, Setup};
use report::{Overload, Probe, Run, ServerFigures, Step};
use sipp::{Caller, Transport};

/// Bad command-line arguments.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("{0} needs a value")]
    Missing(String),
    #[error("{flag}: {value:?} is not valid")]
    Invalid { flag: String, value: String },
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

struct Opts {
    scenarios: Vec<char>,
    rates: Vec<u32>,
    step_seconds: u32,
    json: PathBuf,
    transport: Transport,
    overload_rate: Option<u32>,
    overload_seconds: u32,
    media_ports: (u16, u16),
    base_port: u16,
    pivotd_max_cps: u32,
}

const USAGE: &str = "\
usage: [PEER_ASTERISK=PEERS] bench/run [--scenarios S,A,P,O,B] [--rates 250,500,1000,2000,3200,4000,6400]
                 [--step-seconds 20] [--json target/bench-load.json] [--transport u1|un|l1]
                 [--overload-rate N] [--overload-seconds 20] [--media-ports 40000-59999]
                 [--base-port 16000] [--pivotd-max-cps 1000000]";

fn parse_args(args: &[String]) -> Result<Opts, ArgError> {
    let mut o = Opts {
        scenarios: vec!['S', 'A', 'P', 'O', 'B'],
        rates: vec![250, 500, 1000, 2000, 3200, 4000, 6400],
        step_seconds: 20,
        json: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/bench-load.json"
        )),
        transport: Transport::U1,
        overload_rate: None,
        overload_seconds: 20,
        media_ports: (40000, 59999),
        base_port: 16000,
        pivotd_max_cps: 1_000_000,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let mut value = || it.next().cloned().ok_or(ArgError::Missing(flag.clone()));
        let invalid = |value: &str| ArgError::Invalid {
            flag: flag.clone(),
            value: value.to_string(),
        };
        match flag.as_str() {
            "--scenarios" => {
                let v = value()?;
                o.scenarios = v
                    .split(',')
                    .map(|s| match s.trim() {
                        "S" | "A" | "P" | "O" | "B" => Ok(s.trim().chars().next().unwrap_or('?')),
                        _ => Err(invalid(&v)),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--rates" => {
                let v = value()?;
                o.rates = v
                    .split(',')
                    .map(|r| r.trim().parse().ok().filter(|&r: &u32| r > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid(&v))?;
            }
            "--step-seconds" | "--overload-seconds" | "--overload-rate" | "--pivotd-max-cps" => {
                let v = value()?;
                let n = positive(&v).ok_or_else(|| invalid(&v))?;
                match flag.as_str() {
                    "--step-seconds" => o.step_seconds = n,
                    "--overload-seconds" => o.overload_seconds = n,
                    "--overload-rate" => o.overload_rate = Some(n),
                    _ => o.pivotd_max_cps = n,
                }
            }
            "--json" => o.json = PathBuf::from(value()?),
            "--transport" => {
                let v = value()?;
                o.transport = match v.as_str() {
                    "u1" => Transport::U1,
                    "un" => Transport::Un,
                    "l1" => Transport::L1,
                    _ => return Err(invalid(&v)),
                };
            }
            "--media-ports" => {
                let v = value()?;
                o.media_ports = v
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .filter(|(a, b): &(u16, u16)| a < b)
                    .ok_or_else(|| invalid(&v))?;
            }
            "--base-port" => {
                let v = value()?;
                o.base_port = v
                    .parse()
                    .ok()
                    .filter(|p: &u16| (1024..=65000).contains(p))
                    .ok_or_else(|| invalid(&v))?;
            }
            _ => return Err(ArgError::Unknown(flag.clone())),
        }
    }
    Ok(o)
}

fn positive(v: &str) -> Option<u32> {
    v.parse().ok().filter(|&n| n > 0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and a measurement is not a test.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("load: a benchmark; run it with bench/run (cargo bench --bench load -- ARGS)");
        println!("{USAGE}");
        return;
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let which = std::process::Command::new(opts.transport.sipp())
        .arg("-v")
        .output();
    if which.is_err() {
        eprintln!(
            "load: {:?} is missing ({})",
            opts.transport.sipp(),
            opts.transport.install()
        );
        std::process::exit(1);
    }
    let work = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-load"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work directory");
    // Over TLS: pivotd's certificate, which SIPp presents too.
    let tls = (opts.transport == Transport::L1)
        .then(|| flood_common::TlsFiles::make(Path::new(sipp::TLS_DIR)));
    pivotd::write_prompt(&work);
    let web = web::PivotWeb::start(pivotd::FLOW);

    let mut run = Run::new(&opts.rates, opts.step_seconds, opts.transport);
    // The comparison peer: configured once (its dialplan plays this run's prompt and asks
    // this run's web server), started fresh for each scenario.
    // The comparison Asterisk has no TLS listener: over TLS, pivotd's rows only.
    let peer = std::env::var_os("PEER_ASTERISK")
        .filter(|_| tls.is_none())
        .map(PathBuf::from)
        .and_then(
            |peers| match asterisk::configure(&peers, &work.join("bench-1s"), web.addr) {
                Ok(()) => Some(peers),
                Err(e) => {
                    let msg = format!("PEER_ASTERISK: {e}; no Asterisk rows");
                    eprintln!("{msg}");
                    run.notes.push(msg);
                    None
                }
            },
        );
    run.peer = peer.as_ref().map(|p| p.display().to_string());
    eprintln!(
        "load: {} at {:?} calls/s, {} s per step, -t {}; files in {}",
        opts.scenarios.iter().collect::<String>(),
        opts.rates,
        opts.step_seconds,
        opts.transport.flag(),
        work.display()
    );
    // S first (the generator's ceiling the others are compared with), O last (it needs A).
    for scen in ['S', 'A', 'P', 'O', 'B'] {
        if !opts.scenarios.contains(&scen) {
            continue;
        }
        match scen {
            'S' => {
                for &rate in &opts.rates {
                    let step = standin_step(&opts, &work, rate);
                    report::print_step(&step, None);
                    run.steps.push(step);
                }
            }
            'A' | 'P' => {
                let number = if scen == 'A' {
                    pivotd::NUMBER_STATIC
                } else {
                    pivotd::NUMBER_PIVOT
                };
                {
                    let server = start_pivotd(&opts, &work, &web, tls.as_ref(), scen);
                    scenario_steps(&opts, &work, &web, &server, scen, number, &mut run);
                }
                // Asterisk right after pivotd (pivotd stopped: the same RTP ports are free).
                if let Some(peers) = &peer {
                    match Asterisk::start(peers) {
                        Ok(server) => {
                            scenario_steps(&opts, &work, &web, &server, scen, number, &mut run)
                        }
                        Err(e) => peer_failed(&mut run, scen, &e),
                    }
                }
            }
            'O' => {
                let rate = opts
                    .overload_rate
                    .or_else(|| run.highest_clean("A").map(|r| r * 2));
                match rate {
                    Some(rate) => {
                        let server = start_pivotd(&opts, &work, &web, tls.as_ref(), 'O');
                        let o = overload(&opts, &work, &server, "O", rate);
                        drop(server);
                        report::print_overload(&o);
                        run.overload = Some(o);
                    }
                    None => {
                        let msg = "O: no rate: A found no clean rate in this run and no \
                                   --overload-rate was given";
                        eprintln!("{msg}");
                        run.notes.push(msg.to_string());
                    }
                }
                // Asterisk at twice its own highest clean rate of A.
                if let Some(peers) = &peer {
                    match run.highest_clean("A*").map(|r| r * 2) {
                        Some(rate) => match Asterisk::start(peers) {
                            Ok(server) => {
                                let o = overload(&opts, &work, &server, "O*", rate);
                                drop(server);
                                report::print_overload(&o);
                                run.peer_overload = Some(o);
                            }
                            Err(e) => peer_failed(&mut run, scen, &e),
                        },
                        None => {
                            let msg = "O*: no rate: A* (Asterisk) found no clean rate in this run";
                            eprintln!("{msg}");
                            run.notes.push(msg.to_string());
                        }
                    }
                }
            }
            _ => {
                // B is its own bench (one receiver thread, its own pivotd); run it here so
                // one command gives every scenario. Its table goes to stdout, its JSON beside ours.
                let json = opts.json.with_file_name("bench-load-playing.json");
                run.notes.push(playing(&json, &[]));
                if let Some(peers) = &peer {
                    // Asterisk saturates both cores near 1,000 playing calls (bench/README.md):
                    // one step there, ramped at the rate it answers cleanly.
                    let json = opts.json.with_file_name("bench-load-playing-asterisk.json");
                    let peers = peers.to_string_lossy();
                    let args = ["--asterisk", &peers, "--steps", "1000", "--rate", "100"];
                    run.notes.push(playing(&json, &args));
                }
            }
        }
    }
    run.finish();
    report::print_table(&run);
    let json = serde_json::to_string_pretty(&run).expect("JSON");
    if let Some(parent) = opts.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&opts.json, json).expect("write the JSON report");
    println!("JSON: {}", opts.json.display());
}

fn start_pivotd(
    opts: &Opts,
    work: &Path,
    _web: &web::PivotWeb,
    tls: Option<&flood_common::TlsFiles>,
    scen: char,
) -> Pivotd {
    let dir = work.join(format!("pivotd-{scen}"));
    std::fs::create_dir_all(&dir).expect("pivotd directory");
    std::fs::copy(work.join("bench-1s.wav"), dir.join("bench-1s.wav")).expect("prompt");
    let server = Pivotd::start(&Setup {
        dir: &dir,
        web: _web.addr,
        media_ports: opts.media_ports,
        max_calls_per_second: opts.pivotd_max_cps,
        tls,
    });
    // Let it settle before its idle RSS is read.
    std::thread::sleep(Duration::from_millis(500));
    server
}

/// A server under load: pivotd or the comparison Asterisk.
trait Server {
    /// The name in the figures ("pivotd", "asterisk").
    fn name(&self) -> &'static str;
    /// Appended to the scenario's name in the rows ("", "*").
    fn mark(&self) -> &'static str;
    fn sip(&self) -> SocketAddr;
    fn pid(&self) -> u32;
    /// Where the sampler reads live calls (pivotd's API); None: not sampled.
    fn api(&self) -> Option<SocketAddr>;
    /// 503s it counted as sent for overload, by reason; None when it does not count them.
    fn overload_503s(&self) -> Option<BTreeMap<String, u64>>;
    /// Waits (at most `limit`) until it holds no call.
    fn drain(&self, limit: Duration);
}

impl Server for Pivotd {
    fn name(&self) -> &'static str {
        "pivotd"
    }
    fn mark(&self) -> &'static str {
        ""
    }
    fn sip(&self) -> SocketAddr {
        self.sip
    }
    fn pid(&self) -> u32 {
        Pivotd::pid(self)
    }
    fn api(&self) -> Option<SocketAddr> {
        Some(self.api)
    }
    fn overload_503s(&self) -> Option<BTreeMap<String, u64>> {
        Pivotd::overload_503s(self)
    }
    fn drain(&self, limit: Duration) {
        Pivotd::drain(self, limit)
    }
}

impl Server for Asterisk {
    fn name(&self) -> &'static str {
        "asterisk"
    }
    fn mark(&self) -> &'static str {
        "*"
    }
    fn sip(&self) -> SocketAddr {
        asterisk::SIP
    }
    fn pid(&self) -> u32 {
        Asterisk::pid(self)
    }
    fn api(&self) -> Option<SocketAddr> {
        None
    }
    fn overload_503s(&self) -> Option<BTreeMap<String, u64>> {
        None
    }
    fn drain(&self, limit: Duration) {
        Asterisk::drain(self, limit)
    }
}

fn peer_failed(run: &mut Run, scen: char, e: &asterisk::AsteriskError) {
    let msg = format!("{scen}*: Asterisk did not start: {e}");
    eprintln!("{msg}");
    run.notes.push(msg);
}

/// The directory name of a scenario's files ("A*" -> "A-asterisk").
fn dir_name(scenario: &str) -> String {
    scenario.replace('*', "-asterisk")
}

/// A or P against `server`: warm-up, then one step per rate.
fn scenario_steps(
    opts: &Opts,
    work: &Path,
    web: &web::PivotWeb,
    server: &dyn Server,
    scen: char,
    number: &str,
    run: &mut Run,
) {
    let name = format!("{scen}{}", server.mark());
    let idle = procfs::rss_kb(server.pid()).unwrap_or(0);
    warm_up(opts, work, server, number);
    web.take();
    for &rate in &opts.rates {
        let trips0 = server.api().and_then(pivotd::pivot_round_trips);
        let mut step = server_step(opts, work, server, &name, number, rate, idle);
        if scen == 'P' {
            let trips1 = server.api().and_then(pivotd::pivot_round_trips);
            let q = |q: f64| {
                let (a, b) = (trips0.as_deref()?, trips1.as_deref()?);
                pivotd::round_trip_quantile_ms(a, b, q)
            };
            step.pivot = Some(report::pivot_figures(web.take(), q(0.5), q(0.99)));
        }
        report::print_step(&step, run.standin(rate));
        run.steps.push(step);
    }
    run.rss.push(report::Rss {
        scenario: name,
        server: server.name().to_string(),
        idle_kb: idle,
        after_kb: procfs::rss_kb(server.pid()).unwrap_or(0),
    });
}

/// Runs scenario B (`load_playing`, its own bench) with `args`, its JSON to `json`; the line
/// for the run's notes.
fn playing(json: &Path, args: &[&str]) -> String {
    let status = std::process::Command::new("cargo")
        .args([
            "bench",
            "--quiet",
            "--bench",
            "load_playing",
            "--",
            "--json",
        ])
        .arg(json)
        .args(args)
        .status();
    let msg = match status {
        Ok(s) if s.success() => format!("B: see {}", json.display()),
        Ok(s) => format!("B: load_playing exited with {s}"),
        Err(e) => format!("B: could not start load_playing: {e}"),
    };
    println!("{msg}");
    msg
}

/// A few calls before the measured steps (the prompt's first load, the pivot connection).
fn warm_up(opts: &Opts, work: &Path, server: &dyn Server, number: &str) {
    let caller = Caller {
        dir: &work.join(format!("warmup-{number}{}", dir_name(server.mark()))),
        target: server.sip(),
        number,
        rate: 20,
        calls: 20,
        port: opts.base_port,
        media_port: opts.base_port + 10,
        transport: opts.transport,
    };
    let p = caller.spawn();
    p.wait(Instant::now() + Duration::from_secs(30));
    server.drain(Duration::from_secs(10));
}

/// Samples a server's RSS (and pivotd's live calls) every 200 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Probe>>,
}

impl Sampler {
    /// Every 100 ms: RSS, and pivotd's live calls and load signals when it has an API.
    fn start(pid: u32, api: Option<std::net::SocketAddr>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let page = api.and_then(flood_common::metrics_text);
                let one = |name: &str| {
                    let v = flood_common::samples_in(page.as_deref()?, name, &[]);
                    (!v.is_empty()).then(|| v.iter().sum::<f64>())
                };
                samples.push(Probe {
                    at_ms: at.duration_since(started).as_millis() as u64,
                    rss_kb: procfs::rss_kb(pid).unwrap_or(0),
                    live: one("pivotd_calls_active").map(|v| v as u64),
                    queue_delay_ms: one("pivotd_sip_queue_delay_seconds").map(|v| v * 1000.0),
                    pacer_lateness_ms: one("pivotd_rtp_pacer_lateness_seconds").map(|v| v * 1000.0),
                    overloaded: one("pivotd_sip_overloaded").map(|v| v > 0.0),
                });
                std::thread::sleep(Duration::from_millis(100).saturating_sub(at.elapsed()));
            }
            samples
        });
        Sampler { stop, handle }
    }

    fn stop(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn deadline(seconds: u32) -> Instant {
    // The calls' own time (1 s), SIPp's 10 s receive timeout, and room for a slow machine.
    Instant::now() + Duration::from_secs(u64::from(seconds) + 40)
}

fn server_step(
    opts: &Opts,
    work: &Path,
    server: &dyn Server,
    scen: &str,
    number: &str,
    rate: u32,
    idle_kb: u64,
) -> Step {
    let dir = work.join(format!("{}-{rate}", dir_name(scen)));
    let caller = Caller {
        dir: &dir,
        target: server.sip(),
        number,
        rate,
        calls: u64::from(rate) * u64::from(opts.step_seconds),
        port: opts.base_port,
        media_port: opts.base_port + 10,
        transport: opts.transport,
    };
    let load = procfs::loadavg();
    let cpu0 = procfs::cpu_ticks(server.pid()).unwrap_or(0);
    let refused0 = server.overload_503s();
    let sampler = Sampler::start(server.pid(), server.api());
    let p = caller.spawn();
    let ended = p.wait(deadline(opts.step_seconds));
    let cpu1 = procfs::cpu_ticks(server.pid()).unwrap_or(0);
    let samples = sampler.stop();
    server.drain(Duration::from_secs(15));
    let after_kb = procfs::rss_kb(server.pid()).unwrap_or(0);
    let refused1 = server.overload_503s();
    let stats = sipp::caller_stats(&dir);
    let mut figures = ServerFigures::new(
        server.name(),
        procfs::ticks_to_duration(cpu1.saturating_sub(cpu0)),
        ended.wall,
        stats.answered,
        &samples,
        idle_kb,
        after_kb,
    );
    figures.overload_503 = refused0.zip(refused1).map(|(a, b)| pivotd::delta(&a, &b));
    std::thread::sleep(Duration::from_secs(1));
    Step::new(
        scen.to_string(),
        rate,
        opts.step_seconds,
        opts.transport,
        stats,
        Some(figures),
        &ended,
        load,
    )
}

fn standin_step(opts: &Opts, work: &Path, rate: u32) -> Step {
    let dir = work.join(format!("S-{rate}"));
    let uas_dir = dir.join("standin");
    let uas_port = opts.base_port + 20;
    let uas = sipp::spawn_standin(&uas_dir, uas_port, opts.base_port + 30, opts.transport);
    std::thread::sleep(Duration::from_millis(500));
    let caller = Caller {
        dir: &dir,
        target: std::net::SocketAddr::from(([127, 0, 0, 1], uas_port)),
        number: pivotd::NUMBER_STATIC,
        rate,
        calls: u64::from(rate) * u64::from(opts.step_seconds),
        port: opts.base_port,
        media_port: opts.base_port + 10,
        transport: opts.transport,
    };
    let load = procfs::loadavg();
    let idle_kb = procfs::rss_kb(uas.pid).unwrap_or(0);
    let cpu0 = uas.cpu_ticks().unwrap_or(0);
    let sampler = Sampler::start(uas.pid, None);
    let p = caller.spawn();
    let ended = p.wait(deadline(opts.step_seconds));
    // The stand-in's last BYEs were answered before the caller could end.
    let cpu1 = uas.cpu_ticks().unwrap_or(cpu0);
    let samples = sampler.stop();
    let after_kb = procfs::rss_kb(uas.pid).unwrap_or(0);
    uas.kill();
    uas.wait(Instant::now());
    let stats = sipp::caller_stats(&dir);
    let figures = ServerFigures::new(
        "sipp stand-in",
        procfs::ticks_to_duration(cpu1.saturating_sub(cpu0)),
        ended.wall,
        stats.answered,
        &samples,
        idle_kb,
        after_kb,
    );
    std::thread::sleep(Duration::from_secs(1));
    Step::new(
        "S".to_string(),
        rate,
        opts.step_seconds,
        opts.transport,
        stats,
        Some(figures),
        &ended,
        load,
    )
}

/// O: `rate` for the overload period, then `rate / 2` for as long, from a second SIPp started
/// when the first stops creating calls (its calls still in progress), against a fresh server
/// (`scen`: "O", or "O*" for Asterisk).
fn overload(opts: &Opts, work: &Path, server: &dyn Server, scen: &str, rate: u32) -> Overload {
    let idle_kb = procfs::rss_kb(server.pid()).unwrap_or(0);
    warm_up(opts, work, server, pivotd::NUMBER_STATIC);
    let secs = opts.overload_seconds;
    let half = (rate / 2).max(1);
    let callers = [
        (
            work.join(format!("{}-{rate}", dir_name(scen))),
            rate,
            opts.base_port,
        ),
        (
            work.join(format!("{}-{half}-after", dir_name(scen))),
            half,
            opts.base_port + 40,
        ),
    ];
    let load = procfs::loadavg();
    let cpu0 = procfs::cpu_ticks(server.pid()).unwrap_or(0);
    let refused0 = server.overload_503s();
    let sampler = Sampler::start(server.pid(), server.api());
    let started = Instant::now();
    let mut procs = Vec::new();
    for (i, (dir, r, port)) in callers.iter().enumerate() {
        if i == 1 {
            let at = started + Duration::from_secs(u64::from(secs));
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        let caller = Caller {
            dir,
            target: server.sip(),
            number: pivotd::NUMBER_STATIC,
            rate: *r,
            calls: u64::from(*r) * u64::from(secs),
            port: *port,
            media_port: port + 10,
            transport: opts.transport,
        };
        procs.push(caller.spawn());
    }
    let ended: Vec<sipp::Ended> = procs.iter().map(|p| p.wait(deadline(2 * secs))).collect();
    let cpu1 = procfs::cpu_ticks(server.pid()).unwrap_or(0);
    let samples = sampler.stop();
    server.drain(Duration::from_secs(15));
    let after_kb = procfs::rss_kb(server.pid()).unwrap_or(0);
    let refused1 = server.overload_503s();
    let wall = started.elapsed();
    let phases: Vec<Step> = callers
        .iter()
        .zip(&ended)
        .map(|((dir, r, _), e)| {
            let phase = if *r == rate { "overload" } else { "after" };
            let stats = sipp::caller_stats(dir);
            Step::new(
                format!("{scen} {phase}"),
                *r,
                secs,
                opts.transport,
                stats,
                None,
                e,
                load.clone(),
            )
        })
        .collect();
    let answered = phases.iter().map(|p| p.caller.answered).sum();
    let mut figures = ServerFigures::new(
        server.name(),
        procfs::ticks_to_duration(cpu1.saturating_sub(cpu0)),
        wall,
        answered,
        &samples,
        idle_kb,
        after_kb,
    );
    figures.overload_503 = refused0.zip(refused1).map(|(a, b)| pivotd::delta(&a, &b));
    Overload::new(rate, secs, phases, figures, &samples)
}
