//! The pivotd command line: run (embedded default or `--config FILE`), `check-config FILE`,
//! and `call` (the built-in SIP caller, `pivotd::dialer`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use pivotd::callflow::check;
use pivotd::config::Config;
use pivotd::fdlimit;

// mimalloc gives emptied pages back to the system a second later, where glibc's malloc kept a
// flood's peak for good (bench/flood_memory gives both figures). Built without transparent huge
// pages (feature no_thp): a purge inside a huge page gives nothing back. The binary only: the
// library's tests keep the system allocator. `--features system-alloc` builds with the system's
// malloc, which heap profilers (valgrind's dhat, heaptrack) can see into.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pivotd",
    version,
    about = "SIP B2BUA with a Kazoo Pivot / TwiML callflow runtime"
)]
struct Cli {
    /// TOML configuration file (without it, the embedded default runs: SIP on
    /// 127.0.0.1:5060 UDP+TCP and a demo IVR on any number).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log lines as text (no colours and, under journald, no timestamps unless stderr is a
    /// terminal) or as one JSON object per line, for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: print every problem with its key, exit non-zero if any.
    CheckConfig { file: PathBuf },
    /// Call a number at a SIP server and print the call's timeline.
    Call(Box<pivotd::dialer::CallArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Call(args)) = cli.command {
        return pivotd::dialer::main(*args);
    }
    if let Some(Command::CheckConfig { file }) = cli.command {
        return match check::load(&file) {
            Ok(cfg) => {
                println!("{}: ok", file.display());
                if let Some(w) = cfg.unadvertised_wildcard() {
                    eprintln!("{}: warning: {w}", file.display());
                }
                // A warning, not a problem: the limit belongs to where pivotd will run.
                match fdlimit::limit_in_force() {
                    Ok(limit) => {
                        if let Some(short) = fdlimit::Budget::for_config(&cfg).check(limit) {
                            eprintln!("{}: warning: {short}", file.display());
                        }
                    }
                    Err(e) => eprintln!("{}: warning: {e}", file.display()),
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("{}: {}: {}", file.display(), p.key, p.message);
                }
                eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
                ExitCode::FAILURE
            }
        };
    }
    init_logging(cli.log_format);
    // A panic anywhere is counted and logged as one escaped line (the tasks recover).
    pivotd::health::install_panic_hook(true);
    let cfg = match &cli.config {
        Some(path) => match check::load(path) {
            Ok(c) => c,
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("pivotd: {}: {}: {}", path.display(), p.key, p.message);
                }
                return ExitCode::FAILURE;
            }
        },
        None => Config::embedded_default(),
    };
    open_files(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pivotd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(Arc::new(cfg), cli.config))
}

/// One event per line on stderr. Colours only on a terminal; under systemd (`JOURNAL_STREAM`)
/// journald stamps each line itself, so the text has no timestamp of its own.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let colour = std::io::stderr().is_terminal() && !journald;
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Json => log.json().init(),
        LogFormat::Text if journald => log.without_time().init(),
        LogFormat::Text => log.init(),
    }
}

/// Bumped by [`give_memory_back`]: each runtime worker then collects its heap in full when
/// it next parks.
#[cfg(not(feature = "system-alloc"))]
static FULL_COLLECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// mimalloc frees a thread's empty pages when that thread next allocates or collects, so a
/// runtime worker left idle after a flood would sit on them: each collects when it parks, at
/// most once a second (a few microseconds; it only runs when the worker has nothing to do),
/// and in full when [`give_memory_back`] asks.
fn collect_when_idle() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    #[cfg(not(feature = "system-alloc"))]
    {
        thread_local!(static FULL_DONE: Cell<u64> = const { Cell::new(0) });
        let asked = FULL_COLLECTION.load(std::sync::atomic::Ordering::Relaxed);
        if FULL_DONE.replace(asked) != asked {
            // SAFETY: mimalloc's collection of the calling thread's heap (and of what exited
            // threads left); no pointers involved.
            unsafe { libmimalloc_sys::mi_collect(true) };
            LAST.set(Some(Instant::now()));
            return;
        }
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mimalloc's collection of the calling thread's heap; no pointers involved.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// Raises the soft open-files limit to the hard one (the default soft 1024 would cap pivotd
/// near 250 calls) and warns when the configured calls still would not fit.
fn open_files(cfg: &Config) {
    let limit = match fdlimit::raise() {
        Ok((before, after)) => {
            tracing::info!(%before, %after, "open-files limit");
            after.soft
        }
        Err(e) => {
            tracing::warn!("{e}");
            match fdlimit::current() {
                Ok(l) => l.soft,
                Err(_) => return,
            }
        }
    };
    if let Some(short) = fdlimit::Budget::for_config(cfg).check(limit) {
        tracing::warn!("{short}");
    }
}

async fn run(cfg: Arc<Config>, file: Option<PathBuf>) -> ExitCode {
    // Caught from here on: a SIGHUP during start-up reloads once the server runs.
    let hangups = pivotd::server::Hangups::listen();
    let server = match pivotd::server::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pivotd: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.reload_on_hangup(hangups, file);
    let list = |v: &[std::net::SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    // One machine-readable line for scripts and tests that start pivotd on port 0.
    let api = server.api.map(|a| a.to_string()).unwrap_or_default();
    println!(
        "pivotd ready udp={} tcp={} api={api}",
        list(&server.udp),
        list(&server.tcp)
    );
    tracing::info!(udp = %list(&server.udp), tcp = %list(&server.tcp), "pivotd listening");
    tokio::select! {
        () = wait_for_signal() => {}
        () = give_memory_back(&server) => {}
    }
    tracing::info!(
        calls = server.active_calls(),
        "shutting down: refusing new calls"
    );
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Gives the memory of ended calls back to the system once there are none. A worker's heap
/// keeps pages whose blocks other threads freed (a call's memory is allocated on one worker
/// and freed on whichever ends it) until that worker collects, and a worker without work
/// stays parked: after a load, RSS stayed at 2-10 times the idle figure. So when the last
/// call has ended, every worker is woken to collect in full as it parks again: 1 s later,
/// then 10 s and 40 s later (what the ended calls' transactions free when their timers end,
/// 32 s at most). Never while a call is live: the call path pays nothing.
async fn give_memory_back(server: &pivotd::server::ServerHandle) {
    use std::time::Duration;
    // Seconds since the last call ended at which to collect.
    const AT: [u64; 3] = [1, 10, 40];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Seconds without a live call; None: none has been live since the last collection.
    let mut idle: Option<u64> = None;
    loop {
        tick.tick().await;
        if server.active_calls() > 0 {
            idle = Some(0);
            continue;
        }
        let Some(secs) = idle.as_mut() else {
            continue;
        };
        *secs += 1;
        if !AT.contains(secs) {
            continue;
        }
        if *secs >= AT[AT.len() - 1] {
            idle = None;
        }
        #[cfg(not(feature = "system-alloc"))]
        FULL_COLLECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A task each: a parked worker is woken to run (or steal) it, and parks again.
        for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
            tokio::spawn(async {});
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
