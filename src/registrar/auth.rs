//! Whether a request's digest credentials belong to a device (RFC 3261 §22): REGISTER is
//! challenged with 401/WWW-Authenticate, INVITE with 407/Proxy-Authenticate. One
//! [`Authenticator`] serves both, so a nonce count is checked across them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::directory::{DeviceEntry, Directory};
use crate::logsafe::wire;
use crate::sip::auth::digest::{Algorithm, Challenge, Credentials, CredentialsError};
use crate::sip::auth::nonce::{CountCheck, NonceCheck, NonceCounts, Nonces};
use crate::sip::message::{header_str, header_values};

/// Nonces whose counts are tracked at once; beyond, new nonces get a stale challenge.
const MAX_TRACKED_NONCES: usize = 200_000;

/// Which challenge: the registrar's (401) or a proxy's (407, for INVITE and other requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Www,
    Proxy,
}

impl Scheme {
    pub fn code(self) -> u16 {
        match self {
            Scheme::Www => 401,
            Scheme::Proxy => 407,
        }
    }
    pub fn challenge_header(self) -> &'static str {
        match self {
            Scheme::Www => "WWW-Authenticate",
            Scheme::Proxy => "Proxy-Authenticate",
        }
    }
    fn credentials_header(self) -> &'static str {
        match self {
            Scheme::Www => "Authorization",
            Scheme::Proxy => "Proxy-Authorization",
        }
    }
}

/// Why credentials were refused (403): the log line's and the metric's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("replayed nonce count")]
    Replayed,
    #[error("algorithm not offered")]
    AlgorithmNotOffered,
    #[error("malformed credentials: {0}")]
    Malformed(CredentialsError),
}

impl AuthFailure {
    pub const LABELS: [&'static str; 5] = [
        "unknown_user",
        "wrong_password",
        "replayed",
        "algorithm",
        "malformed",
    ];

    /// The metrics label.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            AuthFailure::UnknownUser => 0,
            AuthFailure::WrongPassword => 1,
            AuthFailure::Replayed => 2,
            AuthFailure::AlgorithmNotOffered => 3,
            AuthFailure::Malformed(_) => 4,
        }
    }
}

/// What the credentials of a request come to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Authenticated(Arc<DeviceEntry>),
    /// No credentials for this realm (or an old nonce): answer with a challenge.
    Challenge {
        stale: bool,
    },
    /// 403.
    Refused(AuthFailure),
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct AuthStats {
    pub challenges: AtomicU64,
    pub successes: AtomicU64,
    failures: [AtomicU64; AuthFailure::LABELS.len()],
}

impl AuthStats {
    pub fn failures(&self, label: &str) -> u64 {
        AuthFailure::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.failures[i].load(Ordering::Relaxed))
    }
}

pub struct Authenticator {
    directory: Arc<Directory>,
    nonces: Nonces,
    counts: Mutex<NonceCounts>,
    algorithms: Vec<Algorithm>,
    md5_only_user_agents: Vec<String>,
    pub stats: AuthStats,
}

pub(crate) use crate::store::unix_now;

impl Authenticator {
    /// `algorithms`: offered in this order (never empty: MD5 is used when it is);
    /// `md5_only_user_agents`: lowercase User-Agent substrings offered MD5 alone.
    pub fn new(
        directory: Arc<Directory>,
        algorithms: Vec<Algorithm>,
        md5_only_user_agents: Vec<String>,
        nonce_life: Duration,
    ) -> Self {
        Authenticator {
            directory,
            nonces: Nonces::new(nonce_life),
            counts: Mutex::new(NonceCounts::new(MAX_TRACKED_NONCES)),
            algorithms: if algorithms.is_empty() {
                vec![Algorithm::Md5]
            } else {
                algorithms
            },
            md5_only_user_agents,
            stats: AuthStats::default(),
        }
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The challenge header values for `req` in `realm`: one per algorithm in the configured
    /// order, or MD5 alone for a client known to give up on anything else.
    pub fn challenges(&self, req: &rsip::Request, realm: &str, stale: bool) -> Vec<String> {
        self.stats.challenges.fetch_add(1, Ordering::Relaxed);
        let nonce = self.nonces.issue(unix_now());
        let md5_only = header_str(req, "User-Agent").is_some_and(|ua| {
            let ua = ua.to_ascii_lowercase();
            self.md5_only_user_agents
                .iter()
                .any(|s| ua.contains(s.as_str()))
        });
        self.algorithms
            .iter()
            .filter(|&&a| !md5_only || a == Algorithm::Md5)
            .map(|&algorithm| {
                Challenge {
                    realm,
                    nonce: &nonce,
                    algorithm,
                    stale,
                }
                .to_string()
            })
            .collect()
    }

    /// Checks the credentials `req` carries for `realm`. A refusal is logged as one line a
    /// fail2ban filter can match (README) and counted.
    pub fn check(
        &self,
        req: &rsip::Request,
        scheme: Scheme,
        realm: &str,
        source: SocketAddr,
    ) -> Verdict {
        let verdict = self.verdict(req, scheme, realm);
        match &verdict {
            Verdict::Authenticated(_) => {
                self.stats.successes.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Refused(why) => {
                self.stats.failures[why.index()].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "pivotd::auth",
                    "authentication failed source={} port={} method={} realm=\"{}\" user=\"{}\" reason=\"{}\"",
                    source.ip(),
                    source.port(),
                    req.method,
                    wire(realm),
                    wire(&username_of(req, scheme).unwrap_or_default()),
                    why
                );
            }
            Verdict::Challenge { .. } => {}
        }
        verdict
    }

    fn verdict(&self, req: &rsip::Request, scheme: Scheme, realm: &str) -> Verdict {
        let mut ours = None;
        for value in credential_values(req, scheme) {
            match Credentials::parse(value.as_bytes()) {
                Ok(c) if c.realm.eq_ignore_ascii_case(realm) => {
                    ours = Some(c);
                    break;
                }
                // Credentials for another realm (a proxy on the way) are not ours to judge.
                Ok(_) => {}
                Err(CredentialsError::NotDigest) => {}
                Err(e) => return Verdict::Refused(AuthFailure::Malformed(e)),
            }
        }
        let Some(c) = ours else {
            return Verdict::Challenge { stale: false };
        };
        if !self.algorithms.contains(&c.algorithm) {
            return Verdict::Refused(AuthFailure::AlgorithmNotOffered);
        }
        let Some(device) = self.directory.find(realm, &c.username) else {
            return Verdict::Refused(AuthFailure::UnknownUser);
        };
        let Some(ha1) = device.ha1_for(c.algorithm) else {
            return Verdict::Refused(AuthFailure::AlgorithmNotOffered);
        };
        if !c.verify(ha1, req.method.to_string().as_str()) {
            return Verdict::Refused(AuthFailure::WrongPassword);
        }
        let now = unix_now();
        match self.nonces.check(&c.nonce, now) {
            // The password is right but the nonce is not (expired, or from before a restart):
            // a new nonce, without asking the user again (RFC 7616 §3.3 stale).
            NonceCheck::Stale | NonceCheck::Foreign => Verdict::Challenge { stale: true },
            NonceCheck::Fresh => {
                let life = self.nonces.lifetime().as_secs();
                let counted = self
                    .counts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(&c.nonce, c.nc, now, life);
                match counted {
                    CountCheck::Accepted => {
                        tracing::debug!(
                            target: "pivotd::auth",
                            user = %wire(&c.username),
                            algorithm = %c.algorithm,
                            "authenticated"
                        );
                        Verdict::Authenticated(device)
                    }
                    CountCheck::Replayed => Verdict::Refused(AuthFailure::Replayed),
                    CountCheck::Full => Verdict::Challenge { stale: true },
                }
            }
        }
    }
}

/// The Authorization (or Proxy-Authorization) values of a request.
fn credential_values(req: &rsip::Request, scheme: Scheme) -> impl Iterator<Item = &str> {
    header_values(req, scheme.credentials_header())
}

/// The username of the first Digest credentials, for the log line.
fn username_of(req: &rsip::Request, scheme: Scheme) -> Option<String> {
    credential_values(req, scheme)
        .find_map(|v| Credentials::parse(v.as_bytes()).ok())
        .map(|c| c.username)
}
