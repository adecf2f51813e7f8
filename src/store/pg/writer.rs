//! The writer's commit on PostgreSQL: one transaction per batch, each write in a savepoint
//! of its own, so that a write the database refuses is counted and skipped while the others
//! commit (as SQLite, where a failed statement leaves the transaction usable).

use std::sync::atomic::Ordering;

use deadpool_postgres::Transaction;

use super::listen::{notify, Change};
use super::{cdrs, debug, events, presence, registrations, unreachable, Pg};
use crate::store::writer::{Committed, Stats};
use crate::store::{StoreError, Write};

pub(in crate::store) fn commit(pg: &Pg, pending: &[Write], stats: &Stats) -> Committed {
    let n = pending.len() as u64;
    let result = pg.run(async |c| {
        let mut tx = c.transaction().await?;
        let mut ok = 0;
        for w in pending {
            let sp = tx.transaction().await?;
            match insert(&sp, w, &pg.node).await {
                Ok(()) => {
                    sp.commit().await?;
                    ok += 1;
                }
                Err(e) => {
                    let e = StoreError::from(e);
                    if unreachable(&e) {
                        return Err(e);
                    }
                    sp.rollback().await?;
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "store: write failed");
                }
            }
        }
        tx.commit().await?;
        Ok(ok)
    });
    match result {
        Ok(ok) => {
            stats.committed(ok);
            Committed::Done
        }
        Err(e) if unreachable(&e) => {
            tracing::warn!(error = %e, writes = n, "store: database unreachable, batch kept");
            Committed::Unreachable
        }
        Err(e) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(error = %e, writes = n, "store: commit failed");
            Committed::Done
        }
    }
}

async fn insert(tx: &Transaction<'_>, w: &Write, node: &str) -> Result<(), tokio_postgres::Error> {
    match w {
        Write::Registrations(d) => registrations::replace(tx, d, node).await,
        Write::ExpireRegistrations(before) => registrations::expire(tx, *before).await,
        Write::Debug(r) => debug::insert(tx, r).await,
        Write::CallEvent(e) => events::insert(tx, e).await,
        Write::Cdr(c) => cdrs::insert(tx, c).await,
        Write::Subscription(s) => presence::upsert_subscription(tx, s).await,
        Write::EndSubscription { call_id, local_tag } => {
            presence::delete_subscription(tx, call_id, local_tag).await
        }
        Write::ExpireSubscriptions(before) => presence::expire_subscriptions(tx, *before).await,
        Write::PresenceState(p) => presence::upsert_state(tx, p).await,
        Write::ClearPresenceState(id) => presence::delete_state(tx, id).await,
        Write::Announce(body) => {
            let change = Change::Presence {
                node: node.to_owned(),
                body: body.clone(),
            };
            notify(&**tx, node, &change).await
        }
    }
}
