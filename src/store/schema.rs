//! The versioned schema. `PRAGMA user_version` holds the number of migrations applied; each
//! start applies the missing ones in one transaction, so a half-migrated file cannot exist.
//! Migrations are only ever appended: an applied migration's text never changes.

use rusqlite::Connection;

use super::StoreError;

/// Migration `i` (0-based) brings the schema from version `i` to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: pivot debug records (spec e.1, j.15), callflows and CDRs (issue 4).
    r#"
    CREATE TABLE pivot_debug (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order: records read back in order
        id         TEXT    NOT NULL,                  -- document id shown by the API
        account_id TEXT    NOT NULL,
        call_id    TEXT    NOT NULL,
        iteration  INTEGER NOT NULL,
        node       TEXT    NOT NULL,
        kind       TEXT    NOT NULL CHECK (kind IN ('request', 'response', 'error')),
        created    INTEGER NOT NULL,                  -- Gregorian seconds (spec j.15)
        doc        TEXT    NOT NULL                   -- the record as Kazoo stores it (JSON)
    );
    CREATE INDEX pivot_debug_by_call ON pivot_debug (account_id, call_id, seq);
    CREATE INDEX pivot_debug_by_created ON pivot_debug (created);

    CREATE TABLE callflows (
        account_id TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,                  -- the callflow document (JSON)
        numbers    TEXT    NOT NULL DEFAULT '[]',     -- JSON array, copied from doc for listing
        patterns   TEXT    NOT NULL DEFAULT '[]',     -- JSON array
        created    INTEGER NOT NULL,                  -- Gregorian seconds
        modified   INTEGER NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    -- One row per number: the primary key refuses a number used by two callflows of an account.
    CREATE TABLE callflow_numbers (
        account_id  TEXT NOT NULL,
        number      TEXT NOT NULL,
        callflow_id TEXT NOT NULL,
        PRIMARY KEY (account_id, number),
        FOREIGN KEY (account_id, callflow_id) REFERENCES callflows (account_id, id) ON DELETE CASCADE
    );

    CREATE TABLE cdrs (
        call_id      TEXT    NOT NULL PRIMARY KEY,
        account_id   TEXT    NOT NULL,
        from_uri     TEXT    NOT NULL,
        to_uri       TEXT    NOT NULL,
        start_time   INTEGER NOT NULL,                -- Gregorian seconds
        answer_time  INTEGER,                         -- NULL: never answered
        end_time     INTEGER NOT NULL,
        duration_s   INTEGER NOT NULL,
        hangup_cause TEXT    NOT NULL,
        sip_code     INTEGER
    );
    CREATE INDEX cdrs_by_account_start ON cdrs (account_id, start_time);
    "#,
    // 2: callflow revisions (the Crossbar envelope's `revision`), bumped on every change.
    r#"
    ALTER TABLE callflows ADD COLUMN rev INTEGER NOT NULL DEFAULT 1;
    "#,
    // 3: registrations (issue 9): a device's contacts, replaced whole on each REGISTER.
    r#"
    CREATE TABLE registrations (
        account_id TEXT    NOT NULL,
        device_id  TEXT    NOT NULL,
        contact    TEXT    NOT NULL,                  -- the Contact URI as registered
        expires_at INTEGER NOT NULL,                  -- Unix seconds
        call_id    TEXT    NOT NULL,
        cseq       INTEGER NOT NULL,
        path       TEXT    NOT NULL DEFAULT '[]',     -- JSON array of Path values (RFC 3327)
        source     TEXT    NOT NULL,                  -- ip:port the REGISTER came from
        local      TEXT    NOT NULL,                  -- our ip:port it arrived on
        transport  TEXT    NOT NULL,
        user_agent TEXT,
        instance   TEXT,
        q          TEXT,
        updated    INTEGER NOT NULL,
        PRIMARY KEY (account_id, device_id, contact)
    );
    CREATE INDEX registrations_by_expiry ON registrations (expires_at);
    "#,
    // 4: users and devices created over the API (issue 9). A device keeps no password: its
    // HA1 per algorithm and the realm they were computed for.
    r#"
    CREATE TABLE users (
        account_id TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,                  -- the user document (JSON)
        rev        INTEGER NOT NULL DEFAULT 1,
        created    INTEGER NOT NULL,                  -- Gregorian seconds
        modified   INTEGER NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    CREATE TABLE devices (
        account_id TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,                  -- the device document, never sip.password
        username   TEXT,                              -- sip.username, copied for the unique index
        realm      TEXT,                              -- the realm the HA1s were computed for
        ha1        TEXT,                              -- JSON object: algorithm name -> HA1 hex
        rev        INTEGER NOT NULL DEFAULT 1,
        created    INTEGER NOT NULL,
        modified   INTEGER NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    -- A SIP username once per account (so once per realm), whatever its case.
    CREATE UNIQUE INDEX devices_by_username ON devices (account_id, username COLLATE NOCASE);
    "#,
    // 5: a CDR per call leg (bridging): the leg's direction and the other leg's Call-ID. Rows
    // written before read as inbound legs that were never bridged.
    r#"
    ALTER TABLE cdrs ADD COLUMN call_direction TEXT NOT NULL DEFAULT 'inbound'
        CHECK (call_direction IN ('inbound', 'outbound'));
    ALTER TABLE cdrs ADD COLUMN other_leg_call_id TEXT;  -- NULL: never bridged
    "#,
    // 6: presence (issue 11): the subscriptions (RFC 6665 dialogs pivotd is the notifier of)
    // and the lamps a flow set, so that both outlive a restart.
    r#"
    CREATE TABLE presence_subscriptions (
        call_id     TEXT    NOT NULL,
        local_tag   TEXT    NOT NULL,                 -- our tag: with the Call-ID, the dialog
        account_id  TEXT    NOT NULL,                 -- the watching device's
        device_id   TEXT    NOT NULL,
        presence_id TEXT    NOT NULL,                 -- user@realm watched
        package     TEXT    NOT NULL,                 -- the Event package (dialog, presence)
        expires_at  INTEGER NOT NULL,                 -- Unix seconds
        state       TEXT    NOT NULL,                 -- JSON: the dialog state, Event id, version
        updated     INTEGER NOT NULL,
        PRIMARY KEY (call_id, local_tag)
    );
    CREATE INDEX presence_subscriptions_by_expiry ON presence_subscriptions (expires_at);
    CREATE TABLE presence_states (
        presence_id TEXT    NOT NULL PRIMARY KEY,     -- user@realm
        status      TEXT    NOT NULL,                 -- ringing or busy (idle is no row)
        updated     INTEGER NOT NULL
    );
    "#,
    // 7: API tokens (issue 13), so that a token from one node works on another sharing the
    // database. Only the token's SHA-256 is kept.
    r#"
    CREATE TABLE api_tokens (
        digest     TEXT    NOT NULL PRIMARY KEY,      -- hex SHA-256 of the token
        account_id TEXT    NOT NULL,
        expires_at INTEGER NOT NULL                   -- Unix seconds
    );
    CREATE INDEX api_tokens_by_expiry ON api_tokens (expires_at);
    "#,
    // 8: a debug record's id is unique, so a batch written again (its commit's answer lost)
    // adds no second copy.
    r#"
    DELETE FROM pivot_debug WHERE seq NOT IN (SELECT MIN(seq) FROM pivot_debug GROUP BY id);
    CREATE UNIQUE INDEX pivot_debug_by_id ON pivot_debug (id);
    "#,
    // 9: the per-call event log (issue 14), recorded for every call, purged with the debug
    // records. (account, call, seq) is unique, so a batch written again adds no copy.
    r#"
    CREATE TABLE call_events (
        account_id TEXT    NOT NULL,
        call_id    TEXT    NOT NULL,
        seq        INTEGER NOT NULL,                  -- order within the call, from 0
        at_ms      INTEGER NOT NULL,                  -- ms since the INVITE arrived
        kind       TEXT    NOT NULL,
        created    INTEGER NOT NULL,                  -- Gregorian seconds (retention)
        doc        TEXT    NOT NULL,                  -- the event (JSON: kind and fields)
        PRIMARY KEY (account_id, call_id, seq)
    );
    CREATE INDEX call_events_by_created ON call_events (created);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// Applies the migrations the file lacks. A file written by a newer pivotd (more migrations
/// than this build knows) is refused rather than used with a schema we do not understand.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let tx = conn.transaction()?;
    let found = user_version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}
