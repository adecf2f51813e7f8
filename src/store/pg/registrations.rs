//! Registrations on PostgreSQL (see `store/registrations.rs`).

use deadpool_postgres::Transaction;

use super::listen::{notify, Change};
use super::Pg;
use crate::store::registrations::{decode_all, RegistrationRow};
use crate::store::{DeviceBindings, Registration, StoreError};

/// Replaces a device's bindings, and tells the other nodes (`node` is this one).
pub(super) async fn replace(
    tx: &Transaction<'_>,
    d: &DeviceBindings,
    node: &str,
) -> Result<(), tokio_postgres::Error> {
    let delete = tx
        .prepare_cached("DELETE FROM registrations WHERE account_id = $1 AND device_id = $2")
        .await?;
    tx.execute(&delete, &[&d.account_id, &d.device_id]).await?;
    let change = Change::Registrations {
        account_id: d.account_id.clone(),
        device_id: d.device_id.clone(),
    };
    notify(&**tx, node, &change).await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO registrations (account_id, device_id, contact, expires_at,
                call_id, cseq, path, source, local, transport, user_agent, instance, q, updated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (account_id, device_id, contact) DO UPDATE SET
                expires_at = EXCLUDED.expires_at, call_id = EXCLUDED.call_id,
                cseq = EXCLUDED.cseq, path = EXCLUDED.path, source = EXCLUDED.source,
                local = EXCLUDED.local, transport = EXCLUDED.transport,
                user_agent = EXCLUDED.user_agent, instance = EXCLUDED.instance, q = EXCLUDED.q,
                updated = EXCLUDED.updated",
        )
        .await?;
    for r in &d.bindings {
        let path = serde_json::to_string(&r.path).unwrap_or_else(|_| "[]".into());
        tx.execute(
            &insert,
            &[
                &r.account_id,
                &r.device_id,
                &r.contact,
                &(r.expires_at as i64),
                &r.call_id,
                &i64::from(r.cseq),
                &path,
                &r.source.to_string(),
                &r.local.to_string(),
                &r.transport,
                &r.user_agent,
                &r.instance,
                &r.q,
                &(r.updated as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn expire(tx: &Transaction<'_>, before: u64) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM registrations WHERE expires_at <= $1",
        &[&(before as i64)],
    )
    .await?;
    Ok(())
}

impl Pg {
    pub(in crate::store) fn registrations(
        &self,
        account_id: Option<&str>,
        device_id: Option<&str>,
        now: u64,
    ) -> Result<Vec<Registration>, StoreError> {
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT account_id, device_id, contact, expires_at, call_id, cseq, path,
                            source, local, transport, user_agent, instance, q, updated
                     FROM registrations WHERE expires_at > $1
                       AND ($2::TEXT IS NULL OR (account_id = $2 AND device_id = $3::TEXT))
                     ORDER BY account_id, device_id, contact",
                    &[&(now as i64), &account_id, &device_id],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(RegistrationRow {
                    account_id: row.try_get(0)?,
                    device_id: row.try_get(1)?,
                    contact: row.try_get(2)?,
                    expires_at: row.try_get(3)?,
                    call_id: row.try_get(4)?,
                    cseq: row.try_get(5)?,
                    path: row.try_get(6)?,
                    source: row.try_get(7)?,
                    local: row.try_get(8)?,
                    transport: row.try_get(9)?,
                    user_agent: row.try_get(10)?,
                    instance: row.try_get(11)?,
                    q: row.try_get(12)?,
                    updated: row.try_get(13)?,
                });
            }
            Ok(decode_all(out))
        })
    }
}
