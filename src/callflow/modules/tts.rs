//! `tts` (spec c.3 and j.12, `callflows.tts.json`): speaks `text` through the TTS hook, in
//! `voice` (default `female`) and `language`, answering first. Keys in `terminators` (default
//! every key) stop it and, like any key pressed meanwhile, go to the `default` collection. A
//! missing, slow or failing hook is logged and the flow goes on with `_`.

use crate::callflow::modules::play_collecting;
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::tts::Tts;

pub async fn run(
    data: &Tts,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    if rt.tts.is_none() {
        tracing::warn!("tts: no TTS hook configured");
        return Ok(Next::Default);
    }
    if !call.is_answered() {
        call.answer().await?;
    }
    let language = data.language.as_deref();
    let failed = "tts failed: going on with _";
    let Some(prompt) = rt.speak(&data.text, &data.voice, language, failed).await else {
        return Ok(Next::Default);
    };
    let times = if data.endless_playback { u32::MAX } else { 1 };
    let played = super::Played {
        what: "tts",
        id: &data.text,
    };
    play_collecting(call, &prompt, times, &data.terminators, state, played).await?;
    Ok(Next::Default)
}
