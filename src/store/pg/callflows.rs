//! Callflows on PostgreSQL (see `store/callflows.rs` for what they are).

use serde_json::Value;
use tokio_postgres::Row;

use super::listen::{notify, Change};
use super::Pg;
use crate::store::callflows::decode;
use crate::store::{gregorian_now, CallflowConflict, StoreError, StoredCallflow};

const SELECT: &str = "SELECT account_id, id, doc, rev, created, modified FROM callflows";

fn read(r: &Row) -> Result<StoredCallflow, StoreError> {
    decode(super::doc_row(r)?)
}

impl Pg {
    pub(in crate::store) fn callflows(
        &self,
        account_id: Option<&str>,
    ) -> Result<Vec<StoredCallflow>, StoreError> {
        self.rows_of_account(SELECT, account_id, read)
    }

    pub(in crate::store) fn callflow(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<StoredCallflow>, StoreError> {
        self.row_of_account(SELECT, account_id, id, read)
    }

    pub(in crate::store) fn put_callflow(
        &self,
        account_id: &str,
        id: &str,
        doc: &Value,
        numbers: &[String],
        patterns: &[String],
    ) -> Result<Result<StoredCallflow, CallflowConflict>, StoreError> {
        let doc = doc.to_string();
        let numbers_json = serde_json::to_string(numbers)?;
        let patterns_json = serde_json::to_string(patterns)?;
        self.run(async |c| {
            let tx = c.transaction().await?;
            let taken = tx
                .prepare_cached(
                    "SELECT callflow_id FROM callflow_numbers
                     WHERE account_id = $1 AND number = $2 AND callflow_id <> $3",
                )
                .await?;
            for n in numbers {
                if let Some(r) = tx.query_opt(&taken, &[&account_id, n, &id]).await? {
                    return Ok(Err(CallflowConflict {
                        number: n.clone(),
                        callflow_id: r.try_get(0)?,
                    }));
                }
            }
            let now = gregorian_now();
            tx.execute(
                "INSERT INTO callflows (account_id, id, doc, numbers, patterns, created, modified, rev)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, 1)
                 ON CONFLICT (account_id, id) DO UPDATE SET doc = EXCLUDED.doc,
                    numbers = EXCLUDED.numbers, patterns = EXCLUDED.patterns,
                    modified = EXCLUDED.modified, rev = callflows.rev + 1",
                &[&account_id, &id, &doc, &numbers_json, &patterns_json, &now],
            )
            .await?;
            tx.execute(
                "DELETE FROM callflow_numbers WHERE account_id = $1 AND callflow_id = $2",
                &[&account_id, &id],
            )
            .await?;
            for n in numbers {
                tx.execute(
                    "INSERT INTO callflow_numbers (account_id, number, callflow_id)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&account_id, n, &id],
                )
                .await?;
            }
            let sql = format!("{SELECT} WHERE account_id = $1 AND id = $2");
            let stored = read(&tx.query_one(&sql, &[&account_id, &id]).await?)?;
            notify(&*tx, &self.node, &Change::Callflows(account_id.to_owned())).await?;
            tx.commit().await?;
            Ok(Ok(stored))
        })
    }

    pub(in crate::store) fn delete_callflow(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.run(async |c| {
            let n = c
                .execute(
                    "DELETE FROM callflows WHERE account_id = $1 AND id = $2",
                    &[&account_id, &id],
                )
                .await?;
            notify(&***c, &self.node, &Change::Callflows(account_id.to_owned())).await?;
            Ok(n > 0)
        })
    }
}
