//! The store: pivot debug records, per-call event logs, callflows, CDRs, registrations, presence subscriptions
//! and lamps, and the API's users and devices, behind one blocking interface ([`Store`])
//! with two backends: an embedded SQLite file (rusqlite, bundled; the default) in WAL mode,
//! or a PostgreSQL database several nodes share (`[store] postgres`, `pg/`). Both have the
//! same tables and a versioned schema numbered alike (`schema.rs`, `pg/schema.rs`).
//!
//! Writes from calls never wait for the database: [`Store::write`] puts the record on a
//! bounded queue read by one writer thread, which commits in batches. When the queue is full
//! the record is dropped and counted ([`Store::dropped`]); the call goes on. A PostgreSQL
//! server that cannot be reached holds the batch in the writer, retried ([`Store::retried`])
//! while the queue takes new writes until it is full. Reads (for the API) use a second
//! SQLite connection, which WAL lets run beside the writer, or the PostgreSQL pool. Reads
//! and [`Store::flush`] block: from async code call them in `spawn_blocking`.

mod callflows;
mod cdrs;
mod debug;
mod devices;
mod events;
mod pg;
mod presence;
mod registrations;
mod schema;
mod tokens;
mod users;
mod writer;

pub use callflows::{CallflowConflict, StoredCallflow};
pub use cdrs::{CallDirection, Cdr, CdrQuery};
pub use debug::{CallSummary, DebugRecord, RecordKind};
pub use devices::{SipCredentials, StoredDevice, UsernameTaken};
pub use events::{trim_value, CallEvent, CallEvents, RecentCall, StoredEvent, MAX_EVENTS_PER_CALL};
pub use pg::listen::Change;
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

use crate::config::{PostgresUrl, StoreConfig};
use pg::Pg;
pub use schema::SCHEMA_VERSION;
use writer::{writer_loop, Msg, Sink, Stats};

/// Longest presence message [`Store::announce`] sends: PostgreSQL's NOTIFY payload is under
/// 8000 bytes, and the channel's name and the `presence:<node>:` prefix come with it.
pub const MAX_ANNOUNCE_BYTES: usize = 7600;

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
    #[error("postgres: {}", causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres: no connection: {}", causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres: cannot build the connection pool: {0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
    #[error("{0} is a SQLite property; this store is PostgreSQL")]
    NotSqlite(&'static str),
    #[error("the store's schema version {found} is newer than this pivotd supports ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("the store could not be put in WAL mode (journal mode is {0:?})")]
    NotWal(String),
    #[error("a stored record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("the store's writes were not all committed within {0:?}")]
    FlushTimedOut(Duration),
    #[error("cannot start the store's threads: {0}")]
    Thread(#[source] std::io::Error),
}

/// `e` and its causes, `: `-separated: the driver says only "db error" and keeps the
/// server's reason (a refused password, a missing table) in its source.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let c_text = c.to_string();
        // A wrapper that prints its source's text already: not twice.
        if !out.ends_with(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        next = c.source();
    }
    out
}

struct Inner {
    /// `Option` only so that `Drop` can close the queue before joining the writer.
    tx: Option<SyncSender<Msg>>,
    backend: Backend,
    stats: Arc<Stats>,
    writer: Option<JoinHandle<()>>,
    capacity: usize,
}

enum Backend {
    /// The read connection; for `:memory:` the same connection as the writer's (an
    /// in-memory database exists only inside its connection).
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<Pg>),
}

/// What a read runs on: the SQLite read connection, locked, or the PostgreSQL pool.
enum Db<'a> {
    Sqlite(MutexGuard<'a, Connection>),
    Postgres(&'a Pg),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is queued and stop; a database that
        // cannot be reached is not waited for.
        self.stats
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
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

    /// Opens the store `[store]` describes: the PostgreSQL database when `postgres` is
    /// given (the SQLite file is then not touched), else the SQLite file.
    pub fn from_config(cfg: &StoreConfig) -> Result<Store, StoreError> {
        match &cfg.postgres {
            Some(url) => Store::open_postgres(url),
            None => Store::open(&cfg.sqlite),
        }
    }

    /// Connects to the PostgreSQL database at `url` (failing when it cannot be reached or
    /// refuses the credentials), applies the missing migrations and starts the writer.
    pub fn open_postgres(url: &PostgresUrl) -> Result<Store, StoreError> {
        Store::open_postgres_with_queue(url, Store::DEFAULT_QUEUE)
    }

    /// [`Store::open_postgres`] with a queue of `capacity` writes (at least 1).
    pub fn open_postgres_with_queue(
        url: &PostgresUrl,
        capacity: usize,
    ) -> Result<Store, StoreError> {
        let pg = Arc::new(Pg::connect(url)?);
        Store::start(
            Backend::Postgres(Arc::clone(&pg)),
            Sink::Postgres(pg),
            capacity,
        )
    }

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

        Store::start(Backend::Sqlite(reader), Sink::Sqlite(wconn), capacity)
    }

    /// Starts the writer thread on `sink` and wraps the handle.
    fn start(backend: Backend, sink: Sink, capacity: usize) -> Result<Store, StoreError> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let stats = Arc::new(Stats::default());
        let wstats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&sink, &rx, &wstats))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            inner: Arc::new(Inner {
                tx: Some(tx),
                backend,
                stats,
                writer: Some(writer),
                capacity,
            }),
        })
    }

    /// The API changes every node sharing this PostgreSQL store announces (its own
    /// included), for caches to reload; `None` for SQLite, which one node owns.
    pub fn subscribe_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        match &self.inner.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.subscribe()),
        }
    }

    /// The other nodes' presence messages (`Change::Presence`) and the listener's resyncs,
    /// on a channel of their own; `None` for SQLite.
    pub fn subscribe_presence(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        match &self.inner.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.subscribe_presence()),
        }
    }

    /// Tells the other nodes a presence message (`body`, the presence layer's text) through
    /// the writer queue: never blocks, sent when its batch commits, in order with the writes
    /// queued before it (a flow's lamp is stored before it is announced). Nothing on SQLite;
    /// a body too long for a PostgreSQL `NOTIFY` is dropped (logged): the sender keeps under
    /// [`MAX_ANNOUNCE_BYTES`].
    pub fn announce(&self, body: String) -> bool {
        if !self.is_postgres() {
            return false;
        }
        if body.len() > MAX_ANNOUNCE_BYTES {
            tracing::warn!(
                bytes = body.len(),
                "store: a presence message too long, dropped"
            );
            return false;
        }
        self.write(Write::Announce(body))
    }

    /// Whether this store is a PostgreSQL database (`[store] postgres`).
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner.backend, Backend::Postgres(_))
    }

    /// The schema version of the open database (= [`SCHEMA_VERSION`] after `open`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        match self.db() {
            Db::Sqlite(c) => schema::user_version(&c),
            Db::Postgres(pg) => pg.run(async |c| pg::schema::version(&***c).await),
        }
    }

    /// `PRAGMA journal_mode` of the read connection: `"wal"` for a file, `"memory"` for
    /// `:memory:`.
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        let Db::Sqlite(c) = self.db() else {
            return Err(StoreError::NotSqlite("journal_mode"));
        };
        let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        Ok(mode.to_ascii_lowercase())
    }

    /// Whether the store answers a query (for `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        match self.db() {
            Db::Sqlite(c) => {
                let _: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
            }
            Db::Postgres(pg) => {
                pg.run(async |c| Ok(c.simple_query("SELECT 1").await?))?;
            }
        }
        Ok(())
    }

    /// What the submodules' reads and the API's own (rare, small) writes run on.
    fn db(&self) -> Db<'_> {
        match &self.inner.backend {
            Backend::Sqlite(c) => Db::Sqlite(lock(c)),
            Backend::Postgres(pg) => Db::Postgres(pg),
        }
    }
}

#[cfg(test)]
mod tests;
