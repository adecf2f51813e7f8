//! Per-source limits: what one remote address may ask of pivotd.
//!
//! Every datagram and TCP message passes [`SourceGuard::admit_message`] before it is parsed
//! (a token bucket of requests per second, and the block list of scanners and sources that
//! collect too many 404/403s); every new call takes a [`CallSlot`] from
//! [`SourceGuard::admit_call`] (concurrent calls and new calls per second); every TCP
//! connection a [`ConnSlot`]. Trusted sources (carriers, a proxy in front, a load generator)
//! pass untouched: they are held to the global limits only.
//!
//! The table is split in a few mutex-guarded shards by address, and bounded: when it is full
//! (a flood from spoofed addresses), idle entries are evicted first and a new address that
//! still finds no room is refused calls (503) and its messages are held to one shared bucket,
//! so a table-filling attacker cannot crowd out the addresses already known.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::transport;
use crate::config::SourceLimits;

/// Why a source's message or call was refused: one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceRefusal {
    /// Over the per-source message rate: dropped before parsing.
    RequestRate,
    /// A blocked address (scanner, too many failures): dropped.
    Blocked,
    /// A scanner's User-Agent: dropped, and the address blocked.
    Scanner,
    /// Too many calls at once from the address: 503.
    Calls,
    /// Too many new calls per second from the address: 503.
    CallRate,
    /// Too many TCP connections from the address: closed at once.
    TcpConnections,
    /// The table of sources is full of busy addresses: the new one is refused.
    TableFull,
}

impl SourceRefusal {
    pub const ALL: [SourceRefusal; 7] = [
        SourceRefusal::RequestRate,
        SourceRefusal::Blocked,
        SourceRefusal::Scanner,
        SourceRefusal::Calls,
        SourceRefusal::CallRate,
        SourceRefusal::TcpConnections,
        SourceRefusal::TableFull,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            SourceRefusal::RequestRate => "source_request_rate",
            SourceRefusal::Blocked => "source_blocked",
            SourceRefusal::Scanner => "scanner",
            SourceRefusal::Calls => "source_calls",
            SourceRefusal::CallRate => "source_call_rate",
            SourceRefusal::TcpConnections => "source_tcp_connections",
            SourceRefusal::TableFull => "source_table_full",
        }
    }
}

/// Addresses tracked at most (about 100 bytes each).
const MAX_SOURCES: usize = 100_000;
const SHARDS: usize = 16;
/// A full shard looks for idle entries to evict at most this often: during a spoofed flood
/// nothing is idle, and a scan per packet would hold the shard's lock for each one.
const EVICT_EVERY: Duration = Duration::from_secs(1);
/// An entry with nothing live and no activity for this long may be evicted.
const IDLE: Duration = Duration::from_secs(120);

/// A token bucket refilled continuously: the one rate limiter of the crate (per source here,
/// and the global call rate in admission).
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket holding `capacity` tokens.
    pub fn full(capacity: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one; refills at `rate` per second up to `capacity`.
    pub fn take(&mut self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Entry {
    requests: TokenBucket,
    calls_rate: TokenBucket,
    calls: u32,
    tcp: u32,
    failures: u32,
    failures_since: Instant,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

impl Entry {
    fn new(p: &SourceLimits, now: Instant) -> Entry {
        Entry {
            requests: TokenBucket::full(req_capacity(p), now),
            calls_rate: TokenBucket::full(f64::from(p.calls_per_second), now),
            calls: 0,
            tcp: 0,
            failures: 0,
            failures_since: now,
            blocked_until: None,
            last_seen: now,
        }
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }

    fn evictable(&self, now: Instant) -> bool {
        self.calls == 0
            && self.tcp == 0
            && !self.blocked(now)
            && now.saturating_duration_since(self.last_seen) >= IDLE
    }
}

fn req_capacity(p: &SourceLimits) -> f64 {
    f64::from(p.requests_per_second) * 2.0
}

/// Counters of refusals, by reason: one count per refusal. A refused call is counted here
/// only; admission's 503s for a source's limits read [`SourceStats::calls_refused`].
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Messages and TCP connections refused.
    refused: [AtomicU64; SourceRefusal::ALL.len()],
    /// New calls refused (each answered 503).
    calls_refused: [AtomicU64; SourceRefusal::ALL.len()],
    /// Addresses blocked since start.
    pub blocks: AtomicU64,
}

impl SourceStats {
    fn count(&self, why: SourceRefusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn count_call(&self, why: SourceRefusal) {
        self.calls_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages, calls and connections refused for `why`.
    pub fn refused(&self, why: SourceRefusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed) + self.calls_refused(why)
    }

    /// New calls refused for `why`.
    pub fn calls_refused(&self, why: SourceRefusal) -> u64 {
        self.calls_refused[why as usize].load(Ordering::Relaxed)
    }
}

/// One shard of the table.
#[derive(Debug)]
struct Shard {
    entries: HashMap<IpAddr, Entry>,
    /// When a full shard may next scan for idle entries.
    next_evict: Instant,
}

/// The per-source table, shared by the transport, the endpoint and admission.
#[derive(Debug)]
pub struct SourceGuard {
    /// Swapped whole by a reload; each decision reads one snapshot.
    limits: RwLock<Arc<SourceLimits>>,
    shards: Vec<Mutex<Shard>>,
    /// Keyed, so an attacker cannot aim its addresses at one shard.
    shard_of: RandomState,
    /// Messages of addresses the full table has no room for.
    overflow: Mutex<TokenBucket>,
    pub stats: SourceStats,
}

impl SourceGuard {
    pub fn new(limits: SourceLimits) -> Arc<SourceGuard> {
        let now = Instant::now();
        Arc::new(SourceGuard {
            overflow: Mutex::new(TokenBucket::full(req_capacity(&limits), now)),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        next_evict: now,
                    })
                })
                .collect(),
            shard_of: RandomState::new(),
            limits: RwLock::new(Arc::new(limits)),
            stats: SourceStats::default(),
        })
    }

    /// The limits in force.
    fn limits(&self) -> Arc<SourceLimits> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reload's limits: the next message, call and connection are held to them. A
    /// source's rate buckets included: each take reads the rate and size in force (a smaller
    /// bucket is cut down at once, a larger one fills at the new rate).
    pub fn set_limits(&self, limits: SourceLimits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(limits);
    }

    /// Whether the address is one of `trusted` (IPv4-mapped IPv6 addresses compare as IPv4).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted(ip.to_canonical())
    }

    /// [`SourceGuard::is_trusted`] of an address already in canonical form.
    fn trusted(&self, ip: IpAddr) -> bool {
        self.limits().trusted.iter().any(|n| n.contains(&ip))
    }

    /// Whether an address (canonical form) is one of `trusted_proxies`.
    fn proxy(&self, ip: IpAddr) -> bool {
        self.limits().proxies.iter().any(|n| n.contains(&ip))
    }

    /// Who sent a request that arrived from `remote`, for every per-source decision (limits,
    /// blocking, carrier, credentials, logs): from a trusted proxy, the hop before it (its
    /// Via as the proxy stamped it), or the proxy itself when it originated the request (one
    /// Via); from anyone else, `remote` — a second Via is never believed from them. Responses
    /// still go to `remote` (the top Via).
    pub fn caller(&self, req: &rsip::Request, remote: SocketAddr) -> SocketAddr {
        if !self.proxy(remote.ip().to_canonical()) {
            return remote;
        }
        transport::previous_hop(req).unwrap_or(remote)
    }

    fn shard(&self, ip: &IpAddr) -> MutexGuard<'_, Shard> {
        let i = (self.shard_of.hash_one(ip) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the entry of `ip` (canonical form), created if there is room. None: the
    /// table is full.
    fn with_entry<R>(
        &self,
        ip: IpAddr,
        now: Instant,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        let mut shard = self.shard(&ip);
        if let Some(e) = shard.entries.get_mut(&ip) {
            e.last_seen = now;
            return Some(f(e));
        }
        if shard.entries.len() >= MAX_SOURCES / SHARDS {
            if now < shard.next_evict {
                return None;
            }
            shard.next_evict = now + EVICT_EVERY;
            shard.entries.retain(|_, e| !e.evictable(now));
            if shard.entries.len() >= MAX_SOURCES / SHARDS {
                return None;
            }
        }
        let e = shard
            .entries
            .entry(ip)
            .or_insert_with(|| Entry::new(&self.limits(), now));
        Some(f(e))
    }

    /// One framed message (request or response) from `ip`, before parsing: whether to go on.
    pub fn admit_message(&self, ip: IpAddr) -> Result<(), SourceRefusal> {
        let ip = ip.to_canonical();
        // One snapshot per message (the hot path takes the lock once).
        let p = self.limits();
        // A proxy's messages carry many callers: they are limited per caller after parsing.
        if p.trusted.iter().any(|n| n.contains(&ip)) || p.proxies.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        let now = Instant::now();
        let rate = f64::from(p.requests_per_second);
        let verdict = self.with_entry(ip, now, |e| {
            if e.blocked(now) {
                Err(SourceRefusal::Blocked)
            } else if p.requests_per_second > 0 && !e.requests.take(rate, req_capacity(&p), now) {
                Err(SourceRefusal::RequestRate)
            } else {
                Ok(())
            }
        });
        let verdict = verdict.unwrap_or_else(|| {
            let mut b = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            if p.requests_per_second == 0 || b.take(rate, req_capacity(&p), now) {
                Ok(())
            } else {
                Err(SourceRefusal::TableFull)
            }
        });
        if let Err(why) = verdict {
            self.stats.count(why);
        }
        verdict
    }

    /// A new call from `ip`: its slot (held for the call's life), or why not (answer 503).
    pub fn admit_call(self: &Arc<Self>, ip: IpAddr) -> Result<CallSlot, SourceRefusal> {
        let p = self.limits();
        let cps = f64::from(p.calls_per_second);
        self.take_slot(ip, SlotKind::Call, |e, now| {
            if p.max_calls > 0 && e.calls >= p.max_calls {
                return Err(SourceRefusal::Calls);
            }
            if p.calls_per_second > 0 && !e.calls_rate.take(cps, cps, now) {
                return Err(SourceRefusal::CallRate);
            }
            e.calls += 1;
            Ok(())
        })
    }

    /// A TCP connection accepted from `ip`: its slot, or why it must be closed.
    pub fn admit_connection(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, SourceRefusal> {
        let p = self.limits();
        self.take_slot(ip, SlotKind::Connection, |e, now| {
            if e.blocked(now) {
                Err(SourceRefusal::Blocked)
            } else if p.tcp_connections > 0 && e.tcp >= p.tcp_connections {
                Err(SourceRefusal::TcpConnections)
            } else {
                e.tcp += 1;
                Ok(())
            }
        })
    }

    /// A place in the source's count of `kind`, taken by `take` (which checks the limits and
    /// counts the place in), or the refusal, counted. Trusted sources take no place.
    fn take_slot(
        self: &Arc<Self>,
        ip: IpAddr,
        kind: SlotKind,
        take: impl FnOnce(&mut Entry, Instant) -> Result<(), SourceRefusal>,
    ) -> Result<Slot, SourceRefusal> {
        let ip = ip.to_canonical();
        // A proxy's TCP connection carries many callers; its calls are the callers' own.
        if self.trusted(ip) || (kind == SlotKind::Connection && self.proxy(ip)) {
            return Ok(Slot {
                guard: None,
                ip,
                kind,
            });
        }
        let now = Instant::now();
        match self
            .with_entry(ip, now, |e| take(e, now))
            .unwrap_or(Err(SourceRefusal::TableFull))
        {
            Ok(()) => Ok(Slot {
                guard: Some(self.clone()),
                ip,
                kind,
            }),
            Err(why) => {
                match kind {
                    SlotKind::Call => self.stats.count_call(why),
                    SlotKind::Connection => self.stats.count(why),
                }
                Err(why)
            }
        }
    }

    /// Whether a User-Agent is a scanner's (the list holds lowercase substrings).
    pub fn is_scanner(&self, user_agent: &str) -> bool {
        let ua = user_agent.as_bytes();
        self.limits().scanner_user_agents.iter().any(|s| {
            !s.is_empty()
                && ua
                    .windows(s.len())
                    .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
        })
    }

    /// A request's User-Agent from `ip`: true when it is a scanner's and the address is not
    /// trusted — the request is to be dropped; the refusal is counted and the address blocked.
    pub fn screen_scanner(&self, ip: IpAddr, user_agent: &str) -> bool {
        let ip = ip.to_canonical();
        if self.trusted(ip) || !self.is_scanner(user_agent) {
            return false;
        }
        self.stats.count(SourceRefusal::Scanner);
        self.block(ip);
        true
    }

    /// A request from `ip` answered with a failure that scanning draws (404, 403, 484 …):
    /// too many in a minute block the address.
    pub fn failure(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if self.trusted(ip) || self.limits().failures_per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let limit = self.limits().failures_per_minute;
        let over = self
            .with_entry(ip, now, |e| {
                if now.saturating_duration_since(e.failures_since) >= Duration::from_secs(60) {
                    e.failures = 0;
                    e.failures_since = now;
                }
                e.failures += 1;
                e.failures > limit
            })
            .unwrap_or(false);
        if over {
            self.block(ip);
        }
    }

    /// Blocks `ip` (canonical form) for the configured time.
    fn block(&self, ip: IpAddr) {
        // A proxy is never blocked: that would cut off every caller behind it.
        if self.trusted(ip) || self.proxy(ip) || self.limits().block.is_zero() {
            return;
        }
        let now = Instant::now();
        let until = now + self.limits().block;
        let newly = self
            .with_entry(ip, now, |e| {
                let newly = !e.blocked(now);
                e.blocked_until = Some(until);
                newly
            })
            .unwrap_or(false);
        if newly {
            self.stats.blocks.fetch_add(1, Ordering::Relaxed);
            tracing::info!(source = %ip, seconds = self.limits().block.as_secs(), "source blocked");
        }
    }

    /// Addresses blocked now.
    pub fn blocked_now(&self) -> usize {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entries
                    .values()
                    .filter(|e| e.blocked(now))
                    .count()
            })
            .sum()
    }

    /// Addresses in the table now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }

    /// Drops idle entries and gives their memory back; run now and then.
    pub fn sweep(&self) {
        let now = Instant::now();
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.entries.retain(|_, e| !e.evictable(now));
            if s.entries.capacity() > 4 * s.entries.len().max(64) {
                s.entries.shrink_to_fit();
            }
        }
    }

    fn release(&self, ip: IpAddr, kind: SlotKind) {
        let mut shard = self.shard(&ip);
        if let Some(e) = shard.entries.get_mut(&ip) {
            match kind {
                SlotKind::Call => e.calls = e.calls.saturating_sub(1),
                SlotKind::Connection => e.tcp = e.tcp.saturating_sub(1),
            }
        }
    }
}

/// What a [`Slot`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    Call,
    Connection,
}

/// A place in its source's count of calls or TCP connections: given back when dropped.
#[derive(Debug)]
pub struct Slot {
    /// None for a trusted source, which is not counted.
    guard: Option<Arc<SourceGuard>>,
    /// Canonical form.
    ip: IpAddr,
    kind: SlotKind,
}

/// A call's place in its source's count.
pub type CallSlot = Slot;
/// A TCP connection's place in its source's count.
pub type ConnSlot = Slot;

impl Slot {
    /// Whether the source is trusted (the slot counts nothing then).
    pub fn trusted(&self) -> bool {
        self.guard.is_none()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = &self.guard {
            g.release(self.ip, self.kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard(f: impl FnOnce(&mut SourceLimits)) -> Arc<SourceGuard> {
        let mut p = SourceLimits::default();
        f(&mut p);
        SourceGuard::new(p)
    }

    /// A request of `vias` (top first) from whoever sends it.
    fn request(vias: &[&str]) -> rsip::Request {
        let vias: String = vias
            .iter()
            .map(|v| format!("Via: SIP/2.0/UDP {v}\r\n"))
            .collect();
        let text = format!(
            "INVITE sip:5000@x SIP/2.0\r\n{vias}From: <sip:a@x>;tag=1\r\nTo: <sip:5000@x>\r\n\
             Call-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(text.as_bytes()).unwrap()
    }

    /// A source's bucket made before a reload follows the reloaded size at once.
    #[test]
    fn a_reload_resizes_existing_buckets() {
        let g = guard(|p| p.requests_per_second = 50);
        let ip = "192.0.2.9".parse().unwrap();
        assert!(g.admit_message(ip).is_ok());
        g.set_limits(SourceLimits {
            requests_per_second: 1,
            ..SourceLimits::default()
        });
        // Two of the new bucket (twice the rate) within a moment, not the old hundred.
        let passed = (0..20).filter(|_| g.admit_message(ip).is_ok()).count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn a_trusted_proxy_is_not_limited_and_names_its_caller() {
        let g = guard(|p| {
            p.requests_per_second = 1;
            p.proxies = vec!["192.0.2.5/32".parse().unwrap()];
        });
        let proxy: SocketAddr = "192.0.2.5:5060".parse().unwrap();
        assert!((0..50).all(|_| g.admit_message(proxy.ip()).is_ok()));
        // Never blocked, or every caller behind it would be cut off.
        (0..100).for_each(|_| g.failure(proxy.ip()));
        g.screen_scanner(proxy.ip(), "friendly-scanner");
        assert!(g.admit_message(proxy.ip()).is_ok());
        let forwarded = request(&[
            "192.0.2.5;branch=z9hG4bKp",
            "10.0.0.1:5070;branch=z9hG4bK1;received=203.0.113.7;rport=4000",
        ]);
        assert_eq!(
            g.caller(&forwarded, proxy),
            "203.0.113.7:4000".parse().unwrap()
        );
        // Its own request (one Via) is its own.
        let own = request(&["192.0.2.5;branch=z9hG4bKo"]);
        assert_eq!(g.caller(&own, proxy), proxy);
        // Anyone else's second Via is not believed.
        let other: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        assert_eq!(g.caller(&forwarded, other), other);
    }

    #[test]
    fn message_rate_is_per_address_with_two_seconds_of_burst() {
        let g = guard(|p| p.requests_per_second = 10);
        let a = (0..100)
            .filter(|_| g.admit_message(ip("192.0.2.1")).is_ok())
            .count();
        assert_eq!(a, 20);
        assert!(g.admit_message(ip("192.0.2.2")).is_ok());
        assert_eq!(g.stats.refused(SourceRefusal::RequestRate), 80);
    }

    #[test]
    fn trusted_sources_pass_everything() {
        let g = guard(|p| {
            p.requests_per_second = 1;
            p.max_calls = 1;
            p.trusted = vec!["10.0.0.0/8".parse().unwrap()];
        });
        assert!((0..100).all(|_| g.admit_message(ip("10.1.2.3")).is_ok()));
        let slots: Vec<_> = (0..50).map(|_| g.admit_call(ip("10.1.2.3"))).collect();
        assert!(slots.iter().all(|s| s.as_ref().is_ok_and(|s| s.trusted())));
        // The mapped form of a trusted IPv4 address is trusted too.
        assert!(g.is_trusted(ip("::ffff:10.9.9.9")));
        assert!(!g.is_trusted(ip("192.0.2.1")));
    }

    #[test]
    fn concurrent_calls_are_capped_and_slots_come_back() {
        let g = guard(|p| {
            p.max_calls = 2;
            p.calls_per_second = 100;
        });
        let a = g.admit_call(ip("192.0.2.1")).unwrap();
        let _b = g.admit_call(ip("192.0.2.1")).unwrap();
        assert_eq!(
            g.admit_call(ip("192.0.2.1")).unwrap_err(),
            SourceRefusal::Calls
        );
        assert!(g.admit_call(ip("192.0.2.9")).is_ok());
        drop(a);
        assert!(g.admit_call(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn new_calls_per_second_are_capped() {
        let g = guard(|p| {
            p.max_calls = 0;
            p.calls_per_second = 5;
        });
        let ok: Vec<_> = (0..20)
            .filter_map(|_| g.admit_call(ip("192.0.2.1")).ok())
            .collect();
        assert_eq!(ok.len(), 5);
        assert_eq!(g.stats.refused(SourceRefusal::CallRate), 15);
        assert_eq!(g.stats.calls_refused(SourceRefusal::CallRate), 15);
    }

    #[test]
    fn failures_block_the_address_then_everything_from_it_is_dropped() {
        let g = guard(|p| p.failures_per_minute = 3);
        for _ in 0..3 {
            g.failure(ip("192.0.2.1"));
        }
        assert!(g.admit_message(ip("192.0.2.1")).is_ok());
        g.failure(ip("192.0.2.1"));
        assert_eq!(
            g.admit_message(ip("192.0.2.1")),
            Err(SourceRefusal::Blocked)
        );
        assert!(g.admit_connection(ip("192.0.2.1")).is_err());
        assert!(g.admit_message(ip("192.0.2.2")).is_ok());
        assert_eq!(g.blocked_now(), 1);
        assert_eq!(g.stats.blocks.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn scanners_are_recognised_case_insensitively_and_blocked() {
        let g = guard(|_| {});
        assert!(g.is_scanner("friendly-scanner"));
        assert!(g.is_scanner("SIPVicious 0.3.4"));
        assert!(g.is_scanner("sipcli/v1.8"));
        assert!(!g.is_scanner("baresip v1.0.0 (x86_64/linux)"));
        assert!(!g.is_scanner("SIPp/Linux"));
        assert!(!g.screen_scanner(ip("192.0.2.7"), "Yealink SIP-T46S"));
        assert!(g.screen_scanner(ip("192.0.2.7"), "friendly-scanner"));
        assert_eq!(g.stats.refused(SourceRefusal::Scanner), 1);
        assert_eq!(
            g.admit_message(ip("192.0.2.7")),
            Err(SourceRefusal::Blocked)
        );
    }

    #[test]
    fn tcp_connections_are_capped_per_address() {
        let g = guard(|p| p.tcp_connections = 2);
        let a = g.admit_connection(ip("192.0.2.1")).unwrap();
        let _b = g.admit_connection(ip("192.0.2.1")).unwrap();
        assert_eq!(
            g.admit_connection(ip("192.0.2.1")).unwrap_err(),
            SourceRefusal::TcpConnections
        );
        drop(a);
        assert!(g.admit_connection(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_full_table_keeps_known_addresses_and_bounds_new_ones() {
        let g = guard(|p| p.requests_per_second = 5);
        // Fill every shard with live (blocked) entries so nothing is evictable.
        let mut n: u32 = 0;
        while g.tracked() < MAX_SOURCES {
            let a = IpAddr::V4((0x0a00_0000 + n).into());
            g.block(a);
            n += 1;
        }
        let refused_before = g.stats.refused(SourceRefusal::TableFull);
        let new = (0..100)
            .filter(|i| {
                g.admit_message(IpAddr::V4((0xc000_0200 + i).into()))
                    .is_ok()
            })
            .count();
        assert!(new <= 10, "{new} new addresses passed a full table");
        assert!(g.stats.refused(SourceRefusal::TableFull) > refused_before);
        assert!(g.tracked() <= MAX_SOURCES);
        // A call from a new address is refused too, and counted among the calls as well.
        let calls_before = g.stats.calls_refused(SourceRefusal::TableFull);
        let refused_before = g.stats.refused(SourceRefusal::TableFull);
        assert_eq!(
            g.admit_call(ip("198.51.100.1")).unwrap_err(),
            SourceRefusal::TableFull
        );
        assert_eq!(
            g.stats.calls_refused(SourceRefusal::TableFull),
            calls_before + 1
        );
        assert_eq!(
            g.stats.refused(SourceRefusal::TableFull),
            refused_before + 1
        );
    }
}
