//! `user` (spec c.6, `cf_user.erl`): rings every device of a user at once for `timeout`
//! seconds after `delay`. `strategy: single` cannot be expressed (the call layer resolves the
//! user's devices and rings them together), so it rings like `simultaneous`. Answered: the
//! flow stops. Failed: the child named by the cause or `sip:NNN`, else `_`
//! (`bridge_outcome`). A node without an `id` rings nothing and continues to `_`.

use super::bridge_outcome::{self, Children, WhenUnmatched};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::bridge::{BridgeRequest, Target};
use crate::flow::modules::user::User;

pub async fn run(
    data: &User,
    children: &Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let Some(request) = request(data) else {
        tracing::info!("user: no user id, nothing to ring");
        return Ok(Next::Default);
    };
    bridge_outcome::run(&request, WhenUnmatched::Continue, children, call, rt, state).await
}

/// The bridge a user node asks for; None without a user id.
pub fn request(data: &User) -> Option<BridgeRequest> {
    let id = data.id.clone()?;
    Some(super::device::ring_one(
        Target::User { id },
        data.delay_s,
        data.timeout_s,
        data.can_call_self,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::bridge::{BridgeEndpoint, BridgeOutcome};
    use crate::flow::{ModuleData, Node};
    use serde_json::json;
    use std::time::Duration;

    async fn run_node(v: serde_json::Value, outcome: BridgeOutcome) -> (Next, FakeCall) {
        let n = Node::from_json(&v).unwrap();
        let ModuleData::User(data) = &n.module else {
            panic!("{:?}", n.module)
        };
        let mut call = FakeCall::new();
        call.bridge_outcomes.push_back(outcome);
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
        assert!(state.last_bridge.is_some());
        (next, call)
    }

    #[tokio::test]
    async fn rings_the_user_and_picks_the_failure_child() {
        let (next, call) = run_node(
            json!({"module": "user", "data": {"id": "u1", "strategy": "single"},
                   "children": {"NO_ANSWER": {"module": "hangup"}, "_": {"module": "hangup"}}}),
            BridgeOutcome::failed("NO_ANSWER"),
        )
        .await;
        assert_eq!(next, Next::Branch("NO_ANSWER".into()));
        let expected =
            BridgeRequest::to(vec![BridgeEndpoint::now(Target::User { id: "u1".into() })]);
        assert_eq!(expected.timeout, Duration::from_secs(20));
        assert_eq!(call.ops, [Op::Bridge(expected)]);

        let (next, _) = run_node(
            json!({"module": "user", "data": {"id": "u1"},
                   "children": {"_": {"module": "hangup"}}}),
            BridgeOutcome::from_sip_code(603, None),
        )
        .await;
        assert_eq!(next, Next::Default);
    }
}
