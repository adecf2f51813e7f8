//! `…/presence`: Kazoo's Crossbar `presence` resource (`cb_presence.erl`,
//! `applications/crossbar/doc/presence.md`) — what the account's presence ids show, who
//! watches them, and the reset an operator uses on a stuck lamp.
//!
//! - `GET …/presence` (`?event=dialog|presence` as Crossbar's filter): `subscriptions` keyed
//!   as Crossbar lists them — the id's user part, the event package, the Call-ID — and
//!   `presentities`: every id of the account that is lit or watched, with its state.
//! - `GET …/presence/{ID}`: the same for one id (`name`, or `name@realm` in the account's
//!   realm). As in Crossbar, any id exists: one nothing lights or watches is idle, not 404.
//! - `POST …/presence/{ID}` with `{"data": {"action": "reset"}}` (or Crossbar's older
//!   `{"reset": true}`): the id goes idle and every watcher is sent the state again;
//!   `{"action": "set", "state": "confirmed" | "early" | "terminated"}` sets it as a flow's
//!   `manual_presence` does. `202` with Crossbar's message, the NOTIFYs being on their way.
//!   Crossbar has no account-wide reset: `POST …/presence` is not served (405).
//!
//! Subscriptions are read from the store, where the presence task writes each new one and
//! each change through the writer queue (a subscription shows within milliseconds); lamps
//! from the presence handle.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::auth::Authed;
use super::docs::account;
use super::{blocking, request_data, ApiError, Reply, Shared};
use crate::config::Account;
use crate::logsafe::wire;
use crate::presence::body::dialog_state;
use crate::presence::subscription::{Package, SubscriptionView};
use crate::presence::{Lamp, LampError, Origin, PresenceId, Status};
use crate::store::{unix_now, unix_to_gregorian};

/// What a POST asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Reset,
    Set(Status),
}

/// An id and what is known of it.
struct Entry {
    lamp: Lamp,
    subs: Vec<SubscriptionView>,
}

/// `GET …/presence`.
pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let event = event_filter(&q)?;
    let subs = subscriptions(&st, account, event).await?;
    let mut ids: BTreeMap<PresenceId, Entry> = BTreeMap::new();
    for (id, lamp) in st.parts.presence.lit() {
        if in_realm(&id, account) {
            ids.insert(
                id,
                Entry {
                    lamp,
                    subs: Vec::new(),
                },
            );
        }
    }
    for v in subs {
        entry(&st, &mut ids, &v.watched).subs.push(v);
    }
    Ok(Reply::ok(view(&ids)))
}

/// `GET …/presence/{ID}`.
pub(crate) async fn get_one(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, raw)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let id = presence_id(&st, account, &raw)?;
    let event = event_filter(&q)?;
    let subs = subscriptions(&st, account, event).await?;
    let mut ids = BTreeMap::new();
    entry(&st, &mut ids, &id);
    for v in subs.into_iter().filter(|v| v.watched == id) {
        entry(&st, &mut ids, &id).subs.push(v);
    }
    Ok(Reply::ok(view(&ids)))
}

/// `POST …/presence/{ID}`: reset, or set.
pub(crate) async fn post_one(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, raw)): Path<(String, String)>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let id = presence_id(&st, account, &raw)?;
    let action = action(&request_data(&body)?)?;
    let presence = &st.parts.presence;
    let (done, message) = match action {
        Action::Reset => (presence.reset(&id), "reset".to_string()),
        Action::Set(status) => (
            presence.set(&id, Lamp::manual(&id, status)),
            dialog_state(status).to_string(),
        ),
    };
    done.map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "presence unavailable")
            .data(json!({ "message": e.to_string() }))
    })?;
    tracing::info!(
        account = %account.id,
        id = %wire(&id.to_string()),
        action = %message,
        "api: presence"
    );
    Ok(Reply::accepted(Value::String(format!(
        "{message} command sent for extension {}",
        id.user()
    ))))
}

/// The path's id in the account: 404 with Crossbar's `bad identifier` for a text that is no
/// presence id, or one of another realm (no id of this account).
fn presence_id(st: &Shared, account: &Account, raw: &str) -> Result<PresenceId, ApiError> {
    st.parts.presence.account_id(&account.id, raw).map_err(|e| {
        let message = match e {
            LampError::OtherRealm { .. } => "not a presence id of this account".to_string(),
            e => e.to_string(),
        };
        ApiError::new(StatusCode::NOT_FOUND, "bad identifier")
            .data(json!({ "message": message, "cause": raw }))
    })
}

fn in_realm(id: &PresenceId, account: &Account) -> bool {
    id.realm().eq_ignore_ascii_case(&account.realm)
}

/// `?event=`: Crossbar's filter on the event package.
fn event_filter(q: &HashMap<String, String>) -> Result<Option<Package>, ApiError> {
    let Some(name) = q.get("event") else {
        return Ok(None);
    };
    Package::ALL
        .into_iter()
        .find(|p| p.name() == name)
        .map(Some)
        .ok_or_else(|| {
            let mut detail = Map::new();
            detail.insert(
                "message".into(),
                "Value not found in enumerated list of values".into(),
            );
            detail.insert(
                "target".into(),
                Package::ALL.iter().map(|p| p.name()).collect(),
            );
            ApiError::validation_detail("event", "enum", detail)
        })
}

/// The account's live subscriptions (of one package, if asked), from the store.
async fn subscriptions(
    st: &Shared,
    account: &Account,
    event: Option<Package>,
) -> Result<Vec<SubscriptionView>, ApiError> {
    let store = st.parts.store.clone();
    let rows = blocking(move || store.subscriptions(unix_now())).await?;
    Ok(rows
        .iter()
        .filter(|r| r.account_id == account.id)
        .filter_map(|r| match SubscriptionView::of(r) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "api: an unreadable presence subscription skipped");
                None
            }
        })
        .filter(|v| in_realm(&v.watched, account))
        .filter(|v| event.is_none_or(|p| v.package == p))
        .collect())
}

/// The entry of `id`, made with its lamp now when it has none.
fn entry<'m>(
    st: &Shared,
    ids: &'m mut BTreeMap<PresenceId, Entry>,
    id: &PresenceId,
) -> &'m mut Entry {
    ids.entry(id.clone()).or_insert_with(|| Entry {
        lamp: st.parts.presence.lamp(id),
        subs: Vec::new(),
    })
}

/// What a POST's `data` asks: `action` (`reset`, or `set` with a `state`), or Crossbar's
/// older `reset: true`.
fn action(data: &Map<String, Value>) -> Result<Action, ApiError> {
    let invalid = |key: &str, what: &str| {
        let mut detail = Map::new();
        detail.insert(
            "message".into(),
            format!("Field must be set to a valid {what}").into(),
        );
        detail.insert("target".into(), "invalid".into());
        ApiError::validation_detail(key, "invalid", detail)
    };
    let action = match data.get("action") {
        Some(Value::String(a)) => a.as_str(),
        None if data.get("reset") == Some(&Value::Bool(true)) => "reset",
        _ => return Err(invalid("action", "action")),
    };
    match action {
        "reset" => Ok(Action::Reset),
        "set" => data
            .get("state")
            .and_then(Value::as_str)
            .and_then(|s| Status::ALL.into_iter().find(|&st| dialog_state(st) == s))
            .map(Action::Set)
            .ok_or_else(|| invalid("state", "state")),
        _ => Err(invalid("action", "action")),
    }
}

/// `{"subscriptions": {user: {event: {call_id: …}}}, "presentities": {user: …}}`.
fn view(ids: &BTreeMap<PresenceId, Entry>) -> Value {
    let now = unix_now();
    let mut subscriptions = Map::new();
    let mut presentities = Map::new();
    for (id, e) in ids {
        let mut events: Map<String, Value> = Map::new();
        for v in &e.subs {
            let calls = events
                .entry(v.package.name())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(calls) = calls {
                calls.insert(v.call_id.clone(), subscription(v, now));
            }
        }
        if !events.is_empty() {
            subscriptions.insert(id.user().to_string(), Value::Object(events));
        }
        presentities.insert(id.user().to_string(), presentity(id, e));
    }
    json!({ "subscriptions": subscriptions, "presentities": presentities })
}

/// One subscription, with the field names of Kazoo's presence search where it has them.
fn subscription(v: &SubscriptionView, now: u64) -> Value {
    let updated = i64::try_from(v.updated).unwrap_or(i64::MAX);
    json!({
        "call_id": v.call_id,
        "event": v.package.name(),
        "from": v.from,
        "to": v.watched.to_string(),
        "expires": v.expires_at.saturating_sub(now),
        "timestamp": unix_to_gregorian(updated),
        "version": v.version,
        "device_id": v.device_id,
        "contact": v.contact,
        "transport": v.transport,
        "source_ip": v.remote.ip().to_string(),
        "source_port": v.remote.port().to_string(),
    })
}

/// One id: what it shows now.
fn presentity(id: &PresenceId, e: &Entry) -> Value {
    let mut m = Map::new();
    m.insert("presentity".into(), id.to_string().into());
    m.insert("state".into(), dialog_state(e.lamp.status).into());
    m.insert("status".into(), e.lamp.status.as_str().into());
    if !e.lamp.is_idle() {
        let origin = match e.lamp.origin {
            Origin::Manual => "manual_presence",
            Origin::Call => "call",
        };
        m.insert("origin".into(), origin.into());
    }
    if let Some(d) = &e.lamp.dialog {
        m.insert("call_id".into(), d.call_id.clone().into());
        if let Some(dir) = d.direction {
            m.insert("direction".into(), dir.as_str().into());
        }
    }
    m.insert("subscriptions".into(), e.subs.len().into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn actions_as_crossbar_reads_them() {
        assert_eq!(
            action(&data(json!({"action": "reset"}))).unwrap(),
            Action::Reset
        );
        assert_eq!(
            action(&data(json!({"reset": true}))).unwrap(),
            Action::Reset
        );
        for (state, status) in [
            ("confirmed", Status::Busy),
            ("early", Status::Ringing),
            ("terminated", Status::Idle),
        ] {
            assert_eq!(
                action(&data(json!({"action": "set", "state": state}))).unwrap(),
                Action::Set(status)
            );
        }
        for (body, key) in [
            (json!({}), "action"),
            (json!({"reset": false}), "action"),
            (json!({"action": "reboot"}), "action"),
            (json!({"action": 1}), "action"),
            (json!({"action": "set"}), "state"),
            (json!({"action": "set", "state": "busy"}), "state"),
        ] {
            let e = action(&data(body.clone())).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                e.data[key]["invalid"]["target"], "invalid",
                "{body}: {:?}",
                e.data
            );
        }
    }
}
