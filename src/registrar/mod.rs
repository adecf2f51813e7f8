//! The registrar (RFC 3261 §10) and who may call: the device directory, digest
//! authentication of REGISTER and INVITE, and the bindings of each device, kept in the store
//! so a restart does not make phones register again.
//!
//! - `directory.rs`: devices by realm and username, with their HA1s and caller IDs;
//! - `auth.rs`: a request's credentials → a device, a challenge or a refusal;
//! - `bindings.rs`: the location service, all-or-nothing updates, expiry;
//! - `register.rs`: the answer to a REGISTER.

pub mod auth;
pub mod bindings;
pub mod directory;
pub mod register;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use auth::Authenticator;
use bindings::{Bindings, DeviceKey, ExpiryRules};
use directory::Directory;

use crate::config::Config;
use crate::sip::auth::digest::Algorithm;
use crate::store::{Registration, Store, Write};

pub struct Registrar {
    cfg: Arc<Config>,
    auth: Arc<Authenticator>,
    bindings: Mutex<Bindings>,
    store: Option<Store>,
    rules: ExpiryRules,
}

impl Registrar {
    /// The registrar of `cfg`'s devices; with a store, the bindings it holds come back.
    pub fn new(cfg: Arc<Config>, directory: Arc<Directory>, store: Option<Store>) -> Registrar {
        let a = &cfg.sip.auth;
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
