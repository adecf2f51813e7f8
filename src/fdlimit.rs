//! The open-files budget. Every call holds descriptors (its RTP and RTCP sockets and the
//! pacer's copy of the RTP socket), so the soft `RLIMIT_NOFILE` (often 1024) caps calls long
//! before `[sip] max_calls` does. At start pivotd raises the soft limit to the hard one, and
//! start-up and `check-config` warn when the configured calls would not fit under it.

use std::fmt;
use std::io;

use crate::config::Config;

/// Descriptors a call holds for its whole life (src/media/rtp/): the RTP socket, the RTCP
/// socket, and the `try_clone` of the RTP socket the pacer thread sends on.
pub const MEDIA_FDS_PER_CALL: u64 = 3;

/// A call does one fetch at a time (pivot request, remote prompt): one HTTP connection while
/// it runs, kept in the client's idle pool for a while after.
pub const FETCH_FDS_PER_CALL: u64 = 1;

/// With TCP listeners, a caller may bring its own SIP connection (a phone: one per phone; a
/// proxy shares one among its calls, so this is the worst case).
pub const TCP_FDS_PER_CALL: u64 = 1;

/// What the process holds without calls, besides its listen sockets. Measured at 16 (stdio,
/// the runtime's epoll/eventfd/signal pipe, SQLite's database, WAL and shm files), rounded up
/// for transient ones: TTS hook pipes, DNS look-ups, log files.
pub const BASELINE_FDS: u64 = 32;

/// Why the limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("cannot read the open-files limit (getrlimit RLIMIT_NOFILE): {0}")]
    Get(io::Error),
    #[error(
        "cannot raise the open-files soft limit to {soft} (setrlimit RLIMIT_NOFILE): {source}"
    )]
    Set { soft: u64, source: io::Error },
}

/// The kernel's "unlimited" (`rlim_t` is a u64 on Linux, the only system pivotd runs on).
pub const UNLIMITED: u64 = libc::RLIM_INFINITY;

/// A `RLIMIT_NOFILE` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub soft: u64,
    pub hard: u64,
}

/// Formats a limit value, `unlimited` for `RLIM_INFINITY`.
fn show(v: u64) -> String {
    if v == UNLIMITED {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "soft {} hard {}", show(self.soft), show(self.hard))
    }
}

/// The process's open-files limits now.
pub fn current() -> Result<Limits, FdLimitError> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(FdLimitError::Get(io::Error::last_os_error()));
    }
    Ok(Limits {
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// Linux's ceiling for any descriptor limit (`fs.nr_open`): an "unlimited" hard limit still
/// cannot be set as the soft one.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The soft limit pivotd will run with: the hard limit, or `fs.nr_open` when the hard limit is
/// unlimited; never lower than the soft limit it has.
pub fn target(limits: Limits, nr_open: Option<u64>) -> u64 {
    let ceiling = if limits.hard == UNLIMITED {
        nr_open.unwrap_or(limits.hard)
    } else {
        limits.hard
    };
    ceiling.max(limits.soft)
}

/// The soft limit `raise` would reach from the current limits: what is in force once pivotd
/// runs (what `check-config` compares against).
pub fn limit_in_force() -> Result<u64, FdLimitError> {
    Ok(target(current()?, nr_open()))
}

/// Raises the soft limit to [`target`]; returns the limits before and after.
pub fn raise() -> Result<(Limits, Limits), FdLimitError> {
    let before = current()?;
    let soft = target(before, nr_open());
    if soft != before.soft {
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: before.hard,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(FdLimitError::Set {
                soft,
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok((before, current()?))
}

/// What a configuration needs in descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `[sip] max_calls`.
    pub max_calls: u64,
    /// RTP port pairs of `[media] port_min..port_max`: no more calls than this hold media.
    pub port_pairs: u64,
    /// Descriptors per call (media, fetch, and a TCP connection if TCP listens).
    pub per_call: u64,
    /// Descriptors without calls, listen sockets included.
    pub baseline: u64,
}

impl Budget {
    pub fn for_config(cfg: &Config) -> Budget {
        let tcp = if cfg.sip.tcp.is_empty() {
            0
        } else {
            TCP_FDS_PER_CALL
        };
        // One socket per SIP listen address and one for the HTTP API.
        let listeners = (cfg.sip.udp.len() + cfg.sip.tcp.len() + 1) as u64;
        Budget {
            max_calls: u64::from(cfg.sip.max_calls),
            port_pairs: cfg.media.port_pairs() as u64,
            per_call: MEDIA_FDS_PER_CALL + FETCH_FDS_PER_CALL + tcp,
            baseline: BASELINE_FDS + listeners,
        }
    }

    /// Calls that can be up at once: a call beyond the port pairs gets 503 and holds nothing.
    pub fn calls(&self) -> u64 {
        self.max_calls.min(self.port_pairs)
    }

    /// Descriptors the busiest moment needs.
    pub fn needed(&self) -> u64 {
        self.calls()
            .saturating_mul(self.per_call)
            .saturating_add(self.baseline)
    }

    /// The calls that fit under `limit`.
    pub fn calls_within(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.baseline) / self.per_call.max(1)
    }

    /// `Some` when the configured calls would not fit under `limit`.
    pub fn check(&self, limit: u64) -> Option<Shortfall> {
        (self.needed() > limit).then_some(Shortfall {
            budget: *self,
            limit,
        })
    }
}

/// The configured calls need more descriptors than the limit allows; displays as the warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub budget: Budget,
    pub limit: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.budget;
        let needed = b.needed();
        let fit = b.calls_within(self.limit);
        let capped = if b.port_pairs < b.max_calls {
            format!(", capped by the {} RTP port pairs of [media]", b.port_pairs)
        } else {
            String::new()
        };
        write!(
            f,
            "the open-files limit ({limit}) is below what {calls} concurrent calls need \
             ([sip] max_calls = {max}{capped}): {needed} descriptors = {calls} × {per} per call \
             (RTP, RTCP and the pacer's copy of the RTP socket, one HTTP fetch{tcp}) + {base} \
             for the process; only about {fit} calls would fit. Raise the limit to {needed} or \
             more: LimitNOFILE={needed} in the [Service] section of the systemd unit, or \
             `ulimit -n {needed}` (hard limit: /etc/security/limits.conf) in the shell that \
             starts pivotd; pivotd raises its soft limit to the hard one by itself. Or lower \
             [sip] max_calls to {fit}.",
            limit = show(self.limit),
            calls = b.calls(),
            max = b.max_calls,
            per = b.per_call,
            tcp = if b.per_call > MEDIA_FDS_PER_CALL + FETCH_FDS_PER_CALL {
                ", one SIP TCP connection"
            } else {
                ""
            },
            base = b.baseline,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config's count of [min, max], the one `Budget` uses.
    fn port_pairs(min: u16, max: u16) -> u64 {
        let mut media = crate::config::Config::embedded_default().media;
        (media.port_min, media.port_max) = (min, max);
        media.port_pairs() as u64
    }

    fn cfg(extra_sip: &str, media: &str) -> Config {
        let toml = format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\n{extra_sip}\n[media]\n{media}\n[store]\nsqlite = \":memory:\"\n"
        );
        Config::from_toml_str(&toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_call_costs_three_media_descriptors_one_fetch_and_one_tcp_connection_if_tcp_listens() {
        let udp_only = Budget::for_config(&cfg("tcp = []", ""));
        assert_eq!(udp_only.per_call, 4);
        // One UDP listener and the API.
        assert_eq!(udp_only.baseline, BASELINE_FDS + 2);
        let both = Budget::for_config(&cfg("tcp = [\"127.0.0.1:0\"]", ""));
        assert_eq!(both.per_call, 5);
        assert_eq!(both.baseline, BASELINE_FDS + 3);
    }

    #[test]
    fn the_port_range_caps_the_calls_that_hold_media() {
        let b = Budget::for_config(&cfg(
            "tcp = []\nmax_calls = 5000",
            "port_min = 20000\nport_max = 20099",
        ));
        assert_eq!(b.port_pairs, 50);
        assert_eq!(b.calls(), 50);
        assert_eq!(b.needed(), 50 * 4 + BASELINE_FDS + 2);
        assert_eq!(port_pairs(20001, 20003), 1);
        assert_eq!(port_pairs(20000, 20001), 1);
        assert_eq!(port_pairs(20000, 20000), 0);
    }

    #[test]
    fn a_shortfall_names_the_numbers_and_the_remedies() {
        let b = Budget {
            max_calls: 1000,
            port_pairs: 5000,
            per_call: 5,
            baseline: 35,
        };
        assert_eq!(b.needed(), 5035);
        assert_eq!(b.check(5035), None);
        let s = b.check(1024).expect("1024 is short");
        let text = s.to_string();
        for part in [
            "(1024)",
            "1000 concurrent calls",
            "5035 descriptors",
            "5 per call",
            "+ 35",
            "about 197 calls",
            "LimitNOFILE=5035",
            "ulimit -n 5035",
            "max_calls to 197",
        ] {
            assert!(text.contains(part), "no {part:?} in {text}");
        }
    }

    #[test]
    fn the_target_is_the_hard_limit_or_nr_open_when_unlimited() {
        let inf = UNLIMITED;
        let l = |soft, hard| Limits { soft, hard };
        assert_eq!(target(l(1024, 65536), Some(1 << 20)), 65536);
        assert_eq!(target(l(1024, inf), Some(1 << 20)), 1 << 20);
        assert_eq!(target(l(1024, inf), None), inf);
        assert_eq!(target(l(4096, 4096), None), 4096);
        assert_eq!(l(1024, inf).to_string(), "soft 1024 hard unlimited");
    }

    #[test]
    fn raise_leaves_the_soft_limit_at_the_hard_one() {
        // Raising the soft limit of the test process is harmless: every test wants more.
        let (before, after) = raise().expect("raise");
        assert_eq!(after.hard, before.hard);
        assert_eq!(after.soft, target(before, nr_open()));
        assert_eq!(current().unwrap(), after);
        assert_eq!(limit_in_force().unwrap(), after.soft);
    }
}
