//! A fake [`CallControl`] for tests: records each operation, and can be told to end the call
//! at the Nth operation (that operation and every later one return `CallEnded`).

use std::sync::Arc;
use std::time::Duration;

use super::{CallControl, CallEnded};
use crate::flow::bridge::{BridgeOutcome, BridgeRequest};
use crate::flow::CallInfo;
use crate::media::prompt::Prompt;
use crate::store::CallEvent;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Answer,
    EarlyMedia,
    Play(String),
    Sleep(Duration),
    Respond(u16, Option<String>),
    Hangup,
    /// A bridge to these endpoints (the whole request).
    Bridge(BridgeRequest),
    SendDtmf(String, Duration),
}

pub struct FakeCall {
    pub info: CallInfo,
    pub answered: bool,
    pub ops: Vec<Op>,
    /// 1-based index of the operation at which the caller hangs up.
    pub end_at: Option<usize>,
    /// DTMF the caller "presses": handed out by next_digit/take_digits; a play stops on a
    /// queued terminator.
    pub digits: std::collections::VecDeque<char>,
    /// How the bridges this call is asked for end, in order; when none is left a bridge fails
    /// with `NORMAL_TEMPORARY_FAILURE`.
    pub bridge_outcomes: std::collections::VecDeque<BridgeOutcome>,
    /// The name of the ringback prompt each bridge was given, in order.
    pub ringbacks: Vec<Option<String>>,
    /// What the modules recorded in the call's event log, in order.
    pub events: Vec<CallEvent>,
}

impl FakeCall {
    pub fn new() -> FakeCall {
        FakeCall {
            info: CallInfo::default(),
            answered: false,
            ops: Vec::new(),
            end_at: None,
            digits: Default::default(),
            bridge_outcomes: Default::default(),
            ringbacks: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn ending_at(n: usize) -> FakeCall {
        FakeCall {
            end_at: Some(n),
            ..FakeCall::new()
        }
    }

    fn op(&mut self, op: Op) -> Result<(), CallEnded> {
        self.ops.push(op);
        match self.end_at {
            Some(n) if self.ops.len() >= n => Err(CallEnded),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl CallControl for FakeCall {
    fn info(&self) -> &CallInfo {
        &self.info
    }
    fn is_answered(&self) -> bool {
        self.answered
    }
    async fn answer(&mut self) -> Result<(), CallEnded> {
        self.op(Op::Answer)?;
        self.answered = true;
        Ok(())
    }
    async fn early_media(&mut self) -> Result<(), CallEnded> {
        self.op(Op::EarlyMedia)
    }
    async fn play(
        &mut self,
        prompt: Arc<Prompt>,
        terminators: &[char],
    ) -> Result<Option<char>, CallEnded> {
        // The library may name a prompt with or without its extension; tests use the stem.
        let name = prompt.name.as_str();
        let stem = name
            .strip_suffix(".wav")
            .or_else(|| name.strip_suffix(".mp3"))
            .unwrap_or(name);
        self.op(Op::Play(stem.to_string()))?;
        Ok(self
            .digits
            .iter()
            .copied()
            .find(|d| terminators.contains(d)))
    }
    fn take_digits(&mut self) -> String {
        self.digits.drain(..).collect()
    }
    async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, CallEnded> {
        match self.digits.pop_front() {
            Some(d) => Ok(Some(d)),
            None => {
                self.op(Op::Sleep(timeout))?;
                Ok(None)
            }
        }
    }
    async fn sleep(&mut self, d: Duration) -> Result<(), CallEnded> {
        self.op(Op::Sleep(d))
    }
    async fn respond(&mut self, code: u16, reason: Option<String>) -> Result<(), CallEnded> {
        self.op(Op::Respond(code, reason))
    }
    async fn hangup(&mut self) -> Result<(), CallEnded> {
        self.op(Op::Hangup)
    }
    async fn bridge(
        &mut self,
        request: &BridgeRequest,
        ringback: Option<Arc<Prompt>>,
    ) -> Result<BridgeOutcome, CallEnded> {
        self.ringbacks.push(ringback.map(|p| p.name.clone()));
        self.op(Op::Bridge(request.clone()))?;
        let outcome = self
            .bridge_outcomes
            .pop_front()
            .unwrap_or_else(|| BridgeOutcome::failed("NORMAL_TEMPORARY_FAILURE"));
        if outcome.answered() {
            self.answered = true;
        }
        Ok(outcome)
    }
    async fn send_dtmf(&mut self, digits: &str, duration: Duration) -> Result<(), CallEnded> {
        self.op(Op::SendDtmf(digits.to_string(), duration))
    }
    fn record(&mut self, event: CallEvent) {
        self.events.push(event);
    }
}
