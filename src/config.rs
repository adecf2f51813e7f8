//! The TOML configuration: typed sections with the embedded default's values for every key
//! left out, and validation that reports every problem with its key path, not just the first.
//!
//! The file is read as a plain TOML table and walked by hand (rather than through serde's
//! `deny_unknown_fields`, which stops at the first fault) so that `check-config` can list all
//! problems at once: unknown keys, wrong types, bad addresses, port ranges, callflow validation
//! errors (`accounts[0].callflows[1].flow.data.code`), bad regexes, duplicate numbers.
//!
//! The config knows nothing above it. The checks that need more than the file — play ids in
//! the prompt library, pivot URLs past the URL guard, a usable TTS command — are the callflow
//! side's (`callflow::check`), which `pivotd check-config` and start-up run after these.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;
use toml::{Table, Value};

use crate::flow::modules::{play::Play, sleep, ModuleData};
use crate::flow::Node;

/// Fixed id of the embedded demo account (32 hex digits, like a Kazoo account id).
pub const DEMO_ACCOUNT_ID: &str = "00000000000000000000000000000de0";
/// Realm of the embedded demo account.
pub const DEMO_REALM: &str = "demo.pivotd.test";

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub tts: TtsConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub pivot: PivotConfig,
    /// A file with `[[accounts]]` has exactly those; with none, the demo account.
    pub accounts: Vec<Account>,
}

/// `[sip]`: listen sockets and call limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipConfig {
    /// `udp`: UDP listen sockets (`[]` = none). Default `["127.0.0.1:5060"]`.
    pub udp: Vec<SocketAddr>,
    /// `tcp`: TCP listen sockets (`[]` = none). Default `["127.0.0.1:5060"]`.
    pub tcp: Vec<SocketAddr>,
    /// `advertise`: address written in Via/Contact/SDP when it differs from the bind address.
    pub advertise: Option<IpAddr>,
    /// `max_calls`: concurrent calls; above it new INVITEs get 503 with Retry-After.
    /// Default 5000, 1..=1000000.
    pub max_calls: u32,
    /// `max_calls_per_second`: new calls accepted per second; above it 503 with Retry-After.
    /// Default 4000, 1..=1000000.
    pub max_calls_per_second: u32,
    /// `max_call_duration_s`: a call is hung up after this many seconds; 0 = no limit.
    /// Default 14400 (4 h).
    pub max_call_duration_s: u64,
    /// `shutdown_grace_s`: on SIGINT/SIGTERM, live calls get this long before BYE.
    /// Default 30, 0..=86400.
    pub shutdown_grace_s: u64,
    /// `tcp_idle_timeout_s`: a TCP connection with no traffic for this long is closed.
    /// Default 300, 1..=86400.
    pub tcp_idle_timeout_s: u64,
    /// `max_message_bytes`: largest SIP message accepted (TCP framing cap); larger ones are
    /// refused. Default 65536, 1024..=1048576.
    pub max_message_bytes: usize,
    /// `timer_t1_ms`: RFC 3261 T1, the round-trip estimate every retransmission timer derives
    /// from (Timer H, which ends an unacknowledged call, is 64*T1). Default 500, 10..=10000.
    pub timer_t1_ms: u64,
    /// `timer_t2_ms`: RFC 3261 T2, the retransmission interval cap. Default 4000.
    pub timer_t2_ms: u64,
    /// `timer_t4_ms`: RFC 3261 T4, how long a message may linger in the network. Default 5000.
    pub timer_t4_ms: u64,
    /// Per-source limits: `trusted_sources` (CIDRs held to the global limits only, default
    /// none), `source_requests_per_second` (200), `source_calls_per_second` (20),
    /// `source_max_calls` (100), `source_tcp_connections` (20), `source_failures_per_minute`
    /// (20), `source_block_s` (300), `scanner_user_agents` (a list replacing the default
    /// list; `[]` = none). A limit of 0 is off.
    pub sources: SourceLimits,
}

impl SipConfig {
    /// The RFC 3261 timer base values (T2 is never below T1).
    pub fn timers(&self) -> Timers {
        Timers {
            t1: Duration::from_millis(self.timer_t1_ms),
            t2: Duration::from_millis(self.timer_t2_ms.max(self.timer_t1_ms)),
            t4: Duration::from_millis(self.timer_t4_ms),
        }
    }
    pub fn max_call_duration(&self) -> Option<Duration> {
        (self.max_call_duration_s > 0).then(|| Duration::from_secs(self.max_call_duration_s))
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }
    pub fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.tcp_idle_timeout_s)
    }
}

/// RFC 3261 §17 timer base values (Table 4): what `timer_t1_ms`, `timer_t2_ms` and `timer_t4_ms`
/// give the SIP transaction layer (`sip::timer`).
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum duration a message will remain in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// The per-source limits (`[sip]` keys; 0 switches a limit off), which `sip::source` enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLimits {
    /// Sources held only to the global limits.
    pub trusted: Vec<IpNet>,
    /// SIP messages per second from one address (token bucket, two seconds of burst).
    pub requests_per_second: u32,
    /// New calls per second from one address (one second of burst).
    pub calls_per_second: u32,
    /// Concurrent calls from one address.
    pub max_calls: u32,
    /// Open TCP connections from one address.
    pub tcp_connections: u32,
    /// Failed requests (404, 403, 484 …) from one address per minute before it is blocked.
    pub failures_per_minute: u32,
    /// How long a blocked address (scanner, failures) is dropped without an answer.
    pub block: Duration,
    /// User-Agent substrings (compared lowercase) of scanners, dropped silently.
    pub scanner_user_agents: Vec<String>,
}

/// The User-Agents of the SIP scanners seen on the internet (SIPVicious's svmap/svwar, sipcli,
/// sipsak run as a scanner, VaxSIP, iWar, pplsip, Ozeki's scanner, sundayddr, SiVuS,
/// siparmyknife, sipptk) — the same names fail2ban, Kamailio and Asterisk users block.
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sipsak",
    "vaxsipuseragent",
    "iwar",
    "pplsip",
    "ozeki",
    "sundayddr",
    "sivus",
    "siparmyknife",
    "sipptk",
];

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            trusted: Vec::new(),
            requests_per_second: 200,
            calls_per_second: 20,
            max_calls: 100,
            tcp_connections: 20,
            failures_per_minute: 20,
            block: Duration::from_secs(300),
            scanner_user_agents: DEFAULT_SCANNER_USER_AGENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// `[media]`: RTP and prompts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// `ip`: RTP bind and SDP address. Default 127.0.0.1.
    pub ip: IpAddr,
    /// `port_min`, `port_max`: RTP port range; RTP/RTCP pairs start on even ports inside it.
    /// Defaults 16384 and 32767.
    pub port_min: u16,
    pub port_max: u16,
    /// `dir`: where play ids resolve, resolved against the config file's folder.
    /// Default `media`.
    pub dir: PathBuf,
    /// Whether `dir` was given in the file. The default dir may be missing (the embedded
    /// prompts then serve); a configured one must exist.
    pub dir_configured: bool,
    /// `rtp_timeout_s`: hang up (BYE) when the caller sends no RTP for this long, except
    /// while on hold; 0 = off. Default 60.
    pub rtp_timeout_s: u64,
    /// `early_media_unproven_s`: how long early media (a 183 and a prompt before the answer)
    /// is sent to a caller's media address that has not proved it takes part (no RTP from it
    /// yet) and whose source is not trusted; then the audio stops (the prompt keeps its time)
    /// unless the caller's RTP arrives. It bounds what one forged INVITE can make pivotd send
    /// to a third party. 0..=3600; 0 = no early audio until the caller's RTP. Default 5.
    pub early_media_unproven_s: u64,
}

impl MediaConfig {
    pub fn rtp_timeout(&self) -> Option<Duration> {
        (self.rtp_timeout_s > 0).then(|| Duration::from_secs(self.rtp_timeout_s))
    }

    /// The dir the prompt library reads: the configured one, or the default one when it
    /// exists; `None` = embedded prompts only.
    pub fn prompt_dir(&self) -> Option<PathBuf> {
        (self.dir_configured || self.dir.is_dir()).then(|| self.dir.clone())
    }

    /// Number of even/odd port pairs in the range.
    pub fn port_pairs(&self) -> usize {
        let first_even = u32::from(self.port_min) + u32::from(self.port_min % 2);
        let max = u32::from(self.port_max);
        if first_even + 1 > max {
            0
        } else {
            ((max - 1 - first_even) / 2 + 1) as usize
        }
    }
}

/// `[tts]`: the text-to-speech hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtsConfig {
    /// `command`: program and arguments; `{voice}`, `{out}` (a WAV path it must write) and
    /// `{text}` are replaced. Default espeak-ng.
    pub command: Vec<String>,
    /// `voices`: Kazoo voice names (`female`, `male`) to the engine's voices.
    pub voices: BTreeMap<String, String>,
    /// `timeout_ms`: longest one synthesis may run before the hook is killed and the flow
    /// takes `_`. Default 10000, 100..=600000.
    pub timeout_ms: u64,
}

/// `[api]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// `listen`: HTTP API socket. Default 127.0.0.1:8000; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `token_lifetime_s`: how long an auth token from `PUT /v2/api_auth` stays valid.
    /// Default 3600, 1..=2592000.
    pub token_lifetime_s: u64,
    /// `auth_failures_per_minute`: failed `api_auth` attempts one source address may make in
    /// a minute before it gets 429. Default 10, 1..=100000.
    pub auth_failures_per_minute: u32,
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// `sqlite`: database file, resolved against the config file's folder (`:memory:` kept
    /// as is). Default `pivotd.db`.
    pub sqlite: PathBuf,
    /// `debug_retention_s`: pivot debug records older than this are purged (checked every
    /// few minutes). Default 604800 (7 days), 60..=31622400.
    pub debug_retention_s: u64,
}

/// `[pivot]`: the URL guard's lists (spec j.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PivotConfig {
    /// `blacklist_cidrs`: networks pivot must not fetch from; a list given replaces the
    /// default list (loopback, RFC 1918, link-local, CGNAT, IPv6 equivalents); `[]` allows all.
    pub blacklist_cidrs: Vec<IpNet>,
    /// `blacklist_hosts`: host names refused; default `["localhost"]`.
    pub blacklist_hosts: Vec<String>,
    /// `max_req_timeout_ms`: a pivot node's `req_timeout_ms` is clamped to this (spec j.9).
    /// Default 5000, 100..=60000.
    pub max_req_timeout_ms: u64,
    /// `max_requests_per_call`: pivot requests one call may make before it is ended, against
    /// runaway loops (spec j.18). Default 100, 1..=100000.
    pub max_requests_per_call: u32,
    /// `ca_file`: extra trusted CA certificates (PEM) for https web servers, beside the
    /// built-in roots.
    pub ca_file: Option<PathBuf>,
}

/// Why a `blacklist_cidrs` entry is not an address block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("prefix {prefix:?} is not 0..={max}")]
    BadPrefix { prefix: String, max: u8 },
}

/// An address block, `addr/prefix`; a bare address is its /32 or /128. The address is kept as
/// written (`10.1.2.3/8` contains what `10.0.0.0/8` does). Containment is per family: an
/// IPv4-mapped IPv6 address is the URL guard's to unwrap.
pub fn parse_cidr(s: &str) -> Result<IpNet, CidrError> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| CidrError::NotAnAddress(a.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bad_prefix = |p: &str| CidrError::BadPrefix {
        prefix: p.to_string(),
        max,
    };
    let prefix = match p {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(bad_prefix(p)),
        },
    };
    IpNet::new(addr, prefix).map_err(|_| bad_prefix(&prefix.to_string()))
}

/// [`DEFAULT_BLACKLIST_CIDRS`] as address blocks.
pub fn default_blacklist() -> Vec<IpNet> {
    DEFAULT_BLACKLIST_CIDRS
        .iter()
        .filter_map(|c| parse_cidr(c).ok())
        .collect()
}

/// Spec j.10's default blacklist.
pub const DEFAULT_BLACKLIST_CIDRS: &[&str] = &[
    "127.0.0.0/8",
    "0.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
];

/// `[[accounts]]`.
#[derive(Clone, Debug)]
pub struct Account {
    /// `id` (required): sent as Account-ID.
    pub id: String,
    /// `realm` (required): INVITEs whose Request-URI host is this belong to the account.
    pub realm: String,
    /// `api_key`: for `PUT /v2/api_auth`; none = no API access for this account.
    pub api_key: Option<String>,
    /// `pivot_secret`: when set, every pivot request of the account carries an
    /// `X-Pivotd-Signature` (HMAC-SHA256 of the URL and body with this secret).
    pub pivot_secret: Option<String>,
    pub callflows: Vec<CallflowEntry>,
    pub users: Vec<User>,
    pub devices: Vec<Device>,
    pub resources: Vec<Resource>,
}

/// `[[accounts.callflows]]`.
#[derive(Clone, Debug)]
pub struct CallflowEntry {
    /// `id`: optional document id.
    pub id: Option<String>,
    /// `name`: optional friendly name.
    pub name: Option<String>,
    /// `numbers`: exact dialled numbers (1..36 characters, unique within the account).
    pub numbers: Vec<String>,
    /// `patterns`: regexes on the dialled number, compiled at load; unanchored, as Kazoo's
    /// `re:run` (write `^…$` to anchor).
    pub patterns: Vec<Regex>,
    /// `flow`: the callflow node (a TOML table, or a string holding Kazoo JSON).
    pub flow: std::sync::Arc<Node>,
    /// Where it was defined (`accounts[0].callflows[2]`), for messages about it.
    pub source: String,
}

/// `[[accounts.users]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub presence_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// `[[accounts.devices]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    /// A user id of the same account.
    pub owner_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub name: Option<String>,
}

/// `[[accounts.resources]]`: a carrier / gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub id: String,
    /// A `sip:` or `sips:` URI.
    pub gateway: String,
    pub name: Option<String>,
}

/// One thing wrong in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path, e.g. `accounts[0].callflows[1].flow.data.id`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a config, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The problem reported for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&ConfigProblem> {
        self.0.iter().find(|p| p.key == key)
    }
}

impl Config {
    /// DESIGN.md's default: SIP UDP+TCP 127.0.0.1:5060, API 127.0.0.1:8000, `pivotd.db` and
    /// `media` in the current directory, and the demo account answering any number.
    pub fn embedded_default() -> Config {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        parse("", &base).0
    }

    /// Reads a file: the config (defaults where a value was missing or bad) and every problem
    /// found in it; relative paths resolve against the file's folder. `Err` only when the
    /// file cannot be read.
    pub fn read(path: &Path) -> Result<(Config, Vec<ConfigProblem>), ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigProblem {
                key: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        Ok(Config::parse(&text, &base))
    }

    /// Parses TOML text without touching the file system: the config (defaults where a value
    /// was missing or bad) and every problem found; relative paths resolve against `base_dir`.
    pub fn parse(s: &str, base_dir: &Path) -> (Config, Vec<ConfigProblem>) {
        parse(s, base_dir)
    }

    /// Parses TOML text and fails with every problem found in it. Only the config's own
    /// checks: `callflow::check::from_toml_str` adds those that need the media, the URL guard
    /// and the TTS hook.
    pub fn from_toml_str(s: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let (cfg, problems) = parse(s, base_dir);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// The demo IVR: welcome, a short pause, three digits, hang up.
fn demo_account() -> Account {
    let play = |id: &str| Node::new(ModuleData::Play(Play::new(id)));
    let flow = play("welcome").then(
        Node::new(ModuleData::Sleep(sleep::Sleep {
            duration: 300,
            unit: sleep::Unit::Ms,
        }))
        .then(
            play("digit-1")
                .then(play("digit-2").then(play("digit-3").then(Node::new(ModuleData::Hangup)))),
        ),
    );
    Account {
        id: DEMO_ACCOUNT_ID.to_string(),
        realm: DEMO_REALM.to_string(),
        api_key: None,
        pivot_secret: None,
        callflows: vec![CallflowEntry {
            id: None,
            name: Some("demo IVR".to_string()),
            numbers: vec![],
            // A constant that compiles; `.ok()` keeps a panic path out of the library anyway.
            patterns: Regex::new(".*").ok().into_iter().collect(),
            flow: std::sync::Arc::new(flow),
            source: "embedded default".to_string(),
        }],
        users: vec![],
        devices: vec![],
        resources: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// Reading: a table walker that records problems and returns None for what is missing or bad.

struct Reader {
    problems: Vec<ConfigProblem>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn check_keys(&mut self, t: &Table, path: &str, known: &[&str]) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.problem(
                    join(path, k),
                    format!("unknown key (known here: {})", known.join(", ")),
                );
            }
        }
    }

    fn wrong(&mut self, key: String, want: &str, v: &Value) {
        self.problem(key, format!("expected {want}, found {}", v.type_str()));
    }

    fn table<'t>(&mut self, t: &'t Table, path: &str, key: &str) -> Option<&'t Table> {
        match t.get(key)? {
            Value::Table(x) => Some(x),
            v => {
                self.wrong(join(path, key), "a table", v);
                None
            }
        }
    }

    fn tables<'t>(&mut self, t: &'t Table, path: &str, key: &str) -> Option<Vec<&'t Table>> {
        match t.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v {
                        Value::Table(x) => out.push(x),
                        v => self.wrong(format!("{}[{i}]", join(path, key)), "a table", v),
                    }
                }
                Some(out)
            }
            v => {
                self.wrong(join(path, key), "an array of tables", v);
                None
            }
        }
    }

    fn string(&mut self, t: &Table, path: &str, key: &str) -> Option<String> {
        match t.get(key)? {
            Value::String(s) => Some(s.clone()),
            v => {
                self.wrong(join(path, key), "a string", v);
                None
            }
        }
    }

    /// A string that must be there and not be empty.
    fn required(&mut self, t: &Table, path: &str, key: &str) -> Option<String> {
        match self.string(t, path, key) {
            Some(s) if !s.is_empty() => Some(s),
            Some(_) => {
                self.problem(join(path, key), "must not be empty");
                None
            }
            None => {
                if !t.contains_key(key) {
                    self.problem(join(path, key), "required");
                }
                None
            }
        }
    }

    fn int(&mut self, t: &Table, path: &str, key: &str, min: i64, max: i64) -> Option<i64> {
        match t.get(key)? {
            Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            Value::Integer(n) => {
                self.problem(
                    join(path, key),
                    format!("{n} is out of range {min}..={max}"),
                );
                None
            }
            v => {
                self.wrong(join(path, key), "an integer", v);
                None
            }
        }
    }

    fn strings(&mut self, t: &Table, path: &str, key: &str) -> Option<Vec<String>> {
        match t.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        v => self.wrong(format!("{}[{i}]", join(path, key)), "a string", v),
                    }
                }
                Some(out)
            }
            v => {
                self.wrong(join(path, key), "an array of strings", v);
                None
            }
        }
    }

    /// A list of strings each parsed by `f`; items that fail are reported by index.
    fn parsed_list<T, E: fmt::Display>(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        f: impl Fn(&str) -> Result<T, E>,
    ) -> Option<Vec<T>> {
        let items = self.strings(t, path, key)?;
        let mut out = Vec::new();
        for (i, s) in items.iter().enumerate() {
            match f(s) {
                Ok(x) => out.push(x),
                Err(e) => self.problem(format!("{}[{i}]", join(path, key)), e.to_string()),
            }
        }
        Some(out)
    }

    fn parsed<T, E: fmt::Display>(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        f: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        let s = self.string(t, path, key)?;
        match f(&s) {
            Ok(x) => Some(x),
            Err(e) => {
                self.problem(join(path, key), e.to_string());
                None
            }
        }
    }
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address with a port (like \"127.0.0.1:5060\" or \"[::1]:5060\")"
        )
    })
}

fn ip_addr(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    if p == ":memory:" {
        return PathBuf::from(p);
    }
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

/// Parses without touching the file system; returns the config (defaults where a value was
/// missing or bad) and every problem found.
fn parse(s: &str, base: &Path) -> (Config, Vec<ConfigProblem>) {
    let mut r = Reader { problems: vec![] };
    let root: Table = match s.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            let at = e
                .span()
                .map(|sp| {
                    let before = s.get(..sp.start).unwrap_or("");
                    let line = before.matches('\n').count() + 1;
                    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!(" at line {line}, column {col}")
                })
                .unwrap_or_default();
            r.problem("", format!("TOML syntax error{at}: {}", e.message().trim()));
            Table::new()
        }
    };
    r.check_keys(
        &root,
        "",
        &["sip", "media", "tts", "api", "store", "pivot", "accounts"],
    );
    let empty = Table::new();

    let t = r.table(&root, "", "sip").unwrap_or(&empty);
    let p = "sip";
    r.check_keys(
        t,
        p,
        &[
            "udp",
            "tcp",
            "advertise",
            "max_calls",
            "max_calls_per_second",
            "max_call_duration_s",
            "shutdown_grace_s",
            "tcp_idle_timeout_s",
            "max_message_bytes",
            "timer_t1_ms",
            "timer_t2_ms",
            "timer_t4_ms",
            "trusted_sources",
            "source_requests_per_second",
            "source_calls_per_second",
            "source_max_calls",
            "source_tcp_connections",
            "source_failures_per_minute",
            "source_block_s",
            "scanner_user_agents",
        ],
    );
    let default_sip: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
    let udp = r
        .parsed_list(t, p, "udp", socket_addr)
        .unwrap_or_else(|| vec![default_sip]);
    let tcp = r
        .parsed_list(t, p, "tcp", socket_addr)
        .unwrap_or_else(|| vec![default_sip]);
    if t.get("udp")
        .is_some_and(|v| v.as_array().is_some_and(|a| a.is_empty()))
        && t.get("tcp")
            .is_some_and(|v| v.as_array().is_some_and(|a| a.is_empty()))
    {
        r.problem(
            "sip",
            "no listen socket: sip.udp and sip.tcp are both empty",
        );
    }
    let sip = SipConfig {
        udp,
        tcp,
        advertise: r.parsed(t, p, "advertise", ip_addr),
        max_calls: r
            .int(t, p, "max_calls", 1, 1_000_000)
            .map_or(5000, |n| n as u32),
        max_calls_per_second: r
            .int(t, p, "max_calls_per_second", 1, 1_000_000)
            .map_or(4000, |n| n as u32),
        max_call_duration_s: r
            .int(t, p, "max_call_duration_s", 0, i64::from(u32::MAX))
            .map_or(14400, |n| n as u64),
        shutdown_grace_s: r
            .int(t, p, "shutdown_grace_s", 0, 86400)
            .map_or(30, |n| n as u64),
        tcp_idle_timeout_s: r
            .int(t, p, "tcp_idle_timeout_s", 1, 86400)
            .map_or(300, |n| n as u64),
        max_message_bytes: r
            .int(t, p, "max_message_bytes", 1024, 1_048_576)
            .map_or(65536, |n| n as usize),
        timer_t1_ms: r
            .int(t, p, "timer_t1_ms", 10, 10_000)
            .map_or(500, |n| n as u64),
        timer_t2_ms: r
            .int(t, p, "timer_t2_ms", 10, 60_000)
            .map_or(4000, |n| n as u64),
        timer_t4_ms: r
            .int(t, p, "timer_t4_ms", 10, 60_000)
            .map_or(5000, |n| n as u64),
        sources: read_source_limits(&mut r, t, p),
    };

    let t = r.table(&root, "", "media").unwrap_or(&empty);
    let p = "media";
    r.check_keys(
        t,
        p,
        &[
            "ip",
            "port_min",
            "port_max",
            "dir",
            "rtp_timeout_s",
            "early_media_unproven_s",
        ],
    );
    let dir = r.string(t, p, "dir");
    if dir.as_deref() == Some("") {
        r.problem("media.dir", "must not be empty");
    }
    let media = MediaConfig {
        ip: r
            .parsed(t, p, "ip", ip_addr)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port_min: r
            .int(t, p, "port_min", 1, 65535)
            .map_or(16384, |n| n as u16),
        port_max: r
            .int(t, p, "port_max", 1, 65535)
            .map_or(32767, |n| n as u16),
        dir_configured: dir.is_some(),
        dir: resolve(base, dir.as_deref().unwrap_or("media")),
        rtp_timeout_s: r
            .int(t, p, "rtp_timeout_s", 0, 86400)
            .map_or(60, |n| n as u64),
        early_media_unproven_s: r
            .int(t, p, "early_media_unproven_s", 0, 3600)
            .map_or(5, |n| n as u64),
    };
    if media.port_min > media.port_max {
        r.problem(
            "media.port_min",
            format!(
                "port_min {} is above port_max {}",
                media.port_min, media.port_max
            ),
        );
    } else if media.port_pairs() == 0 {
        r.problem(
            "media.port_max",
            format!(
                "the port range {}..={} holds no even/odd RTP port pair",
                media.port_min, media.port_max
            ),
        );
    }

    let t = r.table(&root, "", "tts").unwrap_or(&empty);
    r.check_keys(t, "tts", &["command", "voices", "timeout_ms"]);
    let command = r.strings(t, "tts", "command").unwrap_or_else(|| {
        ["espeak-ng", "-v", "{voice}", "-w", "{out}", "--", "{text}"]
            .map(String::from)
            .to_vec()
    });
    if command.is_empty() {
        r.problem("tts.command", "must name a program");
    }
    let mut voices: BTreeMap<String, String> = [("female", "en+f3"), ("male", "en+m3")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(v) = r.table(t, "tts", "voices") {
        voices.clear();
        for (k, val) in v {
            match val {
                Value::String(s) => {
                    voices.insert(k.clone(), s.clone());
                }
                other => r.wrong(format!("tts.voices.{k}"), "a string", other),
            }
        }
    }
    let timeout_ms = r
        .int(t, "tts", "timeout_ms", 100, 600_000)
        .map_or(10_000, |n| n as u64);
    let tts = TtsConfig {
        command,
        voices,
        timeout_ms,
    };

    let t = r.table(&root, "", "api").unwrap_or(&empty);
    r.check_keys(
        t,
        "api",
        &["listen", "token_lifetime_s", "auth_failures_per_minute"],
    );
    let api = ApiConfig {
        listen: r
            .parsed(t, "api", "listen", socket_addr)
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000)),
        token_lifetime_s: r
            .int(t, "api", "token_lifetime_s", 1, 2_592_000)
            .map_or(3600, |n| n as u64),
        auth_failures_per_minute: r
            .int(t, "api", "auth_failures_per_minute", 1, 100_000)
            .map_or(10, |n| n as u32),
    };

    let t = r.table(&root, "", "store").unwrap_or(&empty);
    r.check_keys(t, "store", &["sqlite", "debug_retention_s"]);
    let sqlite = r.string(t, "store", "sqlite");
    if sqlite.as_deref() == Some("") {
        r.problem("store.sqlite", "must not be empty");
    }
    let store = StoreConfig {
        sqlite: resolve(base, sqlite.as_deref().unwrap_or("pivotd.db")),
        debug_retention_s: r
            .int(t, "store", "debug_retention_s", 60, 31_622_400)
            .map_or(604_800, |n| n as u64),
    };

    let t = r.table(&root, "", "pivot").unwrap_or(&empty);
    r.check_keys(
        t,
        "pivot",
        &[
            "blacklist_cidrs",
            "blacklist_hosts",
            "max_req_timeout_ms",
            "max_requests_per_call",
            "ca_file",
        ],
    );
    let pivot = PivotConfig {
        blacklist_cidrs: r
            .parsed_list(t, "pivot", "blacklist_cidrs", parse_cidr)
            .unwrap_or_else(default_blacklist),
        blacklist_hosts: r
            .strings(t, "pivot", "blacklist_hosts")
            .map(|v| v.into_iter().map(|h| h.to_ascii_lowercase()).collect())
            .unwrap_or_else(|| vec!["localhost".to_string()]),
        max_req_timeout_ms: r
            .int(t, "pivot", "max_req_timeout_ms", 100, 60_000)
            .map_or(5000, |n| n as u64),
        max_requests_per_call: r
            .int(t, "pivot", "max_requests_per_call", 1, 100_000)
            .map_or(100, |n| n as u32),
        ca_file: r.string(t, "pivot", "ca_file").map(|f| resolve(base, &f)),
    };

    let accounts = match r.tables(&root, "", "accounts") {
        None => vec![demo_account()],
        Some(tables) => {
            let accounts: Vec<Account> = tables
                .iter()
                .enumerate()
                .filter_map(|(i, t)| read_account(&mut r, t, &format!("accounts[{i}]")))
                .collect();
            let mut ids: HashMap<&str, usize> = HashMap::new();
            let mut realms: HashMap<String, usize> = HashMap::new();
            for (i, a) in accounts.iter().enumerate() {
                if let Some(j) = ids.insert(&a.id, i) {
                    r.problem(
                        format!("accounts[{i}].id"),
                        format!("{:?} is also the id of accounts[{j}]", a.id),
                    );
                }
                if let Some(j) = realms.insert(a.realm.to_ascii_lowercase(), i) {
                    r.problem(
                        format!("accounts[{i}].realm"),
                        format!("{:?} is also the realm of accounts[{j}]", a.realm),
                    );
                }
            }
            accounts
        }
    };

    (
        Config {
            sip,
            media,
            tts,
            api,
            store,
            pivot,
            accounts,
        },
        r.problems,
    )
}

/// One account; `None` when a required key is missing (its problems are recorded).
/// Indices in key paths follow the file, even when an earlier entry was unusable.
/// The `[sip]` keys of the per-source limits.
fn read_source_limits(r: &mut Reader, t: &Table, p: &str) -> SourceLimits {
    let d = SourceLimits::default();
    let mut limit =
        |key: &str, default: u32| r.int(t, p, key, 0, 1_000_000).map_or(default, |n| n as u32);
    let requests_per_second = limit("source_requests_per_second", d.requests_per_second);
    let calls_per_second = limit("source_calls_per_second", d.calls_per_second);
    let max_calls = limit("source_max_calls", d.max_calls);
    let tcp_connections = limit("source_tcp_connections", d.tcp_connections);
    let failures_per_minute = limit("source_failures_per_minute", d.failures_per_minute);
    SourceLimits {
        trusted: r
            .parsed_list(t, p, "trusted_sources", ip_net)
            .unwrap_or_default(),
        requests_per_second,
        calls_per_second,
        max_calls,
        tcp_connections,
        failures_per_minute,
        block: r
            .int(t, p, "source_block_s", 0, 86400 * 7)
            .map_or(d.block, |n| Duration::from_secs(n as u64)),
        scanner_user_agents: r
            .strings(t, p, "scanner_user_agents")
            .map(|v| v.into_iter().map(|s| s.to_ascii_lowercase()).collect())
            .unwrap_or(d.scanner_user_agents),
    }
}

/// A CIDR block, or a bare address as its /32 or /128.
fn ip_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR block"))
}

fn read_account(r: &mut Reader, t: &Table, p: &str) -> Option<Account> {
    r.check_keys(
        t,
        p,
        &[
            "id",
            "realm",
            "api_key",
            "pivot_secret",
            "callflows",
            "users",
            "devices",
            "resources",
        ],
    );
    let id = r.required(t, p, "id");
    let realm = r.required(t, p, "realm");
    let api_key = r.string(t, p, "api_key");
    if api_key.as_deref() == Some("") {
        r.problem(join(p, "api_key"), "must not be empty");
    }
    let pivot_secret = r.string(t, p, "pivot_secret");
    if pivot_secret.as_deref() == Some("") {
        r.problem(join(p, "pivot_secret"), "must not be empty");
    }

    let mut callflows = Vec::new();
    // number -> index of the callflow that has it
    let mut numbers_seen: HashMap<String, usize> = HashMap::new();
    for (j, t) in r
        .tables(t, p, "callflows")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let cp = format!("{p}.callflows[{j}]");
        r.check_keys(t, &cp, &["id", "name", "numbers", "patterns", "flow"]);
        let numbers = r.strings(t, &cp, "numbers").unwrap_or_default();
        for (k, n) in numbers.iter().enumerate() {
            let key = format!("{cp}.numbers[{k}]");
            let len = n.chars().count();
            if !(1..=36).contains(&len) {
                r.problem(key, "a number must be 1 to 36 characters long");
            } else if let Some(prev) = numbers_seen.insert(n.clone(), j) {
                let msg = if prev == j {
                    format!("{n:?} is listed twice")
                } else {
                    format!("{n:?} is already a number of {p}.callflows[{prev}]")
                };
                r.problem(key, msg);
            }
        }
        let patterns: Vec<Regex> = r
            .parsed_list(t, &cp, "patterns", |s| {
                if s.is_empty() {
                    return Err("a pattern must not be empty".to_string());
                }
                Regex::new(s).map_err(|e| {
                    let text = e.to_string();
                    let lines: Vec<&str> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    format!("invalid regex {s:?}: {}", lines.join(" "))
                })
            })
            .unwrap_or_default();
        let pattern_count = t
            .get("patterns")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if numbers.is_empty() && pattern_count == 0 {
            r.problem(
                join(&cp, "numbers"),
                "a callflow needs at least one number or pattern",
            );
        }
        let fp = join(&cp, "flow");
        let flow = match t.get("flow") {
            None => {
                r.problem(fp.clone(), "required");
                None
            }
            Some(Value::String(json)) => match serde_json::from_str::<serde_json::Value>(json) {
                Ok(v) => Some(v),
                Err(e) => {
                    r.problem(fp.clone(), format!("not valid JSON: {e}"));
                    None
                }
            },
            Some(v @ Value::Table(_)) => match serde_json::to_value(v) {
                Ok(v) => Some(v),
                Err(e) => {
                    r.problem(fp.clone(), format!("cannot read the flow: {e}"));
                    None
                }
            },
            Some(v) => {
                r.wrong(fp.clone(), "a table (or a string of Kazoo JSON)", v);
                None
            }
        };
        let flow = flow.and_then(|v| match Node::from_json_at(&v, &fp) {
            Ok(n) => Some(n),
            Err(e) => {
                r.problem(e.path, e.message);
                None
            }
        });
        if let Some(flow) = flow {
            callflows.push(CallflowEntry {
                id: r.string(t, &cp, "id"),
                name: r.string(t, &cp, "name"),
                numbers,
                patterns,
                flow: std::sync::Arc::new(flow),
                source: cp.clone(),
            });
        }
    }

    let mut users = Vec::new();
    for (j, t) in r
        .tables(t, p, "users")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let up = format!("{p}.users[{j}]");
        r.check_keys(t, &up, &["id", "presence_id", "first_name", "last_name"]);
        let id = r.required(t, &up, "id");
        let user = User {
            id: id.unwrap_or_default(),
            presence_id: r.string(t, &up, "presence_id"),
            first_name: r.string(t, &up, "first_name"),
            last_name: r.string(t, &up, "last_name"),
        };
        if users
            .iter()
            .any(|u: &User| u.id == user.id && !u.id.is_empty())
        {
            r.problem(
                join(&up, "id"),
                format!("{:?} is used by another user", user.id),
            );
        }
        users.push(user);
    }

    let mut devices = Vec::new();
    for (j, t) in r
        .tables(t, p, "devices")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let dp = format!("{p}.devices[{j}]");
        r.check_keys(t, &dp, &["id", "owner_id", "username", "password", "name"]);
        let id = r.required(t, &dp, "id");
        let device = Device {
            id: id.unwrap_or_default(),
            owner_id: r.string(t, &dp, "owner_id"),
            username: r.string(t, &dp, "username"),
            password: r.string(t, &dp, "password"),
            name: r.string(t, &dp, "name"),
        };
        if let Some(owner) = &device.owner_id {
            if !users.iter().any(|u| &u.id == owner) {
                r.problem(
                    join(&dp, "owner_id"),
                    format!("no user {owner:?} in this account"),
                );
            }
        }
        if devices
            .iter()
            .any(|d: &Device| d.id == device.id && !d.id.is_empty())
        {
            r.problem(
                join(&dp, "id"),
                format!("{:?} is used by another device", device.id),
            );
        }
        if let Some(u) = &device.username {
            if devices
                .iter()
                .any(|d: &Device| d.username.as_ref() == Some(u))
            {
                r.problem(
                    join(&dp, "username"),
                    format!("{u:?} is the username of another device"),
                );
            }
        }
        devices.push(device);
    }

    let mut resources = Vec::new();
    for (j, t) in r
        .tables(t, p, "resources")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let rp = format!("{p}.resources[{j}]");
        r.check_keys(t, &rp, &["id", "gateway", "name"]);
        let id = r.required(t, &rp, "id");
        let gateway = r.required(t, &rp, "gateway");
        if let Some(g) = &gateway {
            let lower = g.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("sip:")
                .or_else(|| lower.strip_prefix("sips:"));
            if rest.is_none_or(|h| h.is_empty()) {
                r.problem(
                    join(&rp, "gateway"),
                    format!("{g:?} is not a sip: or sips: URI"),
                );
            }
        }
        resources.push(Resource {
            id: id.unwrap_or_default(),
            gateway: gateway.unwrap_or_default(),
            name: r.string(t, &rp, "name"),
        });
    }

    Some(Account {
        id: id?,
        realm: realm?,
        api_key,
        pivot_secret,
        callflows,
        users,
        devices,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty folder under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "pivotd-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const DESIGN_EXAMPLE: &str = r#"
[sip]
udp = ["127.0.0.1:5060"]          # UDP listen sockets ([] = none)
tcp = ["127.0.0.1:5060"]          # TCP listen sockets ([] = none)
# advertise = "203.0.113.5"
[media]
ip = "127.0.0.1"
port_min = 16384
port_max = 32767
dir = "media"
[tts]
command = ["espeak-ng", "-v", "{voice}", "-w", "{out}", "--", "{text}"]
voices = { female = "en+f3", male = "en+m3" }
[api]
listen = "127.0.0.1:8000"
[store]
sqlite = "pivotd.db"
[pivot]
blacklist_cidrs = []
blacklist_hosts = []
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"   # sent as Account-ID
realm = "pbx.example.test"
api_key = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
[[accounts.callflows]]
numbers = ["5000"]
patterns = []
flow = { module = "pivot", data = { voice_url = "http://127.0.0.1:9000/start", method = "get" } }
[[accounts.users]]
id = "u1"
presence_id = "2001"
[[accounts.devices]]
id = "d1"
owner_id = "u1"
username = "2001"
password = "s3cret"
[[accounts.resources]]
id = "carrier1"
gateway = "sip:127.0.0.1:5070"
"#;

    fn keys(e: &ConfigErrors) -> Vec<&str> {
        e.0.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn design_example_reads_every_key() {
        let base = Path::new("/srv/pivotd");
        let (cfg, problems) = parse(DESIGN_EXAMPLE, base);
        assert!(problems.is_empty(), "{problems:?}");

        assert_eq!(
            cfg.sip.udp,
            ["127.0.0.1:5060".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(cfg.sip.tcp, cfg.sip.udp);
        assert_eq!(cfg.sip.advertise, None);
        assert_eq!((cfg.media.port_min, cfg.media.port_max), (16384, 32767));
        assert_eq!(cfg.media.dir, base.join("media"));
        assert!(cfg.media.dir_configured);
        assert_eq!(cfg.tts.command.len(), 7);
        assert_eq!(cfg.tts.voices["male"], "en+m3");
        assert_eq!(cfg.tts.timeout_ms, 10_000);
        assert_eq!(cfg.api.listen.port(), 8000);
        assert_eq!(cfg.store.sqlite, base.join("pivotd.db"));
        assert!(cfg.pivot.blacklist_cidrs.is_empty());
        assert!(cfg.pivot.blacklist_hosts.is_empty());
        let a = &cfg.accounts[0];
        assert_eq!(cfg.accounts.len(), 1);
        assert_eq!(a.id, "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b");
        assert_eq!(a.realm, "pbx.example.test");
        assert_eq!(a.api_key.as_deref().map(str::len), Some(64));
        assert_eq!(a.users[0].presence_id.as_deref(), Some("2001"));
        assert_eq!(a.devices[0].password.as_deref(), Some("s3cret"));
        assert_eq!(a.devices[0].owner_id.as_deref(), Some("u1"));
        assert_eq!(a.resources[0].gateway, "sip:127.0.0.1:5070");
    }

    #[test]
    fn design_example_with_a_known_module_loads() {
        let dir = temp_dir("design");
        std::fs::create_dir(dir.join("media")).unwrap();
        let text = DESIGN_EXAMPLE.replace(
            r#"flow = { module = "pivot", data = { voice_url = "http://127.0.0.1:9000/start", method = "get" } }"#,
            r#"flow = { module = "play", data = { id = "welcome" }, children = { _ = { module = "hangup" } } }"#,
        );
        let path = dir.join("pivotd.toml");
        std::fs::write(&path, text).unwrap();
        let (cfg, problems) = Config::read(&path).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.accounts[0].callflows[0].numbers, ["5000"]);
        assert_eq!(cfg.accounts[0].callflows[0].flow.module.name(), "play");
        assert_eq!(cfg.media.dir, dir.join("media"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn embedded_default_matches_the_design() {
        let cfg = Config::embedded_default();
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(cfg.sip.udp, [local(5060)]);
        assert_eq!(cfg.sip.tcp, [local(5060)]);
        assert_eq!(cfg.api.listen, local(8000));
        assert_eq!(cfg.store.sqlite.file_name().unwrap(), "pivotd.db");
        assert_eq!(cfg.media.dir.file_name().unwrap(), "media");
        assert!(!cfg.media.dir_configured);
        assert_eq!(cfg.sip.max_calls, 5000);
        assert_eq!(cfg.sip.max_calls_per_second, 4000);
        assert_eq!(
            cfg.sip.max_call_duration(),
            Some(Duration::from_secs(14400))
        );
        assert_eq!(cfg.sip.shutdown_grace(), Duration::from_secs(30));
        assert_eq!(cfg.sip.tcp_idle_timeout(), Duration::from_secs(300));
        assert_eq!(cfg.sip.max_message_bytes, 65536);
        assert_eq!(cfg.media.rtp_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(
            cfg.pivot.blacklist_cidrs.len(),
            DEFAULT_BLACKLIST_CIDRS.len()
        );
        assert_eq!(cfg.pivot.blacklist_hosts, ["localhost"]);
        assert_eq!(cfg.accounts.len(), 1);
        // The demo account: any number (routing.rs checks it answers at any host).
        let a = &cfg.accounts[0];
        assert_eq!(a.id, DEMO_ACCOUNT_ID);
        assert!(a.callflows[0].patterns[0].is_match("12345"));
        assert_eq!(a.callflows[0].flow.module.name(), "play");
        // An empty file gives the same (callflow::check passes it against the embedded prompts).
        let empty_dir = temp_dir("empty");
        let cfg = Config::from_toml_str("", &empty_dir).unwrap();
        assert_eq!(cfg.accounts[0].realm, DEMO_REALM);
        assert_eq!(cfg.media.prompt_dir(), None);
        std::fs::remove_dir_all(empty_dir).unwrap();
    }

    #[test]
    fn a_file_with_accounts_has_no_demo_account() {
        let (cfg, problems) = parse(
            r#"[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["1"]
flow = { module = "hangup" }"#,
            Path::new("/x"),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.accounts.len(), 1);
        assert_eq!(cfg.accounts[0].id, "a");
        // Other sections keep their defaults.
        assert_eq!(cfg.sip.max_calls, 5000);
        assert_eq!(cfg.media.port_min, 16384);
    }

    #[test]
    fn each_bad_value_reports_its_key() {
        let cases: &[(&str, &str)] = &[
            ("[sip]\nudp = [\"127.0.0.1\"]", "sip.udp[0]"),
            ("[sip]\ntcp = [\"localhost:5060\"]", "sip.tcp[0]"),
            ("[sip]\nudp = \"127.0.0.1:5060\"", "sip.udp"),
            ("[sip]\nadvertise = \"203.0.113.500\"", "sip.advertise"),
            ("[sip]\nmax_calls = 0", "sip.max_calls"),
            (
                "[sip]\nmax_calls_per_second = \"10\"",
                "sip.max_calls_per_second",
            ),
            ("[sip]\nmax_call_duration_s = -1", "sip.max_call_duration_s"),
            ("[sip]\nmax_message_bytes = 10", "sip.max_message_bytes"),
            ("[sip]\ntcp_idle_timeout_s = 0", "sip.tcp_idle_timeout_s"),
            ("[sip]\nudp = []\ntcp = []", "sip"),
            ("[media]\nip = \"nope\"", "media.ip"),
            (
                "[media]\nport_min = 20000\nport_max = 10000",
                "media.port_min",
            ),
            (
                "[media]\nport_min = 20001\nport_max = 20001",
                "media.port_max",
            ),
            ("[media]\nport_min = 70000", "media.port_min"),
            ("[media]\nrtp_timeout_s = 1.5", "media.rtp_timeout_s"),
            ("[media]\ndir = \"\"", "media.dir"),
            ("[api]\nlisten = \"127.0.0.1\"", "api.listen"),
            ("[store]\nsqlite = 5", "store.sqlite"),
            (
                "[pivot]\nblacklist_cidrs = [\"10.0.0.0/33\"]",
                "pivot.blacklist_cidrs[0]",
            ),
            ("[tts]\ncommand = []", "tts.command"),
            ("[tts]\ntimeout_ms = 50", "tts.timeout_ms"),
            ("sip = 5", "sip"),
            ("[[accounts]]\nrealm = \"r\"", "accounts[0].id"),
            (
                "[[accounts]]\nid = \"a\"\nrealm = \"\"",
                "accounts[0].realm",
            ),
        ];
        for (text, key) in cases {
            let (_, problems) = parse(text, Path::new("/x"));
            assert!(
                problems.iter().any(|p| p.key == *key),
                "{text:?}: wanted {key}, got {problems:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml_str(
            "bogus = 1\n[sip]\nudpp = []\n[[accounts]]\nid = \"a\"\nrealm = \"r\"\ncolour = \"red\"\n[[accounts.callflows]]\nnumbers = [\"1\"]\nflow = { module = \"hangup\" }\nextra = true",
            Path::new("/x"),
        )
        .unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "bogus",
                "sip.udpp",
                "accounts[0].colour",
                "accounts[0].callflows[0].extra"
            ]
        );
        assert!(e.0[1].message.starts_with("unknown key"));
    }

    #[test]
    fn many_problems_are_reported_together() {
        let text = r#"
[sip]
udp = ["bad"]
max_calls = -5
[media]
port_min = 30000
port_max = 20000
[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["100", "200"]
patterns = ["^(9"]
flow = { module = "response", data = { code = "abc" } }
[[accounts.callflows]]
numbers = ["200"]
flow = { module = "play", data = { id = "welcome" }, children = { _ = { module = "dance" } } }
[[accounts.callflows]]
patterns = ["^3"]
flow = { module = "sleep", data = { duration = "10", unit = "days" } }
"#;
        let e = Config::from_toml_str(text, Path::new("/x")).unwrap_err();
        let k = keys(&e);
        for want in [
            "sip.udp[0]",
            "sip.max_calls",
            "media.port_min",
            "accounts[0].callflows[0].patterns[0]",
            "accounts[0].callflows[0].flow.data.code",
            "accounts[0].callflows[1].numbers[0]",
            "accounts[0].callflows[1].flow.children._.module",
            "accounts[0].callflows[2].flow.data.unit",
        ] {
            assert!(k.contains(&want), "missing {want} in {k:?}");
        }
        assert_eq!(k.len(), 8, "{e}");
        let dup = e.get("accounts[0].callflows[1].numbers[0]").unwrap();
        assert!(
            dup.message.contains("accounts[0].callflows[0]"),
            "{}",
            dup.message
        );
        assert!(e
            .get("accounts[0].callflows[1].flow.children._.module")
            .unwrap()
            .message
            .contains("dance"));
        // One line per problem.
        assert_eq!(e.to_string().lines().count(), 8);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = temp_dir("paths");
        std::fs::create_dir_all(dir.join("sub").join("sounds")).unwrap();
        let path = dir.join("sub").join("p.toml");
        std::fs::write(
            &path,
            "[media]\ndir = \"sounds\"\n[store]\nsqlite = \"data/p.db\"",
        )
        .unwrap();
        let (cfg, problems) = Config::read(&path).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.media.dir, dir.join("sub").join("sounds"));
        assert_eq!(cfg.store.sqlite, dir.join("sub").join("data").join("p.db"));
        assert_eq!(cfg.media.prompt_dir(), Some(dir.join("sub").join("sounds")));

        let (cfg, _) = parse("[store]\nsqlite = \"/var/lib/p.db\"", &dir);
        assert_eq!(cfg.store.sqlite, Path::new("/var/lib/p.db"));
        let (cfg, _) = parse("[store]\nsqlite = \":memory:\"", &dir);
        assert_eq!(cfg.store.sqlite, Path::new(":memory:"));

        let e = Config::read(&dir.join("missing.toml")).unwrap_err();
        assert!(e.0[0].message.starts_with("cannot read"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = Config::from_toml_str("[sip]\nudp = [\n", Path::new("/x")).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].message.contains("line "), "{e}");
    }

    #[test]
    fn flow_may_be_given_as_kazoo_json() {
        let (cfg, problems) = parse(
            r#"[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["1"]
flow = '{"module": "response", "data": {"code": "486", "message": "Busy Here"}}'
[[accounts.callflows]]
numbers = ["2"]
flow = '{"module": '"#,
            Path::new("/x"),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "accounts[0].callflows[1].flow");
        match &cfg.accounts[0].callflows[0].flow.module {
            ModuleData::Response(r) => assert_eq!(r.code, 486),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn account_and_device_cross_checks() {
        let (_, problems) = parse(
            r#"
[[accounts]]
id = "a"
realm = "x.test"
[[accounts.devices]]
id = "d1"
owner_id = "nobody"
username = "u"
[[accounts.devices]]
id = "d1"
username = "u"
[[accounts.resources]]
id = "r"
gateway = "http://gw"
[[accounts]]
id = "a"
realm = "X.test"
[[accounts.callflows]]
flow = { module = "hangup" }
"#,
            Path::new("/x"),
        );
        let k: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "accounts[0].devices[0].owner_id",
            "accounts[0].devices[1].id",
            "accounts[0].devices[1].username",
            "accounts[0].resources[0].gateway",
            "accounts[1].callflows[0].numbers",
            "accounts[1].id",
            "accounts[1].realm",
        ] {
            assert!(k.contains(&want), "missing {want} in {k:?}");
        }
    }

    #[test]
    fn port_pairs_count_even_starts() {
        let m = |port_min, port_max| MediaConfig {
            port_min,
            port_max,
            ..Config::embedded_default().media
        };
        assert_eq!(m(16384, 32767).port_pairs(), 8192);
        assert_eq!(m(10001, 10004).port_pairs(), 1);
        assert_eq!(m(10000, 10003).port_pairs(), 2);
        assert_eq!(m(10000, 10000).port_pairs(), 0);
        assert_eq!(m(10001, 10002).port_pairs(), 0);
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = parse_cidr("10.0.0.0/8").unwrap();
        assert!(c.contains(&"10.200.1.1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"11.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"::1".parse::<IpAddr>().unwrap()));
        let c = parse_cidr("fe80::/10").unwrap();
        assert!(c.contains(&"fe80::1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"fec0::1".parse::<IpAddr>().unwrap()));
        assert_eq!(parse_cidr("::1").unwrap().prefix_len(), 128);
        assert_eq!(parse_cidr("192.0.2.7").unwrap().prefix_len(), 32);
        assert!(parse_cidr("0.0.0.0/0")
            .unwrap()
            .contains(&"8.8.8.8".parse::<IpAddr>().unwrap()));
        // The address is kept as written; containment is the block's.
        let c = parse_cidr("10.1.2.3/8").unwrap();
        assert_eq!(c.to_string(), "10.1.2.3/8");
        assert!(c.contains(&"10.200.1.1".parse::<IpAddr>().unwrap()));
        assert_eq!(
            parse_cidr("10.0.0.0/x").unwrap_err().to_string(),
            "prefix \"x\" is not 0..=32"
        );
        assert_eq!(
            parse_cidr("::/129").unwrap_err().to_string(),
            "prefix \"129\" is not 0..=128"
        );
        assert_eq!(
            parse_cidr("example.com").unwrap_err().to_string(),
            "\"example.com\" is not an IP address"
        );
    }
}
