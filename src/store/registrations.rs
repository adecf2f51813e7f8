//! Registrations (RFC 3261 §10.3 bindings): each device's contacts, rewritten whole through
//! the writer queue when a REGISTER changes them, read back at start so phones need not
//! register again after a restart.

use std::net::SocketAddr;

use rusqlite::{params, Connection};

use super::{Db, Store, StoreError};

/// One contact a device registered (times are Unix seconds: they outlive the process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub account_id: String,
    pub device_id: String,
    /// The Contact URI as the phone wrote it (without `<>`).
    pub contact: String,
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Path header values (RFC 3327), in order: the route back to the phone.
    pub path: Vec<String>,
    /// Where the REGISTER came from (after NAT): where requests to the phone go.
    pub source: SocketAddr,
    /// Our socket it arrived on.
    pub local: SocketAddr,
    /// "UDP", "TCP" or "TLS".
    pub transport: String,
    pub user_agent: Option<String>,
    /// `+sip.instance` (RFC 5626), when given.
    pub instance: Option<String>,
    /// `q`, as written.
    pub q: Option<String>,
    pub updated: u64,
}

/// The bindings of one device after a REGISTER: they replace the stored ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBindings {
    pub account_id: String,
    pub device_id: String,
    pub bindings: Vec<Registration>,
}

pub(super) fn replace(conn: &Connection, d: &DeviceBindings) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("DELETE FROM registrations WHERE account_id = ?1 AND device_id = ?2")?
        .execute(params![d.account_id, d.device_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO registrations (account_id, device_id, contact, expires_at,
            call_id, cseq, path, source, local, transport, user_agent, instance, q, updated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for r in &d.bindings {
        let path = serde_json::to_string(&r.path).unwrap_or_else(|_| "[]".into());
        insert.execute(params![
            r.account_id,
            r.device_id,
            r.contact,
            r.expires_at as i64,
            r.call_id,
            r.cseq,
            path,
            r.source.to_string(),
            r.local.to_string(),
            r.transport,
            r.user_agent,
            r.instance,
            r.q,
            r.updated as i64,
        ])?;
    }
    Ok(())
}

impl Store {
    /// The bindings that have not expired at `now` (Unix seconds). A row whose addresses
    /// cannot be read back (edited by hand) is skipped with a warning.
    pub fn registrations(&self, now: u64) -> Result<Vec<Registration>, StoreError> {
        self.registrations_where(None, now)
    }

    /// One device's bindings that have not expired at `now` (another node's REGISTER, heard
    /// through [`Store::subscribe_changes`]).
    pub fn device_registrations(
        &self,
        account_id: &str,
        device_id: &str,
        now: u64,
    ) -> Result<Vec<Registration>, StoreError> {
        self.registrations_where(Some((account_id, device_id)), now)
    }

    fn registrations_where(
        &self,
        device: Option<(&str, &str)>,
        now: u64,
    ) -> Result<Vec<Registration>, StoreError> {
        let (account_id, device_id) = device.unzip();
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.registrations(account_id, device_id, now),
        };
        let mut stmt = conn.prepare(
            "SELECT account_id, device_id, contact, expires_at, call_id, cseq, path, source,
                    local, transport, user_agent, instance, q, updated
             FROM registrations WHERE expires_at > ?1
               AND (?2 IS NULL OR (account_id = ?2 AND device_id = ?3))
             ORDER BY account_id, device_id, contact",
        )?;
        let rows = stmt.query_map(params![now as i64, account_id, device_id], |row| {
            Ok(RegistrationRow {
                account_id: row.get(0)?,
                device_id: row.get(1)?,
                contact: row.get(2)?,
                expires_at: row.get(3)?,
                call_id: row.get(4)?,
                cseq: row.get(5)?,
                path: row.get(6)?,
                source: row.get(7)?,
                local: row.get(8)?,
                transport: row.get(9)?,
                user_agent: row.get(10)?,
                instance: row.get(11)?,
                q: row.get(12)?,
                updated: row.get(13)?,
            })
        })?;
        let rows = rows.collect::<Result<Vec<_>, _>>()?;
        Ok(decode_all(rows))
    }
}

/// A binding's columns as both backends read them (the SQL `SELECT` order).
pub(super) struct RegistrationRow {
    pub(super) account_id: String,
    pub(super) device_id: String,
    pub(super) contact: String,
    pub(super) expires_at: i64,
    pub(super) call_id: String,
    pub(super) cseq: i64,
    pub(super) path: String,
    pub(super) source: String,
    pub(super) local: String,
    pub(super) transport: String,
    pub(super) user_agent: Option<String>,
    pub(super) instance: Option<String>,
    pub(super) q: Option<String>,
    pub(super) updated: i64,
}

/// The bindings of `rows`; a row whose addresses cannot be read back (edited by hand) is
/// skipped with a warning.
pub(super) fn decode_all(rows: Vec<RegistrationRow>) -> Vec<Registration> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (Ok(source), Ok(local)) = (r.source.parse(), r.local.parse()) else {
            tracing::warn!("store: a registration with an unreadable address skipped");
            continue;
        };
        out.push(Registration {
            account_id: r.account_id,
            device_id: r.device_id,
            contact: r.contact,
            expires_at: u64::try_from(r.expires_at).unwrap_or(0),
            call_id: r.call_id,
            cseq: u32::try_from(r.cseq).unwrap_or(0),
            path: serde_json::from_str(&r.path).unwrap_or_default(),
            source,
            local,
            transport: r.transport,
            user_agent: r.user_agent,
            instance: r.instance,
            q: r.q,
            updated: u64::try_from(r.updated).unwrap_or(0),
        });
    }
    out
}
