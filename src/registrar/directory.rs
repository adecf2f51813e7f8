//! Who may register and call: every device with SIP credentials, found by realm and username.
//! Passwords are not kept: each device carries its HA1 per algorithm, computed when it is
//! loaded, and the API stores only those (an HA1 is itself a credential for its realm).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::config::{CallerIds, Config, User};
use crate::sip::auth::digest::Algorithm;

/// A device that can authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    pub account_id: String,
    pub realm: String,
    pub device_id: String,
    pub username: String,
    pub owner_id: Option<String>,
    pub name: Option<String>,
    /// HA1 = H(username:realm:password) for each algorithm.
    pub ha1: Vec<(Algorithm, String)>,
    /// The device's caller IDs, its owner's filling what the device leaves out.
    pub caller_id: CallerIds,
    /// The device's own `presence_id` (`name` or `name@realm`), as written.
    pub presence_id: Option<String>,
    /// Its owner's `presence_id`, as written.
    pub owner_presence_id: Option<String>,
}

impl DeviceEntry {
    /// Computes the HA1s from a password (config devices, API writes).
    pub fn ha1s(username: &str, realm: &str, password: &str) -> Vec<(Algorithm, String)> {
        Algorithm::ALL
            .into_iter()
            .map(|a| (a, a.ha1(username, realm, password)))
            .collect()
    }

    pub fn ha1_for(&self, alg: Algorithm) -> Option<&str> {
        self.ha1
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, h)| h.as_str())
    }
}

type Login = (String, String);

/// Devices by `(realm in lower case, username)`; shared, read on every REGISTER and
/// authenticated INVITE, written when the API changes a device.
#[derive(Default)]
pub struct Directory {
    by_login: RwLock<HashMap<Login, Arc<DeviceEntry>>>,
}

fn login(realm: &str, username: &str) -> Login {
    (realm.to_ascii_lowercase(), username.to_string())
}

/// The directory entries of the config's devices that have a username and password.
fn config_entries(cfg: &Config) -> Vec<DeviceEntry> {
    let mut out = Vec::new();
    for a in &cfg.accounts {
        for dev in &a.devices {
            let (Some(username), Some(password)) = (&dev.username, &dev.password) else {
                continue;
            };
            let owner = dev
                .owner_id
                .as_deref()
                .and_then(|id| a.users.iter().find(|u| u.id == id));
            out.push(DeviceEntry {
                account_id: a.id.clone(),
                realm: a.realm.clone(),
                device_id: dev.id.clone(),
                username: username.clone(),
                owner_id: dev.owner_id.clone(),
                name: dev.name.clone(),
                ha1: DeviceEntry::ha1s(username, &a.realm, password),
                caller_id: merged_caller_id(&dev.caller_id, owner),
                presence_id: dev.presence_id.clone(),
                owner_presence_id: owner.and_then(|u| u.presence_id.clone()),
            });
        }
    }
    out
}

impl Directory {
    /// The devices of the config that have a username and password.
    pub fn from_config(cfg: &Config) -> Directory {
        let d = Directory::default();
        for e in config_entries(cfg) {
            d.insert(e);
        }
        d
    }

    /// A reload: the config devices of `old` are replaced by those of `new` in one step
    /// under the write lock, so a REGISTER never sees a kept device missing. The API's
    /// devices stay: the API refuses the ids the config uses.
    pub fn reload_config(&self, old: &Config, new: &Config) {
        let now = config_entries(new);
        let config_ids: HashSet<(String, String)> = config_entries(old)
            .iter()
            .chain(&now)
            .map(|e| (e.account_id.clone(), e.device_id.clone()))
            .collect();
        let mut map = self.write();
        map.retain(|_, e| !config_ids.contains(&(e.account_id.clone(), e.device_id.clone())));
        for e in now {
            map.insert(login(&e.realm, &e.username), Arc::new(e));
        }
    }

    pub fn insert(&self, e: DeviceEntry) {
        let key = login(&e.realm, &e.username);
        self.write().insert(key, Arc::new(e));
    }

    /// Removes a device by its account and id (its login may have changed meanwhile).
    pub fn remove(&self, account_id: &str, device_id: &str) {
        self.write()
            .retain(|_, e| !(e.account_id == account_id && e.device_id == device_id));
    }

    /// Puts a device in (or, with `None`, takes it out) in one step, whatever login it had:
    /// a REGISTER never sees it missing while it changes.
    pub fn set_device(&self, account_id: &str, device_id: &str, entry: Option<DeviceEntry>) {
        let mut map = self.write();
        map.retain(|_, e| !(e.account_id == account_id && e.device_id == device_id));
        if let Some(e) = entry {
            map.insert(login(&e.realm, &e.username), Arc::new(e));
        }
    }

    /// A device by its account and id.
    pub fn device(&self, account_id: &str, device_id: &str) -> Option<Arc<DeviceEntry>> {
        self.read()
            .values()
            .find(|e| e.account_id == account_id && e.device_id == device_id)
            .cloned()
    }

    /// Every device of an account.
    pub fn devices_of(&self, account_id: &str) -> Vec<Arc<DeviceEntry>> {
        self.read()
            .values()
            .filter(|e| e.account_id == account_id)
            .cloned()
            .collect()
    }

    pub fn find(&self, realm: &str, username: &str) -> Option<Arc<DeviceEntry>> {
        self.read().get(&login(realm, username)).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Login, Arc<DeviceEntry>>> {
        self.by_login.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Login, Arc<DeviceEntry>>> {
        self.by_login.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The device's caller IDs, each field the device leaves out taken from its owner (Kazoo's
/// order: device, then user).
pub fn merged_caller_id(device: &CallerIds, owner: Option<&User>) -> CallerIds {
    let mut c = device.clone();
    if let Some(u) = owner {
        let pairs = [
            (&mut c.internal, &u.caller_id.internal),
            (&mut c.external, &u.caller_id.external),
        ];
        for (mine, theirs) in pairs {
            if mine.name.is_none() {
                mine.name.clone_from(&theirs.name);
            }
            if mine.number.is_none() {
                mine.number.clone_from(&theirs.number);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(devices: &str) -> Config {
        let text = format!("[[accounts]]\nid = \"a\"\nrealm = \"a.test\"\n{devices}");
        Config::from_toml_str(&text, Path::new("/x")).unwrap()
    }

    const D1: &str = "[[accounts.devices]]\nid = \"d1\"\nusername = \"u1\"\npassword = \"one\"\n";
    const D1_NEW: &str =
        "[[accounts.devices]]\nid = \"d1\"\nusername = \"u1\"\npassword = \"two\"\n";
    const D2: &str = "[[accounts.devices]]\nid = \"d2\"\nusername = \"u2\"\npassword = \"x\"\n";

    #[test]
    fn a_reload_replaces_the_config_devices_and_keeps_the_api_ones() {
        let old = cfg(&format!("{D1}{D2}"));
        let d = Directory::from_config(&old);
        let mut api = (*d.find("a.test", "u2").unwrap()).clone();
        api.device_id = "api-device".into();
        api.username = "api".into();
        d.insert(api);
        let new = cfg(D1_NEW);
        d.reload_config(&old, &new);
        let d1 = d.find("a.test", "u1").expect("d1 kept");
        assert_eq!(d1.ha1, DeviceEntry::ha1s("u1", "a.test", "two"));
        assert!(d.find("a.test", "u2").is_none(), "d2 left the file");
        assert!(d.find("a.test", "api").is_some(), "an API device went");
        assert_eq!(d.len(), 2);
    }
}
