//! The API's users and devices as the directory sees them: a stored device becomes a
//! [`DeviceEntry`] (its HA1s, its caller IDs merged with its owner's), a stored user an owner.
//! Used at start (every stored device) and by the API on each write.

use crate::config::{Account, CallerIds, Config, User};
use crate::sip::auth::digest::Algorithm;
use crate::store::{StoredDevice, StoredUser};

use super::directory::{merged_caller_id, DeviceEntry, Directory};

/// Why a stored device is not in the directory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotListed {
    #[error("it has no SIP credentials")]
    NoCredentials,
    #[error("it is disabled")]
    Disabled,
    /// The account's realm changed since the password was given: the HA1s are of no use.
    #[error("its credentials were computed for realm {stored:?}, not the account's {realm:?}: its password is needed again")]
    OtherRealm { stored: String, realm: String },
    #[error("its account is not in the config")]
    NoAccount,
}

fn string(doc: &serde_json::Value, key: &str) -> Option<String> {
    doc.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

/// Kazoo's `caller_id` of a stored document (internal and external; other kinds ignored).
pub fn caller_ids(doc: &serde_json::Value) -> CallerIds {
    doc.get("caller_id")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// A stored user as an owner of devices.
pub fn api_user(u: &StoredUser) -> User {
    User {
        id: u.id.clone(),
        presence_id: string(&u.doc, "presence_id"),
        first_name: string(&u.doc, "first_name"),
        last_name: string(&u.doc, "last_name"),
        caller_id: caller_ids(&u.doc),
    }
}

/// The owner `id` among the account's config users, then its API users.
pub fn find_owner<'a>(account: &'a Account, api_users: &'a [User], id: &str) -> Option<&'a User> {
    account.users.iter().chain(api_users).find(|u| u.id == id)
}

/// The directory entry of an API device of `account`, `owner` being the user its `owner_id`
/// names (if any).
pub fn device_entry(
    account: &Account,
    d: &StoredDevice,
    owner: Option<&User>,
) -> Result<DeviceEntry, NotListed> {
    let sip = d.sip.as_ref().ok_or(NotListed::NoCredentials)?;
    if d.doc.get("enabled").and_then(|v| v.as_bool()) == Some(false) {
        return Err(NotListed::Disabled);
    }
    if !sip.realm.eq_ignore_ascii_case(&account.realm) {
        return Err(NotListed::OtherRealm {
            stored: sip.realm.clone(),
            realm: account.realm.clone(),
        });
    }
    let ha1 = sip
        .ha1
        .iter()
        .filter_map(|(name, h)| Some((Algorithm::from_name(name)?, h.clone())))
        .collect();
    Ok(DeviceEntry {
        account_id: account.id.clone(),
        realm: account.realm.clone(),
        device_id: d.id.clone(),
        username: sip.username.clone(),
        owner_id: string(&d.doc, "owner_id"),
        name: string(&d.doc, "name"),
        ha1,
        caller_id: merged_caller_id(&caller_ids(&d.doc), owner),
        presence_id: string(&d.doc, "presence_id"),
        owner_presence_id: owner.and_then(|u| u.presence_id.clone()),
    })
}

impl Directory {
    /// Adds the stored API devices that can authenticate (at start, after the config's);
    /// a device that cannot is logged with the reason. Returns how many were added.
    pub fn add_stored(
        &self,
        cfg: &Config,
        devices: &[StoredDevice],
        users: &[StoredUser],
    ) -> usize {
        let mut added = 0;
        for d in devices {
            let entry = match cfg.account(&d.account_id) {
                None => Err(NotListed::NoAccount),
                Some(account) => {
                    let owners: Vec<User> = users
                        .iter()
                        .filter(|u| u.account_id == account.id)
                        .map(api_user)
                        .collect();
                    let owner = string(&d.doc, "owner_id")
                        .and_then(|id| find_owner(account, &owners, &id).cloned());
                    device_entry(account, d, owner.as_ref())
                }
            };
            match entry {
                Ok(e) => {
                    self.insert(e);
                    added += 1;
                }
                Err(NotListed::NoCredentials | NotListed::Disabled) => {}
                Err(e) => {
                    tracing::warn!(account = %d.account_id, device = %d.id, "API device cannot register: {e}")
                }
            }
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SipCredentials;
    use serde_json::json;

    fn account() -> Account {
        let toml = r#"
[[accounts]]
id = "acc"
realm = "r.test"
[[accounts.users]]
id = "boss"
caller_id = { internal = { name = "Boss", number = "100" } }
"#;
        let cfg = Config::from_toml_str(toml, std::path::Path::new(".")).unwrap();
        cfg.accounts[0].clone()
    }

    fn device(doc: serde_json::Value, realm: &str) -> StoredDevice {
        let ha1 = DeviceEntry::ha1s("2001", realm, "s3cret")
            .into_iter()
            .map(|(a, h)| (a.name().to_string(), h))
            .collect();
        StoredDevice {
            account_id: "acc".into(),
            id: "d1".into(),
            doc,
            sip: Some(SipCredentials {
                username: "2001".into(),
                realm: realm.into(),
                ha1,
            }),
            rev: 1,
            created: 0,
            modified: 0,
        }
    }

    #[test]
    fn a_stored_device_authenticates_with_its_ha1s_and_its_owners_caller_id() {
        let a = account();
        let d = device(
            json!({"name": "desk", "owner_id": "boss", "caller_id": {"internal": {"number": "2001"}}}),
            "R.TEST",
        );
        let e = device_entry(&a, &d, find_owner(&a, &[], "boss")).unwrap();
        assert_eq!(e.ha1, DeviceEntry::ha1s("2001", "R.TEST", "s3cret"));
        assert_eq!(e.caller_id.internal.number.as_deref(), Some("2001"));
        assert_eq!(e.caller_id.internal.name.as_deref(), Some("Boss"));
        assert_eq!(
            (e.name.as_deref(), e.owner_id.as_deref()),
            (Some("desk"), Some("boss"))
        );
    }

    #[test]
    fn a_stored_device_carries_its_presence_id_and_its_owners() {
        let a = account();
        let owner = User {
            presence_id: Some("boss".into()),
            ..find_owner(&a, &[], "boss").unwrap().clone()
        };
        let d = device(
            json!({"owner_id": "boss", "presence_id": "desk-1"}),
            "r.test",
        );
        let e = device_entry(&a, &d, Some(&owner)).unwrap();
        assert_eq!(e.presence_id.as_deref(), Some("desk-1"));
        assert_eq!(e.owner_presence_id.as_deref(), Some("boss"));
        let e = device_entry(&a, &device(json!({}), "r.test"), None).unwrap();
        assert_eq!((e.presence_id, e.owner_presence_id), (None, None));
    }

    #[test]
    fn disabled_other_realm_and_no_credentials_are_not_listed() {
        let a = account();
        let off = device(json!({"enabled": false}), "r.test");
        assert_eq!(device_entry(&a, &off, None), Err(NotListed::Disabled));
        let moved = device(json!({}), "old.test");
        assert!(matches!(
            device_entry(&a, &moved, None),
            Err(NotListed::OtherRealm { .. })
        ));
        let mut bare = device(json!({}), "r.test");
        bare.sip = None;
        assert_eq!(device_entry(&a, &bare, None), Err(NotListed::NoCredentials));
    }
}
