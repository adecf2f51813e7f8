//! Each callflow module's data, one file each: a typed struct decoded from the node's `data`
//! with the schema's defaults (see `kazoo-schemas/callflows.<module>.json`), and its `to_json`.
//! What a module *does* is in `callflow::modules`, beside the runtime.

pub mod collect_dtmf;
pub mod pivot;
pub mod play;
pub mod response;
pub mod say;
pub mod sleep;
pub mod tts;

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
        }
    }

    /// Media ids this module would play (for configuration checks).
    pub fn media_ids(&self) -> Vec<&str> {
        match self {
            ModuleData::Play(d) => vec![d.id.as_str()],
            ModuleData::Response(d) => d.media.iter().map(String::as_str).collect(),
            ModuleData::Sleep(_)
            | ModuleData::Hangup
            | ModuleData::CollectDtmf(_)
            | ModuleData::Pivot(_)
            | ModuleData::Tts(_)
            | ModuleData::Say(_) => vec![],
        }
    }
}
