//! The comparison Asterisk under the same load (`PEER_ASTERISK=PEERS`): configured, started
//! and queried through `bench/asterisk_peer.sh` (shared with `bench/asterisk_dial.sh`), one
//! fresh process per scenario, stopped when dropped — and by the kernel (SIGTERM, which
//! Asterisk takes as "stop") if the harness dies first.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/asterisk_peer.sh");

/// Where build-asterisk.sh has it listen (its sip.conf).
pub const SIP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    5080,
));

/// Asterisk could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum AsteriskError {
    #[error("asterisk_peer.sh {what}: {detail}")]
    Script { what: String, detail: String },
    #[error("could not run asterisk_peer.sh: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Runs `asterisk_peer.sh PEERS ARGS...` to its end; its stdout.
fn script(peers: &Path, args: &[&str]) -> Result<String, AsteriskError> {
    let out = Command::new(SCRIPT)
        .arg(peers)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(AsteriskError::Script {
            what: args.first().copied().unwrap_or("").to_string(),
            detail: format!(
                "{}; {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Writes the dialplan of A (7000) and P (7001): `prompt` is the WAV without ".wav", `web`
/// the harness's web server, which P's `CURL()` asks once per call.
pub fn configure(peers: &Path, prompt: &Path, web: SocketAddr) -> Result<(), AsteriskError> {
    let prompt = prompt.to_string_lossy();
    script(
        peers,
        &["configure-load", prompt.as_ref(), &web.to_string()],
    )
    .map(|_| ())
}

/// Writes the dialplan of B (7100): answer, then play `prompt` (the WAV without ".wav") over
/// and over until the caller hangs up. (Used by load_playing, which includes this file.)
#[allow(dead_code)]
pub fn configure_playing(peers: &Path, prompt: &Path) -> Result<(), AsteriskError> {
    let prompt = prompt.to_string_lossy();
    script(peers, &["configure-playing", prompt.as_ref()]).map(|_| ())
}

/// A running Asterisk the harness started.
pub struct Asterisk {
    peers: PathBuf,
    child: Child,
}

impl Asterisk {
    pub fn start(peers: &Path) -> Result<Asterisk, AsteriskError> {
        let mut cmd = Command::new(SCRIPT);
        cmd.arg(peers).arg("exec").stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only sets the death signal of this child,
        // which the script's `exec` keeps: Asterisk stops if the harness is killed (Ctrl-C).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let ast = Asterisk {
            peers: peers.to_path_buf(),
            child,
        };
        // On error `ast` is dropped, which stops what may have started.
        script(peers, &["booted", &ast.pid().to_string()])?;
        Ok(ast)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its active calls (`core show channels count`); None when the CLI did not answer.
    pub fn live_calls(&self) -> Option<u64> {
        let out = script(&self.peers, &["cli", "core show channels count"]).ok()?;
        out.lines()
            .find(|l| l.contains("active call"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Waits (at most `limit`) until Asterisk holds no call.
    pub fn drain(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.live_calls() == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        let _ = script(&self.peers, &["cli", "core stop now"]);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
