//! Played URLs: `play` ids (and TwiML `<Play>`) that are http/https URLs, fetched through the
//! guarded client with a size and time cap, decoded once, and cached in memory by URL.
//!
//! Freshness, in order:
//! - `Cache-Control: no-store`: used for this play, not kept.
//! - `Cache-Control: max-age=N`: reused for N seconds without any request.
//! - `Cache-Control: no-cache`, or an `ETag`/`Last-Modified` without `max-age`: revalidated
//!   on every use (`If-None-Match` / `If-Modified-Since`; a 304 reuses the decoded prompt, the
//!   same `Arc`). Cheap, and a changed file is heard at once.
//! - Neither validators nor `max-age`: reused for `default_fresh` (60 s), then fetched again.
//!
//! `Expires` and `Age` are not read (max-age is what prompt servers send). When a
//! revalidation fails on the transport or with a 5xx, the cached copy is played (a prompt
//! heard a minute ago beats silence) and the failure is logged; 4xx drops the entry.
//! Concurrent gets of one URL share one download (a per-URL lock; waiters that queued before
//! a check finished reuse its result). The cache is bounded by entry count and by decoded
//! bytes, least recently used first out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::{HttpError, HttpRequest, HttpResponse, PivotHttp};
use crate::logsafe::wire;
use crate::media::prompt::{Prompt, PromptError};

/// Why a played URL gave no prompt.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Refused by the guard, or the transport failed (see [`HttpError`]).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A status other than 2xx (or a 304 to an unconditional request).
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The body is not audio pivotd can play.
    #[error("{url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: PromptError,
    },
}

/// Caps and cache sizes.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Largest file fetched.
    pub max_bytes: usize,
    /// Total time for one fetch (connect, redirects, body).
    pub timeout: Duration,
    /// Most URLs kept.
    pub max_entries: usize,
    /// Most decoded bytes kept (PCM + both G.711 encodings: 4 bytes per 8 kHz sample, so
    /// 32 KB per second of audio).
    pub max_cached_bytes: usize,
    /// How long a response with neither validators nor max-age is reused.
    pub default_fresh: Duration,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            max_bytes: 10 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            max_entries: 64,
            max_cached_bytes: 64 * 1024 * 1024,
            default_fresh: Duration::from_secs(60),
        }
    }
}

struct Entry {
    prompt: Arc<Prompt>,
    etag: Option<String>,
    last_modified: Option<String>,
    fresh_until: Instant,
    /// When the last fetch or revalidation finished.
    checked_at: Instant,
}

/// One URL's lock: held across its download so concurrent gets share it.
#[derive(Default)]
struct Slot {
    entry: tokio::sync::Mutex<Option<Entry>>,
}

struct SlotRef {
    slot: Arc<Slot>,
    last_used: u64,
    /// Decoded bytes held (0 while nothing is cached).
    bytes: usize,
}

#[derive(Default)]
struct Cache {
    slots: HashMap<String, SlotRef>,
    tick: u64,
}

struct Inner {
    http: PivotHttp,
    opts: FetchOptions,
    cache: Mutex<Cache>,
}

/// The played-URL cache; clone freely (shared).
#[derive(Clone)]
pub struct UrlPrompts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UrlPrompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlPrompts")
            .field("opts", &self.inner.opts)
            .field("entries", &self.len())
            .finish()
    }
}

/// What the response says about reuse.
enum Freshness {
    NoStore,
    For(Duration),
    Revalidate,
    /// Nothing said: `default_fresh`.
    Default,
}

impl UrlPrompts {
    pub fn new(http: PivotHttp, opts: FetchOptions) -> UrlPrompts {
        UrlPrompts {
            inner: Arc::new(Inner {
                http,
                opts,
                cache: Mutex::new(Cache::default()),
            }),
        }
    }

    /// URLs currently cached (including downloads under way).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decoded bytes held.
    pub fn cached_bytes(&self) -> usize {
        self.lock().slots.values().map(|s| s.bytes).sum()
    }

    /// The prompt at `url`: from the cache while fresh, revalidated or fetched otherwise.
    pub async fn get(&self, url: &str) -> Result<Arc<Prompt>, FetchError> {
        let asked = Instant::now();
        let inner = &self.inner;
        let mut parsed = inner
            .http
            .guard()
            .check_url_static(url)
            .map_err(HttpError::from)?;
        parsed.set_fragment(None);
        let key = parsed.to_string();
        let slot = self.slot(&key);
        let mut entry = slot.entry.lock().await;

        if let Some(e) = entry.as_ref() {
            // Fresh, or checked by the get we queued behind.
            if Instant::now() < e.fresh_until || e.checked_at >= asked {
                return Ok(e.prompt.clone());
            }
        }

        let mut req = HttpRequest::get(parsed)
            .timeout(inner.opts.timeout)
            .max_body(inner.opts.max_bytes);
        if let Some(e) = entry.as_ref() {
            if let Some(etag) = &e.etag {
                req = req.header("if-none-match", etag);
            }
            if let Some(lm) = &e.last_modified {
                req = req.header("if-modified-since", lm);
            }
        }

        let resp = match inner.http.send(req).await {
            Ok(r) => r,
            Err(err) => {
                if let Some(e) = entry.as_ref() {
                    if !matches!(err, HttpError::Guard(_)) {
                        tracing::warn!(url = %wire(&key), error = %wire(&err.to_string()), "revalidation failed; playing the cached copy");
                        return Ok(e.prompt.clone());
                    }
                }
                *entry = None;
                drop(entry);
                self.forget(&key, &slot);
                return Err(err.into());
            }
        };

        let now = Instant::now();
        if resp.status == 304 {
            if let Some(e) = entry.as_mut() {
                let validators = validators(&resp);
                if validators.0.is_some() {
                    e.etag = validators.0;
                }
                if validators.1.is_some() {
                    e.last_modified = validators.1;
                }
                e.fresh_until = fresh_until(
                    now,
                    freshness(&resp, e.etag.is_some() || e.last_modified.is_some()),
                    inner.opts.default_fresh,
                );
                e.checked_at = now;
                return Ok(e.prompt.clone());
            }
        }
        if !(200..300).contains(&resp.status) {
            if resp.status >= 500 {
                if let Some(e) = entry.as_ref() {
                    tracing::warn!(url = %wire(&key), status = resp.status, "revalidation failed; playing the cached copy");
                    return Ok(e.prompt.clone());
                }
            }
            *entry = None;
            drop(entry);
            self.forget(&key, &slot);
            return Err(FetchError::Status {
                url: key,
                status: resp.status,
            });
        }

        let prompt = match decode(&key, resp.body.clone()).await {
            Ok(p) => Arc::new(p),
            Err(source) => {
                *entry = None;
                drop(entry);
                self.forget(&key, &slot);
                return Err(FetchError::Decode { url: key, source });
            }
        };
        let (etag, last_modified) = validators(&resp);
        let fresh = freshness(&resp, etag.is_some() || last_modified.is_some());
        let size = prompt_bytes(&prompt);
        if matches!(fresh, Freshness::NoStore) || size > inner.opts.max_cached_bytes {
            *entry = None;
            drop(entry);
            self.forget(&key, &slot);
            return Ok(prompt);
        }
        *entry = Some(Entry {
            prompt: prompt.clone(),
            etag,
            last_modified,
            fresh_until: fresh_until(now, fresh, inner.opts.default_fresh),
            checked_at: now,
        });
        drop(entry);
        self.account(&key, &slot, size);
        Ok(prompt)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The URL's slot (new if absent), marked as just used.
    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut cache = self.lock();
        cache.tick += 1;
        let tick = cache.tick;
        let s = cache
            .slots
            .entry(key.to_string())
            .or_insert_with(|| SlotRef {
                slot: Arc::new(Slot::default()),
                last_used: tick,
                bytes: 0,
            });
        s.last_used = tick;
        let slot = s.slot.clone();
        evict(&mut cache, key, &self.inner.opts);
        slot
    }

    /// Drops the URL's slot if it is still this one and holds nothing.
    fn forget(&self, key: &str, slot: &Arc<Slot>) {
        let mut cache = self.lock();
        let ours = cache
            .slots
            .get(key)
            .is_some_and(|s| Arc::ptr_eq(&s.slot, slot));
        // A get waiting on the slot keeps it (it will fetch again itself).
        if ours && Arc::strong_count(slot) <= 2 {
            cache.slots.remove(key);
        }
    }

    /// Records the decoded size and evicts past the caps.
    fn account(&self, key: &str, slot: &Arc<Slot>, bytes: usize) {
        let mut cache = self.lock();
        if let Some(s) = cache.slots.get_mut(key) {
            if Arc::ptr_eq(&s.slot, slot) {
                s.bytes = bytes;
            }
        }
        evict(&mut cache, key, &self.inner.opts);
    }
}

/// Least recently used out until both caps hold; `keep` (the URL being served) stays.
fn evict(cache: &mut Cache, keep: &str, opts: &FetchOptions) {
    loop {
        let total: usize = cache.slots.values().map(|s| s.bytes).sum();
        if cache.slots.len() <= opts.max_entries.max(1) && total <= opts.max_cached_bytes {
            return;
        }
        let victim = cache
            .slots
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                cache.slots.remove(&k);
            }
            None => return,
        }
    }
}

/// Decoding (MP3 especially) is CPU work: off the async threads.
async fn decode(name: &str, body: Bytes) -> Result<Prompt, PromptError> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || Prompt::decode(&name, &body))
        .await
        .unwrap_or_else(|e| Err(PromptError::Decode(format!("decoder task failed: {e}"))))
}

fn prompt_bytes(p: &Prompt) -> usize {
    p.pcm.len() * 2 + p.pcmu.len() + p.pcma.len()
}

fn validators(resp: &HttpResponse) -> (Option<String>, Option<String>) {
    (
        resp.header("etag").map(str::to_string),
        resp.header("last-modified").map(str::to_string),
    )
}

/// Reads `Cache-Control` (every such header; directive names in any case).
fn freshness(resp: &HttpResponse, has_validators: bool) -> Freshness {
    let mut max_age = None;
    let mut no_cache = false;
    for (_, v) in resp.headers.iter().filter(|(n, _)| n == "cache-control") {
        for d in v.split(',') {
            let d = d.trim();
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                return Freshness::NoStore;
            } else if name.eq_ignore_ascii_case("no-cache") {
                no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                if let Some(secs) = value.and_then(|v| v.parse::<u64>().ok()) {
                    max_age = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    match (no_cache, max_age) {
        (true, _) => Freshness::Revalidate,
        (false, Some(age)) => Freshness::For(age),
        (false, None) if has_validators => Freshness::Revalidate,
        (false, None) => Freshness::Default,
    }
}

fn fresh_until(now: Instant, f: Freshness, default_fresh: Duration) -> Instant {
    match f {
        Freshness::NoStore | Freshness::Revalidate => now,
        Freshness::Default => now.checked_add(default_fresh).unwrap_or(now),
        // A huge max-age is capped at a day: far enough, and no Instant overflow.
        Freshness::For(d) => now
            .checked_add(d.min(Duration::from_secs(86_400)))
            .unwrap_or(now),
    }
}
