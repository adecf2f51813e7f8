//! `sleep` (spec c.9, `callflows.sleep.json`): waits `duration` `unit`s, capped at 24 h; does
//! not answer. A hangup during the sleep stops the flow; otherwise `_`.

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::sleep::Sleep;
use crate::store::CallEvent;

pub async fn run(
    data: &Sleep,
    call: &mut dyn CallControl,
    _rt: &Runtime,
) -> Result<Next, CallEnded> {
    let wait = data.wait();
    call.record(CallEvent::Module {
        module: "sleep".into(),
        summary: format!("{:.1} s", wait.as_secs_f64()),
    });
    call.sleep(wait).await?;
    Ok(Next::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::modules::sleep::Unit;
    use std::time::Duration;

    #[tokio::test]
    async fn sleeps_without_answering() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let s = Sleep {
            duration: 1500,
            unit: Unit::Ms,
        };
        assert_eq!(run(&s, &mut call, &rt).await, Ok(Next::Default));
        assert_eq!(call.ops, [Op::Sleep(Duration::from_millis(1500))]);
        assert_eq!(
            call.events,
            [CallEvent::Module {
                module: "sleep".into(),
                summary: "1.5 s".into()
            }]
        );
        assert!(!call.answered);
    }
}
