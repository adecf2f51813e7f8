//! pivotd nodes as processes (the `pivotd` binary), each on a loopback address of its own
//! (127.0.0.1, .2, .3 …) sharing one PostgreSQL database (`[store] postgres`), behind a proxy
//! on 127.0.0.4 (`[sip] trusted_proxies`), with the same account and API key. Each binds port
//! 0 and says on its ready line what it got, so no port is raced for; each has its own media
//! window. Killed when dropped.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::kamailio::PROXY_IP;
use super::ACCOUNT;

/// The account's API key on every node.
pub const KEY: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

/// Media ports per node (a pair per call).
const MEDIA_WINDOW: u16 = 200;

pub struct Node {
    /// 1-based, as its address 127.0.0.N.
    pub index: usize,
    pub sip: SocketAddr,
    pub api: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// `count` media windows of [`MEDIA_WINDOW`] ports in 20000–29999, distinct, at random.
fn media_windows(count: usize) -> Vec<u16> {
    let slots = 10000 / MEDIA_WINDOW;
    let mut picked: Vec<u16> = Vec::new();
    while picked.len() < count {
        let base = 20000 + MEDIA_WINDOW * (rand::random::<u16>() % slots);
        if !picked.contains(&base) {
            picked.push(base);
        }
    }
    picked
}

/// Starts nodes 1..=`count` on the database at `db_url`, with the `[[accounts.callflows]]`
/// tables in `callflows` and more `[sip]` keys in `sip_extra`; returns once each answers its
/// `/healthz`.
pub async fn start_nodes(
    count: usize,
    db_url: &str,
    callflows: &str,
    sip_extra: &str,
) -> Vec<Node> {
    start_nodes_each(db_url, callflows, &vec![sip_extra; count]).await
}

/// As [`start_nodes`], one node per entry of `sip_extras`, each with its own `[sip]` keys.
pub async fn start_nodes_each(db_url: &str, callflows: &str, sip_extras: &[&str]) -> Vec<Node> {
    let windows = media_windows(sip_extras.len());
    let mut nodes = Vec::new();
    for ((i, base), sip_extra) in windows.into_iter().enumerate().zip(sip_extras) {
        let ip: IpAddr = format!("127.0.0.{}", i + 1).parse().unwrap();
        let toml = format!(
            r#"
[sip]
udp = ["{ip}:0"]
tcp = []
trusted_proxies = ["{PROXY_IP}/32"]
# SIPp calls from 127.0.0.1, hundreds of calls from one address.
trusted_sources = ["127.0.0.1/32"]
allow_unauthenticated = true
{sip_extra}
[api]
listen = "{ip}:0"
[store]
postgres = "{db_url}"
[media]
ip = "{ip}"
port_min = {base}
port_max = {}
rtp_timeout_s = 0
[pivot]
blacklist_cidrs = []
[[accounts]]
id = "{ACCOUNT}"
realm = "pivotd.test"
api_key = "{KEY}"
{callflows}
"#,
            base + MEDIA_WINDOW - 1
        );
        nodes.push(Node::spawn(i + 1, &toml).await);
    }
    for n in &nodes {
        n.wait_healthy().await;
    }
    nodes
}

impl Node {
    async fn spawn(index: usize, toml: &str) -> Node {
        let dir = super::tempdir();
        let config = dir.join("pivotd.toml");
        std::fs::write(&config, toml).unwrap();
        let out = std::fs::File::create(dir.join("stdout")).unwrap();
        let err = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pivotd"))
            .arg("--config")
            .arg(&config)
            // CLUSTER_LOG=debug to see more of a failing run.
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("pivotd starts");
        let mut node = Node {
            index,
            sip: "0.0.0.0:0".parse().unwrap(),
            api: "0.0.0.0:0".parse().unwrap(),
            child,
            dir,
        };
        // The ready line names the sockets bound.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = std::fs::read_to_string(node.dir.join("stdout")).unwrap_or_default();
            let field = |name: &str| -> Option<SocketAddr> {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()
            };
            if let (Some(sip), Some(api)) = (field("udp="), field("api=")) {
                node.sip = sip;
                node.api = api;
                return node;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("node {index} exited ({status}):\n{}", node.log());
            }
            if Instant::now() > deadline {
                panic!("node {index} not ready after 20 s:\n{}", node.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&self) {
        let api = self.api;
        let ok = super::eventually(10, || std::net::TcpStream::connect(api).is_ok()).await;
        assert!(ok, "node {} API not up:\n{}", self.index, self.log());
        let (code, body) = super::http_get(api, "/healthz").await;
        assert_eq!(code, 200, "node {} unhealthy: {body}", self.index);
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (code, body) = super::http_get(self.api, "/metrics").await;
        assert_eq!(code, 200, "node {} /metrics: {body}", self.index);
        body
    }

    /// One sample of the node's `/metrics` (`pivotd_calls_total`).
    pub async fn metric(&self, sample: &str) -> u64 {
        super::metric(&self.metrics().await, sample)
    }

    /// SIGTERM: the node drains (503 to new INVITEs and OPTIONS) and exits when its calls
    /// are over.
    pub fn terminate(&self) {
        // SAFETY: a signal to the child this harness started (not yet waited for).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// SIGKILL, at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `secs` for the process to exit.
    pub async fn exited(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// What the node logged (stderr, RUST_LOG=warn or `CLUSTER_LOG`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
