//! `resources` and `offnet` data (spec c.6, `callflows.resources.json`,
//! `callflows.offnet.json`: one schema): the number to dial through carriers, whether the
//! account's carriers or the system's, how long to ring, the ringback. `offnet` is the same
//! module with `use_local_resources` forced to false. `caller_id_type` is kept (default
//! `external`) but the call layer chooses the caller ID from its config. `hunt_account_id`,
//! `custom_sip_headers`, `outbound_flags`, `dynamic_flags`, `bypass_e164`,
//! `do_not_normalize`, `emit_account_id`, `format_from_uri`, `from_uri_realm`,
//! `ignore_early_media` and `resource_type` are not supported and ignored.

use serde_json::{Map, Value};

use super::device::ring_seconds;
use crate::flow::node::{Data, ValidationError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// The node is `offnet` (named so in `to_json`, and never local).
    pub offnet: bool,
    /// The number to dial; None: the number the caller dialled (the request user).
    pub to_did: Option<String>,
    /// The account's carriers (true, the schema's default) or the system's.
    pub use_local_resources: bool,
    /// Ring timeout, s; None or 0: Kazoo's 20 s.
    pub timeout_s: Option<u32>,
    pub caller_id_type: String,
    /// Played to the caller while the number rings: a prompt id or an http(s) URL.
    pub ringback: Option<String>,
}

impl Resources {
    /// `offnet`: decoded as `resources`, then made global whatever the data says (Kazoo's
    /// `cf_offnet` sets `use_local_resources` to false before handing over).
    pub fn from_data(d: &Data<'_>, offnet: bool) -> Result<Resources, ValidationError> {
        let use_local_resources = d.opt_bool("use_local_resources")?.unwrap_or(true);
        Ok(Resources {
            offnet,
            to_did: d.opt_str("to_did")?.filter(|n| !n.is_empty()),
            use_local_resources: use_local_resources && !offnet,
            timeout_s: ring_seconds(d, "timeout")?,
            caller_id_type: d
                .opt_str("caller_id_type")?
                .unwrap_or_else(|| "external".into()),
            ringback: d.opt_str("ringback")?.filter(|r| !r.is_empty()),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(n) = &self.to_did {
            m.insert("to_did".into(), Value::String(n.clone()));
        }
        m.insert(
            "use_local_resources".into(),
            Value::Bool(self.use_local_resources),
        );
        if let Some(t) = self.timeout_s {
            m.insert("timeout".into(), Value::from(t));
        }
        m.insert(
            "caller_id_type".into(),
            Value::String(self.caller_id_type.clone()),
        );
        if let Some(r) = &self.ringback {
            m.insert("ringback".into(), Value::String(r.clone()));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(module: &str, v: serde_json::Value) -> Result<Resources, ValidationError> {
        Node::from_json(&json!({"module": module, "data": v})).map(|n| match n.module {
            ModuleData::Resources(r) => r,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn defaults_and_offnet_is_never_local() {
        let r = of("resources", json!({"outbound_flags": ["x"]})).unwrap();
        assert!(!r.offnet);
        assert_eq!(r.to_did, None);
        assert!(r.use_local_resources);
        assert_eq!(r.timeout_s, None);
        assert_eq!(r.caller_id_type, "external");
        let r = of(
            "offnet",
            json!({"use_local_resources": true, "to_did": "+1"}),
        )
        .unwrap();
        assert!(r.offnet);
        assert!(!r.use_local_resources);
        assert_eq!(r.to_did.as_deref(), Some("+1"));
        let e = of("resources", json!({"timeout": "soon"})).unwrap_err();
        assert_eq!(e.path, "flow.data.timeout");
        let e = of("offnet", json!({"use_local_resources": "no"})).unwrap_err();
        assert_eq!(e.path, "flow.data.use_local_resources");
    }

    #[test]
    fn to_json_keeps_the_module_name_and_round_trips() {
        for module in ["resources", "offnet"] {
            let n = Node::from_json(&json!({"module": module, "data": {
                "to_did": "+14155550000", "timeout": 30, "ringback": "welcome"
            }}))
            .unwrap();
            let out = n.to_json();
            assert_eq!(out["module"], json!(module));
            assert_eq!(
                out["data"],
                json!({"to_did": "+14155550000", "use_local_resources": module == "resources",
                       "timeout": 30, "caller_id_type": "external", "ringback": "welcome"})
            );
            assert_eq!(Node::from_json(&out).unwrap(), n);
        }
    }
}
