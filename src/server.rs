//! The server: wiring only. It starts the store, media, the SIP endpoint, the callflow
//! runtime, the HTTP API and the admission task from a [`Config`], and shuts them down.
//! Whether a request becomes a call is decided in [`crate::call::admission`]. A reload
//! (SIGHUP) is carried out in `reload.rs`.

mod reload;

pub use reload::{Hangups, ReloadError};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::call::admission::{Admission, AdmissionParts, OverloadStats};
use crate::call::{CallContext, CallStats};
use crate::callflow::modules::pivot::{PivotServices, PivotStats};
use crate::callflow::runtime::{Runtime, Speaker};
use crate::config::live::LiveConfig;
use crate::config::{Config, SourceLimits};
use crate::health::TaskHealth;
use crate::media::player::Pacer;
use crate::media::prompt::PromptError;
use crate::media::rtp::{PortPool, RtpError};
use crate::media::tts::{TtsEngine, TtsLimits};
use crate::pivot::client::{HttpError, PivotHttp};
use crate::pivot::debug::DebugSink;
use crate::pivot::fetch::{FetchOptions, UrlPrompts};
use crate::pivot::guard::{SystemResolver, UrlGuard};
use crate::presence::{Presence, PresenceParts};
use crate::registrar::directory::Directory;
use crate::registrar::Registrar;
use crate::routing::Routes;
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::overload::{LoadGate, LoadLimits, LoadMonitor};
use crate::sip::source::SourceGuard;
use crate::sip::transport::{TlsConfig, TransportConfig, TransportError};
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
    Pivot(#[source] HttpError),
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
    pub tls: Vec<SocketAddr>,
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
    /// Dropping the handle stops the API server and the retention task.
    /// Devices' bindings and the authenticator.
    pub registrar: Arc<Registrar>,
    /// Lamps and subscriptions.
    pub presence: Arc<Presence>,
    /// What a reload changes.
    reloadable: Arc<reload::Reloadable>,
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
        // What is queued for the store (CDRs, the subscriptions' last CSeqs) is written
        // before the process goes.
        let store = self.store.clone();
        // Not for ever: a PostgreSQL that cannot be reached must not hold the shutdown.
        let flushed = tokio::task::spawn_blocking(move || store.flush_within(STORE_FLUSH)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "store: last writes not flushed");
        }
    }
}

/// How long shutdown waits for the store's last writes.
const STORE_FLUSH: Duration = Duration::from_secs(10);
/// Starts everything the configuration describes.
pub async fn start(cfg: Arc<Config>) -> Result<ServerHandle, StartError> {
    if let Some(w) = cfg.unadvertised_wildcard() {
        tracing::warn!("{w}");
    }
    let prompts = Arc::new(crate::callflow::check::prompt_library(&cfg));
    let store = Store::from_config(&cfg.store)?;
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
    let sources = SourceGuard::new(source_limits(&cfg));
    // The config in force: a reload swaps it for those that read it per request.
    let live = LiveConfig::new(cfg.clone());
    // The config's devices, then those created over the API (kept in the store).
    let directory = Arc::new(Directory::from_config(&cfg));
    crate::api::load_devices(&cfg, &store, &directory).await;
    let registrar = Arc::new(Registrar::new(
        live.clone(),
        directory.clone(),
        Some(store.clone()),
    ));
    let load = Arc::new(LoadGate::new(LoadLimits::from_config(&cfg.sip.overload)));
    let (endpoint, app_rx) = Endpoint::start(EndpointConfig {
        transport: TransportConfig {
            udp: cfg.sip.udp.clone(),
            tcp: cfg.sip.tcp.clone(),
            tls: TlsConfig {
                listen: cfg.sip.tls.clone(),
                cert: cfg.sip.tls_cert.clone(),
                key: cfg.sip.tls_key.clone(),
                ca_file: cfg.sip.tls_ca_file.clone(),
                handshake_timeout: cfg.sip.tls_handshake_timeout(),
            },
            max_message_bytes: cfg.sip.max_message_bytes,
            tcp_idle_timeout: Duration::from_secs(cfg.sip.tcp_idle_timeout_s.max(1)),
            udp_receive_buffer: cfg.sip.udp_receive_buffer_bytes,
            udp_readers: cfg.sip.udp_readers,
            sources: sources.clone(),
            health: health.clone(),
        },
        timers: cfg.sip.timers(),
        shards: cores,
        app_queue: 16384,
        load: load.clone(),
    })
    .await?;
    // Subscriptions kept in the store are restored here and get their NOTIFY as soon as the
    // task runs.
    let (presence, presence_task) = Presence::start(PresenceParts {
        cfg: live.clone(),
        endpoint: endpoint.clone(),
        store: Some(store.clone()),
    });
    health.watch("presence", presence_task);
    let (draining_tx, draining_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(CallStats::default());
    let pivot_stats = Arc::new(PivotStats::default());
    let routes = Arc::new(Routes::new());
    let overload = Arc::new(OverloadStats::default());
    crate::api::load_callflows(&cfg, &store, &routes).await;
    let pivot = Arc::new(pivot_services(&cfg, store.clone(), pivot_stats.clone())?);
    let tts = Arc::new(TtsSpeaker(std::sync::RwLock::new(tts_engine(&cfg))));
    let ctx = Arc::new(CallContext {
        endpoint: endpoint.clone(),
        runtime: Arc::new(Runtime {
            prompts: prompts.clone(),
            pivot: Some(pivot.clone()),
            tts: Some(tts.clone()),
            presence: Some(presence.clone()),
        }),
        rtp_timeout: secs(cfg.media.rtp_timeout_s),
        max_duration: secs(cfg.sip.max_call_duration_s),
        force_end: force_rx,
        active: active.clone(),
        stats: stats.clone(),
        cdrs: Some(store.clone()),
        cfg: live.clone(),
        registrar: registrar.clone(),
        pool: pool.clone(),
        pacer: pacer.clone(),
        presence: Some(presence.clone()),
    });
    let (background, stop) = watch::channel(());
    let api = crate::api::start(
        cfg.api.listen,
        crate::api::ApiState::new(crate::api::ApiParts {
            cfg: live.clone(),
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
            load: load.clone(),
            registrar: registrar.clone(),
            presence: presence.clone(),
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
        tls: endpoint.transport().tls_addrs(),
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
        registrar: registrar.clone(),
        presence: presence.clone(),
        reloadable: Arc::new(reload::Reloadable {
            live: live.clone(),
            sources: sources.clone(),
            tts,
            pivot,
            directory,
            store: store.clone(),
            routes: routes.clone(),
            endpoint: endpoint.clone(),
        }),
        _background: background,
    };
    let admission = Admission::new(AdmissionParts {
        routes,
        cfg: live,
        ctx,
        pool,
        pacer,
        draining: draining_rx,
        sources: sources.clone(),
        overload,
        registrar: registrar.clone(),
        presence,
    });
    health.watch("sip admission", admission.run(app_rx));
    // The load signals sampled and the overload state decided (`sip::overload`); the pacer's
    // lateness is handed over here, as `sip` does not know the pacer.
    let load_pacer = handle.pacer.clone();
    health.supervise("overload monitor", move || {
        let (load, pacer) = (load.clone(), load_pacer.clone());
        async move {
            let mut monitor = LoadMonitor::new(load);
            let mut tick = tokio::time::interval(crate::sip::overload::INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                monitor.tick(pacer.take_standing_lateness());
            }
        }
    });
    // Expired registrations leave memory and the store.
    health.supervise("registration sweeper", move || {
        let registrar = registrar.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                registrar.sweep();
            }
        }
    });
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

/// The per-source limits of `cfg`: carriers' addresses (`inbound_cidrs`) are trusted sources
/// of the front door too.
fn source_limits(cfg: &Config) -> SourceLimits {
    let mut limits = cfg.sip.sources.clone();
    limits.trusted.extend(
        cfg.accounts
            .iter()
            .flat_map(|a| &a.resources)
            .flat_map(|r| r.inbound_cidrs.iter().copied()),
    );
    limits
}

/// The TTS hook of `[tts]`.
fn tts_engine(cfg: &Config) -> TtsEngine {
    TtsEngine::new(
        cfg.tts.command.clone(),
        cfg.tts.voices.clone(),
        TtsLimits {
            timeout: Duration::from_millis(cfg.tts.timeout_ms),
            ..TtsLimits::default()
        },
    )
}

/// Signing secret per account id.
fn pivot_secrets(cfg: &Config) -> std::collections::HashMap<String, String> {
    cfg.accounts
        .iter()
        .filter_map(|a| Some((a.id.clone(), a.pivot_secret.clone()?)))
        .collect()
}

/// The TTS hook as the callflow runtime uses it. TwiML `<Say>` allows 4000 characters (spec
/// a.1), the `tts` module 1000 (checked when its data is read). A reload puts in a new engine
/// (and cache); a `<Say>` under way finishes with the one it started with.
struct TtsSpeaker(std::sync::RwLock<TtsEngine>);

impl TtsSpeaker {
    fn engine(&self) -> TtsEngine {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, engine: TtsEngine) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = engine;
    }
}

#[async_trait::async_trait]
impl Speaker for TtsSpeaker {
    async fn speak(
        &self,
        text: &str,
        voice: &str,
        language: Option<&str>,
    ) -> Result<Arc<crate::media::prompt::Prompt>, crate::media::tts::TtsError> {
        self.engine()
            .speak_max(text, voice, language, crate::pivot::twiml::MAX_SAY_CHARS)
            .await
    }

    fn has_voice(&self, voice: &str) -> bool {
        self.engine().has_voice(voice)
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
        .map_err(StartError::Pivot)?;
    Ok(PivotServices {
        url_prompts: UrlPrompts::new(http.clone(), FetchOptions::default()),
        http,
        max_req_timeout: Duration::from_millis(cfg.pivot.max_req_timeout_ms),
        max_requests_per_call: cfg.pivot.max_requests_per_call,
        secrets: std::sync::RwLock::new(pivot_secrets(cfg)),
        debug: DebugSink::new(store),
        stats,
    })
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}
