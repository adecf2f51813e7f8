//! What the bridging modules (`device`, `user`, `ring_group`, `resources`, `offnet`) do once
//! a bridge has ended (spec c.6, Kazoo's `cf_util:handle_bridge_failure/3` and
//! `send_default_response/2`), in one place:
//!
//! - answered → the flow stops (the callee hung up or the bridge ended; the call layer ends
//!   the caller's side when the run ends);
//! - failed → the child named by the hangup cause (`USER_BUSY`), else the one named by the
//!   SIP code (`sip:486`);
//! - no such child → `_` for device, user and ring group; for resources and offnet, Kazoo's
//!   default response for the cause when the node has no `_` child (a `_` child only
//!   suppresses it), then the flow stops.

use std::collections::BTreeMap;

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::bridge::{BridgeOutcome, BridgeRequest};
use crate::flow::modules::response::Response;
use crate::flow::Node;
use crate::logsafe::wire;

/// A node's children, by key.
pub type Children = BTreeMap<String, Node>;

/// What a bridging module does when no child names the failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnmatched {
    /// `device`, `user`, `ring_group`: go on with `_`.
    Continue,
    /// `resources`, `offnet`: Kazoo's default response unless there is a `_` child, then stop.
    DefaultResponse,
}

/// How one bridge ended, as the choice of the next child sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answered,
    /// A failure with a child of this name (the cause, or `sip:NNN`).
    Branch(String),
    /// A failure no child names.
    Unmatched,
}

/// Rings `request` and remembers the outcome for the next pivot request (spec: the bridge's
/// result is sent with it).
pub async fn bridge(
    request: &BridgeRequest,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<BridgeOutcome, CallEnded> {
    // A ringback that resolves to nothing is logged; the caller then hears the ring as if
    // none had been named.
    let ringback = match &request.ringback {
        Some(id) => rt.resolve_prompt(id).await,
        None => None,
    };
    let outcome = call.bridge(request, ringback).await?;
    tracing::info!(
        status = outcome.status.as_str(),
        cause = outcome.cause,
        sip_code = outcome.sip_code,
        "bridge ended"
    );
    state.last_bridge = Some(outcome.clone());
    Ok(outcome)
}

/// Rings `request` and goes on as its outcome says: the whole of `device`, `user` and
/// `resources`/`offnet` once their request is built.
pub async fn run(
    request: &BridgeRequest,
    when_unmatched: WhenUnmatched,
    children: &Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let outcome = bridge(request, call, rt, state).await?;
    let verdict = verdict(&outcome, children);
    next(verdict, when_unmatched, &outcome, children, call, rt).await
}

/// Whether the bridge was answered, or which child names its failure: the cause first, then
/// `sip:NNN` (Kazoo tries them in that order).
pub fn verdict(outcome: &BridgeOutcome, children: &Children) -> Verdict {
    if outcome.answered() {
        return Verdict::Answered;
    }
    if children.contains_key(outcome.cause) {
        return Verdict::Branch(outcome.cause.to_string());
    }
    match outcome.sip_code.map(|code| format!("sip:{code}")) {
        Some(key) if children.contains_key(&key) => Verdict::Branch(key),
        _ => Verdict::Unmatched,
    }
}

/// Where the flow goes after a bridge that ended as `verdict` said (see the module doc).
pub async fn next(
    verdict: Verdict,
    when_unmatched: WhenUnmatched,
    outcome: &BridgeOutcome,
    children: &Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
) -> Result<Next, CallEnded> {
    match (verdict, when_unmatched) {
        (Verdict::Answered, _) => Ok(Next::Stop),
        (Verdict::Branch(key), _) => {
            tracing::debug!(child = %wire(&key), "bridge failure branch");
            Ok(Next::Branch(key))
        }
        (Verdict::Unmatched, WhenUnmatched::Continue) => Ok(Next::Default),
        (Verdict::Unmatched, WhenUnmatched::DefaultResponse) => {
            if children.contains_key("_") {
                tracing::debug!(
                    cause = outcome.cause,
                    "bridge failed; `_` suppresses the default response"
                );
            } else {
                send_default_response(outcome.cause, call, rt).await?;
            }
            Ok(Next::Stop)
        }
    }
}

/// Kazoo's default response to a caller whose outbound call failed with `cause`
/// (`kz_call_response:default_response/1`), sent like a `response` node. Its prompt is played
/// first when the prompt library has one of that name (Kazoo's system prompts are not
/// shipped); its tone streams are not played. A cause Kazoo has no response for sends
/// nothing: the call layer ends the call when the run stops.
async fn send_default_response(
    cause: &str,
    call: &mut dyn CallControl,
    rt: &Runtime,
) -> Result<(), CallEnded> {
    let Some(default) = default_response(cause) else {
        tracing::debug!(cause, "bridge failed; no default response for the cause");
        return Ok(());
    };
    let response = Response {
        code: default.code,
        message: Some(default.reason.to_string()),
        media: default
            .prompt
            .filter(|id| rt.prompts.exists(id))
            .map(String::from),
    };
    tracing::debug!(
        cause,
        code = default.code,
        "bridge failed; sending the default response"
    );
    super::response::run(&response, call, rt).await.map(|_| ())
}

/// What Kazoo answers a caller with when an outbound call failed with a given cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultResponse {
    pub code: u16,
    pub reason: &'static str,
    /// A Kazoo system prompt played first, if the prompt library has it.
    pub prompt: Option<&'static str>,
}

/// `kz_call_response:default_response/1`: the SIP code, reason and prompt Kazoo answers a
/// failed outbound call's cause with (the account's `call_response` overrides are not
/// supported). The tone streams some carry are left out; `NORMAL_CLEARING`, which carries
/// only a tone, sends nothing.
pub fn default_response(cause: &str) -> Option<DefaultResponse> {
    const AS_DIALED: Option<&str> = Some("fault-can_not_be_completed_as_dialed");
    const AT_THIS_TIME: Option<&str> = Some("fault-can_not_be_completed_at_this_time");
    const FACILITY: Option<&str> = Some("fault-facility_trouble");
    let (code, reason, prompt) = match cause {
        "UNALLOCATED_NUMBER" | "NO_ROUTE_DESTINATION" => {
            (404, "No route to destination", AS_DIALED)
        }
        "NO_ROUTE_TRANSIT_NET" => (404, "Invalid number", None),
        "USER_BUSY" => (486, "Number busy", None),
        "NO_USER_RESPONSE" => (408, "No response", None),
        "NO_ANSWER" => (480, "No answer", None),
        "SUBSCRIBER_ABSENT" => (480, "Subscriber absent", None),
        "CALL_REJECTED" => (603, "Call Rejected", None),
        "NUMBER_CHANGED" => (410, "Number changed", None),
        "REDIRECTION_TO_NEW_DESTINATION" => (410, "Redirection to new destination", None),
        "EXCHANGE_ROUTING_ERROR" => (483, "Exchange routing error", FACILITY),
        "DESTINATION_OUT_OF_ORDER" => (502, "Destination out of order", AS_DIALED),
        "INVALID_NUMBER_FORMAT" => (484, "Invalid number format", AS_DIALED),
        "FACILITY_REJECTED" => (510, "Facility rejected", None),
        "NORMAL_UNSPECIFIED" => (480, "Normal unspecified", None),
        "NORMAL_CIRCUIT_CONGESTION" => (503, "Normal circuit congestion", None),
        "NETWORK_OUT_OF_ORDER" => (503, "Network out of order", None),
        "NORMAL_TEMPORARY_FAILURE" => (503, "Normal temporary failure", AT_THIS_TIME),
        "SWITCH_CONGESTION" => (503, "Switch congestion", None),
        "REQUESTED_CHAN_UNAVAIL" => (503, "Requested channel unavailable", None),
        "OUTGOING_CALL_BARRED" => (403, "Outgoing call barred", None),
        "INCOMING_CALL_BARRED" => (403, "Incoming call barred", None),
        "BEARERCAPABILITY_NOTAUTH" => (403, "Bearer capability not authorized", None),
        "BEARERCAPABILITY_NOTAVAIL" => (403, "Bearer capability not presently available", None),
        "BEARERCAPABILITY_NOTIMPL" => (488, "Bearer capability not implemented", None),
        "UNKNOWN" => (500, "Unknown error happened", None),
        "FACILITY_NOT_IMPLEMENTED" => (501, "Facility not implemented", None),
        "SERVICE_NOT_IMPLEMENTED" => (501, "Service not implemented", FACILITY),
        "INCOMPATIBLE_DESTINATION" => (488, "Incompatible destination", FACILITY),
        "MANDATORY_IE_MISSING" | "MANDATORY_IE_LENGTH_ERROR" => {
            (400, "Mandatory information missing", FACILITY)
        }
        "RECOVERY_ON_TIMER_EXPIRE" => (504, "Recovery on timer expire", None),
        "ORIGINATOR_CANCEL" => (487, "Originator cancel", None),
        "MEDIA_TIMEOUT" => (504, "Media timeout", None),
        "PROGRESS_TIMEOUT" => (486, "Progress timeout", AT_THIS_TIME),
        _ => return None,
    };
    Some(DefaultResponse {
        code,
        reason,
        prompt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::bridge::DialStatus;
    use crate::flow::ModuleData;
    use std::time::Duration;

    fn children(keys: &[&str]) -> Children {
        keys.iter()
            .map(|k| (k.to_string(), Node::new(ModuleData::Hangup)))
            .collect()
    }

    fn answered() -> BridgeOutcome {
        BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: Some(200),
            b_call_id: Some("b".into()),
            duration: Duration::from_secs(3),
        }
    }

    #[test]
    fn the_cause_is_tried_before_the_sip_code() {
        let busy = BridgeOutcome::from_sip_code(486, None);
        let both = children(&["USER_BUSY", "sip:486", "_"]);
        assert_eq!(verdict(&busy, &both), Verdict::Branch("USER_BUSY".into()));
        let code_only = children(&["sip:486", "_"]);
        assert_eq!(
            verdict(&busy, &code_only),
            Verdict::Branch("sip:486".into())
        );
        assert_eq!(verdict(&busy, &children(&["_"])), Verdict::Unmatched);
        assert_eq!(verdict(&answered(), &both), Verdict::Answered);
        // A failure before any INVITE has no code to match.
        let none = BridgeOutcome::failed("USER_NOT_REGISTERED");
        assert_eq!(verdict(&none, &children(&["sip:404"])), Verdict::Unmatched);
    }

    #[test]
    fn kazoo_default_responses() {
        assert_eq!(
            default_response("USER_BUSY"),
            Some(DefaultResponse {
                code: 486,
                reason: "Number busy",
                prompt: None
            })
        );
        assert_eq!(
            default_response("UNALLOCATED_NUMBER"),
            Some(DefaultResponse {
                code: 404,
                reason: "No route to destination",
                prompt: Some("fault-can_not_be_completed_as_dialed")
            })
        );
        assert_eq!(default_response("NO_ANSWER").map(|r| r.code), Some(480));
        assert_eq!(
            default_response("NO_USER_RESPONSE").map(|r| r.code),
            Some(408)
        );
        assert_eq!(default_response("NORMAL_CLEARING"), None);
        assert_eq!(default_response("INTERWORKING"), None);
    }

    async fn next_of(
        outcome: &BridgeOutcome,
        keys: &[&str],
        when_unmatched: WhenUnmatched,
    ) -> (Next, Vec<Op>) {
        let mut call = FakeCall::new();
        let kids = children(keys);
        let v = verdict(outcome, &kids);
        let next = next(
            v,
            when_unmatched,
            outcome,
            &kids,
            &mut call,
            &Runtime::for_tests(),
        )
        .await
        .unwrap();
        (next, call.ops)
    }

    #[tokio::test]
    async fn unmatched_failures_continue_or_get_the_default_response() {
        let busy = BridgeOutcome::from_sip_code(486, None);
        assert_eq!(
            next_of(&busy, &["_"], WhenUnmatched::Continue).await,
            (Next::Default, vec![])
        );
        assert_eq!(
            next_of(&busy, &[], WhenUnmatched::DefaultResponse).await,
            (
                Next::Stop,
                vec![Op::Respond(486, Some("Number busy".into()))]
            )
        );
        assert_eq!(
            next_of(&busy, &["_"], WhenUnmatched::DefaultResponse).await,
            (Next::Stop, vec![]),
            "a `_` child only suppresses the default response"
        );
        // The prompt of a default response is played only when the library has it.
        let unallocated = BridgeOutcome::from_sip_code(404, None);
        assert_eq!(
            next_of(&unallocated, &[], WhenUnmatched::DefaultResponse).await,
            (
                Next::Stop,
                vec![Op::Respond(404, Some("No route to destination".into()))]
            )
        );
        assert_eq!(
            next_of(&answered(), &["_"], WhenUnmatched::Continue).await,
            (Next::Stop, vec![])
        );
    }

    #[tokio::test]
    async fn a_default_responses_prompt_plays_when_the_library_has_it() {
        use crate::media::prompt::PromptLibrary;
        use std::sync::Arc;
        let dir =
            std::env::temp_dir().join(format!("pivotd-bridge-outcome-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let wav = dir.join("fault-can_not_be_completed_as_dialed.wav");
        let mut w = hound::WavWriter::create(&wav, spec).unwrap();
        for _ in 0..160 {
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let rt = Runtime::new(Arc::new(PromptLibrary::new(Some(dir.clone()))));

        let mut call = FakeCall::new();
        let unallocated = BridgeOutcome::from_sip_code(404, None);
        let kids = children(&[]);
        let v = verdict(&unallocated, &kids);
        let next = next(
            v,
            WhenUnmatched::DefaultResponse,
            &unallocated,
            &kids,
            &mut call,
            &rt,
        )
        .await
        .unwrap();
        assert_eq!(next, Next::Stop);
        assert_eq!(
            call.ops,
            [
                Op::EarlyMedia,
                Op::Play("fault-can_not_be_completed_as_dialed".into()),
                Op::Respond(404, Some("No route to destination".into()))
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_ringback_is_resolved_like_play_media_and_a_missing_one_is_none() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let mut state = FlowState::default();
        for ringback in ["tone_stream://%(1000,1000,1004)", "no-such-prompt"] {
            let request = BridgeRequest {
                ringback: Some(ringback.into()),
                ..BridgeRequest::to(vec![])
            };
            bridge(&request, &mut call, &rt, &mut state).await.unwrap();
        }
        assert_eq!(
            call.ringbacks,
            [Some("tone_stream://%(1000,1000,1004)".into()), None]
        );
    }

    #[tokio::test]
    async fn the_outcome_is_remembered_for_the_next_pivot_request() {
        let mut call = FakeCall::new();
        call.bridge_outcomes.push_back(answered());
        let mut state = FlowState::default();
        let request = BridgeRequest::to(vec![]);
        let outcome = bridge(&request, &mut call, &Runtime::for_tests(), &mut state)
            .await
            .unwrap();
        assert_eq!(state.last_bridge, Some(outcome));
    }
}
