//! API tokens on PostgreSQL (see `store/tokens.rs`).

use super::Pg;
use crate::store::StoreError;

impl Pg {
    pub(in crate::store) fn put_api_token(
        &self,
        digest: &str,
        account_id: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM api_tokens WHERE expires_at <= $1",
                &[&(now as i64)],
            )
            .await?;
            tx.execute(
                "INSERT INTO api_tokens (digest, account_id, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO UPDATE SET account_id = EXCLUDED.account_id,
                    expires_at = EXCLUDED.expires_at",
                &[&digest, &account_id, &(expires_at as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(in crate::store) fn api_token(
        &self,
        digest: &str,
        now: u64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        self.run(async |c| {
            let row = c
                .query_opt(
                    "SELECT account_id, expires_at FROM api_tokens
                     WHERE digest = $1 AND expires_at > $2",
                    &[&digest, &(now as i64)],
                )
                .await?;
            match row {
                Some(r) => {
                    let expires_at: i64 = r.try_get(1)?;
                    Ok(Some((
                        r.try_get(0)?,
                        u64::try_from(expires_at).unwrap_or(0),
                    )))
                }
                None => Ok(None),
            }
        })
    }
}
