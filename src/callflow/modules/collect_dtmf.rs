//! `collect_dtmf` (spec c.5 and j.13, `callflows.collect_dtmf.json`): collects up to
//! `max_digits` keys into a named collection. It starts from the keys already pressed (during
//! a prompt they land in the `default` collection, cut at the first terminator), then waits
//! `timeout` ms for the first key and `interdigit_timeout` ms for each next one. A terminator
//! ends the collection and is not stored. Always continues to `_`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::callflow::node::{Data, ValidationError};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::{FlowState, DEFAULT_COLLECTION};
use crate::callflow::{CallControl, CallEnded};
use crate::logsafe::wire;

const KEYS: &str = "0123456789*#";

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

fn key_of(d: &Data<'_>, key: &str, s: &str) -> Result<char, ValidationError> {
    let mut c = s.chars();
    match (c.next(), c.next()) {
        (Some(k), None) if KEYS.contains(k) => Ok(k),
        _ => Err(ValidationError::new(
            d.path_of(key),
            format!("{s:?} is not a DTMF key (0-9, *, #)"),
        )),
    }
}

impl CollectDtmf {
    pub fn from_data(d: &Data<'_>) -> Result<CollectDtmf, ValidationError> {
        let max_digits = d.opt_int("max_digits", 1, 1000)?.unwrap_or(1);
        let timeout = d.opt_int("timeout", 1, 3_600_000)?.unwrap_or(5000);
        let interdigit = d
            .opt_int("interdigit_timeout", 1, 3_600_000)?
            .unwrap_or(2000);
        // Spec j.13: a `terminators` array wins over `terminator`; the default is "#".
        let terminators = match d.opt_str_list("terminators")? {
            Some(list) => list
                .iter()
                .map(|s| key_of(d, "terminators", s))
                .collect::<Result<Vec<_>, _>>()?,
            None => match d.opt_str("terminator")? {
                Some(t) => vec![key_of(d, "terminator", &t)?],
                None => vec!['#'],
            },
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
        m.insert(
            "terminators".into(),
            Value::Array(
                self.terminators
                    .iter()
                    .map(|c| Value::String(c.to_string()))
                    .collect(),
            ),
        );
        if let Some(n) = &self.collection_name {
            m.insert("collection_name".into(), Value::String(n.clone()));
        }
        m
    }
}

pub async fn run(
    data: &CollectDtmf,
    call: &mut dyn CallControl,
    _rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    if !call.is_answered() {
        call.answer().await?;
    }
    // Keys pressed before: those of the `default` collection and any still queued.
    let mut before = state
        .collections
        .take(DEFAULT_COLLECTION)
        .unwrap_or_default();
    before.push_str(&call.take_digits());
    let max = data.max_digits as usize;
    let mut digits = String::new();
    let mut done = false;
    // As in Kazoo, what was typed before is cut at the first terminator or at max_digits;
    // the rest is dropped.
    for k in before.chars() {
        if data.terminators.contains(&k) {
            done = true;
            break;
        }
        digits.push(k);
        if digits.len() >= max {
            done = true;
            break;
        }
    }
    while !done {
        let wait = if digits.is_empty() {
            data.timeout_ms
        } else {
            data.interdigit_timeout_ms
        };
        match call.next_digit(Duration::from_millis(wait)).await? {
            None => break,
            Some(k) if data.terminators.contains(&k) => break,
            Some(k) => {
                digits.push(k);
                done = digits.len() >= max;
            }
        }
    }
    let name = data
        .collection_name
        .as_deref()
        .unwrap_or(DEFAULT_COLLECTION);
    tracing::debug!(collection = %wire(name), digits = %wire(&digits), "collect_dtmf");
    state.collections.set(name, &digits);
    Ok(Next::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::FakeCall;
    use crate::callflow::node::Node;
    use crate::callflow::ModuleData;
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

    async fn collect(data: CollectDtmf, pressed: &str, state: &mut FlowState) -> FakeCall {
        let mut call = FakeCall::new();
        call.answered = true;
        call.digits = pressed.chars().collect();
        run(&data, &mut call, &Runtime::for_tests(), state)
            .await
            .unwrap();
        call
    }

    #[tokio::test]
    async fn stops_at_max_digits_or_terminator_and_names_the_collection() {
        let mut state = FlowState::default();
        let data = of(json!({"max_digits": 4, "collection_name": "pin"})).unwrap();
        let call = collect(data, "123456", &mut state).await;
        assert_eq!(state.collections.get("pin"), Some("1234"));
        assert!(
            call.digits.is_empty(),
            "typed-ahead keys are dropped, as in Kazoo"
        );
        let data = of(json!({"max_digits": 4})).unwrap();
        collect(data, "12#9", &mut state).await;
        assert_eq!(state.collections.get("default"), Some("12"));
    }

    #[tokio::test]
    async fn keys_pressed_during_a_prompt_start_the_collection() {
        let mut state = FlowState::default();
        state.collections.append(DEFAULT_COLLECTION, "7#5");
        let data = of(json!({"max_digits": 3, "collection_name": "x"})).unwrap();
        collect(data, "", &mut state).await;
        assert_eq!(
            state.collections.get("x"),
            Some("7"),
            "cut at the terminator"
        );
        assert_eq!(
            state.collections.get(DEFAULT_COLLECTION),
            None,
            "default taken"
        );
    }

    #[tokio::test]
    async fn a_timeout_ends_with_what_was_collected() {
        let mut state = FlowState::default();
        let data = of(json!({"max_digits": 5})).unwrap();
        let call = collect(data, "42", &mut state).await;
        assert_eq!(state.collections.get("default"), Some("42"));
        // The fake records the wait that timed out: the interdigit timeout.
        assert!(call
            .ops
            .contains(&crate::callflow::fake::Op::Sleep(Duration::from_millis(
                2000
            ))));
    }
}
