//! The guarded HTTP client every pivot fetch goes through (voice_url, follow-ups, TwiML
//! action/Redirect, cdr_url, played URLs).
//!
//! One [`PivotHttp`] per process (cloning shares the connection pool). The rule it keeps:
//! the connection goes to an address that passed the guard, with no DNS-rebinding window.
//! reqwest resolves host names through [`GuardHook`], which resolves *and* checks every
//! address, so the addresses it connects to are exactly the checked ones; IP literals never
//! reach that hook, so each hop's URL is checked here before it is sent. Redirects are
//! followed here (reqwest's own are off), each hop checked again. Proxies from the
//! environment are ignored: a proxy would connect on our behalf past the guard.
//!
//! TLS: rustls with reqwest's `rustls-tls` feature, whose built-in roots are the Mozilla set
//! compiled in (webpki-roots), not the OS store; a configured CA file adds its certificates.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
pub use reqwest::Method;
use reqwest::StatusCode;
use url::Url;

use super::guard::{GuardError, Resolver, UrlGuard};

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

/// Client-wide settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// TCP connect timeout (reqwest has it per client only); each request also has a total.
    pub connect_timeout: Duration,
    /// Extra trusted roots (PEM, one or more certificates), on top of the built-in ones.
    pub ca_file: Option<PathBuf>,
    /// Redirect hops followed before [`HttpError::TooManyRedirects`].
    pub max_redirects: usize,
    pub user_agent: String,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(3),
            ca_file: None,
            max_redirects: 4,
            user_agent: concat!("pivotd/", env!("CARGO_PKG_VERSION")).to_string(),
            pool_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One request. Defaults: 5 s total timeout (spec j.9's `req_timeout_ms` default), 1 MiB body cap.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub url: Url,
    /// Extra headers (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Total: connect, all redirect hops and the body.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

impl HttpRequest {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

    pub fn new(method: Method, url: Url) -> HttpRequest {
        HttpRequest {
            method,
            url,
            headers: Vec::new(),
            body: None,
            timeout: HttpRequest::DEFAULT_TIMEOUT,
            max_body: HttpRequest::DEFAULT_MAX_BODY,
        }
    }

    pub fn get(url: Url) -> HttpRequest {
        HttpRequest::new(Method::GET, url)
    }

    pub fn post(url: Url, content_type: &str, body: impl Into<Bytes>) -> HttpRequest {
        HttpRequest::new(Method::POST, url)
            .header("content-type", content_type)
            .body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> HttpRequest {
        self.body = Some(body.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> HttpRequest {
        self.timeout = timeout;
        self
    }

    pub fn max_body(mut self, max_body: usize) -> HttpRequest {
        self.max_body = max_body;
        self
    }
}

/// A complete response (body read up to the cap).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// In order received; names lower-case.
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub final_url: Url,
}

impl HttpResponse {
    /// First header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// reqwest's DNS hook: resolve through the injected resolver and check every address, so
/// the connection can only go to a checked address.
struct GuardHook {
    guard: Arc<UrlGuard>,
    resolver: Arc<dyn Resolver>,
}

impl reqwest::dns::Resolve for GuardHook {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let resolver = self.resolver.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port (or the scheme's).
            let addrs = guard
                .resolve_name(&host, 0, resolver.as_ref())
                .await
                .map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The guarded client; clone freely (one pool).
#[derive(Clone)]
pub struct PivotHttp {
    client: reqwest::Client,
    guard: Arc<UrlGuard>,
    max_redirects: usize,
}

impl std::fmt::Debug for PivotHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PivotHttp")
            .field("guard", &self.guard)
            .field("max_redirects", &self.max_redirects)
            .finish()
    }
}

impl PivotHttp {
    /// Default options plus an optional extra CA file.
    pub fn new(
        guard: Arc<UrlGuard>,
        resolver: Arc<dyn Resolver>,
        ca_file: Option<PathBuf>,
    ) -> Result<PivotHttp, HttpError> {
        PivotHttp::with_options(
            guard,
            resolver,
            HttpOptions {
                ca_file,
                ..HttpOptions::default()
            },
        )
    }

    pub fn with_options(
        guard: Arc<UrlGuard>,
        resolver: Arc<dyn Resolver>,
        opts: HttpOptions,
    ) -> Result<PivotHttp, HttpError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardHook {
                guard: guard.clone(),
                resolver,
            }))
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(opts.pool_idle_timeout)
            .user_agent(opts.user_agent.clone());
        if let Some(path) = &opts.ca_file {
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| HttpError::Setup(error_chain(&e)))?;
        Ok(PivotHttp {
            client,
            guard,
            max_redirects: opts.max_redirects,
        })
    }

    pub fn guard(&self) -> &Arc<UrlGuard> {
        &self.guard
    }

    /// Parses `url` and fetches it with GET.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<HttpResponse, HttpError> {
        let url = self.guard.check_url_static(url)?;
        self.send(HttpRequest::get(url).timeout(timeout).max_body(max_body))
            .await
    }

    /// Sends `req`, following up to `max_redirects` redirects (each hop checked by the
    /// guard; 301/302/303 become a GET without body, 307/308 keep method and body), and
    /// reads the body up to `req.max_body`. A refused URL is refused before any connection.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let timeout = req.timeout;
        let start_url = req.url.to_string();
        match tokio::time::timeout(timeout, self.send_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                url: start_url,
                after: timeout,
            }),
        }
    }

    async fn send_inner(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let HttpRequest {
            mut method,
            mut url,
            mut headers,
            mut body,
            timeout,
            max_body,
        } = req;
        let mut hops = 0;
        loop {
            // Literals, scheme and host names here; names' addresses in the DNS hook.
            self.guard.check_parsed(&url)?;
            let mut rb = self
                .client
                .request(method.clone(), url.clone())
                .timeout(timeout);
            for (name, value) in &headers {
                rb = rb.header(name.as_str(), value.as_str());
            }
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let resp = rb.send().await.map_err(|e| classify(&e, &url, timeout))?;
            let status = resp.status();
            let location = if status.is_redirection() {
                resp.headers()
                    .get(reqwest::header::LOCATION)
                    .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
            } else {
                None
            };
            let Some(location) = location else {
                return read_response(resp, url, max_body, timeout).await;
            };
            if hops >= self.max_redirects {
                return Err(HttpError::TooManyRedirects {
                    url: url.to_string(),
                    limit: self.max_redirects,
                });
            }
            hops += 1;
            let next = url.join(location.trim()).map_err(|e| HttpError::Other {
                url: url.to_string(),
                error: format!("bad redirect Location {location:?}: {e}"),
            })?;
            // Read the (small) redirect body so the connection goes back to the pool.
            let _ = read_response(resp, url.clone(), 64 * 1024, timeout).await;
            match status {
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => {
                    if method != Method::HEAD {
                        method = Method::GET;
                    }
                    body = None;
                    headers.retain(|(n, _)| {
                        !n.eq_ignore_ascii_case("content-type")
                            && !n.eq_ignore_ascii_case("content-length")
                    });
                }
                _ => {}
            }
            if next.origin() != url.origin() {
                // Credentials are for the origin they were given to.
                headers.retain(|(n, _)| {
                    !n.eq_ignore_ascii_case("authorization") && !n.eq_ignore_ascii_case("cookie")
                });
            }
            url = next;
        }
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpError> {
    let pem = std::fs::read(path)
        .map_err(|e| HttpError::Setup(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        HttpError::Setup(format!(
            "CA file {} is not PEM: {}",
            path.display(),
            error_chain(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(HttpError::Setup(format!(
            "CA file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Headers and the body, stopping past `max_body` (the Content-Length is checked first so
/// an announced oversize body is not read at all).
async fn read_response(
    mut resp: reqwest::Response,
    url: Url,
    max_body: usize,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone());
    let too_large = || HttpError::BodyTooLarge {
        url: url.to_string(),
        limit: max_body,
    };
    if resp.content_length().is_some_and(|n| n > max_body as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| classify(&e, &url, timeout))?
    {
        if body.len() + chunk.len() > max_body {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status,
        headers,
        content_type,
        body: body.freeze(),
        final_url: url,
    })
}

/// Sorts a reqwest error into the reasons the pivot logs.
fn classify(e: &reqwest::Error, url: &Url, timeout: Duration) -> HttpError {
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
fn error_chain(e: &(dyn StdError + 'static)) -> String {
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
