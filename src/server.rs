//! The server: starts the SIP endpoint, media and runtime from a [`Config`], admits new
//! requests (limits, routing, offer/answer) and starts one [`Call`] task per accepted INVITE.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsip::headers::UntypedHeader;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::call::{Call, CallContext, CallSetup, CallStats, ACCEPT, ALLOW, SUPPORTED};
use crate::callflow::check::ConfigPrompts as _;
use crate::callflow::modules::pivot::PivotStats;
use crate::callflow::runtime::{PivotServices, Runtime, Speaker};
use crate::config::Config;
use crate::flow::CallInfo;
use crate::health::TaskHealth;
use crate::logsafe::wire;
use crate::media::player::Pacer;
use crate::media::prompt::PromptError;
use crate::media::rtp::{PortPool, RtpError, RtpSession};
use crate::media::sdp::{self, LocalSession, SdpError};
use crate::media::tts::{TtsEngine, TtsLimits};
use crate::pivot::client::PivotHttp;
use crate::pivot::debug::DebugSink;
use crate::pivot::fetch::{FetchOptions, UrlPrompts};
use crate::pivot::guard::{SystemResolver, UrlGuard};
use crate::routing::Routes;
use crate::sip::dialog::{host_port, Dialog};
use crate::sip::endpoint::{Endpoint, EndpointConfig, NewRequest, ServerTx};
use crate::sip::message;
use crate::sip::outgoing::{random_token, response_bytes};
use crate::sip::source::{SourceGuard, SourceRefusal};
use crate::sip::transport::{TransportConfig, TransportError};
use crate::store::Store;

/// Why the server could not start: one clear line each.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("media: {0}")]
    Rtp(#[from] RtpError),
    #[error("media dir: {0}")]
    MediaDir(#[from] PromptError),
    #[error("pivot: {0}")]
    Pivot(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("api: cannot listen on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub struct ServerHandle {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    draining: watch::Sender<bool>,
    force_end: watch::Sender<bool>,
    active: Arc<AtomicUsize>,
    grace: Duration,
    pub endpoint: Arc<Endpoint>,
    pub stats: Arc<CallStats>,
    pool: Arc<PortPool>,
    pacer: Pacer,
    /// The embedded store: pivot debug records, API callflows, CDRs.
    pub store: Store,
    /// Where the HTTP API listens (the bound address: port 0 resolved).
    pub api: Option<SocketAddr>,
    /// The routing table: config callflows + API callflows, read for every INVITE.
    pub routes: Arc<Routes>,
    /// Pivot requests by outcome.
    pub pivot_stats: Arc<PivotStats>,
    /// The SIP service's long-lived tasks, and whether each is alive.
    pub health: Arc<TaskHealth>,
    /// 503s sent for overload, by reason.
    pub overload: Arc<OverloadStats>,
    /// Dropping the handle stops the API server and the retention task.
    _background: watch::Sender<()>,
}

/// What the media side holds now: for leak checks and, later, metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaUse {
    pub ports_available: usize,
    pub ports_capacity: usize,
    pub pacer_streams: usize,
}

impl ServerHandle {
    pub fn media_use(&self) -> MediaUse {
        MediaUse {
            ports_available: self.pool.available(),
            ports_capacity: self.pool.capacity(),
            pacer_streams: self.pacer.stats().streams,
        }
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops taking calls (new INVITEs get 503), lets live calls run for the grace period,
    /// then ends the rest (BYE) and returns once they are gone.
    pub async fn shutdown(&self) {
        let _ = self.draining.send(true);
        let deadline = Instant::now() + self.grace;
        while self.active_calls() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.active_calls() > 0 {
            tracing::info!(
                calls = self.active_calls(),
                "grace period over: hanging up the remaining calls"
            );
            let _ = self.force_end.send(true);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.active_calls() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Give the last BYEs a moment to leave the sockets.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts everything the configuration describes.
pub async fn start(cfg: Arc<Config>) -> Result<ServerHandle, StartError> {
    let prompts = Arc::new(cfg.prompt_library());
    let store = Store::open(&cfg.store.sqlite)?;
    prompts.check_dir()?;
    let media_ip = cfg.media.ip;
    let pool = PortPool::new(media_ip, cfg.media.port_min, cfg.media.port_max)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let pacer = Pacer::start(cores);
    // Counts panics for /metrics; the binary has already chosen to log them as one line.
    crate::health::install_panic_hook(false);
    let health = TaskHealth::new();
    let sources = SourceGuard::new(cfg.sip.sources.clone());
    let (endpoint, app_rx) = Endpoint::start(EndpointConfig {
        transport: TransportConfig {
            udp: cfg.sip.udp.clone(),
            tcp: cfg.sip.tcp.clone(),
            max_message_bytes: cfg.sip.max_message_bytes,
            tcp_idle_timeout: Duration::from_secs(cfg.sip.tcp_idle_timeout_s.max(1)),
            sources: sources.clone(),
            health: health.clone(),
        },
        timers: cfg.sip.timers(),
        shards: cores,
        app_queue: 16384,
    })
    .await?;
    let (draining_tx, draining_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(CallStats::default());
    let pivot_stats = Arc::new(PivotStats::default());
    let routes = Arc::new(Routes::new());
    let overload = Arc::new(OverloadStats::default());
    crate::api::load_callflows(&cfg, &store, &routes).await;
    let ctx = Arc::new(CallContext {
        endpoint: endpoint.clone(),
        runtime: Arc::new(Runtime {
            prompts: prompts.clone(),
            pivot: Some(Arc::new(pivot_services(
                &cfg,
                store.clone(),
                pivot_stats.clone(),
            )?)),
            tts: Some(Arc::new(TtsSpeaker(TtsEngine::new(
                cfg.tts.command.clone(),
                cfg.tts.voices.clone(),
                TtsLimits {
                    timeout: Duration::from_millis(cfg.tts.timeout_ms),
                    ..TtsLimits::default()
                },
            )))),
        }),
        rtp_timeout: secs(cfg.media.rtp_timeout_s),
        max_duration: secs(cfg.sip.max_call_duration_s),
        force_end: force_rx,
        active: active.clone(),
        stats: stats.clone(),
        cdrs: Some(store.clone()),
    });
    let (background, stop) = watch::channel(());
    let api = crate::api::start(
        cfg.api.listen,
        crate::api::ApiState::new(crate::api::ApiParts {
            cfg: cfg.clone(),
            store: store.clone(),
            routes: routes.clone(),
            endpoint: endpoint.clone(),
            calls: stats.clone(),
            active: active.clone(),
            pivot: pivot_stats.clone(),
            pacer: pacer.clone(),
            pool: pool.clone(),
            health: health.clone(),
            overload: overload.clone(),
        }),
        stop.clone(),
    )
    .await
    .map_err(|source| StartError::Api {
        addr: cfg.api.listen,
        source,
    })?;
    crate::api::spawn_retention(
        store.clone(),
        Duration::from_secs(cfg.store.debug_retention_s),
        stop,
    );
    let handle = ServerHandle {
        udp: endpoint.transport().udp_addrs(),
        tcp: endpoint.transport().tcp_addrs(),
        draining: draining_tx,
        force_end: force_tx,
        active: active.clone(),
        grace: Duration::from_secs(cfg.sip.shutdown_grace_s),
        endpoint: endpoint.clone(),
        stats,
        pool: pool.clone(),
        pacer: pacer.clone(),
        store: store.clone(),
        api: Some(api),
        routes: routes.clone(),
        pivot_stats,
        health: health.clone(),
        overload: overload.clone(),
        _background: background,
    };
    let admission = Admission {
        routes,
        limiter: RateLimiter::new(cfg.sip.max_calls_per_second),
        cfg,
        ctx,
        pool,
        pacer,
        draining: draining_rx,
        sources: sources.clone(),
        overload,
    };
    health.watch("sip admission", admission.run(app_rx));
    // Idle sources leave the table (and give their memory back) once a minute.
    health.supervise("source sweeper", move || {
        let sources = sources.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                sources.sweep();
            }
        }
    });
    Ok(handle)
}

/// The TTS hook as the callflow runtime uses it. TwiML `<Say>` allows 4000 characters (spec
/// a.1), the `tts` module 1000 (checked when its data is read).
struct TtsSpeaker(TtsEngine);

#[async_trait::async_trait]
impl Speaker for TtsSpeaker {
    async fn speak(
        &self,
        text: &str,
        voice: &str,
        language: Option<&str>,
    ) -> Result<Arc<crate::media::prompt::Prompt>, String> {
        self.0
            .speak_max(text, voice, language, crate::pivot::twiml::MAX_SAY_CHARS)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The guarded HTTP client and what goes with it, from `[pivot]` and the accounts.
fn pivot_services(
    cfg: &Config,
    store: Store,
    stats: Arc<PivotStats>,
) -> Result<PivotServices, StartError> {
    let guard = Arc::new(UrlGuard::from_config(&cfg.pivot));
    let http = PivotHttp::new(guard, Arc::new(SystemResolver), cfg.pivot.ca_file.clone())
        .map_err(|e| StartError::Pivot(e.to_string()))?;
    Ok(PivotServices {
        url_prompts: UrlPrompts::new(http.clone(), FetchOptions::default()),
        http,
        max_req_timeout: Duration::from_millis(cfg.pivot.max_req_timeout_ms),
        max_requests_per_call: cfg.pivot.max_requests_per_call,
        secrets: cfg
            .accounts
            .iter()
            .filter_map(|a| Some((a.id.clone(), a.pivot_secret.clone()?)))
            .collect(),
        debug: DebugSink::new(store),
        stats,
    })
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

/// New calls per second: a token bucket refilled continuously, one second of burst.
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: per_second as f64,
            tokens: per_second as f64,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why an INVITE got 503 for overload: one counter each (the endpoint counts its own full
/// queue, the source guard its refusals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overload {
    /// `max_calls` calls are up.
    MaxCalls,
    /// Over `max_calls_per_second`.
    CallRate,
    /// Over the source's `source_max_calls`.
    SourceCalls,
    /// Over the source's `source_calls_per_second`.
    SourceCallRate,
    /// The table of sources is full.
    SourceTableFull,
    /// No RTP port pair free (or the RTP session could not start).
    MediaPorts,
}

impl Overload {
    pub const ALL: [Overload; 6] = [
        Overload::MaxCalls,
        Overload::CallRate,
        Overload::SourceCalls,
        Overload::SourceCallRate,
        Overload::SourceTableFull,
        Overload::MediaPorts,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Overload::MaxCalls => "max_calls",
            Overload::CallRate => "call_rate",
            Overload::SourceCalls => "source_calls",
            Overload::SourceCallRate => "source_call_rate",
            Overload::SourceTableFull => "source_table_full",
            Overload::MediaPorts => "media_ports",
        }
    }

    fn response(self) -> (&'static str, &'static str) {
        match self {
            Overload::MaxCalls => ("Too Many Calls", "5"),
            Overload::CallRate => ("Call Rate Limit", "1"),
            Overload::SourceCalls => ("Too Many Calls From Source", "5"),
            Overload::SourceCallRate => ("Call Rate Limit For Source", "1"),
            Overload::SourceTableFull => ("Too Many Sources", "5"),
            Overload::MediaPorts => ("No Media Ports", "5"),
        }
    }
}

/// 503s sent for overload, by reason.
#[derive(Debug, Default)]
pub struct OverloadStats([AtomicU64; Overload::ALL.len()]);

impl OverloadStats {
    pub fn get(&self, why: Overload) -> u64 {
        self.0[why as usize].load(Ordering::Relaxed)
    }

    fn count(&self, why: Overload) {
        self.0[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Decides on every new request; runs as one task so its state needs no lock.
struct Admission {
    cfg: Arc<Config>,
    routes: Arc<Routes>,
    ctx: Arc<CallContext>,
    pool: Arc<PortPool>,
    pacer: Pacer,
    limiter: RateLimiter,
    draining: watch::Receiver<bool>,
    sources: Arc<SourceGuard>,
    overload: Arc<OverloadStats>,
}

/// A response outside any dialog: with a fresh To-tag (RFC 3261 §8.2.6.2) except for 100.
fn reply(
    req: &rsip::Request,
    tx: &ServerTx,
    code: u16,
    reason: Option<&str>,
    extra: &[(&str, &str)],
) {
    let tag = random_token(10);
    let bytes = response_bytes(req, code, reason, Some(&tag), extra, None);
    tx.respond(code, bytes);
}

impl Admission {
    async fn run(mut self, mut rx: mpsc::Receiver<NewRequest>) {
        while let Some(NewRequest { req, tx }) = rx.recv().await {
            // A panic costs this request (its transaction times out), never the admission
            // task, whose death would refuse every later call.
            let _ = crate::health::catch(|| self.on_request(req, tx));
        }
    }

    fn on_request(&mut self, req: rsip::Request, tx: ServerTx) {
        if !matches!(req.method, rsip::Method::Ack) && !uri_scheme_supported(&req.uri) {
            reply(&req, &tx, 416, None, &[]);
            return;
        }
        if matches!(
            req.method,
            rsip::Method::Bye
                | rsip::Method::Info
                | rsip::Method::PRack
                | rsip::Method::Update
                | rsip::Method::Register
                | rsip::Method::Subscribe
                | rsip::Method::Message
                | rsip::Method::Publish
                | rsip::Method::Refer
                | rsip::Method::Notify
        ) {
            // Answered 481 or 405 below: what a scanner probing for extensions collects.
            self.sources.failure(tx.peer().remote.ip());
        }
        match req.method {
            rsip::Method::Invite => self.on_invite(req, tx),
            rsip::Method::Options if refuse_require(&req, &tx) => {}
            rsip::Method::Options => reply(
                &req,
                &tx,
                200,
                None,
                &[
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Supported", SUPPORTED),
                ],
            ),
            rsip::Method::Ack => {}
            // Requests that only exist inside a dialog, arriving without one.
            rsip::Method::Bye | rsip::Method::Info | rsip::Method::PRack | rsip::Method::Update => {
                reply(&req, &tx, 481, None, &[])
            }
            _ => reply(&req, &tx, 405, None, &[("Allow", ALLOW)]),
        }
    }

    fn on_invite(&mut self, req: rsip::Request, tx: ServerTx) {
        if *self.draining.borrow() {
            reply(
                &req,
                &tx,
                503,
                Some("Shutting Down"),
                &[("Retry-After", "30")],
            );
            return;
        }
        if refuse_require(&req, &tx) {
            return;
        }
        let ctype = message::header_value(&req, "Content-Type");
        let accept = message::header_value(&req, "Accept");
        let has_body = req.body.iter().any(|b| !b.is_ascii_whitespace());
        if has_body {
            let is_sdp = ctype
                .as_deref()
                .map(|c| {
                    c.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("application/sdp")
                })
                .unwrap_or(false);
            if !is_sdp {
                reply(&req, &tx, 415, None, &[("Accept", "application/sdp")]);
                return;
            }
        }
        // Our 200 carries SDP (answer or late offer): a caller whose Accept rules SDP out
        // gets 406 (RFC 3261 §21.4.7, RFC 4475 §3.3.15).
        if let Some(accept) = accept.as_deref() {
            if !accepts_sdp(accept) {
                reply(&req, &tx, 406, None, &[("Accept", "application/sdp")]);
                return;
            }
        }
        // The source's own limits first: a flooding source must not use up the global ones.
        let slot = match self.sources.admit_call(tx.peer().remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                let over = match why {
                    SourceRefusal::CallRate => Overload::SourceCallRate,
                    SourceRefusal::TableFull => Overload::SourceTableFull,
                    _ => Overload::SourceCalls,
                };
                self.overloaded(&req, &tx, over);
                return;
            }
        };
        let max_calls = self.cfg.sip.max_calls;
        if max_calls > 0 && self.ctx.active.load(Ordering::Relaxed) >= max_calls as usize {
            self.overloaded(&req, &tx, Overload::MaxCalls);
            return;
        }
        if !self.limiter.allow() {
            self.overloaded(&req, &tx, Overload::CallRate);
            return;
        }
        let user = percent_decode(req.uri.user().unwrap_or(""));
        let host = req.uri.host_with_port.host.to_string();
        let Some((account, flow)) = self.routes.route(&self.cfg, &user, &host) else {
            // DEBUG: a scanner draws thousands of these; the source guard counts them.
            tracing::debug!(number = %wire(&user), realm = %wire(&host), "no callflow for the number");
            self.sources.failure(tx.peer().remote.ip());
            reply(&req, &tx, 404, None, &[]);
            return;
        };
        let negotiated = if has_body {
            let offer = std::str::from_utf8(&req.body)
                .map_err(|_| SdpError::Malformed {
                    line: 0,
                    reason: "not UTF-8".into(),
                })
                .and_then(sdp::parse);
            match offer.and_then(|o| sdp::negotiate(&o).map(|n| (o, n))) {
                Ok(on) => Some(on),
                Err(e) => {
                    tracing::debug!(reason = %wire(&e.to_string()), "offer refused");
                    reply(
                        &req,
                        &tx,
                        488,
                        None,
                        &[("Warning", "305 pivotd \"Incompatible media format\"")],
                    );
                    return;
                }
            }
        } else {
            None
        };
        let ports = match self.pool.allocate() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("no RTP ports: {e}");
                self.overloaded(&req, &tx, Overload::MediaPorts);
                return;
            }
        };
        let (offer, negotiated) = match negotiated {
            Some((o, n)) => (Some(o), Some(n)),
            None => (None, None),
        };
        let remote = negotiated.as_ref().and_then(|n| n.remote);
        let pt = negotiated.as_ref().map(|n| n.codec_pt).unwrap_or(0);
        let rtp = match RtpSession::start(ports, &self.pacer, remote, pt) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!("cannot start RTP: {e}");
                self.overloaded(&req, &tx, Overload::MediaPorts);
                return;
            }
        };
        let advertise = self.cfg.sip.advertise;
        let local_host = host_port(advertise, tx.peer().local);
        let local_tag = random_token(10);
        let dialog = match Dialog::from_invite(&req, &local_tag, tx.peer().clone(), local_host) {
            Ok(d) => d,
            Err(e) => {
                reply(&req, &tx, 400, Some(&e.to_string()), &[]);
                return;
            }
        };
        let media_ip: IpAddr = self.cfg.sip.advertise.unwrap_or(self.cfg.media.ip);
        let local_sdp = LocalSession {
            ip: media_ip,
            port: rtp.local_port(),
            session_id: rand::random::<u32>() as u64,
            version: 1,
        };
        let info = call_info(&req, &account.id, &user, &host);
        self.ctx.active.fetch_add(1, Ordering::Relaxed);
        let setup = CallSetup {
            invite: req,
            tx,
            info,
            flow,
            dialog,
            rtp,
            negotiated,
            offer,
            local_sdp,
            // A trusted source (`[sip] trusted_sources`) skips the proof RTP waits for.
            source_trusted: slot.trusted(),
            early_media_unproven: Duration::from_secs(self.cfg.media.early_media_unproven_s),
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            // The source's call slot is given back when the call ends (or its task unwinds).
            let _slot = slot;
            Call::run(ctx, setup).await
        });
    }

    /// 503 for overload, with the reason's phrase and Retry-After, counted.
    fn overloaded(&self, req: &rsip::Request, tx: &ServerTx, why: Overload) {
        self.overload.count(why);
        let (phrase, retry) = why.response();
        reply(req, tx, 503, Some(phrase), &[("Retry-After", retry)]);
    }
}

/// RFC 3261 §8.2.2.3: pivotd supports no extension, so a request with a Require header is
/// answered 420 with the tags in Unsupported. Returns whether it was refused.
fn refuse_require(req: &rsip::Request, tx: &ServerTx) -> bool {
    let tags: Vec<&str> = req
        .headers
        .iter()
        .map(message::header_name_value)
        .filter(|(n, _)| n.eq_ignore_ascii_case("Require"))
        .map(|(_, v)| v.trim())
        .collect();
    if tags.is_empty() {
        return false;
    }
    reply(req, tx, 420, None, &[("Unsupported", &tags.join(", "))]);
    true
}

/// Whether an Accept value admits application/sdp (RFC 3261 §20.1: media ranges with `*`
/// wildcards; an empty Accept admits nothing).
fn accepts_sdp(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        ["application/sdp", "application/*", "*/*"]
            .iter()
            .any(|ok| media.eq_ignore_ascii_case(ok))
    })
}

fn uri_scheme_supported(uri: &rsip::Uri) -> bool {
    matches!(
        uri.scheme,
        Some(rsip::Scheme::Sip) | Some(rsip::Scheme::Sips) | None
    )
}

/// `%XX` escapes in a URI user part (RFC 3261 §19.1.2), decoded for routing.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The plain call facts the runtime and pivot see.
fn call_info(req: &rsip::Request, account_id: &str, user: &str, host: &str) -> CallInfo {
    use rsip::headers::ToTypedHeader;
    use rsip::message::HeadersExt;
    let from = req.from_header().ok().and_then(|f| f.typed().ok());
    let to = req.to_header().ok().and_then(|t| t.typed().ok());
    let call_id = req
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let (from_user, from_realm, display) = match &from {
        Some(f) => (
            percent_decode(f.uri.user().unwrap_or("")),
            f.uri.host_with_port.host.to_string(),
            f.display_name
                .as_ref()
                .map(|d| d.trim().trim_matches('"').to_string())
                .filter(|d| !d.is_empty()),
        ),
        None => (String::new(), String::new(), None),
    };
    let (to_user, to_realm) = match &to {
        Some(t) => (
            percent_decode(t.uri.user().unwrap_or("")),
            t.uri.host_with_port.host.to_string(),
        ),
        None => (String::new(), String::new()),
    };
    let custom_sip_headers = req
        .headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Other(name, value)
                if name.len() > 2
                    && name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) =>
            {
                Some((name.clone(), value.clone()))
            }
            _ => None,
        })
        .collect();
    CallInfo {
        call_id,
        account_id: account_id.to_string(),
        caller_id_number: (!from_user.is_empty()).then(|| from_user.clone()),
        caller_id_name: display,
        from_user,
        from_realm,
        to_user,
        to_realm,
        request_user: user.to_string(),
        request_realm: host.to_string(),
        custom_sip_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("sips%3Auser%40example.com"),
            "sips:user@example.com"
        );
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz1"), "%zz1");
    }

    #[test]
    fn accept_admits_sdp_only_when_listed() {
        assert!(accepts_sdp("application/sdp"));
        assert!(accepts_sdp("text/plain, Application/SDP;level=1"));
        assert!(accepts_sdp("application/*"));
        assert!(accepts_sdp("*/*"));
        assert!(!accepts_sdp("text/nobodyKnowsThis"));
        assert!(!accepts_sdp(""));
        assert!(!accepts_sdp("application/sdpx"));
    }

    #[test]
    fn rate_limiter_allows_a_second_of_burst_then_refuses() {
        let mut r = RateLimiter::new(10);
        let allowed = (0..20).filter(|_| r.allow()).count();
        assert_eq!(allowed, 10);
    }
}
