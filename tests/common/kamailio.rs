//! A Kamailio of the test's own in front of pivotd nodes, running `deploy/kamailio/kamailio.cfg`
//! (the production file, its defines overridden with `-A`): UDP on 127.0.0.4 and a free port,
//! a dispatcher list of the given nodes, its pid file and log in a temp dir, small memory so
//! several tests' instances fit. Stopped (its whole process group) when dropped.
//!
//! Kamailio is a required tool: a machine without it fails the test with what to install.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The proxy's address; the nodes list it in `[sip] trusted_proxies`.
pub const PROXY_IP: &str = "127.0.0.4";

pub struct Kamailio {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// What a test changes of the production defaults: probes every second, a node that does not
/// answer an INVITE within a second (or a provisional one within three) is passed over.
pub const TEST_DEFINES: &[(&str, &str)] = &[
    ("PROBE_INTERVAL", "1"),
    ("FR_TIMER", "1000"),
    ("FR_INV_TIMER", "3000"),
    // SIPp sends every call from one address: hundreds of requests a second.
    ("PIKE_DENSITY", "5000"),
    ("CHILDREN", "2"),
];

impl Kamailio {
    /// Starts Kamailio dispatching to `nodes` (set 1, in this order), with `defines` and
    /// those of [`TEST_DEFINES`] it does not name; returns once it answers an OPTIONS.
    pub async fn start(nodes: &[SocketAddr], defines: &[(&str, &str)]) -> Kamailio {
        let found = Command::new("kamailio")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_err() {
            panic!(
                "kamailio is not installed: apt-get install kamailio (Debian 12's 5.6 has the \
                 dispatcher, pike and path modules); scripts/test.sh does"
            );
        }
        let list: String = nodes.iter().map(|n| format!("1 sip:{n} 0 0\n")).collect();
        let cfg = super::repo().join("deploy/kamailio/kamailio.cfg");
        let mut last = String::new();
        // A port found free may be taken before Kamailio binds it: try another (a failed
        // attempt's directory goes with it).
        for _ in 0..3 {
            let dir = super::tempdir();
            let list_path = dir.join("dispatcher.list");
            std::fs::write(&list_path, &list).unwrap();
            let port = std::net::UdpSocket::bind((PROXY_IP, 0))
                .and_then(|s| s.local_addr())
                .expect("a free UDP port on 127.0.0.4")
                .port();
            let addr: SocketAddr = format!("{PROXY_IP}:{port}").parse().unwrap();
            let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
            let mut cmd = Command::new("kamailio");
            cmd.args(["-DD", "-E", "-m", "24", "-M", "4", "-f"])
                .arg(&cfg)
                .arg("-P")
                .arg(dir.join("kamailio.pid"))
                .arg("-A")
                .arg(format!("LISTEN=udp:{addr}"))
                .arg("-A")
                .arg(format!("DISPATCHER_LIST=\"{}\"", list_path.display()));
            // A define given twice is refused: the caller's win over the tests' defaults.
            let defaults = TEST_DEFINES
                .iter()
                .filter(|(n, _)| !defines.iter().any(|(d, _)| d == n));
            for (name, value) in defaults.chain(defines) {
                cmd.arg("-A").arg(format!("{name}={value}"));
            }
            // Its own process group, so dropping it stops its children too.
            cmd.process_group(0)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let child = cmd.spawn().expect("kamailio starts");
            let mut k = Kamailio { addr, child, dir };
            if k.wait_ready().await {
                return k;
            }
            last = k.log();
            drop(k);
        }
        panic!("kamailio did not start:\n{last}");
    }

    /// Waits up to 10 s for an answer to an OPTIONS sent to the proxy itself.
    async fn wait_ready(&mut self) -> bool {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let options = format!(
                "OPTIONS sip:{a} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{t};rport\r\n\
                 From: <sip:probe@{local}>;tag={t}\r\nTo: <sip:{a}>\r\nCall-ID: ready-{t}\r\n\
                 CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                a = self.addr,
                t = super::token()
            );
            let _ = sock.send_to(options.as_bytes(), self.addr).await;
            let mut buf = [0u8; 4096];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
            {
                if String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200") {
                    return true;
                }
            }
        }
        false
    }

    /// What Kamailio logged so far (stderr, `-E`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signals to the process group this harness started.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever is left of the group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
