//! `collect_dtmf` (spec c.5 and j.13, `callflows.collect_dtmf.json`): collects up to
//! `max_digits` keys into a named collection. It starts from the keys already pressed (during
//! a prompt they land in the `default` collection, cut at the first terminator), then waits
//! `timeout` ms for the first key and `interdigit_timeout` ms for each next one. A terminator
//! ends the collection and is not stored. Always continues to `_`.

use std::time::Duration;

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::collect_dtmf::CollectDtmf;
use crate::flow::DEFAULT_COLLECTION;
use crate::logsafe::wire;
use crate::pivot::fields::kazoo::DIGITS;
use crate::store::{trim_value, CallEvent};

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
    call.record(CallEvent::Digits {
        // The request field the next pivot request sends them in (spec j.3).
        into: if name == DEFAULT_COLLECTION {
            DIGITS.to_string()
        } else {
            format!("{DIGITS}[{}]", trim_value(name))
        },
        digits: trim_value(&digits),
    });
    state.collections.set(name, &digits);
    Ok(Next::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::FakeCall;
    use crate::flow::{ModuleData, Node, ValidationError};
    use serde_json::json;

    fn of(v: serde_json::Value) -> Result<CollectDtmf, ValidationError> {
        Node::from_json(&json!({"module": "collect_dtmf", "data": v})).map(|n| match n.module {
            ModuleData::CollectDtmf(c) => c,
            other => panic!("{other:?}"),
        })
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
        // The event log says what was collected and the field it goes out as.
        assert_eq!(
            call.events,
            [CallEvent::Digits {
                digits: "1234".into(),
                into: "Digits[pin]".into()
            }]
        );
        assert!(
            call.digits.is_empty(),
            "typed-ahead keys are dropped, as in Kazoo"
        );
        let data = of(json!({"max_digits": 4})).unwrap();
        let call = collect(data, "12#9", &mut state).await;
        assert_eq!(state.collections.get("default"), Some("12"));
        assert_eq!(
            call.events,
            [CallEvent::Digits {
                digits: "12".into(),
                into: "Digits".into()
            }]
        );
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
