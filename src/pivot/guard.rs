//! The URL guard (spec j.10): which URLs pivot may fetch.
//!
//! The one place that decides whether pivotd may fetch a URL: the config check, the API's
//! callflow validation, pivot requests, played URLs and CDR posts all ask it.
//!
//! Two checks. [`UrlGuard::check_url_static`] is the save-time check (no DNS): scheme
//! http/https, a host, an IP literal checked as the address it is, a host name compared with
//! `blacklist_hosts`. [`UrlGuard::resolve_checked`] is the request-time check: it also resolves
//! a host name and refuses the URL when *any* address it resolves to is blacklisted.
//! The HTTP client (`client.rs`) connects only to addresses that went through this check.
//!
//! Addresses that carry an IPv4 address inside an IPv6 one are checked as both: the IPv6
//! address against the IPv6 blocks, the embedded IPv4 against the IPv4 blocks. The embedded
//! forms unwrapped are IPv4-mapped `::ffff:0:0/96` (the socket layer connects them to the
//! IPv4 address), the deprecated IPv4-compatible `::/96` (same risk on stacks that still
//! honour it), and the NAT64 well-known prefix `64:ff9b::/96` (a NAT64 gateway forwards them
//! to the IPv4 address, so `64:ff9b::a00:1` reaches 10.0.0.1 behind it). 6to4 (`2002::/16`)
//! and Teredo are not unwrapped: their embedded IPv4 is a relay, not the destination.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use async_trait::async_trait;
use ipnet::IpNet;
use url::{Host, Url};

use crate::config::{default_blacklist, PivotConfig};

/// The schemes pivot fetches (spec j.10): http and https. The guard's checks and the TwiML
/// URL resolution ([`crate::pivot::twiml::resolve_url`]) both ask this.
pub fn is_allowed_scheme(scheme: &str) -> bool {
    matches!(scheme, "http" | "https")
}

/// Why a URL may not be fetched. The messages become log reasons for the pivot `_` branch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The text is not a URL at all.
    #[error("invalid URL {url:?}: {error}")]
    BadUrl { url: String, error: String },
    /// Only http and https are fetched.
    #[error("URL scheme {0:?} is not allowed (only http and https)")]
    BadScheme(String),
    /// A URL without a host (`http:///x`, `file:` style).
    #[error("URL {0:?} has no host")]
    NoHost(String),
    /// The host is, or resolves to, a blacklisted address.
    #[error("address {addr} of host {host:?} is blacklisted")]
    BlockedAddress { host: String, addr: IpAddr },
    /// The host name is in `blacklist_hosts`.
    #[error("host {0:?} is blacklisted")]
    BlockedHost(String),
    /// Name resolution failed.
    #[error("cannot resolve host {host:?}: {error}")]
    Resolve { host: String, error: String },
    /// Name resolution gave no address.
    #[error("host {0:?} resolves to no address")]
    NoAddress(String),
}

/// Name resolution, injectable so tests need no outside DNS.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Addresses of `host` (a name, never an IP literal); `port` goes into the results.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A fixed name → addresses table (for tests and for pinning names); unknown names fail
/// like NXDOMAIN. Names are matched lower-cased without a trailing dot.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    entries: Vec<(String, Vec<IpAddr>)>,
}

impl StaticResolver {
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Adds (or replaces) a name.
    pub fn with(mut self, host: &str, addrs: &[IpAddr]) -> StaticResolver {
        let host = normalize_host(host);
        self.entries.retain(|(h, _)| *h != host);
        self.entries.push((host, addrs.to_vec()));
        self
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let host = normalize_host(host);
        self.entries
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, a)| a.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such host {host:?} (static table)"),
                )
            })
    }
}

/// The blacklist: address blocks and host names (spec j.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGuard {
    pub cidrs: Vec<IpNet>,
    /// Lower-case, without trailing dot.
    pub hosts: Vec<String>,
}

impl Default for UrlGuard {
    /// Spec j.10's default list: the config defaults.
    fn default() -> UrlGuard {
        UrlGuard::new(default_blacklist(), vec!["localhost".to_string()])
    }
}

impl UrlGuard {
    pub fn new(cidrs: Vec<IpNet>, hosts: Vec<String>) -> UrlGuard {
        let hosts = hosts.iter().map(|h| normalize_host(h)).collect();
        UrlGuard { cidrs, hosts }
    }

    /// From `[pivot]` blacklist_cidrs / blacklist_hosts.
    pub fn from_config(cfg: &PivotConfig) -> UrlGuard {
        UrlGuard::new(cfg.blacklist_cidrs.clone(), cfg.blacklist_hosts.clone())
    }

    /// A guard that allows every address and host (`blacklist_cidrs = []`, `blacklist_hosts = []`).
    pub fn allow_all() -> UrlGuard {
        UrlGuard::new(Vec::new(), Vec::new())
    }

    /// Whether `ip` falls in a blacklisted block, directly or through the IPv4 address it
    /// embeds (mapped, compatible, NAT64 well-known prefix; see the module doc).
    pub fn is_blocked_ip(&self, ip: IpAddr) -> bool {
        if self.cidrs.iter().any(|c| c.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => embedded_v4(v6)
                .is_some_and(|v4| self.cidrs.iter().any(|c| c.contains(&IpAddr::V4(v4)))),
            IpAddr::V4(_) => false,
        }
    }

    /// Whether a host name (any case, trailing dot or not) is in `blacklist_hosts`. Exact
    /// match, as Kazoo: subdomains are caught by the address check at request time.
    pub fn is_blocked_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.contains(&host)
    }

    /// The save-time check (no DNS): parses `url` and checks it with [`UrlGuard::check_parsed`].
    pub fn check_url_static(&self, url: &str) -> Result<Url, GuardError> {
        let parsed = Url::parse(url).map_err(|e| GuardError::BadUrl {
            url: url.to_string(),
            error: e.to_string(),
        })?;
        self.check_parsed(&parsed)?;
        Ok(parsed)
    }

    /// Scheme http/https, a host, an IP literal not blacklisted (the `url` crate has already
    /// turned `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` into `127.0.0.1`), a host name not
    /// in `blacklist_hosts`. A name that *parses* as an address after normalising (never the
    /// case for `url`'s output, but cheap) is checked as one.
    pub fn check_parsed(&self, url: &Url) -> Result<(), GuardError> {
        if !is_allowed_scheme(url.scheme()) {
            return Err(GuardError::BadScheme(url.scheme().to_string()));
        }
        match url.host() {
            None => Err(GuardError::NoHost(url.to_string())),
            Some(Host::Ipv4(v4)) => self.check_ip(&v4.to_string(), IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => self.check_ip(&format!("[{v6}]"), IpAddr::V6(v6)),
            Some(Host::Domain(name)) => {
                let name = normalize_host(name);
                if name.is_empty() {
                    return Err(GuardError::NoHost(url.to_string()));
                }
                if let Ok(ip) = name.parse::<IpAddr>() {
                    return self.check_ip(&name, ip);
                }
                if self.is_blocked_host(&name) {
                    return Err(GuardError::BlockedHost(name));
                }
                Ok(())
            }
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), GuardError> {
        if self.is_blocked_ip(ip) {
            Err(GuardError::BlockedAddress {
                host: host.to_string(),
                addr: ip,
            })
        } else {
            Ok(())
        }
    }

    /// Checks a name's resolved addresses: every one must pass (one blacklisted address
    /// refuses the whole name, so the connection can never land on it).
    pub fn check_resolved(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), GuardError> {
        if addrs.is_empty() {
            return Err(GuardError::NoAddress(host.to_string()));
        }
        addrs.iter().try_for_each(|a| self.check_ip(host, a.ip()))
    }

    /// The request-time check: [`UrlGuard::check_parsed`], then an IP literal is the one
    /// address; a host name is resolved and every address must pass. Returns the addresses
    /// to connect to (with the URL's port or the scheme's default).
    pub async fn resolve_checked(
        &self,
        url: &Url,
        resolver: &dyn Resolver,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        self.check_parsed(url)?;
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            None => Err(GuardError::NoHost(url.to_string())),
            Some(Host::Ipv4(v4)) => Ok(vec![SocketAddr::new(IpAddr::V4(v4), port)]),
            Some(Host::Ipv6(v6)) => Ok(vec![SocketAddr::new(IpAddr::V6(v6), port)]),
            Some(Host::Domain(name)) => {
                let name = normalize_host(name);
                if let Ok(ip) = name.parse::<IpAddr>() {
                    return Ok(vec![SocketAddr::new(ip, port)]);
                }
                self.resolve_name(&name, port, resolver).await
            }
        }
    }

    /// Resolves a host name (not a literal) and checks every address.
    pub async fn resolve_name(
        &self,
        host: &str,
        port: u16,
        resolver: &dyn Resolver,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        let host = normalize_host(host);
        if self.is_blocked_host(&host) {
            return Err(GuardError::BlockedHost(host));
        }
        let addrs = resolver
            .resolve(&host, port)
            .await
            .map_err(|e| GuardError::Resolve {
                host: host.clone(),
                error: e.to_string(),
            })?;
        self.check_resolved(&host, &addrs)?;
        Ok(addrs)
    }
}

/// Lower case, no trailing dot (`LOCALHOST.` is `localhost`).
pub fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible or NAT64 (64:ff9b::/96) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let high = bits >> 32;
    match high {
        // ::ffff:a.b.c.d; ::a.b.c.d (:: and ::1 themselves are in the IPv6 list);
        // 64:ff9b::a.b.c.d
        0xffff | 0 | 0x0064_ff9b_0000_0000_0000_0000 => Some(low),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn config_defaults_match_spec_j10() {
        let g = UrlGuard::default();
        for blocked in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            // IPv4-mapped forms of the IPv4 blocks
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            // IPv4-compatible and NAT64
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::192.168.0.1",
        ] {
            assert!(g.is_blocked_ip(v4(blocked)), "{blocked} must be blocked");
        }
        for allowed in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:7f00:1::",
        ] {
            assert!(!g.is_blocked_ip(v4(allowed)), "{allowed} must pass");
        }
        assert_eq!(g.hosts, ["localhost"]);
    }

    #[test]
    fn static_check_refuses_every_spelling_of_loopback() {
        let g = UrlGuard::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "https://[::1]:8443/x",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://user:pw@127.0.0.1:8080/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0/",
            "http://[fe80::1]/",
        ] {
            match g.check_url_static(url) {
                Err(GuardError::BlockedAddress { .. }) => {}
                other => panic!("{url}: expected BlockedAddress, got {other:?}"),
            }
        }
        let e = g.check_url_static("http://2130706433:81/").unwrap_err();
        assert_eq!(
            e,
            GuardError::BlockedAddress {
                host: "127.0.0.1".into(),
                addr: v4("127.0.0.1")
            }
        );
        assert_eq!(
            e.to_string(),
            "address 127.0.0.1 of host \"127.0.0.1\" is blacklisted"
        );
    }

    #[test]
    fn static_check_hosts_and_schemes() {
        let g = UrlGuard::default();
        for url in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://LocalHost:8080/a",
            "https://localhost.:443/",
        ] {
            assert_eq!(
                g.check_url_static(url),
                Err(GuardError::BlockedHost("localhost".into())),
                "{url}"
            );
        }
        // Exact match, as Kazoo; the DNS check catches what these resolve to.
        assert!(g.check_url_static("http://foo.localhost/").is_ok());
        assert!(g.check_url_static("http://localhost.example.com/").is_ok());
        let ok = g.check_url_static("https://Example.COM/pivot?x=1").unwrap();
        assert_eq!(ok.host_str(), Some("example.com"));
        assert!(g.check_url_static("http://8.8.8.8/").is_ok());

        assert_eq!(
            g.check_url_static("ftp://example.com/x"),
            Err(GuardError::BadScheme("ftp".into()))
        );
        assert_eq!(
            g.check_url_static("file:///etc/passwd"),
            Err(GuardError::BadScheme("file".into()))
        );
        assert!(matches!(
            g.check_url_static("gopher://127.0.0.1/"),
            Err(GuardError::BadScheme(_))
        ));
        assert!(matches!(
            g.check_url_static("not a url"),
            Err(GuardError::BadUrl { .. })
        ));
        assert!(matches!(
            g.check_url_static("http://"),
            Err(GuardError::BadUrl { .. } | GuardError::NoHost(_))
        ));
    }

    #[test]
    fn empty_lists_allow_all() {
        let g = UrlGuard::allow_all();
        assert!(g.check_url_static("http://127.0.0.1:9/").is_ok());
        assert!(g.check_url_static("http://localhost/").is_ok());
        assert!(g.check_url_static("http://[::ffff:127.0.0.1]/").is_ok());
        // Scheme still checked.
        assert!(g.check_url_static("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn from_config_uses_the_lists() {
        let cfg = PivotConfig {
            blacklist_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
            blacklist_hosts: vec!["Internal.Example.".into()],
            max_req_timeout_ms: 5000,
            max_requests_per_call: 100,
            ca_file: None,
        };
        let g = UrlGuard::from_config(&cfg);
        assert!(g.check_url_static("http://127.0.0.1/").is_ok());
        assert!(g.check_url_static("http://203.0.113.9/").is_err());
        assert!(g.check_url_static("http://[::ffff:203.0.113.9]/").is_err());
        assert_eq!(
            g.check_url_static("http://internal.example/"),
            Err(GuardError::BlockedHost("internal.example".into()))
        );
    }

    #[tokio::test]
    async fn resolve_checked_checks_every_address() {
        let g = UrlGuard::default();
        let r = StaticResolver::new()
            .with("public.test", &[v4("203.0.113.5"), v4("2001:db8::5")])
            .with("evil.test", &[v4("127.0.0.1")])
            .with("mixed.test", &[v4("203.0.113.5"), v4("10.1.2.3")])
            .with("mapped.test", &[v4("::ffff:169.254.169.254")])
            .with("empty.test", &[]);

        let url = Url::parse("https://PUBLIC.test./x").unwrap();
        let addrs = g.resolve_checked(&url, &r).await.unwrap();
        assert_eq!(
            addrs,
            vec![
                "203.0.113.5:443".parse::<SocketAddr>().unwrap(),
                "[2001:db8::5]:443".parse().unwrap()
            ]
        );

        let url = Url::parse("http://evil.test:8080/").unwrap();
        assert_eq!(
            g.resolve_checked(&url, &r).await,
            Err(GuardError::BlockedAddress {
                host: "evil.test".into(),
                addr: v4("127.0.0.1")
            })
        );
        let url = Url::parse("http://mixed.test/").unwrap();
        let e = g.resolve_checked(&url, &r).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "address 10.1.2.3 of host \"mixed.test\" is blacklisted"
        );
        let url = Url::parse("http://mapped.test/").unwrap();
        assert!(matches!(
            g.resolve_checked(&url, &r).await,
            Err(GuardError::BlockedAddress { .. })
        ));
        let url = Url::parse("http://empty.test/").unwrap();
        assert_eq!(
            g.resolve_checked(&url, &r).await,
            Err(GuardError::NoAddress("empty.test".into()))
        );
        let url = Url::parse("http://nowhere.test/").unwrap();
        assert!(matches!(
            g.resolve_checked(&url, &r).await,
            Err(GuardError::Resolve { ref host, .. }) if host == "nowhere.test"
        ));
        // Literals: checked, never resolved.
        let url = Url::parse("http://203.0.113.7:81/").unwrap();
        assert_eq!(
            g.resolve_checked(&url, &r).await.unwrap(),
            vec!["203.0.113.7:81".parse::<SocketAddr>().unwrap()]
        );
        let url = Url::parse("http://0x7f.1/").unwrap();
        assert!(g.resolve_checked(&url, &r).await.is_err());
        // Blacklisted host name: refused before resolving.
        let url = Url::parse("http://localhost/").unwrap();
        assert_eq!(
            g.resolve_checked(&url, &r).await,
            Err(GuardError::BlockedHost("localhost".into()))
        );
        // A name the lists do not name but that resolves to loopback.
        let g2 = UrlGuard::new(g.cidrs.clone(), vec![]);
        let r2 = StaticResolver::new().with("localhost", &[v4("127.0.0.1"), v4("::1")]);
        let url = Url::parse("http://localhost/").unwrap();
        assert!(matches!(
            g2.resolve_checked(&url, &r2).await,
            Err(GuardError::BlockedAddress { .. })
        ));
    }

    #[tokio::test]
    async fn system_resolver_resolves_loopback_names() {
        // /etc/hosts: no outside DNS involved.
        let addrs = SystemResolver.resolve("localhost", 80).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
