//! The [`CallControl`] implementation: what the callflow runtime asks of a live call
//! (answer, early media, play, collect digits, sleep, respond, hang up). Each request goes to
//! the caller's leg, and whatever waits is served by [`Call::serve`] so the dialog is
//! answered meanwhile.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Call, Phase};
use crate::callflow::{CallControl, CallEnded, CallTiming};
use crate::flow::bridge::{BridgeOutcome, BridgeRequest, Target};
use crate::flow::CallInfo;
use crate::media::prompt::Prompt;
use crate::media::rtp::PlayResult;
use crate::store::{trim_value, CallEvent};

/// What a bridge rang, for the event log: `device d1, user u2` (wire values trimmed).
fn bridge_targets(request: &BridgeRequest) -> String {
    let names: Vec<String> = request
        .endpoints
        .iter()
        .map(|e| match &e.target {
            Target::Device { id } => format!("device {id}"),
            Target::User { id } => format!("user {id}"),
            Target::Number { number, .. } => format!("number {number}"),
            Target::Sip { uri } => format!("sip {uri}"),
        })
        .collect();
    if names.is_empty() {
        "nothing".to_string()
    } else {
        trim_value(&names.join(", "))
    }
}

#[async_trait]
impl CallControl for Call {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    fn is_answered(&self) -> bool {
        self.leg.phase() == Phase::Answered
    }

    fn timing(&self) -> CallTiming {
        // Wall-clock times from the monotonic ones (CDRs want dates).
        let now_wall = std::time::SystemTime::now();
        let now = Instant::now();
        let wall = |t: Instant| now_wall.checked_sub(now.duration_since(t));
        CallTiming {
            started: wall(self.started),
            answered: self.leg.answered_at().and_then(wall),
        }
    }

    async fn answer(&mut self) -> Result<(), CallEnded> {
        match self.leg.phase() {
            Phase::Answered => return Ok(()),
            Phase::Ended => return Err(CallEnded),
            Phase::Early => {}
        }
        self.leg.answer();
        self.ctx.stats.answered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn early_media(&mut self) -> Result<(), CallEnded> {
        match self.leg.phase() {
            Phase::Ended => return Err(CallEnded),
            Phase::Answered => return Ok(()),
            Phase::Early => {}
        }
        if !self.leg.open_early_media() {
            // A late offer cannot carry early media reliably without 100rel: answer instead.
            return self.answer().await;
        }
        Ok(())
    }

    async fn play(
        &mut self,
        prompt: Arc<Prompt>,
        terminators: &[char],
    ) -> Result<Option<char>, CallEnded> {
        if self.leg.phase() == Phase::Ended {
            return Err(CallEnded);
        }
        // A late offer's answer comes in the ACK: the caller should hear the prompt from its
        // start, not from when the ACK arrived.
        while let Some(arrived) = self.leg.late_answer_pending() {
            self.serve(async move { arrived.notified().await }).await?;
        }
        // No amplification: wait for an untrusted caller to prove itself rather than lose
        // the prompt's start: the caller hears it whole.
        while let Some(rtp) = self.leg.unproven_media() {
            self.serve(async move { rtp.wait_proven().await }).await?;
        }
        let (rtp, payload) = self.leg.start_prompt(prompt);
        // Sent now, before `serve` can handle a re-INVITE: its codec switch must find the play.
        let playing = rtp.play(payload);
        self.stop_on = terminators.to_vec();
        self.stopped_by = None;
        let result = self.serve(playing).await;
        self.leg.prompt_done();
        self.stop_on.clear();
        match result {
            Ok(PlayResult::Finished) | Ok(PlayResult::Stopped) => {
                if self.leg.phase() == Phase::Ended {
                    Err(CallEnded)
                } else {
                    Ok(self.stopped_by.take())
                }
            }
            Err(e) => {
                self.leg.stop_playing();
                Err(e)
            }
        }
    }

    async fn sleep(&mut self, d: Duration) -> Result<(), CallEnded> {
        self.serve(tokio::time::sleep(d)).await
    }

    fn take_digits(&mut self) -> String {
        self.digits.drain(..).collect()
    }

    async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, CallEnded> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.digits.pop_front() {
                return Ok(Some(d));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let arrived = self.digit_arrived.clone();
            // Either a key arrived (loop and take it) or the time is up (loop and return None).
            let _elapsed = self
                .serve(async move { tokio::time::timeout(left, arrived.notified()).await })
                .await?;
        }
    }

    async fn respond(&mut self, code: u16, reason: Option<String>) -> Result<(), CallEnded> {
        match self.leg.phase() {
            Phase::Early => {
                let code = if (300..700).contains(&code) {
                    code
                } else {
                    480
                };
                self.leg.refuse(code, reason.as_deref());
                Ok(())
            }
            Phase::Answered => self.hangup().await,
            Phase::Ended => Err(CallEnded),
        }
    }

    async fn hangup(&mut self) -> Result<(), CallEnded> {
        self.leg
            .end_now(480, "Temporarily Unavailable", "flow ended");
        Ok(())
    }

    async fn bridge(
        &mut self,
        request: &BridgeRequest,
        ringback: Option<Arc<Prompt>>,
    ) -> Result<BridgeOutcome, CallEnded> {
        let outcome = self.run_bridge(request, ringback).await;
        let target = bridge_targets(request);
        let outcome_text = match &outcome {
            Ok(o) if o.duration > Duration::ZERO => format!("answered, {} s", o.duration.as_secs()),
            Ok(o) => match o.sip_code {
                Some(code) => format!("{} ({code})", o.cause),
                None => o.cause.to_string(),
            },
            Err(CallEnded) => "the caller hung up".to_string(),
        };
        self.leg.log.record(CallEvent::Bridge {
            target,
            outcome: outcome_text,
        });
        outcome
    }

    fn record(&mut self, event: CallEvent) {
        self.leg.log.record(event);
    }

    async fn send_dtmf(&mut self, digits: &str, duration: Duration) -> Result<(), CallEnded> {
        self.send_digits(digits, duration).await
    }
}
