//! The PostgreSQL backend (`[store] postgres`): the same tables and behaviour as the SQLite
//! file, in a database several pivotd nodes share.
//!
//! The store's API is blocking (called from `spawn_blocking`, the writer thread and tests),
//! the driver (tokio-postgres, pooled by deadpool-postgres) is async. The backend owns a
//! small runtime of its own, one worker thread, which drives the connections' sockets; a
//! blocking call enters that runtime's context (so a new pooled connection is spawned on
//! it) and polls the query's future on the calling thread, parked between wake-ups
//! ([`block_on`]). No call ever waits on the server's runtime, so the store works the same
//! from any thread, and a slow database holds only the thread that asked.

mod callflows;
mod cdrs;
mod debug;
mod devices;
mod events;
pub(super) mod listen;
mod presence;
mod registrations;
pub(super) mod schema;
mod tokens;
mod users;
mod writer;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

use super::StoreError;
use crate::config::PostgresUrl;

pub(super) use writer::commit;

/// Connections kept open per node: the API's reads and writes and the writer's batches.
const POOL_SIZE: usize = 8;

/// How long opening a connection may take before the call fails (an unreachable server must
/// not hold an API request or the writer for long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may run on the server before it cancels it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection.
pub(super) type Client = deadpool_postgres::Client;

/// A document table's row in its column order (account_id, id, doc, rev, created, modified):
/// callflows and users, as `store/users.rs`'s `Row`.
pub(super) fn doc_row(r: &tokio_postgres::Row) -> Result<super::users::Row, StoreError> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
    ))
}

pub(super) struct Pg {
    pool: Pool,
    /// This store's name in the changes it announces, to know its own when it hears them.
    node: String,
    /// What the listener heard (see `listen.rs`).
    changes: broadcast::Sender<listen::Change>,
    /// What it heard of the other nodes' presence lamps.
    presence: broadcast::Sender<listen::Change>,
    handle: Handle,
    /// `Option` only so that `Drop` can shut it down without waiting for it: a runtime
    /// dropped the ordinary way inside async code panics.
    rt: Option<Runtime>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Pg {
    /// Connects (one connection first, to fail at start when the server is unreachable or
    /// refuses the password) and applies the missing migrations.
    pub(super) fn connect(url: &PostgresUrl) -> Result<Pg, StoreError> {
        let mut cfg: tokio_postgres::Config = url.as_str().parse()?;
        cfg.connect_timeout(CONNECT_TIMEOUT);
        if cfg.get_application_name().is_none() {
            cfg.application_name("pivotd");
        }
        // A database that is connected but stuck (locks, I/O) must not hold an API request or
        // the writer without end: the server cancels a statement after this. The URL's own
        // `options=-c statement_timeout=…` wins.
        let options = cfg.get_options().unwrap_or("").to_owned();
        if !options.contains("statement_timeout") {
            cfg.options(
                format!(
                    "{options} -c statement_timeout={}",
                    STATEMENT_TIMEOUT.as_millis()
                )
                .trim(),
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(StoreError::Thread)?;
        let listen_cfg = cfg.clone();
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                // A connection that broke is seen as closed and replaced; no round trip per
                // checkout to prove a live one.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .build()?;
        // A burst larger than this makes a slow receiver lag, which it takes as a resync.
        let (changes, _) = broadcast::channel(256);
        // Presence comes in bursts (a node's periodic announcement of its lit lamps, in
        // messages of many ids each): room for several nodes' at once.
        let (presence, _) = broadcast::channel(1024);
        let node = format!("{:016x}", rand::random::<u64>());
        let pg = Pg {
            node: node.clone(),
            pool,
            changes: changes.clone(),
            presence: presence.clone(),
            handle: rt.handle().clone(),
            rt: Some(rt),
        };
        pg.run(async |c| schema::migrate(c).await)?;
        let outlets = listen::Outlets { changes, presence };
        pg.handle.spawn(listen::listen(listen_cfg, node, outlets));
        Ok(pg)
    }

    /// A receiver of the changes the nodes announce.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<listen::Change> {
        self.changes.subscribe()
    }

    /// A receiver of the other nodes' presence messages (and of resyncs).
    pub(super) fn subscribe_presence(&self) -> broadcast::Receiver<listen::Change> {
        self.presence.subscribe()
    }

    /// Runs `f` on a pooled connection and waits for it (see the module's note).
    /// The rows `select` (a `SELECT … FROM table` with `account_id`, `created` and `seq`)
    /// gives for one account, or every account with `None`, oldest first.
    pub(super) fn rows_of_account<T>(
        &self,
        select: &str,
        account_id: Option<&str>,
        read: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.run(async |c| {
            let sql =
                format!("{select} WHERE $1::TEXT IS NULL OR account_id = $1 ORDER BY created, seq");
            c.query(&sql, &[&account_id])
                .await?
                .iter()
                .map(read)
                .collect()
        })
    }

    /// The row `select` gives for an account's `id`, if any.
    pub(super) fn row_of_account<T>(
        &self,
        select: &str,
        account_id: &str,
        id: &str,
        read: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.run(async |c| {
            let sql = format!("{select} WHERE account_id = $1 AND id = $2");
            c.query_opt(&sql, &[&account_id, &id])
                .await?
                .as_ref()
                .map(read)
                .transpose()
        })
    }

    pub(super) fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _runtime = self.handle.enter();
        block_on(async {
            let mut client = self.pool.get().await?;
            f(&mut client).await
        })
    }
}

/// Whether an error means the database could not be reached (a write worth retrying later),
/// rather than a statement it refused.
pub(super) fn unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Pool(_) => true,
        StoreError::Postgres(e) => match e.as_db_error() {
            // No server answer at all: the socket closed or failed.
            None => true,
            // Class 08 (connection exception), 57P01..57P03 (the server shutting down or
            // starting).
            Some(db) => {
                let code = db.code().code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
            }
        },
        _ => false,
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` to completion on this thread, parking it until woken. The futures it is given
/// need no runtime of their own: their sockets are driven by the backend's runtime, and
/// pooled clients talk to their connection task through channels.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        // A wake-up that came before this park makes it return at once; a spurious one
        // costs one more poll.
        std::thread::park();
    }
}
