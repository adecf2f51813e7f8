//! The PostgreSQL schema, versioned as the SQLite one: migration `i` here brings the same
//! tables as SQLite's migration `i` (so a version number means one schema in both), and the
//! version lives in `pivotd_schema`. Several nodes starting at once take turns: the whole
//! migration runs in one transaction holding an advisory lock. Migrations are only ever
//! appended.
//!
//! Differences from the SQLite text, each for a reason: integers are BIGINT (Rust reads them
//! as i64); insertion order (SQLite's rowid) is an explicit `seq` column; the text keys that
//! listings order or page by are `COLLATE "C"`, so they sort by bytes as in SQLite whatever
//! the database's locale; a username is unique per account through `lower(username)`
//! (SQLite's `COLLATE NOCASE`).

use tokio_postgres::GenericClient;

use super::Client;
use crate::store::schema::MIGRATIONS as SQLITE_MIGRATIONS;
use crate::store::{StoreError, SCHEMA_VERSION};

/// `pg_advisory_xact_lock` key of the migrations ("pivotd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7069_766f_7464;

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: pivot debug records, callflows and CDRs.
    r#"
    CREATE TABLE pivot_debug (
        seq        BIGSERIAL PRIMARY KEY,
        id         TEXT    NOT NULL,
        account_id TEXT    NOT NULL,
        call_id    TEXT    COLLATE "C" NOT NULL,
        iteration  BIGINT  NOT NULL,
        node       TEXT    NOT NULL,
        kind       TEXT    NOT NULL CHECK (kind IN ('request', 'response', 'error')),
        created    BIGINT  NOT NULL,
        doc        TEXT    NOT NULL
    );
    CREATE INDEX pivot_debug_by_call ON pivot_debug (account_id, call_id, seq);
    CREATE INDEX pivot_debug_by_created ON pivot_debug (created);

    CREATE TABLE callflows (
        seq        BIGSERIAL,
        account_id TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,
        numbers    TEXT    NOT NULL DEFAULT '[]',
        patterns   TEXT    NOT NULL DEFAULT '[]',
        created    BIGINT  NOT NULL,
        modified   BIGINT  NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    CREATE TABLE callflow_numbers (
        account_id  TEXT NOT NULL,
        number      TEXT NOT NULL,
        callflow_id TEXT NOT NULL,
        PRIMARY KEY (account_id, number),
        FOREIGN KEY (account_id, callflow_id) REFERENCES callflows (account_id, id) ON DELETE CASCADE
    );

    CREATE TABLE cdrs (
        call_id      TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
        account_id   TEXT    NOT NULL,
        from_uri     TEXT    NOT NULL,
        to_uri       TEXT    NOT NULL,
        start_time   BIGINT  NOT NULL,
        answer_time  BIGINT,
        end_time     BIGINT  NOT NULL,
        duration_s   BIGINT  NOT NULL,
        hangup_cause TEXT    NOT NULL,
        sip_code     INTEGER
    );
    CREATE INDEX cdrs_by_account_start ON cdrs (account_id, start_time);
    "#,
    // 2: callflow revisions.
    r#"
    ALTER TABLE callflows ADD COLUMN rev BIGINT NOT NULL DEFAULT 1;
    "#,
    // 3: registrations.
    r#"
    CREATE TABLE registrations (
        account_id TEXT    COLLATE "C" NOT NULL,
        device_id  TEXT    COLLATE "C" NOT NULL,
        contact    TEXT    COLLATE "C" NOT NULL,
        expires_at BIGINT  NOT NULL,
        call_id    TEXT    NOT NULL,
        cseq       BIGINT  NOT NULL,
        path       TEXT    NOT NULL DEFAULT '[]',
        source     TEXT    NOT NULL,
        local      TEXT    NOT NULL,
        transport  TEXT    NOT NULL,
        user_agent TEXT,
        instance   TEXT,
        q          TEXT,
        updated    BIGINT  NOT NULL,
        PRIMARY KEY (account_id, device_id, contact)
    );
    CREATE INDEX registrations_by_expiry ON registrations (expires_at);
    "#,
    // 4: users and devices created over the API.
    r#"
    CREATE TABLE users (
        seq        BIGSERIAL,
        account_id TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,
        rev        BIGINT  NOT NULL DEFAULT 1,
        created    BIGINT  NOT NULL,
        modified   BIGINT  NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    CREATE TABLE devices (
        seq        BIGSERIAL,
        account_id TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,
        username   TEXT,
        realm      TEXT,
        ha1        TEXT,
        rev        BIGINT  NOT NULL DEFAULT 1,
        created    BIGINT  NOT NULL,
        modified   BIGINT  NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    CREATE UNIQUE INDEX devices_by_username ON devices (account_id, lower(username));
    "#,
    // 5: a CDR per call leg: direction and the other leg's Call-ID.
    r#"
    ALTER TABLE cdrs ADD COLUMN call_direction TEXT NOT NULL DEFAULT 'inbound'
        CHECK (call_direction IN ('inbound', 'outbound'));
    ALTER TABLE cdrs ADD COLUMN other_leg_call_id TEXT;
    "#,
    // 6: presence subscriptions and the lamps a flow set.
    r#"
    CREATE TABLE presence_subscriptions (
        call_id     TEXT    COLLATE "C" NOT NULL,
        local_tag   TEXT    COLLATE "C" NOT NULL,
        account_id  TEXT    NOT NULL,
        device_id   TEXT    NOT NULL,
        presence_id TEXT    NOT NULL,
        package     TEXT    NOT NULL,
        expires_at  BIGINT  NOT NULL,
        state       TEXT    NOT NULL,
        updated     BIGINT  NOT NULL,
        PRIMARY KEY (call_id, local_tag)
    );
    CREATE INDEX presence_subscriptions_by_expiry ON presence_subscriptions (expires_at);
    CREATE TABLE presence_states (
        presence_id TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
        status      TEXT    NOT NULL,
        updated     BIGINT  NOT NULL
    );
    "#,
    // 7: API tokens (their SHA-256), shared by the nodes.
    r#"
    CREATE TABLE api_tokens (
        digest     TEXT    NOT NULL PRIMARY KEY,
        account_id TEXT    NOT NULL,
        expires_at BIGINT  NOT NULL
    );
    CREATE INDEX api_tokens_by_expiry ON api_tokens (expires_at);
    "#,
    // 8: a debug record's id is unique: the writer tries a batch again when the database
    // went away mid-commit, and a commit that did land must not leave a second copy.
    r#"
    DELETE FROM pivot_debug a USING pivot_debug b WHERE a.id = b.id AND a.seq > b.seq;
    CREATE UNIQUE INDEX pivot_debug_by_id ON pivot_debug (id);
    "#,
    // 9: the per-call event log.
    r#"
    CREATE TABLE call_events (
        account_id TEXT    NOT NULL,
        call_id    TEXT    COLLATE "C" NOT NULL,
        seq        BIGINT  NOT NULL,
        at_ms      BIGINT  NOT NULL,
        kind       TEXT    NOT NULL,
        created    BIGINT  NOT NULL,
        doc        TEXT    NOT NULL,
        PRIMARY KEY (account_id, call_id, seq)
    );
    CREATE INDEX call_events_by_created ON call_events (created);
    "#,
];

// Both backends number their schemas alike.
const _: () = assert!(MIGRATIONS.len() == SQLITE_MIGRATIONS.len());

/// The version applied (0: none yet).
pub(crate) async fn version(c: &impl GenericClient) -> Result<u32, StoreError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('pivotd_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = c
        .query_opt("SELECT version FROM pivotd_schema", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(v.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// Applies the missing migrations in one transaction under the advisory lock; a database
/// written by a newer pivotd is refused.
pub(crate) async fn migrate(c: &mut Client) -> Result<u32, StoreError> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pivotd_schema (version BIGINT NOT NULL);
         INSERT INTO pivotd_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM pivotd_schema);",
    )
    .await?;
    let found = version(&*tx).await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "UPDATE pivotd_schema SET version = $1",
            &[&((i + 1) as i64)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(SCHEMA_VERSION)
}
