//! No silent death: panics are counted and logged once, long-lived tasks are watched (and
//! restarted where they can be), and `/healthz` reads [`TaskHealth::degraded`].
//!
//! A leaf module like `logsafe`: the SIP and media layers use it without knowing what reads it.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

static PANICS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// Panics since start, in any task or thread.
pub fn panics_total() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Counts every panic. With `log_only`, the panic is logged as one escaped tracing line with
/// its location instead of the default hook's stderr text (the binary's choice: one line per
/// panic in the journal); without, the previous hook runs too (tests keep their messages).
/// The first call decides; later calls do nothing.
pub fn install_panic_hook(log_only: bool) {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            if !log_only {
                previous(info);
                return;
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-text panic".to_string());
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let thread = std::thread::current();
            tracing::error!(
                thread = thread.name().unwrap_or("?"),
                at = %at,
                panic = %crate::logsafe::wire(&msg),
                "panic"
            );
        }));
    });
}

/// Runs one unit of work (one message, one timer) so that a panic in it costs that unit only:
/// the caller's task goes on. `None` when it panicked (already counted and logged by the hook).
pub fn catch<R>(f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

const RUNNING: u8 = 0;
const RESTARTING: u8 = 1;
const DEAD: u8 = 2;

#[derive(Debug)]
struct Task {
    name: String,
    state: Arc<AtomicU8>,
}

/// The long-lived tasks of the SIP service, and whether each is alive.
#[derive(Debug, Default)]
pub struct TaskHealth {
    tasks: Mutex<Vec<Task>>,
    restarts: AtomicU64,
}

impl TaskHealth {
    pub fn new() -> Arc<TaskHealth> {
        Arc::new(TaskHealth::default())
    }

    fn add(&self, name: String) -> Arc<AtomicU8> {
        let state = Arc::new(AtomicU8::new(RUNNING));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Task {
                name,
                state: state.clone(),
            });
        state
    }

    /// Spawns a task that cannot be restarted (it owns a queue): if it ever ends, panicking
    /// or not, it is reported dead.
    pub fn watch<F>(&self, name: impl Into<String>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let state = self.add(name.clone());
        let inner = tokio::spawn(fut);
        tokio::spawn(async move {
            let how = inner.await;
            state.store(DEAD, Ordering::Relaxed);
            match how {
                Err(e) if e.is_panic() => tracing::error!(task = %name, "task died (panic)"),
                _ => tracing::error!(task = %name, "task ended"),
            }
        });
    }

    /// Spawns a task made by `make`, and makes it again when it panics (after a short pause,
    /// reported as restarting meanwhile). A task that returns is reported dead.
    pub fn supervise<M, F>(self: &Arc<Self>, name: impl Into<String>, make: M)
    where
        M: Fn() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let state = self.add(name.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                state.store(RUNNING, Ordering::Relaxed);
                match tokio::spawn(make()).await {
                    Err(e) if e.is_panic() => {
                        me.restarts.fetch_add(1, Ordering::Relaxed);
                        state.store(RESTARTING, Ordering::Relaxed);
                        tracing::error!(task = %name, "task panicked: restarting");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                    _ => {
                        state.store(DEAD, Ordering::Relaxed);
                        tracing::error!(task = %name, "task ended");
                        return;
                    }
                }
            }
        });
    }

    /// Tasks not running now (dead or restarting): the SIP service is degraded while any is.
    pub fn degraded(&self) -> Vec<String> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| t.state.load(Ordering::Relaxed) != RUNNING)
            .map(|t| t.name.clone())
            .collect()
    }

    /// Restarts after a panic since start.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// How many tasks are not running now, without naming them (for `/metrics`).
    pub fn degraded_count(&self) -> usize {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| t.state.load(Ordering::Relaxed) != RUNNING)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn catch_turns_a_panic_into_none_and_counts_it() {
        install_panic_hook(false);
        let before = panics_total();
        assert_eq!(catch(|| 7), Some(7));
        let v: Vec<u8> = Vec::new();
        assert_eq!(catch(|| v[3]), None);
        assert!(panics_total() > before);
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_degraded_until_it_runs_again() {
        install_panic_hook(false);
        let health = TaskHealth::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        health.supervise("flaky", move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
                std::future::pending::<()>().await;
            }
        });
        let mut seen_degraded = false;
        for _ in 0..200 {
            if !health.degraded().is_empty() {
                seen_degraded = true;
            }
            if runs.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(seen_degraded, "the restart pause is reported as degraded");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(health.degraded().is_empty());
        assert_eq!(health.restarts(), 1);
    }

    #[tokio::test]
    async fn a_watched_task_that_ends_is_reported_dead() {
        let health = TaskHealth::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        health.watch("shard 0", async move {
            let _ = rx.await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(health.degraded().is_empty());
        drop(tx);
        for _ in 0..100 {
            if !health.degraded().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(health.degraded(), vec!["shard 0".to_string()]);
    }
}
