//! Scenario P's web server: every pivot request (GET or POST, any path) is answered with the
//! same Kazoo callflow as scenario A's static one (play the 1 s prompt, hang up). It runs on
//! its own single-threaded tokio runtime in the harness's process, counts the requests and
//! times its own handling of each; it cannot see pivotd's side of the round trip.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    /// Handling time of each request since the last `take`, in ns.
    service_ns: Mutex<Vec<u64>>,
}

pub struct PivotWeb {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    // Kept alive for the server's task.
    _runtime: tokio::runtime::Runtime,
}

/// What the web server saw since the last `take`.
pub struct WebSample {
    pub requests: u64,
    pub service_ns: Vec<u64>,
}

impl PivotWeb {
    /// Starts the server on an ephemeral loopback port; every answer is `flow` (JSON).
    pub fn start(flow: &'static str) -> PivotWeb {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("web server runtime");
        let counters = Arc::new(Counters::default());
        let app = Router::new()
            .fallback(answer)
            .with_state((counters.clone(), flow));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the web server");
        let addr = listener.local_addr().expect("web server address");
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PivotWeb {
            addr,
            counters,
            _runtime: runtime,
        }
    }

    /// The requests and handling times since the last call, and resets them.
    pub fn take(&self) -> WebSample {
        let requests = self.counters.requests.swap(0, Ordering::Relaxed);
        let service_ns = std::mem::take(
            &mut *self
                .counters
                .service_ns
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        WebSample {
            requests,
            service_ns,
        }
    }
}

async fn answer(
    State((counters, flow)): State<(Arc<Counters>, &'static str)>,
) -> impl IntoResponse {
    let started = Instant::now();
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let response = ([(header::CONTENT_TYPE, "application/json")], flow);
    let ns = started.elapsed().as_nanos() as u64;
    counters
        .service_ns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ns);
    response
}
