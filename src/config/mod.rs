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
//!
//! This file holds the types. Reading them: `reader` (the table walker and the value parsers),
//! `parse` (one function per section), `accounts` (`[[accounts]]`), `checks` (across keys),
//! `demo` (the embedded demo account).

mod accounts;
mod checks;
mod demo;
pub mod live;
mod parse;
mod reader;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;

use crate::flow::Node;

pub use demo::{DEMO_ACCOUNT_ID, DEMO_REALM};
pub use reader::{is_host_name, parse_cidr, parse_gateway, parse_sip_target, ValueError};
pub use tls::{read_certificates, read_certified_key, TlsFileError};

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub tts: TtsConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub pivot: PivotConfig,
    pub presence: PresenceConfig,
    /// A file with `[[accounts]]` has exactly those; with none, the demo account.
    pub accounts: Vec<Account>,
    /// `[[resources]]`: the system's carriers (Kazoo's global resources), tried for a number
    /// a bridge sends to the system's resources rather than the account's. Empty: those
    /// bridges use the account's carriers.
    pub resources: Vec<Resource>,
}

/// `[sip]`: listen sockets and call limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipConfig {
    /// `udp`: UDP listen sockets (`[]` = none). Default `["127.0.0.1:5060"]`.
    pub udp: Vec<SocketAddr>,
    /// `tcp`: TCP listen sockets (`[]` = none). Default `["127.0.0.1:5060"]`.
    pub tcp: Vec<SocketAddr>,
    /// `tls`: SIP over TLS listen sockets (RFC 3261 §26). Default `[]`; needs `tls_cert` and
    /// `tls_key`.
    pub tls: Vec<SocketAddr>,
    /// `tls_cert`: the certificate chain (PEM, ours first) the TLS listeners present.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: its private key (PEM), checked at load to belong to `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `tls_ca_file`: extra trusted CA certificates (PEM) for TLS carriers, beside the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_handshake_timeout_ms`: a TLS client must finish its handshake within this, or its
    /// connection is closed (a silent client holds no slot). Default 5000, 100..=60000.
    pub tls_handshake_timeout_ms: u64,
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
    /// `udp_receive_buffer_bytes`: the receive buffer asked of the kernel for each UDP socket
    /// (0 = the kernel's default, about 166 datagrams). A burst beyond it (hundreds of
    /// callers hanging up at once) is dropped before pivotd reads it. Default 4194304,
    /// 0..=1073741824.
    pub udp_receive_buffer_bytes: usize,
    /// `udp_readers`: sockets bound to each UDP address with `SO_REUSEPORT`, each read by its
    /// own task (the kernel keeps one source's datagrams on one socket, in order). 1 = one
    /// plain socket. Default: the number of available cores, 1..=256.
    pub udp_readers: usize,
    /// `timer_t1_ms`: RFC 3261 T1, the round-trip estimate every retransmission timer derives
    /// from (Timer H, which ends an unacknowledged call, is 64*T1). Default 500, 10..=10000.
    pub timer_t1_ms: u64,
    /// `timer_t2_ms`: RFC 3261 T2, the retransmission interval cap. Default 4000.
    pub timer_t2_ms: u64,
    /// `timer_t4_ms`: RFC 3261 T4, how long a message may linger in the network. Default 5000.
    pub timer_t4_ms: u64,
    /// `invite_response_timeout_ms`: how long a bridge's INVITE may go without any response
    /// (not even 100 Trying) before the bridge counts that destination as 408 and tries the
    /// next carrier, rather than waiting for Timer B. Default 5000, 100..=120000.
    pub invite_response_timeout_ms: u64,
    /// Admission that follows the measured load (`overload_*` keys).
    pub overload: OverloadConfig,
    /// Per-source limits: `trusted_sources` (CIDRs held to the global limits only, default
    /// none), `trusted_proxies` (CIDRs of proxies in front, default none),
    /// `source_requests_per_second` (200), `source_calls_per_second` (20),
    /// `source_max_calls` (100), `source_tcp_connections` (20), `source_failures_per_minute`
    /// (20), `source_block_s` (300), `scanner_user_agents` (a list replacing the default
    /// list; `[]` = none). A limit of 0 is off.
    pub sources: SourceLimits,
    /// Registrar and digest authentication keys.
    pub auth: AuthConfig,
}

/// `[sip] overload_*`: when the box is overloaded, new INVITEs get 503 with Retry-After
/// before they cost a call (`sip::overload` decides, the SIP shards refuse).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// `overload_queue_delay_ms`: overload starts when every SIP message of an interval waited
    /// at least this long between its arrival and its handling. Default 20, 0 = off,
    /// 0..=10000.
    pub queue_delay_ms: u64,
    /// `overload_queue_delay_exit_ms`: while overloaded, a new INVITE that waited this long is
    /// refused; overload ends after a second below it. Default 10, 1..=10000, below
    /// `overload_queue_delay_ms`.
    pub queue_delay_exit_ms: u64,
    /// `overload_pacer_lateness_ms`: overload also starts when every RTP packet of an interval
    /// went out at least this late (the pacer lacks CPU); it ends below half of it. Default
    /// 10, 0 = off, 0..=1000.
    pub pacer_lateness_ms: u64,
    /// `overload_retry_after_s`: the Retry-After of these 503s. Default 1, 1..=600.
    pub retry_after_s: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            queue_delay_ms: 20,
            queue_delay_exit_ms: 10,
            pacer_lateness_ms: 10,
            retry_after_s: 1,
        }
    }
}

/// `[sip]` keys of the registrar and of digest authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// `digest_algorithms`: offered in this order, one challenge each (RFC 8760); a client
    /// answers the first it supports. Default `["MD5", "SHA-256"]`: clients that read only
    /// the first challenge (SIPp 3.6) need MD5 first.
    pub digest_algorithms: Vec<String>,
    /// `digest_md5_only_user_agents`: User-Agent substrings (compared lowercase) of clients
    /// that give up on a 401/407 offering any algorithm but MD5; they are offered MD5 alone.
    /// Default `["baresip"]` (libre before 2.x: "Function not implemented").
    pub md5_only_user_agents: Vec<String>,
    /// `allow_unauthenticated`: whether INVITEs from sources that are neither a carrier's
    /// `inbound_cidrs` nor authenticated are served. Left out: yes while no device exists,
    /// no once one does (config or API).
    pub allow_unauthenticated: Option<bool>,
    /// `nonce_lifetime_s`: how long a challenge's nonce is good for; older ones get a new
    /// challenge with `stale=true`. Default 300, 10..=86400.
    pub nonce_lifetime_s: u64,
    /// `register_min_expires`: shorter registrations get 423 with Min-Expires. Default 60.
    pub register_min_expires: u32,
    /// `register_max_expires`: longer ones are cut to this. Default 3600.
    pub register_max_expires: u32,
    /// `register_default_expires`: when the REGISTER names none. Default 3600.
    pub register_default_expires: u32,
    /// `register_max_contacts`: bindings per device; a new one beyond replaces the one that
    /// expires first. Default 10, 1..=100.
    pub register_max_contacts: u32,
}

/// The digest algorithms pivotd knows, by their RFC 8760 names.
pub const DIGEST_ALGORITHMS: [&str; 2] = ["MD5", "SHA-256"];

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            digest_algorithms: DIGEST_ALGORITHMS.iter().map(|s| s.to_string()).collect(),
            md5_only_user_agents: vec!["baresip".to_string()],
            allow_unauthenticated: None,
            nonce_lifetime_s: 300,
            register_min_expires: 60,
            register_max_expires: 3600,
            register_default_expires: 3600,
            register_max_contacts: 10,
        }
    }
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
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.tls_handshake_timeout_ms)
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
    /// `trusted_proxies`: proxies in front (Kamailio) whose requests are not limited as a
    /// whole; the caller's address is read from the Via of the hop before them.
    pub proxies: Vec<IpNet>,
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
            proxies: Vec::new(),
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
    /// `encryption`: SRTP (SDES keys, which travel only over TLS): `off`, `optional` (SRTP when
    /// a caller over TLS offers it) or `required` (a call that cannot have it gets 488).
    /// Default `optional`; an account may set its own.
    pub encryption: MediaEncryption,
}

/// Whether a call's audio is SRTP (`[media] encryption`, `[[accounts]] encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEncryption {
    /// Plain RTP always (an SRTP offer is answered with RTP/AVP).
    Off,
    /// SRTP when the caller offers it over TLS, plain RTP otherwise.
    Optional,
    /// SRTP or no call: 488 for a plain offer or one not over TLS.
    Required,
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
    /// as is). Default `pivotd.db`; not opened when `postgres` is given.
    pub sqlite: PathBuf,
    /// `postgres`: a `postgres://user:password@host:port/dbname` URL. Given, the store is that
    /// PostgreSQL database (shared by several pivotd nodes) instead of the SQLite file; giving
    /// `sqlite` too is a problem. Default none.
    pub postgres: Option<PostgresUrl>,
    /// `debug_retention_s`: pivot debug records older than this are purged (checked every
    /// few minutes). Default 604800 (7 days), 60..=31622400.
    pub debug_retention_s: u64,
}

/// A PostgreSQL connection URL that parses (`postgres://` or `postgresql://`, at least one
/// host). Its `Debug` hides the password, so a logged config does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// Checks `url`: the reason it is refused otherwise (which never quotes the URL: it
    /// may hold a password).
    pub fn parse(url: &str) -> Result<PostgresUrl, PostgresUrlError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(PostgresUrlError::Scheme);
        }
        let cfg: tokio_postgres::Config = url.parse().map_err(PostgresUrlError::Invalid)?;
        if cfg.get_hosts().is_empty() {
            return Err(PostgresUrlError::NoHost);
        }
        Ok(PostgresUrl(url.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `[store] postgres` is refused.
#[derive(Debug, thiserror::Error)]
pub enum PostgresUrlError {
    #[error("must be a postgres:// or postgresql:// URL")]
    Scheme,
    #[error("not a PostgreSQL URL: {0}")]
    Invalid(#[source] tokio_postgres::Error),
    #[error("names no host")]
    NoHost,
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `postgres://user:secret@host` → `postgres://user:***@host`.
        let shown = match (self.0.find("://"), self.0.rfind('@')) {
            (Some(s), Some(at)) if at > s => match self.0[s + 3..at].find(':') {
                Some(c) => format!("{}:***{}", &self.0[..s + 3 + c], &self.0[at..]),
                None => self.0.clone(),
            },
            _ => self.0.clone(),
        };
        write!(f, "PostgresUrl({shown:?})")
    }
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

/// `[presence]`: SUBSCRIBE/NOTIFY (RFC 6665) for the `dialog` and `presence` packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// `min_expires`: a SUBSCRIBE asking for less (but not 0) gets 423 with Min-Expires.
    /// Default 60, 1..=86400.
    pub min_expires: u32,
    /// `max_expires`: longer subscriptions are cut to this. Default 3600, 1..=604800.
    pub max_expires: u32,
    /// `default_expires`: when a SUBSCRIBE names none (RFC 4235 §3.4 and RFC 3856 §6.4 suggest
    /// 3600), kept within min..=max. Default 3600.
    pub default_expires: u32,
    /// `max_notifies_in_flight`: NOTIFY transactions pending at once across all subscribers;
    /// the rest wait their turn (each subscription has at most one in flight and is sent the
    /// latest state when its turn comes). Default 256, 1..=100000.
    pub max_notifies_in_flight: u32,
    /// `max_subscriptions_per_device`: a device with this many live subscriptions gets 403
    /// for another. Default 200 (a desk phone with sidecars watches ~100 keys), 1..=100000.
    pub max_subscriptions_per_device: u32,
    /// `announce_interval_s`: with a PostgreSQL store, how often a node tells the others
    /// again what its calls light (only lit ids); they forget it after three intervals
    /// without hearing it (a node that stopped). Default 30, 1..=3600.
    pub announce_interval_s: u32,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_notifies_in_flight: 256,
            max_subscriptions_per_device: 200,
            announce_interval_s: 30,
        }
    }
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
    /// `caller_id`: the account's caller IDs, shown when the calling device and its owner
    /// leave theirs out (Kazoo's order: device, user, account).
    pub caller_id: CallerIds,
    /// `sip_targets`: where a TwiML `<Sip>` may dial beyond the account's own registered
    /// devices and carriers: address blocks holding the target's address, or host names
    /// the URI must name exactly. Empty by default (a guard against toll fraud).
    pub sip_targets: Vec<SipTarget>,
    /// `encryption`: the account's own `[media] encryption`, for its calls.
    pub encryption: Option<MediaEncryption>,
}

/// One entry of `sip_targets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipTarget {
    /// An address block (the one CIDR grammar, [`parse_cidr`]): the address the URI's host
    /// resolves to must be in it.
    Network(IpNet),
    /// A host name, lower case: the URI's host must be this name (any case).
    Host(String),
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
    pub caller_id: CallerIds,
}

/// Kazoo's `caller_id = { internal = { name, number }, external = { name, number } }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallerIds {
    #[serde(default, skip_serializing_if = "CallerId::is_empty")]
    pub internal: CallerId,
    #[serde(default, skip_serializing_if = "CallerId::is_empty")]
    pub external: CallerId,
}

/// One caller ID: what the called party sees.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallerId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

impl CallerId {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.number.is_none()
    }
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
    pub presence_id: Option<String>,
    pub caller_id: CallerIds,
}

/// `[[accounts.resources]]` and `[[resources]]`: a carrier / gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub id: String,
    /// `gateway`: where calls to numbers go, `sip:host[:port][;transport=tcp|tls]` or
    /// `sips:host[:port]` (TLS, port 5061 by default).
    pub gateway: Gateway,
    pub name: Option<String>,
    /// `inbound_cidrs`: the carrier's addresses; their INVITEs need no authentication and
    /// they are trusted sources of the front door. Account carriers only: a system carrier's
    /// INVITEs would belong to no account, so `[[resources]]` refuses the key.
    pub inbound_cidrs: Vec<IpNet>,
    /// `username` / `password`: our credentials when the carrier challenges us.
    pub username: Option<String>,
    pub password: Option<String>,
    /// `prefix` / `suffix`: written before and after the dialled number in the Request-URI
    /// user part (a carrier's tech prefix, `+`, a trunk suffix). Default empty.
    pub prefix: String,
    pub suffix: String,
    /// `caller_id_type`: which of the caller's IDs the carrier sees. Default external.
    pub caller_id_type: CallerIdType,
}

/// Which caller ID a carrier is sent (Kazoo's `caller_id_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CallerIdType {
    /// The public number (`caller_id.external`).
    #[default]
    External,
    /// The extension (`caller_id.internal`): for a carrier that is another PBX of the company.
    Internal,
}

impl CallerIdType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerIdType::External => "external",
            CallerIdType::Internal => "internal",
        }
    }

    /// The caller ID of this type among `ids`.
    pub fn of(self, ids: &CallerIds) -> &CallerId {
        match self {
            CallerIdType::External => &ids.external,
            CallerIdType::Internal => &ids.internal,
        }
    }
}

/// A carrier's `gateway` URI, read at load: `sip:` or `sips:`, a host (an IP address or a
/// name), an optional port, and `;transport=udp|tcp|tls`. No user part (the dialled number goes
/// there) and no other parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// `sips:` (RFC 3261 §26: TLS, the Request-URI `sips:` too).
    pub secure: bool,
    pub host: GatewayHost,
    /// The port as written; [`Gateway::port_or_default`] fills in 5060 / 5061.
    pub port: Option<u16>,
    pub transport: GatewayTransport,
}

/// The host of a gateway URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayHost {
    Ip(IpAddr),
    /// A host name in lower case, looked up (A/AAAA) when a call goes out.
    Name(String),
}

/// The transport a gateway is reached on (`;transport=`), UDP unless it says TCP or TLS
/// (`sips:` is always TLS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Gateway {
    /// The port written, else the transport's default (RFC 3261 §19.1.2: 5061 for TLS).
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.transport == GatewayTransport::Tls {
                5061
            } else {
                5060
            })
    }

    /// `host` or `host:port` as it goes in a URI (an IPv6 address in brackets).
    pub fn host_port(&self) -> String {
        let host = self.host.to_string();
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

impl fmt::Display for GatewayHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            GatewayHost::Ip(ip) => write!(f, "{ip}"),
            GatewayHost::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "sips" } else { "sip" };
        write!(f, "{scheme}:{}", self.host_port())?;
        match self.transport {
            GatewayTransport::Tcp => f.write_str(";transport=tcp")?,
            GatewayTransport::Tls if !self.secure => f.write_str(";transport=tls")?,
            _ => {}
        }
        Ok(())
    }
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

/// A wildcard listen or media address with no `[sip] advertise`: pivotd does not yet work
/// out, per destination, which of the machine's addresses to write, so Via, Contact and the
/// SDP `c=` line would carry the wildcard (0.0.0.0 or ::), which no peer can reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "sip.advertise: unset while {keys} listen on a wildcard address: Via, Contact and SDP \
     would carry {ip}, which no phone or carrier can reach; set [sip] advertise to the \
     address they reach this machine at"
)]
pub struct UnadvertisedWildcard {
    /// The keys with a wildcard address (`sip.udp`, `media.ip`, …), comma-separated.
    pub keys: String,
    /// The first wildcard found.
    pub ip: IpAddr,
}

impl Config {
    /// The warning for wildcard addresses written on the wire ([`UnadvertisedWildcard`]),
    /// said by `check-config` and at start-up; None with `advertise` set or none on a
    /// wildcard.
    pub fn unadvertised_wildcard(&self) -> Option<UnadvertisedWildcard> {
        if self.sip.advertise.is_some() {
            return None;
        }
        let sip = &self.sip;
        let mut found: Vec<(&str, IpAddr)> = Vec::new();
        for (key, list) in [
            ("sip.udp", &sip.udp),
            ("sip.tcp", &sip.tcp),
            ("sip.tls", &sip.tls),
        ] {
            if let Some(a) = list.iter().find(|a| a.ip().is_unspecified()) {
                found.push((key, a.ip()));
            }
        }
        if self.media.ip.is_unspecified() {
            found.push(("media.ip", self.media.ip));
        }
        let ip = found.first()?.1;
        let keys = found.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
        Some(UnadvertisedWildcard { keys, ip })
    }

    /// The account a SIP host names: the one whose realm it is (any case), else the only
    /// account there is. Routing (Request-URI host) and the registrar (To host) both ask.
    pub fn account_for_realm(&self, host: &str) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.realm.eq_ignore_ascii_case(host))
            .or(match self.accounts.as_slice() {
                [only] => Some(only),
                _ => None,
            })
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }
    /// DESIGN.md's default: SIP UDP+TCP 127.0.0.1:5060, API 127.0.0.1:8000, `pivotd.db` and
    /// `media` in the current directory, and the demo account answering any number.
    pub fn embedded_default() -> Config {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        parse::parse("", &base).0
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
        parse::parse(s, base_dir)
    }

    /// Parses TOML text and fails with every problem found in it. Only the config's own
    /// checks: `callflow::check::from_toml_str` adds those that need the media, the URL guard
    /// and the TTS hook.
    pub fn from_toml_str(s: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let (cfg, problems) = parse::parse(s, base_dir);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}
