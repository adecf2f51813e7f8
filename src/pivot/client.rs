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

/// A tiny HTTP/1.1 server for tests: keep-alive, counts connections and requests, records
/// what it saw, answers through a handler. Loopback only, ephemeral port.
#[cfg(test)]
pub(crate) mod test_server {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    /// A request as the server saw it.
    #[derive(Debug, Clone, Default)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        /// Names lower-case.
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    #[derive(Debug, Clone)]
    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        /// Wait this long before answering.
        pub delay: Duration,
        /// No Content-Length: the body ends when the connection closes.
        pub close_delimited: bool,
    }

    impl Reply {
        pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
            Reply::status(200)
                .header("Content-Type", content_type)
                .body(body)
        }
        pub fn status(status: u16) -> Reply {
            Reply {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                delay: Duration::ZERO,
                close_delimited: false,
            }
        }
        pub fn redirect(status: u16, location: &str) -> Reply {
            Reply::status(status).header("Location", location)
        }
        pub fn header(mut self, n: &str, v: &str) -> Reply {
            self.headers.push((n.into(), v.into()));
            self
        }
        pub fn body(mut self, b: impl Into<Vec<u8>>) -> Reply {
            self.body = b.into();
            self
        }
        pub fn delay(mut self, d: Duration) -> Reply {
            self.delay = d;
            self
        }
        pub fn close_delimited(mut self) -> Reply {
            self.close_delimited = true;
            self
        }
    }

    type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

    pub struct TestServer {
        pub addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<Seen>>>,
        task: JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestServer {
        pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            TestServer::on(listener, handler)
        }

        pub fn on(
            listener: TcpListener,
            handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
        ) -> TestServer {
            let addr = listener.local_addr().unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let handler: Handler = Arc::new(handler);
            let (c, s) = (connections.clone(), seen.clone());
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, handler.clone(), s.clone()));
                }
            });
            TestServer {
                addr,
                connections,
                seen,
                task,
            }
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{}", self.addr, path)
        }
        pub fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
        pub fn requests(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn serve(stream: TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) {
        let mut r = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let (Some(method), Some(path), Some(v)) = (parts.next(), parts.next(), parts.next())
            else {
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            };
            if !v.starts_with("HTTP/1.") {
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            }
            let mut req = Seen {
                method: method.to_string(),
                path: path.to_string(),
                ..Seen::default()
            };
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    req.headers
                        .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize = req
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            req.body = vec![0; len];
            if r.read_exact(&mut req.body).await.is_err() {
                return;
            }
            let reply = handler(&req);
            seen.lock().unwrap().push(req);
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
            for (n, v) in &reply.headers {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
            if reply.close_delimited {
                out.push_str("Connection: close\r\n");
            } else {
                out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
            }
            out.push_str("\r\n");
            let w = r.get_mut();
            if w.write_all(out.as_bytes()).await.is_err() || w.write_all(&reply.body).await.is_err()
            {
                return;
            }
            if reply.close_delimited {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use async_trait::async_trait;
    use tokio::net::TcpListener;

    use super::test_server::{Reply, TestServer};
    use super::*;
    use crate::pivot::guard::{StaticResolver, SystemResolver};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(guard: UrlGuard, resolver: impl Resolver + 'static) -> PivotHttp {
        PivotHttp::new(Arc::new(guard), Arc::new(resolver), None).unwrap()
    }

    fn get(url: &str) -> HttpRequest {
        HttpRequest::get(Url::parse(url).unwrap()).timeout(Duration::from_secs(5))
    }

    async fn hello_server() -> TestServer {
        TestServer::start(|s| Reply::ok("text/plain", format!("hello {}", s.path))).await
    }

    /// A guard that refuses only 127.0.0.2, so the test server on 127.0.0.1 is reachable.
    fn guard_blocking_127_0_0_2() -> UrlGuard {
        UrlGuard::new(vec!["127.0.0.2/32".parse().unwrap()], vec![])
    }

    /// A server on 127.0.0.2, or None where that address cannot be bound.
    async fn server_on_127_0_0_2() -> Option<TestServer> {
        let l = TcpListener::bind("127.0.0.2:0").await.ok()?;
        Some(TestServer::on(l, |_| {
            Reply::ok("text/plain", "must not be reached")
        }))
    }

    #[tokio::test]
    async fn default_blacklist_refuses_without_connecting() {
        let server = hello_server().await;
        let port = server.addr.port();
        let v6 = match TcpListener::bind("[::1]:0").await {
            Ok(l) => Some(TestServer::on(l, |_| Reply::status(200))),
            Err(_) => None,
        };
        let v6port = v6.as_ref().map_or(port, |s| s.addr.port());
        let http = client(UrlGuard::default(), SystemResolver);
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://127.1:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://0x7f000001:{port}/"),
            format!("http://0x7f.1:{port}/"),
            format!("http://0177.0.0.1:{port}/"),
            format!("http://[::1]:{v6port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://localhost:{port}/"),
            format!("http://LOCALHOST.:{port}/"),
            format!("http://10.0.0.1:{port}/"),
            format!("http://169.254.169.254:{port}/latest/meta-data/"),
        ] {
            let t = Instant::now();
            let e = http.send(get(&url)).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    HttpError::Guard(
                        GuardError::BlockedAddress { .. } | GuardError::BlockedHost(_)
                    )
                ),
                "{url}: {e:?}"
            );
            assert!(t.elapsed() < Duration::from_secs(1), "{url}: no waiting");
        }
        let e = http
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "URL refused: address 127.0.0.1 of host \"127.0.0.1\" is blacklisted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.connections(), 0);
        if let Some(v6) = v6 {
            assert_eq!(v6.connections(), 0);
        }
        // The same server is reachable when the blacklist allows it: the refusals above
        // were the guard's doing.
        let open = client(UrlGuard::allow_all(), SystemResolver);
        let r = open
            .send(get(&format!("http://127.1:{port}/x")))
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"hello /x");
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn names_resolving_to_blacklisted_addresses_are_refused() {
        let server = hello_server().await;
        let port = server.addr.port();
        let resolver = StaticResolver::new()
            .with("evil.test", &[ip("127.0.0.1")])
            .with("mixed.test", &[ip("203.0.113.10"), ip("127.0.0.1")])
            .with("metadata.test", &[ip("::ffff:169.254.169.254")]);
        let http = client(UrlGuard::default(), resolver);

        let e = http
            .send(get(&format!("http://evil.test:{port}/")))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HttpError::Guard(GuardError::BlockedAddress {
                host: "evil.test".into(),
                addr: ip("127.0.0.1")
            })
        );
        let e = http
            .send(get(&format!("http://mixed.test:{port}/")))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "URL refused: address 127.0.0.1 of host \"mixed.test\" is blacklisted"
        );
        let e = http
            .send(get("http://metadata.test/latest"))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Guard(_)), "{e:?}");
        let e = http.send(get("http://unknown.test/")).await.unwrap_err();
        assert!(
            matches!(e, HttpError::Dns { ref host, .. } if host == "unknown.test"),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("DNS failure for \"unknown.test\""));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.connections(), 0);
    }

    #[tokio::test]
    async fn allowed_requests_work_and_reuse_the_connection() {
        let server = TestServer::start(|s| {
            if s.method == "POST" {
                Reply::ok("application/json", s.body.clone())
                    .header("X-Seen-Sig", s.header("x-signature").unwrap_or(""))
            } else {
                Reply::ok("text/plain; charset=utf-8", "hi").header("X-Mixed-Case", "V")
            }
        })
        .await;
        // A name through the injected resolver, so the DNS hook path is used.
        let resolver = StaticResolver::new().with("pivot.test", &[ip("127.0.0.1")]);
        let http = client(UrlGuard::allow_all(), resolver);
        let url = format!("http://pivot.test:{}/a?x=1", server.addr.port());

        let r1 = http.send(get(&url)).await.unwrap();
        assert_eq!(r1.status, 200);
        assert_eq!(&r1.body[..], b"hi");
        assert_eq!(
            r1.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(r1.header("X-MIXED-CASE"), Some("V"));
        assert!(r1
            .headers
            .iter()
            .any(|(n, v)| n == "x-mixed-case" && v == "V"));
        assert!(r1.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
        assert_eq!(r1.final_url.as_str(), url);

        let r2 = http
            .clone()
            .send(
                HttpRequest::post(Url::parse(&url).unwrap(), "application/json", "{\"a\":1}")
                    .header("X-Signature", "abc"),
            )
            .await
            .unwrap();
        assert_eq!(&r2.body[..], b"{\"a\":1}");
        assert_eq!(r2.header("x-seen-sig"), Some("abc"));

        assert_eq!(server.requests(), 2);
        assert_eq!(
            server.connections(),
            1,
            "second request reuses the connection"
        );
        let seen = server.seen();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/a?x=1");
        assert!(seen[0]
            .header("user-agent")
            .is_some_and(|u| u.starts_with("pivotd/")));
        assert_eq!(seen[1].method, "POST");
        assert_eq!(seen[1].header("content-type"), Some("application/json"));
    }

    #[tokio::test]
    async fn redirects_followed_with_method_rules() {
        let server = TestServer::start(|s| match s.path.as_str() {
            "/r302" => Reply::redirect(302, "/final"),
            "/r303" => Reply::redirect(303, "final"),
            "/r307" => Reply::redirect(307, "/final"),
            "/r308" => Reply::redirect(308, "/r302"),
            "/final" => Reply::ok(
                "text/plain",
                format!("{} {}", s.method, String::from_utf8_lossy(&s.body)),
            ),
            p if p.starts_with("/chain/") => {
                let n: u32 = p["/chain/".len()..].parse().unwrap_or(0);
                if n == 0 {
                    Reply::ok("text/plain", "end")
                } else {
                    Reply::redirect(302, &format!("/chain/{}", n - 1))
                }
            }
            _ => Reply::status(404),
        })
        .await;
        let http = client(UrlGuard::allow_all(), SystemResolver);
        let post = |path: &str| {
            HttpRequest::post(
                Url::parse(&server.url(path)).unwrap(),
                "application/x-www-form-urlencoded",
                "a=1",
            )
        };

        let r = http.send(get(&server.url("/r302"))).await.unwrap();
        assert_eq!(&r.body[..], b"GET ");
        assert_eq!(r.final_url.as_str(), server.url("/final"));
        let r = http.send(post("/r303")).await.unwrap();
        assert_eq!(&r.body[..], b"GET ", "303: GET without body");
        let r = http.send(post("/r302")).await.unwrap();
        assert_eq!(&r.body[..], b"GET ", "302: GET without body");
        let r = http.send(post("/r307")).await.unwrap();
        assert_eq!(&r.body[..], b"POST a=1", "307 keeps method and body");
        let r = http.send(post("/r308")).await.unwrap();
        assert_eq!(
            &r.body[..],
            b"GET ",
            "308 kept POST, then the 302 made it GET"
        );
        let seen = server.seen();
        let r308_then = &seen[seen.len() - 2];
        assert_eq!(
            (r308_then.method.as_str(), r308_then.path.as_str()),
            ("POST", "/r302")
        );
        assert_eq!(r308_then.body, b"a=1");

        let r = http.send(get(&server.url("/chain/4"))).await.unwrap();
        assert_eq!(&r.body[..], b"end", "4 hops are followed");
        let e = http.send(get(&server.url("/chain/5"))).await.unwrap_err();
        assert_eq!(
            e,
            HttpError::TooManyRedirects {
                url: server.url("/chain/1"),
                limit: 4
            }
        );
        // Redirect bodies are drained: everything went over one connection.
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn redirect_to_a_blacklisted_address_is_refused_without_connecting() {
        let Some(target) = server_on_127_0_0_2().await else {
            eprintln!("127.0.0.2 cannot be bound here; skipped");
            return;
        };
        let target_url = target.url("/secret");
        let tport = target.addr.port();
        let server = TestServer::start(move |s| match s.path.as_str() {
            "/to-literal" => Reply::redirect(302, &target_url),
            "/to-name" => Reply::redirect(301, &format!("http://internal.test:{tport}/")),
            "/to-ftp" => Reply::redirect(302, "ftp://example.com/"),
            _ => Reply::status(404),
        })
        .await;
        let resolver = StaticResolver::new().with("internal.test", &[ip("127.0.0.2")]);
        let http = client(guard_blocking_127_0_0_2(), resolver);

        let e = http
            .send(get(&server.url("/to-literal")))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HttpError::Guard(GuardError::BlockedAddress {
                host: "127.0.0.2".into(),
                addr: ip("127.0.0.2")
            })
        );
        let e = http.send(get(&server.url("/to-name"))).await.unwrap_err();
        assert_eq!(
            e,
            HttpError::Guard(GuardError::BlockedAddress {
                host: "internal.test".into(),
                addr: ip("127.0.0.2")
            })
        );
        let e = http.send(get(&server.url("/to-ftp"))).await.unwrap_err();
        assert_eq!(e, HttpError::Guard(GuardError::BadScheme("ftp".into())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(target.connections(), 0);
        assert_eq!(server.requests(), 3);
    }

    /// Answers 127.0.0.1 the first time, 127.0.0.2 after: a rebinding name.
    struct Rebinding {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Resolver for Rebinding {
        async fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let ip = if n == 0 { "127.0.0.1" } else { "127.0.0.2" };
            Ok(vec![SocketAddr::new(ip.parse().unwrap(), port)])
        }
    }

    #[tokio::test]
    async fn a_rebinding_name_is_resolved_once_per_connection_and_checked() {
        let Some(evil) = server_on_127_0_0_2().await else {
            eprintln!("127.0.0.2 cannot be bound here; skipped");
            return;
        };
        // The good server on 127.0.0.1 at the same port as the bad one.
        let port = evil.addr.port();
        let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await else {
            eprintln!("port {port} taken on 127.0.0.1; skipped");
            return;
        };
        let good = TestServer::on(l, |_| Reply::ok("text/plain", "good"));
        let resolver = Arc::new(Rebinding {
            calls: AtomicUsize::new(0),
        });
        let http =
            PivotHttp::new(Arc::new(guard_blocking_127_0_0_2()), resolver.clone(), None).unwrap();
        let url = format!("http://rebind.test:{port}/");
        for _ in 0..3 {
            let r = http.send(get(&url)).await.unwrap();
            assert_eq!(&r.body[..], b"good");
        }
        // One resolution (the checked one) served the connection; no second lookup at
        // connect time could swap the address.
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
        assert_eq!(good.connections(), 1);
        // A fresh client must resolve again and now gets the blocked answer.
        let http2 =
            PivotHttp::new(Arc::new(guard_blocking_127_0_0_2()), resolver.clone(), None).unwrap();
        let e = http2.send(get(&url)).await.unwrap_err();
        assert!(matches!(e, HttpError::Guard(_)), "{e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(evil.connections(), 0);
    }

    #[tokio::test]
    async fn body_cap() {
        let server = TestServer::start(|s| match s.path.as_str() {
            "/big" => Reply::ok("audio/wav", vec![7u8; 2000]),
            "/big-stream" => Reply::ok("audio/wav", vec![7u8; 2000]).close_delimited(),
            _ => Reply::status(404),
        })
        .await;
        let http = client(UrlGuard::allow_all(), SystemResolver);
        for path in ["/big", "/big-stream"] {
            let e = http
                .send(get(&server.url(path)).max_body(1000))
                .await
                .unwrap_err();
            assert_eq!(
                e,
                HttpError::BodyTooLarge {
                    url: server.url(path),
                    limit: 1000
                },
                "{path}"
            );
            let r = http
                .send(get(&server.url(path)).max_body(2000))
                .await
                .unwrap();
            assert_eq!(r.body.len(), 2000, "{path}: exactly the cap is fine");
        }
        let r = http.send(get(&server.url("/nothing"))).await.unwrap();
        assert_eq!(r.status, 404);
        assert!(!r.is_success());
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let server =
            TestServer::start(|_| Reply::ok("text/plain", "late").delay(Duration::from_secs(5)))
                .await;
        let http = client(UrlGuard::allow_all(), SystemResolver);
        let t = Instant::now();
        let e = http
            .send(get(&server.url("/slow")).timeout(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(e, HttpError::Timeout { after, .. } if after == Duration::from_millis(300)),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("timeout after 300 ms fetching http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn closed_port_is_connection_refused() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let http = client(UrlGuard::allow_all(), SystemResolver);
        let url = format!("http://{addr}/");
        let e = http.send(get(&url)).await.unwrap_err();
        assert_eq!(e, HttpError::ConnectRefused { url: url.clone() });
        assert_eq!(e.to_string(), format!("connection refused by {url}"));
    }

    #[tokio::test]
    async fn server_closing_mid_request_is_a_reset() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                // Close at once, nothing answered.
                drop(s);
            }
        });
        let http = client(UrlGuard::allow_all(), SystemResolver);
        let e = http
            .send(get(&format!("http://{addr}/")))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::ConnectReset { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_is_a_tls_failure() {
        let server = hello_server().await;
        let http = client(UrlGuard::allow_all(), SystemResolver);
        let url = format!("https://{}/", server.addr);
        let e = http.send(get(&url)).await.unwrap_err();
        assert!(matches!(e, HttpError::Tls { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("TLS failure with https://127.0.0.1:"));
    }

    /// A test CA (100-year validity) and a leaf for 127.0.0.1 / pivot.test it signed,
    /// made with openssl for these tests only.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBmTCCAT+gAwIBAgIUfUR5RZtjO02q8gJY0qil8Rk3vLQwCgYIKoZIzj0EAwIw\n\
GTEXMBUGA1UEAwwOcGl2b3RkIHRlc3QgQ0EwIBcNMjYxMTIyMTk1OTMxWhgPMjEy\n\
NjEwMjkxOTU5MzFaMBkxFzAVBgNVBAMMDnBpdm90ZCB0ZXN0IENBMFkwEwYHKoZI\n\
zj0CAQYIKoZIzj0DAQcDQgAEpSk1n8xpBORR/X632ap0PlL7YTEM+Rtt9vswmPI6\n\
c1Q0RpXx24QlEP8a3vIyRBwF8zG8LCNhfN/x2uiVqULft6NjMGEwHQYDVR0OBBYE\n\
FNSRRdznG7cKqhtZE4h9N0GSm+YWMB8GA1UdIwQYMBaAFNSRRdznG7cKqhtZE4h9\n\
N0GSm+YWMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49\n\
BAMCA0gAMEUCIQDuXBhfY0u+8cimN7srmPKaC9DBywolixtOUWafSVK84gIgbeWX\n\
6y8k6Ix64lZcuAZ6fgqWnY000JWGTYv+7gEGfnM=\n\
-----END CERTIFICATE-----\n";
    const TEST_LEAF_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBxzCCAWygAwIBAgIUN242z1KHjlO91X82qbx2yGCuabowCgYIKoZIzj0EAwIw\n\
GTEXMBUGA1UEAwwOcGl2b3RkIHRlc3QgQ0EwIBcNMjYxMTIyMTk1OTMxWhgPMjEy\n\
NjEwMjkxOTU5MzFaMBUxEzARBgNVBAMMCnBpdm90LnRlc3QwWTATBgcqhkjOPQIB\n\
BggqhkjOPQMBBwNCAARN1NBTwsyt3+vvBj8AFGxq+LfBPhm8VLcy3km3UztxMCV7\n\
sZ2o6/FvCj2xY7ikLseUDQmecQ42oQhEhxp5dSYpo4GTMIGQMAwGA1UdEwEB/wQC\n\
MAAwDgYDVR0PAQH/BAQDAgWgMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBsGA1UdEQQU\n\
MBKHBH8AAAGCCnBpdm90LnRlc3QwHQYDVR0OBBYEFASbQJgfeHpiwSPy/tW8vzSK\n\
F18eMB8GA1UdIwQYMBaAFNSRRdznG7cKqhtZE4h9N0GSm+YWMAoGCCqGSM49BAMC\n\
A0kAMEYCIQCfVkmmi7N+yqHF3UyF7OI6LScLqBQOIEUeYl61JA46NAIhAPp1uzZ0\n\
LWuKwt1Aj2BRR/JwPpOLQPXOEfanNxoJprMk\n\
-----END CERTIFICATE-----\n";
    const TEST_LEAF_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMrMflFscU4ZI55nL\n\
S+j+3tGPJhzlGeqY3Fn1icZ58EehRANCAARN1NBTwsyt3+vvBj8AFGxq+LfBPhm8\n\
VLcy3km3UztxMCV7sZ2o6/FvCj2xY7ikLseUDQmecQ42oQhEhxp5dSYp\n\
-----END PRIVATE KEY-----\n";

    /// An HTTPS server (the test server behind a TLS acceptor on another port).
    async fn https_server() -> (SocketAddr, TestServer) {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let inner = hello_server().await;
        let certs = vec![CertificateDer::from_pem_slice(TEST_LEAF_PEM.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(TEST_LEAF_KEY_PEM.as_bytes()).unwrap();
        let cfg = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let backend = inner.addr;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        (addr, inner)
    }

    #[tokio::test]
    async fn https_with_the_configured_ca_file() {
        let (addr, inner) = https_server().await;
        let dir = std::env::temp_dir().join(format!("pivotd-ca-ok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, TEST_CA_PEM).unwrap();
        let resolver = Arc::new(StaticResolver::new().with("pivot.test", &[ip("127.0.0.1")]));
        let guard = Arc::new(UrlGuard::allow_all());
        let trusted = PivotHttp::new(guard.clone(), resolver.clone(), Some(ca)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        for url in [
            format!("https://127.0.0.1:{}/ip", addr.port()),
            format!("https://pivot.test:{}/name", addr.port()),
        ] {
            let r = trusted.send(get(&url)).await.unwrap();
            assert_eq!(r.status, 200, "{url}");
            assert!(r.body.starts_with(b"hello /"), "{url}");
        }
        assert_eq!(inner.requests(), 2);

        // Without the CA the same server is not trusted: a TLS failure, never a request.
        let untrusted = PivotHttp::new(guard, resolver, None).unwrap();
        let url = format!("https://pivot.test:{}/", addr.port());
        let e = untrusted.send(get(&url)).await.unwrap_err();
        assert!(matches!(e, HttpError::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains("certificate"), "{e}");
        assert_eq!(inner.requests(), 2);
    }

    #[test]
    fn ca_file_errors_are_setup_errors() {
        let guard = Arc::new(UrlGuard::default());
        let e = PivotHttp::new(
            guard.clone(),
            Arc::new(SystemResolver),
            Some(PathBuf::from("/nonexistent/pivotd-ca.pem")),
        )
        .unwrap_err();
        assert!(matches!(e, HttpError::Setup(ref m) if m.contains("cannot read CA file")));
        let dir = std::env::temp_dir().join(format!("pivotd-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = PivotHttp::new(guard, Arc::new(SystemResolver), Some(f)).unwrap_err();
        assert!(matches!(e, HttpError::Setup(_)), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
