//! `ring_group` data (spec c.6, `callflows.ring_group.json`): the endpoints (devices, users,
//! groups) with their own delay, timeout and weight, the strategy, the group's timeout, how
//! many rounds, and the ringback. `fail_on_single_reject` and `ringtones` are not supported
//! and ignored; `ignore_forward` is kept (schema default `true`) but changes nothing, as
//! pivotd does not follow redirects.

use serde_json::{Map, Value};

use super::device::ring_seconds;
use crate::flow::node::{kind, Data, ValidationError};

/// Kazoo's default ring timeout of the group and of each endpoint, s.
pub const DEFAULT_GROUP_TIMEOUT_S: u32 = 20;

/// Most rounds a ring group may ask for. The schema sets no bound; this keeps one node from
/// ringing for hours.
pub const MAX_REPEATS: i64 = 100;

/// What an endpoint id names (`endpoint_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointType {
    Device,
    User,
    /// A Kazoo group: pivotd has none, so the runtime skips these (with a log line).
    Group,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Device => "device",
            EndpointType::User => "user",
            EndpointType::Group => "group",
        }
    }

    fn parse(s: &str) -> Option<EndpointType> {
        match s {
            "device" => Some(EndpointType::Device),
            "user" => Some(EndpointType::User),
            "group" => Some(EndpointType::Group),
            _ => None,
        }
    }
}

/// One member of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub endpoint_type: EndpointType,
    /// 1 to 128 characters.
    pub id: String,
    /// Seconds after the round starts before this member rings.
    pub delay_s: u32,
    /// How long this member rings, s (default 20; 0: as long as the group).
    pub timeout_s: u32,
    /// 1..=100, for `weighted_random` (Kazoo counts a member without one as 20).
    pub weight: Option<u8>,
}

/// How the members are rung (`strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// All at once; the first to answer wins.
    Simultaneous,
    /// One after another in the given order, each for its own timeout.
    Single,
    /// One after another in an order drawn at random by weight (Kazoo's `weighted_random`
    /// orders the members, then rings them as `single`).
    WeightedRandom,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Simultaneous => "simultaneous",
            Strategy::Single => "single",
            Strategy::WeightedRandom => "weighted_random",
        }
    }

    fn parse(s: &str) -> Option<Strategy> {
        match s {
            "simultaneous" => Some(Strategy::Simultaneous),
            "single" => Some(Strategy::Single),
            "weighted_random" => Some(Strategy::WeightedRandom),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingGroup {
    /// At least one.
    pub endpoints: Vec<Member>,
    pub strategy: Strategy,
    /// The group's ring timeout, s (default 20; 0 also means 20).
    pub timeout_s: u32,
    /// Rounds before the node gives up and continues to `_` (default 1).
    pub repeats: u32,
    /// Played to the caller while the members ring: a prompt id or an http(s) URL.
    pub ringback: Option<String>,
    pub ignore_forward: bool,
}

impl RingGroup {
    pub fn from_data(d: &Data<'_>) -> Result<RingGroup, ValidationError> {
        let items = d
            .opt_array("endpoints")?
            .ok_or_else(|| ValidationError::new(d.path_of("endpoints"), "required"))?;
        if items.is_empty() {
            return Err(ValidationError::new(
                d.path_of("endpoints"),
                "must list at least one endpoint",
            ));
        }
        let endpoints = items
            .iter()
            .enumerate()
            .map(|(i, item)| member(item, &format!("{}[{i}]", d.path_of("endpoints"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RingGroup {
            endpoints,
            strategy: d
                .opt_word(
                    "strategy",
                    Strategy::parse,
                    "simultaneous, single or weighted_random",
                )?
                .unwrap_or(Strategy::Simultaneous),
            timeout_s: ring_seconds(d, "timeout")?.unwrap_or(DEFAULT_GROUP_TIMEOUT_S),
            // The range fits u32.
            repeats: d.opt_int("repeats", 1, MAX_REPEATS)?.unwrap_or(1) as u32,
            ringback: d.opt_str("ringback")?.filter(|r| !r.is_empty()),
            ignore_forward: d.opt_bool("ignore_forward")?.unwrap_or(true),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let endpoints = self.endpoints.iter().map(member_json).collect();
        m.insert("endpoints".into(), Value::Array(endpoints));
        m.insert(
            "strategy".into(),
            Value::String(self.strategy.as_str().into()),
        );
        m.insert("timeout".into(), Value::from(self.timeout_s));
        m.insert("repeats".into(), Value::from(self.repeats));
        if let Some(r) = &self.ringback {
            m.insert("ringback".into(), Value::String(r.clone()));
        }
        m.insert("ignore_forward".into(), Value::Bool(self.ignore_forward));
        m
    }
}

/// One `endpoints` entry at `path`. Kazoo's pivot bridging doc shows `endpoints` as a list of
/// plain id strings, but the schema requires objects with an `endpoint_type`, and Kazoo's
/// `cf_ring_group` cannot ring a plain id either (it reads `id` and `endpoint_type` from each
/// member): such a list is refused, saying what to send instead, rather than guessed at.
fn member(item: &Value, path: &str) -> Result<Member, ValidationError> {
    let obj = match item {
        Value::Object(obj) => obj,
        Value::String(id) => {
            return Err(ValidationError::new(
                path,
                format!(
                    "expected an endpoint object such as {{\"endpoint_type\": \"device\", \
                     \"id\": {id:?}}}, found the plain id {id:?} (the ring group schema needs \
                     each endpoint's type)"
                ),
            ))
        }
        other => {
            return Err(ValidationError::new(
                path,
                format!(
                    "expected an endpoint object (endpoint_type, id), found {}",
                    kind(other)
                ),
            ))
        }
    };
    let d = Data::new(obj, path);
    let endpoint_type = d
        .opt_word(
            "endpoint_type",
            EndpointType::parse,
            "device, user or group",
        )?
        .ok_or_else(|| ValidationError::new(d.path_of("endpoint_type"), "required"))?;
    let id = d
        .opt_str("id")?
        .ok_or_else(|| ValidationError::new(d.path_of("id"), "required"))?;
    d.check_text_len("id", &id, 128)?;
    Ok(Member {
        endpoint_type,
        id,
        delay_s: ring_seconds(&d, "delay")?.unwrap_or(0),
        timeout_s: ring_seconds(&d, "timeout")?.unwrap_or(DEFAULT_GROUP_TIMEOUT_S),
        // The range fits u8.
        weight: d.opt_int("weight", 1, 100)?.map(|w| w as u8),
    })
}

fn member_json(e: &Member) -> Value {
    let mut m = Map::new();
    m.insert(
        "endpoint_type".into(),
        Value::String(e.endpoint_type.as_str().into()),
    );
    m.insert("id".into(), Value::String(e.id.clone()));
    m.insert("delay".into(), Value::from(e.delay_s));
    m.insert("timeout".into(), Value::from(e.timeout_s));
    if let Some(w) = e.weight {
        m.insert("weight".into(), Value::from(w));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<RingGroup, ValidationError> {
        Node::from_json(&json!({"module": "ring_group", "data": v})).map(|n| match n.module {
            ModuleData::RingGroup(r) => r,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn defaults_of_the_group_and_its_members() {
        let r = of(json!({"endpoints": [
            {"endpoint_type": "device", "id": "d1"},
            {"endpoint_type": "user", "id": "u1", "delay": 5, "timeout": "30", "weight": 7}
        ], "ringtones": {"internal": "x"}}))
        .unwrap();
        assert_eq!(r.strategy, Strategy::Simultaneous);
        assert_eq!((r.timeout_s, r.repeats), (20, 1));
        assert_eq!((r.ringback.as_deref(), r.ignore_forward), (None, true));
        assert_eq!(
            r.endpoints,
            [
                Member {
                    endpoint_type: EndpointType::Device,
                    id: "d1".into(),
                    delay_s: 0,
                    timeout_s: 20,
                    weight: None
                },
                Member {
                    endpoint_type: EndpointType::User,
                    id: "u1".into(),
                    delay_s: 5,
                    timeout_s: 30,
                    weight: Some(7)
                }
            ]
        );
    }

    #[test]
    fn endpoints_are_required_and_checked_with_their_paths() {
        let told = |v| {
            let e = of(v).unwrap_err();
            format!("{}: {}", e.path, e.message)
        };
        assert_eq!(told(json!({})), "flow.data.endpoints: required");
        assert_eq!(
            told(json!({"endpoints": []})),
            "flow.data.endpoints: must list at least one endpoint"
        );
        assert_eq!(
            told(json!({"endpoints": {"id": "x"}})),
            "flow.data.endpoints: expected an array, found an object"
        );
        assert_eq!(
            told(json!({"endpoints": [{"id": "x"}]})),
            "flow.data.endpoints[0].endpoint_type: required"
        );
        assert_eq!(
            told(json!({"endpoints": [{"endpoint_type": "phone", "id": "x"}]})),
            r#"flow.data.endpoints[0].endpoint_type: "phone" is not device, user or group"#
        );
        assert_eq!(
            told(json!({"endpoints": [{"endpoint_type": "user"}]})),
            "flow.data.endpoints[0].id: required"
        );
        assert_eq!(
            told(json!({"endpoints": [{"endpoint_type": "user", "id": ""}]})),
            "flow.data.endpoints[0].id: must be 1 to 128 characters, not 0"
        );
        let long = "a".repeat(129);
        assert_eq!(
            told(json!({"endpoints": [{"endpoint_type": "user", "id": long}]})),
            "flow.data.endpoints[0].id: must be 1 to 128 characters, not 129"
        );
        assert_eq!(
            told(json!({"endpoints": [{"endpoint_type": "user", "id": "u", "weight": 0}]})),
            "flow.data.endpoints[0].weight: 0 is out of range 1..=100"
        );
        assert_eq!(
            told(json!({"endpoints": [{"endpoint_type": "user", "id": "u"}, 5]})),
            "flow.data.endpoints[1]: expected an endpoint object (endpoint_type, id), found an integer"
        );
    }

    #[test]
    fn plain_id_strings_are_refused_saying_what_to_send() {
        let e = of(json!({"endpoints": ["device_1_id"]})).unwrap_err();
        assert_eq!(e.path, "flow.data.endpoints[0]");
        assert!(
            e.message
                .contains(r#"{"endpoint_type": "device", "id": "device_1_id"}"#),
            "{}",
            e.message
        );
    }

    #[test]
    fn group_settings_are_checked() {
        let ep = json!([{"endpoint_type": "device", "id": "d"}]);
        let r = of(
            json!({"endpoints": ep, "strategy": "weighted_random", "repeats": "3",
                          "ringback": "http://x/ring.wav", "timeout": 0}),
        )
        .unwrap();
        assert_eq!(
            (r.strategy, r.repeats, r.timeout_s),
            (Strategy::WeightedRandom, 3, 0)
        );
        assert_eq!(r.ringback.as_deref(), Some("http://x/ring.wav"));
        let e = of(json!({"endpoints": ep, "repeats": 0})).unwrap_err();
        assert_eq!(e.path, "flow.data.repeats");
        let e = of(json!({"endpoints": ep, "strategy": "round_robin"})).unwrap_err();
        assert_eq!(e.path, "flow.data.strategy");
    }

    #[test]
    fn to_json_fills_defaults_and_round_trips() {
        let n = Node::from_json(&json!({"module": "ring_group", "data": {
            "endpoints": [{"endpoint_type": "device", "id": "d", "weight": 3}]
        }}))
        .unwrap();
        let out = n.to_json();
        assert_eq!(
            out["data"],
            json!({"endpoints": [{"endpoint_type": "device", "id": "d", "delay": 0,
                                  "timeout": 20, "weight": 3}],
                   "strategy": "simultaneous", "timeout": 20, "repeats": 1,
                   "ignore_forward": true})
        );
        assert_eq!(Node::from_json(&out).unwrap(), n);
    }
}
