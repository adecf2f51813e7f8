//! `hangup` (spec c.10, `callflows.hangup.json`): ends the call (BYE if answered, else 480)
//! and stops the flow. No data keys besides `skip_module`.

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::{CallControl, CallEnded};

pub async fn run(call: &mut dyn CallControl, _rt: &Runtime) -> Result<Next, CallEnded> {
    call.hangup().await?;
    Ok(Next::Stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};

    #[tokio::test]
    async fn hangs_up_and_stops() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        assert_eq!(run(&mut call, &rt).await, Ok(Next::Stop));
        assert_eq!(call.ops, [Op::Hangup]);
    }
}
