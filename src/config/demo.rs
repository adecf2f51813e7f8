//! The embedded demo account: what `pivotd` answers with no config file, and with a file that
//! has no `[[accounts]]`. Its prompts are compiled into the binary.

use regex::Regex;

use super::{Account, CallflowEntry};
use crate::flow::modules::{play::Play, sleep, ModuleData};
use crate::flow::Node;

/// Fixed id of the embedded demo account (32 hex digits, like a Kazoo account id).
pub const DEMO_ACCOUNT_ID: &str = "00000000000000000000000000000de0";
/// Realm of the embedded demo account.
pub const DEMO_REALM: &str = "demo.pivotd.test";

/// The demo IVR: welcome, a short pause, three digits, hang up.
pub(super) fn demo_account() -> Account {
    let play = |id: &str| Node::new(ModuleData::Play(Play::new(id)));
    let flow = play("welcome").then(
        Node::new(ModuleData::Sleep(sleep::Sleep {
            duration: 300,
            unit: sleep::Unit::Ms,
        }))
        .then(
            play("digit-1")
                .then(play("digit-2").then(play("digit-3").then(Node::new(ModuleData::Hangup)))),
        ),
    );
    Account {
        id: DEMO_ACCOUNT_ID.to_string(),
        realm: DEMO_REALM.to_string(),
        api_key: None,
        pivot_secret: None,
        callflows: vec![CallflowEntry {
            id: None,
            name: Some("demo IVR".to_string()),
            numbers: vec![],
            // A constant that compiles; `.ok()` keeps a panic path out of the library anyway.
            patterns: Regex::new(".*").ok().into_iter().collect(),
            flow: std::sync::Arc::new(flow),
            source: "embedded default".to_string(),
        }],
        users: vec![],
        devices: vec![],
        resources: vec![],
        caller_id: Default::default(),
        encryption: None,
        sip_targets: vec![],
    }
}
