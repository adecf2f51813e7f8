//! Presence subscriptions and lamps on PostgreSQL (see `store/presence.rs`).

use deadpool_postgres::Transaction;

use super::Pg;
use crate::store::{StoreError, StoredPresence, StoredSubscription};

pub(super) async fn upsert_subscription(
    tx: &Transaction<'_>,
    s: &StoredSubscription,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO presence_subscriptions (call_id, local_tag, account_id, device_id,
                presence_id, package, expires_at, state, updated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (call_id, local_tag) DO UPDATE SET account_id = EXCLUDED.account_id,
                device_id = EXCLUDED.device_id, presence_id = EXCLUDED.presence_id,
                package = EXCLUDED.package, expires_at = EXCLUDED.expires_at,
                state = EXCLUDED.state, updated = EXCLUDED.updated",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &s.call_id,
            &s.local_tag,
            &s.account_id,
            &s.device_id,
            &s.presence_id,
            &s.package,
            &(s.expires_at as i64),
            &s.state,
            &(s.updated as i64),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_subscription(
    tx: &Transaction<'_>,
    call_id: &str,
    local_tag: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM presence_subscriptions WHERE call_id = $1 AND local_tag = $2",
        &[&call_id, &local_tag],
    )
    .await?;
    Ok(())
}

pub(super) async fn expire_subscriptions(
    tx: &Transaction<'_>,
    before: u64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM presence_subscriptions WHERE expires_at <= $1",
        &[&(before as i64)],
    )
    .await?;
    Ok(())
}

pub(super) async fn upsert_state(
    tx: &Transaction<'_>,
    p: &StoredPresence,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO presence_states (presence_id, status, updated) VALUES ($1, $2, $3)
         ON CONFLICT (presence_id) DO UPDATE SET status = EXCLUDED.status,
            updated = EXCLUDED.updated",
        &[&p.presence_id, &p.status, &(p.updated as i64)],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_state(
    tx: &Transaction<'_>,
    presence_id: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM presence_states WHERE presence_id = $1",
        &[&presence_id],
    )
    .await?;
    Ok(())
}

impl Pg {
    pub(in crate::store) fn subscriptions(
        &self,
        now: u64,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT call_id, local_tag, account_id, device_id, presence_id, package,
                            expires_at, state, updated
                     FROM presence_subscriptions WHERE expires_at > $1
                     ORDER BY call_id, local_tag",
                    &[&(now as i64)],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let expires_at: i64 = r.try_get(6)?;
                let updated: i64 = r.try_get(8)?;
                out.push(StoredSubscription {
                    call_id: r.try_get(0)?,
                    local_tag: r.try_get(1)?,
                    account_id: r.try_get(2)?,
                    device_id: r.try_get(3)?,
                    presence_id: r.try_get(4)?,
                    package: r.try_get(5)?,
                    expires_at: u64::try_from(expires_at).unwrap_or(0),
                    state: r.try_get(7)?,
                    updated: u64::try_from(updated).unwrap_or(0),
                });
            }
            Ok(out)
        })
    }

    pub(in crate::store) fn presence_states(&self) -> Result<Vec<StoredPresence>, StoreError> {
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT presence_id, status, updated FROM presence_states
                     ORDER BY presence_id",
                    &[],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let updated: i64 = r.try_get(2)?;
                out.push(StoredPresence {
                    presence_id: r.try_get(0)?,
                    status: r.try_get(1)?,
                    updated: u64::try_from(updated).unwrap_or(0),
                });
            }
            Ok(out)
        })
    }
}
