//! `manual_presence` (spec c.7, Kazoo's `cf_manual_presence.erl`): answers the call, as
//! Kazoo does, sets the presence id's lamp — every phone watching it gets a NOTIFY, and the
//! state stays until changed — then continues to `_`. An id presence refuses (not a presence
//! id, another account's realm) is logged and the flow goes on, as a prompt that cannot be
//! found; a bad `status` never gets here (the flow fails validation).

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::manual_presence::ManualPresence;
use crate::logsafe::wire;
use crate::store::{trim_value, CallEvent};

pub async fn run(
    data: &ManualPresence,
    call: &mut dyn CallControl,
    rt: &Runtime,
) -> Result<Next, CallEnded> {
    call.answer().await?;
    let Some(presence) = rt.presence.as_ref() else {
        tracing::warn!("manual_presence: no presence service, lamp not set");
        return Ok(Next::Default);
    };
    let summary = match presence.set_manual(&call.info().account_id, &data.presence_id, data.status)
    {
        Ok(id) => {
            tracing::info!(
                presence_id = %wire(&id.to_string()),
                status = data.status.as_str(),
                "manual_presence"
            );
            format!("{} {}", trim_value(&id.to_string()), data.status.as_str())
        }
        Err(e) => {
            tracing::warn!(
                presence_id = %wire(&data.presence_id),
                reason = %wire(&e.to_string()),
                "manual_presence: lamp not set"
            );
            format!(
                "{} not set: {}",
                trim_value(&data.presence_id),
                trim_value(&e.to_string())
            )
        }
    };
    call.record(CallEvent::Module {
        module: "manual_presence".into(),
        summary,
    });
    Ok(Next::Default)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::modules::manual_presence::Status;
    use crate::presence::{LampError, PresenceControl, PresenceId};

    /// Records what the module asks, and refuses ids with a space as presence would.
    #[derive(Default)]
    struct Lamps(Mutex<Vec<(String, String, Status)>>);

    impl PresenceControl for Lamps {
        fn set_manual(
            &self,
            account_id: &str,
            presence_id: &str,
            status: Status,
        ) -> Result<PresenceId, LampError> {
            let id = PresenceId::parse(presence_id, "pbx.test")?;
            self.0
                .lock()
                .unwrap()
                .push((account_id.into(), presence_id.into(), status));
            Ok(id)
        }
    }

    fn runtime(lamps: &Arc<Lamps>) -> Runtime {
        let mut rt = Runtime::for_tests();
        rt.presence = Some(lamps.clone());
        rt
    }

    #[tokio::test]
    async fn answers_sets_the_lamp_then_continues() {
        let lamps = Arc::new(Lamps::default());
        let mut call = FakeCall::new();
        call.info.account_id = "acc".into();
        let data = ManualPresence {
            presence_id: "username".into(),
            status: Status::Busy,
        };
        assert_eq!(
            run(&data, &mut call, &runtime(&lamps)).await,
            Ok(Next::Default)
        );
        assert_eq!(call.ops, [Op::Answer]);
        assert_eq!(
            *lamps.0.lock().unwrap(),
            [("acc".to_string(), "username".to_string(), Status::Busy)]
        );
    }

    #[tokio::test]
    async fn a_refused_id_or_no_presence_still_continues_and_a_hangup_stops() {
        let lamps = Arc::new(Lamps::default());
        let data = ManualPresence {
            presence_id: "not an id".into(),
            status: Status::Ringing,
        };
        let mut call = FakeCall::new();
        assert_eq!(
            run(&data, &mut call, &runtime(&lamps)).await,
            Ok(Next::Default)
        );
        assert!(lamps.0.lock().unwrap().is_empty());
        let mut call = FakeCall::new();
        assert_eq!(
            run(&data, &mut call, &Runtime::for_tests()).await,
            Ok(Next::Default)
        );
        // The caller gone before the answer: nothing is set.
        let mut call = FakeCall::ending_at(1);
        let data = ManualPresence {
            presence_id: "2001".into(),
            status: Status::Busy,
        };
        assert_eq!(
            run(&data, &mut call, &runtime(&lamps)).await,
            Err(CallEnded)
        );
        assert!(lamps.0.lock().unwrap().is_empty());
    }
}
