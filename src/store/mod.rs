//! The embedded store (SQLite through rusqlite, bundled): pivot debug records, callflows,
//! CDRs, registrations, presence subscriptions and lamps, and the API's users and devices, in one file with a versioned schema
//! (`schema.rs`) in WAL mode.
//!
//! Writes from calls never wait for the disk: [`Store::write`] puts the record on a bounded
//! queue read by one writer thread, which owns the write connection and commits in batches.
//! When the queue is full the record is dropped and counted ([`Store::dropped`]); the call
//! goes on. Reads (for the API) use a second connection, which WAL lets run beside the
//! writer. Reads and [`Store::flush`] block: from async code call them in `spawn_blocking`.

mod callflows;
mod cdrs;
mod debug;
mod devices;
mod presence;
mod registrations;
mod schema;
mod users;
mod writer;

pub use callflows::{CallflowConflict, StoredCallflow};
pub use cdrs::{CallDirection, Cdr, CdrQuery};
pub use debug::{CallSummary, DebugRecord, RecordKind};
pub use devices::{SipCredentials, StoredDevice, UsernameTaken};
pub use presence::{StoredPresence, StoredSubscription};
pub use registrations::{DeviceBindings, Registration};
pub use users::StoredUser;
pub use writer::Write;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use schema::SCHEMA_VERSION;
use writer::{writer_loop, Msg, Stats};

/// Seconds from 0000-01-01 (proleptic Gregorian, Erlang's `calendar` epoch) to 1970-01-01.
/// Kazoo stamps documents in Gregorian seconds (spec j.15: `63635231906`).
pub const GREGORIAN_OFFSET: i64 = 62_167_219_200;

/// Unix seconds to Gregorian seconds.
pub fn unix_to_gregorian(unix: i64) -> i64 {
    unix.saturating_add(GREGORIAN_OFFSET)
}

/// Now, in Unix seconds (the times registrations and subscriptions are kept in). A clock
/// before 1970 counts as 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    /// The read connection, for the submodules' reads and the API's own (rare, small) writes.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.reader)
    }
}

#[cfg(test)]
mod tests;
