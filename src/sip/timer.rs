//! The timer service the transaction layer shares: one deadline heap per transaction shard,
//! polled by the shard's own task (no sleeping task per transaction).
//!
//! This is pivotd's one timer scheduler. Two other places wait on time, on purpose without
//! it: the RTP pacer (`media::player`) runs a fixed 20 ms grid on dedicated threads, because
//! packets are due within 2 ms and tokio's timer has 1 ms granularity on shared workers; and
//! a call task's own waits (a `sleep` module, a digit timeout) are one `tokio::time` sleep in
//! the task that waits, with nothing to schedule.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

/// RFC 3261 §17 timer base values (Table 4), as `[sip]` configures them.
pub use crate::config::Timers;

impl Timers {
    /// 64*T1: Timers B, F, H, J (and L, M of RFC 6026).
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// The named timers of RFC 3261 §17 (and the 2xx retransmission of §13.3.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
}

/// A scheduled timer, ordered by deadline and then by scheduling order (never by its key).
struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> Entry<K> {
    fn order(&self) -> (Instant, u64) {
        (self.at, self.seq)
    }
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// A min-heap of deadlines. Cancelled timers are not removed: the state machine ignores a
/// timer that no longer applies to its state, which is cheaper than finding it in the heap.
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
    seq: u64,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K> TimerQueue<K> {
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            key,
        }));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e.key),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Sleeps until `deadline`, or forever when there is none: the arm of a task's `select!`
/// that serves its [`TimerQueue`].
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let now = Instant::now();
        let mut q = TimerQueue::default();
        q.schedule(now + Duration::from_millis(30), "c");
        q.schedule(now + Duration::from_millis(10), "a");
        q.schedule(now + Duration::from_millis(20), "b");
        assert_eq!(q.next_deadline(), Some(now + Duration::from_millis(10)));
        assert_eq!(q.pop_due(now), None);
        let later = now + Duration::from_millis(25);
        assert_eq!(q.pop_due(later), Some("a"));
        assert_eq!(q.pop_due(later), Some("b"));
        assert_eq!(q.pop_due(later), None);
        assert_eq!(q.len(), 1);
    }
}
