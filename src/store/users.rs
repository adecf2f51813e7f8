//! Users created over the HTTP API (Kazoo's user documents). Like callflows, these writes come
//! from the API: done at once on the read connection, the caller learns whether they were
//! committed.

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{gregorian_now, Db, Store, StoreError};

/// One stored user document.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredUser {
    pub account_id: String,
    pub id: String,
    /// The document as validated, without `id`.
    pub doc: Value,
    /// Starts at 1, +1 on every change.
    pub rev: u64,
    /// Gregorian seconds.
    pub created: i64,
    pub modified: i64,
}

pub(super) type Row = (String, String, String, i64, i64, i64);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
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
    (account_id, id, doc, rev, created, modified): Row,
) -> Result<StoredUser, StoreError> {
    Ok(StoredUser {
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
    /// Every API user (of one account, or of all with `None`), oldest first.
    pub fn users(&self, account_id: Option<&str>) -> Result<Vec<StoredUser>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.users(account_id),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM users WHERE ?1 IS NULL OR account_id = ?1
             ORDER BY created, rowid"
        ))?;
        let rows = stmt
            .query_map(params![account_id], row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode).collect()
    }

    pub fn user(&self, account_id: &str, id: &str) -> Result<Option<StoredUser>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.user(account_id, id),
        };
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM users WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)
            .optional()?;
        found.map(decode).transpose()
    }

    /// Creates or replaces a user.
    pub fn put_user(
        &self,
        account_id: &str,
        id: &str,
        doc: &Value,
    ) -> Result<StoredUser, StoreError> {
        let mut conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.put_user(account_id, id, doc),
        };
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO users (account_id, id, doc, created, modified, rev)
             VALUES (?1, ?2, ?3, ?4, ?4, 1)
             ON CONFLICT (account_id, id) DO UPDATE SET doc = excluded.doc,
                modified = excluded.modified, rev = rev + 1",
            params![account_id, id, doc.to_string(), gregorian_now()],
        )?;
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM users WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)?;
        tx.commit()?;
        decode(stored)
    }

    /// Deletes a user. Returns whether it existed.
    pub fn delete_user(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.delete_user(account_id, id),
        };
        let n = conn.execute(
            "DELETE FROM users WHERE account_id = ?1 AND id = ?2",
            params![account_id, id],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::{both_backends, fresh};
    use serde_json::json;

    both_backends! {
    fn put_get_replace_delete(kind) {
        let store = fresh(kind);
        let a = store
            .put_user("acc", "u1", &json!({"first_name": "Ada"}))
            .unwrap();
        assert_eq!((a.rev, a.doc["first_name"].as_str()), (1, Some("Ada")));
        store.put_user("acc", "u2", &json!({})).unwrap();
        store.put_user("other", "u3", &json!({})).unwrap();
        let a2 = store
            .put_user("acc", "u1", &json!({"first_name": "Grace"}))
            .unwrap();
        assert_eq!((a2.rev, a2.created), (2, a.created));
        assert_eq!(store.user("acc", "u1").unwrap(), Some(a2));
        let ids: Vec<String> = store
            .users(Some("acc"))
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids, ["u1", "u2"]);
        assert_eq!(store.users(None).unwrap().len(), 3);
        assert!(store.delete_user("acc", "u1").unwrap());
        assert!(!store.delete_user("acc", "u1").unwrap());
        assert!(store.user("acc", "u1").unwrap().is_none());
    }
    }
}
