//! The built `pivotd` binary as a process: its config file, its ready line, its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn pivotd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pivotd"))
}

/// `text` as `pivotd.toml` in a new temp folder.
pub fn write_config(text: &str) -> PathBuf {
    let path = super::tempdir().join("pivotd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `cmd` (the binary, or a wrapper such as prlimit, its environment and stderr set by
/// the caller) with `--config path` and waits for its ready line: the process and its first
/// UDP address.
pub fn spawn_config(mut cmd: Command, path: &Path) -> (Child, SocketAddr) {
    let mut child = cmd
        .arg("--config")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let udp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp="))
        .and_then(|a| a.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ready line: {line:?}"));
    (child, udp)
}

/// The lines a child writes to stderr, collected as they come (a thread reads them).
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// Collects `child`'s stderr (spawned with `Stdio::piped()` for it).
    pub fn collect(child: &mut Child) -> LogLines {
        let log = LogLines::default();
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = log.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        log
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits up to `secs` for a line that holds every one of `parts`; the line, if one came.
    pub fn wait_for(&self, parts: &[&str], secs: u64) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = self
                .lines()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A child killed and reaped when dropped: a test that fails leaves no pivotd behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}
