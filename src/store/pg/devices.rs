//! Devices on PostgreSQL (see `store/devices.rs`).

use serde_json::Value;
use tokio_postgres::Row;

use super::listen::{notify, Change};
use super::Pg;
use crate::store::devices::{decode, Row as DeviceRow};
use crate::store::{gregorian_now, SipCredentials, StoreError, StoredDevice, UsernameTaken};

const COLUMNS: &str = "account_id, id, doc, username, realm, ha1, rev, created, modified";

fn read(r: &Row) -> Result<StoredDevice, StoreError> {
    decode(DeviceRow {
        account_id: r.try_get(0)?,
        id: r.try_get(1)?,
        doc: r.try_get(2)?,
        username: r.try_get(3)?,
        realm: r.try_get(4)?,
        ha1: r.try_get(5)?,
        rev: r.try_get(6)?,
        created: r.try_get(7)?,
        modified: r.try_get(8)?,
    })
}

/// The other device of the account holding a username (compared as the unique index does).
const USERNAME_HOLDER: &str = "SELECT id FROM devices WHERE account_id = $1 AND id <> $2
     AND lower(username) = lower($3)";

impl Pg {
    pub(in crate::store) fn devices(
        &self,
        account_id: Option<&str>,
    ) -> Result<Vec<StoredDevice>, StoreError> {
        self.rows_of_account(&format!("SELECT {COLUMNS} FROM devices"), account_id, read)
    }

    pub(in crate::store) fn device(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<StoredDevice>, StoreError> {
        let select = format!("SELECT {COLUMNS} FROM devices");
        self.row_of_account(&select, account_id, id, read)
    }

    pub(in crate::store) fn put_device(
        &self,
        account_id: &str,
        id: &str,
        doc: &Value,
        sip: Option<&SipCredentials>,
    ) -> Result<Result<StoredDevice, UsernameTaken>, StoreError> {
        let doc = doc.to_string();
        let ha1 = sip.map(|s| serde_json::to_string(&s.ha1)).transpose()?;
        let username = sip.map(|s| s.username.as_str());
        let realm = sip.map(|s| s.realm.as_str());
        self.run(async |c| {
            let tx = c.transaction().await?;
            if let Some(username) = username {
                let holder = tx
                    .query_opt(
                        USERNAME_HOLDER,
                        &[&account_id, &id, &username],
                    )
                    .await?;
                if let Some(r) = holder {
                    return Ok(Err(UsernameTaken {
                        username: username.to_owned(),
                        device_id: r.try_get(0)?,
                    }));
                }
            }
            let sql = format!(
                "INSERT INTO devices (account_id, id, doc, username, realm, ha1, created, modified, rev)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1)
                 ON CONFLICT (account_id, id) DO UPDATE SET doc = EXCLUDED.doc,
                    username = EXCLUDED.username, realm = EXCLUDED.realm, ha1 = EXCLUDED.ha1,
                    modified = EXCLUDED.modified, rev = devices.rev + 1
                 RETURNING {COLUMNS}"
            );
            let inserted = tx
                .query_one(
                    &sql,
                    &[&account_id, &id, &doc, &username, &realm, &ha1, &gregorian_now()],
                )
                .await;
            let row = match (inserted, username) {
                (Ok(row), _) => row,
                // Another node's transaction took the username after the check above (both
                // read before either committed): the index refused this one, which is the
                // same answer as the check's, not a store fault.
                (Err(e), Some(username))
                    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                {
                    drop(tx);
                    let holder = c
                        .query_opt(
                            USERNAME_HOLDER,
                            &[&account_id, &id, &username],
                        )
                        .await?;
                    return match holder {
                        Some(r) => Ok(Err(UsernameTaken {
                            username: username.to_owned(),
                            device_id: r.try_get(0)?,
                        })),
                        None => Err(e.into()),
                    };
                }
                (Err(e), _) => return Err(e.into()),
            };
            let stored = read(&row)?;
            notify(&*tx, &self.node, &Change::Directory(account_id.to_owned())).await?;
            tx.commit().await?;
            Ok(Ok(stored))
        })
    }

    pub(in crate::store) fn delete_device(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.run(async |c| {
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "DELETE FROM devices WHERE account_id = $1 AND id = $2",
                    &[&account_id, &id],
                )
                .await?;
            tx.execute(
                "DELETE FROM registrations WHERE account_id = $1 AND device_id = $2",
                &[&account_id, &id],
            )
            .await?;
            notify(&*tx, &self.node, &Change::Directory(account_id.to_owned())).await?;
            tx.commit().await?;
            Ok(n > 0)
        })
    }
}
