//! `user` data (spec c.6, `callflows.user.json`): the user whose devices ring, how long,
//! after what delay. `fail_on_single_reject`, `custom_sip_headers`, `static_invite`,
//! `suppress_clid` and `can_text_self` are not supported and ignored.

use serde_json::{Map, Value};

use super::device::{opt_id, ring_json, ring_seconds, DialStrategy};
use crate::flow::node::{Data, ValidationError};

/// Kazoo's `timeout` default for a user (`callflows.user.json`), s.
pub const DEFAULT_USER_TIMEOUT_S: u32 = 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user id (in the caller's account). Not required by the schema: without one the
    /// node rings nothing and continues to `_`, as Kazoo does.
    pub id: Option<String>,
    /// Ring timeout, s (default 20; 0 also means Kazoo's 20 s).
    pub timeout_s: u32,
    pub delay_s: u32,
    /// `strategy`. A user is one bridge target whose devices the call layer rings at once,
    /// so `single` is accepted and rings like `simultaneous`.
    pub strategy: DialStrategy,
    pub can_call_self: bool,
}

impl User {
    pub fn from_data(d: &Data<'_>) -> Result<User, ValidationError> {
        Ok(User {
            id: opt_id(d)?,
            timeout_s: ring_seconds(d, "timeout")?.unwrap_or(DEFAULT_USER_TIMEOUT_S),
            delay_s: ring_seconds(d, "delay")?.unwrap_or(0),
            strategy: d
                .opt_word("strategy", DialStrategy::parse, "simultaneous or single")?
                .unwrap_or(DialStrategy::Simultaneous),
            can_call_self: d.opt_bool("can_call_self")?.unwrap_or(false),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        ring_json(
            self.id.as_deref(),
            self.timeout_s,
            self.delay_s,
            ("strategy", self.strategy),
            self.can_call_self,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<User, ValidationError> {
        Node::from_json(&json!({"module": "user", "data": v})).map(|n| match n.module {
            ModuleData::User(u) => u,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn defaults_validation_and_round_trip() {
        let u = of(json!({"id": "u1", "fail_on_single_reject": true})).unwrap();
        assert_eq!(u.id.as_deref(), Some("u1"));
        assert_eq!((u.timeout_s, u.delay_s), (20, 0));
        assert_eq!(u.strategy, DialStrategy::Simultaneous);
        assert_eq!(
            of(json!({"strategy": "single"})).unwrap().strategy,
            DialStrategy::Single
        );
        let e = of(json!({"strategy": "weighted_random"})).unwrap_err();
        assert_eq!(e.path, "flow.data.strategy");
        let e = of(json!({"delay": 86_401})).unwrap_err();
        assert_eq!(e.path, "flow.data.delay");

        let n = Node::from_json(&json!({"module": "user", "data": {"id": "u"}})).unwrap();
        let out = n.to_json();
        assert_eq!(
            out["data"],
            json!({"id": "u", "timeout": 20, "delay": 0, "strategy": "simultaneous",
                   "can_call_self": false})
        );
        assert_eq!(Node::from_json(&out).unwrap(), n);
    }
}
