//! Users on PostgreSQL (see `store/users.rs`).

use serde_json::Value;
use tokio_postgres::Row;

use super::listen::{notify, Change};
use super::Pg;
use crate::store::users::decode;
use crate::store::{gregorian_now, StoreError, StoredUser};

const SELECT: &str = "SELECT account_id, id, doc, rev, created, modified FROM users";

fn read(r: &Row) -> Result<StoredUser, StoreError> {
    decode(super::doc_row(r)?)
}

impl Pg {
    pub(in crate::store) fn users(
        &self,
        account_id: Option<&str>,
    ) -> Result<Vec<StoredUser>, StoreError> {
        self.rows_of_account(SELECT, account_id, read)
    }

    pub(in crate::store) fn user(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<StoredUser>, StoreError> {
        self.row_of_account(SELECT, account_id, id, read)
    }

    pub(in crate::store) fn put_user(
        &self,
        account_id: &str,
        id: &str,
        doc: &Value,
    ) -> Result<StoredUser, StoreError> {
        let doc = doc.to_string();
        self.run(async |c| {
            let sql = "INSERT INTO users (account_id, id, doc, created, modified, rev)
                 VALUES ($1, $2, $3, $4, $4, 1)
                 ON CONFLICT (account_id, id) DO UPDATE SET doc = EXCLUDED.doc,
                    modified = EXCLUDED.modified, rev = users.rev + 1
                 RETURNING account_id, id, doc, rev, created, modified";
            let stored = read(
                &c.query_one(sql, &[&account_id, &id, &doc, &gregorian_now()])
                    .await?,
            )?;
            notify(&***c, &self.node, &Change::Directory(account_id.to_owned())).await?;
            Ok(stored)
        })
    }

    pub(in crate::store) fn delete_user(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.run(async |c| {
            let n = c
                .execute(
                    "DELETE FROM users WHERE account_id = $1 AND id = $2",
                    &[&account_id, &id],
                )
                .await?;
            notify(&***c, &self.node, &Change::Directory(account_id.to_owned())).await?;
            Ok(n > 0)
        })
    }
}
