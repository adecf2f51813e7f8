//! The checks across keys of one config: at least one listen socket, the TLS files, a port range with room
//! for RTP, account ids and realms unique, and within an account its numbers, users and
//! devices. Each is called where the keys it needs have just been read, so problems come in
//! file order.

use std::collections::HashMap;
use std::path::PathBuf;

use toml::{Table, Value};

use super::reader::{join, Reader};
use super::{Account, Device, MediaConfig, Resource, TlsFileError, User};

/// `sip.udp`, `sip.tcp` and `sip.tls` may not all be empty.
pub(super) fn some_listen_socket(r: &mut Reader, t: &Table) {
    let empty = |key| {
        t.get(key)
            .is_some_and(|v: &Value| v.as_array().is_some_and(|a| a.is_empty()))
    };
    let no_tls = t.get("tls").is_none() || empty("tls");
    if empty("udp") && empty("tcp") && no_tls {
        r.problem(
            "sip",
            "no listen socket: sip.udp, sip.tcp and sip.tls are all empty",
        );
    }
}

/// TLS listeners need a certificate and its key; every file named is read and checked as the
/// transport will read it (`tls.rs`), each problem under its key.
pub(super) fn tls_files(
    r: &mut Reader,
    listeners: &[std::net::SocketAddr],
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    ca_file: &Option<PathBuf>,
) {
    if !listeners.is_empty() {
        for (name, path) in [("tls_cert", cert), ("tls_key", key)] {
            if path.is_none() {
                r.problem(join("sip", name), "required when sip.tls has a listener");
            }
        }
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if let Err(e) = super::tls::read_certified_key(cert, key) {
                let at = match &e {
                    TlsFileError::Read { path, .. } if path == key => "tls_key",
                    TlsFileError::BadKey { .. } | TlsFileError::Mismatch { .. } => "tls_key",
                    _ => "tls_cert",
                };
                r.problem(join("sip", at), e.to_string());
            }
        }
        (Some(_), None) => r.problem("sip.tls_key", "required with sip.tls_cert"),
        (None, Some(_)) => r.problem("sip.tls_cert", "required with sip.tls_key"),
        (None, None) => {}
    }
    if let Some(ca) = ca_file {
        if let Err(e) = super::tls::read_certificates(ca) {
            r.problem("sip.tls_ca_file", e.to_string());
        }
    }
}

/// `port_min..=port_max` holds at least one even/odd RTP port pair.
pub(super) fn port_range(r: &mut Reader, media: &MediaConfig) {
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
}

/// No two accounts share an id, or a realm (compared without case). `accounts` holds each
/// usable account with its index in the file, which the key paths name.
pub(super) fn unique_accounts(r: &mut Reader, accounts: &[(usize, Account)]) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut realms: HashMap<String, usize> = HashMap::new();
    for &(i, ref a) in accounts {
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
}

/// `{p}.callflows[{j}].numbers`: each 1 to 36 characters, and not a number of another callflow
/// of the account (`numbers_seen`: number → the callflow that has it) nor twice in this one.
pub(super) fn callflow_numbers(
    r: &mut Reader,
    p: &str,
    j: usize,
    numbers: &[String],
    numbers_seen: &mut HashMap<String, usize>,
) {
    let cp = format!("{p}.callflows[{j}]");
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
}

/// A callflow (`cp`, its table `t`) has at least one number or pattern. Patterns are counted
/// as given, so a bad one is not reported twice.
pub(super) fn number_or_pattern(r: &mut Reader, cp: &str, t: &Table, numbers: &[String]) {
    let pattern_count = t
        .get("patterns")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if numbers.is_empty() && pattern_count == 0 {
        r.problem(
            join(cp, "numbers"),
            "a callflow needs at least one number or pattern",
        );
    }
}

/// A user's id (at `up`) is not the id of an earlier user of the account.
pub(super) fn unique_user(r: &mut Reader, up: &str, users: &[User], user: &User) {
    if users.iter().any(|u| u.id == user.id && !u.id.is_empty()) {
        r.problem(
            join(up, "id"),
            format!("{:?} is used by another user", user.id),
        );
    }
}

/// A device (at `dp`): its owner is a user of the account, its id and its username are not
/// those of an earlier device.
pub(super) fn device_refs(
    r: &mut Reader,
    dp: &str,
    users: &[User],
    devices: &[Device],
    device: &Device,
) {
    if let Some(owner) = &device.owner_id {
        if !users.iter().any(|u| &u.id == owner) {
            r.problem(
                join(dp, "owner_id"),
                format!("no user {owner:?} in this account"),
            );
        }
    }
    if devices
        .iter()
        .any(|d| d.id == device.id && !d.id.is_empty())
    {
        r.problem(
            join(dp, "id"),
            format!("{:?} is used by another device", device.id),
        );
    }
    if let Some(u) = &device.username {
        if devices.iter().any(|d| d.username.as_ref() == Some(u)) {
            r.problem(
                join(dp, "username"),
                format!("{u:?} is the username of another device"),
            );
        }
    }
}

/// A carrier's `username` and `password` come together: one alone could never answer a
/// challenge.
pub(super) fn resource_credentials(
    r: &mut Reader,
    rp: &str,
    username: &Option<String>,
    password: &Option<String>,
) {
    match (username, password) {
        (Some(_), None) => r.problem(join(rp, "password"), "required with username"),
        (None, Some(_)) => r.problem(join(rp, "username"), "required with password"),
        _ => {}
    }
}

/// A carrier's id (at `rp`) is not the id of an earlier carrier of the same list.
pub(super) fn unique_resource(r: &mut Reader, rp: &str, resources: &[Resource], res: &Resource) {
    if resources.iter().any(|x| x.id == res.id && !x.id.is_empty()) {
        r.problem(
            join(rp, "id"),
            format!("{:?} is used by another carrier", res.id),
        );
    }
}

/// A `sip.trusted_proxies` block may not overlap a carrier's `inbound_cidrs` or
/// `sip.trusted_sources`: from a proxy the caller is the hop before it, so the same address
/// cannot also be a carrier (its own requests would pass as the carrier's) or a source held
/// only to the global limits (which a proxy already is) — one of the two lines is a mistake.
pub(super) fn proxies_apart(r: &mut Reader, sources: &super::SourceLimits, accounts: &[Account]) {
    let overlap =
        |a: &ipnet::IpNet, b: &ipnet::IpNet| a.contains(&b.network()) || b.contains(&a.network());
    for (i, proxy) in sources.proxies.iter().enumerate() {
        let key = format!("sip.trusted_proxies[{i}]");
        if let Some(t) = sources.trusted.iter().find(|t| overlap(proxy, t)) {
            r.problem(
                key.clone(),
                format!("{proxy} overlaps sip.trusted_sources entry {t}: a trusted proxy is already held to the global limits only"),
            );
        }
        for a in accounts {
            for c in &a.resources {
                if let Some(n) = c.inbound_cidrs.iter().find(|n| overlap(proxy, n)) {
                    r.problem(
                        key.clone(),
                        format!(
                            "{proxy} overlaps inbound_cidrs entry {n} of carrier {:?} of account {:?}: behind a trusted proxy a carrier is known by its own address, and the proxy's own requests would pass as the carrier's",
                            c.id, a.id
                        ),
                    );
                }
            }
        }
    }
}
