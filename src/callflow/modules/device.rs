//! `device` (spec c.6, `cf_device.erl`): rings one device (every contact it is registered
//! at) for `timeout` seconds after `delay`. Answered: the flow stops. Failed: the child named
//! by the cause or `sip:NNN`, else `_` (`bridge_outcome`). A node without an `id` rings
//! nothing and continues to `_`, as Kazoo does.

use std::time::Duration;

use super::bridge_outcome::{self, Children, WhenUnmatched};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::bridge::{ring_timeout, BridgeEndpoint, BridgeRequest, Target};
use crate::flow::modules::device::Device;

pub async fn run(
    data: &Device,
    children: &Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let Some(request) = request(data) else {
        tracing::info!("device: no device id, nothing to ring");
        return Ok(Next::Default);
    };
    bridge_outcome::run(&request, WhenUnmatched::Continue, children, call, rt, state).await
}

/// The bridge a device node asks for; None without a device id.
pub fn request(data: &Device) -> Option<BridgeRequest> {
    let id = data.id.clone()?;
    Some(ring_one(
        Target::Device { id },
        data.delay_s,
        data.timeout_s,
        data.can_call_self,
    ))
}

/// One target rung after `delay_s` for `timeout_s` (a device, a user).
pub(super) fn ring_one(
    target: Target,
    delay_s: u32,
    timeout_s: u32,
    can_call_self: bool,
) -> BridgeRequest {
    let endpoint = BridgeEndpoint {
        delay: Duration::from_secs(u64::from(delay_s)),
        ..BridgeEndpoint::now(target)
    };
    BridgeRequest {
        timeout: ring_timeout(timeout_s),
        can_call_self,
        ..BridgeRequest::to(vec![endpoint])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::bridge::{BridgeOutcome, DialStatus, DEFAULT_RING_TIMEOUT};
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        Node::from_json(&v).unwrap()
    }

    fn device_of(n: &Node) -> &Device {
        match &n.module {
            ModuleData::Device(d) => d,
            other => panic!("{other:?}"),
        }
    }

    async fn run_node(n: &Node, outcomes: Vec<BridgeOutcome>) -> (Next, FakeCall, FlowState) {
        let mut call = FakeCall::new();
        call.bridge_outcomes = outcomes.into();
        let mut state = FlowState::default();
        let next = run(
            device_of(n),
            &n.children,
            &mut call,
            &Runtime::for_tests(),
            &mut state,
        )
        .await
        .unwrap();
        (next, call, state)
    }

    fn answered() -> BridgeOutcome {
        BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: Some(200),
            b_call_id: Some("b-leg".into()),
            duration: Duration::from_secs(12),
        }
    }

    #[tokio::test]
    async fn builds_the_request_and_stops_once_answered() {
        let n = node(json!({"module": "device",
            "data": {"id": "dev1", "delay": 2, "can_call_self": true},
            "children": {"_": {"module": "hangup"}}}));
        let (next, call, state) = run_node(&n, vec![answered()]).await;
        assert_eq!(next, Next::Stop);
        let expected = BridgeRequest {
            timeout: DEFAULT_RING_TIMEOUT,
            can_call_self: true,
            ..BridgeRequest::to(vec![BridgeEndpoint {
                target: Target::Device { id: "dev1".into() },
                delay: Duration::from_secs(2),
                timeout: None,
            }])
        };
        assert_eq!(call.ops, [Op::Bridge(expected)]);
        assert_eq!(state.last_bridge, Some(answered()));

        let n = node(json!({"module": "device", "data": {"id": "d", "timeout": 45}}));
        let (_, call, _) = run_node(&n, vec![answered()]).await;
        assert!(matches!(&call.ops[..], [Op::Bridge(r)] if r.timeout == Duration::from_secs(45)));
    }

    #[tokio::test]
    async fn failures_pick_the_cause_then_the_code_then_underscore() {
        let busy = || BridgeOutcome::from_sip_code(486, None);
        let n = node(
            json!({"module": "device", "data": {"id": "d"}, "children": {
            "USER_BUSY": {"module": "hangup"}, "sip:486": {"module": "hangup"},
            "_": {"module": "hangup"}}}),
        );
        assert_eq!(
            run_node(&n, vec![busy()]).await.0,
            Next::Branch("USER_BUSY".into())
        );
        let n = node(
            json!({"module": "device", "data": {"id": "d"}, "children": {
            "sip:486": {"module": "hangup"}, "_": {"module": "hangup"}}}),
        );
        assert_eq!(
            run_node(&n, vec![busy()]).await.0,
            Next::Branch("sip:486".into())
        );
        let n = node(json!({"module": "device", "data": {"id": "d"}}));
        let (next, call, state) = run_node(&n, vec![busy()]).await;
        assert_eq!(next, Next::Default);
        assert_eq!(call.ops.len(), 1, "no response: the flow goes on");
        assert_eq!(state.last_bridge, Some(busy()));
    }

    #[tokio::test]
    async fn no_id_rings_nothing() {
        let n = node(json!({"module": "device", "data": {}}));
        let (next, call, state) = run_node(&n, vec![]).await;
        assert_eq!(next, Next::Default);
        assert!(call.ops.is_empty());
        assert_eq!(state.last_bridge, None);
    }
}
