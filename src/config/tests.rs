//! The config's own checks, and what each key reads to.

use super::parse::parse;
use super::*;
use crate::flow::ModuleData;
use std::net::Ipv4Addr;
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
    assert_eq!(a.resources[0].gateway.to_string(), "sip:127.0.0.1:5070");
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
    assert_eq!(cfg.sip.udp_receive_buffer_bytes, 4 << 20);
    assert_eq!(
        cfg.sip.udp_readers,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(cfg.sip.overload, crate::config::OverloadConfig::default());
    assert_eq!(cfg.sip.overload.queue_delay_ms, 20);
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
        (
            "[sip]\nudp_receive_buffer_bytes = -1",
            "sip.udp_receive_buffer_bytes",
        ),
        ("[sip]\nudp_readers = 0", "sip.udp_readers"),
        ("[sip]\nudp_readers = 1000", "sip.udp_readers"),
        (
            "[sip]\noverload_queue_delay_ms = -1",
            "sip.overload_queue_delay_ms",
        ),
        (
            "[sip]\noverload_queue_delay_ms = 10\noverload_queue_delay_exit_ms = 10",
            "sip.overload_queue_delay_exit_ms",
        ),
        (
            "[sip]\noverload_queue_delay_exit_ms = 0",
            "sip.overload_queue_delay_exit_ms",
        ),
        (
            "[sip]\noverload_pacer_lateness_ms = 5000",
            "sip.overload_pacer_lateness_ms",
        ),
        (
            "[sip]\noverload_retry_after_s = 0",
            "sip.overload_retry_after_s",
        ),
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
        (
            "[sip]\ntrusted_sources = [\"nope\"]",
            "sip.trusted_sources[0]",
        ),
        (
            "[sip]\ntrusted_proxies = [\"10.0.0.0/40\"]",
            "sip.trusted_proxies[0]",
        ),
        ("[sip]\nsource_max_calls = -1", "sip.source_max_calls"),
        (
            "[sip]\nsource_requests_per_second = \"many\"",
            "sip.source_requests_per_second",
        ),
        ("[sip]\nsource_block_s = -5", "sip.source_block_s"),
        (
            "[sip]\nscanner_user_agents = \"x\"",
            "sip.scanner_user_agents",
        ),
        (
            "[media]\nearly_media_unproven_s = 4000",
            "media.early_media_unproven_s",
        ),
        ("[media]\nencryption = \"yes\"", "media.encryption"),
        (
            "[[accounts]]\nid = \"a\"\nrealm = \"r\"\nencryption = \"SRTP\"",
            "accounts[0].encryption",
        ),
        (
            "[presence]\nannounce_interval_s = 0",
            "presence.announce_interval_s",
        ),
        (
            "[presence]\nannounce_interval_s = 3601",
            "presence.announce_interval_s",
        ),
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
fn presence_announce_interval_is_read_with_its_default() {
    let (cfg, problems) = parse("", Path::new("/x"));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cfg.presence.announce_interval_s, 30);
    let (cfg, problems) = parse("[presence]\nannounce_interval_s = 1", Path::new("/x"));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cfg.presence.announce_interval_s, 1);
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

/// The cross-checks name accounts by their place in the file: an unusable account before
/// them (no id) or an item that is not a table does not shift the indices.
#[test]
fn account_cross_checks_name_the_index_in_the_file() {
    let (_, problems) = parse(
        r#"
[[accounts]]
realm = "unusable.test"
[[accounts]]
id = "a"
realm = "x.test"
[[accounts]]
id = "a"
realm = "X.test"
"#,
        Path::new("/x"),
    );
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("accounts[0].id", "required"),
            ("accounts[2].id", "\"a\" is also the id of accounts[1]"),
            (
                "accounts[2].realm",
                "\"X.test\" is also the realm of accounts[1]"
            ),
        ]
    );
    // An array item that is not a table is skipped; the next keeps its own index.
    let (_, problems) = parse(
        r#"accounts = [5, { id = "a", realm = "r", bogus = 1 }, { id = "a", realm = "s" }]"#,
        Path::new("/x"),
    );
    let k: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(k, ["accounts[0]", "accounts[1].bogus", "accounts[2].id"]);
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

/// `sip.trusted_sources` and `pivot.blacklist_cidrs` read address blocks with one grammar:
/// the same inputs pass or fail in both, with the same message.
#[test]
fn both_cidr_keys_accept_and_refuse_the_same_inputs() {
    let cases = [
        ("10.0.0.0/8", None),
        ("192.0.2.7", None),
        ("10.1.2.3/8", None),
        ("0.0.0.0/0", None),
        ("::1", None),
        ("fe80::/10", None),
        ("2001:db8::/128", None),
        ("nope", Some("\"nope\" is not an IP address")),
        ("10.0.0.x/8", Some("\"10.0.0.x\" is not an IP address")),
        ("010.0.0.0/8", Some("\"010.0.0.0\" is not an IP address")),
        (" 10.0.0.0/8", Some("\" 10.0.0.0\" is not an IP address")),
        ("10.0.0.0/33", Some("prefix \"33\" is not 0..=32")),
        ("10.0.0.0/", Some("prefix \"\" is not 0..=32")),
        ("10.0.0.0/+8", Some("prefix \"+8\" is not 0..=32")),
        ("10.0.0.0/8/8", Some("prefix \"8/8\" is not 0..=32")),
        ("::/129", Some("prefix \"129\" is not 0..=128")),
    ];
    for (input, want) in cases {
        let text =
            format!("[sip]\ntrusted_sources = [{input:?}]\n[pivot]\nblacklist_cidrs = [{input:?}]");
        let (cfg, problems) = parse(&text, Path::new("/x"));
        let message = |key: &str| {
            problems
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.message.as_str())
        };
        assert_eq!(message("sip.trusted_sources[0]"), want, "{input}");
        assert_eq!(message("pivot.blacklist_cidrs[0]"), want, "{input}");
        if want.is_none() {
            assert_eq!(
                cfg.sip.sources.trusted, cfg.pivot.blacklist_cidrs,
                "{input}"
            );
        }
    }
}

#[test]
fn per_source_keys_are_read() {
    let (cfg, problems) = parse(
        "[sip]\ntrusted_sources = [\"203.0.113.10\", \"10.0.0.0/8\"]\nsource_max_calls = 7\n\
         trusted_proxies = [\"192.0.2.5\"]\n\
         source_block_s = 0\nscanner_user_agents = [\"EvilScan\"]\n[media]\nearly_media_unproven_s = 0",
        Path::new("/x"),
    );
    assert!(problems.is_empty(), "{problems:?}");
    let s = &cfg.sip.sources;
    let nets: Vec<String> = s.trusted.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["203.0.113.10/32", "10.0.0.0/8"]);
    let proxies: Vec<String> = s.proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(proxies, ["192.0.2.5/32"]);
    assert_eq!(s.max_calls, 7);
    assert_eq!(s.block, Duration::ZERO);
    assert_eq!(s.scanner_user_agents, ["evilscan"]);
    assert_eq!(cfg.media.early_media_unproven_s, 0);
    let (default, _) = parse("", Path::new("/x"));
    assert_eq!(default.sip.sources, crate::config::SourceLimits::default());
}

#[test]
fn encryption_is_optional_unless_the_media_or_an_account_says_otherwise() {
    use crate::config::MediaEncryption;
    let (cfg, problems) = parse(
        "[media]\nencryption = \"required\"\n\
         [[accounts]]\nid = \"a\"\nrealm = \"a.example\"\nencryption = \"off\"\n\
         [[accounts]]\nid = \"b\"\nrealm = \"b.example\"",
        Path::new("/x"),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cfg.media.encryption, MediaEncryption::Required);
    assert_eq!(cfg.accounts[0].encryption, Some(MediaEncryption::Off));
    assert_eq!(cfg.accounts[1].encryption, None);
    let (default, _) = parse("", Path::new("/x"));
    assert_eq!(default.media.encryption, MediaEncryption::Optional);
}

const CARRIERS: &str = r##"
[[resources]]
id = "sys1"
gateway = "sip:sbc.system.test"
[[resources]]
id = "sys2"
gateway = "sip:[2001:db8::5]:5080;transport=tcp"
[[accounts]]
id = "a"
realm = "a.test"
caller_id = { external = { name = "ACME", number = "+14155550100" } }
sip_targets = ["10.0.0.0/8", "SBC.Example.com", "192.0.2.7", "::1"]
[[accounts.resources]]
id = "c1"
gateway = "SIP:GW.Carrier.test:5080;Transport=TCP"
username = "trunk"
password = "pw"
prefix = "+1"
suffix = "#7"
caller_id_type = "internal"
inbound_cidrs = ["203.0.113.0/24"]
[[accounts.resources]]
id = "c2"
gateway = "sips:198.51.100.9"
"##;

#[test]
fn carrier_keys_are_read() {
    let (cfg, problems) = parse(CARRIERS, Path::new("/x"));
    assert!(problems.is_empty(), "{problems:?}");
    let a = &cfg.accounts[0];
    let c1 = &a.resources[0];
    assert_eq!(
        c1.gateway,
        Gateway {
            secure: false,
            host: GatewayHost::Name("gw.carrier.test".into()),
            port: Some(5080),
            transport: GatewayTransport::Tcp,
        }
    );
    assert_eq!(
        c1.gateway.to_string(),
        "sip:gw.carrier.test:5080;transport=tcp"
    );
    assert_eq!((c1.prefix.as_str(), c1.suffix.as_str()), ("+1", "#7"));
    assert_eq!(c1.caller_id_type, CallerIdType::Internal);
    assert_eq!(
        (c1.username.as_deref(), c1.password.as_deref()),
        (Some("trunk"), Some("pw"))
    );
    assert_eq!(c1.inbound_cidrs.len(), 1);
    let c2 = &a.resources[1];
    assert!(c2.gateway.secure);
    assert_eq!(c2.gateway.transport, GatewayTransport::Tls);
    assert_eq!(c2.gateway.port_or_default(), 5061);
    assert_eq!(c2.gateway.to_string(), "sips:198.51.100.9");
    let tls = crate::config::parse_gateway("sip:gw.test;transport=TLS").unwrap();
    assert_eq!((tls.secure, tls.transport), (false, GatewayTransport::Tls));
    assert_eq!(tls.port_or_default(), 5061);
    assert_eq!(tls.to_string(), "sip:gw.test;transport=tls");
    assert_eq!(c2.caller_id_type, CallerIdType::External);
    assert_eq!(c2.prefix, "");
    assert_eq!(a.caller_id.external.number.as_deref(), Some("+14155550100"));
    assert_eq!(
        a.sip_targets,
        [
            SipTarget::Network(parse_cidr("10.0.0.0/8").unwrap()),
            SipTarget::Host("sbc.example.com".into()),
            SipTarget::Network(parse_cidr("192.0.2.7/32").unwrap()),
            SipTarget::Network(parse_cidr("::1/128").unwrap()),
        ]
    );
    let system: Vec<String> = cfg
        .resources
        .iter()
        .map(|r| r.gateway.to_string())
        .collect();
    assert_eq!(
        system,
        [
            "sip:sbc.system.test",
            "sip:[2001:db8::5]:5080;transport=tcp"
        ]
    );
    assert_eq!(cfg.resources[0].gateway.port_or_default(), 5060);
    // None by default.
    let (default, _) = parse("[[accounts]]\nid = \"a\"\nrealm = \"r\"", Path::new("/x"));
    assert!(default.resources.is_empty());
    assert!(default.accounts[0].sip_targets.is_empty());
}

#[test]
fn each_bad_carrier_value_reports_its_key() {
    let account = "[[accounts]]\nid = \"a\"\nrealm = \"r\"\n";
    let carrier = "[[accounts.resources]]\nid = \"c\"\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "gateway = \"http://gw\"",
            "gateway",
            "is not a sip: or sips: URI",
        ),
        (
            "gateway = \"sip:\"",
            "gateway",
            "is not a sip: or sips: URI",
        ),
        (
            "gateway = \"sip:1000@gw.test\"",
            "gateway",
            "has a user part",
        ),
        ("gateway = \"sip:gw.test;lr\"", "gateway", "not \"lr\""),
        (
            "gateway = \"sip:gw.test;transport=sctp\"",
            "gateway",
            "not \"transport=sctp\"",
        ),
        (
            "gateway = \"sips:gw.test;transport=udp\"",
            "gateway",
            "not \"transport=udp\"",
        ),
        ("gateway = \"sip:gw.test?X=1\"", "gateway", "not \"?X=1\""),
        ("gateway = \"sip:gw.test:0\"", "gateway", "port \"0\""),
        ("gateway = \"sip:gw.test:5o60\"", "gateway", "port \"5o60\""),
        (
            "gateway = \"sip:gw_1.test\"",
            "gateway",
            "is not a host name",
        ),
        (
            "gateway = \"sip:10.0.0.300\"",
            "gateway",
            "is not a host name",
        ),
        ("gateway = \"sip:[::1\"", "gateway", "is not a host name"),
        (
            "gateway = \"sip:gw.test\"\ncaller_id_type = \"both\"",
            "caller_id_type",
            "is not \"external\" or \"internal\"",
        ),
        (
            "gateway = \"sip:gw.test\"\nprefix = \"1 \"",
            "prefix",
            "may hold only",
        ),
        (
            "gateway = \"sip:gw.test\"\nsuffix = \"@x\"",
            "suffix",
            "may hold only",
        ),
        (
            "gateway = \"sip:gw.test\"\nusername = \"u\"",
            "password",
            "required with username",
        ),
        (
            "gateway = \"sip:gw.test\"\npassword = \"p\"",
            "username",
            "required with password",
        ),
        ("", "gateway", "required"),
    ];
    for (keys, key, message) in cases {
        let text = format!("{account}{carrier}{keys}");
        let (_, problems) = parse(&text, Path::new("/x"));
        let want = format!("accounts[0].resources[0].{key}");
        let found = problems.iter().find(|p| p.key == want);
        assert!(
            found.is_some_and(|p| p.message.contains(message)),
            "{keys:?}: wanted {want} ({message}), got {problems:?}"
        );
    }
}

#[test]
fn carrier_lists_check_their_ids_and_the_system_list_refuses_inbound_cidrs() {
    let (cfg, problems) = parse(
        r#"
[[resources]]
id = "s"
gateway = "sip:gw.test"
inbound_cidrs = ["192.0.2.0/24"]
[[resources]]
id = "s"
gateway = "sip:gw2.test"
[[resources]]
id = "bad"
gateway = "sip:gw2.test;maddr=1.2.3.4"
[[accounts]]
id = "a"
realm = "r"
[[accounts.resources]]
id = "s"
gateway = "sip:gw.test"
"#,
        Path::new("/x"),
    );
    let k: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        k,
        [
            "resources[0].inbound_cidrs",
            "resources[1].id",
            "resources[2].gateway"
        ],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("[[accounts.resources]]"));
    // A carrier whose gateway cannot be read is left out; an account's ids are its own.
    assert_eq!(cfg.resources.len(), 2);
    assert_eq!(cfg.accounts[0].resources.len(), 1);
}

#[test]
fn sip_targets_are_address_blocks_or_host_names() {
    let cases = [
        ("10.0.0.0/8", None),
        ("192.0.2.7", None),
        ("2001:db8::/32", None),
        ("sbc.example.com", None),
        ("SBC-1.Example.COM", None),
        ("localhost", None),
        ("10.0.0.0/33", Some("prefix \"33\" is not 0..=32")),
        ("10.0.0.300", Some("\"10.0.0.300\" is not an IP address")),
        (
            "sbc.example.com/24",
            Some("\"sbc.example.com\" is not an IP address"),
        ),
        ("sbc.example.com:5060", Some("neither an address block")),
        ("sbc_1.example.com", Some("neither an address block")),
        ("-sbc.example.com", Some("neither an address block")),
        ("sbc..example.com", Some("neither an address block")),
        ("sbc.example.com.", Some("neither an address block")),
        ("", Some("neither an address block")),
        ("*.example.com", Some("neither an address block")),
    ];
    for (input, want) in cases {
        let text = format!(
            "[[accounts]]\nid = \"a\"\nrealm = \"r\"\nsip_targets = [\"192.0.2.1\", {input:?}]"
        );
        let (cfg, problems) = parse(&text, Path::new("/x"));
        let found = problems
            .iter()
            .find(|p| p.key == "accounts[0].sip_targets[1]");
        match want {
            None => {
                assert!(problems.is_empty(), "{input}: {problems:?}");
                assert_eq!(cfg.accounts[0].sip_targets.len(), 2);
            }
            Some(m) => assert!(
                found.is_some_and(|p| p.message.contains(m)),
                "{input}: wanted {m:?}, got {problems:?}"
            ),
        }
    }
    assert_eq!(
        parse_sip_target("SBC.Example.com"),
        Ok(SipTarget::Host("sbc.example.com".into()))
    );
    assert!(is_host_name(&"a".repeat(63)));
    assert!(!is_host_name(&"a".repeat(64)));
}

#[test]
fn gateways_take_any_case_and_ipv6() {
    let g = parse_gateway("SIPS:[::1]").unwrap();
    assert!(g.secure);
    assert_eq!(g.host, GatewayHost::Ip("::1".parse().unwrap()));
    assert_eq!((g.port, g.port_or_default()), (None, 5061));
    assert_eq!(g.to_string(), "sips:[::1]");
    let g = parse_gateway("sip:127.0.0.1:5070;transport=udp").unwrap();
    assert_eq!(g.transport, GatewayTransport::Udp);
    assert_eq!(g.host_port(), "127.0.0.1:5070");
    assert_eq!(
        parse_gateway("sip:[::1]x"),
        Err(ValueError::BadPort("x".into()))
    );
}

#[test]
fn store_postgres_is_a_checked_url_that_replaces_sqlite() {
    let dir = temp_dir("postgres");
    let url = "postgres://pivotd:s3cret@127.0.0.1:5432/pivotd";
    let (cfg, problems) = parse(&format!("[store]\npostgres = \"{url}\""), &dir);
    assert!(problems.is_empty(), "{problems:?}");
    let pg = cfg.store.postgres.expect("postgres kept");
    assert_eq!(pg.as_str(), url);
    // A logged config does not show the password.
    let shown = format!("{pg:?}");
    assert!(
        !shown.contains("s3cret") && shown.contains("pivotd:***@127.0.0.1"),
        "{shown}"
    );
    // Without it, SQLite as before.
    let (cfg, _) = parse("", &dir);
    assert_eq!(cfg.store.postgres, None);

    for (toml, key, says) in [
        (
            "[store]\npostgres = \"mysql://h/db\"",
            "store.postgres",
            "postgres://",
        ),
        (
            "[store]\npostgres = \"postgres://h:notaport/db\"",
            "store.postgres",
            "not a PostgreSQL URL",
        ),
        ("[store]\npostgres = 5", "store.postgres", ""),
        (
            "[store]\nsqlite = \"p.db\"\npostgres = \"postgres://h/db\"",
            "store.sqlite",
            "not both",
        ),
    ] {
        let (_, problems) = parse(toml, &dir);
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.message.contains(says)),
            "{toml}: {problems:?}"
        );
        // The refusal never quotes the URL (it may carry a password).
        assert!(
            problems.iter().all(|p| !p.message.contains("postgres://h")),
            "{problems:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_trusted_proxy_may_not_also_be_a_carrier_or_a_trusted_source() {
    let (_, problems) = parse(
        r#"
[sip]
trusted_proxies = ["192.0.2.4", "198.51.100.0/24", "203.0.113.9"]
trusted_sources = ["198.51.100.7"]
[[accounts]]
id = "a"
realm = "r"
[[accounts.resources]]
id = "trunk"
gateway = "sip:gw.test"
inbound_cidrs = ["192.0.2.0/24"]
"#,
        Path::new("/x"),
    );
    let k: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        k,
        ["sip.trusted_proxies[0]", "sip.trusted_proxies[1]"],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("\"trunk\""), "{problems:?}");
    assert!(
        problems[1].message.contains("trusted_sources"),
        "{problems:?}"
    );
}

/// A P-256 key and a self-signed certificate for it, made by the openssl CLI in `dir`.
fn self_signed(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=pivotd-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("openssl is not installed (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn tls_keys_are_read_and_their_files_checked() {
    let dir = temp_dir("tls");
    let (cert, key) = self_signed(&dir, "a");
    let (_, other_key) = self_signed(&dir, "b");
    let problems_of = |sip: String| {
        let (cfg, problems) = parse(&format!("[sip]\n{sip}"), Path::new("/x"));
        (cfg, problems)
    };
    let keys_of = |p: &[ConfigProblem]| p.iter().map(|p| p.key.clone()).collect::<Vec<_>>();

    let (cfg, problems) = problems_of(format!(
        "udp = []\ntcp = []\ntls = [\"127.0.0.1:5061\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         tls_ca_file = \"{}\"\ntls_handshake_timeout_ms = 700",
        cert.display(),
        key.display(),
        cert.display()
    ));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cfg.sip.tls, ["127.0.0.1:5061".parse().unwrap()]);
    assert_eq!(cfg.sip.tls_cert.as_deref(), Some(cert.as_path()));
    assert_eq!(cfg.sip.tls_handshake_timeout(), Duration::from_millis(700));
    let (default, _) = parse("", Path::new("/x"));
    assert!(default.sip.tls.is_empty());
    assert_eq!(default.sip.tls_handshake_timeout_ms, 5000);

    let (_, problems) = problems_of("tls = [\"127.0.0.1:5061\"]".into());
    assert_eq!(keys_of(&problems), ["sip.tls_cert", "sip.tls_key"]);
    let (_, problems) = problems_of(format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        dir.join("missing.pem").display(),
        key.display()
    ));
    assert_eq!(keys_of(&problems), ["sip.tls_cert"]);
    assert!(problems[0].message.contains("cannot read"), "{problems:?}");
    let (_, problems) = problems_of(format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        other_key.display()
    ));
    assert_eq!(keys_of(&problems), ["sip.tls_key"]);
    assert!(
        problems[0].message.contains("does not belong"),
        "{problems:?}"
    );
    let (_, problems) = problems_of(format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        cert.display()
    ));
    assert_eq!(
        keys_of(&problems),
        ["sip.tls_key"],
        "a certificate is no key"
    );
    let (_, problems) = problems_of(format!("tls_ca_file = \"{}\"", key.display()));
    assert_eq!(keys_of(&problems), ["sip.tls_ca_file"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wildcard_address_without_advertise_is_named_with_its_keys() {
    let cfg = |text: &str| Config::from_toml_str(text, Path::new("/x")).unwrap();
    let w =
        cfg("[sip]\nudp = [\"0.0.0.0:5070\"]\ntcp = [\"127.0.0.1:5070\"]\n[media]\nip = \"::\"\n")
            .unadvertised_wildcard()
            .expect("a warning");
    assert_eq!(w.keys, "sip.udp, media.ip");
    assert_eq!(w.ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert!(w.to_string().starts_with("sip.advertise: "), "{w}");
    let advertised = "[sip]\nudp = [\"0.0.0.0:5070\"]\nadvertise = \"192.0.2.1\"\n";
    assert_eq!(cfg(advertised).unadvertised_wildcard(), None);
    assert_eq!(cfg("").unadvertised_wildcard(), None);
}
