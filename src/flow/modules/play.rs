//! `play` data (spec c.2, `callflows.play.json`): the media `id`, whether to answer first,
//! how many times, and the keys that stop it.

use serde_json::{Map, Value};

use crate::flow::node::{terminators_json, Data, ValidationError, ALL_KEYS};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Play {
    /// Prompt id in the media dir / embedded prompts, or an http(s) URL.
    pub id: String,
    /// Answer first (default); `false` = early media after a 183.
    pub answer: bool,
    pub endless_playback: bool,
    /// Times to play; `None` = once.
    pub loop_count: Option<u32>,
    /// DTMF keys that stop the playback; every key by default (the schema's default).
    pub terminators: Vec<char>,
}

impl Play {
    /// Plays `id` once, answering first.
    pub fn new(id: &str) -> Play {
        Play {
            id: id.to_string(),
            answer: true,
            endless_playback: false,
            loop_count: None,
            terminators: ALL_KEYS.to_vec(),
        }
    }

    pub fn from_data(d: &Data<'_>) -> Result<Play, ValidationError> {
        // The Kazoo schema leaves `id` optional, but a play without media can only do nothing.
        let id = d
            .opt_str("id")?
            .ok_or_else(|| ValidationError::new(d.path_of("id"), "required: the media to play"))?;
        if id.is_empty() {
            return Err(ValidationError::new(d.path_of("id"), "must not be empty"));
        }
        let loop_count = d
            .opt_int("loop_count", 1, i64::from(u32::MAX))?
            .and_then(|n| u32::try_from(n).ok());
        Ok(Play {
            answer: d.opt_bool("answer")?.unwrap_or(true),
            endless_playback: d.opt_bool("endless_playback")?.unwrap_or(false),
            loop_count,
            terminators: d.terminators()?,
            id,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("answer".into(), Value::Bool(self.answer));
        m.insert(
            "endless_playback".into(),
            Value::Bool(self.endless_playback),
        );
        if let Some(n) = self.loop_count {
            m.insert("loop_count".into(), Value::from(n));
        }
        m.insert("terminators".into(), terminators_json(&self.terminators));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn play_of(v: serde_json::Value) -> Result<Play, ValidationError> {
        Node::from_json(&json!({"module": "play", "data": v})).map(|n| match n.module {
            ModuleData::Play(p) => p,
            other => panic!("not a play: {other:?}"),
        })
    }

    #[test]
    fn defaults_and_typed_fields() {
        let p = play_of(json!({"id": "welcome"})).unwrap();
        assert_eq!(p, Play::new("welcome"));
        let p = play_of(json!({"id": "w", "answer": false, "loop_count": "3",
                               "endless_playback": true, "terminators": ["#"]}))
        .unwrap();
        assert!(!p.answer && p.endless_playback);
        assert_eq!(p.loop_count, Some(3));
        assert_eq!(p.terminators, ['#']);
    }

    #[test]
    fn bad_values_are_rejected_with_their_path() {
        let cases = [
            (json!({}), "flow.data.id"),
            (json!({"id": 5}), "flow.data.id"),
            (json!({"id": ""}), "flow.data.id"),
            (json!({"id": "w", "answer": "no"}), "flow.data.answer"),
            (json!({"id": "w", "loop_count": 0}), "flow.data.loop_count"),
            (
                json!({"id": "w", "loop_count": "many"}),
                "flow.data.loop_count",
            ),
            (
                json!({"id": "w", "terminators": "#"}),
                "flow.data.terminators",
            ),
            (
                json!({"id": "w", "terminators": ["#", 1]}),
                "flow.data.terminators[1]",
            ),
            (
                json!({"id": "w", "terminators": ["#", "10"]}),
                "flow.data.terminators[1]",
            ),
        ];
        for (data, path) in cases {
            let e = play_of(data.clone()).unwrap_err();
            assert_eq!(e.path, path, "{data}");
        }
    }
}
