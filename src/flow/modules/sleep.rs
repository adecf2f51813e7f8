//! `sleep` data (spec c.9, `callflows.sleep.json`): `duration` in a `unit`, capped at 24 h.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::flow::node::{Data, ValidationError};

/// Kazoo caps a sleep at one day.
pub const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Ms,
    S,
    M,
    H,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "ms" => Some(Unit::Ms),
            "s" => Some(Unit::S),
            "m" => Some(Unit::M),
            "h" => Some(Unit::H),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::S => "s",
            Unit::M => "m",
            Unit::H => "h",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sleep {
    /// 0..=86_400_000 in `unit` (schema range).
    pub duration: u64,
    pub unit: Unit,
}

impl Sleep {
    pub fn from_data(d: &Data<'_>) -> Result<Sleep, ValidationError> {
        let duration = d.opt_int("duration", 0, 86_400_000)?.unwrap_or(0);
        let unit = d
            .opt_word("unit", Unit::parse, r#"one of "ms", "s", "m", "h""#)?
            .unwrap_or(Unit::S);
        Ok(Sleep {
            duration: u64::try_from(duration).unwrap_or(0),
            unit,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("duration".into(), Value::from(self.duration));
        m.insert("unit".into(), Value::String(self.unit.as_str().into()));
        m
    }

    /// The wait, capped at [`MAX_SLEEP`].
    pub fn wait(&self) -> Duration {
        let ms = match self.unit {
            Unit::Ms => self.duration,
            Unit::S => self.duration.saturating_mul(1000),
            Unit::M => self.duration.saturating_mul(60_000),
            Unit::H => self.duration.saturating_mul(3_600_000),
        };
        Duration::from_millis(ms).min(MAX_SLEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn sleep_of(v: serde_json::Value) -> Result<Sleep, ValidationError> {
        Node::from_json(&json!({"module": "sleep", "data": v})).map(|n| match n.module {
            ModuleData::Sleep(s) => s,
            other => panic!("not a sleep: {other:?}"),
        })
    }

    #[test]
    fn units_defaults_coercion_and_cap() {
        assert_eq!(sleep_of(json!({})).unwrap().wait(), Duration::ZERO);
        assert_eq!(
            sleep_of(json!({"duration": "20"})).unwrap().wait(),
            Duration::from_secs(20)
        );
        assert_eq!(
            sleep_of(json!({"duration": 250, "unit": "ms"}))
                .unwrap()
                .wait(),
            Duration::from_millis(250)
        );
        assert_eq!(
            sleep_of(json!({"duration": 2, "unit": "m"}))
                .unwrap()
                .wait(),
            Duration::from_secs(120)
        );
        assert_eq!(
            sleep_of(json!({"duration": 30, "unit": "h"}))
                .unwrap()
                .wait(),
            MAX_SLEEP
        );
    }

    #[test]
    fn bad_values_are_rejected_with_their_path() {
        for (data, path) in [
            (json!({"duration": -1}), "flow.data.duration"),
            (json!({"duration": 86_400_001}), "flow.data.duration"),
            (json!({"duration": "soon"}), "flow.data.duration"),
            (json!({"duration": 1.5}), "flow.data.duration"),
            (json!({"unit": "days"}), "flow.data.unit"),
            (json!({"unit": 1}), "flow.data.unit"),
        ] {
            assert_eq!(sleep_of(data.clone()).unwrap_err().path, path, "{data}");
        }
    }
}
