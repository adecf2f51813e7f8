//! What each callflow module does, one file each: `pub async fn run(data, call, rt, …) ->
//! Result<Next, CallEnded>`. The data each one runs with (decoded and validated from the node's
//! `data`) is in `flow::modules`, beside the node tree.

pub mod bridge_outcome;
pub mod collect_dtmf;
pub mod device;
pub mod hangup;
pub mod manual_presence;
pub mod pivot;
pub mod play;
pub mod resources;
pub mod response;
pub mod ring_group;
pub mod say;
pub mod send_dtmf;
pub mod sleep;
pub mod tts;
pub mod user;

#[cfg(test)]
mod bridging_examples;

use super::runtime::{Next, Runtime};
use super::state::FlowState;
use super::{CallControl, CallEnded};
use crate::flow::{ModuleData, DEFAULT_COLLECTION};
use crate::store::{trim_value, CallEvent};

/// Runs one node's module on the call. `children` are the node's: the bridging modules choose
/// among them by the bridge's outcome (`bridge_outcome`).
///
/// Each module's future is boxed: inlined, every call's task would hold the largest of them
/// (a pivot request, a bridge) for its whole life, whichever module runs; boxed, it holds the
/// one running, for as long as it runs (one allocation per node, bench/README.md "Memory per
/// call").
pub async fn run(
    module: &ModuleData,
    children: &bridge_outcome::Children,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    match module {
        ModuleData::Play(d) => Box::pin(play::run(d, call, rt, state)).await,
        ModuleData::Sleep(d) => Box::pin(sleep::run(d, call, rt)).await,
        ModuleData::Response(d) => Box::pin(response::run(d, call, rt)).await,
        ModuleData::Hangup => Box::pin(hangup::run(call, rt)).await,
        ModuleData::CollectDtmf(d) => Box::pin(collect_dtmf::run(d, call, rt, state)).await,
        ModuleData::Pivot(d) => Box::pin(pivot::run(d, call, rt, state)).await,
        ModuleData::Tts(d) => Box::pin(tts::run(d, call, rt, state)).await,
        ModuleData::Say(d) => Box::pin(say::run(d, call, rt, state)).await,
        ModuleData::Device(d) => Box::pin(device::run(d, children, call, rt, state)).await,
        ModuleData::User(d) => Box::pin(user::run(d, children, call, rt, state)).await,
        ModuleData::RingGroup(d) => Box::pin(ring_group::run(d, children, call, rt, state)).await,
        ModuleData::Resources(d) => Box::pin(resources::run(d, children, call, rt, state)).await,
        ModuleData::SendDtmf(d) => Box::pin(send_dtmf::run(d, call, rt)).await,
        ModuleData::ManualPresence(d) => Box::pin(manual_presence::run(d, call, rt)).await,
    }
}

/// What a prompt played is, for the call's event log: `what` is `media` (`id` a prompt id,
/// URL or tone), `tts` or `say` (`id` the text or the prompt said).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Played<'a> {
    pub what: &'static str,
    pub id: &'a str,
}

/// Records one prompt played (its length, the key that stopped it) in the event log.
pub(crate) fn record_played(
    call: &mut dyn CallControl,
    played: Played<'_>,
    prompt: &crate::media::prompt::Prompt,
    stopped: Option<char>,
) {
    call.record(CallEvent::Play {
        what: played.what.to_string(),
        id: trim_value(played.id),
        ms: u64::try_from(prompt.duration().as_millis()).unwrap_or(u64::MAX),
        stopped_by: stopped.map(String::from),
    });
}

/// Plays a prompt `times` times (or until a key in `terminators` stops it); every key pressed
/// meanwhile goes to the `default` collection (spec a.6). Returns the key that stopped it.
/// Recorded once in the event log, not per loop.
pub(crate) async fn play_collecting(
    call: &mut dyn CallControl,
    prompt: &std::sync::Arc<crate::media::prompt::Prompt>,
    times: u32,
    terminators: &[char],
    state: &mut FlowState,
    played: Played<'_>,
) -> Result<Option<char>, CallEnded> {
    let mut stopped = None;
    for i in 0..times {
        stopped = call.play(prompt.clone(), terminators).await?;
        if i == 0 {
            record_played(call, played, prompt, stopped);
        }
        state
            .collections
            .append(DEFAULT_COLLECTION, &call.take_digits());
        // A prompt of no length would spin here without ever yielding to the call.
        if stopped.is_some() || prompt.duration().is_zero() {
            return Ok(stopped);
        }
    }
    Ok(stopped)
}
