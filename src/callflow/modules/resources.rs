//! `resources` and `offnet` (spec c.6, `cf_resources.erl`, `cf_offnet.erl`): dials a number
//! through carriers — `to_did`, else the number the caller dialled (the request user) — the
//! account's (`use_local_resources`, never for `offnet`) or the system's. The call layer picks
//! the carriers, their order and the caller ID (so `caller_id_type` is not read here).
//!
//! After the bridge (`bridge_outcome`): answered → the flow stops; a child named by the cause
//! or `sip:NNN` → that child; otherwise the flow stops too, after Kazoo's default response
//! for the cause (486 "Number busy" for `USER_BUSY`, …) when the node has no `_` child.

use super::bridge_outcome::{self, Children, WhenUnmatched};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::bridge::{ring_timeout, BridgeEndpoint, BridgeRequest, Target};
use crate::flow::modules::resources::Resources;
use crate::flow::CallInfo;

pub async fn run(
    data: &Resources,
    children: &Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let request = request(data, call.info());
    bridge_outcome::run(
        &request,
        WhenUnmatched::DefaultResponse,
        children,
        call,
        rt,
        state,
    )
    .await
}

/// The bridge a resources or offnet node asks for on the call `info` describes.
pub fn request(data: &Resources, info: &CallInfo) -> BridgeRequest {
    let number = data
        .to_did
        .clone()
        .unwrap_or_else(|| info.request_user.clone());
    let target = Target::Number {
        number,
        local: data.use_local_resources,
    };
    BridgeRequest {
        timeout: ring_timeout(data.timeout_s.unwrap_or(0)),
        ringback: data.ringback.clone(),
        ..BridgeRequest::to(vec![BridgeEndpoint::now(target)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::bridge::{BridgeOutcome, DialStatus, DEFAULT_RING_TIMEOUT};
    use crate::flow::{ModuleData, Node};
    use serde_json::json;
    use std::time::Duration;

    async fn run_node(v: serde_json::Value, outcome: BridgeOutcome) -> (Next, Vec<Op>) {
        let n = Node::from_json(&v).unwrap();
        let ModuleData::Resources(data) = &n.module else {
            panic!("{:?}", n.module)
        };
        let mut call = FakeCall::new();
        call.info.request_user = "+15551230000".into();
        call.bridge_outcomes.push_back(outcome.clone());
        let mut state = FlowState::default();
        let next = run(
            data,
            &n.children,
            &mut call,
            &Runtime::for_tests(),
            &mut state,
        )
        .await
        .unwrap();
        assert_eq!(state.last_bridge, Some(outcome));
        (next, call.ops)
    }

    fn number(number: &str, local: bool) -> Target {
        Target::Number {
            number: number.into(),
            local,
        }
    }

    #[tokio::test]
    async fn dials_to_did_or_the_dialled_number_and_stops_when_answered() {
        let answered = BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: Some(200),
            b_call_id: Some("b".into()),
            duration: Duration::from_secs(60),
        };
        let (next, ops) = run_node(
            json!({"module": "resources",
                   "data": {"to_did": "+14155550000", "timeout": 40, "ringback": "welcome"},
                   "children": {"_": {"module": "hangup"}}}),
            answered.clone(),
        )
        .await;
        assert_eq!(next, Next::Stop);
        let expected = BridgeRequest {
            timeout: Duration::from_secs(40),
            ringback: Some("welcome".into()),
            ..BridgeRequest::to(vec![BridgeEndpoint::now(number("+14155550000", true))])
        };
        assert_eq!(ops, [Op::Bridge(expected)]);

        // offnet: the system's carriers, the caller's dialled number, the default timeout.
        let (_, ops) = run_node(json!({"module": "offnet"}), answered).await;
        let expected = BridgeRequest::to(vec![BridgeEndpoint::now(number("+15551230000", false))]);
        assert_eq!(expected.timeout, DEFAULT_RING_TIMEOUT);
        assert_eq!(ops, [Op::Bridge(expected)]);
    }

    #[tokio::test]
    async fn failures_branch_or_get_kazoos_default_response() {
        let busy = BridgeOutcome::from_sip_code(486, None);
        let (next, _) = run_node(
            json!({"module": "resources", "children": {
                "USER_BUSY": {"module": "hangup"}, "_": {"module": "hangup"}}}),
            busy.clone(),
        )
        .await;
        assert_eq!(next, Next::Branch("USER_BUSY".into()));

        let (next, _) = run_node(
            json!({"module": "offnet", "children": {"sip:486": {"module": "hangup"}}}),
            busy.clone(),
        )
        .await;
        assert_eq!(next, Next::Branch("sip:486".into()));

        // No branch and no `_`: 486 Number busy, and the flow stops.
        let (next, ops) = run_node(json!({"module": "resources"}), busy.clone()).await;
        assert_eq!(next, Next::Stop);
        assert_eq!(ops[1..], [Op::Respond(486, Some("Number busy".into()))]);

        // A `_` child suppresses the response; the flow still stops (it does not go to `_`).
        let (next, ops) = run_node(
            json!({"module": "resources", "children": {"_": {"module": "hangup"}}}),
            busy,
        )
        .await;
        assert_eq!((next, ops.len()), (Next::Stop, 1));

        let (_, ops) = run_node(
            json!({"module": "resources"}),
            BridgeOutcome::failed("NO_ANSWER"),
        )
        .await;
        assert_eq!(ops[1..], [Op::Respond(480, Some("No answer".into()))]);
    }
}
