//! Building the [`Config`] from the TOML text: one function per section, each key read with
//! its default, every problem recorded with its key path.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::reader::{encryption, ip_addr, join, parse_cidr, resolve, socket_addr, Reader};
use super::{
    accounts, checks, default_blacklist, ApiConfig, AuthConfig, Config, ConfigProblem, MediaConfig,
    MediaEncryption, OverloadConfig, PivotConfig, PostgresUrl, PresenceConfig, SipConfig,
    SourceLimits, StoreConfig, TtsConfig, DIGEST_ALGORITHMS,
};

/// Parses without touching the file system; returns the config (defaults where a value was
/// missing or bad) and every problem found.
pub(super) fn parse(s: &str, base: &Path) -> (Config, Vec<ConfigProblem>) {
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
        &[
            "sip",
            "media",
            "tts",
            "api",
            "store",
            "pivot",
            "presence",
            "accounts",
            "resources",
        ],
    );
    let empty = Table::new();
    let t = r.table(&root, "", "sip").unwrap_or(&empty);
    let sip = read_sip(&mut r, t, base);
    let t = r.table(&root, "", "media").unwrap_or(&empty);
    let media = read_media(&mut r, t, base);
    let t = r.table(&root, "", "tts").unwrap_or(&empty);
    let tts = read_tts(&mut r, t);
    let t = r.table(&root, "", "api").unwrap_or(&empty);
    let api = read_api(&mut r, t);
    let t = r.table(&root, "", "store").unwrap_or(&empty);
    let store = read_store(&mut r, t, base);
    let t = r.table(&root, "", "pivot").unwrap_or(&empty);
    let pivot = read_pivot(&mut r, t, base);
    let t = r.table(&root, "", "presence").unwrap_or(&empty);
    let presence = read_presence(&mut r, t);
    let accounts = accounts::read_accounts(&mut r, &root);
    let resources = accounts::read_resources(&mut r, &root, "");
    checks::proxies_apart(&mut r, &sip.sources, &accounts);
    (
        Config {
            sip,
            media,
            tts,
            api,
            store,
            pivot,
            presence,
            accounts,
            resources,
        },
        r.problems,
    )
}

fn read_sip(r: &mut Reader, t: &Table, base: &Path) -> SipConfig {
    let p = "sip";
    r.check_keys(
        t,
        p,
        &[
            "udp",
            "tcp",
            "tls",
            "tls_cert",
            "tls_key",
            "tls_ca_file",
            "tls_handshake_timeout_ms",
            "advertise",
            "max_calls",
            "max_calls_per_second",
            "max_call_duration_s",
            "shutdown_grace_s",
            "tcp_idle_timeout_s",
            "max_message_bytes",
            "udp_receive_buffer_bytes",
            "udp_readers",
            "timer_t1_ms",
            "timer_t2_ms",
            "timer_t4_ms",
            "invite_response_timeout_ms",
            "overload_queue_delay_ms",
            "overload_queue_delay_exit_ms",
            "overload_pacer_lateness_ms",
            "overload_retry_after_s",
            "trusted_sources",
            "trusted_proxies",
            "source_requests_per_second",
            "source_calls_per_second",
            "source_max_calls",
            "source_tcp_connections",
            "source_failures_per_minute",
            "source_block_s",
            "scanner_user_agents",
            "digest_algorithms",
            "digest_md5_only_user_agents",
            "allow_unauthenticated",
            "nonce_lifetime_s",
            "register_min_expires",
            "register_max_expires",
            "register_default_expires",
            "register_max_contacts",
        ],
    );
    let default_sip: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
    let udp = r
        .parsed_list(t, p, "udp", socket_addr)
        .unwrap_or_else(|| vec![default_sip]);
    let tcp = r
        .parsed_list(t, p, "tcp", socket_addr)
        .unwrap_or_else(|| vec![default_sip]);
    let tls = r.parsed_list(t, p, "tls", socket_addr).unwrap_or_default();
    checks::some_listen_socket(r, t);
    let tls_cert = r.string(t, p, "tls_cert").map(|f| resolve(base, &f));
    let tls_key = r.string(t, p, "tls_key").map(|f| resolve(base, &f));
    let tls_ca_file = r.string(t, p, "tls_ca_file").map(|f| resolve(base, &f));
    checks::tls_files(r, &tls, &tls_cert, &tls_key, &tls_ca_file);
    SipConfig {
        udp,
        tcp,
        tls,
        tls_cert,
        tls_key,
        tls_ca_file,
        tls_handshake_timeout_ms: r.int_or(t, p, "tls_handshake_timeout_ms", 100, 60_000, 5000),
        advertise: r.parsed(t, p, "advertise", ip_addr),
        max_calls: r.int_or(t, p, "max_calls", 1, 1_000_000, 5000),
        max_calls_per_second: r.int_or(t, p, "max_calls_per_second", 1, 1_000_000, 4000),
        max_call_duration_s: r.int_or(t, p, "max_call_duration_s", 0, i64::from(u32::MAX), 14400),
        shutdown_grace_s: r.int_or(t, p, "shutdown_grace_s", 0, 86400, 30),
        tcp_idle_timeout_s: r.int_or(t, p, "tcp_idle_timeout_s", 1, 86400, 300),
        max_message_bytes: r.int_or(t, p, "max_message_bytes", 1024, 1_048_576, 65536),
        udp_receive_buffer_bytes: r.int_or(t, p, "udp_receive_buffer_bytes", 0, 1 << 30, 4 << 20),
        udp_readers: r.int_or(t, p, "udp_readers", 1, 256, available_cores()),
        timer_t1_ms: r.int_or(t, p, "timer_t1_ms", 10, 10_000, 500),
        timer_t2_ms: r.int_or(t, p, "timer_t2_ms", 10, 60_000, 4000),
        timer_t4_ms: r.int_or(t, p, "timer_t4_ms", 10, 60_000, 5000),
        invite_response_timeout_ms: r.int_or(
            t,
            p,
            "invite_response_timeout_ms",
            100,
            120_000,
            5000,
        ),
        overload: read_overload(r, t, p),
        sources: read_source_limits(r, t, p),
        auth: read_auth(r, t, p),
    }
}

/// The `[sip] overload_*` keys; the exit level must lie below the entry level.
fn read_overload(r: &mut Reader, t: &Table, p: &str) -> OverloadConfig {
    let d = OverloadConfig::default();
    let enter = r.int_or(t, p, "overload_queue_delay_ms", 0, 10_000, d.queue_delay_ms);
    let exit = r.int_or(
        t,
        p,
        "overload_queue_delay_exit_ms",
        1,
        10_000,
        d.queue_delay_exit_ms,
    );
    if enter > 0 && exit >= enter {
        r.problem(
            join(p, "overload_queue_delay_exit_ms"),
            format!("{exit} is not below overload_queue_delay_ms ({enter})"),
        );
    }
    OverloadConfig {
        queue_delay_ms: enter,
        queue_delay_exit_ms: exit,
        pacer_lateness_ms: r.int_or(
            t,
            p,
            "overload_pacer_lateness_ms",
            0,
            1000,
            d.pacer_lateness_ms,
        ),
        retry_after_s: r.int_or(t, p, "overload_retry_after_s", 1, 600, d.retry_after_s),
    }
}

/// The `[sip]` keys of the registrar and digest authentication.
fn read_auth(r: &mut Reader, t: &Table, p: &str) -> AuthConfig {
    let d = AuthConfig::default();
    let digest_algorithms = match r.strings(t, p, "digest_algorithms") {
        None => d.digest_algorithms,
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for a in list {
                match DIGEST_ALGORITHMS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&a))
                {
                    Some(k) if !out.iter().any(|o| o == k) => out.push(k.to_string()),
                    Some(_) => {
                        r.problem(join(p, "digest_algorithms"), format!("{a:?} given twice"))
                    }
                    None => r.problem(
                        join(p, "digest_algorithms"),
                        format!("{a:?} is not one of {DIGEST_ALGORITHMS:?}"),
                    ),
                }
            }
            if out.is_empty() {
                r.problem(
                    join(p, "digest_algorithms"),
                    "must name at least one algorithm",
                );
            }
            out
        }
    };
    let allow_unauthenticated = match t.get("allow_unauthenticated") {
        None => None,
        Some(toml::Value::Boolean(b)) => Some(*b),
        Some(v) => {
            r.wrong(join(p, "allow_unauthenticated"), "true or false", v);
            None
        }
    };
    let day = 86_400;
    let min = r.int_or(t, p, "register_min_expires", 1, day, d.register_min_expires);
    let max = r.int_or(
        t,
        p,
        "register_max_expires",
        1,
        day * 7,
        d.register_max_expires,
    );
    if min > max {
        r.problem(
            join(p, "register_min_expires"),
            format!("{min} is above register_max_expires ({max})"),
        );
    }
    AuthConfig {
        digest_algorithms,
        md5_only_user_agents: r
            .strings(t, p, "digest_md5_only_user_agents")
            .map(|v| v.into_iter().map(|s| s.to_ascii_lowercase()).collect())
            .unwrap_or(d.md5_only_user_agents),
        allow_unauthenticated,
        nonce_lifetime_s: r.int_or(t, p, "nonce_lifetime_s", 10, day, d.nonce_lifetime_s),
        register_min_expires: min,
        register_max_expires: max,
        register_default_expires: r.int_or(
            t,
            p,
            "register_default_expires",
            1,
            day * 7,
            d.register_default_expires,
        ),
        register_max_contacts: r.int_or(
            t,
            p,
            "register_max_contacts",
            1,
            100,
            d.register_max_contacts,
        ),
    }
}

/// The `[sip]` keys of the per-source limits.
fn read_source_limits(r: &mut Reader, t: &Table, p: &str) -> SourceLimits {
    let d = SourceLimits::default();
    let mut limit = |key: &str, default: u32| r.int_or(t, p, key, 0, 1_000_000, default);
    let requests_per_second = limit("source_requests_per_second", d.requests_per_second);
    let calls_per_second = limit("source_calls_per_second", d.calls_per_second);
    let max_calls = limit("source_max_calls", d.max_calls);
    let tcp_connections = limit("source_tcp_connections", d.tcp_connections);
    let failures_per_minute = limit("source_failures_per_minute", d.failures_per_minute);
    SourceLimits {
        trusted: r
            .parsed_list(t, p, "trusted_sources", parse_cidr)
            .unwrap_or_default(),
        proxies: r
            .parsed_list(t, p, "trusted_proxies", parse_cidr)
            .unwrap_or_default(),
        requests_per_second,
        calls_per_second,
        max_calls,
        tcp_connections,
        failures_per_minute,
        block: Duration::from_secs(r.int_or(
            t,
            p,
            "source_block_s",
            0,
            86400 * 7,
            d.block.as_secs(),
        )),
        scanner_user_agents: r
            .strings(t, p, "scanner_user_agents")
            .map(|v| v.into_iter().map(|s| s.to_ascii_lowercase()).collect())
            .unwrap_or(d.scanner_user_agents),
    }
}

fn read_media(r: &mut Reader, t: &Table, base: &Path) -> MediaConfig {
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
            "encryption",
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
        port_min: r.int_or(t, p, "port_min", 1, 65535, 16384),
        port_max: r.int_or(t, p, "port_max", 1, 65535, 32767),
        dir_configured: dir.is_some(),
        dir: resolve(base, dir.as_deref().unwrap_or("media")),
        rtp_timeout_s: r.int_or(t, p, "rtp_timeout_s", 0, 86400, 60),
        early_media_unproven_s: r.int_or(t, p, "early_media_unproven_s", 0, 3600, 5),
        encryption: r
            .parsed(t, p, "encryption", encryption)
            .unwrap_or(MediaEncryption::Optional),
    };
    checks::port_range(r, &media);
    media
}

fn read_tts(r: &mut Reader, t: &Table) -> TtsConfig {
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
    let timeout_ms = r.int_or(t, "tts", "timeout_ms", 100, 600_000, 10_000);
    TtsConfig {
        command,
        voices,
        timeout_ms,
    }
}

fn read_api(r: &mut Reader, t: &Table) -> ApiConfig {
    r.check_keys(
        t,
        "api",
        &["listen", "token_lifetime_s", "auth_failures_per_minute"],
    );
    ApiConfig {
        listen: r
            .parsed(t, "api", "listen", socket_addr)
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000)),
        token_lifetime_s: r.int_or(t, "api", "token_lifetime_s", 1, 2_592_000, 3600),
        auth_failures_per_minute: r.int_or(t, "api", "auth_failures_per_minute", 1, 100_000, 10),
    }
}

fn read_store(r: &mut Reader, t: &Table, base: &Path) -> StoreConfig {
    r.check_keys(t, "store", &["sqlite", "postgres", "debug_retention_s"]);
    let sqlite = r.string(t, "store", "sqlite");
    if sqlite.as_deref() == Some("") {
        r.problem("store.sqlite", "must not be empty");
    }
    let postgres = r.parsed(t, "store", "postgres", PostgresUrl::parse);
    if postgres.is_some() && sqlite.is_some() {
        r.problem(
            "store.sqlite",
            "not used with store.postgres: give one store, not both",
        );
    }
    let store = StoreConfig {
        sqlite: resolve(base, sqlite.as_deref().unwrap_or("pivotd.db")),
        postgres,
        debug_retention_s: r.int_or(t, "store", "debug_retention_s", 60, 31_622_400, 604_800),
    };
    store
}

fn read_pivot(r: &mut Reader, t: &Table, base: &Path) -> PivotConfig {
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
    PivotConfig {
        blacklist_cidrs: r
            .parsed_list(t, "pivot", "blacklist_cidrs", parse_cidr)
            .unwrap_or_else(default_blacklist),
        blacklist_hosts: r
            .strings(t, "pivot", "blacklist_hosts")
            .map(|v| v.into_iter().map(|h| h.to_ascii_lowercase()).collect())
            .unwrap_or_else(|| vec!["localhost".to_string()]),
        max_req_timeout_ms: r.int_or(t, "pivot", "max_req_timeout_ms", 100, 60_000, 5000),
        max_requests_per_call: r.int_or(t, "pivot", "max_requests_per_call", 1, 100_000, 100),
        ca_file: r.string(t, "pivot", "ca_file").map(|f| resolve(base, &f)),
    }
}

fn read_presence(r: &mut Reader, t: &Table) -> PresenceConfig {
    let p = "presence";
    r.check_keys(
        t,
        p,
        &[
            "min_expires",
            "max_expires",
            "default_expires",
            "max_notifies_in_flight",
            "max_subscriptions_per_device",
            "announce_interval_s",
        ],
    );
    let d = PresenceConfig::default();
    let day = 86_400;
    let min = r.int_or(t, p, "min_expires", 1, day, d.min_expires);
    let max = r.int_or(t, p, "max_expires", 1, day * 7, d.max_expires);
    if min > max {
        r.problem(
            join(p, "min_expires"),
            format!("{min} is above max_expires ({max})"),
        );
    }
    PresenceConfig {
        min_expires: min,
        max_expires: max,
        default_expires: r
            .int_or(t, p, "default_expires", 1, day * 7, d.default_expires)
            .clamp(min.min(max), max),
        max_notifies_in_flight: r.int_or(
            t,
            p,
            "max_notifies_in_flight",
            1,
            100_000,
            d.max_notifies_in_flight,
        ),
        max_subscriptions_per_device: r.int_or(
            t,
            p,
            "max_subscriptions_per_device",
            1,
            100_000,
            d.max_subscriptions_per_device,
        ),
        announce_interval_s: r.int_or(t, p, "announce_interval_s", 1, 3600, d.announce_interval_s),
    }
}

/// The default of `[sip] udp_readers`: one reader per core the process may use.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
