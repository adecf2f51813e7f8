//! The writer: the bounded queue the call path writes to without waiting, and the one thread
//! that drains it and commits in batches on the write connection (SQLite) or a pooled
//! connection (PostgreSQL).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection};

use super::pg::{self, Pg};
use super::{cdrs, debug, events, lock, presence, registrations};
use super::{
    Cdr, DebugRecord, DeviceBindings, Store, StoreError, StoredEvent, StoredPresence,
    StoredSubscription,
};

/// What the call path hands to the writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Debug(DebugRecord),
    /// One event of a call's log (`events.rs`).
    CallEvent(StoredEvent),
    /// One call's record, written when the call ends.
    Cdr(Cdr),
    /// A device's bindings after a REGISTER changed them (they replace the stored ones).
    Registrations(DeviceBindings),
    /// Bindings that expired before `.0` (Unix seconds) go.
    ExpireRegistrations(u64),
    /// A presence subscription as it stands (created, refreshed, or after a NOTIFY).
    Subscription(StoredSubscription),
    /// A presence subscription that ended.
    EndSubscription {
        call_id: String,
        local_tag: String,
    },
    /// Subscriptions that expired before `.0` (Unix seconds) go.
    ExpireSubscriptions(u64),
    /// A lamp a flow set to ringing or busy.
    PresenceState(StoredPresence),
    /// A lamp back to idle (the presence id).
    ClearPresenceState(String),
    /// A presence message for the other nodes (PostgreSQL's `pivotd_changes`, sent when the
    /// batch commits, so after the writes queued before it); see [`Store::announce`].
    Announce(String),
}

pub(super) enum Msg {
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

/// Where the writer commits.
pub(super) enum Sink {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<Pg>),
}

#[derive(Default)]
pub(super) struct Stats {
    dropped: AtomicU64,
    written: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Commits tried again because the database could not be reached.
    retried: AtomicU64,
    /// Transactions committed (tests: how the writes were batched).
    pub(super) commits: AtomicU64,
    /// Set when the last handle goes: a database that cannot be reached is then given up
    /// on rather than retried.
    pub(super) closing: AtomicBool,
}

/// What a commit came to.
pub(super) enum Committed {
    /// Written, or failed for good (counted in `failed`).
    Done,
    /// The database could not be reached: nothing was written, the batch is still pending.
    Unreachable,
}

/// Messages committed in one transaction at most: large enough to amortise the commit, small
/// enough that a flush waits little.
const BATCH: usize = 256;

/// How long the writer waits after a write arrives on an empty queue before committing: a
/// write is visible to readers up to this much later (and a [`Store::flush`] sent meanwhile
/// waits as long), and under load (one CDR per call) a commit carries many writes, not one.
const LINGER: Duration = Duration::from_millis(20);

/// How long the writer waits before trying a database it could not reach again. Meanwhile
/// the queue takes new writes until it is full (then drops them, counted): the call path
/// never waits.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

impl Stats {
    /// One transaction committed with `ok` writes.
    pub(super) fn committed(&self, ok: u64) {
        self.written.fetch_add(ok, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Store {
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

    /// Writes that reached the writer but failed in the database (logged), or that were
    /// still waiting for an unreachable database when the store closed.
    pub fn failed(&self) -> u64 {
        self.inner.stats.failed.load(Ordering::Relaxed)
    }

    /// Commits tried again because the database could not be reached (PostgreSQL).
    pub fn retried(&self) -> u64 {
        self.inner.stats.retried.load(Ordering::Relaxed)
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

    /// [`Store::flush`] that gives up after `limit` (shutdown: a database that cannot be
    /// reached must not hold the process). The writes stay queued; [`Store::dropped`] and
    /// [`Store::failed`] count what is lost when the store then closes.
    pub fn flush_within(&self, limit: Duration) -> Result<(), StoreError> {
        let tx = self.inner.tx.as_ref().ok_or(StoreError::Closed)?;
        let (ack_tx, ack_rx) = mpsc::channel();
        let deadline = std::time::Instant::now() + limit;
        let mut msg = Msg::Flush(ack_tx);
        // The queue may be full while the writer retries: wait for room, not past the limit.
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::FlushTimedOut(limit));
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ack_rx.recv_timeout(left) {
            Ok(()) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::FlushTimedOut(limit)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Closed),
        }
    }

    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.inner.stats.commits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(super) fn hold_writer(&self) -> mpsc::Sender<()> {
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

pub(super) fn writer_loop(conn: &Sink, rx: &Receiver<Msg>, stats: &Stats) {
    let mut pending: Vec<Write> = Vec::with_capacity(BATCH);
    loop {
        let first = match rx.try_recv() {
            // A backlog: commit it now.
            Ok(msg) => msg,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => match rx.recv() {
                Ok(msg) => {
                    if matches!(msg, Msg::Write(_)) {
                        // Let the writes of the next moments queue up behind this one: one
                        // transaction for them all, and no wake-up of this thread per write.
                        std::thread::sleep(LINGER);
                    }
                    msg
                }
                Err(_) => break,
            },
        };
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

/// Commits the pending writes in one transaction. A write the database refuses is logged
/// and counted, never retried; a database that cannot be reached is tried again every
/// [`RETRY_PAUSE`] with the same batch (this thread waits, the call path does not) until it
/// answers or the store closes.
fn commit(sink: &Sink, pending: &mut Vec<Write>, stats: &Stats) {
    if pending.is_empty() {
        return;
    }
    let conn = match sink {
        Sink::Sqlite(conn) => conn,
        Sink::Postgres(pg) => {
            while let Committed::Unreachable = pg::commit(pg, pending, stats) {
                if stats.closing.load(Ordering::Relaxed) {
                    let n = pending.len() as u64;
                    stats.failed.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(
                        writes = n,
                        "store: database unreachable at close, writes lost"
                    );
                    break;
                }
                stats.retried.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(RETRY_PAUSE);
            }
            pending.clear();
            return;
        }
    };
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
        Ok(ok) => stats.committed(ok),
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
        Write::Debug(r) => debug::insert(conn, r),
        Write::CallEvent(e) => events::insert(conn, e),
        Write::Cdr(c) => cdrs::insert(conn, c),
        Write::Subscription(s) => presence::upsert_subscription(conn, s),
        Write::EndSubscription { call_id, local_tag } => {
            presence::delete_subscription(conn, call_id, local_tag)
        }
        Write::ExpireSubscriptions(before) => presence::expire_subscriptions(conn, *before),
        Write::PresenceState(p) => presence::upsert_state(conn, p),
        Write::ClearPresenceState(id) => presence::delete_state(conn, id),
        // No other node shares a SQLite file (`Store::announce` queues none there).
        Write::Announce(_) => Ok(()),
    }
}
