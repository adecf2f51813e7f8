//! `collect_dtmf` data (spec c.5 and j.13, `callflows.collect_dtmf.json`): how many keys, how
//! long to wait for them, the keys that end the collection and the collection's name.

use serde_json::{Map, Value};

use crate::flow::node::{terminators_json, Data, ValidationError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectDtmf {
    pub max_digits: u32,
    /// Wait for the first key, ms.
    pub timeout_ms: u64,
    /// Wait between keys, ms.
    pub interdigit_timeout_ms: u64,
    pub terminators: Vec<char>,
    pub collection_name: Option<String>,
}

impl CollectDtmf {
    pub fn from_data(d: &Data<'_>) -> Result<CollectDtmf, ValidationError> {
        let max_digits = d.opt_int("max_digits", 1, 1000)?.unwrap_or(1);
        let timeout = d.opt_int("timeout", 1, 3_600_000)?.unwrap_or(5000);
        let interdigit = d
            .opt_int("interdigit_timeout", 1, 3_600_000)?
            .unwrap_or(2000);
        // Spec j.13: a `terminators` array wins over `terminator`; the default is "#".
        let terminators = match d.opt_terminators("terminators")? {
            Some(keys) => keys,
            None => vec![d.opt_dtmf_key("terminator")?.unwrap_or('#')],
        };
        let collection_name = d.opt_str("collection_name")?.filter(|n| !n.is_empty());
        Ok(CollectDtmf {
            max_digits: max_digits as u32,
            timeout_ms: timeout as u64,
            interdigit_timeout_ms: interdigit as u64,
            terminators,
            collection_name,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("max_digits".into(), Value::from(self.max_digits));
        m.insert("timeout".into(), Value::from(self.timeout_ms));
        m.insert(
            "interdigit_timeout".into(),
            Value::from(self.interdigit_timeout_ms),
        );
        m.insert("terminators".into(), terminators_json(&self.terminators));
        if let Some(n) = &self.collection_name {
            m.insert("collection_name".into(), Value::String(n.clone()));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<CollectDtmf, ValidationError> {
        Node::from_json(&json!({"module": "collect_dtmf", "data": v})).map(|n| match n.module {
            ModuleData::CollectDtmf(c) => c,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn defaults_and_terminators_rules() {
        let c = of(json!({})).unwrap();
        assert_eq!(
            (c.max_digits, c.timeout_ms, c.interdigit_timeout_ms),
            (1, 5000, 2000)
        );
        assert_eq!(c.terminators, vec!['#']);
        let c = of(json!({"terminator": "*", "terminators": ["1", "2"]})).unwrap();
        assert_eq!(c.terminators, vec!['1', '2'], "terminators wins");
        let c = of(json!({"max_digits": "4", "timeout": "3000"})).unwrap();
        assert_eq!((c.max_digits, c.timeout_ms), (4, 3000));
        let e = of(json!({"terminator": "x"})).unwrap_err();
        assert_eq!(e.path, "flow.data.terminator");
        let e = of(json!({"max_digits": 0})).unwrap_err();
        assert_eq!(e.path, "flow.data.max_digits");
    }
}
