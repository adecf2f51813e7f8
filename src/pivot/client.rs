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
//! TLS: rustls with reqwest's `rustls-tls-native-roots` feature, so the trusted roots are the
//! system's (as the README says); a configured CA file adds its certificates.

mod error;
mod message;

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use reqwest::Method;
use reqwest::StatusCode;

use error::{classify, error_chain};
pub use error::{HttpError, Reason};
use message::read_response;
pub use message::{HttpRequest, HttpResponse};

use super::guard::{Resolver, UrlGuard};

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
