//! Reading a TOML table by hand: a walker that records every problem with its key path and
//! returns `None` for what is missing or bad, and the parsers of the values the config holds
//! (socket and IP addresses, address blocks, paths).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use regex::Regex;
use toml::{Table, Value};

use super::{ConfigProblem, Gateway, GatewayHost, GatewayTransport, MediaEncryption, SipTarget};

pub(super) struct Reader {
    pub(super) problems: Vec<ConfigProblem>,
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader {
    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn check_keys(&mut self, t: &Table, path: &str, known: &[&str]) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.problem(
                    join(path, k),
                    format!("unknown key (known here: {})", known.join(", ")),
                );
            }
        }
    }

    pub(super) fn wrong(&mut self, key: String, want: &str, v: &Value) {
        self.problem(key, format!("expected {want}, found {}", v.type_str()));
    }

    pub(super) fn table<'t>(&mut self, t: &'t Table, path: &str, key: &str) -> Option<&'t Table> {
        match t.get(key)? {
            Value::Table(x) => Some(x),
            v => {
                self.wrong(join(path, key), "a table", v);
                None
            }
        }
    }

    /// The tables of an array, each with its index in the file: an item that is not a table
    /// is reported and skipped, and the key paths of the later ones still name their place.
    pub(super) fn tables<'t>(
        &mut self,
        t: &'t Table,
        path: &str,
        key: &str,
    ) -> Option<Vec<(usize, &'t Table)>> {
        match t.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v {
                        Value::Table(x) => out.push((i, x)),
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

    pub(super) fn string(&mut self, t: &Table, path: &str, key: &str) -> Option<String> {
        match t.get(key)? {
            Value::String(s) => Some(s.clone()),
            v => {
                self.wrong(join(path, key), "a string", v);
                None
            }
        }
    }

    /// A string that must be there and not be empty.
    pub(super) fn required(&mut self, t: &Table, path: &str, key: &str) -> Option<String> {
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

    /// [`Reader::int`] as the field's type, `default` when absent or refused (the range
    /// given always fits the type, so the conversion never falls back on its own).
    pub(super) fn int_or<T: TryFrom<i64>>(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
        default: T,
    ) -> T {
        self.int(t, path, key, min, max)
            .and_then(|n| T::try_from(n).ok())
            .unwrap_or(default)
    }

    pub(super) fn int(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
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

    pub(super) fn strings(&mut self, t: &Table, path: &str, key: &str) -> Option<Vec<String>> {
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
    pub(super) fn parsed_list<T, E: fmt::Display>(
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

    pub(super) fn parsed<T, E: fmt::Display>(
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

/// Why a value cannot be read: an address, an address block, a pattern. Each message names
/// the value as written; the reader puts its key in front.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not one of \"off\", \"optional\", \"required\"")]
    NotEncryption(String),
    #[error("{0:?} is not an IP address with a port (like \"127.0.0.1:5060\" or \"[::1]:5060\")")]
    NotSocketAddr(String),
    #[error("{0:?} is not an IP address")]
    NotIpAddr(String),
    /// The prefix of an address block that is not a number up to the family's width.
    #[error("prefix {prefix:?} is not 0..={max}")]
    BadPrefix { prefix: String, max: u8 },
    #[error("a pattern must not be empty")]
    EmptyPattern,
    /// `reason` is the regex crate's message on one line.
    #[error("invalid regex {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("{0:?} is not a sip: or sips: URI")]
    NotSipUri(String),
    #[error(
        "{0:?} has a user part: the dialled number goes there (write prefix and suffix instead)"
    )]
    GatewayUser(String),
    /// A parameter other than `transport=udp|tcp`, or headers (`?`).
    #[error("{uri:?}: only ;transport=udp or ;transport=tcp may follow the host, not {param:?}")]
    GatewayParam { uri: String, param: String },
    #[error("{0:?} is not a host name (letters, digits, '-' and '.') nor an IP address")]
    NotHost(String),
    #[error("port {0:?} is not 1..=65535")]
    BadPort(String),
    #[error(
        "{0:?} is neither an address block (like \"10.0.0.0/8\" or \"192.0.2.7\") \
         nor a host name (letters, digits, '-' and '.'; no port)"
    )]
    NotSipTarget(String),
    #[error("{0:?} may hold only letters, digits and + * # - _ .")]
    NotDialAffix(String),
}

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, ValueError> {
    s.parse()
        .map_err(|_| ValueError::NotSocketAddr(s.to_string()))
}

pub(super) fn encryption(s: &str) -> Result<MediaEncryption, ValueError> {
    match s {
        "off" => Ok(MediaEncryption::Off),
        "optional" => Ok(MediaEncryption::Optional),
        "required" => Ok(MediaEncryption::Required),
        _ => Err(ValueError::NotEncryption(s.to_string())),
    }
}

pub(super) fn ip_addr(s: &str) -> Result<IpAddr, ValueError> {
    s.parse().map_err(|_| ValueError::NotIpAddr(s.to_string()))
}

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
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

/// A callflow's pattern: a regex on the dialled number, not empty.
pub(super) fn pattern(s: &str) -> Result<Regex, ValueError> {
    if s.is_empty() {
        return Err(ValueError::EmptyPattern);
    }
    Regex::new(s).map_err(|e| {
        let text = e.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        ValueError::BadPattern {
            pattern: s.to_string(),
            reason: lines.join(" "),
        }
    })
}

/// An address block, `addr/prefix`; a bare address is its /32 or /128. The one grammar of
/// `sip.trusted_sources` and `pivot.blacklist_cidrs`: the address as std reads it (no
/// leading zeros, which some read as octal), the prefix in decimal digits up to the family's
/// width. The address is kept as written (`10.1.2.3/8` contains what `10.0.0.0/8` does).
/// Containment is per family: an IPv4-mapped IPv6 address is the URL guard's to unwrap.
pub fn parse_cidr(s: &str) -> Result<IpNet, ValueError> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| ValueError::NotIpAddr(a.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        // Digits only: `u8::from_str` would also take `+8`.
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(ValueError::BadPrefix {
                    prefix: p.to_string(),
                    max,
                })
            }
        },
    };
    IpNet::new(addr, prefix).map_err(|_| ValueError::BadPrefix {
        prefix: prefix.to_string(),
        max,
    })
}

/// A host name as `sip_targets` and gateways take it: dot-separated labels of letters,
/// digits and `-` (not at a label's ends), 1..=63 characters each, 253 in all, and a last
/// label that is not all digits (that would be a mistyped IPv4 address).
pub fn is_host_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&s.len())
        && s.split('.').all(label_ok)
        && s.rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// A carrier's gateway: `sip:` or `sips:` (any case), an IP address (IPv6 in brackets) or a
/// host name, an optional port, and at most `;transport=udp|tcp|tls`. Read here by hand because
/// the config layer sits below the SIP one.
pub fn parse_gateway(s: &str) -> Result<Gateway, ValueError> {
    let not_sip = || ValueError::NotSipUri(s.to_string());
    let (scheme, rest) = s.split_once(':').ok_or_else(not_sip)?;
    let secure = if scheme.eq_ignore_ascii_case("sip") {
        false
    } else if scheme.eq_ignore_ascii_case("sips") {
        true
    } else {
        return Err(not_sip());
    };
    if rest.contains('@') {
        return Err(ValueError::GatewayUser(s.to_string()));
    }
    if let Some((_, headers)) = rest.split_once('?') {
        return Err(ValueError::GatewayParam {
            uri: s.to_string(),
            param: format!("?{headers}"),
        });
    }
    let mut parts = rest.split(';');
    let host_port = parts.next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| ValueError::NotHost(host_port.to_string()))?;
            let ip: std::net::Ipv6Addr = addr
                .parse()
                .map_err(|_| ValueError::NotHost(host_port.to_string()))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').unwrap_or(p)),
            };
            (GatewayHost::Ip(IpAddr::V6(ip)), port)
        }
        None => {
            let (h, port) = match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            };
            let host = if let Ok(ip) = h.parse::<IpAddr>() {
                GatewayHost::Ip(ip)
            } else if is_host_name(h) {
                GatewayHost::Name(h.to_ascii_lowercase())
            } else if h.is_empty() {
                return Err(not_sip());
            } else {
                return Err(ValueError::NotHost(h.to_string()));
            };
            (host, port)
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(ValueError::BadPort(p.to_string())),
        },
    };
    let mut transport = None;
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let bad = || ValueError::GatewayParam {
            uri: s.to_string(),
            param: param.to_string(),
        };
        transport = Some(match (name.eq_ignore_ascii_case("transport"), value) {
            // RFC 5630 §3.1.3: sips: over UDP would be DTLS, which pivotd does not speak.
            (true, v) if v.eq_ignore_ascii_case("udp") && !secure => GatewayTransport::Udp,
            (true, v) if v.eq_ignore_ascii_case("tcp") => GatewayTransport::Tcp,
            (true, v) if v.eq_ignore_ascii_case("tls") => GatewayTransport::Tls,
            _ => return Err(bad()),
        });
    }
    // sips: is TLS whatever the transport parameter says (RFC 5630: `transport=tcp` on a
    // sips: URI is TLS over TCP).
    let transport = match transport {
        _ if secure => GatewayTransport::Tls,
        Some(t) => t,
        None => GatewayTransport::Udp,
    };
    Ok(Gateway {
        secure,
        host,
        port,
        transport,
    })
}

/// One `sip_targets` entry: an address block in the one CIDR grammar ([`parse_cidr`]), or a
/// host name ([`is_host_name`], kept in lower case). What looks like an address (a `/`, an
/// all-digit last label, an IPv6 colon) gets the CIDR grammar's own message.
pub fn parse_sip_target(s: &str) -> Result<SipTarget, ValueError> {
    match parse_cidr(s) {
        Ok(net) => Ok(SipTarget::Network(net)),
        Err(_) if is_host_name(s) => Ok(SipTarget::Host(s.to_ascii_lowercase())),
        Err(e) => {
            let address_part = s.split_once('/').map_or(s, |(a, _)| a);
            let looks_like_address = s.contains('/')
                || address_part.parse::<std::net::Ipv6Addr>().is_ok()
                || (!address_part.is_empty()
                    && address_part
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.'));
            if looks_like_address {
                Err(e)
            } else {
                Err(ValueError::NotSipTarget(s.to_string()))
            }
        }
    }
}

/// Characters `prefix` and `suffix` may hold: what dial strings and carriers' tech prefixes
/// use (`#` is escaped when the Request-URI is written).
pub(super) fn dial_affix(s: &str) -> Result<String, ValueError> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+*#-_.".contains(&b))
    {
        Ok(s.to_string())
    } else {
        Err(ValueError::NotDialAffix(s.to_string()))
    }
}
