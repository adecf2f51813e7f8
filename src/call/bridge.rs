//! The bridge: a second, outbound leg beside the caller's (placeholder while it is built).

use std::time::Duration;

use super::Call;
use crate::callflow::CallEnded;
use crate::flow::bridge::{BridgeOutcome, BridgeRequest};

impl Call {
    pub(super) async fn run_bridge(
        &mut self,
        _request: &BridgeRequest,
    ) -> Result<BridgeOutcome, CallEnded> {
        Ok(BridgeOutcome::failed("NORMAL_TEMPORARY_FAILURE"))
    }

    pub(super) async fn send_digits(
        &mut self,
        _digits: &str,
        _duration: Duration,
    ) -> Result<(), CallEnded> {
        Ok(())
    }
}
