//! The configuration a running pivotd reads now, and the one place that decides what a reload
//! (SIGHUP, `systemctl reload`) may change without a restart.
//!
//! Live: `[[accounts]]` (devices, users, callflows, carriers, pivot secrets), `[[resources]]`,
//! `[sip] max_calls`, `max_calls_per_second`, `invite_response_timeout_ms`, the per-source
//! limits (`trusted_sources`, `trusted_proxies`, `source_*`, `scanner_user_agents`),
//! `allow_unauthenticated`, `[media] early_media_unproven_s` and `encryption`, `[tts]`, and
//! the TLS certificate, key and CA file (read again from their files: `server/reload.rs`). Everything else was
//! built into sockets, tasks or pools at start: [`apply`] keeps its old value and names it, so
//! the config in force never claims a setting the process does not follow.
//!
//! Readers take a snapshot ([`LiveConfig::get`]) per request: a call keeps the one it started
//! with for its decisions, a new request sees the reloaded one.

use std::ops::Deref;
use std::sync::{Arc, RwLock};

use super::{Account, Config};

/// The config in force, swapped whole by a reload.
#[derive(Debug)]
pub struct LiveConfig {
    current: RwLock<Arc<Config>>,
}

impl LiveConfig {
    pub fn new(cfg: Arc<Config>) -> Arc<LiveConfig> {
        Arc::new(LiveConfig {
            current: RwLock::new(cfg),
        })
    }

    /// The config in force now (the read lock is held only to clone the `Arc`).
    pub fn get(&self) -> Arc<Config> {
        // A writer that panicked left a whole config behind (it swaps one `Arc`).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An account of the config in force, held with that config: a reload meanwhile swaps
    /// the config, not the account a request is working on.
    pub fn account(&self, id: &str) -> Option<LiveAccount> {
        let cfg = self.get();
        let index = cfg.accounts.iter().position(|a| a.id == id)?;
        Some(LiveAccount { cfg, index })
    }

    /// Puts `cfg` in force; the next [`LiveConfig::get`] sees it.
    pub fn replace(&self, cfg: Arc<Config>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = cfg;
    }
}

/// An account of a config snapshot ([`LiveConfig::account`]).
#[derive(Debug, Clone)]
pub struct LiveAccount {
    cfg: Arc<Config>,
    index: usize,
}

impl Deref for LiveAccount {
    type Target = Account;
    fn deref(&self) -> &Account {
        &self.cfg.accounts[self.index]
    }
}

/// A setting changed in the file that this process cannot follow until it restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotApplied {
    /// The config key (`sip.udp`, `store`, …).
    pub key: &'static str,
    /// What it is, for the log line.
    pub what: &'static str,
}

/// The config to put in force after a reload: `new` with every setting that needs a restart
/// put back to `old`'s value, and the settings so kept because they changed.
pub fn apply(old: &Config, mut new: Config) -> (Config, Vec<NotApplied>) {
    let mut kept = Vec::new();
    // Each: if the file changed it, keep the old value and say so.
    macro_rules! fixed {
        ($key:literal, $what:literal, $($field:ident).+) => {
            if new.$($field).+ != old.$($field).+ {
                new.$($field).+ = old.$($field).+.clone();
                kept.push(NotApplied { key: $key, what: $what });
            }
        };
    }
    fixed!("sip.udp", "UDP listen addresses", sip.udp);
    fixed!("sip.tcp", "TCP listen addresses", sip.tcp);
    fixed!("sip.tls", "TLS listen addresses", sip.tls);
    fixed!(
        "sip.tls_handshake_timeout_ms",
        "TLS handshake timeout",
        sip.tls_handshake_timeout_ms
    );
    fixed!("sip.advertise", "advertised address", sip.advertise);
    fixed!(
        "sip.udp_readers",
        "UDP sockets per address",
        sip.udp_readers
    );
    fixed!(
        "sip.udp_receive_buffer_bytes",
        "UDP receive buffer",
        sip.udp_receive_buffer_bytes
    );
    fixed!(
        "sip.max_message_bytes",
        "largest SIP message",
        sip.max_message_bytes
    );
    fixed!(
        "sip.tcp_idle_timeout_s",
        "TCP idle timeout",
        sip.tcp_idle_timeout_s
    );
    fixed!("sip.timer_t1_ms", "SIP timer T1", sip.timer_t1_ms);
    fixed!("sip.timer_t2_ms", "SIP timer T2", sip.timer_t2_ms);
    fixed!("sip.timer_t4_ms", "SIP timer T4", sip.timer_t4_ms);
    fixed!(
        "sip.max_call_duration_s",
        "call duration limit",
        sip.max_call_duration_s
    );
    fixed!(
        "sip.shutdown_grace_s",
        "shutdown grace period",
        sip.shutdown_grace_s
    );
    fixed!("sip.overload_*", "overload thresholds", sip.overload);
    // The registrar's digest and expiry rules are built once; whether anonymous callers may
    // call is asked per INVITE.
    let allow_unauthenticated = new.sip.auth.allow_unauthenticated;
    new.sip.auth.allow_unauthenticated = old.sip.auth.allow_unauthenticated;
    fixed!(
        "sip.auth",
        "digest algorithms, nonce lifetime, REGISTER expiry and contacts",
        sip.auth
    );
    new.sip.auth.allow_unauthenticated = allow_unauthenticated;
    fixed!("media.ip", "media address", media.ip);
    fixed!("media.port_min", "RTP port range", media.port_min);
    fixed!("media.port_max", "RTP port range", media.port_max);
    fixed!("media.dir", "prompt directory", media.dir);
    fixed!("media.dir", "prompt directory", media.dir_configured);
    fixed!("media.rtp_timeout_s", "RTP timeout", media.rtp_timeout_s);
    fixed!("api", "HTTP API listener and its auth settings", api);
    fixed!("store", "store", store);
    fixed!("pivot", "pivot HTTP client and URL guard", pivot);
    fixed!("presence", "presence settings", presence);
    kept.dedup();
    (new, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        Config::from_toml_str(text, Path::new("/x")).unwrap()
    }

    #[test]
    fn live_settings_pass_and_fixed_ones_are_kept_and_named() {
        let old = cfg("[sip]\nudp = [\"127.0.0.1:5070\"]\nmax_calls = 10\n");
        let new = cfg(concat!(
            "[sip]\nudp = [\"127.0.0.1:5071\"]\nmax_calls = 20\nallow_unauthenticated = true\n",
            "[media]\nport_min = 30000\nport_max = 30100\n",
        ));
        let (applied, kept) = apply(&old, new);
        assert_eq!(applied.sip.max_calls, 20);
        assert_eq!(applied.sip.auth.allow_unauthenticated, Some(true));
        assert_eq!(applied.sip.udp, old.sip.udp);
        assert_eq!(applied.media.port_min, old.media.port_min);
        let keys: Vec<_> = kept.iter().map(|k| k.key).collect();
        assert_eq!(keys, ["sip.udp", "media.port_min", "media.port_max"]);
    }

    #[test]
    fn an_unchanged_file_keeps_nothing() {
        let old = cfg("");
        let (_, kept) = apply(&old, old.clone());
        assert!(kept.is_empty(), "{kept:?}");
    }

    #[test]
    fn replace_is_seen_by_the_next_get() {
        let live = LiveConfig::new(Arc::new(cfg("")));
        live.replace(Arc::new(cfg("[sip]\nmax_calls = 7\n")));
        assert_eq!(live.get().sip.max_calls, 7);
    }
}
