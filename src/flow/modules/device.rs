//! `device` data (spec c.6, `callflows.device.json`): the device to ring, how long, after what
//! delay, and whether the calling device may ring itself. `custom_sip_headers`,
//! `static_invite`, `suppress_clid` and `can_text_self` are not supported and, like any other
//! key the module does not read, ignored.

use serde_json::{Map, Value};

use crate::flow::bridge::MAX_RING_SECONDS;
use crate::flow::node::{Data, ValidationError};

/// How a device with several registered contacts is rung (`dial_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialStrategy {
    Simultaneous,
    /// Kazoo rings the contacts one after another; pivotd rings them all at once (the call
    /// layer owns the contacts), so this is accepted and rings like `simultaneous`.
    Single,
}

impl DialStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            DialStrategy::Simultaneous => "simultaneous",
            DialStrategy::Single => "single",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<DialStrategy> {
        match s {
            "simultaneous" => Some(DialStrategy::Simultaneous),
            "single" => Some(DialStrategy::Single),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The device id (in the caller's account). The schema does not require it: without one
    /// the node rings nothing and continues to `_`, as Kazoo does.
    pub id: Option<String>,
    /// Ring timeout, s; 0 (the schema's default) means Kazoo's 20 s.
    pub timeout_s: u32,
    /// Seconds before the device is rung.
    pub delay_s: u32,
    pub dial_strategy: DialStrategy,
    pub can_call_self: bool,
}

impl Device {
    pub fn from_data(d: &Data<'_>) -> Result<Device, ValidationError> {
        Ok(Device {
            id: opt_id(d)?,
            timeout_s: ring_seconds(d, "timeout")?.unwrap_or(0),
            delay_s: ring_seconds(d, "delay")?.unwrap_or(0),
            dial_strategy: d
                .opt_word(
                    "dial_strategy",
                    DialStrategy::parse,
                    "simultaneous or single",
                )?
                .unwrap_or(DialStrategy::Simultaneous),
            can_call_self: d.opt_bool("can_call_self")?.unwrap_or(false),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        ring_json(
            self.id.as_deref(),
            self.timeout_s,
            self.delay_s,
            ("dial_strategy", self.dial_strategy),
            self.can_call_self,
        )
    }
}

/// The data of a node that rings one target (`device`, `user`): its strategy under the
/// module's own key (`dial_strategy`, `strategy`).
pub(crate) fn ring_json(
    id: Option<&str>,
    timeout_s: u32,
    delay_s: u32,
    (strategy_key, strategy): (&str, DialStrategy),
    can_call_self: bool,
) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(id) = id {
        m.insert("id".into(), Value::String(id.to_string()));
    }
    m.insert("timeout".into(), Value::from(timeout_s));
    m.insert("delay".into(), Value::from(delay_s));
    m.insert(strategy_key.into(), Value::String(strategy.as_str().into()));
    m.insert("can_call_self".into(), Value::Bool(can_call_self));
    m
}

/// `id` of a device or user node; an empty one counts as absent (Kazoo reads it with
/// `get_ne_binary_value`).
pub(crate) fn opt_id(d: &Data<'_>) -> Result<Option<String>, ValidationError> {
    Ok(d.opt_str("id")?.filter(|id| !id.is_empty()))
}

/// A ring timeout or delay in seconds, `0..=MAX_RING_SECONDS`.
pub(crate) fn ring_seconds(d: &Data<'_>, key: &str) -> Result<Option<u32>, ValidationError> {
    // The range fits u32, so the conversion cannot fail.
    Ok(d.opt_int(key, 0, MAX_RING_SECONDS)?.map(|n| n as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<Device, ValidationError> {
        Node::from_json(&json!({"module": "device", "data": v})).map(|n| match n.module {
            ModuleData::Device(d) => d,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn defaults_and_validation() {
        let d = of(json!({"id": "dev1", "custom_sip_headers": {"X-A": "1"}})).unwrap();
        assert_eq!(d.id.as_deref(), Some("dev1"));
        assert_eq!((d.timeout_s, d.delay_s), (0, 0));
        assert_eq!(d.dial_strategy, DialStrategy::Simultaneous);
        assert!(!d.can_call_self);
        assert_eq!(of(json!({"id": ""})).unwrap().id, None, "empty id is no id");
        let d = of(json!({"id": "x", "timeout": "30", "can_call_self": true})).unwrap();
        assert_eq!((d.timeout_s, d.can_call_self), (30, true));
        let e = of(json!({"id": "x", "timeout": -1})).unwrap_err();
        assert_eq!(e.path, "flow.data.timeout");
        let e = of(json!({"id": "x", "dial_strategy": "round_robin"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"flow.data.dial_strategy: "round_robin" is not simultaneous or single"#
        );
        let e = of(json!({"id": 7})).unwrap_err();
        assert_eq!(e.path, "flow.data.id");
    }

    #[test]
    fn to_json_fills_defaults_and_round_trips() {
        let n = Node::from_json(&json!({"module": "device", "data": {"id": "d"}})).unwrap();
        let out = n.to_json();
        assert_eq!(
            out["data"],
            json!({"id": "d", "timeout": 0, "delay": 0, "dial_strategy": "simultaneous",
                   "can_call_self": false})
        );
        assert_eq!(Node::from_json(&out).unwrap(), n);
    }
}
