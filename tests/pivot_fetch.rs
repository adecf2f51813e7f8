//! Played URLs (`pivot::fetch`) against a live server on loopback: decoding, the freshness
//! rules (max-age, ETag and Last-Modified revalidation, no-store, the default), one download
//! for concurrent plays, the caps and the bounded cache. The server is the tests' one HTTP
//! server (`common/http.rs`).

mod common;

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{HttpResp, HttpServer};
use pivotd::media::prompt::{PromptError, PromptLibrary};
use pivotd::pivot::client::{HttpError, PivotHttp};
use pivotd::pivot::fetch::{FetchError, FetchOptions, UrlPrompts};
use pivotd::pivot::guard::{GuardError, SystemResolver, UrlGuard};

const TONE: &[u8] = include_bytes!("../media/tone-1khz.wav");

fn prompts(guard: UrlGuard, opts: FetchOptions) -> UrlPrompts {
    let http = PivotHttp::new(Arc::new(guard), Arc::new(SystemResolver), None).unwrap();
    UrlPrompts::new(http, opts)
}

fn open_prompts() -> UrlPrompts {
    prompts(UrlGuard::allow_all(), FetchOptions::default())
}

#[tokio::test]
async fn wav_is_decoded_like_the_library_and_max_age_is_honoured() {
    let server = HttpServer::start(|_| {
        HttpResp::with("audio/wav", TONE).header("Cache-Control", "public, max-age=300")
    })
    .await;
    let p = open_prompts();
    let url = server.url("/tone-1khz.wav");
    let a = p.get(&url).await.unwrap();
    let lib = PromptLibrary::new(None).get("tone-1khz").unwrap();
    assert!(!a.pcmu.is_empty());
    assert_eq!(a.pcmu, lib.pcmu);
    assert_eq!(a.pcma, lib.pcma);
    assert_eq!(a.name, url);
    let b = p.get(&url).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    // Same URL with a fragment: same entry.
    let c = p.get(&format!("{url}#x")).await.unwrap();
    assert!(Arc::ptr_eq(&a, &c));
    assert_eq!(server.request_count(), 1, "within max-age: no request");
    assert_eq!(p.len(), 1);
    assert_eq!(p.cached_bytes(), a.pcm.len() * 4);
}

#[tokio::test]
async fn etag_revalidation_304_reuses_the_prompt() {
    let version = Arc::new(AtomicU16::new(1));
    let v = version.clone();
    let server = HttpServer::start(move |s| {
        let etag = format!("\"v{}\"", v.load(Ordering::SeqCst));
        if s.header("if-none-match") == Some(etag.as_str()) {
            HttpResp::status(304).header("ETag", &etag)
        } else {
            HttpResp::with("audio/x-wav", TONE).header("ETag", &etag)
        }
    })
    .await;
    let p = open_prompts();
    let url = server.url("/t.wav");
    let a = p.get(&url).await.unwrap();
    let b = p.get(&url).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b), "304: same Arc");
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "no max-age: revalidated");
    assert_eq!(seen[0].header("if-none-match"), None);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));

    // The file changed: a full answer, a new prompt.
    version.store(2, Ordering::SeqCst);
    let c = p.get(&url).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(c.pcmu, a.pcmu);
    let d = p.get(&url).await.unwrap();
    assert!(Arc::ptr_eq(&c, &d));
    assert_eq!(server.requests()[3].header("if-none-match"), Some("\"v2\""));
}

#[tokio::test]
async fn last_modified_revalidation() {
    const LM: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    let server = HttpServer::start(|s| {
        if s.header("if-modified-since") == Some(LM) {
            HttpResp::status(304)
        } else {
            HttpResp::with("audio/wav", TONE).header("Last-Modified", LM)
        }
    })
    .await;
    let p = open_prompts();
    let url = server.url("/lm.wav");
    let a = p.get(&url).await.unwrap();
    let b = p.get(&url).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(server.requests()[1].header("if-modified-since"), Some(LM));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn no_validators_no_max_age_reuses_for_default_fresh() {
    let server = HttpServer::start(|_| HttpResp::with("audio/wav", TONE)).await;
    let url = server.url("/plain.wav");
    let p = open_prompts();
    let a = p.get(&url).await.unwrap();
    let b = p.get(&url).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(server.request_count(), 1, "reused within 60 s");

    let p0 = prompts(
        UrlGuard::allow_all(),
        FetchOptions {
            default_fresh: Duration::ZERO,
            ..FetchOptions::default()
        },
    );
    p0.get(&url).await.unwrap();
    p0.get(&url).await.unwrap();
    assert_eq!(
        server.request_count(),
        3,
        "default_fresh 0: fetched each time"
    );
    let seen = server.requests();
    assert_eq!(seen[2].header("if-none-match"), None);
}

#[tokio::test]
async fn no_store_is_not_kept() {
    let server = HttpServer::start(|_| {
        HttpResp::with("audio/wav", TONE).header("Cache-Control", "no-store")
    })
    .await;
    let p = open_prompts();
    let url = server.url("/ns.wav");
    p.get(&url).await.unwrap();
    p.get(&url).await.unwrap();
    assert_eq!(server.request_count(), 2);
    assert!(p.is_empty());
}

#[tokio::test]
async fn concurrent_gets_share_one_download() {
    let server = HttpServer::start(|_| {
        HttpResp::with("audio/wav", TONE)
            .header("ETag", "\"x\"")
            .delay(Duration::from_millis(200))
    })
    .await;
    let p = open_prompts();
    let url = server.url("/c.wav");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            let url = url.clone();
            tokio::spawn(async move { p.get(&url).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert!(got.iter().all(|g| Arc::ptr_eq(g, &got[0])));
    assert_eq!(
        server.request_count(),
        1,
        "one download for 8 concurrent gets"
    );
}

#[tokio::test]
async fn failures() {
    let server = HttpServer::start(|s| match s.path() {
        "/missing.wav" => HttpResp::status(404),
        "/page.html" => HttpResp::with("text/html", "<html>no</html>"),
        "/big.wav" => HttpResp::with("audio/wav", TONE),
        _ => HttpResp::status(500),
    })
    .await;
    let p = prompts(
        UrlGuard::allow_all(),
        FetchOptions {
            max_bytes: 1000,
            ..FetchOptions::default()
        },
    );
    let e = p.get(&server.url("/missing.wav")).await.unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e:?}");
    let e = p.get(&server.url("/page.html")).await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Decode {
                source: PromptError::Unsupported(_),
                ..
            }
        ),
        "{e:?}"
    );
    let e = p.get(&server.url("/big.wav")).await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Http(HttpError::BodyTooLarge { limit: 1000, .. })
        ),
        "{e:?}"
    );
    let e = p.get("file:///etc/passwd").await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Http(HttpError::Guard(GuardError::BadScheme(_)))
        ),
        "{e:?}"
    );
    assert!(p.is_empty(), "failures leave nothing cached");

    // The default blacklist: refused without a connection.
    let guarded = prompts(UrlGuard::default(), FetchOptions::default());
    let e = guarded.get(&server.url("/big.wav")).await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Http(HttpError::Guard(GuardError::BlockedAddress { .. }))
        ),
        "{e:?}"
    );
    assert_eq!(server.request_count(), 3);
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn slow_server_hits_the_time_cap() {
    let server =
        HttpServer::start(|_| HttpResp::with("audio/wav", TONE).delay(Duration::from_secs(5)))
            .await;
    let p = prompts(
        UrlGuard::allow_all(),
        FetchOptions {
            timeout: Duration::from_millis(200),
            ..FetchOptions::default()
        },
    );
    let t = Instant::now();
    let e = p.get(&server.url("/slow.wav")).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(e, FetchError::Http(HttpError::Timeout { .. })),
        "{e:?}"
    );
}

#[tokio::test]
async fn revalidation_failure_plays_the_cached_copy() {
    let broken = Arc::new(AtomicUsize::new(0));
    let b = broken.clone();
    let server = HttpServer::start(move |_| {
        if b.load(Ordering::SeqCst) == 1 {
            HttpResp::status(503)
        } else if b.load(Ordering::SeqCst) == 2 {
            HttpResp::status(410)
        } else {
            HttpResp::with("audio/wav", TONE).header("ETag", "\"e\"")
        }
    })
    .await;
    let p = open_prompts();
    let url = server.url("/r.wav");
    let a = p.get(&url).await.unwrap();
    broken.store(1, Ordering::SeqCst);
    let b2 = p.get(&url).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b2), "5xx: cached copy");
    broken.store(2, Ordering::SeqCst);
    let e = p.get(&url).await.unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 410, .. }));
    assert!(p.is_empty(), "4xx drops the entry");
}

#[tokio::test]
async fn cache_is_bounded_lru() {
    let server = HttpServer::start(|_| {
        HttpResp::with("audio/wav", TONE).header("Cache-Control", "max-age=600")
    })
    .await;
    let one = open_prompts().get(&server.url("/size")).await.unwrap();
    let size = one.pcm.len() * 4;
    let p = prompts(
        UrlGuard::allow_all(),
        FetchOptions {
            max_entries: 2,
            ..FetchOptions::default()
        },
    );
    p.get(&server.url("/a")).await.unwrap();
    p.get(&server.url("/b")).await.unwrap();
    p.get(&server.url("/a")).await.unwrap(); // a is now the most recent
    p.get(&server.url("/c")).await.unwrap(); // evicts b
    assert_eq!(p.len(), 2);
    let before = server.request_count();
    p.get(&server.url("/a")).await.unwrap();
    p.get(&server.url("/c")).await.unwrap();
    assert_eq!(server.request_count(), before, "a and c still cached");
    p.get(&server.url("/b")).await.unwrap();
    assert_eq!(server.request_count(), before + 1, "b was evicted");

    // Byte cap: room for two prompts only.
    let p = prompts(
        UrlGuard::allow_all(),
        FetchOptions {
            max_cached_bytes: size * 2 + 10,
            ..FetchOptions::default()
        },
    );
    for path in ["/x", "/y", "/z"] {
        p.get(&server.url(path)).await.unwrap();
    }
    assert_eq!(p.len(), 2);
    assert_eq!(p.cached_bytes(), size * 2);
    // A prompt bigger than the whole cache is played but not kept.
    let tiny = prompts(
        UrlGuard::allow_all(),
        FetchOptions {
            max_cached_bytes: 10,
            ..FetchOptions::default()
        },
    );
    tiny.get(&server.url("/huge")).await.unwrap();
    assert!(tiny.is_empty());
}
