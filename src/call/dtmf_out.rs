//! `send_dtmf`: RFC 4733 events to the caller.

use std::time::Duration;

use super::{Call, Phase};
use crate::callflow::CallEnded;

impl Call {
    pub(super) async fn send_digits(
        &mut self,
        digits: &str,
        duration: Duration,
    ) -> Result<(), CallEnded> {
        if self.leg.phase() == Phase::Ended {
            return Err(CallEnded);
        }
        let Some(event_pt) = self.leg.format().and_then(|f| f.event_pt) else {
            tracing::info!("send_dtmf: the caller did not negotiate telephone-event; nothing sent");
            return Ok(());
        };
        let rtp = self.leg.rtp().clone();
        let digits = digits.to_string();
        let sending = async move { rtp.send_digits(&digits, duration, event_pt).await };
        match self.serve(sending).await? {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("send_dtmf: {e}");
                Ok(())
            }
        }
    }
}
