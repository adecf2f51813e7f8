//! The registrar (RFC 3261 §10) and who may call: the device directory, digest
//! authentication of REGISTER and INVITE, and the bindings of each device, kept in the store
//! so a restart does not make phones register again.
//!
//! - `directory.rs`: devices by realm and username, with their HA1s and caller IDs;
//! - `auth.rs`: a request's credentials → a device, a challenge or a refusal;
//! - `bindings.rs`: the location service, all-or-nothing updates, expiry;
//! - `register.rs`: the answer to a REGISTER;
//! - `stored.rs`: the API's devices and users as directory entries and owners.

pub mod auth;
pub mod bindings;
pub mod directory;
pub mod register;
pub mod stored;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use auth::Authenticator;
use bindings::{Bindings, DeviceKey, ExpiryRules};
use directory::Directory;

use crate::config::live::LiveConfig;
use crate::sip::auth::digest::Algorithm;
use crate::store::{DeviceBindings, Registration, Store, StoreError, Write};

pub struct Registrar {
    /// The config in force: accounts by realm for each REGISTER.
    cfg: Arc<LiveConfig>,
    auth: Arc<Authenticator>,
    bindings: Mutex<Bindings>,
    store: Option<Store>,
    rules: ExpiryRules,
}

/// How long a reload waits for this node's own queued writes.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Lets this node's queued writes reach the store before a reload reads it: a binding taken
/// here moments ago (its commit still queued, the writer lingers 20 ms) would otherwise be
/// replaced by the store's older view and lost from memory — as at start, when the listener's
/// first connection asks for a reload while the first REGISTERs are being taken. A store that
/// cannot be reached is not waited for longer than [`SETTLE`].
fn settle(s: &Store) {
    if let Err(e) = s.flush_within(SETTLE) {
        tracing::debug!("registrations reloaded before this node's writes were committed: {e}");
    }
}

impl Registrar {
    /// The registrar of `cfg`'s devices; with a store, the bindings it holds come back.
    /// The digest and expiry rules are read once, here (a reload does not change them:
    /// `config::live`).
    pub fn new(cfg: Arc<LiveConfig>, directory: Arc<Directory>, store: Option<Store>) -> Registrar {
        let start = cfg.get();
        let a = &start.sip.auth;
        let algorithms = a
            .digest_algorithms
            .iter()
            .filter_map(|n| Algorithm::from_name(n))
            .collect();
        let auth = Arc::new(Authenticator::new(
            directory,
            algorithms,
            a.md5_only_user_agents.clone(),
            Duration::from_secs(a.nonce_lifetime_s),
        ));
        let rules = ExpiryRules {
            min: a.register_min_expires,
            max: a.register_max_expires,
            default: a
                .register_default_expires
                .clamp(a.register_min_expires, a.register_max_expires),
            max_contacts: a.register_max_contacts as usize,
        };
        let mut bindings = Bindings::default();
        if let Some(s) = &store {
            match s.registrations(auth::unix_now()) {
                Ok(rows) => {
                    let n = rows.len();
                    rows.into_iter().for_each(|r| bindings.load(r));
                    if n > 0 {
                        tracing::info!(bindings = n, "registrations restored from the store");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read registrations from the store"),
            }
        }
        Registrar {
            cfg,
            auth,
            bindings: Mutex::new(bindings),
            store,
            rules,
        }
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// A device's unexpired bindings.
    pub fn bindings_of(&self, account_id: &str, device_id: &str) -> Vec<Registration> {
        let key = DeviceKey {
            account_id: account_id.to_string(),
            device_id: device_id.to_string(),
        };
        self.lock_bindings().current(&key, auth::unix_now())
    }

    /// The devices that may authenticate (the API changes it as devices change).
    pub fn directory(&self) -> &Arc<Directory> {
        self.auth.directory()
    }

    /// Drops every binding of a device (deleted, or no longer able to register), here and
    /// in the store. Returns how many went.
    pub fn drop_device(&self, account_id: &str, device_id: &str) -> usize {
        let key = DeviceKey {
            account_id: account_id.to_string(),
            device_id: device_id.to_string(),
        };
        let gone = self.lock_bindings().remove(&key);
        if let Some(s) = &self.store {
            s.write(Write::Registrations(DeviceBindings {
                account_id: key.account_id,
                device_id: key.device_id,
                bindings: Vec::new(),
            }));
        }
        gone
    }

    /// Takes a device's bindings from the store, in place of those held here: another node
    /// sharing the store took a REGISTER for it. Blocks on the store.
    pub fn reload_device(&self, account_id: &str, device_id: &str) -> Result<(), StoreError> {
        let Some(s) = &self.store else {
            return Ok(());
        };
        settle(s);
        let rows = s.device_registrations(account_id, device_id, auth::unix_now())?;
        let key = DeviceKey {
            account_id: account_id.to_string(),
            device_id: device_id.to_string(),
        };
        let mut b = self.lock_bindings();
        b.remove(&key);
        rows.into_iter().for_each(|r| b.load(r));
        Ok(())
    }

    /// Takes every binding from the store, in place of those held here (after changes may
    /// have been missed). Blocks on the store.
    pub fn reload_all(&self) -> Result<(), StoreError> {
        let Some(s) = &self.store else {
            return Ok(());
        };
        settle(s);
        let mut fresh = Bindings::default();
        s.registrations(auth::unix_now())?
            .into_iter()
            .for_each(|r| fresh.load(r));
        *self.lock_bindings() = fresh;
        Ok(())
    }

    /// How many unexpired bindings there are.
    pub fn binding_count(&self) -> usize {
        self.lock_bindings().count(auth::unix_now())
    }

    /// Every unexpired binding.
    pub fn all_bindings(&self) -> Vec<Registration> {
        self.lock_bindings().all(auth::unix_now())
    }

    /// Drops expired bindings, here and in the store.
    pub fn sweep(&self) -> usize {
        let now = auth::unix_now();
        let gone = self.lock_bindings().sweep(now);
        if gone > 0 {
            if let Some(s) = &self.store {
                s.write(Write::ExpireRegistrations(now));
            }
        }
        gone
    }

    fn lock_bindings(&self) -> MutexGuard<'_, Bindings> {
        self.bindings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn binding(device_id: &str, contact: &str) -> Registration {
        Registration {
            account_id: "acc".into(),
            device_id: device_id.into(),
            contact: contact.into(),
            expires_at: auth::unix_now() + 600,
            call_id: "c".into(),
            cseq: 1,
            path: Vec::new(),
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: "UDP".into(),
            user_agent: None,
            instance: None,
            q: None,
            updated: auth::unix_now(),
        }
    }

    /// A REGISTER taken here moments before a reload (its write still queued: the writer
    /// lingers 20 ms) is kept: the reload waits for this node's writes first.
    #[test]
    fn a_reload_keeps_a_binding_whose_write_is_still_queued() {
        let store = Store::open(":memory:").unwrap();
        let cfg = Arc::new(Config::embedded_default());
        let r = Registrar::new(
            LiveConfig::new(cfg),
            Arc::new(Directory::default()),
            Some(store.clone()),
        );
        for (reload, contact) in [("all", "sip:a@h"), ("device", "sip:b@h")] {
            let b = binding("d1", contact);
            let mut held = r.bindings_of("acc", "d1");
            held.push(b.clone());
            r.lock_bindings().load(b);
            store.write(Write::Registrations(DeviceBindings {
                account_id: "acc".into(),
                device_id: "d1".into(),
                bindings: held,
            }));
            match reload {
                "all" => r.reload_all().unwrap(),
                _ => r.reload_device("acc", "d1").unwrap(),
            }
            let contacts: Vec<String> = r.all_bindings().into_iter().map(|b| b.contact).collect();
            assert!(
                contacts.contains(&contact.to_string()),
                "{reload}: {contacts:?}"
            );
        }
    }

    #[test]
    fn dropping_a_device_drops_its_bindings_here_and_in_the_store() {
        let store = Store::open(":memory:").unwrap();
        for (d, c) in [("d1", "sip:a@h"), ("d1", "sip:b@h"), ("d2", "sip:c@h")] {
            store.write(Write::Registrations(DeviceBindings {
                account_id: "acc".into(),
                device_id: d.into(),
                bindings: store
                    .registrations(0)
                    .unwrap()
                    .into_iter()
                    .filter(|r| r.device_id == d)
                    .chain([binding(d, c)])
                    .collect(),
            }));
            store.flush().unwrap();
        }
        let cfg = Arc::new(Config::embedded_default());
        let r = Registrar::new(
            LiveConfig::new(cfg),
            Arc::new(Directory::default()),
            Some(store.clone()),
        );
        assert_eq!(r.all_bindings().len(), 3);
        assert_eq!(r.drop_device("acc", "d1"), 2);
        assert_eq!(r.drop_device("acc", "d1"), 0);
        store.flush().unwrap();
        let left: Vec<String> = store
            .registrations(0)
            .unwrap()
            .into_iter()
            .map(|b| b.device_id)
            .collect();
        assert_eq!(left, ["d2"]);
        assert_eq!(r.all_bindings().len(), 1);
    }
}
