//! `…/callflows` (spec c.0, e.5, j.7, j.10): create, list, read, replace, merge, delete.
//!
//! A saved callflow is validated as a whole: the flow by typed decoding (defaults filled,
//! errors with their JSON path), at least one number or pattern, numbers and patterns not
//! used by another callflow of the account (the config file's included), every pivot URL
//! checked as j.10 says for save time. It is stored, then the account's routing table is
//! rebuilt and swapped in: the next INVITE uses it.
//!
//! The config file's callflows are listed too (`"source": "config"`) and can be read, but
//! not changed over the API (403): the file is their owner.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use regex::Regex;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::auth::Authed;
use super::docs::{account, config_owned, into_map, merge, with_id};
use super::{blocking, docs, hex, random_id, request_data, ApiError, Reply, Shared};
use crate::callflow::check::check_node_urls;
use crate::config::{Account, CallflowEntry, Config};
use crate::flow::Node;
use crate::pivot::guard::UrlGuard;
use crate::routing::Routes;
use crate::store::{Store, StoredCallflow};

/// Kazoo's message when neither numbers nor patterns are given (cb_callflows).
const NEED_NUMBER: &str = "Callflows must be assigned at least one number or pattern";

/// Reads every stored API callflow into the routing table (at start). A callflow that no
/// longer validates, or whose account left the config, is logged and left out.
pub async fn load_callflows(cfg: &Config, store: &Store, routes: &Routes) {
    let s = store.clone();
    let stored = match tokio::task::spawn_blocking(move || s.callflows(None)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!("cannot read the API callflows: {e}");
            return;
        }
        Err(e) => {
            tracing::warn!("cannot read the API callflows: {e}");
            return;
        }
    };
    let mut by_account: HashMap<String, Vec<CallflowEntry>> = HashMap::new();
    for c in stored {
        if !cfg.accounts.iter().any(|a| a.id == c.account_id) {
            tracing::warn!(account = %c.account_id, id = %c.id, "API callflow of an account not in the config: not routed");
            continue;
        }
        match entry_of(&c.id, &c.doc) {
            Ok(e) => by_account.entry(c.account_id).or_default().push(e),
            Err(e) => {
                tracing::warn!(id = %c.id, "stored callflow no longer valid, not routed: {e:?}")
            }
        }
    }
    for (account, entries) in by_account {
        routes.set_account(&account, entries);
    }
}

/// The routing entry of a stored (already validated) document.
fn entry_of(id: &str, doc: &Value) -> Result<CallflowEntry, ApiError> {
    let strings = |k: &str| -> Vec<String> {
        doc.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let patterns = strings("patterns")
        .iter()
        .map(|p| Regex::new(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::validation("patterns", "format", e.to_string()))?;
    let flow = doc.get("flow").unwrap_or(&Value::Null);
    let flow = Node::from_json_at(flow, "flow")
        .map_err(|e| ApiError::validation(&e.path, "invalid", e.message))?;
    Ok(CallflowEntry {
        id: Some(id.to_string()),
        name: doc.get("name").and_then(Value::as_str).map(str::to_owned),
        numbers: strings("numbers"),
        patterns,
        flow: Arc::new(flow),
        source: format!("api callflow {id}"),
    })
}

/// The id a config callflow shows over the API: its `id`, else 32 hex digits derived from
/// where it sits in the file (stable across restarts while the file keeps its order).
fn config_id(account: &Account, c: &CallflowEntry) -> String {
    c.id.clone().unwrap_or_else(|| {
        let d = Sha256::digest(format!("{}\n{}", account.id, c.source).as_bytes());
        hex(&d[..16])
    })
}

fn config_doc(account: &Account, c: &CallflowEntry) -> Value {
    let mut m = Map::new();
    if let Some(n) = &c.name {
        m.insert("name".into(), n.clone().into());
    }
    m.insert("numbers".into(), json!(c.numbers));
    m.insert(
        "patterns".into(),
        json!(c.patterns.iter().map(Regex::as_str).collect::<Vec<_>>()),
    );
    m.insert("flow".into(), c.flow.to_json());
    m.insert("id".into(), config_id(account, c).into());
    m.insert("source".into(), "config".into());
    Value::Object(m)
}

fn api_doc(c: &StoredCallflow) -> Value {
    with_id(&c.doc, &c.id)
}

fn modules(flow: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(node) = flow.and_then(|f| Node::from_json(f).ok()) {
        node.visit(&mut |n| {
            let name = n.module.name().to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        });
    }
    out
}

/// One listing row (Kazoo's callflow listing: id, name, numbers, patterns, modules).
fn summary(doc: &Value) -> Value {
    let mut m = Map::new();
    for k in [
        "id",
        "name",
        "numbers",
        "patterns",
        "featurecode",
        "flags",
        "source",
    ] {
        if let Some(v) = doc.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    m.insert("modules".into(), json!(modules(doc.get("flow"))));
    Value::Object(m)
}

fn revision(c: &StoredCallflow) -> String {
    docs::revision(c.rev, &c.doc)
}

/// A validated document, ready to store and route.
struct Checked {
    doc: Value,
    numbers: Vec<String>,
    patterns: Vec<String>,
}

fn string_list(data: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::validation(
                    &format!("{key}.{i}"),
                    "type",
                    "must be a string",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::validation(
            key,
            "type",
            "must be an array of strings",
        )),
    }
}

/// Each number 1 to 36 characters, none twice. A set, not a scan of the earlier numbers: a
/// 2 MB body holds ~500 000 numbers, and a quadratic check of them took minutes of CPU.
fn check_numbers(numbers: &[String]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::with_capacity(numbers.len());
    for (i, n) in numbers.iter().enumerate() {
        let len = n.chars().count();
        if !(1..=36).contains(&len) {
            let rule = if len == 0 { "minLength" } else { "maxLength" };
            return Err(ApiError::validation(
                &format!("numbers.{i}"),
                rule,
                "a number must be 1 to 36 characters long",
            ));
        }
        if !seen.insert(n.as_str()) {
            return Err(ApiError::validation(
                "numbers",
                "uniqueItems",
                format!("{n:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Spec c.0 + j.7 + j.10 over a whole callflow document, for callflow `id` of `account`.
fn check(
    st: &Shared,
    account: &Account,
    id: &str,
    mut data: Map<String, Value>,
) -> Result<Checked, ApiError> {
    data.remove("id");
    let numbers = string_list(&data, "numbers")?;
    check_numbers(&numbers)?;
    let patterns = string_list(&data, "patterns")?;
    for (i, p) in patterns.iter().enumerate() {
        if p.is_empty() {
            return Err(ApiError::validation(
                &format!("patterns.{i}"),
                "minLength",
                "a pattern must not be empty",
            ));
        }
        if let Err(e) = Regex::new(p) {
            return Err(ApiError::validation(
                &format!("patterns.{i}"),
                "format",
                format!("not a valid regex: {e}"),
            ));
        }
    }
    if numbers.is_empty() && patterns.is_empty() {
        return Err(ApiError::validation("numbers", "required", NEED_NUMBER));
    }
    match data.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if (1..=128).contains(&s.chars().count()) => {}
        Some(_) => {
            return Err(ApiError::validation(
                "name",
                "type",
                "name must be a string of 1 to 128 characters",
            ))
        }
    }
    let flow = match data.get("flow") {
        None | Some(Value::Null) => {
            return Err(ApiError::validation(
                "flow",
                "required",
                "Field is required but missing",
            ))
        }
        Some(f) => f,
    };
    let node = Node::from_json_at(flow, "flow").map_err(|e| {
        let rule = if e.message.starts_with("required") {
            "required"
        } else {
            "invalid"
        };
        ApiError::validation(&e.path, rule, e.message)
    })?;
    // Spec j.10 at save time: scheme and literal addresses, no DNS.
    let guard = UrlGuard::from_config(&st.parts.cfg.get().pivot);
    let mut problems = Vec::new();
    check_node_urls(&node, "flow", &guard, &mut problems);
    if let Some(p) = problems.first() {
        let mut detail = Map::new();
        detail.insert("message".into(), p.message.clone().into());
        return Err(ApiError::validation_detail(&p.key, "invalid_url", detail));
    }
    // Numbers and patterns are the account's: not in another callflow (Kazoo: "unique").
    let taken = |what: &str, key: &str, value: &str, holder: &str| {
        let mut detail = Map::new();
        detail.insert(
            "message".into(),
            format!("{what} {value} exists in callflow {holder}").into(),
        );
        detail.insert("cause".into(), value.into());
        ApiError::validation_detail(key, "unique", detail)
    };
    let api = st.parts.routes.api_callflows(&account.id);
    let others = account
        .callflows
        .iter()
        .map(|c| (config_id(account, c), c))
        .chain(
            api.iter()
                .filter(|c| c.id.as_deref() != Some(id))
                .map(|c| (c.id.clone().unwrap_or_default(), c)),
        );
    for (holder, c) in others {
        if let Some(n) = numbers.iter().find(|n| c.numbers.contains(n)) {
            return Err(taken("Number", "numbers", n, &holder));
        }
        if let Some(p) = patterns
            .iter()
            .find(|p| c.patterns.iter().any(|q| q.as_str() == p.as_str()))
        {
            return Err(taken("Pattern", "patterns", p, &holder));
        }
    }
    data.insert("numbers".into(), json!(numbers));
    data.insert("patterns".into(), json!(patterns));
    data.insert("flow".into(), node.to_json());
    Ok(Checked {
        doc: Value::Object(data),
        numbers,
        patterns,
    })
}

/// Validates, stores, and swaps the account's routing table. Callers hold `callflow_lock`.
async fn save(
    st: &Shared,
    account: &Account,
    id: &str,
    data: Map<String, Value>,
) -> Result<StoredCallflow, ApiError> {
    let checked = check(st, account, id, data)?;
    let store = st.parts.store.clone();
    let (acc, cid) = (account.id.clone(), id.to_string());
    let saved = blocking(move || {
        store.put_callflow(
            &acc,
            &cid,
            &checked.doc,
            &checked.numbers,
            &checked.patterns,
        )
    })
    .await?;
    let saved = saved.map_err(|c| {
        ApiError::validation(
            "numbers",
            "unique",
            format!("Number {} exists in callflow {}", c.number, c.callflow_id),
        )
    })?;
    reroute(st, &account.id).await?;
    Ok(saved)
}

/// Another node changed the account's callflows (or this one: the same table again):
/// rebuilds its routes from the store. An account not in this node's config is not routed.
pub(super) async fn follow(st: &Shared, account_id: &str) {
    if st.parts.cfg.get().account(account_id).is_none() {
        return;
    }
    let _one_at_a_time = st.callflow_lock.lock().await;
    if let Err(e) = reroute(st, account_id).await {
        tracing::warn!(account = %account_id, "cannot reload the API callflows: {e:?}");
    }
}

/// Rebuilds the account's API routes from the store.
async fn reroute(st: &Shared, account_id: &str) -> Result<(), ApiError> {
    let store = st.parts.store.clone();
    let acc = account_id.to_string();
    let all = blocking(move || store.callflows(Some(&acc))).await?;
    let entries = all
        .iter()
        .filter_map(|c| match entry_of(&c.id, &c.doc) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(id = %c.id, "stored callflow not valid, not routed: {e:?}");
                None
            }
        })
        .collect();
    st.parts.routes.set_account(account_id, entries);
    Ok(())
}

fn saved_reply(c: &StoredCallflow, created: bool) -> Reply {
    let data = api_doc(c);
    let r = if created {
        Reply::created(data)
    } else {
        Reply::ok(data)
    };
    r.with("revision", revision(c))
}

async fn stored(st: &Shared, account_id: &str, id: &str) -> Result<StoredCallflow, ApiError> {
    let store = st.parts.store.clone();
    let (acc, cid) = (account_id.to_string(), id.to_string());
    blocking(move || store.callflow(&acc, &cid))
        .await?
        .ok_or_else(|| ApiError::not_found("callflow", id))
}

/// A config callflow's id: it exists but is read-only.
fn refuse_config(account: &Account, id: &str) -> Result<(), ApiError> {
    if account
        .callflows
        .iter()
        .any(|c| config_id(account, c) == id)
    {
        return Err(config_owned("callflow", id));
    }
    Ok(())
}

/// `GET …/callflows`: config callflows first, then the API ones, oldest first.
pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let store = st.parts.store.clone();
    let acc = account.id.clone();
    let api = blocking(move || store.callflows(Some(&acc))).await?;
    let mut rows: Vec<Value> = account
        .callflows
        .iter()
        .map(|c| summary(&config_doc(account, c)))
        .collect();
    rows.extend(api.iter().map(|c| summary(&api_doc(c))));
    let n = rows.len();
    Ok(Reply::ok(Value::Array(rows)).with("page_size", n))
}

/// `PUT …/callflows` (spec e.5): 201 with the stored document, defaults filled, and its id.
pub(crate) async fn create(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let data = request_data(&body)?;
    let _one_at_a_time = st.callflow_lock.lock().await;
    let saved = save(&st, account, &random_id(), data).await?;
    tracing::info!(account = %account.id, id = %saved.id, "callflow created");
    Ok(saved_reply(&saved, true))
}

pub(crate) async fn get_one(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    if let Some(c) = account
        .callflows
        .iter()
        .find(|c| config_id(account, c) == id)
    {
        return Ok(Reply::ok(config_doc(account, c)));
    }
    let c = stored(&st, &account.id, &id).await?;
    Ok(saved_reply(&c, false))
}

/// `POST …/callflows/{ID}`: replaces the document.
pub(crate) async fn replace(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let data = request_data(&body)?;
    let _one_at_a_time = st.callflow_lock.lock().await;
    stored(&st, &account.id, &id).await?;
    let saved = save(&st, account, &id, data).await?;
    Ok(saved_reply(&saved, false))
}

/// `PATCH …/callflows/{ID}`: merges the given fields into the document, then validates the
/// result as a whole.
pub(crate) async fn patch(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let patch = request_data(&body)?;
    let _one_at_a_time = st.callflow_lock.lock().await;
    let current = stored(&st, &account.id, &id).await?;
    let mut doc = into_map(current.doc);
    merge(&mut doc, patch);
    let saved = save(&st, account, &id, doc).await?;
    Ok(saved_reply(&saved, false))
}

/// `DELETE …/callflows/{ID}`: the deleted document (Crossbar answers with it).
pub(crate) async fn delete(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    refuse_config(account, &id)?;
    let _one_at_a_time = st.callflow_lock.lock().await;
    let current = stored(&st, &account.id, &id).await?;
    let store = st.parts.store.clone();
    let (acc, cid) = (account.id.clone(), id.clone());
    blocking(move || store.delete_callflow(&acc, &cid)).await?;
    reroute(&st, &account.id).await?;
    Ok(Reply::ok(api_doc(&current)).with("revision", revision(&current)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_numbers_are_checked_in_linear_time() {
        let many: Vec<String> = (0..400_000).map(|i| format!("+1555{i:07}")).collect();
        let t = std::time::Instant::now();
        assert!(check_numbers(&many).is_ok());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
        let mut twice = many;
        twice.push("+15550000007".into());
        let e = check_numbers(&twice).expect_err("duplicate");
        assert!(e.message.contains("validation"), "{e:?}");
        assert!(check_numbers(&["".into()]).is_err());
        assert!(check_numbers(&["é".repeat(36)]).is_ok());
        assert!(check_numbers(&["é".repeat(37)]).is_err());
    }
}
