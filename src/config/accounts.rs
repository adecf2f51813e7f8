//! Reading `[[accounts]]`: each account with its callflows, users, devices and resources; no
//! `[[accounts]]` at all means the embedded demo account. The system's carriers
//! (`[[resources]]`) are read by the same function as an account's.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use toml::{Table, Value};

use super::reader::{
    dial_affix, encryption, join, parse_cidr, parse_gateway, parse_sip_target, pattern, Reader,
};
use super::{
    checks, demo, Account, CallerId, CallerIdType, CallerIds, CallflowEntry, Device, Resource, User,
};
use crate::flow::Node;

/// The accounts of the file, or the demo account when it has none.
pub(super) fn read_accounts(r: &mut Reader, root: &Table) -> Vec<Account> {
    let Some(tables) = r.tables(root, "", "accounts") else {
        return vec![demo::demo_account()];
    };
    // Each usable account with its index in the file, for the checks across accounts.
    let accounts: Vec<(usize, Account)> = tables
        .into_iter()
        .filter_map(|(i, t)| read_account(r, t, &format!("accounts[{i}]")).map(|a| (i, a)))
        .collect();
    checks::unique_accounts(r, &accounts);
    accounts.into_iter().map(|(_, a)| a).collect()
}

/// One account; `None` when a required key is missing (its problems are recorded).
/// Indices in key paths follow the file, even when an earlier entry was unusable.
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
            "caller_id",
            "sip_targets",
            "encryption",
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

    // number -> index of the callflow that has it
    let mut numbers_seen: HashMap<String, usize> = HashMap::new();
    let callflows = r
        .tables(t, p, "callflows")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(j, t)| read_callflow(r, t, p, j, &mut numbers_seen))
        .collect();
    let users = read_users(r, t, p);
    let devices = read_devices(r, t, p, &users);
    let resources = read_resources(r, t, p);
    let caller_id = read_caller_ids(r, t, p);
    let sip_targets = r
        .parsed_list(t, p, "sip_targets", parse_sip_target)
        .unwrap_or_default();
    let encryption = r.parsed(t, p, "encryption", encryption);

    Some(Account {
        id: id?,
        realm: realm?,
        api_key,
        pivot_secret,
        callflows,
        users,
        devices,
        resources,
        caller_id,
        sip_targets,
        encryption,
    })
}

/// `{p}.callflows[{j}]`; `None` when its flow is missing or invalid (the problem is recorded).
fn read_callflow(
    r: &mut Reader,
    t: &Table,
    p: &str,
    j: usize,
    numbers_seen: &mut HashMap<String, usize>,
) -> Option<CallflowEntry> {
    let cp = format!("{p}.callflows[{j}]");
    r.check_keys(t, &cp, &["id", "name", "numbers", "patterns", "flow"]);
    let numbers = r.strings(t, &cp, "numbers").unwrap_or_default();
    checks::callflow_numbers(r, p, j, &numbers, numbers_seen);
    let patterns: Vec<Regex> = r
        .parsed_list(t, &cp, "patterns", pattern)
        .unwrap_or_default();
    checks::number_or_pattern(r, &cp, t, &numbers);
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
    let flow = match Node::from_json_at(&flow?, &fp) {
        Ok(n) => n,
        Err(e) => {
            r.problem(e.path, e.message);
            return None;
        }
    };
    Some(CallflowEntry {
        id: r.string(t, &cp, "id"),
        name: r.string(t, &cp, "name"),
        numbers,
        patterns,
        flow: Arc::new(flow),
        source: cp,
    })
}

fn read_users(r: &mut Reader, t: &Table, p: &str) -> Vec<User> {
    let mut users = Vec::new();
    for (j, t) in r.tables(t, p, "users").unwrap_or_default() {
        let up = format!("{p}.users[{j}]");
        r.check_keys(
            t,
            &up,
            &["id", "presence_id", "first_name", "last_name", "caller_id"],
        );
        let id = r.required(t, &up, "id");
        let user = User {
            id: id.unwrap_or_default(),
            presence_id: r.string(t, &up, "presence_id"),
            first_name: r.string(t, &up, "first_name"),
            last_name: r.string(t, &up, "last_name"),
            caller_id: read_caller_ids(r, t, &up),
        };
        checks::unique_user(r, &up, &users, &user);
        users.push(user);
    }
    users
}

fn read_devices(r: &mut Reader, t: &Table, p: &str, users: &[User]) -> Vec<Device> {
    let mut devices = Vec::new();
    for (j, t) in r.tables(t, p, "devices").unwrap_or_default() {
        let dp = format!("{p}.devices[{j}]");
        r.check_keys(
            t,
            &dp,
            &[
                "id",
                "owner_id",
                "username",
                "password",
                "name",
                "presence_id",
                "caller_id",
            ],
        );
        let id = r.required(t, &dp, "id");
        let device = Device {
            id: id.unwrap_or_default(),
            owner_id: r.string(t, &dp, "owner_id"),
            username: r.string(t, &dp, "username"),
            password: r.string(t, &dp, "password"),
            name: r.string(t, &dp, "name"),
            presence_id: r.string(t, &dp, "presence_id"),
            caller_id: read_caller_ids(r, t, &dp),
        };
        checks::device_refs(r, &dp, users, &devices, &device);
        devices.push(device);
    }
    devices
}

/// `{p}.resources`: an account's carriers (`p` = `accounts[i]`) or the system's (`p` empty,
/// the top-level `[[resources]]`). A carrier whose gateway cannot be read is left out (its
/// problem is recorded), as nothing could be dialled through it.
pub(super) fn read_resources(r: &mut Reader, t: &Table, p: &str) -> Vec<Resource> {
    let system = p.is_empty();
    let list = join(p, "resources");
    let mut resources: Vec<Resource> = Vec::new();
    for (j, t) in r.tables(t, p, "resources").unwrap_or_default() {
        let rp = format!("{list}[{j}]");
        r.check_keys(
            t,
            &rp,
            &[
                "id",
                "gateway",
                "name",
                "inbound_cidrs",
                "username",
                "password",
                "prefix",
                "suffix",
                "caller_id_type",
            ],
        );
        let id = r.required(t, &rp, "id");
        let gateway = r.required(t, &rp, "gateway").and_then(|g| {
            parse_gateway(&g)
                .map_err(|e| r.problem(join(&rp, "gateway"), e.to_string()))
                .ok()
        });
        let inbound_cidrs = r
            .parsed_list(t, &rp, "inbound_cidrs", parse_cidr)
            .unwrap_or_default();
        if system && t.contains_key("inbound_cidrs") {
            // Calls from a carrier are routed in the account the carrier belongs to; a system
            // carrier belongs to none.
            r.problem(
                join(&rp, "inbound_cidrs"),
                "a system carrier's INVITEs would belong to no account: list these addresses \
                 in the inbound_cidrs of the [[accounts.resources]] entry of the account \
                 they call",
            );
        }
        let caller_id_type = match r.string(t, &rp, "caller_id_type").as_deref() {
            None | Some("external") => CallerIdType::External,
            Some("internal") => CallerIdType::Internal,
            Some(other) => {
                r.problem(
                    join(&rp, "caller_id_type"),
                    format!("{other:?} is not \"external\" or \"internal\""),
                );
                CallerIdType::External
            }
        };
        let name = r.string(t, &rp, "name");
        let username = r.string(t, &rp, "username");
        let password = r.string(t, &rp, "password");
        let prefix = r.parsed(t, &rp, "prefix", dial_affix).unwrap_or_default();
        let suffix = r.parsed(t, &rp, "suffix", dial_affix).unwrap_or_default();
        checks::resource_credentials(r, &rp, &username, &password);
        let Some(gateway) = gateway else { continue };
        let resource = Resource {
            id: id.unwrap_or_default(),
            gateway,
            name,
            inbound_cidrs,
            username,
            password,
            prefix,
            suffix,
            caller_id_type,
        };
        checks::unique_resource(r, &rp, &resources, &resource);
        resources.push(resource);
    }
    resources
}

/// `{p}.caller_id`: Kazoo's `{ internal = { name, number }, external = { name, number } }`.
fn read_caller_ids(r: &mut Reader, t: &Table, p: &str) -> CallerIds {
    let Some(c) = r.table(t, p, "caller_id") else {
        return CallerIds::default();
    };
    let cp = join(p, "caller_id");
    r.check_keys(c, &cp, &["internal", "external"]);
    let mut one = |key: &str| {
        let Some(k) = r.table(c, &cp, key) else {
            return CallerId::default();
        };
        let kp = join(&cp, key);
        r.check_keys(k, &kp, &["name", "number"]);
        CallerId {
            name: r.string(k, &kp, "name"),
            number: r.string(k, &kp, "number"),
        }
    };
    CallerIds {
        internal: one("internal"),
        external: one("external"),
    }
}
