//! `GET …/registrations`: the account's current bindings in the shape Kazoo's Crossbar
//! `registrations` endpoint returns (one object per contact), `expires` being the seconds left.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, State};
use serde_json::{Map, Value};

use super::auth::Authed;
use super::docs::account;
use super::{ApiError, Reply, Shared};
use crate::config::Account;
use crate::registrar::directory::DeviceEntry;
use crate::sip::message::parse_sip_uri;
use crate::store::{unix_to_gregorian, Registration};

/// The contact's host and port, the port defaulted as Kazoo does (5061 for sips or TLS).
fn contact_addr(contact: &str) -> Option<(String, u16)> {
    let uri = parse_sip_uri(contact)?;
    let host = uri.host_with_port.host.to_string();
    let port = match uri.host_with_port.port {
        Some(p) => *p.value(),
        None => {
            let tls = contact.to_ascii_lowercase().contains("transport=tls");
            if uri.scheme == Some(rsip::Scheme::Sips) || tls {
                5061
            } else {
                5060
            }
        }
    };
    Some((host, port))
}

fn row(account: &Account, b: &Registration, device: Option<&DeviceEntry>, now: u64) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    put("account_realm", account.realm.clone().into());
    put("realm", account.realm.clone().into());
    put("authorizing_id", b.device_id.clone().into());
    put("authorizing_type", "device".into());
    put("device_id", b.device_id.clone().into());
    put("call_id", b.call_id.clone().into());
    put("contact", b.contact.clone().into());
    put("original_contact", b.contact.clone().into());
    if let Some((host, port)) = contact_addr(&b.contact) {
        put("contact_ip", host.into());
        put("contact_port", port.to_string().into());
    }
    put("source_ip", b.source.ip().to_string().into());
    put("source_port", b.source.port().to_string().into());
    put("network_ip", b.source.ip().to_string().into());
    put("network_port", b.source.port().to_string().into());
    put("proxy_ip", b.local.ip().to_string().into());
    put("proxy_port", b.local.port().to_string().into());
    put("transport", b.transport.clone().into());
    put(
        "event_timestamp",
        unix_to_gregorian(i64::try_from(b.updated).unwrap_or(i64::MAX)).into(),
    );
    put("expires", b.expires_at.saturating_sub(now).into());
    if let Some(ua) = &b.user_agent {
        put("user_agent", ua.clone().into());
    }
    if let Some(d) = device {
        put("username", d.username.clone().into());
        put("from_user", d.username.clone().into());
        put("to_user", d.username.clone().into());
        if let Some(o) = &d.owner_id {
            put("owner_id", o.clone().into());
        }
    }
    put("from_host", account.realm.clone().into());
    put("to_host", account.realm.clone().into());
    Value::Object(m)
}

/// `GET …/registrations`.
pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
) -> Result<Reply, ApiError> {
    let account = &*account(&st, &auth.account_id)?;
    let registrar = &st.parts.registrar;
    let now = crate::registrar::auth::unix_now();
    let devices: HashMap<String, Arc<DeviceEntry>> = registrar
        .directory()
        .devices_of(&account.id)
        .into_iter()
        .map(|e| (e.device_id.clone(), e))
        .collect();
    let rows: Vec<Value> = registrar
        .all_bindings()
        .iter()
        .filter(|b| b.account_id == account.id)
        .map(|b| row(account, b, devices.get(&b.device_id).map(|e| &**e), now))
        .collect();
    let n = rows.len();
    Ok(Reply::ok(Value::Array(rows)).with("page_size", n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_addresses_default_their_port_as_kazoo_does() {
        assert_eq!(
            contact_addr("sip:2001@192.0.2.7:5070;transport=udp"),
            Some(("192.0.2.7".into(), 5070))
        );
        assert_eq!(
            contact_addr("sip:2001@192.0.2.7"),
            Some(("192.0.2.7".into(), 5060))
        );
        assert_eq!(
            contact_addr("sips:2001@h.test"),
            Some(("h.test".into(), 5061))
        );
        assert_eq!(
            contact_addr("sip:2001@h.test;transport=TLS"),
            Some(("h.test".into(), 5061))
        );
        assert_eq!(contact_addr("tel:+1555"), None);
    }
}
