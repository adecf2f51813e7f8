//! The embedded store (SQLite through rusqlite, bundled): pivot debug records, callflows,
//! CDRs, registrations, and the API's users and devices, in one file with a versioned schema
//! (`schema.rs`) in WAL mode.
//!
//! Writes from calls never wait for the disk: [`Store::write`] puts the record on a bounded
//! queue read by one writer thread, which owns the write connection and commits in batches.
//! When the queue is full the record is dropped and counted ([`Store::dropped`]); the call
//! goes on. Reads (for the API) use a second connection, which WAL lets run beside the
//! writer. Reads and [`Store::flush`] block: from async code call them in `spawn_blocking`.

mod callflows;
mod cdrs;
mod devices;
mod registrations;
mod schema;
mod users;

pub use callflows::{CallflowConflict, StoredCallflow};
pub use cdrs::{Cdr, CdrQuery};
pub use devices::{SipCredentials, StoredDevice, UsernameTaken};
pub use registrations::{DeviceBindings, Registration};
pub use users::StoredUser;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use serde_json::{Map, Value};

pub use schema::SCHEMA_VERSION;

/// Seconds from 0000-01-01 (proleptic Gregorian, Erlang's `calendar` epoch) to 1970-01-01.
/// Kazoo stamps documents in Gregorian seconds (spec j.15: `63635231906`).
pub const GREGORIAN_OFFSET: i64 = 62_167_219_200;

/// Unix seconds to Gregorian seconds.
pub fn unix_to_gregorian(unix: i64) -> i64 {
    unix.saturating_add(GREGORIAN_OFFSET)
}

/// Now, in Gregorian seconds. A clock before 1970 counts as 1970.
pub fn gregorian_now() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix_to_gregorian(unix)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's schema version {found} is newer than this pivotd supports ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("the store could not be put in WAL mode (journal mode is {0:?})")]
    NotWal(String),
    #[error("a stored record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("cannot start the store's writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

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

/// What the call path hands to the writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Debug(DebugRecord),
    /// One call's record, written when the call ends.
    Cdr(Cdr),
    /// A device's bindings after a REGISTER changed them (they replace the stored ones).
    Registrations(DeviceBindings),
    /// Bindings that expired before `.0` (Unix seconds) go.
    ExpireRegistrations(u64),
}

enum Msg {
    Write(Write),
    /// Acknowledged once every message queued before it is committed.
    Flush(mpsc::Sender<()>),
    /// Test hook: the writer says it is held, then waits for the release.
    #[cfg(test)]
    Hold {
        entered: mpsc::Sender<()>,
        release: Receiver<()>,
    },
}

#[derive(Default)]
struct Stats {
    dropped: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
}

struct Inner {
    /// `Option` only so that `Drop` can close the queue before joining the writer.
    tx: Option<SyncSender<Msg>>,
    /// The read connection; for `:memory:` the same connection as the writer's (an
    /// in-memory database exists only inside its connection).
    reader: Arc<Mutex<Connection>>,
    stats: Arc<Stats>,
    writer: Option<JoinHandle<()>>,
    capacity: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is queued and stop.
        self.tx = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// Handle on the store; cheap to clone, shared by all calls. The writer thread stops (after
/// committing what is queued) when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Messages committed in one transaction at most: large enough to amortise the commit, small
/// enough that a flush waits little.
const BATCH: usize = 256;
/// How long a connection waits for the other one's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (it rolls back open work), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

impl Store {
    /// Queue length used by [`Store::open`].
    pub const DEFAULT_QUEUE: usize = 4096;

    /// Opens (creating if needed) the store at `path`, or an in-memory one for `":memory:"`,
    /// applies the missing migrations, sets WAL mode and starts the writer.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with_queue(path, Store::DEFAULT_QUEUE)
    }

    /// [`Store::open`] with a queue of `capacity` writes (at least 1).
    pub fn open_with_queue(path: impl AsRef<Path>, capacity: usize) -> Result<Store, StoreError> {
        let path = path.as_ref();
        let memory = path.as_os_str() == ":memory:";
        let open = |p: &Path| -> Result<Connection, StoreError> {
            let c = if memory {
                Connection::open_in_memory()
            } else {
                Connection::open(p)
            };
            let c = c.map_err(|source| StoreError::Open {
                path: p.to_path_buf(),
                source,
            })?;
            configure(&c)?;
            Ok(c)
        };
        let mut wconn = open(path)?;
        if !memory {
            let mode: String =
                wconn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::NotWal(mode));
            }
            // In WAL mode NORMAL cannot corrupt the file; a power cut may lose the last commits.
            wconn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        schema::migrate(&mut wconn)?;
        let wconn = Arc::new(Mutex::new(wconn));
        let reader = if memory {
            Arc::clone(&wconn)
        } else {
            Arc::new(Mutex::new(open(path)?))
        };

        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let stats = Arc::new(Stats::default());
        let wstats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&wconn, &rx, &wstats))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            inner: Arc::new(Inner {
                tx: Some(tx),
                reader,
                stats,
                writer: Some(writer),
                capacity,
            }),
        })
    }

    /// Queues a write; never blocks. Returns false when the write was dropped (queue full,
    /// or the writer stopped), which [`Store::dropped`] counts.
    pub fn write(&self, w: Write) -> bool {
        let sent = match &self.inner.tx {
            Some(tx) => match tx.try_send(Msg::Write(w)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Writes dropped because the queue was full (or the writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.inner.stats.dropped.load(Ordering::Relaxed)
    }

    /// Writes committed.
    pub fn written(&self) -> u64 {
        self.inner.stats.written.load(Ordering::Relaxed)
    }

    /// Writes that reached the writer but failed in SQLite (logged).
    pub fn failed(&self) -> u64 {
        self.inner.stats.failed.load(Ordering::Relaxed)
    }

    /// The queue's capacity.
    pub fn queue_capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Blocks until every write queued before this call is committed (tests, shutdown).
    /// Unlike [`Store::write`] this waits for room in the queue.
    pub fn flush(&self) -> Result<(), StoreError> {
        let tx = self.inner.tx.as_ref().ok_or(StoreError::Closed)?;
        let (ack_tx, ack_rx) = mpsc::channel();
        tx.send(Msg::Flush(ack_tx))
            .map_err(|_| StoreError::Closed)?;
        ack_rx.recv().map_err(|_| StoreError::Closed)
    }

    /// The schema version of the open file (= [`SCHEMA_VERSION`] after `open`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::user_version(&lock(&self.inner.reader))
    }

    /// `PRAGMA journal_mode` of the read connection: `"wal"` for a file, `"memory"` for
    /// `:memory:`.
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        let mode: String =
            lock(&self.inner.reader).pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        Ok(mode.to_ascii_lowercase())
    }

    /// Whether the store answers a query (for `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = lock(&self.inner.reader).query_row("SELECT 1", [], |r| r.get(0))?;
        Ok(())
    }

    /// How many debug records the account has.
    pub fn debug_record_count(&self, account_id: &str) -> Result<u64, StoreError> {
        let n: i64 = lock(&self.inner.reader).query_row(
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
        records_of_call(&lock(&self.inner.reader), account_id, call_id)
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
        let conn = lock(&self.inner.reader);
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

    /// Retention: deletes the debug records older than `age`. Returns how many went.
    pub fn purge_older_than(&self, age: Duration) -> Result<usize, StoreError> {
        let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        self.purge_debug_before(gregorian_now().saturating_sub(age))
    }

    /// Deletes the debug records created before `cutoff` (Gregorian seconds).
    pub fn purge_debug_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let n = lock(&self.inner.reader)
            .execute("DELETE FROM pivot_debug WHERE created < ?1", [cutoff])?;
        Ok(n)
    }

    /// The read connection, for the submodules' reads and the API's own (rare, small) writes.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.reader)
    }

    #[cfg(test)]
    fn hold_writer(&self) -> mpsc::Sender<()> {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        if let Some(tx) = &self.inner.tx {
            let _ = tx.send(Msg::Hold {
                entered: entered_tx,
                release: release_rx,
            });
        }
        let _ = entered_rx.recv();
        release_tx
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
    let mut out = Vec::with_capacity(rows.len());
    for (id, account_id, call_id, iteration, node, kind, created, doc) in rows {
        // The CHECK constraint keeps `kind` valid; a file edited by hand falls back to error.
        let kind = RecordKind::parse(&kind).unwrap_or(RecordKind::Error);
        out.push(DebugRecord {
            id,
            account_id,
            call_id,
            iteration,
            node,
            kind,
            created,
            doc: serde_json::from_str(&doc)?,
        });
    }
    Ok(out)
}

/// Spec e.2 / j.14: the call described by its first iteration's request and response.
fn summarize(recs: &[DebugRecord]) -> Option<CallSummary> {
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

fn writer_loop(conn: &Mutex<Connection>, rx: &Receiver<Msg>, stats: &Stats) {
    let mut pending: Vec<Write> = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            taken += 1;
            match msg {
                Msg::Write(w) => pending.push(w),
                Msg::Flush(ack) => {
                    commit(conn, &mut pending, stats);
                    let _ = ack.send(());
                }
                #[cfg(test)]
                Msg::Hold { entered, release } => {
                    commit(conn, &mut pending, stats);
                    let _ = entered.send(());
                    let _ = release.recv();
                }
            }
            if taken < BATCH {
                next = rx.try_recv().ok();
            }
        }
        commit(conn, &mut pending, stats);
    }
}

/// Commits the pending writes in one transaction; failures are logged and counted, never
/// retried (the call path must not wait for them).
fn commit(conn: &Mutex<Connection>, pending: &mut Vec<Write>, stats: &Stats) {
    if pending.is_empty() {
        return;
    }
    let n = pending.len() as u64;
    let mut conn = lock(conn);
    let result = (|| -> Result<u64, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut ok = 0;
        for w in pending.drain(..) {
            match insert(&tx, &w) {
                Ok(()) => ok += 1,
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "store: write failed");
                }
            }
        }
        tx.commit()?;
        Ok(ok)
    })();
    match result {
        Ok(ok) => {
            stats.written.fetch_add(ok, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(error = %e, writes = n, "store: commit failed");
        }
    }
    pending.clear();
}

fn insert(conn: &Connection, w: &Write) -> Result<(), rusqlite::Error> {
    match w {
        Write::Registrations(d) => registrations::replace(conn, d),
        Write::ExpireRegistrations(before) => {
            conn.prepare_cached("DELETE FROM registrations WHERE expires_at <= ?1")?
                .execute(params![*before as i64])?;
            Ok(())
        }
        Write::Debug(r) => {
            let doc = r.doc.to_string();
            conn.prepare_cached(
                "INSERT INTO pivot_debug (id, account_id, call_id, iteration, node, kind, created, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
        Write::Cdr(c) => cdrs::insert(conn, c),
    }
}

#[cfg(test)]
mod tests;
