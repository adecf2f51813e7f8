//! Admission: whether and how a new request outside any dialog is answered. An INVITE
//! becomes a [`CallSetup`] or a [`Refusal`]; a REGISTER goes to the registrar; a SUBSCRIBE is
//! checked (`presence::subscription`), authenticated as an INVITE is and handed to the
//! presence task without waiting for it; every other method gets its answer here too
//! (OPTIONS 200, 481, 405). "Which code for this INVITE?" is answered by [`Refusal`] alone.
//!
//! Admission runs as one task, so its state (the rate limiter) needs no lock. It checks, in
//! order: the Request-URI scheme (416), shutdown (503), Require (420), the body's type (415),
//! Accept (406), the source's own limits, `max_calls` and `max_calls_per_second` (503), the
//! route (404), the offer (488), RTP ports (503) and the dialog (400).
//!
//! Decided before admission (not here): what the parser refuses (400, and 416/501/505 for
//! what rsip cannot read: `sip::message::Unsupported`, whose 416 [`Refusal::UnsupportedScheme`]
//! reuses), 400/513 for a TCP stream that cannot be framed (`sip/transport/tcp.rs`), a new
//! INVITE refused for the measured load (503, `sip::overload`, answered in the shard), a full
//! application queue (503), CANCEL and in-dialog requests without a dialog (481) in
//! `sip/endpoint/`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::caller;
use super::info::call_info;
use super::{invite_event, Call, CallContext, CallSetup, LegSetup};
use crate::config::live::LiveConfig;
use crate::config::MediaEncryption;
use crate::logsafe::wire;
use crate::media::player::Pacer;
use crate::media::rtp::{PortPool, RtpSession};
use crate::media::sdp::{self, LocalSession, SdpError};
use crate::media::srtp::policy::{self, MediaSecurity, SrtpRefusal};
use crate::presence::subscription::{self, SubscribeRefusal};
use crate::presence::{NewSubscription, Presence, Watcher};
use crate::registrar::Registrar;
use crate::routing::Routes;
use crate::sip::dialog::{host_port, Dialog, DialogError};
use crate::sip::endpoint::{NewRequest, ServerTx};
use crate::sip::message::{self, NotSdp, Unsupported};
use crate::sip::outgoing::{random_token, response_bytes};
use crate::sip::source::{SourceGuard, SourceRefusal, SourceStats, TokenBucket};
use crate::sip::transport::Peer;
use crate::sip::{ALLOW, CAPABILITY_HEADERS};
use crate::store::{trim_value, CallEvent, CallEvents};

#[cfg(test)]
mod tests;

/// Why a new request outside any dialog is refused. Each refusal names its response (code,
/// reason phrase, headers) and what it counts: an overload reason, or a failure of the
/// source (what a scanner collects, which the source guard blocks on).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 416: a Request-URI scheme other than sip/sips (RFC 3261 §8.2.2.1), in a request rsip
    /// could read; its response is the parser's [`Unsupported::Scheme`], written once.
    #[error("unsupported Request-URI scheme")]
    UnsupportedScheme,
    /// 503 Shutting Down: the server drains; live calls go on.
    #[error("shutting down")]
    ShuttingDown,
    /// 420: pivotd supports no extension (RFC 3261 §8.2.2.3); the Require tags.
    #[error("unsupported extension: {0}")]
    Extension(String),
    /// 415: a body that is not SDP.
    #[error("the body is not SDP")]
    NotSdp,
    /// 406: our 200 carries SDP and the Accept header rules it out (RFC 3261 §21.4.7).
    #[error("Accept rules out SDP")]
    SdpNotAccepted,
    /// 503 for overload, with Retry-After, counted by reason.
    #[error("overload: {}", .0.label())]
    Overload(Overload),
    /// 404: no callflow for the number (a source failure).
    #[error("no callflow for the number")]
    NoCallflow,
    /// 488: an offer we cannot answer (RFC 3261 §13.3.1.3).
    #[error("incompatible offer")]
    IncompatibleOffer,
    /// 488: the call's audio cannot be what its `encryption` mode asks (SRTP required).
    #[error("{0}")]
    Srtp(SrtpRefusal),
    /// 400: no dialog can be formed from the INVITE.
    #[error("no dialog: {0}")]
    BadDialog(#[source] DialogError),
    /// 481: a request that only exists inside a dialog, arriving without one (a source
    /// failure).
    #[error("no such dialog")]
    NoDialog,
    /// 405: a method pivotd does not serve outside a dialog (a source failure).
    #[error("method not allowed")]
    NotAllowed,
    /// 407: credentials needed; one Proxy-Authenticate value per digest algorithm.
    #[error("authentication required")]
    AuthRequired(Vec<String>),
    /// 403: the credentials were refused (a source failure).
    #[error("credentials refused")]
    AuthFailed,
    /// 403: no credentials, and unauthenticated callers are not served (a source failure).
    #[error("unauthenticated callers are not served")]
    Unauthenticated,
    /// A SUBSCRIBE refused for what it asks (400, 489, 406, 415, 423, 404, 403): its
    /// response is presence's, decided once in `presence::subscription`.
    #[error("subscription refused: {0}")]
    Subscription(SubscribeRefusal),
}

impl Refusal {
    /// The response code.
    pub fn code(&self) -> u16 {
        match self {
            Refusal::UnsupportedScheme => Unsupported::Scheme.code(),
            Refusal::ShuttingDown | Refusal::Overload(_) => 503,
            Refusal::Extension(_) => 420,
            Refusal::NotSdp => 415,
            Refusal::SdpNotAccepted => 406,
            Refusal::NoCallflow => 404,
            Refusal::IncompatibleOffer | Refusal::Srtp(_) => 488,
            Refusal::BadDialog(_) => 400,
            Refusal::NoDialog => 481,
            Refusal::NotAllowed => 405,
            Refusal::AuthRequired(_) => 407,
            Refusal::AuthFailed | Refusal::Unauthenticated => 403,
            Refusal::Subscription(r) => r.code(),
        }
    }

    /// The reason phrase, when not the code's usual one.
    pub fn reason(&self) -> Option<Cow<'static, str>> {
        match self {
            Refusal::UnsupportedScheme => Some(Unsupported::Scheme.reason().into()),
            Refusal::ShuttingDown => Some("Shutting Down".into()),
            Refusal::Overload(why) => Some(why.response().0.into()),
            Refusal::BadDialog(e) => Some(e.to_string().into()),
            Refusal::Subscription(r) => r.reason(),
            _ => None,
        }
    }

    /// The headers the response carries beside the usual ones.
    pub fn headers(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        match self {
            Refusal::UnsupportedScheme => Unsupported::Scheme
                .headers()
                .iter()
                .map(|&(n, v)| (n, v.into()))
                .collect(),
            Refusal::ShuttingDown => vec![("Retry-After", "30".into())],
            Refusal::Overload(why) => vec![("Retry-After", why.response().1.into())],
            Refusal::Extension(tags) => vec![("Unsupported", tags.as_str().into())],
            Refusal::NotSdp | Refusal::SdpNotAccepted => {
                vec![("Accept", "application/sdp".into())]
            }
            Refusal::IncompatibleOffer => {
                vec![("Warning", "305 pivotd \"Incompatible media format\"".into())]
            }
            Refusal::Srtp(_) => vec![("Warning", "399 pivotd \"SRTP required\"".into())],
            Refusal::NotAllowed => vec![("Allow", ALLOW.into())],
            Refusal::AuthRequired(challenges) => challenges
                .iter()
                .map(|c| ("Proxy-Authenticate", c.as_str().into()))
                .collect(),
            Refusal::Subscription(r) => r.headers(),
            _ => Vec::new(),
        }
    }

    /// Whether the source guard counts it against the source: what a scanner probing for
    /// numbers or extensions collects.
    pub fn is_source_failure(&self) -> bool {
        match self {
            Refusal::Subscription(r) => r.is_source_failure(),
            _ => matches!(
                self,
                Refusal::NoCallflow
                    | Refusal::NoDialog
                    | Refusal::NotAllowed
                    | Refusal::AuthFailed
                    | Refusal::Unauthenticated
            ),
        }
    }
}

/// What a request outside any dialog that is neither an INVITE nor refused gets.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// OPTIONS: 200 with what pivotd supports.
    Capabilities,
    /// A stray ACK: nothing (it has no transaction to answer).
    Nothing,
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

    /// The reason phrase and the Retry-After seconds.
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

    /// The overload a source's refused call counts as.
    fn of_source(why: SourceRefusal) -> Overload {
        match why {
            SourceRefusal::CallRate => Overload::SourceCallRate,
            SourceRefusal::TableFull => Overload::SourceTableFull,
            _ => Overload::SourceCalls,
        }
    }
}

/// 503s sent for overload, by reason. Those for a source's own limits are the source guard's
/// count of the calls it refused ([`SourceStats::calls_refused`]): one counter per event.
#[derive(Debug, Default)]
pub struct OverloadStats {
    max_calls: AtomicU64,
    call_rate: AtomicU64,
    media_ports: AtomicU64,
}

/// Where the 503s of one overload reason are counted.
enum Counter<'a> {
    Here(&'a AtomicU64),
    BySource(SourceRefusal),
}

impl OverloadStats {
    pub fn get(&self, why: Overload, sources: &SourceStats) -> u64 {
        match self.counter(why) {
            Counter::Here(n) => n.load(Ordering::Relaxed),
            Counter::BySource(r) => sources.calls_refused(r),
        }
    }

    fn count(&self, why: Overload) {
        if let Counter::Here(n) = self.counter(why) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter(&self, why: Overload) -> Counter<'_> {
        match why {
            Overload::MaxCalls => Counter::Here(&self.max_calls),
            Overload::CallRate => Counter::Here(&self.call_rate),
            Overload::MediaPorts => Counter::Here(&self.media_ports),
            Overload::SourceCalls => Counter::BySource(SourceRefusal::Calls),
            Overload::SourceCallRate => Counter::BySource(SourceRefusal::CallRate),
            Overload::SourceTableFull => Counter::BySource(SourceRefusal::TableFull),
        }
    }
}

/// New calls per second: the crate's token bucket, one second of burst; 0 = no limit.
struct RateLimiter {
    rate: f64,
    bucket: TokenBucket,
}

impl RateLimiter {
    fn new(per_second: u32) -> RateLimiter {
        let rate = f64::from(per_second);
        RateLimiter {
            rate,
            bucket: TokenBucket::full(rate, Instant::now()),
        }
    }

    /// Follows `[sip] max_calls_per_second` after a reload (a full bucket at the new rate).
    fn set_rate(&mut self, per_second: u32) {
        if self.rate != f64::from(per_second) {
            *self = RateLimiter::new(per_second);
        }
    }

    fn allow(&mut self) -> bool {
        self.rate <= 0.0 || self.bucket.take(self.rate, self.rate, Instant::now())
    }
}

/// What admission needs from the server.
pub struct AdmissionParts {
    /// The config in force (a reload swaps it).
    pub cfg: Arc<LiveConfig>,
    /// The routing table, read for every INVITE.
    pub routes: Arc<Routes>,
    pub ctx: Arc<CallContext>,
    pub pool: Arc<PortPool>,
    pub pacer: Pacer,
    /// Set while the server shuts down: new INVITEs get 503.
    pub draining: watch::Receiver<bool>,
    pub sources: Arc<SourceGuard>,
    pub overload: Arc<OverloadStats>,
    /// REGISTER's answers and the credentials of INVITEs.
    pub registrar: Arc<Registrar>,
    /// Where accepted SUBSCRIBEs go.
    pub presence: Arc<Presence>,
}

/// Decides on every new request; runs as one task so its state needs no lock.
pub struct Admission {
    cfg: Arc<LiveConfig>,
    routes: Arc<Routes>,
    ctx: Arc<CallContext>,
    pool: Arc<PortPool>,
    pacer: Pacer,
    limiter: RateLimiter,
    draining: watch::Receiver<bool>,
    sources: Arc<SourceGuard>,
    overload: Arc<OverloadStats>,
    registrar: Arc<Registrar>,
    presence: Arc<Presence>,
}

impl Admission {
    pub fn new(p: AdmissionParts) -> Admission {
        Admission {
            limiter: RateLimiter::new(p.cfg.get().sip.max_calls_per_second),
            cfg: p.cfg,
            routes: p.routes,
            ctx: p.ctx,
            pool: p.pool,
            pacer: p.pacer,
            draining: p.draining,
            sources: p.sources,
            overload: p.overload,
            registrar: p.registrar,
            presence: p.presence,
        }
    }

    /// Answers the endpoint's new requests until it stops.
    pub async fn run(mut self, mut rx: mpsc::Receiver<NewRequest>) {
        while let Some(request) = rx.recv().await {
            // A panic costs this request (its transaction times out), never the admission
            // task, whose death would refuse every later call.
            let _ = crate::health::catch(|| self.on_request(request));
        }
    }

    fn on_request(&mut self, request: NewRequest) {
        // Who sent it (behind a trusted proxy, the hop before it): the shard decided.
        let NewRequest {
            req,
            tx,
            call_id,
            caller,
        } = request;
        let secure = tx.peer().proto.is_secure();
        let answer = match req.method {
            rsip::Method::Invite => match self.admit_invite(&req, tx.peer(), caller, &call_id) {
                Ok(setup) => {
                    let invite = NewRequest {
                        req,
                        tx,
                        call_id,
                        caller,
                    };
                    return self.start_call(invite, setup);
                }
                Err(refusal) => Err(refusal),
            },
            rsip::Method::Register if message::scheme_supported(&req.uri, secure) => {
                match check_require(&req) {
                    Ok(()) => return self.register(&req, &tx, caller),
                    Err(refusal) => Err(refusal),
                }
            }
            rsip::Method::Subscribe if message::scheme_supported(&req.uri, secure) => {
                match check_require(&req).and_then(|()| self.admit_subscribe(&req, caller)) {
                    Ok((asked, watched, watcher)) => {
                        return self.presence.submit(NewSubscription {
                            req,
                            tx,
                            call_id,
                            asked,
                            watched,
                            watcher,
                        })
                    }
                    Err(refusal) => Err(refusal),
                }
            }
            _ => answer_other(&req, secure, *self.draining.borrow()),
        };
        match answer {
            Ok(Answer::Capabilities) => reply(&req, &tx, 200, None, &CAPABILITY_HEADERS),
            Ok(Answer::Nothing) => {}
            Err(refusal) => self.refuse(&req, &tx, caller, refusal),
        }
    }

    /// Whether an INVITE becomes a call, and with what: its route, its media, its dialog.
    /// A refused INVITE gives back what it took (the source's call slot, RTP ports).
    /// `caller`: who sent it ([`SourceGuard::caller`]); `peer`: where it came from.
    fn admit_invite(
        &mut self,
        req: &rsip::Request,
        peer: &Peer,
        caller_addr: SocketAddr,
        call_id: &str,
    ) -> Result<CallSetup, Refusal> {
        if !message::scheme_supported(&req.uri, peer.proto.is_secure()) {
            return Err(Refusal::UnsupportedScheme);
        }
        if *self.draining.borrow() {
            return Err(Refusal::ShuttingDown);
        }
        check_require(req)?;
        let offer = check_content(req)?;
        // One snapshot for the whole decision: a reload meanwhile applies to the next INVITE.
        let cfg = self.cfg.get();
        // Before any limit: a challenge must not use up the caller's call slots.
        let caller = caller::identify(&cfg, self.registrar.authenticator(), req, caller_addr)?;
        // The source's own limits first: a flooding source must not use up the global ones.
        let slot = self
            .sources
            .admit_call(caller_addr.ip())
            .map_err(|why| Refusal::Overload(Overload::of_source(why)))?;
        let max_calls = cfg.sip.max_calls;
        if max_calls > 0 && self.ctx.active.load(Ordering::Relaxed) >= max_calls as usize {
            return Err(Refusal::Overload(Overload::MaxCalls));
        }
        self.limiter.set_rate(cfg.sip.max_calls_per_second);
        if !self.limiter.allow() {
            return Err(Refusal::Overload(Overload::CallRate));
        }
        let user = message::percent_decode(req.uri.user().unwrap_or(""));
        let host = req.uri.host_with_port.host.to_string();
        let routed = match caller.account(&cfg) {
            Some(account) => self.routes.route_in(account, &user).map(|f| (account, f)),
            None => self.routes.route(&cfg, &user, &host),
        };
        let Some((account, flow)) = routed else {
            // DEBUG: a scanner draws thousands of these; the source guard counts them.
            tracing::debug!(number = %wire(&user), realm = %wire(&host), "no callflow for the number");
            let known = caller
                .account(&cfg)
                .or_else(|| cfg.account_for_realm(&host));
            if let Some(acc) = known {
                self.log_refusal(&acc.id, req, call_id, &user, &host, &Refusal::NoCallflow);
            }
            return Err(Refusal::NoCallflow);
        };
        // From here the INVITE is the account's: a refusal goes in its event log too.
        let refused = |r: Refusal| {
            self.log_refusal(&account.id, req, call_id, &user, &host, &r);
            r
        };
        let (offer, negotiated) = if let Some(body) = offer {
            let offer = std::str::from_utf8(body)
                .map_err(|_| SdpError::Malformed {
                    line: 0,
                    reason: "not UTF-8".into(),
                })
                .and_then(sdp::parse);
            match offer.and_then(|o| sdp::negotiate(&o).map(|n| (o, n))) {
                Ok((o, n)) => (Some(o), Some(n)),
                Err(e) => {
                    tracing::debug!(reason = %wire(&e.to_string()), "offer refused");
                    return Err(refused(Refusal::IncompatibleOffer));
                }
            }
        } else {
            (None, None)
        };
        // SRTP or plain RTP for this leg (media/srtp/policy.rs): the account's mode, whether
        // the INVITE came over TLS, the offer's stream.
        let mode = account.encryption.unwrap_or(cfg.media.encryption);
        let offered_stream = offer.as_ref().and_then(|o| o.audio());
        let over_tls = peer.proto.is_secure();
        // A late offer: ours goes in the 200 with the keys the policy offers (the fork
        // offer's), keyed by the answer in the ACK (`leg/offer_answer.rs`).
        let (security, late_offer) = match offered_stream {
            Some(stream) => (policy::answer(mode, over_tls, stream), None),
            None => match policy::late_offer(mode, over_tls) {
                Ok(lines) => (Ok(MediaSecurity::Plain), Some(lines)),
                Err(why) => (Err(why), None),
            },
        };
        let security = security.map_err(|why| refused(Refusal::Srtp(why)))?;
        let ports = self.pool.allocate().map_err(|e| {
            tracing::warn!("no RTP ports: {e}");
            refused(Refusal::Overload(Overload::MediaPorts))
        })?;
        let remote = negotiated.as_ref().and_then(|n| n.remote);
        let pt = negotiated.as_ref().map(|n| n.codec_pt).unwrap_or(0);
        let rtp = match RtpSession::start(ports, &self.pacer, remote, pt) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!("cannot start RTP: {e}");
                return Err(refused(Refusal::Overload(Overload::MediaPorts)));
            }
        };
        let local_host = host_port(cfg.sip.advertise, peer.local);
        let local_tag = random_token(10);
        let dialog = Dialog::from_request(req, call_id, &local_tag, peer.clone(), local_host)
            .map_err(|e| refused(Refusal::BadDialog(e)))?;
        let media_ip: IpAddr = cfg.sip.advertise.unwrap_or(cfg.media.ip);
        let mut local_sdp = LocalSession {
            ip: media_ip,
            port: rtp.local_port(),
            session_id: rand::random::<u32>() as u64,
            version: 1,
            crypto: Vec::new(),
            savp: false,
        };
        let mut srtp_theirs = None;
        if let MediaSecurity::Srtp { theirs, ours } = security {
            if let Err(e) = rtp.set_srtp(&ours.key, &theirs.key) {
                tracing::warn!("cannot key SRTP: {e}");
                return Err(refused(Refusal::Srtp(SrtpRefusal::NoUsableKey)));
            }
            local_sdp.crypto.push(ours);
            // Our answer keeps the offer's profile (best-effort SRTP on RTP/AVP stays so).
            local_sdp.savp = offered_stream.is_some_and(|m| m.is_savp());
            srtp_theirs = Some(theirs);
        }
        if let Some((lines, savp)) = late_offer {
            if mode == MediaEncryption::Required {
                // Nothing leaves this session in clear, before the ACK's answer keys it or
                // after an answer that cannot (the call is then ended).
                rtp.forbid_clear();
            }
            local_sdp.crypto = lines;
            local_sdp.savp = savp;
        }
        let mut info = call_info(req, call_id, &account.id, &user, &host);
        caller.fill(&mut info);
        Ok(CallSetup {
            info,
            flow,
            leg: LegSetup {
                dialog,
                contact_user: user,
                rtp,
                negotiated,
                offer,
                local_sdp,
                srtp_theirs,
                encryption: mode,
                // A trusted source (`[sip] trusted_sources`) skips the proof RTP waits for.
                source_trusted: slot.trusted(),
                early_media_unproven: Duration::from_secs(cfg.media.early_media_unproven_s),
            },
            slot,
        })
    }

    /// An INVITE of `account_id` refused: its event log, the INVITE and the refusal, so
    /// that the account sees why its call never started (a call's own log starts in
    /// `Call::start`).
    fn log_refusal(
        &self,
        account_id: &str,
        req: &rsip::Request,
        call_id: &str,
        user: &str,
        host: &str,
        refusal: &Refusal,
    ) {
        let mut log = CallEvents::new(self.ctx.cdrs.clone(), account_id, call_id, Instant::now());
        log.record(invite_event(&call_info(
            req, call_id, account_id, user, host,
        )));
        log.record(CallEvent::End {
            by: "server".into(),
            how: refusal.code().to_string(),
            why: Some(trim_value(&refusal.to_string())),
        });
    }

    /// A SUBSCRIBE: what it asks (checked before the challenge, which then is not wasted on
    /// a request that cannot be served), the device's credentials (407, 403, as an INVITE's),
    /// and what it watches, in the device's own account (403 otherwise). Nothing here waits
    /// on the presence task.
    fn admit_subscribe(
        &self,
        req: &rsip::Request,
        caller: SocketAddr,
    ) -> Result<
        (
            subscription::SubscribeRequest,
            crate::presence::PresenceId,
            Watcher,
        ),
        Refusal,
    > {
        let cfg = self.cfg.get();
        let asked = subscription::read(req, &cfg.presence).map_err(Refusal::Subscription)?;
        let device = caller::device(&cfg, self.registrar.authenticator(), req, caller)?;
        let watched =
            subscription::watched(req, &cfg, &device.account_id).map_err(Refusal::Subscription)?;
        Ok((
            asked,
            watched,
            Watcher {
                account_id: device.account_id.clone(),
                device_id: device.device_id.clone(),
            },
        ))
    }

    /// REGISTER: the registrar answers; a refusal of credentials counts against the source.
    fn register(&self, req: &rsip::Request, tx: &ServerTx, caller: SocketAddr) {
        let a = self.registrar.register(req, tx.peer(), caller);
        if a.code == 403 {
            self.sources.failure(caller.ip());
        }
        let extra: Vec<(&str, &str)> = a.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        reply(req, tx, a.code, a.reason.as_deref(), &extra);
    }

    /// Counts the call and starts its task.
    fn start_call(&self, invite: NewRequest, setup: CallSetup) {
        self.ctx.active.fetch_add(1, Ordering::Relaxed);
        let ctx = self.ctx.clone();
        tokio::spawn(Call::run(ctx, invite, setup));
    }

    /// Answers a refused request, counting what the refusal implies.
    fn refuse(&self, req: &rsip::Request, tx: &ServerTx, caller: SocketAddr, refusal: Refusal) {
        if let Refusal::Overload(why) = refusal {
            self.overload.count(why);
        }
        if refusal.is_source_failure() {
            self.sources.failure(caller.ip());
        }
        let reason = refusal.reason();
        let headers = refusal.headers();
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        reply(req, tx, refusal.code(), reason.as_deref(), &extra);
    }
}

/// The answer to a request outside any dialog other than an INVITE; `draining`: pivotd is
/// shutting down (an OPTIONS probe then gets the INVITE's 503, so a proxy in front, such as
/// Kamailio's dispatcher, stops sending calls here). `secure`: it came over TLS.
fn answer_other(req: &rsip::Request, secure: bool, draining: bool) -> Result<Answer, Refusal> {
    if req.method == rsip::Method::Ack {
        return Ok(Answer::Nothing);
    }
    if !message::scheme_supported(&req.uri, secure) {
        return Err(Refusal::UnsupportedScheme);
    }
    match req.method {
        rsip::Method::Options if draining => Err(Refusal::ShuttingDown),
        rsip::Method::Options => check_require(req).map(|()| Answer::Capabilities),
        // Requests that only exist inside a dialog, arriving without one.
        rsip::Method::Bye | rsip::Method::Info | rsip::Method::PRack | rsip::Method::Update => {
            Err(Refusal::NoDialog)
        }
        // MESSAGE, PUBLISH, REFER, NOTIFY (the endpoint answers CANCEL; REGISTER and
        // SUBSCRIBE with a served scheme do not come here).
        _ => Err(Refusal::NotAllowed),
    }
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

/// RFC 3261 §8.2.2.3: pivotd supports no extension, so a request with a Require header is
/// answered 420 with the tags in Unsupported.
fn check_require(req: &rsip::Request) -> Result<(), Refusal> {
    let tags: Vec<&str> = message::header_values(req, "Require").collect();
    if tags.is_empty() {
        return Ok(());
    }
    Err(Refusal::Extension(tags.join(", ")))
}

/// An INVITE's body and Accept: a body must be SDP (415), and the caller must accept SDP,
/// which our 200 carries as the answer or a late offer (406; RFC 4475 §3.3.15). Returns the
/// offer, if the INVITE carries one.
fn check_content(req: &rsip::Request) -> Result<Option<&[u8]>, Refusal> {
    let offer = message::sdp_body(req).map_err(|NotSdp| Refusal::NotSdp)?;
    if let Some(accept) = message::header_value(req, "Accept") {
        if !accepts_sdp(&accept) {
            return Err(Refusal::SdpNotAccepted);
        }
    }
    Ok(offer)
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
