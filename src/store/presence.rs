//! Presence (issue 11): the subscriptions pivotd is the notifier of, and the lamps a flow set
//! (`manual_presence`), written through the writer queue and read back at start, so phones
//! keep their busy lamps across a restart without subscribing again. What the rows mean is
//! the presence side's; here they are plain rows (the dialog state is its JSON).

use rusqlite::{params, Connection};

use super::{Db, Store, StoreError};

/// One subscription: the dialog it lives in and what it watches (times are Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSubscription {
    pub call_id: String,
    pub local_tag: String,
    pub account_id: String,
    pub device_id: String,
    /// `user@realm`.
    pub presence_id: String,
    /// The Event package.
    pub package: String,
    pub expires_at: u64,
    /// The presence side's JSON: the dialog (tags, CSeq, route set, remote target, peer),
    /// the Event `id`, the body version.
    pub state: String,
    pub updated: u64,
}

/// A lamp a flow set: `status` is `ringing` or `busy` (idle lamps have no row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPresence {
    /// `user@realm`.
    pub presence_id: String,
    pub status: String,
    pub updated: u64,
}

pub(super) fn upsert_subscription(
    conn: &Connection,
    s: &StoredSubscription,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO presence_subscriptions (call_id, local_tag, account_id,
            device_id, presence_id, package, expires_at, state, updated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.call_id,
        s.local_tag,
        s.account_id,
        s.device_id,
        s.presence_id,
        s.package,
        s.expires_at as i64,
        s.state,
        s.updated as i64,
    ])?;
    Ok(())
}

pub(super) fn delete_subscription(
    conn: &Connection,
    call_id: &str,
    local_tag: &str,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "DELETE FROM presence_subscriptions WHERE call_id = ?1 AND local_tag = ?2",
    )?
    .execute(params![call_id, local_tag])?;
    Ok(())
}

pub(super) fn expire_subscriptions(conn: &Connection, before: u64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("DELETE FROM presence_subscriptions WHERE expires_at <= ?1")?
        .execute(params![before as i64])?;
    Ok(())
}

pub(super) fn upsert_state(conn: &Connection, p: &StoredPresence) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO presence_states (presence_id, status, updated) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![p.presence_id, p.status, p.updated as i64])?;
    Ok(())
}

pub(super) fn delete_state(conn: &Connection, presence_id: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("DELETE FROM presence_states WHERE presence_id = ?1")?
        .execute(params![presence_id])?;
    Ok(())
}

impl Store {
    /// The subscriptions that have not expired at `now` (Unix seconds).
    pub fn subscriptions(&self, now: u64) -> Result<Vec<StoredSubscription>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.subscriptions(now),
        };
        let mut stmt = conn.prepare(
            "SELECT call_id, local_tag, account_id, device_id, presence_id, package,
                    expires_at, state, updated
             FROM presence_subscriptions WHERE expires_at > ?1 ORDER BY call_id, local_tag",
        )?;
        let rows = stmt.query_map(params![now as i64], |row| {
            Ok(StoredSubscription {
                call_id: row.get(0)?,
                local_tag: row.get(1)?,
                account_id: row.get(2)?,
                device_id: row.get(3)?,
                presence_id: row.get(4)?,
                package: row.get(5)?,
                expires_at: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
                state: row.get(7)?,
                updated: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every lamp a flow left ringing or busy.
    pub fn presence_states(&self) -> Result<Vec<StoredPresence>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.presence_states(),
        };
        let mut stmt = conn.prepare(
            "SELECT presence_id, status, updated FROM presence_states ORDER BY presence_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(StoredPresence {
                presence_id: row.get(0)?,
                status: row.get(1)?,
                updated: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{both_backends, fresh};
    use crate::store::Write;

    fn sub(call_id: &str, expires_at: u64) -> StoredSubscription {
        StoredSubscription {
            call_id: call_id.into(),
            local_tag: "lt".into(),
            account_id: "acc".into(),
            device_id: "d1".into(),
            presence_id: "2001@pbx.test".into(),
            package: "dialog".into(),
            expires_at,
            state: "{}".into(),
            updated: 1,
        }
    }

    both_backends! {
    fn subscriptions_are_replaced_ended_and_expired(kind) {
        let store = fresh(kind);
        store.write(Write::Subscription(sub("a", 100)));
        store.write(Write::Subscription(sub("b", 200)));
        let mut a = sub("a", 300);
        a.state = "{\"v\":2}".into();
        store.write(Write::Subscription(a.clone()));
        store.flush().unwrap();
        assert_eq!(store.subscriptions(0).unwrap(), [a.clone(), sub("b", 200)]);
        // Expired ones are not read back, and go with ExpireSubscriptions.
        assert_eq!(store.subscriptions(250).unwrap(), [a.clone()]);
        store.write(Write::ExpireSubscriptions(250));
        store.write(Write::EndSubscription {
            call_id: "a".into(),
            local_tag: "lt".into(),
        });
        store.flush().unwrap();
        assert!(store.subscriptions(0).unwrap().is_empty());
    }
    }

    both_backends! {
    fn lamps_are_set_and_cleared(kind) {
        let store = fresh(kind);
        let busy = StoredPresence {
            presence_id: "2001@pbx.test".into(),
            status: "busy".into(),
            updated: 5,
        };
        store.write(Write::PresenceState(busy.clone()));
        store.flush().unwrap();
        assert_eq!(store.presence_states().unwrap(), [busy]);
        store.write(Write::ClearPresenceState("2001@pbx.test".into()));
        store.flush().unwrap();
        assert!(store.presence_states().unwrap().is_empty());
    }
    }
}
