//! Nonces that need no table to check (a timestamp and random bytes, signed with a key of
//! this process) and the nonce counts that refuse a replayed response.
//!
//! A restart changes the key, so every nonce in flight becomes invalid: phones get a new
//! challenge and answer it without prompting anyone (the stored HA1 does not change).

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes signed: issue time (seconds, big-endian) and 8 random bytes.
const PAYLOAD: usize = 16;
/// Bytes of the HMAC kept: 96 bits cannot be guessed within a nonce's life.
const TAG: usize = 12;

/// What a nonce a client sent back is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and within its lifetime.
    Fresh,
    /// Ours but too old: challenge again with `stale=true`.
    Stale,
    /// Not ours (another process, or made up).
    Foreign,
}

/// Issues and checks nonces.
pub struct Nonces {
    key: [u8; 32],
    lifetime: Duration,
}

impl Nonces {
    pub fn new(lifetime: Duration) -> Nonces {
        Nonces {
            key: rand::random(),
            lifetime,
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new nonce issued at `now` (seconds since an epoch the caller keeps, e.g. Unix time).
    pub fn issue(&self, now: u64) -> String {
        let mut bytes = [0u8; PAYLOAD + TAG];
        bytes[..8].copy_from_slice(&now.to_be_bytes());
        bytes[8..PAYLOAD].copy_from_slice(&rand::random::<[u8; 8]>());
        let tag = self.tag(&bytes[..PAYLOAD]);
        bytes[PAYLOAD..].copy_from_slice(&tag[..TAG]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` is one of ours, and still fresh at `now`.
    pub fn check(&self, nonce: &str, now: u64) -> NonceCheck {
        let Some(issued) = self.issued_at(nonce) else {
            return NonceCheck::Foreign;
        };
        if issued > now.saturating_add(1) {
            // From the future: our clock went back, or a forgery that got the tag right.
            return NonceCheck::Foreign;
        }
        if now.saturating_sub(issued) > self.lifetime.as_secs() {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }

    /// The issue time of a nonce whose signature is ours.
    fn issued_at(&self, nonce: &str) -> Option<u64> {
        if nonce.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        let bytes: [u8; PAYLOAD + TAG] = bytes.try_into().ok()?;
        let (payload, tag) = bytes.split_at(PAYLOAD);
        let want = self.tag(payload);
        let same = want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&payload[..8]);
        same.then_some(u64::from_be_bytes(ts))
    }

    fn tag(&self, payload: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

/// The highest nonce count accepted per nonce: a response with a count not above it is a
/// replay (RFC 7616 §3.4). Entries leave when their nonce expires; at most `capacity` are
/// kept, and a full table refuses new nonces (their clients get a stale challenge).
pub struct NonceCounts {
    seen: HashMap<String, (u32, u64)>,
    capacity: usize,
    last_sweep: u64,
}

/// What [`NonceCounts::record`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountCheck {
    Accepted,
    /// The count was not above the last one accepted for this nonce.
    Replayed,
    /// No room for another nonce now.
    Full,
}

impl NonceCounts {
    pub fn new(capacity: usize) -> NonceCounts {
        NonceCounts {
            seen: HashMap::new(),
            capacity,
            last_sweep: 0,
        }
    }

    /// Records `nc` for a fresh `nonce` (issued at `issued`), at `now`; entries older than
    /// `lifetime` are dropped first, at most once a second.
    pub fn record(&mut self, nonce: &str, nc: u32, now: u64, lifetime: u64) -> CountCheck {
        if now != self.last_sweep {
            self.last_sweep = now;
            self.seen
                .retain(|_, (_, first)| now.saturating_sub(*first) <= lifetime);
        }
        let full = self.seen.len() >= self.capacity;
        match self.seen.get_mut(nonce) {
            Some((last, _)) if nc <= *last => CountCheck::Replayed,
            Some((last, _)) => {
                *last = nc;
                CountCheck::Accepted
            }
            None if full => CountCheck::Full,
            None => {
                self.seen.insert(nonce.to_string(), (nc, now));
                CountCheck::Accepted
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_nonces_are_fresh_then_stale_others_foreign() {
        let n = Nonces::new(Duration::from_secs(300));
        let nonce = n.issue(1_000);
        assert_eq!(n.check(&nonce, 1_000), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 1_300), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 1_301), NonceCheck::Stale);
        assert_eq!(n.check(&nonce, 998), NonceCheck::Foreign, "from the future");
        assert_ne!(n.issue(1_000), nonce, "random part");
        let other = Nonces::new(Duration::from_secs(300));
        assert_eq!(other.check(&nonce, 1_000), NonceCheck::Foreign);
        // One flipped character anywhere breaks the signature.
        let mut chars: Vec<char> = nonce.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let forged: String = chars.into_iter().collect();
        assert_eq!(n.check(&forged, 1_000), NonceCheck::Foreign);
        for junk in ["", "x", "é", &"A".repeat(200), "!!!!"] {
            assert_eq!(n.check(junk, 1_000), NonceCheck::Foreign, "{junk}");
        }
    }

    #[test]
    fn counts_must_grow_and_expire_with_the_nonce() {
        let mut c = NonceCounts::new(2);
        assert_eq!(c.record("a", 1, 10, 300), CountCheck::Accepted);
        assert_eq!(c.record("a", 1, 10, 300), CountCheck::Replayed);
        assert_eq!(c.record("a", 3, 10, 300), CountCheck::Accepted);
        assert_eq!(c.record("a", 2, 10, 300), CountCheck::Replayed);
        assert_eq!(c.record("b", 1, 10, 300), CountCheck::Accepted);
        assert_eq!(c.record("c", 1, 10, 300), CountCheck::Full);
        // Past the lifetime the entries go, and there is room again.
        assert_eq!(c.record("c", 1, 311, 300), CountCheck::Accepted);
        assert_eq!(c.len(), 1);
    }
}
