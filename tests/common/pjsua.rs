//! pjsua2 (pjsip 2.15, python) as a second real phone: `tests/pjsua/phone.py` registers
//! through pivotd, rings, answers after a delay (or never), plays a WAV and records what it
//! hears. Its events come back as lines (`registered 200`, `incoming`, `dtmf 5`,
//! `disconnected 487`, `media RTP/SAVP`, …) and it takes commands (`hangup`). A missing
//! pjsua2 fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::bridge::wav_pcm_8k;
use super::{eventually, repo, tempdir};

/// Over TLS, trusting `ca_file`; SRTP mandatory or not.
struct Tls<'a> {
    ca_file: &'a Path,
    srtp: bool,
}

pub struct Pjsua {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Pjsua {
    /// Starts a phone registering `user`@`realm` at `server` and waits for its registration.
    /// It rings on a call and answers after `answer_ms` (None: it only rings), sending `play`.
    pub async fn register(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        play: &Path,
        answer_ms: Option<u64>,
    ) -> Pjsua {
        Pjsua::launch(server, user, password, realm, play, answer_ms, None).await
    }

    /// [`Pjsua::register`] over TLS to `server` (pivotd's TLS socket), trusting `ca_file`;
    /// with `srtp`, SRTP mandatory (`PHONE_SRTP=mandatory`): its calls offer RTP/SAVP with
    /// SDES keys and take nothing but SRTP.
    #[allow(clippy::too_many_arguments)]
    pub async fn register_tls(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        play: &Path,
        answer_ms: Option<u64>,
        ca_file: &Path,
        srtp: bool,
    ) -> Pjsua {
        let tls = Tls { ca_file, srtp };
        Pjsua::launch(server, user, password, realm, play, answer_ms, Some(tls)).await
    }

    async fn launch(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        play: &Path,
        answer_ms: Option<u64>,
        tls: Option<Tls<'_>>,
    ) -> Pjsua {
        let dir = tempdir();
        let answer = answer_ms.map_or(-1, |ms| ms as i64).to_string();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut command = tokio::process::Command::new("python3");
        if let Some(tls) = tls {
            command.env("PHONE_TLS_CA", tls.ca_file);
            if tls.srtp {
                command.env("PHONE_SRTP", "mandatory");
            }
        }
        let mut child = command
            .arg(repo().join("tests/pjsua/phone.py"))
            .arg(server.port().to_string())
            .args([user, password, realm])
            .arg(play)
            .arg(dir.join("heard.wav"))
            .arg(answer)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("python3 is not installed: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        let phone = Pjsua {
            child,
            stdin,
            lines,
            dir,
            task,
        };
        let registered = phone.expect("registered 200", 10).await;
        assert!(registered.is_some(), "pjsua2 did not register");
        phone
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits up to `secs` for a line starting with `prefix`; panics, with what the phone
    /// printed, when pjsua2 is not installed.
    pub async fn expect(&self, prefix: &str, secs: u64) -> Option<String> {
        let find = || self.lines().into_iter().find(|l| l.starts_with(prefix));
        eventually(secs, || find().is_some()).await;
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        if stderr.contains("No module named 'pjsua2'") {
            panic!("pjsua2 is not installed (pip install pjsua2-python): {stderr}");
        }
        let found = find();
        if found.is_none() {
            eprintln!(
                "pjsua2 printed no {prefix:?}: {:?}\nstderr: {stderr}",
                self.lines()
            );
        }
        found
    }

    /// Sends a command line (`hangup`, `quit`).
    pub async fn command(&mut self, command: &str) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// What the phone heard, at 8 kHz, once its call ended (the script prints `recorded`
    /// when the WAV is closed); panics if it did not end within `secs`.
    pub async fn heard(&self, secs: u64) -> Vec<i16> {
        assert!(
            self.expect("recorded", secs).await.is_some(),
            "pjsua2's call did not end"
        );
        wav_pcm_8k(&self.dir.join("heard.wav")).expect("pjsua2 recording")
    }
}

impl Drop for Pjsua {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
