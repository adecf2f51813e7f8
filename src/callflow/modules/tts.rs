//! `tts` (spec c.3 and j.12, `callflows.tts.json`): speaks `text` through the TTS hook, in
//! `voice` (default `female`) and `language`, answering first. Keys in `terminators` (default
//! every key) stop it and, like any key pressed meanwhile, go to the `default` collection. A
//! missing, slow or failing hook is logged and the flow goes on with `_`.

use serde_json::{Map, Value};

use crate::callflow::modules::play_collecting;
use crate::callflow::node::{Data, ValidationError};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::logsafe::wire;

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
        let chars = text.chars().count();
        if !(1..=1000).contains(&chars) {
            return Err(ValidationError::new(
                d.path_of("text"),
                format!("must be 1 to 1000 characters, not {chars}"),
            ));
        }
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
        m.insert(
            "terminators".into(),
            Value::Array(
                self.terminators
                    .iter()
                    .map(|c| Value::String(c.to_string()))
                    .collect(),
            ),
        );
        m.insert(
            "endless_playback".into(),
            Value::Bool(self.endless_playback),
        );
        m
    }
}

pub async fn run(
    data: &Tts,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let Some(tts) = rt.tts.as_ref() else {
        tracing::warn!("tts: no TTS hook configured");
        return Ok(Next::Default);
    };
    if !call.is_answered() {
        call.answer().await?;
    }
    let prompt = match tts
        .speak(&data.text, &data.voice, data.language.as_deref())
        .await
    {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(reason = %wire(&reason), "tts failed: going on with _");
            return Ok(Next::Default);
        }
    };
    let times = if data.endless_playback { u32::MAX } else { 1 };
    play_collecting(call, &prompt, times, &data.terminators, state).await?;
    Ok(Next::Default)
}
