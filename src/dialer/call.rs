//! The call: pivotd's SIP endpoint on an ephemeral port, one INVITE from `sip::uac` (the
//! bridge's UAC), its challenge answered once, its 2xx acknowledged; then the dialog served
//! (BYE, re-INVITE, OPTIONS, INFO answered) while digits go and the audio is heard and
//! recorded, until a BYE from either side, `--hangup-after`, or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::digits::PromptEnd;
use super::media::CallerMedia;
use super::record::Recording;
use super::server_log::{spawn_poller, EventsApi, Polled};
use super::timeline::{ServerEnd, Style, Summary, Timeline};
use super::{CallArgs, DialerError, EXIT_CALL_FAILED, EXIT_OK};
use crate::config::SourceLimits;
use crate::health::TaskHealth;
use crate::media::rtp::{HeardPacket, SendDigitsError};
use crate::media::sdp;
use crate::media::srtp::Suite;
use crate::sip::endpoint::{
    DialogEvent, DialogId, Endpoint, EndpointConfig, NewRequest, OutgoingRequest,
};
use crate::sip::message;
use crate::sip::outgoing::{reason_phrase, response_bytes};
use crate::sip::overload::LoadGate;
use crate::sip::source::SourceGuard;
use crate::sip::timer::Timers;
use crate::sip::transport::{
    split_host_port, Peer, Proto, TlsConfig, TlsConnectError, TransportConfig,
};
use crate::sip::uac::{InviteSpec, OutboundInvite, RetryError};
use crate::sip::{ALLOW, CAPABILITY_HEADERS};

/// With no response at all for this long, nobody is there (UDP: four retransmissions).
const NO_RESPONSE: Duration = Duration::from_secs(8);
/// How long the answer to our BYE or CANCEL is waited for.
const CLOSE_WAIT: Duration = Duration::from_secs(4);
/// How long a line is held back for the server's events (read every 300 ms, written by its
/// store a moment after they happen) to take their place before it.
const HOLD_BACK: Duration = Duration::from_millis(1000);
/// Audio that arrives this soon after the end still counts: the server's last packets and its
/// BYE leave together and may be read in either order.
const LATE_AUDIO: Duration = Duration::from_millis(150);
/// Timers and the progress line.
const TICK: Duration = Duration::from_millis(50);

/// How the call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ending {
    ByeFromServer,
    /// We hung up: `why` (`--hangup-after 20s`, `interrupted`).
    ByeFromCaller {
        why: String,
        normal: bool,
    },
    /// A final non-2xx to the INVITE.
    Refused {
        code: u16,
    },
    /// We gave up before an answer (CANCEL after a provisional response).
    NoAnswer {
        why: String,
    },
    /// Something we cannot go on with (a 2xx without a Contact).
    Failed {
        why: String,
    },
    /// Nothing ever came back.
    NoResponse,
}

/// Places the call and prints its timeline; the exit status.
pub(super) async fn place(
    args: &CallArgs,
    api: Option<EventsApi>,
    style: Style,
) -> Result<u8, DialerError> {
    let default_port = if args.tls { 5061 } else { 5060 };
    let server = resolve(&args.server, default_port).await?;
    let local_ip = local_ip_towards(server)?;
    let proto = match (args.tls, args.tcp) {
        (true, _) => Proto::Tls,
        (false, true) => Proto::Tcp,
        (false, false) => Proto::Udp,
    };
    let (endpoint, strays) = start_endpoint(local_ip, proto, args.ca.clone()).await?;
    tokio::spawn(answer_strays(strays));
    let (media, heard) = CallerMedia::start(local_ip, args.srtp)?;
    let number = args.number.clone().unwrap_or_default();
    let (user, domain) = match number.split_once('@') {
        Some((u, d)) => (u.to_string(), d.to_string()),
        None => (number.clone(), server.to_string()),
    };
    let from_user = args
        .from
        .clone()
        .or_else(|| args.user.clone())
        .unwrap_or_else(|| "pivotd".to_string());
    let peer = match proto {
        // Connected before the INVITE: a certificate that does not verify is said at once,
        // and our Via and Contact name the connection's own address (the server sends its
        // requests back on it).
        Proto::Tls => {
            let name = args
                .tls_name
                .clone()
                .unwrap_or_else(|| tls_name(number.split_once('@').map(|(_, d)| d), &args.server));
            endpoint
                .transport()
                .connect_tls(server, &name)
                .await
                .map_err(|e| match e {
                    TlsConnectError::Certificate { .. } => DialerError::Certificate(e),
                    e => DialerError::Tls(e),
                })?
        }
        Proto::Udp | Proto::Tcp => {
            let local = match proto {
                Proto::Udp => endpoint.transport().udp_addrs().first().copied(),
                _ => endpoint.transport().tcp_addrs().first().copied(),
            };
            Peer {
                proto,
                remote: server,
                local: local.unwrap_or(SocketAddr::new(local_ip, 0)),
                conn: None,
            }
        }
    };
    let transport = match proto {
        Proto::Udp => "",
        Proto::Tcp => ";transport=tcp",
        Proto::Tls => ";transport=tls",
    };
    let spec = InviteSpec {
        request_uri: format!("sip:{user}@{domain}{transport}"),
        to: format!("<sip:{user}@{domain}>"),
        from: format!("\"pivotd call\" <sip:{from_user}@{domain}>"),
        local_host: crate::sip::dialog::host_port(None, peer.local),
        peer,
        route: Vec::new(),
        max_forwards: 70,
        contact_user: from_user,
        sdp: Some(media.offer().to_string()),
    };
    let call = Call::new(args, endpoint, spec, media, style);
    call.run(api, heard).await
}

/// The name a TLS server's certificate is verified by: the host of the number's domain, else
/// of `--server` (an IPv6 address without its brackets).
fn tls_name(domain: Option<&str>, server: &str) -> String {
    let (host, _) = split_host_port(domain.unwrap_or(server));
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// `HOST:PORT` (a name or an address; `default_port` when left out).
async fn resolve(addr: &str, default_port: u16) -> Result<SocketAddr, DialerError> {
    let found: Vec<SocketAddr> = match tokio::net::lookup_host(addr).await {
        Ok(found) => found.collect(),
        Err(e) if !addr.contains(':') => tokio::net::lookup_host(format!("{addr}:{default_port}"))
            .await
            .map_err(|_| DialerError::Resolve {
                addr: addr.to_string(),
                source: e,
            })?
            .collect(),
        Err(source) => {
            return Err(DialerError::Resolve {
                addr: addr.to_string(),
                source,
            })
        }
    };
    let mut found = found;
    found.sort_by_key(|a| !a.is_ipv4());
    found
        .first()
        .copied()
        .ok_or_else(|| DialerError::NoAddress {
            addr: addr.to_string(),
        })
}

/// The local address the system would send to `server` from (a connected UDP socket sends
/// nothing): what our Via, Contact and SDP name.
fn local_ip_towards(server: SocketAddr) -> Result<IpAddr, DialerError> {
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind(any)?;
        s.connect(server)?;
        Ok(s.local_addr()?.ip())
    };
    probe().map_err(|source| DialerError::NoRoute { server, source })
}

/// The endpoint on an ephemeral port of `ip`: UDP, or a TCP listener for `--tcp` (our
/// Contact; the server's requests come back on our connection); for `--tls` no listener (we
/// have no certificate to present: the server's requests come back on our connection), the
/// system's roots and `ca_file` trusted.
async fn start_endpoint(
    ip: IpAddr,
    proto: Proto,
    ca_file: Option<PathBuf>,
) -> Result<(Arc<Endpoint>, mpsc::Receiver<NewRequest>), DialerError> {
    let any = SocketAddr::new(ip, 0);
    let (udp, tcp) = match proto {
        Proto::Udp => (vec![any], Vec::new()),
        Proto::Tcp => (Vec::new(), vec![any]),
        Proto::Tls => (Vec::new(), Vec::new()),
    };
    let cfg = EndpointConfig {
        transport: TransportConfig {
            udp,
            tcp,
            tls: TlsConfig {
                ca_file,
                ..TlsConfig::default()
            },
            max_message_bytes: 65_535,
            tcp_idle_timeout: Duration::from_secs(300),
            udp_receive_buffer: 0,
            udp_readers: 1,
            sources: SourceGuard::new(SourceLimits::default()),
            health: TaskHealth::new(),
        },
        timers: Timers::default(),
        shards: 1,
        app_queue: 16,
        load: Arc::new(LoadGate::off()),
    };
    Ok(Endpoint::start(cfg).await?)
}

/// Requests outside our dialog (a late one after it ended, a stray): 481.
async fn answer_strays(mut strays: mpsc::Receiver<NewRequest>) {
    while let Some(r) = strays.recv().await {
        if r.req.method != rsip::Method::Ack {
            r.tx.respond(481, response_bytes(&r.req, 481, None, None, &[], None));
        }
    }
}

/// A pending value that never comes while `None`: an optional branch of `select!`.
async fn next_of<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_polled(rx: &mut Option<mpsc::UnboundedReceiver<Polled>>) -> Option<Polled> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn joined<T>(task: &mut Option<JoinHandle<T>>) -> Option<T> {
    match task {
        Some(t) => {
            let r = t.await.ok();
            *task = None;
            r
        }
        None => std::future::pending().await,
    }
}

struct Call<'a> {
    args: &'a CallArgs,
    endpoint: Arc<Endpoint>,
    invite: OutboundInvite,
    media: CallerMedia,
    timeline: Timeline,
    events_tx: mpsc::UnboundedSender<DialogEvent>,
    events: mpsc::UnboundedReceiver<DialogEvent>,
    started: Instant,
    /// The INVITE's client transaction now (a new one after the challenge).
    invite_tx: u64,
    /// The INVITE line as it grows: `INVITE → 100 → 180 → 200`; printed at its final answer.
    invite_line: Vec<String>,
    invite_final: bool,
    heard_anything: bool,
    provisional: bool,
    /// The 2xx and when it came.
    answered: Option<(Instant, Box<rsip::Response>)>,
    ack: Option<OutgoingRequest>,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    ending: Option<Ending>,
    ended_at: Option<Instant>,
    /// Our BYE's transaction, while its answer is awaited.
    bye_tx: Option<u64>,
    cancelled: bool,
    closing_until: Option<Instant>,
    digits: Option<String>,
    digits_task: Option<JoinHandle<Result<(), SendDigitsError>>>,
    prompt: PromptEnd,
    recording: Option<Recording>,
    server_end: Option<ServerEnd>,
    /// The SRTP suite the answer chose, and when the session was keyed with it.
    srtp: Option<Suite>,
    keyed_at: Option<Instant>,
}

impl<'a> Call<'a> {
    fn new(
        args: &'a CallArgs,
        endpoint: Arc<Endpoint>,
        spec: InviteSpec,
        media: CallerMedia,
        style: Style,
    ) -> Call<'a> {
        let (events_tx, events) = mpsc::unbounded_channel();
        Call {
            args,
            endpoint,
            invite: OutboundInvite::new(spec),
            media,
            timeline: Timeline::new(style),
            events_tx,
            events,
            started: Instant::now(),
            invite_tx: 0,
            invite_line: vec!["INVITE".to_string()],
            invite_final: false,
            heard_anything: false,
            provisional: false,
            answered: None,
            ack: None,
            local_cseq: 1,
            remote_cseq: None,
            ending: None,
            ended_at: None,
            bye_tx: None,
            cancelled: false,
            closing_until: None,
            digits: args.digits.clone(),
            digits_task: None,
            prompt: PromptEnd::default(),
            recording: None,
            server_end: None,
            srtp: None,
            keyed_at: None,
        }
    }

    fn dialog_id(&self) -> DialogId {
        DialogId {
            call_id: self.invite.call_id.clone(),
            local_tag: self.invite.local_tag.clone(),
        }
    }

    fn line(&mut self, kind: &str, text: String) {
        let at = self.started.elapsed();
        self.timeline.caller(at, kind, text);
    }

    fn send(&self, req: OutgoingRequest) -> u64 {
        self.endpoint
            .send_request(&self.invite.call_id, req, Some(self.events_tx.clone()))
    }

    async fn run(
        mut self,
        api: Option<EventsApi>,
        heard: mpsc::Receiver<HeardPacket>,
    ) -> Result<u8, DialerError> {
        let mut heard = Some(heard);
        let (ended_tx, ended_rx) = watch::channel(false);
        let mut polled = api.map(|api| {
            let (tx, rx) = mpsc::unbounded_channel();
            let _poller = spawn_poller(Arc::new(api), self.invite.call_id.clone(), tx, ended_rx);
            rx
        });
        self.endpoint
            .register_dialog(self.dialog_id(), self.events_tx.clone(), None);
        self.started = Instant::now();
        self.invite_tx = self.send(self.invite.request());
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut interrupted = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            tokio::select! {
                Some(ev) = self.events.recv() => self.on_event(ev)?,
                p = next_of(&mut heard) => match p {
                    Some(p) => self.on_heard(&p)?,
                    None => heard = None,
                },
                p = next_polled(&mut polled) => match p {
                    Some(p) => self.on_polled(p),
                    None => polled = None,
                },
                sent = joined(&mut self.digits_task) => {
                    if let Some(Err(e)) = sent {
                        self.line("digits", format!("digits not sent: {e}"));
                    }
                }
                r = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    if r.is_ok() {
                        self.hang_up("interrupted", false);
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        // The call is over: its last audio, no more media; the server's last events, then
        // the summary.
        if let (Some(rx), Some(end)) = (heard.as_mut(), self.ended_at) {
            let until = end + LATE_AUDIO;
            while let Ok(Some(p)) = tokio::time::timeout_at(until, rx.recv()).await {
                self.on_heard(&p)?;
            }
        }
        if let Some(t) = self.digits_task.take() {
            t.abort();
        }
        self.endpoint.unregister_dialog(self.dialog_id());
        let _ = ended_tx.send(true);
        if let Some(d) = self.digits.take() {
            if self.answered.is_some() {
                let why = if self.args.digits_after.is_some() {
                    "the call ended first"
                } else {
                    "no prompt was heard to end"
                };
                self.line("digits", format!("digits {d} not sent ({why})"));
            }
        }
        let end_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(mut rx) = polled {
            while let Some(p) = rx.recv().await {
                self.on_polled(p);
            }
        }
        if let Some(r) = self.recording.take() {
            r.finish()?;
        }
        let ending = self.ending.clone().unwrap_or(Ending::NoResponse);
        if ending == Ending::NoResponse {
            self.timeline.flush_all();
            return Err(DialerError::NoResponse {
                server: self.invite.spec().peer.remote,
            });
        }
        let summary = self.summary(ending, end_ms);
        self.timeline.summary(&summary);
        Ok(summary.exit_status)
    }

    /// Whether the end is decided and nothing more is awaited (our BYE's answer, the 487
    /// of our CANCEL), or waiting longer is pointless.
    fn finished(&self) -> bool {
        if self.ending.is_none() {
            return false;
        }
        let awaiting = self.bye_tx.is_some() || (self.cancelled && !self.invite_final);
        !awaiting || self.closing_until.is_some_and(|t| Instant::now() >= t)
    }

    fn end(&mut self, ending: Ending) {
        if self.ending.is_none() {
            self.ending = Some(ending);
            self.ended_at = Some(Instant::now());
            self.closing_until = Some(Instant::now() + CLOSE_WAIT);
        }
    }

    /// BYE once answered; before, CANCEL (after a provisional response, RFC 3261 §9.1).
    fn hang_up(&mut self, why: &str, normal: bool) {
        if self.ending.is_some() {
            return;
        }
        if let Some((_, resp)) = &self.answered {
            self.local_cseq += 1;
            let bye = self
                .invite
                .dialog_request(rsip::Method::Bye, self.local_cseq, resp, None);
            if let Some(bye) = bye {
                self.bye_tx = Some(self.send(bye));
            }
            self.line("bye", format!("BYE to server ({why})"));
            self.end(Ending::ByeFromCaller {
                why: why.to_string(),
                normal,
            });
        } else {
            if self.provisional {
                let cancel = self.invite.cancel();
                self.endpoint
                    .send_request(&self.invite.call_id, cancel, None);
                self.cancelled = true;
                self.line("cancel", format!("CANCEL to server ({why})"));
            }
            self.end(Ending::NoAnswer {
                why: why.to_string(),
            });
        }
    }

    fn on_event(&mut self, ev: DialogEvent) -> Result<(), DialerError> {
        match ev {
            DialogEvent::Response { id, resp } if id == self.invite_tx => {
                self.heard_anything = true;
                self.on_invite_response(*resp)?;
            }
            DialogEvent::Timeout { id } if id == self.invite_tx && !self.invite_final => {
                self.invite_final = true;
                if self.heard_anything {
                    self.close_invite_line("→ 408 (no final answer)".to_string());
                    self.end(Ending::Refused { code: 408 });
                } else {
                    self.end(Ending::NoResponse);
                }
            }
            DialogEvent::Response { id, resp } if Some(id) == self.bye_tx => {
                let code = resp.status_code.code();
                if code >= 200 {
                    self.bye_tx = None;
                    if code >= 300 {
                        self.line("bye", format!("BYE → {code} {}", reason_phrase(code)));
                    }
                }
            }
            DialogEvent::Timeout { id } if Some(id) == self.bye_tx => {
                self.bye_tx = None;
                self.line("bye", "BYE: no answer from the server".to_string());
            }
            DialogEvent::Request { req, tx } => self.on_request(*req, *tx),
            _ => {}
        }
        Ok(())
    }

    fn close_invite_line(&mut self, last: String) {
        self.invite_line.push(last);
        let text = self.invite_line.join(" ");
        self.timeline.caller(Duration::ZERO, "invite", text);
    }

    fn on_invite_response(&mut self, resp: rsip::Response) -> Result<(), DialerError> {
        let code = resp.status_code.code();
        match code {
            100..=199 => {
                self.provisional = true;
                let step = format!("→ {code}");
                // A repeated 180 says nothing new.
                if self.invite_line.last() != Some(&step) {
                    self.invite_line.push(step);
                }
            }
            200..=299 if self.answered.is_some() => {
                // A retransmitted 2xx: our ACK was lost.
                if let Some(ack) = &self.ack {
                    self.endpoint.send_as_is(ack);
                }
            }
            200..=299 => self.on_answer(resp)?,
            401 | 407 if !self.invite_final => self.on_challenge(&resp, code),
            _ if !self.invite_final => {
                self.invite_final = true;
                self.close_invite_line(format!("→ {code} {}", reason_phrase(code)));
                if !matches!(self.ending, Some(Ending::NoAnswer { .. })) {
                    self.end(Ending::Refused { code });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_challenge(&mut self, resp: &rsip::Response, code: u16) {
        let refused = |this: &mut Self, note: &str| {
            this.invite_final = true;
            this.close_invite_line(format!("→ {code} {}{note}", reason_phrase(code)));
            this.end(Ending::Refused { code });
        };
        let (Some(user), Some(password)) = (&self.args.user, &self.args.password) else {
            refused(self, " (give --user and --password)");
            return;
        };
        match self.invite.retry_with_credentials(resp, user, password) {
            Ok(req) => {
                self.invite_line.push(format!("→ {code}"));
                self.invite_line
                    .push(format!("→ INVITE with credentials of {user}"));
                self.provisional = false;
                self.invite_tx = self.send(req);
            }
            Err(RetryError::Refused) => refused(self, " (the credentials were refused)"),
            Err(RetryError::NoChallenge) => refused(self, " (no challenge we can answer)"),
        }
    }

    fn on_answer(&mut self, resp: rsip::Response) -> Result<(), DialerError> {
        self.invite_final = true;
        let code = resp.status_code.code();
        let Some(ack) = self.invite.ack_for_2xx(&resp) else {
            self.close_invite_line(format!("→ {code} (no usable Contact)"));
            self.end(Ending::Failed {
                why: "the 2xx has no usable Contact".to_string(),
            });
            return Ok(());
        };
        self.endpoint.send_as_is(&ack);
        self.ack = Some(ack);
        self.local_cseq = self.invite.cseq();
        let now = Instant::now();
        let negotiated = message::response_sdp_body(&resp)
            .ok()
            .flatten()
            .and_then(sdp::read);
        // With --srtp, an answer that cannot key the session is hung up: no audio in clear.
        let mut no_srtp = None;
        match negotiated {
            Some((sdp, n)) => {
                self.close_invite_line(format!("→ {code}"));
                match self.media.key_from_answer(&sdp) {
                    Ok(suite) => {
                        if let Some(suite) = suite {
                            self.srtp = Some(suite);
                            self.keyed_at = Some(Instant::now());
                            self.line("srtp", format!("SRTP {}", suite.name()));
                        }
                        self.media.apply(n);
                    }
                    Err(e) => no_srtp = Some(e.to_string()),
                }
            }
            None => {
                self.close_invite_line(format!("→ {code} (no usable SDP: nothing heard)"));
                if self.args.srtp {
                    no_srtp = Some("the answer has no usable SDP, so no SRTP key".to_string());
                }
            }
        }
        self.answered = Some((now, Box::new(resp)));
        if let Some(why) = no_srtp {
            self.hang_up(&why, false);
            return Ok(());
        }
        if let Some(path) = &self.args.record {
            self.recording = Some(Recording::create(path, now.into_std())?);
        }
        if matches!(self.ending, Some(Ending::NoAnswer { .. })) {
            // Our CANCEL crossed the answer: the call was answered, so hang it up.
            self.ending = None;
            self.hang_up("cancelled, answered meanwhile", false);
        }
        Ok(())
    }

    fn on_request(&mut self, req: rsip::Request, tx: crate::sip::endpoint::ServerTx) {
        let reply = |code: u16, extra: &[(&str, &str)], body: Option<(&str, &[u8])>| {
            tx.respond(code, response_bytes(&req, code, None, None, extra, body));
        };
        let method = req.method;
        if method == rsip::Method::Ack {
            return;
        }
        let cseq = message::cseq(&req).map_or(0, |c| c.0);
        if self.remote_cseq.is_some_and(|last| cseq <= last) {
            // RFC 3261 §12.2.2: out of order.
            reply(500, &[("Retry-After", "1")], None);
            return;
        }
        self.remote_cseq = Some(cseq);
        if self.answered.is_none() {
            reply(481, &[], None);
            return;
        }
        match method {
            rsip::Method::Bye => {
                reply(200, &[], None);
                if self.ending.is_none() {
                    self.line("bye", "BYE from server → 200".to_string());
                    self.end(Ending::ByeFromServer);
                }
            }
            rsip::Method::Invite => {
                let spec = self.invite.spec();
                let contact = crate::sip::dialog::contact_value(
                    &spec.contact_user,
                    &spec.local_host,
                    &spec.peer,
                    false,
                );
                let headers = [("Contact", contact.as_str()), ("Allow", ALLOW)];
                match message::sdp_body(&req) {
                    Ok(Some(body)) => match sdp::read(body) {
                        Some((offer, n)) => {
                            let hold = !n.direction.we_send();
                            match self.media.answer(&offer, n) {
                                Some(answer) => {
                                    let sdp = Some(("application/sdp", answer.as_bytes()));
                                    reply(200, &headers, sdp);
                                    let note = if hold { " (hold)" } else { "" };
                                    self.line(
                                        "reinvite",
                                        format!("re-INVITE from server{note} → 200"),
                                    );
                                }
                                None => {
                                    reply(488, &[], None);
                                    let why = "not SRTP with a key we can use";
                                    self.line(
                                        "reinvite",
                                        format!("re-INVITE from server → 488 ({why})"),
                                    );
                                }
                            }
                        }
                        None => {
                            reply(488, &[], None);
                            self.line("reinvite", "re-INVITE from server → 488".to_string());
                        }
                    },
                    Ok(None) => {
                        let offer = self.media.reoffer();
                        reply(200, &headers, Some(("application/sdp", offer.as_bytes())));
                        self.line("reinvite", "re-INVITE from server → 200".to_string());
                    }
                    Err(_) => reply(415, &[("Accept", "application/sdp")], None),
                }
            }
            rsip::Method::Options => reply(200, &CAPABILITY_HEADERS, None),
            rsip::Method::Info => {
                reply(200, &[], None);
                self.line("info", "INFO from server → 200".to_string());
            }
            _ => reply(405, &[("Allow", ALLOW)], None),
        }
    }

    fn on_heard(&mut self, p: &HeardPacket) -> Result<(), DialerError> {
        let Some((answered_at, _)) = &self.answered else {
            return Ok(());
        };
        let late = self
            .ended_at
            .is_some_and(|end| p.at > (end + LATE_AUDIO).into_std());
        // With SRTP, what came before the session was keyed is not audio we can read.
        let from = self.keyed_at.unwrap_or(*answered_at).max(*answered_at);
        if p.at < from.into_std() || late {
            return Ok(());
        }
        let Some(codec) = self.media.codec_of(p.payload_type) else {
            return Ok(());
        };
        let pcm = codec.decode(&p.payload);
        self.prompt.hear(&pcm, p.at);
        if let Some(r) = &mut self.recording {
            r.push(p.ssrc, p.timestamp, &pcm, p.at)?;
        }
        Ok(())
    }

    fn on_polled(&mut self, p: Polled) {
        match p {
            Polled::Event(ev) => {
                if let Some(end) = ServerEnd::of(&ev) {
                    self.server_end = Some(end);
                }
                self.timeline.server(ev);
            }
            Polled::Failed(e) => eprintln!("pivotd call: the server's events: {e}"),
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let since = now - self.started;
        if self.ending.is_none() {
            if !self.heard_anything && since >= NO_RESPONSE {
                self.invite_final = true;
                self.end(Ending::NoResponse);
            } else if self.answered.is_none() && since >= self.args.hangup_after {
                let why = format!("no answer after {}", secs(self.args.hangup_after));
                self.hang_up(&why, false);
            } else if let Some((at, _)) = &self.answered {
                let talked = now - *at;
                if talked >= self.args.hangup_after {
                    let why = format!("--hangup-after {}", secs(self.args.hangup_after));
                    self.hang_up(&why, true);
                } else {
                    self.maybe_send_digits(now, talked);
                }
            }
        }
        // Lines before the INVITE's answer wait for its line (at 0.000).
        if self.invite_final {
            let held = since.saturating_sub(HOLD_BACK);
            self.timeline
                .flush_before(u64::try_from(held.as_millis()).unwrap_or(u64::MAX));
        }
        let state = match (&self.ending, &self.answered) {
            (Some(_), _) => "ending",
            (None, Some(_)) => "in call",
            (None, None) => "calling",
        };
        self.timeline
            .status(&format!("{state} {:.1} s", since.as_secs_f64()));
    }

    fn maybe_send_digits(&mut self, now: Instant, talked: Duration) {
        if self.digits_task.is_some() {
            return;
        }
        let due = match self.args.digits_after {
            Some(after) => talked >= after,
            None => self.prompt.ended(now.into_std()),
        };
        if !due {
            return;
        }
        let Some(digits) = self.digits.take() else {
            return;
        };
        // Stamped before the first event goes, so it precedes the server's DTMF lines.
        if self.media.can_send_digits() {
            self.line("digits", format!("sent digits {digits}"));
        }
        match self.media.send_digits(&digits) {
            Some(task) => self.digits_task = Some(task),
            None => self.line(
                "digits",
                format!("digits {digits} not sent: the server took no telephone-event"),
            ),
        }
    }

    fn summary(&self, ending: Ending, end_ms: u64) -> Summary {
        let server_why = |by: &str, how: &str| {
            self.server_end
                .as_ref()
                .filter(|e| e.by == Some(by) && e.how == how)
                .and_then(|e| e.why.clone())
                .map_or(String::new(), |w| format!(" ({w})"))
        };
        let answered = self.answered.is_some();
        let (ended_by, reason, code, exit_status) = match &ending {
            Ending::ByeFromServer => (
                Some("server"),
                format!("BYE from server{}", server_why("server", "BYE")),
                None,
                EXIT_OK,
            ),
            Ending::ByeFromCaller { why, normal } => (
                Some("caller"),
                format!("BYE from caller ({why})"),
                None,
                if *normal { EXIT_OK } else { EXIT_CALL_FAILED },
            ),
            Ending::Refused { code } => (
                Some("server"),
                format!(
                    "{code} {} from server{}",
                    reason_phrase(*code),
                    server_why("server", &code.to_string())
                ),
                Some(*code),
                EXIT_CALL_FAILED,
            ),
            Ending::NoAnswer { why } => (
                Some("caller"),
                format!("not answered: CANCEL from caller ({why})"),
                None,
                EXIT_CALL_FAILED,
            ),
            Ending::Failed { why } => (None, format!("failed: {why}"), None, EXIT_CALL_FAILED),
            Ending::NoResponse => (None, "no response".to_string(), None, super::EXIT_ERROR),
        };
        Summary {
            call_id: self.invite.call_id.clone(),
            answered,
            ended_by,
            reason,
            code,
            at_ms: end_ms,
            exit_status,
            srtp: self.srtp.map(Suite::name),
        }
    }
}

/// `20 s`, `1.5 s`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::tls_name;

    #[test]
    fn a_tls_server_is_verified_by_the_host_called() {
        assert_eq!(tls_name(None, "127.0.0.1:5061"), "127.0.0.1");
        assert_eq!(tls_name(None, "pbx.example.test"), "pbx.example.test");
        assert_eq!(
            tls_name(Some("pbx.example.test:5071"), "10.0.0.1:5061"),
            "pbx.example.test"
        );
        assert_eq!(tls_name(None, "[::1]:5061"), "::1");
    }
}
