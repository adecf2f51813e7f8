//! Pivot debug records (Kazoo's pivot_debug documents): written through the writer queue,
//! read per call and listed per account for the API, purged by age.

use std::time::Duration;

use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use super::{gregorian_now, Db, Store, StoreError};

/// Which of Kazoo's pivot_debug documents a record is (spec e.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Request,
    Response,
    /// Schema error, JSON error, or (pivotd, with `debug` on) a failed request.
    Error,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Request => "request",
            RecordKind::Response => "response",
            RecordKind::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<RecordKind> {
        match s {
            "request" => Some(RecordKind::Request),
            "response" => Some(RecordKind::Response),
            "error" => Some(RecordKind::Error),
            _ => None,
        }
    }
}

/// One pivot debug document. `doc` holds the fields Kazoo stores (`call_id`, `iteration`,
/// and `uri`/`method`/`req_headers`/`req_body`, or `resp_status_code`/`resp_headers`/
/// `resp_body`, or `schema_errors`/`json_errors` with `resp_body`); the other fields are
/// Kazoo's private fields, kept as columns for the queries. Built by `pivot::debug`.
#[derive(Clone, Debug, PartialEq)]
pub struct DebugRecord {
    /// Document id shown by the API (32 hex digits, like a CouchDB id).
    pub id: String,
    pub account_id: String,
    pub call_id: String,
    /// Spec j.14: counts every pivot request of the call from 1.
    pub iteration: u32,
    /// Kazoo's `pvt_node`: which pivotd (or which node) made the request.
    pub node: String,
    pub kind: RecordKind,
    /// Gregorian seconds (spec j.15).
    pub created: i64,
    pub doc: Value,
}

impl DebugRecord {
    /// The record as `GET …/pivot/debug/{CALL_ID}` returns it (spec e.2): the document
    /// augmented with `id`, `created` and `node`.
    pub fn to_api_json(&self) -> Value {
        let mut m = match &self.doc {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("created".into(), Value::from(self.created));
        m.insert("node".into(), Value::String(self.node.clone()));
        Value::Object(m)
    }
}

/// One row of `GET …/pivot/debug` (spec e.2, j.14): a call with debug records, described by
/// its first pivot request. `uri`/`status_code` are `None` when no request/response record of
/// the first iteration exists (`debug` off: only an error record was stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSummary {
    pub call_id: String,
    /// Gregorian seconds of the call's first record.
    pub created: i64,
    /// The first iteration that has records (1 unless those were dropped or purged).
    pub iteration: u32,
    pub node: String,
    /// `resp_status_code` of the first iteration, a string as in Kazoo.
    pub status_code: Option<String>,
    /// Whether any record of the call is a schema-error record.
    pub has_schema_errors: bool,
    /// Whether any record of the call is a JSON-error record.
    pub has_json_errors: bool,
    pub uri: Option<String>,
}

impl CallSummary {
    /// The listing item (absent fields left out, as in Kazoo's example).
    pub fn to_api_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("call_id".into(), Value::String(self.call_id.clone()));
        m.insert("created".into(), Value::from(self.created));
        m.insert("iteration".into(), Value::from(self.iteration));
        m.insert("node".into(), Value::String(self.node.clone()));
        if let Some(s) = &self.status_code {
            m.insert("status_code".into(), Value::String(s.clone()));
        }
        m.insert(
            "has_schema_errors".into(),
            Value::Bool(self.has_schema_errors),
        );
        m.insert("has_json_errors".into(), Value::Bool(self.has_json_errors));
        if let Some(u) = &self.uri {
            m.insert("uri".into(), Value::String(u.clone()));
        }
        Value::Object(m)
    }
}

impl Store {
    /// How many debug records the account has.
    pub fn debug_record_count(&self, account_id: &str) -> Result<u64, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.debug_record_count(account_id),
        };
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pivot_debug WHERE account_id = ?1",
            [account_id],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every debug record of one call of the account, in the order they were written.
    pub fn debug_records(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Vec<DebugRecord>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.debug_records(account_id, call_id),
        };
        records_of_call(&conn, account_id, call_id)
    }

    /// The account's calls with debug records, newest first, at most `limit`.
    pub fn debug_calls(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<CallSummary>, StoreError> {
        self.debug_calls_after(account_id, None, limit)
    }

    /// [`Store::debug_calls`] from a paging key: `after` is the `(created, call_id)` of the
    /// last item of the previous page; the next page starts just past it (same order).
    pub fn debug_calls_after(
        &self,
        account_id: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<CallSummary>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.debug_calls_after(account_id, after, limit),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_created, after_call) = match after {
            Some((c, id)) => (Some(c), Some(id)),
            None => (None, None),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT call_id, MIN(created) AS first_created FROM pivot_debug
             WHERE account_id = ?1
             GROUP BY call_id
             HAVING ?2 IS NULL OR first_created < ?2 OR (first_created = ?2 AND call_id < ?3)
             ORDER BY first_created DESC, call_id DESC
             LIMIT ?4",
        )?;
        let calls = stmt
            .query_map(params![account_id, after_created, after_call, limit], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(calls.len());
        for call_id in calls {
            let recs = records_of_call(&conn, account_id, &call_id)?;
            if let Some(s) = summarize(&recs) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Retention: deletes the debug records and call events older than `age`. Returns how
    /// many went.
    pub fn purge_older_than(&self, age: Duration) -> Result<usize, StoreError> {
        let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        let cutoff = gregorian_now().saturating_sub(age);
        Ok(self.purge_debug_before(cutoff)? + self.purge_events_before(cutoff)?)
    }

    /// Deletes the debug records created before `cutoff` (Gregorian seconds).
    pub fn purge_debug_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.purge_debug_before(cutoff),
        };
        let n = conn.execute("DELETE FROM pivot_debug WHERE created < ?1", [cutoff])?;
        Ok(n)
    }
}

fn records_of_call(
    conn: &Connection,
    account_id: &str,
    call_id: &str,
) -> Result<Vec<DebugRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, account_id, call_id, iteration, node, kind, created, doc FROM pivot_debug
         WHERE account_id = ?1 AND call_id = ?2 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map(params![account_id, call_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(decode).collect()
}

/// A record's columns as both backends read them: id, account, call, iteration, node, kind,
/// created, doc.
pub(super) type RecordRow = (String, String, String, u32, String, String, i64, String);

pub(super) fn decode(
    (id, account_id, call_id, iteration, node, kind, created, doc): RecordRow,
) -> Result<DebugRecord, StoreError> {
    // The CHECK constraint keeps `kind` valid; a row edited by hand falls back to error.
    let kind = RecordKind::parse(&kind).unwrap_or(RecordKind::Error);
    Ok(DebugRecord {
        id,
        account_id,
        call_id,
        iteration,
        node,
        kind,
        created,
        doc: serde_json::from_str(&doc)?,
    })
}

/// Spec e.2 / j.14: the call described by its first iteration's request and response.
pub(super) fn summarize(recs: &[DebugRecord]) -> Option<CallSummary> {
    let first_iter = recs.iter().map(|r| r.iteration).min()?;
    let first = recs.iter().find(|r| r.iteration == first_iter)?;
    let field = |kind: RecordKind, name: &str| {
        recs.iter()
            .filter(|r| r.iteration == first_iter && r.kind == kind)
            .find_map(|r| r.doc.get(name).and_then(Value::as_str).map(str::to_owned))
    };
    Some(CallSummary {
        call_id: first.call_id.clone(),
        created: recs
            .iter()
            .map(|r| r.created)
            .min()
            .unwrap_or(first.created),
        iteration: first_iter,
        node: first.node.clone(),
        status_code: field(RecordKind::Response, "resp_status_code"),
        has_schema_errors: recs.iter().any(|r| r.doc.get("schema_errors").is_some()),
        has_json_errors: recs.iter().any(|r| r.doc.get("json_errors").is_some()),
        uri: field(RecordKind::Request, "uri"),
    })
}

/// The writer's insert of one record.
pub(super) fn insert(conn: &Connection, r: &DebugRecord) -> Result<(), rusqlite::Error> {
    let doc = r.doc.to_string();
    conn.prepare_cached(
        "INSERT INTO pivot_debug (id, account_id, call_id, iteration, node, kind, created, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        r.id,
        r.account_id,
        r.call_id,
        r.iteration,
        r.node,
        r.kind.as_str(),
        r.created,
        doc
    ])?;
    Ok(())
}
