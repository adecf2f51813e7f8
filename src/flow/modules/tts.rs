//! `tts` data (spec c.3 and j.12, `callflows.tts.json`): the `text`, its `voice` (default
//! `female`) and `language`, and the keys that stop it.

use serde_json::{Map, Value};

use crate::flow::node::{terminators_json, Data, ValidationError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tts {
    pub text: String,
    pub voice: String,
    pub language: Option<String>,
    pub terminators: Vec<char>,
    pub endless_playback: bool,
}

impl Tts {
    pub fn from_data(d: &Data<'_>) -> Result<Tts, ValidationError> {
        let text = d
            .opt_str("text")?
            .ok_or_else(|| ValidationError::new(d.path_of("text"), "required"))?;
        d.check_text_len("text", &text, 1000)?;
        let terminators = d.terminators()?;
        // `engine` is accepted and ignored: pivotd has one TTS hook.
        let _ = d.opt_str("engine")?;
        Ok(Tts {
            text,
            voice: d.opt_str("voice")?.unwrap_or_else(|| "female".into()),
            language: d.opt_str("language")?,
            terminators,
            endless_playback: d.opt_bool("endless_playback")?.unwrap_or(false),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("text".into(), Value::String(self.text.clone()));
        m.insert("voice".into(), Value::String(self.voice.clone()));
        if let Some(l) = &self.language {
            m.insert("language".into(), Value::String(l.clone()));
        }
        m.insert("terminators".into(), terminators_json(&self.terminators));
        m.insert(
            "endless_playback".into(),
            Value::Bool(self.endless_playback),
        );
        m
    }
}
