//! Why a fetch failed: [`HttpError`], and the sorting of reqwest's nested errors into it.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use url::Url;

use crate::pivot::guard::GuardError;

/// Why a fetch failed; the messages are the log reasons of the pivot `_` fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL (or a redirect hop, or what its host resolves to) is not allowed.
    #[error("URL refused: {0}")]
    Guard(GuardError),
    #[error("DNS failure for {host:?}: {error}")]
    Dns { host: String, error: String },
    #[error("connection refused by {url}")]
    ConnectRefused { url: String },
    #[error("connection reset by {url}: {error}")]
    ConnectReset { url: String, error: String },
    #[error("TLS failure with {url}: {error}")]
    Tls { url: String, error: String },
    #[error("timeout after {} ms fetching {url}", after.as_millis())]
    Timeout { url: String, after: Duration },
    #[error("response body of {url} exceeds {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("more than {limit} redirects fetching {url}")]
    TooManyRedirects { url: String, limit: usize },
    #[error("HTTP request to {url} failed: {error}")]
    Other { url: String, error: String },
    /// The client could not be built (CA file unreadable or not PEM).
    #[error("HTTP client setup: {0}")]
    Setup(String),
}

impl HttpError {
    /// The failure told without its URL: the pivot's log line names the URL once, and not
    /// with the call's parameters that a GET carries in its query (a capped log value would
    /// lose the cause). Beside the messages above so that both wordings change together.
    pub fn reason(&self) -> Reason<'_> {
        Reason(self)
    }
}

/// See [`HttpError::reason`].
pub struct Reason<'a>(&'a HttpError);

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            HttpError::Guard(e) => write!(f, "URL refused: {e}"),
            HttpError::Dns { host, error } => write!(f, "DNS failure for {host:?}: {error}"),
            HttpError::ConnectRefused { .. } => f.write_str("connection refused"),
            HttpError::ConnectReset { error, .. } => write!(f, "connection reset: {error}"),
            HttpError::Tls { error, .. } => write!(f, "TLS failure: {error}"),
            HttpError::Timeout { after, .. } => write!(f, "timeout after {} ms", after.as_millis()),
            HttpError::BodyTooLarge { limit, .. } => {
                write!(f, "response body exceeds {limit} bytes")
            }
            HttpError::TooManyRedirects { limit, .. } => write!(f, "more than {limit} redirects"),
            HttpError::Other { error, .. } => write!(f, "HTTP request failed: {error}"),
            HttpError::Setup(e) => write!(f, "HTTP client setup: {e}"),
        }
    }
}

impl From<GuardError> for HttpError {
    /// A failed or empty resolution is a DNS failure; the rest are refusals.
    fn from(e: GuardError) -> HttpError {
        match e {
            GuardError::Resolve { host, error } => HttpError::Dns { host, error },
            GuardError::NoAddress(host) => HttpError::Dns {
                host,
                error: "no address".into(),
            },
            other => HttpError::Guard(other),
        }
    }
}

/// Sorts a reqwest error into the reasons the pivot logs.
pub(super) fn classify(e: &reqwest::Error, url: &Url, timeout: Duration) -> HttpError {
    let url_s = url.to_string();
    let https = url.scheme() == "https";
    let mut io_kind = None;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(g) = err.downcast_ref::<GuardError>() {
            return HttpError::from(g.clone());
        }
        cur = err.source();
        if let Some(ioe) = err.downcast_ref::<io::Error>() {
            // The first specific kind: hyper wraps the real one in an `Other`.
            if io_kind.is_none() && ioe.kind() != io::ErrorKind::Other {
                io_kind = Some(ioe.kind());
            }
            // io::Error::source skips its own payload: descend into it instead.
            if let Some(inner) = ioe.get_ref() {
                cur = Some(inner as &(dyn StdError + 'static));
            }
        }
    }
    let chain = error_chain(e);
    if e.is_timeout() {
        return HttpError::Timeout {
            url: url_s,
            after: timeout,
        };
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => return HttpError::ConnectRefused { url: url_s },
        Some(
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe,
        ) => {
            return HttpError::ConnectReset {
                url: url_s,
                error: chain,
            }
        }
        Some(io::ErrorKind::TimedOut) => {
            return HttpError::Timeout {
                url: url_s,
                after: timeout,
            }
        }
        // tokio-rustls reports TLS alerts, bad certificates and non-TLS answers as
        // InvalidData; a close during the handshake as UnexpectedEof.
        Some(io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof)
            if https && e.is_connect() =>
        {
            return HttpError::Tls {
                url: url_s,
                error: chain,
            }
        }
        _ => {}
    }
    if chain.contains("connection closed before message completed") {
        return HttpError::ConnectReset {
            url: url_s,
            error: chain,
        };
    }
    HttpError::Other {
        url: url_s,
        error: chain,
    }
}

/// "outer: inner: innermost", each message once.
pub(super) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = match err.downcast_ref::<io::Error>().and_then(|i| i.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    parts.join(": ")
}
