//! What the document APIs (callflows, devices, users) share: the account of the path, JSON
//! merge for PATCH, revisions, the stored document as shown, the 403 for the config file's
//! documents, and field checks that answer in Kazoo's validation shape
//! (`{"sip.username": {"maxLength": {"message": …, "target": 32}}}`).

use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{hex, ApiError, Shared};
use crate::config::live::LiveAccount;

/// The account of the path (the token's: `require_token` checked they match), in the
/// config in force.
pub(crate) fn account(st: &Shared, id: &str) -> Result<LiveAccount, ApiError> {
    st.parts
        .cfg
        .account(id)
        .ok_or_else(|| ApiError::not_found("account", id))
}

/// JSON merge: objects merge key by key, `null` removes a key, anything else replaces.
pub(crate) fn merge(into: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                into.remove(&k);
            }
            Value::Object(p) => match into.get_mut(&k) {
                Some(Value::Object(existing)) => merge(existing, p),
                _ => {
                    let mut fresh = Map::new();
                    merge(&mut fresh, p);
                    into.insert(k, Value::Object(fresh));
                }
            },
            other => {
                into.insert(k, other);
            }
        }
    }
}

/// The envelope's `revision`: the change count and a digest of the document.
pub(crate) fn revision(rev: u64, doc: &Value) -> String {
    let d = Sha256::digest(doc.to_string().as_bytes());
    format!("{rev}-{}", hex(&d[..16]))
}

/// A stored document as the API shows it: with its `id`.
pub(crate) fn with_id(doc: &Value, id: &str) -> Value {
    let mut m = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    m.insert("id".into(), id.into());
    Value::Object(m)
}

/// A stored document as a map, for PATCH.
pub(crate) fn into_map(doc: Value) -> Map<String, Value> {
    match doc {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// 403 for a document of the config file: it exists but is changed there.
pub(crate) fn config_owned(what: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden").data(json!({
        "message": format!("this {what} is defined in the config file; change it there"),
        "cause": id,
    }))
}

/// A validation error with Kazoo's `target` (the limit or type the value missed).
fn rule(path: &str, rule: &str, message: String, target: Value) -> ApiError {
    let mut detail = Map::new();
    detail.insert("message".into(), message.into());
    detail.insert("target".into(), target);
    ApiError::validation_detail(path, rule, detail)
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A string field of `map` (at `prefix.key` in errors) of `min..=max` characters; absent or
/// `null` (which is removed) is `None`.
pub(crate) fn opt_str(
    map: &mut Map<String, Value>,
    prefix: &str,
    key: &str,
    min: usize,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let path = join(prefix, key);
    match map.get(key) {
        None => Ok(None),
        Some(Value::Null) => {
            map.remove(key);
            Ok(None)
        }
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min {
                Err(rule(
                    &path,
                    "minLength",
                    format!("String must be at least {min} characters"),
                    min.into(),
                ))
            } else if n > max {
                Err(rule(
                    &path,
                    "maxLength",
                    format!("String must not be more than {max} characters"),
                    max.into(),
                ))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(rule(
            &path,
            "type",
            "Value did not match type(s): string".into(),
            "string".into(),
        )),
    }
}

/// [`opt_str`] for a field the document must have.
pub(crate) fn req_str(
    map: &mut Map<String, Value>,
    key: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    opt_str(map, "", key, min, max)?
        .ok_or_else(|| ApiError::validation(key, "required", "Field is required but missing"))
}

/// A boolean field; absent is `default`, which is written into the document (Kazoo's schema
/// defaults are filled in on save).
pub(crate) fn bool_or(
    map: &mut Map<String, Value>,
    key: &str,
    default: bool,
) -> Result<bool, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.into(), default.into());
            Ok(default)
        }
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(rule(
            key,
            "type",
            "Value did not match type(s): boolean".into(),
            "boolean".into(),
        )),
    }
}

/// An object field, for nested checks; absent or `null` (removed) is `None`.
pub(crate) fn opt_object<'a>(
    map: &'a mut Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<Option<&'a mut Map<String, Value>>, ApiError> {
    if matches!(map.get(key), Some(Value::Null)) {
        map.remove(key);
    }
    match map.get_mut(key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(rule(
            &join(prefix, key),
            "type",
            "Value did not match type(s): object".into(),
            "object".into(),
        )),
    }
}

/// Kazoo's `caller_id`: `{internal, external, emergency, asserted}`, each `{name, number}` of
/// at most 35 characters. Other keys are kept as given.
pub(crate) fn check_caller_id(doc: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(c) = opt_object(doc, "", "caller_id")? else {
        return Ok(());
    };
    for kind in ["internal", "external", "emergency", "asserted"] {
        let prefix = format!("caller_id.{kind}");
        if let Some(one) = opt_object(c, "caller_id", kind)? {
            opt_str(one, &prefix, "name", 0, 35)?;
            opt_str(one, &prefix, "number", 0, 35)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn merge_is_json_merge_patch() {
        let mut doc = map(
            json!({"name": "a", "flow": {"module": "pivot", "data": {"voice_url": "u", "debug": false}}}),
        );
        let patch = map(json!({"name": null, "numbers": ["1"], "flow": {"data": {"debug": true}}}));
        merge(&mut doc, patch);
        assert_eq!(
            Value::Object(doc),
            json!({"numbers": ["1"], "flow": {"module": "pivot", "data": {"voice_url": "u", "debug": true}}})
        );
    }

    #[test]
    fn field_checks_name_the_path_and_the_rule() {
        let fields = |e: ApiError| e.data.to_string();
        let mut d = map(json!({"sip": {"username": "x", "password": 5}, "n": null}));
        assert_eq!(opt_str(&mut d, "", "n", 1, 2).unwrap(), None);
        assert!(!d.contains_key("n"), "null is removed");
        let sip = opt_object(&mut d, "", "sip").unwrap().unwrap();
        let e = opt_str(sip, "sip", "username", 2, 32).unwrap_err();
        assert!(fields(e).contains(r#"{"sip.username":{"minLength":{"message":"String must be at least 2 characters","target":2}}}"#));
        let e = opt_str(sip, "sip", "password", 5, 32).unwrap_err();
        assert!(fields(e).contains(r#""sip.password":{"type""#));
        let e = req_str(&mut d, "name", 1, 128).unwrap_err();
        assert!(fields(e).contains(r#""name":{"required""#));
        assert!(bool_or(&mut d, "enabled", true).unwrap());
        assert_eq!(d["enabled"], true);
        let mut c = map(json!({"caller_id": {"internal": {"name": "x".repeat(36)}}}));
        let e = check_caller_id(&mut c).unwrap_err();
        assert!(fields(e).contains("caller_id.internal.name"));
        let mut ok = map(json!({"caller_id": {"external": {"number": "+15551230000"}, "mine": 1}}));
        check_caller_id(&mut ok).unwrap();
    }
}
