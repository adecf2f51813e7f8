//! Callflows created over the HTTP API. These writes come from the API, not from calls, so
//! they are done at once on the read connection (WAL lets them run beside the writer thread)
//! and the caller learns whether they were committed.

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{gregorian_now, Db, Store, StoreError};

/// One stored callflow document.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCallflow {
    pub account_id: String,
    pub id: String,
    /// The document as validated (defaults filled), without `id`.
    pub doc: Value,
    /// Starts at 1, +1 on every change.
    pub rev: u64,
    /// Gregorian seconds.
    pub created: i64,
    pub modified: i64,
}

/// A number another callflow of the account already has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallflowConflict {
    pub number: String,
    pub callflow_id: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

pub(super) fn decode(
    (account_id, id, doc, rev, created, modified): (String, String, String, i64, i64, i64),
) -> Result<StoredCallflow, StoreError> {
    Ok(StoredCallflow {
        account_id,
        id,
        doc: serde_json::from_str(&doc)?,
        rev: u64::try_from(rev).unwrap_or(1),
        created,
        modified,
    })
}

const COLUMNS: &str = "account_id, id, doc, rev, created, modified";

impl Store {
    /// Every API callflow (of one account, or of all with `None`), oldest first.
    pub fn callflows(&self, account_id: Option<&str>) -> Result<Vec<StoredCallflow>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.callflows(account_id),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM callflows WHERE ?1 IS NULL OR account_id = ?1
             ORDER BY created, rowid"
        ))?;
        let rows = stmt
            .query_map(params![account_id], row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode).collect()
    }

    pub fn callflow(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<StoredCallflow>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.callflow(account_id, id),
        };
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM callflows WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)
            .optional()?;
        found.map(decode).transpose()
    }

    /// Creates or replaces a callflow with its numbers, in one transaction. A number held by
    /// another API callflow of the account is refused (`Ok(Err(conflict))`), nothing written.
    pub fn put_callflow(
        &self,
        account_id: &str,
        id: &str,
        doc: &Value,
        numbers: &[String],
        patterns: &[String],
    ) -> Result<Result<StoredCallflow, CallflowConflict>, StoreError> {
        let mut conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.put_callflow(account_id, id, doc, numbers, patterns),
        };
        let tx = conn.transaction()?;
        {
            let mut taken = tx.prepare_cached(
                "SELECT callflow_id FROM callflow_numbers
                 WHERE account_id = ?1 AND number = ?2 AND callflow_id <> ?3",
            )?;
            for n in numbers {
                let holder: Option<String> = taken
                    .query_row(params![account_id, n, id], |r| r.get(0))
                    .optional()?;
                if let Some(callflow_id) = holder {
                    return Ok(Err(CallflowConflict {
                        number: n.clone(),
                        callflow_id,
                    }));
                }
            }
        }
        let now = gregorian_now();
        tx.execute(
            "INSERT INTO callflows (account_id, id, doc, numbers, patterns, created, modified, rev)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1)
             ON CONFLICT (account_id, id) DO UPDATE SET doc = excluded.doc,
                numbers = excluded.numbers, patterns = excluded.patterns,
                modified = excluded.modified, rev = rev + 1",
            params![
                account_id,
                id,
                doc.to_string(),
                serde_json::to_string(numbers)?,
                serde_json::to_string(patterns)?,
                now
            ],
        )?;
        tx.execute(
            "DELETE FROM callflow_numbers WHERE account_id = ?1 AND callflow_id = ?2",
            params![account_id, id],
        )?;
        for n in numbers {
            tx.execute(
                "INSERT OR IGNORE INTO callflow_numbers (account_id, number, callflow_id)
                 VALUES (?1, ?2, ?3)",
                params![account_id, n, id],
            )?;
        }
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM callflows WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)?;
        tx.commit()?;
        Ok(Ok(decode(stored)?))
    }

    /// Deletes a callflow (its numbers go with it). Returns whether it existed.
    pub fn delete_callflow(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.delete_callflow(account_id, id),
        };
        let n = conn.execute(
            "DELETE FROM callflows WHERE account_id = ?1 AND id = ?2",
            params![account_id, id],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{both_backends, fresh};
    use serde_json::json;

    both_backends! {
    fn put_get_replace_conflict_delete(kind) {
        let store = fresh(kind);
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = store
            .put_callflow(
                "acc",
                "a1",
                &json!({"numbers": ["1"]}),
                &n(&["1", "2"]),
                &[],
            )
            .unwrap()
            .unwrap();
        assert_eq!((a.rev, a.doc["numbers"][0].as_str()), (1, Some("1")));
        // Another callflow may not take number 2; the same one may keep it.
        let c = store
            .put_callflow("acc", "b1", &json!({}), &n(&["3", "2"]), &[])
            .unwrap()
            .unwrap_err();
        assert_eq!(
            c,
            CallflowConflict {
                number: "2".into(),
                callflow_id: "a1".into()
            }
        );
        assert!(store.callflow("acc", "b1").unwrap().is_none());
        // Another account may.
        assert!(store
            .put_callflow("other", "b1", &json!({}), &n(&["2"]), &[])
            .unwrap()
            .is_ok());
        let a2 = store
            .put_callflow("acc", "a1", &json!({"x": 1}), &n(&["2"]), &[])
            .unwrap()
            .unwrap();
        assert_eq!((a2.rev, a2.created), (2, a.created));
        // Number 1 was released by the replace.
        assert!(store
            .put_callflow("acc", "b1", &json!({}), &n(&["1"]), &[])
            .unwrap()
            .is_ok());
        let ids: Vec<String> = store
            .callflows(Some("acc"))
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["a1", "b1"]);
        assert_eq!(store.callflows(None).unwrap().len(), 3);
        assert!(store.delete_callflow("acc", "a1").unwrap());
        assert!(!store.delete_callflow("acc", "a1").unwrap());
        // Its numbers went with it.
        assert!(store
            .put_callflow("acc", "c1", &json!({}), &n(&["2"]), &[])
            .unwrap()
            .is_ok());
    }
    }
}
