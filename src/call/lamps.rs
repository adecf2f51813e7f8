//! The busy lamps a call lights (issue 11, "Real calls"): which presence ids a device stands
//! for, and the dialog each shows. The lamps themselves are `presence::CallLamp` guards held
//! by what they follow — the caller's [`Leg`](super::leg) for the calling device, each
//! outbound fork (`outbound.rs`) for a device rung — so a lamp goes out whenever its holder
//! ends or is dropped (BYE either side, CANCEL, a failure, shutdown, a panic).
//!
//! Which ids: Kazoo's endpoint takes its owner's `presence_id` first, then its own, then its
//! SIP username, the realm added to a bare name (`kz_endpoint` `merge_attribute` with the
//! owner first, `kz_attributes:presence_id`). pivotd lights the device's own id (its
//! `presence_id`, else `username@realm`) *and* its owner's `presence_id` when it has one, so
//! a BLF key on the extension and one on the user both follow the call.

use crate::flow::CallInfo;
use crate::logsafe::wire;
use crate::presence::{CallLamp, DialogInfo, Direction, Presence, PresenceId, Status};
use crate::registrar::directory::DeviceEntry;

/// The presence ids a device's calls light: its own, then its owner's (once each).
pub(crate) fn device_ids(d: &DeviceEntry) -> Vec<PresenceId> {
    let own = d.presence_id.as_deref().unwrap_or(&d.username);
    let mut ids = Vec::with_capacity(2);
    for text in std::iter::once(own).chain(d.owner_presence_id.as_deref()) {
        match PresenceId::parse(text, &d.realm) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(device = %wire(&d.device_id), id = %wire(text), "no lamp for a presence id: {e}")
            }
        }
    }
    ids
}

/// The calling device's lamp: early with direction `initiator` while its INVITE is
/// unanswered (Kazoo's BLF shows an outgoing call as early), confirmed once answered. The
/// dialog is the caller's own view of it: its From tag local, our To tag remote, the number
/// it dialled the remote party.
pub(super) fn calling_device(
    presence: &Presence,
    device: &DeviceEntry,
    info: &CallInfo,
    device_tag: Option<String>,
    our_tag: &str,
) -> Option<CallLamp> {
    let ids = device_ids(device);
    if ids.is_empty() {
        return None;
    }
    let dialog = DialogInfo {
        id: info.call_id.clone(),
        call_id: info.call_id.clone(),
        local_tag: device_tag,
        remote_tag: Some(our_tag.to_string()),
        direction: Some(Direction::Initiator),
        remote: Some(format!("sip:{}@{}", info.request_user, info.request_realm)),
    };
    Some(presence.call_lamp(ids, Status::Ringing, dialog))
}

/// A rung device's lamp: ringing with direction `recipient` while the fork's INVITE is out,
/// confirmed when it answers (with the device's To tag). The device's view: our From tag is
/// its remote tag, the caller its remote party.
pub(super) fn rung_device(
    presence: &Presence,
    ids: Vec<PresenceId>,
    call_id: &str,
    our_tag: &str,
    caller_uri: String,
) -> Option<CallLamp> {
    if ids.is_empty() {
        return None;
    }
    let dialog = DialogInfo {
        id: call_id.to_string(),
        call_id: call_id.to_string(),
        local_tag: None,
        remote_tag: Some(our_tag.to_string()),
        direction: Some(Direction::Recipient),
        remote: Some(caller_uri),
    };
    Some(presence.call_lamp(ids, Status::Ringing, dialog))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(username: &str, own: Option<&str>, owner: Option<&str>) -> DeviceEntry {
        DeviceEntry {
            account_id: "a".into(),
            realm: "pbx.test".into(),
            device_id: "d1".into(),
            username: username.into(),
            owner_id: None,
            name: None,
            ha1: Vec::new(),
            caller_id: Default::default(),
            presence_id: own.map(str::to_string),
            owner_presence_id: owner.map(str::to_string),
        }
    }

    fn ids(e: &DeviceEntry) -> Vec<String> {
        device_ids(e).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_device_lights_its_presence_id_else_its_username_and_its_owners_id() {
        assert_eq!(ids(&entry("2001", None, None)), ["2001@pbx.test"]);
        assert_eq!(ids(&entry("2001", Some("desk"), None)), ["desk@pbx.test"]);
        assert_eq!(
            ids(&entry("2001", None, Some("alice@Other.Test"))),
            ["2001@pbx.test", "alice@other.test"]
        );
        // Once each; an id that cannot be one is left out.
        assert_eq!(
            ids(&entry("2001", Some("boss"), Some("boss@pbx.test"))),
            ["boss@pbx.test"]
        );
        assert_eq!(ids(&entry("a b", None, Some("x"))), ["x@pbx.test"]);
    }
}
