//! `…/devices`: Kazoo's device documents (create, list, read, replace, merge, delete).
//!
//! A device's password is never stored nor returned: it is turned into HA1s for the account's
//! realm (`DeviceEntry::ha1s`) and dropped from the document. Its username is unique in the
//! account (so in the realm), the config file's devices included; changing it needs the
//! password again, since an HA1 is computed from it. Every write updates the registrar's
//! directory at once, so a device created here can REGISTER on the next request.
//!
//! The config file's devices are listed (`"source": "config"`) and can be read, not changed.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use serde_json::{json, Map, Value};

use super::auth::Authed;
use super::docs::{
    account, bool_or, check_caller_id, config_owned, into_map, merge, opt_object, opt_str, req_str,
    revision, with_id,
};
use super::users::owners;
use super::{blocking, random_id, request_data, ApiError, Reply, Shared};
use crate::config::{Account, Config, Device, User};
use crate::registrar::directory::{DeviceEntry, Directory};
use crate::registrar::stored::{device_entry, find_owner};
use crate::store::{SipCredentials, Store, StoredDevice};

/// Puts the stored API devices that can authenticate into the directory (at start, after the
/// config's).
pub async fn load_devices(cfg: &Config, store: &Store, directory: &Directory) {
    let s = store.clone();
    match blocking(move || Ok((s.devices(None)?, s.users(None)?))).await {
        Ok((devices, users)) => {
            let n = directory.add_stored(cfg, &devices, &users);
            if n > 0 {
                tracing::info!(devices = n, "API devices loaded into the directory");
            }
        }
        Err(e) => tracing::warn!("cannot read the API devices: {e:?}"),
    }
}

/// A config device as the API shows it: never its password.
fn config_doc(d: &Device) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), d.id.clone().into());
    for (k, v) in [
        ("name", &d.name),
        ("owner_id", &d.owner_id),
        ("presence_id", &d.presence_id),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    if d.caller_id != Default::default() {
        m.insert("caller_id".into(), json!(d.caller_id));
    }
    if let Some(u) = &d.username {
        m.insert("sip".into(), json!({ "username": u }));
    }
    m.insert("enabled".into(), true.into());
    m.insert("source".into(), "config".into());
    Value::Object(m)
}

/// One listing row (Kazoo's: id, name, username, owner_id, enabled, …).
fn summary(doc: &Value) -> Value {
    let mut m = Map::new();
    for k in [
        "id",
        "name",
        "owner_id",
        "enabled",
        "device_type",
        "mac_address",
        "source",
    ] {
        if let Some(v) = doc.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    if let Some(u) = doc.pointer("/sip/username") {
        m.insert("username".into(), u.clone());
    }
    Value::Object(m)
}

fn reply(d: &StoredDevice, created: bool) -> Reply {
    let data = with_id(&d.doc, &d.id);
    let r = if created {
        Reply::created(data)
    } else {
        Reply::ok(data)
    };
    r.with("revision", revision(d.rev, &d.doc))
}

fn username_taken(username: &str, holder: &str) -> ApiError {
    let mut detail = Map::new();
    detail.insert(
        "message".into(),
        format!("SIP username {username} is used by device {holder}").into(),
    );
    detail.insert("cause".into(), username.into());
    ApiError::validation_detail("sip.username", "unique", detail)
}

fn needs_password(message: String) -> ApiError {
    ApiError::validation("sip.password", "required", message)
}

/// Characters a username cannot hold: it travels in a SIP URI and a quoted digest parameter.
fn bad_username(u: &str) -> bool {
    u.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "\"\\@:<>".contains(c))
}

/// `sip`: the username and password become credentials (the password is taken out of the
/// document here, valid or not); without a new password the stored HA1s are kept only while
/// the username and the realm they were computed from are the same.
fn credentials(
    account: &Account,
    doc: &mut Map<String, Value>,
    current: Option<&StoredDevice>,
) -> Result<Option<SipCredentials>, ApiError> {
    let Some(sip) = opt_object(doc, "", "sip")? else {
        return Ok(None);
    };
    let password = opt_str(sip, "sip", "password", 5, 32);
    sip.remove("password");
    let password = password?;
    let username = opt_str(sip, "sip", "username", 2, 32)?;
    if let Some(m) = opt_str(sip, "sip", "method", 1, 32)? {
        if m != "password" {
            return Err(ApiError::validation(
                "sip.method",
                "enum",
                "pivotd authenticates devices by password only",
            ));
        }
    }
    if let Some(r) = opt_str(sip, "sip", "realm", 1, 253)? {
        if !r.eq_ignore_ascii_case(&account.realm) {
            return Err(ApiError::validation(
                "sip.realm",
                "enum",
                format!(
                    "a device registers in its account's realm, {}",
                    account.realm
                ),
            ));
        }
    }
    let Some(username) = username else {
        return match password {
            Some(_) => Err(ApiError::validation(
                "sip.username",
                "required",
                "a password needs a username",
            )),
            None => Ok(None),
        };
    };
    if bad_username(&username) {
        return Err(ApiError::validation(
            "sip.username",
            "pattern",
            "a SIP username holds no spaces, control characters or any of \" \\ @ : < >",
        ));
    }
    if let Some(p) = password {
        let ha1 = DeviceEntry::ha1s(&username, &account.realm, &p)
            .into_iter()
            .map(|(a, h)| (a.name().to_string(), h))
            .collect();
        return Ok(Some(SipCredentials {
            username,
            realm: account.realm.clone(),
            ha1,
        }));
    }
    match current.and_then(|c| c.sip.as_ref()) {
        None => Err(needs_password("a SIP username needs a password".into())),
        Some(s) if s.username != username => Err(needs_password(
            "the password is needed again: the stored credential (HA1) is computed from the username, which changed".into(),
        )),
        Some(s) if !s.realm.eq_ignore_ascii_case(&account.realm) => Err(needs_password(format!(
            "the password is needed again: the stored credential (HA1) was computed for realm {}, and the account's realm is now {}",
            s.realm, account.realm
        ))),
        Some(s) => Ok(Some(s.clone())),
    }
}

/// A validated document and its credentials, ready to store.
#[derive(Debug)]
struct Checked {
    doc: Value,
    sip: Option<SipCredentials>,
}

/// Kazoo's device schema for the fields pivotd uses; other keys are kept as given.
fn check(
    account: &Account,
    mut data: Map<String, Value>,
    current: Option<&StoredDevice>,
    owners: &[User],
) -> Result<Checked, ApiError> {
    data.remove("id");
    // First: a password leaves the document before any other check can fail. One outside
    // `sip` would otherwise be kept as an unknown key, in plain text.
    if data.remove("password").is_some() {
        return Err(ApiError::validation(
            "password",
            "not_supported",
            "a device's SIP password goes in sip.password",
        ));
    }
    let sip = credentials(account, &mut data, current)?;
    req_str(&mut data, "name", 1, 128)?;
    if let Some(owner) = opt_str(&mut data, "", "owner_id", 1, 128)? {
        if find_owner(account, owners, &owner).is_none() {
            let mut detail = Map::new();
            detail.insert(
                "message".into(),
                format!("no user {owner} in this account").into(),
            );
            detail.insert("cause".into(), owner.into());
            return Err(ApiError::validation_detail("owner_id", "not_found", detail));
        }
    }
    opt_str(&mut data, "", "presence_id", 1, 256)?;
    bool_or(&mut data, "enabled", true)?;
    check_caller_id(&mut data)?;
    if let Some(s) = &sip {
        let clash = account.devices.iter().find(|d| {
            d.username
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&s.username))
        });
        if let Some(d) = clash {
            return Err(username_taken(&s.username, &d.id));
        }
    }
    Ok(Checked {
        doc: Value::Object(data),
        sip,
    })
}

/// Puts the device's entry in the directory (or takes it out); bindings made under another
/// username, or by a device that can no longer register, go.
fn refresh(st: &Shared, account: &Account, d: &StoredDevice, owners: &[User]) {
    let owner = d
        .doc
        .get("owner_id")
        .and_then(Value::as_str)
        .and_then(|id| find_owner(account, owners, id));
    let registrar = &st.parts.registrar;
    let before = registrar.directory().device(&account.id, &d.id);
    let entry = device_entry(account, d, owner).ok();
    let same_login = match (&before, &entry) {
        (Some(b), Some(e)) => b.username == e.username,
        (None, _) => true,
        (Some(_), None) => false,
    };
    registrar.directory().set_device(&account.id, &d.id, entry);
    if !same_login {
        registrar.drop_device(&account.id, &d.id);
    }
}

/// Another node changed the account's devices or users (or this one): every API device's
/// directory entry is recomputed from the store, and those deleted go (with their bindings).
pub(super) async fn follow(st: &Shared, account_id: &str) {
    let Some(account) = st.parts.cfg.account(account_id) else {
        return;
    };
    let _one_at_a_time = st.directory_lock.lock().await;
    let store = st.parts.store.clone();
    let acc = account.id.clone();
    let read = async {
        let devices = blocking(move || store.devices(Some(&acc))).await?;
        Ok::<_, ApiError>((devices, owners(st, &account.id).await?))
    };
    let (devices, owners) = match read.await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(account = %account.id, "cannot reload the API devices: {e:?}");
            return;
        }
    };
    for d in &devices {
        refresh(st, &account, d, &owners);
    }
    let registrar = &st.parts.registrar;
    for e in registrar.directory().devices_of(&account.id) {
        let id = &e.device_id;
        let kept =
            account.devices.iter().any(|c| &c.id == id) || devices.iter().any(|d| &d.id == id);
        if !kept {
            registrar.directory().set_device(&account.id, id, None);
            registrar.drop_device(&account.id, id);
        }
    }
}

/// Validates, stores and updates the directory. Callers hold `directory_lock`.
async fn save(
    st: &Shared,
    account: &Account,
    id: &str,
    data: Map<String, Value>,
    current: Option<&StoredDevice>,
) -> Result<StoredDevice, ApiError> {
    let owners = owners(st, &account.id).await?;
    let checked = check(account, data, current, &owners)?;
    let store = st.parts.store.clone();
    let (acc, did) = (account.id.clone(), id.to_string());
    let saved = blocking(move || store.put_device(&acc, &did, &checked.doc, checked.sip.as_ref()))
        .await?
        .map_err(|t| username_taken(&t.username, &t.device_id))?;
    refresh(st, account, &saved, &owners);
    Ok(saved)
}

async fn stored(st: &Shared, account_id: &str, id: &str) -> Result<StoredDevice, ApiError> {
    let store = st.parts.store.clone();
    let (acc, did) = (account_id.to_string(), id.to_string());
    blocking(move || store.device(&acc, &did))
        .await?
        .ok_or_else(|| ApiError::not_found("device", id))
}

fn refuse_config(account: &Account, id: &str) -> Result<(), ApiError> {
    match account.devices.iter().any(|d| d.id == id) {
        true => Err(config_owned("device", id)),
        false => Ok(()),
    }
}

/// Recomputes the directory entries of the account's API devices `owner_id` owns (its caller
/// ID is their fallback).
pub(super) async fn refresh_owned(
    st: &Shared,
    account: &Account,
    owner_id: &str,
) -> Result<(), ApiError> {
    let store = st.parts.store.clone();
    let acc = account.id.clone();
    let devices = blocking(move || store.devices(Some(&acc))).await?;
    let owners = owners(st, &account.id).await?;
    for d in devices
        .iter()
        .filter(|d| d.doc.get("owner_id").and_then(Value::as_str) == Some(owner_id))
    {
        refresh(st, account, d, &owners);
    }
    Ok(())
}

/// The account's API devices `owner_id` owns.
pub(super) async fn owned_by(
    st: &Shared,
    account_id: &str,
    owner_id: &str,
) -> Result<Vec<String>, ApiError> {
    let store = st.parts.store.clone();
    let acc = account_id.to_string();
    let devices = blocking(move || store.devices(Some(&acc))).await?;
    Ok(devices
        .into_iter()
        .filter(|d| d.doc.get("owner_id").and_then(Value::as_str) == Some(owner_id))
        .map(|d| d.id)
        .collect())
}

/// `GET …/devices`: the config file's devices first, then the API's, oldest first.
pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let store = st.parts.store.clone();
    let acc = account.id.clone();
    let api = blocking(move || store.devices(Some(&acc))).await?;
    let mut rows: Vec<Value> = account
        .devices
        .iter()
        .map(|d| summary(&config_doc(d)))
        .collect();
    rows.extend(api.iter().map(|d| summary(&with_id(&d.doc, &d.id))));
    let n = rows.len();
    Ok(Reply::ok(Value::Array(rows)).with("page_size", n))
}

/// `PUT …/devices`: 201 with the stored document (no password) and its id.
pub(crate) async fn create(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let data = request_data(&body)?;
    let _one_at_a_time = st.directory_lock.lock().await;
    let saved = save(&st, account, &random_id(), data, None).await?;
    tracing::info!(account = %account.id, id = %saved.id, "device created");
    Ok(reply(&saved, true))
}

pub(crate) async fn get_one(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    if let Some(d) = account.devices.iter().find(|d| d.id == id) {
        return Ok(Reply::ok(config_doc(d)));
    }
    Ok(reply(&stored(&st, &account.id, &id).await?, false))
}

/// `POST …/devices/{ID}`: replaces the document. Without `sip.password` the stored
/// credentials stay while the username does.
pub(crate) async fn replace(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let data = request_data(&body)?;
    let _one_at_a_time = st.directory_lock.lock().await;
    let current = stored(&st, &account.id, &id).await?;
    let saved = save(&st, account, &id, data, Some(&current)).await?;
    Ok(reply(&saved, false))
}

/// `PATCH …/devices/{ID}`: merges the given fields into the document, then validates it.
pub(crate) async fn patch(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let patch = request_data(&body)?;
    let _one_at_a_time = st.directory_lock.lock().await;
    let current = stored(&st, &account.id, &id).await?;
    let mut doc = into_map(current.doc.clone());
    merge(&mut doc, patch);
    let saved = save(&st, account, &id, doc, Some(&current)).await?;
    Ok(reply(&saved, false))
}

/// `DELETE …/devices/{ID}`: the device leaves the directory, its bindings go, and Crossbar's
/// answer is the deleted document.
pub(crate) async fn delete(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let _one_at_a_time = st.directory_lock.lock().await;
    let current = stored(&st, &account.id, &id).await?;
    let registrar = &st.parts.registrar;
    registrar.directory().set_device(&account.id, &id, None);
    registrar.drop_device(&account.id, &id);
    let store = st.parts.store.clone();
    let (acc, did) = (account.id.clone(), id.clone());
    blocking(move || store.delete_device(&acc, &did)).await?;
    tracing::info!(account = %account.id, id = %id, "device deleted");
    Ok(reply(&current, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        let toml = r#"
[[accounts]]
id = "acc"
realm = "r.test"
[[accounts.devices]]
id = "cfgdev"
username = "Desk"
password = "s3cret"
"#;
        Config::from_toml_str(toml, std::path::Path::new("."))
            .unwrap()
            .accounts[0]
            .clone()
    }

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn err(e: ApiError) -> String {
        e.data.to_string()
    }

    fn stored(doc: Value, sip: Option<SipCredentials>) -> StoredDevice {
        StoredDevice {
            account_id: "acc".into(),
            id: "d1".into(),
            doc,
            sip,
            rev: 1,
            created: 0,
            modified: 0,
        }
    }

    #[test]
    fn the_password_becomes_ha1s_and_leaves_the_document() {
        let a = account();
        let c = check(
            &a,
            data(json!({"name": "phone", "sip": {"username": "2001", "password": "s3cret", "invite_format": "contact"}, "x": 1})),
            None,
            &[],
        )
        .unwrap();
        assert_eq!(
            c.doc,
            json!({"name": "phone", "sip": {"username": "2001", "invite_format": "contact"}, "x": 1, "enabled": true})
        );
        let sip = c.sip.unwrap();
        assert_eq!(sip.realm, "r.test");
        assert_eq!(
            sip.ha1["MD5"],
            DeviceEntry::ha1s("2001", "r.test", "s3cret")[0].1
        );
        assert_eq!(sip.ha1.len(), 2);
    }

    #[test]
    fn without_a_new_password_the_ha1s_stay_only_for_the_same_username_and_realm() {
        let a = account();
        let first = check(
            &a,
            data(json!({"name": "p", "sip": {"username": "2001", "password": "s3cret"}})),
            None,
            &[],
        )
        .unwrap();
        let cur = stored(first.doc.clone(), first.sip.clone());
        let same = check(
            &a,
            data(json!({"name": "q", "sip": {"username": "2001"}})),
            Some(&cur),
            &[],
        )
        .unwrap();
        assert_eq!(same.sip, first.sip);
        let e = check(
            &a,
            data(json!({"name": "q", "sip": {"username": "2002"}})),
            Some(&cur),
            &[],
        )
        .unwrap_err();
        assert!(err(e).contains("needed again"));
        let mut moved = cur.clone();
        moved.sip.as_mut().unwrap().realm = "old.test".into();
        let e = check(
            &a,
            data(json!({"name": "q", "sip": {"username": "2001"}})),
            Some(&moved),
            &[],
        )
        .unwrap_err();
        assert!(err(e).contains("realm old.test"));
        let e = check(
            &a,
            data(json!({"name": "q", "sip": {"username": "2003"}})),
            None,
            &[],
        )
        .unwrap_err();
        assert!(err(e).contains("sip.password"));
        let e = check(
            &a,
            data(json!({"name": "q", "sip": {"password": "s3cret"}})),
            None,
            &[],
        )
        .unwrap_err();
        assert!(err(e).contains("sip.username"));
        // No credentials at all is a device that cannot register, and fine.
        assert_eq!(
            check(&a, data(json!({"name": "q"})), None, &[])
                .unwrap()
                .sip,
            None
        );
    }

    #[test]
    fn refusals_name_the_field_and_never_echo_the_password() {
        let a = account();
        let cases = [
            (
                json!({"sip": {"username": "2001", "password": "s3cret"}}),
                "name",
            ),
            (
                json!({"name": "p", "sip": {"username": "desk", "password": "s3cret"}}),
                "sip.username",
            ),
            (json!({"name": "p", "owner_id": "nobody"}), "owner_id"),
            (json!({"name": "p", "enabled": "yes"}), "enabled"),
            (
                json!({"name": "p", "sip": {"username": "a b", "password": "s3cret"}}),
                "sip.username",
            ),
            (
                json!({"name": "p", "sip": {"username": "2001", "password": "abc"}}),
                "sip.password",
            ),
            (
                json!({"name": "p", "sip": {"username": "2001", "password": "s3cret", "realm": "x"}}),
                "sip.realm",
            ),
            (
                json!({"name": "p", "sip": {"username": "2001", "password": "s3cret", "method": "ip"}}),
                "sip.method",
            ),
            (
                json!({"name": "p", "caller_id": {"external": {"number": 5}}}),
                "caller_id.external.number",
            ),
            (json!({"name": "p", "password": "s3cret"}), "password"),
        ];
        for (body, key) in cases {
            let e = check(&a, data(body.clone()), None, &[]).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.data.get(key).is_some(), "{body}: {}", e.data);
            let said = format!("{} {}", e.message, e.data);
            assert!(
                !said.contains("s3cret") && !said.contains("\"abc\""),
                "{said}"
            );
        }
    }
}
