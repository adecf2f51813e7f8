//! Reading a TOML table by hand: a walker that records every problem with its key path and
//! returns `None` for what is missing or bad, and the parsers of the values the config holds
//! (socket and IP addresses, address blocks, paths).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use regex::Regex;
use toml::{Table, Value};

use super::ConfigProblem;

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
}

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, ValueError> {
    s.parse()
        .map_err(|_| ValueError::NotSocketAddr(s.to_string()))
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
