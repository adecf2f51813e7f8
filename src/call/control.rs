//! The [`CallControl`] implementation: what the callflow runtime asks of a live call
//! (answer, early media, play, collect digits, sleep, respond, hang up), each served while the
//! call keeps answering its dialog.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Call, Phase};
use crate::callflow::{CallControl, CallEnded, CallInfo, CallTiming};
use crate::media::prompt::Prompt;
use crate::media::rtp::PlayResult;

#[async_trait]
impl CallControl for Call {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    fn timing(&self) -> CallTiming {
        // Wall-clock times from the monotonic ones (CDRs want dates).
        let now_wall = std::time::SystemTime::now();
        let now = Instant::now();
        let wall = |t: Instant| now_wall.checked_sub(now.duration_since(t));
        CallTiming {
            started: wall(self.started),
            answered: self.answered_at.and_then(wall),
        }
    }

    async fn answer(&mut self) -> Result<(), CallEnded> {
        match self.phase {
            Phase::Answered => return Ok(()),
            Phase::Ended => return Err(CallEnded),
            Phase::Early => {}
        }
        self.respond_invite(200, None, true);
        self.phase = Phase::Answered;
        if !self.source_trusted {
            // Answered, the address proves itself by the ACK or its RTP: no more unproven
            // early audio meanwhile.
            self.rtp.end_unproven();
        }
        self.answered_at = Some(Instant::now());
        self.ctx.stats.answered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn early_media(&mut self) -> Result<(), CallEnded> {
        match self.phase {
            Phase::Ended => return Err(CallEnded),
            Phase::Answered => return Ok(()),
            Phase::Early => {}
        }
        if !self.early_media_sent {
            if self.negotiated.is_none() {
                // A late offer cannot carry early media reliably without 100rel: answer instead.
                return self.answer().await;
            }
            self.respond_invite(183, None, true);
            self.early_media_sent = true;
            if !self.source_trusted {
                // Early media has no ACK to prove the address: a few seconds unproven, then
                // silence unless the caller's RTP has arrived.
                self.rtp.allow_unproven_for(self.early_media_unproven);
            }
        }
        Ok(())
    }

    async fn play(
        &mut self,
        prompt: Arc<Prompt>,
        terminators: &[char],
    ) -> Result<Option<char>, CallEnded> {
        if self.phase == Phase::Ended {
            return Err(CallEnded);
        }
        // A late offer: our 200 carried the offer and the answer comes in the ACK. Until it
        // does there is neither an address nor a codec, and audio sent now would be lost:
        // the caller should hear the prompt from its start.
        while self.awaiting_answer.is_some()
            && self.phase == Phase::Answered
            && self.negotiated.is_none()
        {
            let arrived = self.answer_arrived.clone();
            self.serve(async move { arrived.notified().await }).await?;
        }
        // No amplification: an answered call sends RTP to an untrusted caller once it proved
        // it takes part (the ACK, or its RTP). Wait for that rather than lose the prompt's
        // start: the caller hears it whole.
        while self.phase == Phase::Answered && !self.source_trusted && !self.rtp.is_proven() {
            let rtp = self.rtp.clone();
            self.serve(async move { rtp.wait_proven().await }).await?;
        }
        let codec = self
            .negotiated
            .as_ref()
            .map(|n| n.codec)
            .unwrap_or(crate::media::codec::Codec::Pcmu);
        let payload = prompt.payload(codec).clone();
        let rtp = self.rtp.clone();
        self.playing = Some(prompt);
        self.stop_on = terminators.to_vec();
        self.stopped_by = None;
        let result = self.serve(async move { rtp.play(payload).await }).await;
        self.playing = None;
        self.stop_on.clear();
        match result {
            Ok(PlayResult::Finished) | Ok(PlayResult::Stopped) => {
                if self.phase == Phase::Ended {
                    Err(CallEnded)
                } else {
                    Ok(self.stopped_by.take())
                }
            }
            Err(e) => {
                self.rtp.stop_playing();
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
        match self.phase {
            Phase::Early => {
                let code = if (300..700).contains(&code) {
                    code
                } else {
                    480
                };
                self.respond_invite(code, reason.as_deref(), false);
                self.phase = Phase::Ended;
                Ok(())
            }
            Phase::Answered => self.hangup().await,
            Phase::Ended => Err(CallEnded),
        }
    }

    async fn hangup(&mut self) -> Result<(), CallEnded> {
        self.end_now(480, "Temporarily Unavailable");
        Ok(())
    }
}
