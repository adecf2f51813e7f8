//! The pivotd command line: run (embedded default or `--config FILE`) and `check-config FILE`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pivotd::callflow::check;
use pivotd::config::Config;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: print every problem with its key, exit non-zero if any.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = cli.command {
        return match check::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pivotd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(Arc::new(cfg)))
}

async fn run(cfg: Arc<Config>) -> ExitCode {
    let server = match pivotd::server::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pivotd: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    wait_for_signal().await;
    tracing::info!(
        calls = server.active_calls(),
        "shutting down: refusing new calls"
    );
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
