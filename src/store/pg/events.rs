//! The per-call event log on PostgreSQL (see `store/events.rs`).

use deadpool_postgres::Transaction;

use super::Pg;
use crate::store::events::{decode, recent_call, RECENT_CALLS};
use crate::store::{RecentCall, StoreError, StoredEvent};

pub(super) async fn insert(
    tx: &Transaction<'_>,
    e: &StoredEvent,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO call_events (account_id, call_id, seq, at_ms, kind, created, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (account_id, call_id, seq) DO NOTHING",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &e.account_id,
            &e.call_id,
            &i64::from(e.seq),
            &i64::try_from(e.at_ms).unwrap_or(i64::MAX),
            &e.kind(),
            &e.created,
            &e.doc.to_string(),
        ],
    )
    .await?;
    Ok(())
}

impl Pg {
    pub(in crate::store) fn call_events(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT seq, at_ms, created, doc FROM call_events
                     WHERE account_id = $1 AND call_id = $2 ORDER BY seq",
                    &[&account_id, &call_id],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(decode(
                    account_id,
                    call_id,
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?),
                )?);
            }
            Ok(out)
        })
    }

    pub(in crate::store) fn recent_calls(
        &self,
        account_id: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<RecentCall>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_created, after_call) = match after {
            Some((c, id)) => (Some(c), Some(id)),
            None => (None, None),
        };
        // The parameters typed: PostgreSQL cannot infer `$2 IS NULL`'s.
        let sql = format!("{RECENT_CALLS} LIMIT $4")
            .replace("$2 IS NULL", "$2::BIGINT IS NULL")
            .replace("s.call_id < $3", "s.call_id < $3::TEXT");
        self.run(async |c| {
            let rows = c
                .query(&sql, &[&account_id, &after_created, &after_call, &limit])
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(recent_call((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))?);
            }
            Ok(out)
        })
    }

    pub(in crate::store) fn purge_events_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.run(async |c| {
            let n = c
                .execute("DELETE FROM call_events WHERE created < $1", &[&cutoff])
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
