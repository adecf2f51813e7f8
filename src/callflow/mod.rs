//! The callflow runtime: walks a node tree (`flow::Node`) on one call, module by module.
//!
//! The runtime drives a call only through [`CallControl`], so every module is testable with a
//! fake call and no sockets; the `call` layer implements the trait on a live SIP call.

pub mod check;
pub mod modules;
pub mod runtime;
pub mod state;
pub mod twiml_exec;

use std::sync::Arc;
use std::time::Duration;

use crate::flow::bridge::{BridgeOutcome, BridgeRequest};
use crate::flow::CallInfo;
use crate::media::prompt::Prompt;
use crate::store::CallEvent;

pub use runtime::{Next, Runtime};

/// When a call started and was answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallTiming {
    pub started: Option<std::time::SystemTime>,
    pub answered: Option<std::time::SystemTime>,
}

/// The call ended under the runtime (caller hung up, CANCEL, timeout): stop walking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("call ended")]
pub struct CallEnded;

/// The operations a callflow may perform on a call. Every method returns `Err(CallEnded)` as
/// soon as the call is gone, and the runtime then stops at once.
#[async_trait::async_trait]
pub trait CallControl: Send {
    fn info(&self) -> &CallInfo;
    fn is_answered(&self) -> bool;
    /// When the call started and was answered (for CDRs).
    fn timing(&self) -> CallTiming {
        CallTiming::default()
    }
    /// 200 OK with SDP; no-op if answered.
    async fn answer(&mut self) -> Result<(), CallEnded>;
    /// 183 Session Progress with SDP; no-op if already sent (or answered).
    async fn early_media(&mut self) -> Result<(), CallEnded>;
    /// Plays a prompt. A DTMF key in `terminators` stops it (barge-in) and is returned; every
    /// key pressed stays queued for [`CallControl::take_digits`] / [`CallControl::next_digit`].
    async fn play(
        &mut self,
        prompt: Arc<Prompt>,
        terminators: &[char],
    ) -> Result<Option<char>, CallEnded>;
    /// The DTMF keys received and not yet taken, oldest first.
    fn take_digits(&mut self) -> String;
    /// The next DTMF key, waiting up to `timeout` for it (`None` when none came).
    async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, CallEnded>;
    async fn sleep(&mut self, d: Duration) -> Result<(), CallEnded>;
    /// Final non-2xx to the INVITE; if the call was answered, a hangup instead.
    async fn respond(&mut self, code: u16, reason: Option<String>) -> Result<(), CallEnded>;
    /// BYE if answered, else 480.
    async fn hangup(&mut self) -> Result<(), CallEnded>;
    /// Rings the request's endpoints and, when one answers, bridges the caller to it until
    /// either side hangs up. Returns how it ended while the caller is still on the line; a
    /// caller who hangs up (or cancels while it rings) ends the run with `CallEnded`, and the
    /// other leg is cancelled or hung up.
    async fn bridge(
        &mut self,
        request: &BridgeRequest,
        ringback: Option<Arc<Prompt>>,
    ) -> Result<BridgeOutcome, CallEnded>;
    /// Sends `digits` as RFC 4733 events, each lasting `duration`: to the bridged leg while a
    /// bridge is up, else to the caller.
    async fn send_dtmf(&mut self, digits: &str, duration: Duration) -> Result<(), CallEnded>;
    /// Adds `event` to the call's event log (a non-blocking push; nothing without a log).
    fn record(&mut self, _event: CallEvent) {}
}

#[cfg(test)]
pub(crate) mod fake;
