//! The cache of synthesised prompts: one synthesis per key even under concurrent requests,
//! bounded by the bytes of audio held, least recently used evicted first. Apart from the
//! engine because its locking and eviction rules stand on their own.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{lock, Inner, Prompt, TtsError};

/// Cache key: text, engine voice (after mapping), language as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) text: String,
    pub(super) voice: String,
    pub(super) language: Option<String>,
}

type Outcome = Option<Result<Arc<Prompt>, TtsError>>;

enum Slot {
    Ready {
        prompt: Arc<Prompt>,
        cost: usize,
        used: u64,
    },
    /// A synthesis is running; its result is published here (None until done).
    Pending(watch::Receiver<Outcome>),
}

#[derive(Default)]
pub(super) struct Cache {
    slots: HashMap<Key, Slot>,
    pub(super) bytes: usize,
    clock: u64,
}

impl Cache {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Stores a finished prompt, evicting the least recently used until it fits; a prompt
    /// bigger than the whole cache is not kept.
    fn insert(&mut self, key: Key, prompt: Arc<Prompt>, limit: usize) {
        self.slots.remove(&key);
        let cost = cost(&key, &prompt);
        if cost > limit {
            return;
        }
        while self.bytes + cost > limit {
            let oldest = self
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready { used, .. } => Some((*used, k)),
                    Slot::Pending(_) => None,
                })
                .min_by_key(|(used, _)| *used)
                .map(|(_, k)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(Slot::Ready { cost, .. }) = self.slots.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(cost);
            }
        }
        let used = self.tick();
        self.bytes += cost;
        self.slots.insert(key, Slot::Ready { prompt, cost, used });
    }
}

/// Bytes a cached prompt holds: its samples in the three forms, and the key.
fn cost(key: &Key, p: &Prompt) -> usize {
    p.pcm.len() * 2
        + p.pcmu.len()
        + p.pcma.len()
        + key.text.len()
        + key.voice.len()
        + key.language.as_ref().map_or(0, String::len)
}

/// The prompt for `key`: from the cache, from the synthesis already running for it, or from
/// a new one started in its own task.
pub(super) async fn get_or_synthesize(
    inner: &Arc<Inner>,
    key: Key,
) -> Result<Arc<Prompt>, TtsError> {
    let mut rx = {
        let mut cache = lock(&inner.cache);
        let tick = cache.tick();
        match cache.slots.get_mut(&key) {
            Some(Slot::Ready { prompt, used, .. }) => {
                *used = tick;
                return Ok(prompt.clone());
            }
            Some(Slot::Pending(rx)) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                cache.slots.insert(key.clone(), Slot::Pending(rx.clone()));
                // The synthesis runs in its own task so that a caller giving up
                // (hang-up) neither kills it for the others nor leaves them waiting.
                // The guard is made before the spawn so that a task dropped unpolled
                // (runtime shutting down) still clears the slot.
                let mut flight = Flight {
                    inner: inner.clone(),
                    key: key.clone(),
                    tx,
                    done: false,
                };
                tokio::spawn(async move {
                    let result = flight.inner.synthesize(&flight.key).await;
                    flight.finish(result);
                });
                rx
            }
        }
    };
    // Ref holds the channel's read lock: clone out of it at once.
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone(),
        Err(_) => None,
    };
    // None: the synthesis task vanished without a result (runtime shutting down);
    // its guard cleared the slot. Retrying could spin, so say so instead.
    outcome.unwrap_or_else(|| Err(TtsError::Io("synthesis task ended without a result".into())))
}

/// The running synthesis of one key: publishes the result and settles the cache slot, also
/// when the task is dropped before finishing.
struct Flight {
    inner: Arc<Inner>,
    key: Key,
    tx: watch::Sender<Outcome>,
    done: bool,
}

impl Flight {
    fn finish(&mut self, result: Result<Arc<Prompt>, TtsError>) {
        {
            let mut cache = lock(&self.inner.cache);
            match &result {
                Ok(prompt) => cache.insert(
                    self.key.clone(),
                    prompt.clone(),
                    self.inner.limits.cache_bytes,
                ),
                Err(_) => {
                    cache.slots.remove(&self.key);
                }
            }
        }
        self.done = true;
        // Waiters get the result, error included, so a failing hook runs once for them all.
        self.tx.send_replace(Some(result));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.done {
            let mut cache = lock(&self.inner.cache);
            if matches!(cache.slots.get(&self.key), Some(Slot::Pending(_))) {
                cache.slots.remove(&self.key);
            }
        }
    }
}
