//! Devices created over the HTTP API. No password is ever written: a device with SIP
//! credentials keeps its HA1 per algorithm and the realm they were computed for, enough to
//! check a digest answer and nothing more. Written at once by the API, like callflows.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{gregorian_now, Db, Store, StoreError};

/// What a device authenticates with: its username and, for each algorithm (by its name, as
/// `MD5`, `SHA-256`), H(username:realm:password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipCredentials {
    pub username: String,
    /// The realm the HA1s were computed for: another realm needs the password again.
    pub realm: String,
    pub ha1: BTreeMap<String, String>,
}

/// One stored device document.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDevice {
    pub account_id: String,
    pub id: String,
    /// The document as validated, without `id` and without `sip.password`.
    pub doc: Value,
    pub sip: Option<SipCredentials>,
    /// Starts at 1, +1 on every change.
    pub rev: u64,
    /// Gregorian seconds.
    pub created: i64,
    pub modified: i64,
}

/// A username another device of the account already has (compared without case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsernameTaken {
    pub username: String,
    pub device_id: String,
}

/// A row as both backends read it.
pub(super) struct Row {
    pub(super) account_id: String,
    pub(super) id: String,
    pub(super) doc: String,
    pub(super) username: Option<String>,
    pub(super) realm: Option<String>,
    pub(super) ha1: Option<String>,
    pub(super) rev: i64,
    pub(super) created: i64,
    pub(super) modified: i64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        account_id: r.get(0)?,
        id: r.get(1)?,
        doc: r.get(2)?,
        username: r.get(3)?,
        realm: r.get(4)?,
        ha1: r.get(5)?,
        rev: r.get(6)?,
        created: r.get(7)?,
        modified: r.get(8)?,
    })
}

pub(super) fn decode(r: Row) -> Result<StoredDevice, StoreError> {
    let sip = match (r.username, r.realm, r.ha1) {
        (Some(username), Some(realm), Some(ha1)) => Some(SipCredentials {
            username,
            realm,
            ha1: serde_json::from_str(&ha1)?,
        }),
        _ => None,
    };
    Ok(StoredDevice {
        account_id: r.account_id,
        id: r.id,
        doc: serde_json::from_str(&r.doc)?,
        sip,
        rev: u64::try_from(r.rev).unwrap_or(1),
        created: r.created,
        modified: r.modified,
    })
}

const COLUMNS: &str = "account_id, id, doc, username, realm, ha1, rev, created, modified";

impl Store {
    /// Every API device (of one account, or of all with `None`), oldest first.
    pub fn devices(&self, account_id: Option<&str>) -> Result<Vec<StoredDevice>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.devices(account_id),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM devices WHERE ?1 IS NULL OR account_id = ?1
             ORDER BY created, rowid"
        ))?;
        let rows = stmt
            .query_map(params![account_id], row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode).collect()
    }

    pub fn device(&self, account_id: &str, id: &str) -> Result<Option<StoredDevice>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.device(account_id, id),
        };
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM devices WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)
            .optional()?;
        found.map(decode).transpose()
    }

    /// Creates or replaces a device. A username another device of the account holds is
    /// refused (`Ok(Err(taken))`), nothing written.
    pub fn put_device(
        &self,
        account_id: &str,
        id: &str,
        doc: &Value,
        sip: Option<&SipCredentials>,
    ) -> Result<Result<StoredDevice, UsernameTaken>, StoreError> {
        let mut conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.put_device(account_id, id, doc, sip),
        };
        let tx = conn.transaction()?;
        if let Some(s) = sip {
            let holder: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM devices WHERE account_id = ?1 AND id <> ?2
                     AND username = ?3 COLLATE NOCASE",
                )?
                .query_row(params![account_id, id, s.username], |r| r.get(0))
                .optional()?;
            if let Some(device_id) = holder {
                return Ok(Err(UsernameTaken {
                    username: s.username.clone(),
                    device_id,
                }));
            }
        }
        let ha1 = sip.map(|s| serde_json::to_string(&s.ha1)).transpose()?;
        tx.execute(
            "INSERT INTO devices (account_id, id, doc, username, realm, ha1, created, modified, rev)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1)
             ON CONFLICT (account_id, id) DO UPDATE SET doc = excluded.doc,
                username = excluded.username, realm = excluded.realm, ha1 = excluded.ha1,
                modified = excluded.modified, rev = rev + 1",
            params![
                account_id,
                id,
                doc.to_string(),
                sip.map(|s| &s.username),
                sip.map(|s| &s.realm),
                ha1,
                gregorian_now()
            ],
        )?;
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM devices WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)?;
        tx.commit()?;
        Ok(Ok(decode(stored)?))
    }

    /// Deletes a device and its registrations. Returns whether it existed.
    pub fn delete_device(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.delete_device(account_id, id),
        };
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM devices WHERE account_id = ?1 AND id = ?2",
            params![account_id, id],
        )?;
        tx.execute(
            "DELETE FROM registrations WHERE account_id = ?1 AND device_id = ?2",
            params![account_id, id],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{both_backends, fresh};
    use serde_json::json;

    fn creds(username: &str) -> SipCredentials {
        SipCredentials {
            username: username.into(),
            realm: "r.test".into(),
            ha1: [("MD5".to_string(), "00ff".to_string())].into(),
        }
    }

    both_backends! {
    fn put_get_conflict_delete(kind) {
        let store = fresh(kind);
        let d = store
            .put_device("acc", "d1", &json!({"name": "desk"}), Some(&creds("2001")))
            .unwrap()
            .unwrap();
        assert_eq!(d.sip, Some(creds("2001")));
        assert_eq!(d.rev, 1);
        // Another device of the account may not take the username, whatever its case.
        let taken = store
            .put_device("acc", "d2", &json!({}), Some(&creds("2001")))
            .unwrap()
            .unwrap_err();
        assert_eq!(taken.device_id, "d1");
        let mut upper = creds("Ab");
        store
            .put_device("acc", "d3", &json!({}), Some(&upper))
            .unwrap()
            .unwrap();
        upper.username = "aB".into();
        assert!(store
            .put_device("acc", "d4", &json!({}), Some(&upper))
            .unwrap()
            .is_err());
        // Another account may; the same device keeps it; devices without credentials coexist.
        assert!(store
            .put_device("other", "d2", &json!({}), Some(&creds("2001")))
            .unwrap()
            .is_ok());
        let d1 = store
            .put_device(
                "acc",
                "d1",
                &json!({"name": "desk 2"}),
                Some(&creds("2001")),
            )
            .unwrap()
            .unwrap();
        assert_eq!((d1.rev, d1.created), (2, d.created));
        for id in ["n1", "n2"] {
            assert!(store
                .put_device("acc", id, &json!({}), None)
                .unwrap()
                .is_ok());
        }
        assert_eq!(store.device("acc", "n1").unwrap().unwrap().sip, None);
        assert_eq!(store.devices(Some("acc")).unwrap().len(), 4);
        assert_eq!(store.devices(None).unwrap().len(), 5);
        assert!(store.delete_device("acc", "d1").unwrap());
        assert!(!store.delete_device("acc", "d1").unwrap());
        // Its username is free again.
        assert!(store
            .put_device("acc", "d2", &json!({}), Some(&creds("2001")))
            .unwrap()
            .is_ok());
    }
    }
}
