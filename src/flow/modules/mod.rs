//! Each callflow module's data, one file each: a typed struct decoded from the node's `data`
//! with the schema's defaults (see `kazoo-schemas/callflows.<module>.json`), and its `to_json`.
//! What a module *does* is in `callflow::modules`, beside the runtime.

pub mod collect_dtmf;
pub mod device;
pub mod manual_presence;
pub mod pivot;
pub mod play;
pub mod resources;
pub mod response;
pub mod ring_group;
pub mod say;
pub mod send_dtmf;
pub mod sleep;
pub mod tts;
pub mod user;

use serde_json::{Map, Value};

use super::node::{Data, ValidationError};

/// A node's module with its typed data; variants are named after the Kazoo modules.
#[derive(Clone, Debug, PartialEq)]
pub enum ModuleData {
    Play(play::Play),
    Sleep(sleep::Sleep),
    Response(response::Response),
    /// `hangup` (`callflows.hangup.json`) has no data keys besides `skip_module`.
    Hangup,
    CollectDtmf(collect_dtmf::CollectDtmf),
    Pivot(pivot::Pivot),
    Tts(tts::Tts),
    Say(say::Say),
    Device(device::Device),
    User(user::User),
    RingGroup(ring_group::RingGroup),
    /// `resources`, or `offnet` when its `offnet` flag is set (one schema, one behaviour).
    Resources(resources::Resources),
    SendDtmf(send_dtmf::SendDtmf),
    ManualPresence(manual_presence::ManualPresence),
}

/// Every module this build knows, in Kazoo's names.
pub const MODULES: &[&str] = &[
    "play",
    "sleep",
    "response",
    "hangup",
    "collect_dtmf",
    "pivot",
    "say",
    "tts",
    "device",
    "user",
    "ring_group",
    "resources",
    "offnet",
    "send_dtmf",
    "manual_presence",
];

impl ModuleData {
    /// Kazoo's module name.
    pub fn name(&self) -> &'static str {
        match self {
            ModuleData::Play(_) => "play",
            ModuleData::Sleep(_) => "sleep",
            ModuleData::Response(_) => "response",
            ModuleData::Hangup => "hangup",
            ModuleData::CollectDtmf(_) => "collect_dtmf",
            ModuleData::Pivot(_) => "pivot",
            ModuleData::Tts(_) => "tts",
            ModuleData::Say(_) => "say",
            ModuleData::Device(_) => "device",
            ModuleData::User(_) => "user",
            ModuleData::RingGroup(_) => "ring_group",
            ModuleData::Resources(r) if r.offnet => "offnet",
            ModuleData::Resources(_) => "resources",
            ModuleData::SendDtmf(_) => "send_dtmf",
            ModuleData::ManualPresence(_) => "manual_presence",
        }
    }

    /// Decodes `data` for `module`; `module_path` names the `module` key for an unknown one.
    pub fn from_data(
        module: &str,
        data: &Data<'_>,
        module_path: &str,
    ) -> Result<ModuleData, ValidationError> {
        Ok(match module {
            "play" => ModuleData::Play(play::Play::from_data(data)?),
            "sleep" => ModuleData::Sleep(sleep::Sleep::from_data(data)?),
            "response" => ModuleData::Response(response::Response::from_data(data)?),
            "hangup" => ModuleData::Hangup,
            "collect_dtmf" => ModuleData::CollectDtmf(collect_dtmf::CollectDtmf::from_data(data)?),
            "pivot" => ModuleData::Pivot(pivot::Pivot::from_data(data)?),
            "tts" => ModuleData::Tts(tts::Tts::from_data(data)?),
            "say" => ModuleData::Say(say::Say::from_data(data)?),
            "device" => ModuleData::Device(device::Device::from_data(data)?),
            "user" => ModuleData::User(user::User::from_data(data)?),
            "ring_group" => ModuleData::RingGroup(ring_group::RingGroup::from_data(data)?),
            "resources" => ModuleData::Resources(resources::Resources::from_data(data, false)?),
            "offnet" => ModuleData::Resources(resources::Resources::from_data(data, true)?),
            "send_dtmf" => ModuleData::SendDtmf(send_dtmf::SendDtmf::from_data(data)?),
            "manual_presence" => {
                ModuleData::ManualPresence(manual_presence::ManualPresence::from_data(data)?)
            }
            other => {
                return Err(ValidationError::new(
                    module_path,
                    format!(
                        "unknown callflow module {other:?} (known: {})",
                        MODULES.join(", ")
                    ),
                ))
            }
        })
    }

    /// The data object with defaults filled in (without `skip_module`, which `Node` adds).
    pub fn to_json(&self) -> Map<String, Value> {
        match self {
            ModuleData::Play(d) => d.to_json(),
            ModuleData::Sleep(d) => d.to_json(),
            ModuleData::Response(d) => d.to_json(),
            ModuleData::Hangup => Map::new(),
            ModuleData::CollectDtmf(d) => d.to_json(),
            ModuleData::Pivot(d) => d.to_json(),
            ModuleData::Tts(d) => d.to_json(),
            ModuleData::Say(d) => d.to_json(),
            ModuleData::Device(d) => d.to_json(),
            ModuleData::User(d) => d.to_json(),
            ModuleData::RingGroup(d) => d.to_json(),
            ModuleData::Resources(d) => d.to_json(),
            ModuleData::SendDtmf(d) => d.to_json(),
            ModuleData::ManualPresence(d) => d.to_json(),
        }
    }

    /// Media ids (or URLs) this module would play (for configuration checks).
    pub fn media_ids(&self) -> Vec<&str> {
        match self {
            ModuleData::Play(d) => vec![d.id.as_str()],
            ModuleData::Response(d) => d.media.iter().map(String::as_str).collect(),
            ModuleData::RingGroup(d) => d.ringback.iter().map(String::as_str).collect(),
            ModuleData::Resources(d) => d.ringback.iter().map(String::as_str).collect(),
            ModuleData::Sleep(_)
            | ModuleData::Hangup
            | ModuleData::CollectDtmf(_)
            | ModuleData::Pivot(_)
            | ModuleData::Tts(_)
            | ModuleData::Say(_)
            | ModuleData::Device(_)
            | ModuleData::User(_)
            | ModuleData::SendDtmf(_)
            | ModuleData::ManualPresence(_) => vec![],
        }
    }

    /// The data key [`ModuleData::media_ids`] come from, for the path of a problem with one.
    pub fn media_key(&self) -> &'static str {
        match self {
            ModuleData::Response(_) => "media",
            ModuleData::RingGroup(_) | ModuleData::Resources(_) => "ringback",
            // The others play no media by id but `play`.
            ModuleData::Play(_)
            | ModuleData::Sleep(_)
            | ModuleData::Hangup
            | ModuleData::CollectDtmf(_)
            | ModuleData::Pivot(_)
            | ModuleData::Tts(_)
            | ModuleData::Say(_)
            | ModuleData::Device(_)
            | ModuleData::User(_)
            | ModuleData::SendDtmf(_)
            | ModuleData::ManualPresence(_) => "id",
        }
    }
}
