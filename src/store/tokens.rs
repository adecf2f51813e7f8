//! API tokens (issue 13): the SHA-256 of each token the API issued, with its account and
//! expiry, so that a token from one node works on every node sharing the database. Written
//! at once by the API (the client uses the token next), read when a node meets a token it
//! did not issue.

use rusqlite::{params, OptionalExtension};

use super::{Db, Store, StoreError};

impl Store {
    /// Keeps a token's digest (hex SHA-256) for `account_id` until `expires_at` (Unix
    /// seconds), and forgets the tokens expired at `now`.
    pub fn put_api_token(
        &self,
        digest: &str,
        account_id: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.put_api_token(digest, account_id, expires_at, now),
        };
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM api_tokens WHERE expires_at <= ?1",
            params![now as i64],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO api_tokens (digest, account_id, expires_at) VALUES (?1, ?2, ?3)",
            params![digest, account_id, expires_at as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The account and expiry (Unix seconds) of a token digest still valid at `now`.
    pub fn api_token(&self, digest: &str, now: u64) -> Result<Option<(String, u64)>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.api_token(digest, now),
        };
        let found = conn
            .prepare_cached(
                "SELECT account_id, expires_at FROM api_tokens WHERE digest = ?1 AND expires_at > ?2",
            )?
            .query_row(params![digest, now as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?;
        Ok(found.map(|(a, e)| (a, u64::try_from(e).unwrap_or(0))))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::{both_backends, fresh};

    both_backends! {
    fn kept_until_they_expire_and_then_forgotten(kind) {
        let store = fresh(kind);
        store.put_api_token("aa", "acc", 2_000, 1_000).unwrap();
        store.put_api_token("bb", "acc2", 1_500, 1_000).unwrap();
        assert_eq!(store.api_token("aa", 1_999).unwrap(), Some(("acc".into(), 2_000)));
        assert_eq!(store.api_token("aa", 2_000).unwrap(), None);
        assert_eq!(store.api_token("cc", 0).unwrap(), None);
        // Issuing another at 1 600 drops bb, expired; aa stays.
        store.put_api_token("dd", "acc", 3_000, 1_600).unwrap();
        assert_eq!(store.api_token("bb", 0).unwrap(), None);
        assert_eq!(store.api_token("aa", 0).unwrap(), Some(("acc".into(), 2_000)));
    }
    }
}
