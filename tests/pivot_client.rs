//! The guarded HTTP client (`pivot::client`) against live servers on loopback: the guard's
//! refusals happen before any connection, redirects follow the method rules and are checked
//! hop by hop, a rebinding name cannot swap its address, and each transport failure is told
//! as its own `HttpError`. The server is the tests' one HTTP server (`common/http.rs`).

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::TcpListener;
use url::Url;

use common::http::{HttpResp, HttpServer};
use pivotd::pivot::client::{HttpError, HttpRequest, PivotHttp};
use pivotd::pivot::guard::{GuardError, Resolver, StaticResolver, SystemResolver, UrlGuard};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn client(guard: UrlGuard, resolver: impl Resolver + 'static) -> PivotHttp {
    PivotHttp::new(Arc::new(guard), Arc::new(resolver), None).unwrap()
}

fn get(url: &str) -> HttpRequest {
    HttpRequest::get(Url::parse(url).unwrap()).timeout(Duration::from_secs(5))
}

async fn hello_server() -> HttpServer {
    HttpServer::start(|s| HttpResp::with("text/plain", format!("hello {}", s.path()))).await
}

/// A guard that refuses only 127.0.0.2, so the test server on 127.0.0.1 is reachable.
fn guard_blocking_127_0_0_2() -> UrlGuard {
    UrlGuard::new(vec!["127.0.0.2/32".parse().unwrap()], vec![])
}

/// A server on 127.0.0.2, or None where that address cannot be bound.
async fn server_on_127_0_0_2() -> Option<HttpServer> {
    let l = TcpListener::bind("127.0.0.2:0").await.ok()?;
    Some(HttpServer::on(l, |_| {
        HttpResp::with("text/plain", "must not be reached")
    }))
}

#[tokio::test]
async fn default_blacklist_refuses_without_connecting() {
    let server = hello_server().await;
    let port = server.addr.port();
    let v6 = match TcpListener::bind("[::1]:0").await {
        Ok(l) => Some(HttpServer::on(l, |_| HttpResp::status(200))),
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
                HttpError::Guard(GuardError::BlockedAddress { .. } | GuardError::BlockedHost(_))
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
    assert_eq!(server.connection_count(), 0);
    if let Some(v6) = v6 {
        assert_eq!(v6.connection_count(), 0);
    }
    // The same server is reachable when the blacklist allows it: the refusals above
    // were the guard's doing.
    let open = client(UrlGuard::allow_all(), SystemResolver);
    let r = open
        .send(get(&format!("http://127.1:{port}/x")))
        .await
        .unwrap();
    assert_eq!(&r.body[..], b"hello /x");
    assert_eq!(server.connection_count(), 1);
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
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn allowed_requests_work_and_reuse_the_connection() {
    let server = HttpServer::start(|s| {
        if s.method == "POST" {
            HttpResp::with("application/json", s.body.clone())
                .header("X-Seen-Sig", s.header("x-signature").unwrap_or(""))
        } else {
            HttpResp::with("text/plain; charset=utf-8", "hi").header("X-Mixed-Case", "V")
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

    assert_eq!(server.request_count(), 2);
    assert_eq!(
        server.connection_count(),
        1,
        "second request reuses the connection"
    );
    let seen = server.requests();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/a?x=1");
    assert!(seen[0]
        .header("user-agent")
        .is_some_and(|u| u.starts_with("pivotd/")));
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn redirects_followed_with_method_rules() {
    let server = HttpServer::start(|s| match s.path() {
        "/r302" => HttpResp::redirect(302, "/final"),
        "/r303" => HttpResp::redirect(303, "final"),
        "/r307" => HttpResp::redirect(307, "/final"),
        "/r308" => HttpResp::redirect(308, "/r302"),
        "/final" => HttpResp::with(
            "text/plain",
            format!("{} {}", s.method, String::from_utf8_lossy(&s.body)),
        ),
        p => match p.strip_prefix("/chain/") {
            Some(n) => {
                let n: u32 = n.parse().unwrap_or(0);
                if n == 0 {
                    HttpResp::with("text/plain", "end")
                } else {
                    HttpResp::redirect(302, &format!("/chain/{}", n - 1))
                }
            }
            None => HttpResp::status(404),
        },
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
    let seen = server.requests();
    let r308_then = &seen[seen.len() - 2];
    assert_eq!(
        (r308_then.method.as_str(), r308_then.target.as_str()),
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
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn redirect_to_a_blacklisted_address_is_refused_without_connecting() {
    let Some(target) = server_on_127_0_0_2().await else {
        eprintln!("127.0.0.2 cannot be bound here; skipped");
        return;
    };
    let target_url = target.url("/secret");
    let tport = target.addr.port();
    let server = HttpServer::start(move |s| match s.path() {
        "/to-literal" => HttpResp::redirect(302, &target_url),
        "/to-name" => HttpResp::redirect(301, &format!("http://internal.test:{tport}/")),
        "/to-ftp" => HttpResp::redirect(302, "ftp://example.com/"),
        _ => HttpResp::status(404),
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
    assert_eq!(target.connection_count(), 0);
    assert_eq!(server.request_count(), 3);
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
    let good = HttpServer::on(l, |_| HttpResp::with("text/plain", "good"));
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
    assert_eq!(good.connection_count(), 1);
    // A fresh client must resolve again and now gets the blocked answer.
    let http2 =
        PivotHttp::new(Arc::new(guard_blocking_127_0_0_2()), resolver.clone(), None).unwrap();
    let e = http2.send(get(&url)).await.unwrap_err();
    assert!(matches!(e, HttpError::Guard(_)), "{e:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(evil.connection_count(), 0);
}

#[tokio::test]
async fn body_cap() {
    let server = HttpServer::start(|s| match s.path() {
        "/big" => HttpResp::with("audio/wav", vec![7u8; 2000]),
        "/big-stream" => HttpResp::with("audio/wav", vec![7u8; 2000]).close_delimited(),
        _ => HttpResp::status(404),
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
        HttpServer::start(|_| HttpResp::with("text/plain", "late").delay(Duration::from_secs(5)))
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
    // The request is read, then the connection closed with nothing answered.
    let server = HttpServer::start(|_| HttpResp::hang_up()).await;
    let http = client(UrlGuard::allow_all(), SystemResolver);
    let e = http.send(get(&server.url("/"))).await.unwrap_err();
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
async fn https_server() -> (SocketAddr, HttpServer) {
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
    assert_eq!(inner.request_count(), 2);

    // Without the CA the same server is not trusted: a TLS failure, never a request.
    let untrusted = PivotHttp::new(guard, resolver, None).unwrap();
    let url = format!("https://pivot.test:{}/", addr.port());
    let e = untrusted.send(get(&url)).await.unwrap_err();
    assert!(matches!(e, HttpError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(inner.request_count(), 2);
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
