//! `manual_presence` data (spec c.7, Kazoo's `callflows.manual_presence.json` and
//! `cf_manual_presence.erl`): the presence id to set and its `status`. Unknown keys are
//! ignored, as everywhere. Whether the id itself is a usable presence id (its bytes, its
//! realm) is the presence side's decision, when the module runs (`presence::state`).

use serde_json::{Map, Value};

use crate::flow::node::{Data, ValidationError};

/// Longest `presence_id` accepted here, in characters: a sanity bound on what a pivot server
/// sends; the presence side bounds the parts it keeps.
pub const MAX_PRESENCE_ID_CHARS: usize = 512;

/// The three states a lamp shows (Kazoo's `status`): `idle` (the id has no call), `ringing`
/// (a call is ringing), `busy` (a call is up). Presence (`presence::state`) keeps one per id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    #[default]
    Idle,
    Ringing,
    Busy,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Idle, Status::Ringing, Status::Busy];

    /// Kazoo's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Ringing => "ringing",
            Status::Busy => "busy",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualPresence {
    /// `user` or `user@realm` (required; a bare user gets the account's realm, spec j.16).
    pub presence_id: String,
    /// Default `idle` (the schema's).
    pub status: Status,
}

impl ManualPresence {
    pub fn from_data(d: &Data<'_>) -> Result<ManualPresence, ValidationError> {
        let presence_id = d
            .opt_str("presence_id")?
            .ok_or_else(|| ValidationError::new(d.path_of("presence_id"), "required"))?;
        d.check_text_len("presence_id", &presence_id, MAX_PRESENCE_ID_CHARS)?;
        let status = d
            .opt_word("status", Status::parse, "one of idle, ringing, busy")?
            .unwrap_or_default();
        Ok(ManualPresence {
            presence_id,
            status,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "presence_id".into(),
            Value::String(self.presence_id.clone()),
        );
        m.insert("status".into(), Value::String(self.status.as_str().into()));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<ManualPresence, ValidationError> {
        Node::from_json(&json!({"module": "manual_presence", "data": v})).map(|n| match n.module {
            ModuleData::ManualPresence(m) => m,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn kazoos_example_is_read_and_unknown_keys_ignored() {
        // applications/pivot/doc/kazoo/presence.md
        let m = of(json!({"presence_id": "username", "status": "ringing"})).unwrap();
        assert_eq!(m.presence_id, "username");
        assert_eq!(m.status, Status::Ringing);
        let m = of(json!({"presence_id": "2001@pbx.test", "colour": "red"})).unwrap();
        assert_eq!(m.status, Status::Idle);
    }

    #[test]
    fn a_missing_id_or_a_bad_status_fails_validation() {
        let told = |v| {
            let e = of(v).unwrap_err();
            format!("{}: {}", e.path, e.message)
        };
        assert_eq!(told(json!({})), "flow.data.presence_id: required");
        assert_eq!(
            told(json!({"presence_id": ""})),
            "flow.data.presence_id: must be 1 to 512 characters, not 0"
        );
        assert_eq!(
            told(json!({"presence_id": "a", "status": "away"})),
            "flow.data.status: \"away\" is not one of idle, ringing, busy"
        );
        assert_eq!(
            told(json!({"presence_id": "a", "status": 1})),
            "flow.data.status: expected a string, found an integer"
        );
    }

    #[test]
    fn to_json_fills_the_status_and_round_trips() {
        let n =
            Node::from_json(&json!({"module": "manual_presence", "data": {"presence_id": "x"}}))
                .unwrap();
        let out = n.to_json();
        assert_eq!(out["data"], json!({"presence_id": "x", "status": "idle"}));
        assert_eq!(Node::from_json(&out).unwrap(), n);
    }
}
