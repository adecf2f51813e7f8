//! Carrying out a TwiML document on a call (spec d, j.11, j.17). Verbs run in order; Gather,
//! Redirect and a Dial with `action` fetch the next document (with the TwiML field names),
//! which replaces the current one. A verb that fails is logged and skipped; at the end of the
//! document the call is hung up. A follow-up answered with Kazoo JSON hands the call back to
//! the callflow; a follow-up that fails hands it to the pivot node's `_` child, as a failed
//! first request does.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::callflow::modules::pivot::{ask, Failed, PivotCall};
use crate::callflow::modules::{record_played, Played};
use crate::callflow::runtime::Runtime;
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::pivot::{Method, Pivot, ReqFormat};
// Any key interrupts the prompts nested in a Gather.
use crate::flow::node::{Node, ALL_KEYS};
use crate::logsafe::wire;
use crate::media::prompt::Prompt;
use crate::pivot::fields;
use crate::pivot::kazoo::Answer;
use crate::pivot::twiml::{resolve_url, Dial, RejectReason, Verb};
use crate::store::{trim_value, CallEvent};

/// How a TwiML run ended.
pub enum TwimlEnd {
    /// The call was hung up or refused.
    Done,
    /// A follow-up answered with a Kazoo flow: it replaces the callflow.
    Flow(Box<Node>),
    /// A follow-up (Redirect, Gather or Dial action) failed: the pivot node's `_` child runs, as
    /// when its first request fails.
    Failed(Failed),
}

/// What to do after a verb.
enum Step {
    Next,
    Document(Vec<Verb>, Url),
    End(TwimlEnd),
}

pub async fn run(
    verbs: Vec<Verb>,
    base: Url,
    pivot: &Pivot,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<TwimlEnd, CallEnded> {
    let mut doc = verbs;
    let mut base = base;
    'document: loop {
        for verb in std::mem::take(&mut doc) {
            match run_verb(verb, &base, pivot, call, rt, state).await? {
                Step::Next => {}
                Step::Document(d, b) => {
                    doc = d;
                    base = b;
                    continue 'document;
                }
                Step::End(end) => return Ok(end),
            }
        }
        break;
    }
    // Spec j.11: at the end of the document the call is hung up.
    call.hangup().await?;
    Ok(TwimlEnd::Done)
}

async fn answer(call: &mut dyn CallControl) -> Result<(), CallEnded> {
    if !call.is_answered() {
        call.answer().await?;
    }
    Ok(())
}

/// Plays `times` times (0 = until the call ends or a key stops it).
async fn play_times(
    call: &mut dyn CallControl,
    prompt: Arc<Prompt>,
    times: u32,
    terminators: &[char],
    played: Played<'_>,
) -> Result<bool, CallEnded> {
    let times = if times == 0 { u32::MAX } else { times };
    for i in 0..times {
        let stopped = call.play(prompt.clone(), terminators).await?;
        if i == 0 {
            record_played(call, played, &prompt, stopped);
        }
        if stopped.is_some() {
            return Ok(true);
        }
        if prompt.duration().is_zero() {
            break;
        }
    }
    Ok(false)
}

/// A `<Say>`'s text and a `<Play>`'s URL, as the event log names what played.
fn say(text: &str) -> Played<'_> {
    Played {
        what: "tts",
        id: text,
    }
}

fn media(url: &str) -> Played<'_> {
    Played {
        what: "media",
        id: url,
    }
}

async fn say_prompt(rt: &Runtime, text: &str, voice: &str, language: &str) -> Option<Arc<Prompt>> {
    let Some(tts) = rt.tts.as_ref() else {
        tracing::warn!("TwiML Say skipped: no TTS engine");
        return None;
    };
    let voice = crate::pivot::twiml::voice::hook_voice(voice, |v| tts.has_voice(v));
    rt.speak(text, &voice, Some(language), "TwiML Say skipped")
        .await
}

async fn play_prompt(rt: &Runtime, base: &Url, url: &str) -> Option<Arc<Prompt>> {
    match resolve_url(base, url) {
        Ok(u) => rt.resolve_prompt(u.as_str()).await,
        Err(e) => {
            tracing::warn!(url = %wire(url), reason = %wire(&e.to_string()), "TwiML Play skipped");
            None
        }
    }
}

/// A Redirect's, a Gather action's or a Dial action's request: `reference` as written in the
/// document, to be resolved against `base`, the document's URL.
struct FollowUp<'a> {
    reference: &'a str,
    base: &'a Url,
    method: Method,
    /// Gather: the digits it collected.
    digits: Option<&'a str>,
}

/// Fetches the next document. A failure here is a failure of the pivot node, as its first
/// request's would be: the run ends and the node's `_` child runs
/// (`modules::pivot::take_underscore` states the rule).
async fn follow(
    f: FollowUp<'_>,
    pivot: &Pivot,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Step, CallEnded> {
    let asked = ask(
        PivotCall {
            url: f.reference,
            base: Some(f.base),
            method: f.method,
            req_format: ReqFormat::Twiml,
            body_format: pivot.req_body_format,
            timeout: Duration::from_millis(pivot.req_timeout_ms),
            twiml_digits: f.digits,
            debug: pivot.debug,
        },
        call,
        rt,
        state,
    )
    .await?;
    Ok(match asked {
        Ok((Answer::Twiml(verbs), base)) => Step::Document(verbs, base),
        Ok((Answer::Flow(flow), _)) => Step::End(TwimlEnd::Flow(flow)),
        Err(failed) => Step::End(TwimlEnd::Failed(failed)),
    })
}

async fn run_verb(
    verb: Verb,
    base: &Url,
    pivot: &Pivot,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Step, CallEnded> {
    match verb {
        Verb::Say {
            text,
            voice,
            language,
            loop_count,
        } => {
            answer(call).await?;
            if let Some(p) = say_prompt(rt, &text, &voice, &language).await {
                play_times(call, p, loop_count, &[], say(&text)).await?;
            }
        }
        Verb::Play { url, loop_count } => {
            answer(call).await?;
            if let Some(p) = play_prompt(rt, base, &url).await {
                play_times(call, p, loop_count, &[], media(&url)).await?;
            }
        }
        Verb::Pause { length_s } => {
            answer(call).await?;
            call.sleep(Duration::from_secs(u64::from(length_s))).await?;
        }
        Verb::Gather {
            action,
            method,
            num_digits,
            timeout_s,
            finish_on_key,
            nested,
        } => {
            answer(call).await?;
            // Keys from before the Gather are not part of it.
            call.take_digits();
            for n in nested {
                let stopped = match n {
                    Verb::Say {
                        text,
                        voice,
                        language,
                        loop_count,
                    } => match say_prompt(rt, &text, &voice, &language).await {
                        Some(p) => play_times(call, p, loop_count, &ALL_KEYS, say(&text)).await?,
                        None => false,
                    },
                    Verb::Play { url, loop_count } => match play_prompt(rt, base, &url).await {
                        Some(p) => play_times(call, p, loop_count, &ALL_KEYS, media(&url)).await?,
                        None => false,
                    },
                    Verb::Pause { length_s } => {
                        call.sleep(Duration::from_secs(u64::from(length_s))).await?;
                        false
                    }
                    other => {
                        tracing::warn!(verb = %wire(verb_name(&other)), "TwiML Gather: nested verb skipped");
                        false
                    }
                };
                // A key ends the prompts and starts the collection.
                if stopped {
                    break;
                }
            }
            let max = num_digits.map(|n| n as usize).unwrap_or(usize::MAX);
            let wait = Duration::from_secs(u64::from(timeout_s.max(1)));
            let mut digits = String::new();
            loop {
                match call.next_digit(wait).await? {
                    None => break,
                    Some(k) if Some(k) == finish_on_key => break,
                    Some(k) => {
                        digits.push(k);
                        if digits.len() >= max {
                            break;
                        }
                    }
                }
            }
            // Spec j.17: a Gather with no input goes on with the next verb.
            if digits.is_empty() {
                return Ok(Step::Next);
            }
            call.record(CallEvent::Digits {
                digits: trim_value(&digits),
                into: fields::twiml::DIGITS.to_string(),
            });
            // Twilio: without an action the same document is requested again (an empty
            // reference resolves to the document itself).
            let f = FollowUp {
                reference: action.as_deref().unwrap_or(""),
                base,
                method,
                digits: Some(&digits),
            };
            return follow(f, pivot, call, rt, state).await;
        }
        Verb::Redirect { url, method } => {
            let f = FollowUp {
                reference: &url,
                base,
                method,
                digits: None,
            };
            return follow(f, pivot, call, rt, state).await;
        }
        Verb::Hangup => {
            // Spec d: `<Hangup/>` answers, then hangs up (a BYE, status `completed`), as
            // Twilio, which answers before any TwiML runs.
            answer(call).await?;
            call.hangup().await?;
            return Ok(Step::End(TwimlEnd::Done));
        }
        Verb::Reject { reason } => {
            let (code, phrase) = match reason {
                RejectReason::Busy => (486, "Busy Here"),
                // Kazoo answers `rejected` with 503 (spec d); pivotd keeps that for compatibility.
                RejectReason::Rejected => (503, "Service Unavailable"),
            };
            call.respond(code, Some(phrase.to_string())).await?;
            return Ok(Step::End(TwimlEnd::Done));
        }
        Verb::Dial(dial) => return run_dial(dial, base, pivot, call, rt, state).await,
        Verb::Unknown(name) => {
            tracing::warn!(verb = %wire(&name), "TwiML verb not supported: skipped")
        }
        Verb::Unsupported { verb, reason } => {
            tracing::warn!(verb = %wire(&verb), reason = %wire(&reason), "TwiML verb not supported: skipped")
        }
        Verb::Invalid { verb, reason } => {
            tracing::warn!(verb = %wire(&verb), reason = %wire(&reason), "TwiML verb invalid: skipped")
        }
    }
    Ok(Step::Next)
}

/// `<Dial>`: answers (as Kazoo does, and as Twilio has before any TwiML runs), rings the
/// targets and bridges the caller to the first to answer. Its outcome is kept for the next
/// pivot request (`DialCallStatus`, …). With `action` that request is made now and its answer
/// replaces the document; without, the next verb runs, whatever the outcome. A caller who
/// hangs up during the bridge ends the run (`CallEnded`): no request follows.
async fn run_dial(
    dial: Dial,
    base: &Url,
    pivot: &Pivot,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Step, CallEnded> {
    for ignored in &dial.ignored {
        tracing::warn!(reason = %wire(&ignored.to_string()), "TwiML Dial: dialling without it");
    }
    answer(call).await?;
    let outcome = call.bridge(&dial.bridge_request(), None).await?;
    tracing::debug!(
        status = outcome.status.as_str(),
        cause = outcome.cause,
        sip_code = outcome.sip_code,
        "TwiML Dial ended"
    );
    state.last_bridge = Some(outcome);
    let Some(action) = dial.action else {
        return Ok(Step::Next);
    };
    let f = FollowUp {
        reference: &action,
        base,
        method: dial.method,
        digits: None,
    };
    follow(f, pivot, call, rt, state).await
}

/// A verb's element name for a log line (a nested verb's text and URLs stay out of it).
pub(crate) fn verb_name(verb: &Verb) -> &str {
    match verb {
        Verb::Say { .. } => "Say",
        Verb::Play { .. } => "Play",
        Verb::Gather { .. } => "Gather",
        Verb::Redirect { .. } => "Redirect",
        Verb::Pause { .. } => "Pause",
        Verb::Hangup => "Hangup",
        Verb::Reject { .. } => "Reject",
        Verb::Dial(_) => "Dial",
        Verb::Unknown(name) => name,
        Verb::Unsupported { verb, .. } | Verb::Invalid { verb, .. } => verb,
    }
}

#[cfg(test)]
mod tests;
