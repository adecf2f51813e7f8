//! Changes between nodes (issue 13): an API write on PostgreSQL notifies the channel
//! `pivotd_changes` in its transaction (`NOTIFY` is sent on commit), and each node listens on
//! a connection of its own and hands what it hears to [`Store::subscribe_changes`]
//! receivers, which reload their caches (routing table, device directory). No polling: a
//! change reaches every node as soon as it is committed.
//!
//! [`Store::subscribe_changes`]: crate::store::Store::subscribe_changes

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, GenericClient, NoTls};

/// The channel the nodes notify and listen on.
const CHANNEL: &str = "pivotd_changes";

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// What another node (or this one) changed through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The account's API callflows.
    Callflows(String),
    /// The account's API devices or users (users give their devices caller IDs).
    Directory(String),
    /// A device's bindings, after a REGISTER (or an expiry, a deletion) on another node.
    /// A node does not hear its own: its memory is ahead of what it has committed.
    Registrations {
        account_id: String,
        device_id: String,
    },
    /// What another node's presence lamps show (issue 13): `body` is the presence layer's
    /// own message (`presence/state.rs` reads it; another node's text, so hostile input),
    /// `node` the name of the node that sent it. A node does not hear its own. Handed out by
    /// [`Store::subscribe_presence`](crate::store::Store::subscribe_presence) only.
    Presence { node: String, body: String },
    /// The listener (re)connected: changes made meanwhile were not heard, reload everything.
    Resync,
}

impl Change {
    /// `kind:origin:…` (ids are 32 hex digits, no `:`; a device id comes last, whole).
    fn payload(&self, origin: &str) -> String {
        match self {
            Change::Callflows(a) => format!("callflows:{origin}:{a}"),
            Change::Directory(a) => format!("directory:{origin}:{a}"),
            Change::Registrations {
                account_id,
                device_id,
            } => format!("registrations:{origin}:{account_id}:{device_id}"),
            Change::Presence { body, .. } => format!("presence:{origin}:{body}"),
            Change::Resync => format!("resync:{origin}"),
        }
    }

    /// The change and the node that announced it.
    fn parse(payload: &str) -> Option<(&str, Change)> {
        let (kind, rest) = payload.split_once(':')?;
        let (origin, rest) = rest.split_once(':')?;
        let change = match kind {
            "callflows" => Change::Callflows(rest.to_owned()),
            "directory" => Change::Directory(rest.to_owned()),
            "registrations" => {
                let (account_id, device_id) = rest.split_once(':')?;
                Change::Registrations {
                    account_id: account_id.to_owned(),
                    device_id: device_id.to_owned(),
                }
            }
            "presence" => Change::Presence {
                node: origin.to_owned(),
                body: rest.to_owned(),
            },
            _ => return None,
        };
        Some((origin, change))
    }
}

/// Tells every node (on commit, when `c` is a transaction) that `change` happened.
pub(super) async fn notify(
    c: &impl GenericClient,
    node: &str,
    change: &Change,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &change.payload(node)],
    )
    .await?;
    Ok(())
}

/// Where the listener hands what it hears: presence messages have a channel of their own,
/// for they come in bursts (every lit lamp of a node, periodically) that would make the
/// API's follower lag, which it takes as a full reload.
pub(super) struct Outlets {
    pub(super) changes: broadcast::Sender<Change>,
    pub(super) presence: broadcast::Sender<Change>,
}

impl Outlets {
    fn send(&self, c: Change) {
        // No receiver (yet) is no error: a node without an API or presence task.
        match c {
            Change::Presence { .. } => {
                let _ = self.presence.send(c);
            }
            Change::Resync => {
                let _ = self.presence.send(Change::Resync);
                let _ = self.changes.send(Change::Resync);
            }
            c => {
                let _ = self.changes.send(c);
            }
        }
    }
}

/// Listens for ever (until the store's runtime stops), connecting again when the
/// connection is lost. `node` is this store's name in the payloads.
pub(super) async fn listen(cfg: tokio_postgres::Config, node: String, out: Outlets) {
    loop {
        match cfg.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                // The connection does its I/O when polled: this task polls it and passes the
                // notifications on.
                let driver = tokio::spawn(async move {
                    while let Some(Ok(m)) = poll_fn(|cx| conn.poll_message(cx)).await {
                        if let AsyncMessage::Notification(n) = m {
                            if tx.send(n.payload().to_owned()).is_err() {
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        out.send(Change::Resync);
                        while let Some(p) = rx.recv().await {
                            match Change::parse(&p) {
                                Some((
                                    origin,
                                    Change::Registrations { .. } | Change::Presence { .. },
                                )) if origin == node => {}
                                Some((_, c)) => out.send(c),
                                None => {}
                            }
                        }
                        tracing::warn!("store: lost the connection listening for changes");
                    }
                    Err(e) => tracing::warn!(error = %e, "store: cannot LISTEN for changes"),
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: cannot connect to listen for changes")
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back() {
        for c in [
            Change::Callflows("acc".into()),
            Change::Directory("acc".into()),
            Change::Registrations {
                account_id: "acc".into(),
                device_id: "dev:with:colons".into(),
            },
            Change::Presence {
                node: "n1".into(),
                body: r#"{"v":1,"items":[{"id":"a:b@x"}]}"#.into(),
            },
        ] {
            assert_eq!(Change::parse(&c.payload("n1")), Some(("n1", c)));
        }
        assert_eq!(Change::parse("resync:n1"), None);
        assert_eq!(Change::parse("other:n1:x"), None);
        assert_eq!(Change::parse("callflows"), None);
    }
}
