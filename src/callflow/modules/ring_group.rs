//! `ring_group` (spec c.6, `cf_ring_group.erl`): rings the group's devices and users for
//! `repeats` rounds. `simultaneous` rings every member at once (each after its own delay and
//! for its own timeout, within the group's timeout); `single` rings them one after another in
//! the given order, each for its own timeout, until one answers; `weighted_random` draws that
//! order at random by weight each round, then rings like `single` (Kazoo's `freeswitch_strategy`
//! turns it into `single`). As in Kazoo (a FreeSWITCH `|` failover), a member that fails does
//! not end a `single` round; the round's outcome is its last member's.
//!
//! After each round (`bridge_outcome`): answered → the flow stops; a child named by the cause or
//! `sip:NNN` → that child, ending the repeats; else the next round, and after the last one
//! `_`. Group members are skipped (pivotd has no Kazoo groups); a group with nothing left to
//! ring continues to `_` at once.

use std::time::Duration;

use rand::Rng;

use super::bridge_outcome::{self, Children, Verdict, WhenUnmatched};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::bridge::{ring_timeout, BridgeEndpoint, BridgeOutcome, BridgeRequest, Target};
use crate::flow::modules::ring_group::{EndpointType, Member, RingGroup, Strategy};
use crate::logsafe::wire;

/// The weight Kazoo gives a member without one when it draws a `weighted_random` order.
const DEFAULT_WEIGHT: u8 = 20;

pub async fn run(
    data: &RingGroup,
    children: &Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let members: Vec<(&Member, BridgeEndpoint)> = data
        .endpoints
        .iter()
        .filter_map(|m| endpoint(m).map(|e| (m, e)))
        .collect();
    if members.is_empty() {
        tracing::info!("ring group has no endpoints to ring, moving to the next node");
        return Ok(Next::Default);
    }
    let mut round = 1;
    loop {
        let outcome = ring_round(data, &members, call, rt, state).await?;
        let verdict = bridge_outcome::verdict(&outcome, children);
        if verdict == Verdict::Unmatched && round < data.repeats {
            round += 1;
            continue;
        }
        return bridge_outcome::next(
            verdict,
            WhenUnmatched::Continue,
            &outcome,
            children,
            call,
            rt,
        )
        .await;
    }
}

/// One round over the members, by the group's strategy.
async fn ring_round(
    data: &RingGroup,
    members: &[(&Member, BridgeEndpoint)],
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<BridgeOutcome, CallEnded> {
    let in_order: Vec<&BridgeEndpoint> = match data.strategy {
        Strategy::Simultaneous => {
            let all = members.iter().map(|(_, e)| e.clone()).collect();
            return bridge_outcome::bridge(&together(data, all), call, rt, state).await;
        }
        Strategy::Single => members.iter().map(|(_, e)| e).collect(),
        Strategy::WeightedRandom => {
            let weighted = members
                .iter()
                .map(|(m, e)| (m.weight.unwrap_or(DEFAULT_WEIGHT), e))
                .collect();
            let mut rng = rand::thread_rng();
            weighted_order(weighted, |total| rng.gen_range(0..total))
        }
    };
    let mut last = None;
    for endpoint in in_order {
        let outcome = bridge_outcome::bridge(&one_by_one(data, endpoint), call, rt, state).await?;
        if outcome.answered() {
            return Ok(outcome);
        }
        last = Some(outcome);
    }
    // Never empty: `run` rings only a group with members.
    Ok(last.unwrap_or_else(|| BridgeOutcome::failed("NORMAL_UNSPECIFIED")))
}

/// The bridge endpoint of one member; None for a group, which pivotd cannot resolve.
fn endpoint(member: &Member) -> Option<BridgeEndpoint> {
    let target = match member.endpoint_type {
        EndpointType::Device => Target::Device {
            id: member.id.clone(),
        },
        EndpointType::User => Target::User {
            id: member.id.clone(),
        },
        EndpointType::Group => {
            tracing::info!(id = %wire(&member.id), "ring group endpoint type group not supported");
            return None;
        }
    };
    Some(BridgeEndpoint {
        target,
        delay: Duration::from_secs(u64::from(member.delay_s)),
        // A member timeout of 0 rings as long as the group.
        timeout: (member.timeout_s > 0).then(|| ring_timeout(member.timeout_s)),
    })
}

/// `simultaneous`: every member in one bridge, within the group's timeout.
fn together(data: &RingGroup, endpoints: Vec<BridgeEndpoint>) -> BridgeRequest {
    BridgeRequest {
        timeout: ring_timeout(data.timeout_s),
        ringback: data.ringback.clone(),
        ..BridgeRequest::to(endpoints)
    }
}

/// `single`: one member, rung after its delay for its own timeout.
fn one_by_one(data: &RingGroup, endpoint: &BridgeEndpoint) -> BridgeRequest {
    let ring = endpoint
        .timeout
        .unwrap_or_else(|| ring_timeout(data.timeout_s));
    BridgeRequest {
        timeout: endpoint.delay + ring,
        ringback: data.ringback.clone(),
        ..BridgeRequest::to(vec![endpoint.clone()])
    }
}

/// Kazoo's `weighted_random_sort`: draws the items one at a time, each with a chance in
/// proportion to its weight. `draw(total)` returns a number in `0..total`.
fn weighted_order<T>(mut items: Vec<(u8, T)>, mut draw: impl FnMut(u32) -> u32) -> Vec<T> {
    let mut order = Vec::with_capacity(items.len());
    while !items.is_empty() {
        // Weights are 1..=100, so the total is never 0 and fits u32 for any real group.
        let total: u32 = items.iter().map(|(w, _)| u32::from(*w).max(1)).sum();
        let mut pick = draw(total);
        let index = items
            .iter()
            .position(|(w, _)| {
                let w = u32::from(*w).max(1);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(items.len() - 1);
        order.push(items.remove(index).1);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::bridge::DialStatus;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn answered() -> BridgeOutcome {
        BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: Some(200),
            b_call_id: Some("b".into()),
            duration: Duration::from_secs(5),
        }
    }

    fn busy() -> BridgeOutcome {
        BridgeOutcome::from_sip_code(486, Some("b".into()))
    }

    fn no_answer() -> BridgeOutcome {
        BridgeOutcome::failed("NO_ANSWER")
    }

    async fn run_node(v: serde_json::Value, outcomes: Vec<BridgeOutcome>) -> (Next, Vec<Op>) {
        let n = Node::from_json(&v).unwrap();
        let ModuleData::RingGroup(data) = &n.module else {
            panic!("{:?}", n.module)
        };
        let mut call = FakeCall::new();
        call.bridge_outcomes = outcomes.into();
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
        if call.ops.iter().any(|op| matches!(op, Op::Bridge(_))) {
            assert!(state.last_bridge.is_some());
        }
        (next, call.ops)
    }

    /// The targets of each bridge, in order.
    fn rung(ops: &[Op]) -> Vec<Vec<Target>> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Bridge(r) => Some(r.endpoints.iter().map(|e| e.target.clone()).collect()),
                _ => None,
            })
            .collect()
    }

    fn device(id: &str) -> Target {
        Target::Device { id: id.into() }
    }

    fn user(id: &str) -> Target {
        Target::User { id: id.into() }
    }

    #[tokio::test]
    async fn simultaneous_rings_everyone_in_one_bridge_and_skips_groups() {
        let (next, ops) = run_node(
            json!({"module": "ring_group", "data": {
                "endpoints": [
                    {"endpoint_type": "device", "id": "d1", "delay": 3, "timeout": 10},
                    {"endpoint_type": "group", "id": "g1"},
                    {"endpoint_type": "user", "id": "u1", "timeout": 0}
                ],
                "timeout": 25, "ringback": "welcome"}}),
            vec![answered()],
        )
        .await;
        assert_eq!(next, Next::Stop);
        let expected = BridgeRequest {
            timeout: Duration::from_secs(25),
            ringback: Some("welcome".into()),
            ..BridgeRequest::to(vec![
                BridgeEndpoint {
                    target: device("d1"),
                    delay: Duration::from_secs(3),
                    timeout: Some(Duration::from_secs(10)),
                },
                BridgeEndpoint::now(user("u1")),
            ])
        };
        assert_eq!(ops, [Op::Bridge(expected)]);
    }

    #[tokio::test]
    async fn single_rings_in_order_until_one_answers() {
        let data = json!({"module": "ring_group", "data": {
            "strategy": "single", "timeout": 15,
            "endpoints": [
                {"endpoint_type": "device", "id": "d1", "timeout": 5},
                {"endpoint_type": "user", "id": "u2", "delay": 2, "timeout": 0},
                {"endpoint_type": "device", "id": "d3"}
            ]},
            "children": {"_": {"module": "hangup"}}});
        let (next, ops) = run_node(data.clone(), vec![busy(), answered()]).await;
        assert_eq!(next, Next::Stop);
        assert_eq!(rung(&ops), [vec![device("d1")], vec![user("u2")]]);
        // Each attempt rings for its member's own timeout (0: the group's) after its delay.
        let timeouts: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Bridge(r) => Some((r.timeout, r.endpoints[0].timeout)),
                _ => None,
            })
            .collect();
        assert_eq!(
            timeouts,
            [
                (Duration::from_secs(5), Some(Duration::from_secs(5))),
                (Duration::from_secs(17), None)
            ]
        );

        // Nobody answers: every member once, then `_`.
        let (next, ops) = run_node(data, vec![busy(), no_answer(), no_answer()]).await;
        assert_eq!(next, Next::Default);
        assert_eq!(
            rung(&ops),
            [vec![device("d1")], vec![user("u2")], vec![device("d3")]]
        );
    }

    #[tokio::test]
    async fn a_single_round_is_matched_on_its_last_members_failure() {
        let (next, ops) = run_node(
            json!({"module": "ring_group", "data": {"strategy": "single", "endpoints": [
                    {"endpoint_type": "device", "id": "d1"},
                    {"endpoint_type": "device", "id": "d2"}]},
                   "children": {"USER_BUSY": {"module": "hangup"}, "_": {"module": "hangup"}}}),
            vec![busy(), busy()],
        )
        .await;
        assert_eq!(rung(&ops).len(), 2, "a busy member does not end the round");
        assert_eq!(next, Next::Branch("USER_BUSY".into()));
    }

    #[tokio::test]
    async fn repeats_ring_again_until_a_branch_matches() {
        let group = |children: serde_json::Value| {
            json!({"module": "ring_group", "data": {"repeats": 3, "endpoints": [
                       {"endpoint_type": "device", "id": "d1"}]},
                   "children": children})
        };
        // No branch for NO_ANSWER: three rounds, then `_`.
        let (next, ops) = run_node(
            group(json!({"_": {"module": "hangup"}})),
            vec![no_answer(), no_answer(), no_answer()],
        )
        .await;
        assert_eq!((next, rung(&ops).len()), (Next::Default, 3));
        // A matched failure ends the repeats at once.
        let (next, ops) = run_node(
            group(json!({"sip:486": {"module": "hangup"}, "_": {"module": "hangup"}})),
            vec![no_answer(), busy(), no_answer()],
        )
        .await;
        assert_eq!(
            (next, rung(&ops).len()),
            (Next::Branch("sip:486".into()), 2)
        );
        // Answered in the second round: stop.
        let (next, ops) = run_node(group(json!({})), vec![no_answer(), answered()]).await;
        assert_eq!((next, rung(&ops).len()), (Next::Stop, 2));
    }

    #[tokio::test]
    async fn a_group_of_groups_rings_nothing() {
        let (next, ops) = run_node(
            json!({"module": "ring_group", "data": {"endpoints": [
                {"endpoint_type": "group", "id": "g"}]}}),
            vec![],
        )
        .await;
        assert_eq!((next, ops), (Next::Default, vec![]));
    }

    #[tokio::test]
    async fn weighted_random_rings_one_by_one() {
        let (_, ops) = run_node(
            json!({"module": "ring_group", "data": {"strategy": "weighted_random", "endpoints": [
                {"endpoint_type": "device", "id": "d1", "weight": 1},
                {"endpoint_type": "device", "id": "d2", "weight": 100}]}}),
            vec![no_answer(), no_answer()],
        )
        .await;
        let mut rung = rung(&ops);
        assert_eq!(rung.len(), 2);
        rung.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(rung, [vec![device("d1")], vec![device("d2")]]);
    }

    #[test]
    fn weighted_order_draws_by_weight() {
        // Draws at the low end pick the first remaining item, at the high end the last.
        let items = vec![(1u8, "a"), (20, "b"), (100, "c")];
        assert_eq!(weighted_order(items.clone(), |_| 0), ["a", "b", "c"]);
        assert_eq!(weighted_order(items.clone(), |t| t - 1), ["c", "b", "a"]);
        // 1 + 20 = 21: a draw of 21 falls in c's share, then 1 in b's (a=1, b=20).
        let mut draws = vec![21, 1, 0].into_iter();
        assert_eq!(
            weighted_order(items, |_| draws.next().unwrap_or(0)),
            ["c", "b", "a"]
        );
        // A heavy member comes first far more often than a light one.
        let mut rng = rand::thread_rng();
        let heavy_first = (0..1000)
            .filter(|_| {
                weighted_order(vec![(1u8, "light"), (100, "heavy")], |t| {
                    rng.gen_range(0..t)
                })[0]
                    == "heavy"
            })
            .count();
        assert!(heavy_first > 900, "{heavy_first}");
    }
}
