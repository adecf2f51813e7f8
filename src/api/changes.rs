//! Following the API changes of every node sharing a PostgreSQL store (issue 13): the store
//! hears them through `LISTEN` (`store/pg/listen.rs`) and this task reloads what the call
//! path reads from memory, the account's routing table, its device directory or a device's
//! bindings, so that a callflow or device created, or a REGISTER taken, by another node
//! routes the next call here. A resync (the listener reconnected, or this task fell behind)
//! reloads everything.

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::{blocking, callflows, devices, Shared};
use crate::store::Change;

/// Starts the task; nothing to follow on SQLite (one node owns the file).
pub(super) fn follow(st: Shared, mut stop: watch::Receiver<()>) {
    let Some(mut rx) = st.parts.store.subscribe_changes() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                c = rx.recv() => c,
                r = stop.changed() => {
                    // Err once the ServerHandle (the sender) is gone.
                    if r.is_err() {
                        break;
                    }
                    continue;
                }
            };
            match change {
                Ok(Change::Callflows(account)) => callflows::follow(&st, &account).await,
                Ok(Change::Directory(account)) => devices::follow(&st, &account).await,
                Ok(Change::Registrations {
                    account_id,
                    device_id,
                }) => {
                    let r = st.parts.registrar.clone();
                    let reloaded = blocking(move || r.reload_device(&account_id, &device_id));
                    if let Err(e) = reloaded.await {
                        tracing::warn!("cannot reload a device's registrations: {e:?}");
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                    let r = st.parts.registrar.clone();
                    if let Err(e) = blocking(move || r.reload_all()).await {
                        tracing::warn!("cannot reload the registrations: {e:?}");
                    }
                    let accounts: Vec<String> = st
                        .parts
                        .cfg
                        .get()
                        .accounts
                        .iter()
                        .map(|a| a.id.clone())
                        .collect();
                    for account in accounts {
                        callflows::follow(&st, &account).await;
                        devices::follow(&st, &account).await;
                    }
                }
                // The presence task follows these (`Store::subscribe_presence`); they never
                // come on this channel.
                Ok(Change::Presence { .. }) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}
