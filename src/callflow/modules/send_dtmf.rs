//! `send_dtmf` (Kazoo's `cf_send_dtmf.erl`): sends `digits` as DTMF, each lasting
//! `duration_ms` — to the bridged leg while a bridge is up, else to the caller (the call
//! layer decides) — then continues to `_`. Like Kazoo it does not answer the call first.

use std::time::Duration;

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::send_dtmf::SendDtmf;
use crate::logsafe::wire;
use crate::store::{trim_value, CallEvent};

pub async fn run(
    data: &SendDtmf,
    call: &mut dyn CallControl,
    _rt: &Runtime,
) -> Result<Next, CallEnded> {
    tracing::debug!(digits = %wire(&data.digits), duration_ms = data.duration_ms, "send_dtmf");
    call.record(CallEvent::Module {
        module: "send_dtmf".into(),
        summary: trim_value(&data.digits),
    });
    call.send_dtmf(
        &data.digits,
        Duration::from_millis(u64::from(data.duration_ms)),
    )
    .await?;
    Ok(Next::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};

    #[tokio::test]
    async fn sends_the_digits_then_continues() {
        let data = SendDtmf {
            digits: "123ABC#".into(),
            duration_ms: 2000,
        };
        let mut call = FakeCall::new();
        assert_eq!(
            run(&data, &mut call, &Runtime::for_tests()).await,
            Ok(Next::Default)
        );
        assert_eq!(
            call.ops,
            [Op::SendDtmf("123ABC#".into(), Duration::from_secs(2))]
        );
        // A caller who hangs up meanwhile ends the run.
        let mut call = FakeCall::ending_at(1);
        assert_eq!(
            run(&data, &mut call, &Runtime::for_tests()).await,
            Err(CallEnded)
        );
    }
}
