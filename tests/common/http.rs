//! The one HTTP/1.1 server of the tests: the customer's pivot web server, and the far end of
//! the guarded client's own tests. Records every request and answers with what the test's
//! handler says; keep-alive, Content-Length bodies (or close-delimited, or no answer at all).
//! Loopback only, ephemeral ports.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct HttpReq {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReq {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The form fields of the query (GET) or the body (POST form), decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        let raw = if self.method == "GET" {
            self.query().to_string()
        } else {
            String::from_utf8_lossy(&self.body).into_owned()
        };
        raw.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone, Debug)]
pub struct HttpResp {
    pub status: u16,
    pub content_type: Option<String>,
    /// Other headers (name, value), after Content-Type.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (timeout tests).
    pub delay: Duration,
    /// No Content-Length: the body ends when the connection closes.
    pub close_delimited: bool,
    /// Close the connection without answering (a server dying mid-request).
    pub hang_up: bool,
}

impl HttpResp {
    pub fn json(body: &str) -> HttpResp {
        HttpResp::with("application/json", body)
    }

    pub fn xml(body: &str) -> HttpResp {
        HttpResp::with("text/xml", body)
    }

    /// The repo's `media/NAME` served as `audio/wav`.
    pub fn wav(name: &str) -> HttpResp {
        let media = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("media");
        let body = std::fs::read(media.join(name)).expect("a shipped WAV");
        HttpResp::with("audio/wav", body)
    }

    pub fn with(content_type: &str, body: impl Into<Vec<u8>>) -> HttpResp {
        HttpResp {
            content_type: Some(content_type.to_string()),
            body: body.into(),
            ..HttpResp::status(200)
        }
    }

    pub fn status(status: u16) -> HttpResp {
        HttpResp {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            close_delimited: false,
            hang_up: false,
        }
    }

    pub fn redirect(status: u16, location: &str) -> HttpResp {
        HttpResp::status(status).header("Location", location)
    }

    /// No answer: the connection is closed once the request is read.
    pub fn hang_up() -> HttpResp {
        HttpResp {
            hang_up: true,
            ..HttpResp::status(0)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> HttpResp {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> HttpResp {
        self.delay = delay;
        self
    }

    pub fn close_delimited(mut self) -> HttpResp {
        self.close_delimited = true;
        self
    }
}

type Handler = Arc<dyn Fn(&HttpReq) -> HttpResp + Send + Sync>;

pub struct HttpServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<HttpReq>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// On 127.0.0.1, an ephemeral port.
    pub async fn start(
        handler: impl Fn(&HttpReq) -> HttpResp + Send + Sync + 'static,
    ) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        HttpServer::on(listener, handler)
    }

    /// On a listener the test bound (another loopback address, a given port).
    pub fn on(
        listener: TcpListener,
        handler: impl Fn(&HttpReq) -> HttpResp + Send + Sync + 'static,
    ) -> HttpServer {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let (r, c) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, handler.clone(), r.clone()));
            }
        });
        HttpServer {
            addr,
            requests,
            connections,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<HttpReq> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

async fn serve(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<HttpReq>>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let end = loop {
            // A request starts with its method; anything else (a TLS ClientHello) is
            // answered 400 and closed, as an HTTP server would.
            if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
                let _ = stream.write_all(BAD_REQUEST).await;
                return;
            }
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[end..end + len].to_vec();
        buf.drain(..end + len);
        let req = HttpReq {
            method,
            target,
            headers,
            body,
        };
        requests.lock().unwrap().push(req.clone());
        let resp = handler(&req);
        if resp.hang_up {
            return;
        }
        if !resp.delay.is_zero() {
            tokio::time::sleep(resp.delay).await;
        }
        let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
        if resp.close_delimited {
            out.push_str("Connection: close\r\n");
        } else {
            out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        }
        if let Some(ct) = &resp.content_type {
            out.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        for (n, v) in &resp.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&resp.body);
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
        if resp.close_delimited {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
