//! Pivot debug records on PostgreSQL (see `store/debug.rs`).

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;

use super::Pg;
use crate::store::debug::{decode, summarize};
use crate::store::{CallSummary, DebugRecord, StoreError};

pub(super) async fn insert(
    tx: &Transaction<'_>,
    r: &DebugRecord,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO pivot_debug (id, account_id, call_id, iteration, node, kind, created, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &r.id,
            &r.account_id,
            &r.call_id,
            &i64::from(r.iteration),
            &r.node,
            &r.kind.as_str(),
            &r.created,
            &r.doc.to_string(),
        ],
    )
    .await?;
    Ok(())
}

async fn records_of_call(
    c: &impl GenericClient,
    account_id: &str,
    call_id: &str,
) -> Result<Vec<DebugRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT id, account_id, call_id, iteration, node, kind, created, doc FROM pivot_debug
             WHERE account_id = $1 AND call_id = $2 ORDER BY seq",
            &[&account_id, &call_id],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let iteration: i64 = r.try_get(3)?;
        out.push(decode((
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            u32::try_from(iteration).unwrap_or(u32::MAX),
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
            r.try_get(7)?,
        ))?);
    }
    Ok(out)
}

impl Pg {
    pub(in crate::store) fn debug_record_count(&self, account_id: &str) -> Result<u64, StoreError> {
        self.run(async |c| {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM pivot_debug WHERE account_id = $1",
                    &[&account_id],
                )
                .await?
                .try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    pub(in crate::store) fn debug_records(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Vec<DebugRecord>, StoreError> {
        self.run(async |c| records_of_call(&***c, account_id, call_id).await)
    }

    pub(in crate::store) fn debug_calls_after(
        &self,
        account_id: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<CallSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_created, after_call) = match after {
            Some((c, id)) => (Some(c), Some(id)),
            None => (None, None),
        };
        self.run(async |c| {
            let calls = c
                .query(
                    "SELECT call_id, MIN(created) AS first_created FROM pivot_debug
                     WHERE account_id = $1
                     GROUP BY call_id
                     HAVING $2::BIGINT IS NULL OR MIN(created) < $2
                        OR (MIN(created) = $2 AND call_id < $3::TEXT)
                     ORDER BY first_created DESC, call_id DESC
                     LIMIT $4",
                    &[&account_id, &after_created, &after_call, &limit],
                )
                .await?;
            let mut out = Vec::with_capacity(calls.len());
            for row in calls {
                let call_id: String = row.try_get(0)?;
                let recs = records_of_call(&***c, account_id, &call_id).await?;
                if let Some(s) = summarize(&recs) {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }

    pub(in crate::store) fn purge_debug_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.run(async |c| {
            let n = c
                .execute("DELETE FROM pivot_debug WHERE created < $1", &[&cutoff])
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
