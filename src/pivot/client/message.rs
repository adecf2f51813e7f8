//! What goes out and what comes back: [`HttpRequest`] with its defaults, [`HttpResponse`],
//! and reading a response's body under its cap.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Method;
use url::Url;

use super::error::{classify, HttpError};

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

/// Headers and the body, stopping past `max_body` (the Content-Length is checked first so
/// an announced oversize body is not read at all).
pub(super) async fn read_response(
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
