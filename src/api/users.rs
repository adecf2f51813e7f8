//! `…/users`: Kazoo's user documents (create, list, read, replace, merge, delete). A user is
//! the owner of devices: its caller ID fills what its devices' leave out, so a change here
//! recomputes their directory entries. pivotd has no user logins: a user's `password` is
//! refused, never stored.
//!
//! The config file's users are listed (`"source": "config"`) and can be read, not changed.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::auth::Authed;
use super::devices::{owned_by, refresh_owned};
use super::docs::{
    account, bool_or, check_caller_id, config_owned, into_map, merge, opt_str, req_str, revision,
    with_id,
};
use super::{blocking, random_id, request_data, ApiError, Reply, Shared};
use crate::config::{Account, User};
use crate::registrar::stored::api_user;
use crate::store::StoredUser;

/// The account's API users, as owners of devices.
pub(super) async fn owners(st: &Shared, account_id: &str) -> Result<Vec<User>, ApiError> {
    let store = st.parts.store.clone();
    let acc = account_id.to_string();
    let users = blocking(move || store.users(Some(&acc))).await?;
    Ok(users.iter().map(api_user).collect())
}

fn config_doc(u: &User) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), u.id.clone().into());
    for (k, v) in [
        ("first_name", &u.first_name),
        ("last_name", &u.last_name),
        ("presence_id", &u.presence_id),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    if u.caller_id != Default::default() {
        m.insert("caller_id".into(), json!(u.caller_id));
    }
    m.insert("enabled".into(), true.into());
    m.insert("source".into(), "config".into());
    Value::Object(m)
}

/// One listing row (Kazoo's: id, first_name, last_name, username, email, presence_id, …).
fn summary(doc: &Value) -> Value {
    let mut m = Map::new();
    for k in [
        "id",
        "first_name",
        "last_name",
        "username",
        "email",
        "presence_id",
        "priv_level",
        "enabled",
        "source",
    ] {
        if let Some(v) = doc.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    Value::Object(m)
}

fn reply(u: &StoredUser, created: bool) -> Reply {
    let data = with_id(&u.doc, &u.id);
    let r = if created {
        Reply::created(data)
    } else {
        Reply::ok(data)
    };
    r.with("revision", revision(u.rev, &u.doc))
}

/// Kazoo's user schema for the fields pivotd uses; other keys are kept as given.
fn check(mut data: Map<String, Value>) -> Result<Value, ApiError> {
    data.remove("id");
    if data.remove("password").is_some() {
        return Err(ApiError::validation(
            "password",
            "not_supported",
            "pivotd has no user logins and keeps no user password",
        ));
    }
    req_str(&mut data, "first_name", 1, 128)?;
    req_str(&mut data, "last_name", 1, 128)?;
    if let Some(e) = opt_str(&mut data, "", "email", 1, 254)? {
        let looks_like_email = e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && !d.is_empty() && !e.contains(char::is_whitespace)
        });
        if !looks_like_email {
            return Err(ApiError::validation(
                "email",
                "format",
                "not an email address",
            ));
        }
    }
    opt_str(&mut data, "", "username", 1, 256)?;
    opt_str(&mut data, "", "presence_id", 1, 256)?;
    bool_or(&mut data, "enabled", true)?;
    check_caller_id(&mut data)?;
    Ok(Value::Object(data))
}

/// Validates, stores, and brings the user's devices' caller IDs up to date. Callers hold
/// `directory_lock`.
async fn save(
    st: &Shared,
    account: &Account,
    id: &str,
    data: Map<String, Value>,
) -> Result<StoredUser, ApiError> {
    let doc = check(data)?;
    let store = st.parts.store.clone();
    let (acc, uid) = (account.id.clone(), id.to_string());
    let saved = blocking(move || store.put_user(&acc, &uid, &doc)).await?;
    refresh_owned(st, account, id).await?;
    Ok(saved)
}

async fn stored(st: &Shared, account_id: &str, id: &str) -> Result<StoredUser, ApiError> {
    let store = st.parts.store.clone();
    let (acc, uid) = (account_id.to_string(), id.to_string());
    blocking(move || store.user(&acc, &uid))
        .await?
        .ok_or_else(|| ApiError::not_found("user", id))
}

fn refuse_config(account: &Account, id: &str) -> Result<(), ApiError> {
    match account.users.iter().any(|u| u.id == id) {
        true => Err(config_owned("user", id)),
        false => Ok(()),
    }
}

/// `GET …/users`: the config file's users first, then the API's, oldest first.
pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let store = st.parts.store.clone();
    let acc = account.id.clone();
    let api = blocking(move || store.users(Some(&acc))).await?;
    let mut rows: Vec<Value> = account
        .users
        .iter()
        .map(|u| summary(&config_doc(u)))
        .collect();
    rows.extend(api.iter().map(|u| summary(&with_id(&u.doc, &u.id))));
    let n = rows.len();
    Ok(Reply::ok(Value::Array(rows)).with("page_size", n))
}

/// `PUT …/users`: 201 with the stored document and its id.
pub(crate) async fn create(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let data = request_data(&body)?;
    let _one_at_a_time = st.directory_lock.lock().await;
    let saved = save(&st, account, &random_id(), data).await?;
    tracing::info!(account = %account.id, id = %saved.id, "user created");
    Ok(reply(&saved, true))
}

pub(crate) async fn get_one(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    if let Some(u) = account.users.iter().find(|u| u.id == id) {
        return Ok(Reply::ok(config_doc(u)));
    }
    Ok(reply(&stored(&st, &account.id, &id).await?, false))
}

/// `POST …/users/{ID}`: replaces the document.
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
    stored(&st, &account.id, &id).await?;
    Ok(reply(&save(&st, account, &id, data).await?, false))
}

/// `PATCH …/users/{ID}`: merges the given fields into the document, then validates it.
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
    let mut doc = into_map(stored(&st, &account.id, &id).await?.doc);
    merge(&mut doc, patch);
    Ok(reply(&save(&st, account, &id, doc).await?, false))
}

/// `DELETE …/users/{ID}`: refused (409) while a device names the user as its owner, so no
/// device is left with an owner that does not exist.
pub(crate) async fn delete(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let _one_at_a_time = st.directory_lock.lock().await;
    let current = stored(&st, &account.id, &id).await?;
    let devices = owned_by(&st, &account.id, &id).await?;
    if !devices.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict").data(json!({
            "message": "the user owns devices: give them another owner_id or delete them first",
            "cause": devices,
        })));
    }
    let store = st.parts.store.clone();
    let (acc, uid) = (account.id.clone(), id.clone());
    blocking(move || store.delete_user(&acc, &uid)).await?;
    Ok(reply(&current, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn kazoo_fields_are_checked_and_other_keys_kept() {
        let ok = check(data(json!({"first_name": "Ada", "last_name": "L", "email": "ada@x.test", "timezone": "Europe/London"}))).unwrap();
        assert_eq!(
            ok,
            json!({"first_name": "Ada", "last_name": "L", "email": "ada@x.test", "timezone": "Europe/London", "enabled": true})
        );
        for (body, key) in [
            (json!({"last_name": "L"}), "first_name"),
            (json!({"first_name": "A", "last_name": ""}), "last_name"),
            (
                json!({"first_name": "A", "last_name": "L", "email": "nope"}),
                "email",
            ),
            (
                json!({"first_name": "A", "last_name": "L", "password": "hunter22"}),
                "password",
            ),
            (
                json!({"first_name": "A", "last_name": "L", "caller_id": {"internal": {"name": 1}}}),
                "caller_id.internal.name",
            ),
        ] {
            let e = check(data(body.clone())).unwrap_err();
            assert!(e.data.get(key).is_some(), "{body}: {}", e.data);
            assert!(!e.data.to_string().contains("hunter22"));
        }
    }
}
