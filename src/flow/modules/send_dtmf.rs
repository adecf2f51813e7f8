//! `send_dtmf` data (Kazoo's `callflows.send_dtmf.json` and `cf_send_dtmf.erl`; pivot doc
//! `dtmf.md`): the keys to send and how long each one lasts (`duration_ms`, an integer or a
//! string of digits, default 2000 as in `cf_send_dtmf`).

use serde_json::{Map, Value};

use crate::flow::node::{Data, ValidationError};

/// Kazoo's `duration_ms` default (`cf_send_dtmf.erl`: `<<"2000">>`).
pub const DEFAULT_DURATION_MS: u32 = 2000;

/// Longest tone per key accepted, ms. Kazoo sets no bound; a longer key is a mistake.
pub const MAX_DURATION_MS: i64 = 10_000;

/// Most keys one node may send.
pub const MAX_DIGITS: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendDtmf {
    /// 1 to 128 keys of `0-9 * # A-D` (lowercase `a-d` are read as uppercase).
    pub digits: String,
    /// How long each key lasts, ms (1..=10000).
    pub duration_ms: u32,
}

impl SendDtmf {
    pub fn from_data(d: &Data<'_>) -> Result<SendDtmf, ValidationError> {
        let given = d
            .opt_str("digits")?
            .ok_or_else(|| ValidationError::new(d.path_of("digits"), "required"))?;
        d.check_text_len("digits", &given, MAX_DIGITS)?;
        // RFC 4733 has events for 0-9 * # and A-D; anything else could not be sent.
        let digits = given
            .chars()
            .map(|k| match k.to_ascii_uppercase() {
                key @ ('0'..='9' | '*' | '#' | 'A'..='D') => Ok(key),
                _ => Err(ValidationError::new(
                    d.path_of("digits"),
                    format!("{k:?} is not a DTMF key (0-9, *, #, A-D)"),
                )),
            })
            .collect::<Result<String, _>>()?;
        // The range fits u32.
        let duration_ms = d
            .opt_int("duration_ms", 1, MAX_DURATION_MS)?
            .map_or(DEFAULT_DURATION_MS, |n| n as u32);
        Ok(SendDtmf {
            digits,
            duration_ms,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("digits".into(), Value::String(self.digits.clone()));
        m.insert("duration_ms".into(), Value::from(self.duration_ms));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<SendDtmf, ValidationError> {
        Node::from_json(&json!({"module": "send_dtmf", "data": v})).map(|n| match n.module {
            ModuleData::SendDtmf(s) => s,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn digits_are_required_and_checked() {
        let s = of(json!({"digits": "123abc#"})).unwrap();
        assert_eq!((s.digits.as_str(), s.duration_ms), ("123ABC#", 2000));
        assert_eq!(
            of(json!({"digits": "1", "duration_ms": "250"}))
                .unwrap()
                .duration_ms,
            250
        );
        let told = |v| {
            let e = of(v).unwrap_err();
            format!("{}: {}", e.path, e.message)
        };
        assert_eq!(told(json!({})), "flow.data.digits: required");
        assert_eq!(
            told(json!({"digits": ""})),
            "flow.data.digits: must be 1 to 128 characters, not 0"
        );
        assert_eq!(
            told(json!({"digits": "12w3"})),
            "flow.data.digits: 'w' is not a DTMF key (0-9, *, #, A-D)"
        );
        assert_eq!(
            told(json!({"digits": "1", "duration_ms": 0})),
            "flow.data.duration_ms: 0 is out of range 1..=10000"
        );
    }

    #[test]
    fn to_json_fills_the_duration_and_round_trips() {
        let n = Node::from_json(&json!({"module": "send_dtmf", "data": {"digits": "9#"}})).unwrap();
        let out = n.to_json();
        assert_eq!(out["data"], json!({"digits": "9#", "duration_ms": 2000}));
        assert_eq!(Node::from_json(&out).unwrap(), n);
    }
}
