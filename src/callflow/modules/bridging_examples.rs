//! Kazoo's own pivot examples for the bridging modules and `send_dtmf`
//! (`tests/fixtures/kazoo-bridging/`, see its README): each is decoded as a pivot answer is,
//! and the ones that decode are run on a fake call to see what they ask of it.

use std::path::PathBuf;
use std::time::Duration;

use crate::callflow::fake::{FakeCall, Op};
use crate::callflow::runtime::Runtime;
use crate::flow::bridge::{BridgeEndpoint, BridgeRequest, Target, DEFAULT_RING_TIMEOUT};
use crate::flow::Node;
use crate::pivot::kazoo::{decode_flow, AnswerError};

fn example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kazoo-bridging")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The operations the example's flow performs on a fresh call whose bridges fail.
async fn ops_of(flow: &Node) -> Vec<Op> {
    let mut call = FakeCall::new();
    call.info.request_user = "2000".into();
    Runtime::for_tests().run(flow, &mut call).await;
    call.ops
}

fn only(target: Target) -> BridgeRequest {
    BridgeRequest::to(vec![BridgeEndpoint::now(target)])
}

#[tokio::test]
async fn device_and_user_examples_ring_their_target() {
    let flow = decode_flow(&example("device.json")).unwrap();
    assert_eq!(flow.module.name(), "device");
    // The fake's bridge fails (NORMAL_TEMPORARY_FAILURE); with no child the flow ends: 480.
    assert_eq!(
        ops_of(&flow).await,
        [
            Op::Bridge(only(Target::Device {
                id: "device_id".into()
            })),
            Op::Respond(480, None)
        ]
    );

    let flow = decode_flow(&example("user.json")).unwrap();
    let ops = ops_of(&flow).await;
    assert_eq!(
        ops[0],
        Op::Bridge(only(Target::User {
            id: "user_id".into()
        }))
    );
    assert!(matches!(&ops[0], Op::Bridge(r) if r.timeout == DEFAULT_RING_TIMEOUT));
}

#[tokio::test]
async fn resources_examples_pick_the_carriers() {
    for (name, local) in [
        ("resources_global.json", false),
        ("resources_local.json", true),
    ] {
        let flow = decode_flow(&example(name)).unwrap();
        let number = Target::Number {
            number: "+14155550000".into(),
            local,
        };
        // Failed with NORMAL_TEMPORARY_FAILURE, no `_`: Kazoo's default response, 503.
        assert_eq!(
            ops_of(&flow).await,
            [
                Op::Bridge(only(number)),
                Op::Respond(503, Some("Normal temporary failure".into()))
            ],
            "{name}"
        );
    }
}

#[test]
fn the_ring_group_example_of_plain_ids_is_refused_with_the_fix() {
    let e = decode_flow(&example("ring_group.json")).unwrap_err();
    let AnswerError::Schema { path, message } = e else {
        panic!("{e:?}")
    };
    assert_eq!(path, "flow.data.endpoints[0]");
    assert!(
        message.contains(r#"{"endpoint_type": "device", "id": "device_1_id"}"#),
        "{message}"
    );
    // The same members written as the schema wants them decode.
    let fixed = br#"{"module": "ring_group", "data": {"endpoints": [
        {"endpoint_type": "device", "id": "device_1_id"},
        {"endpoint_type": "user", "id": "user_1_id"},
        {"endpoint_type": "group", "id": "group_1_id"}]}}"#;
    assert_eq!(decode_flow(fixed).unwrap().module.name(), "ring_group");
}

#[tokio::test]
async fn the_send_dtmf_example_sends_its_keys() {
    let flow = decode_flow(&example("send_dtmf.json")).unwrap();
    assert_eq!(
        ops_of(&flow).await,
        [
            Op::SendDtmf("123ABC#".into(), Duration::from_secs(2)),
            Op::Respond(480, None)
        ]
    );
}
