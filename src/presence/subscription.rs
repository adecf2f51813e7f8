//! RFC 6665 subscriptions to `Event: dialog` (RFC 4235) and `Event: presence` (RFC 3856):
//! what a SUBSCRIBE asks for and every code it can get ([`read`], [`watched`],
//! [`SubscribeRefusal`]), and one live subscription: its dialog, what it watches, and the
//! NOTIFY it is owed ([`Subscription::notify`]), written down for a restart.
//!
//! A SUBSCRIBE is answered 200, not 202: RFC 6665 §8.3.1 took 202 away from SUBSCRIBE (it
//! told nothing a subscriber could use), and an RFC 3265 subscriber takes any 2xx.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::body;
use super::state::{IdError, Lamp, PresenceId};
use crate::config::{Config, PresenceConfig};
use crate::sip::dialog::{Dialog, DialogError, DialogSnapshot};
use crate::sip::endpoint::{DialogId, OutgoingRequest};
use crate::sip::message;
use crate::sip::transport::Peer;
use crate::store::StoredSubscription;

/// The event packages served (the `Allow-Events` of a 489).
pub const ALLOW_EVENTS: &str = "dialog, presence";

/// Longest Event `id` parameter kept, in bytes.
const MAX_EVENT_ID: usize = 128;

/// How far a restored subscription's CSeq and document version jump: NOTIFYs sent after its
/// row was last written (a dropped store write, a crash) must not be outnumbered.
pub const RESTORE_MARGIN: u32 = 100;

/// An event package served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Package {
    /// RFC 4235: the busy lamp fields of desk phones.
    Dialog,
    /// RFC 3856 with an RFC 3863 PIDF document.
    Presence,
}

impl Package {
    pub const ALL: [Package; 2] = [Package::Dialog, Package::Presence];

    pub fn name(self) -> &'static str {
        match self {
            Package::Dialog => "dialog",
            Package::Presence => "presence",
        }
    }

    /// The Content-Type of its NOTIFY bodies.
    pub fn content_type(self) -> &'static str {
        match self {
            Package::Dialog => body::DIALOG_INFO_TYPE,
            Package::Presence => body::PIDF_TYPE,
        }
    }

    /// Package names are tokens compared without case here, to be lenient.
    pub fn from_name(name: &str) -> Option<Package> {
        Package::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The NOTIFY body for `lamp`; `version` counts the documents sent before (dialog-info).
    pub fn body(self, entity: &PresenceId, version: u32, lamp: &Lamp) -> Vec<u8> {
        match self {
            Package::Dialog => body::dialog_info(entity, version, lamp),
            Package::Presence => body::pidf(entity, lamp),
        }
    }
}

/// Why a SUBSCRIBE is refused: each names its code, reason phrase and headers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefusal {
    /// 400: RFC 6665 §8.2.1 makes Event mandatory in SUBSCRIBE.
    #[error("no Event header")]
    NoEvent,
    /// 400: an Event header that does not follow RFC 6665 §8.4 (or several of them).
    #[error("malformed Event header")]
    BadEventHeader,
    /// 489 Bad Event with Allow-Events: a package not served (`message-summary` until there
    /// is voicemail, templates such as `presence.winfo`, anything else).
    #[error("event package not served: {0}")]
    BadEvent(String),
    /// 400: an Expires that is not delta-seconds (the parser answers most of these before;
    /// `message::expires` reads it).
    #[error("malformed Expires header")]
    BadExpires,
    /// 406: Accept rules out the package's body type (RFC 6665 §4.2.1.1 / RFC 3261 §21.4.7).
    #[error("Accept rules out {}", .0.content_type())]
    NotAcceptable(Package),
    /// 415: a body (a filter) on the SUBSCRIBE: no filter is supported.
    #[error("SUBSCRIBE bodies are not supported")]
    Body,
    /// 423 with Min-Expires.
    #[error("subscription shorter than {min} s")]
    IntervalTooBrief { min: u32 },
    /// 404: the Request-URI is no presence id.
    #[error("not a presence id: {0}")]
    BadId(IdError),
    /// 404: the Request-URI's host is no account's realm.
    #[error("domain not served")]
    DomainNotServed,
    /// 403: a device watches ids of its own account only.
    #[error("the presence id belongs to another account")]
    OtherAccount,
    /// 403: the device has `max_subscriptions_per_device` subscriptions already.
    #[error("too many subscriptions for the device")]
    TooMany,
    /// 503: the presence task's queue is full.
    #[error("presence overloaded")]
    Busy,
    /// 481: a SUBSCRIBE in a dialog that holds no (live) subscription of its Event.
    #[error("no such subscription")]
    NoSubscription,
    /// 400: no dialog can be formed from the SUBSCRIBE.
    #[error("no dialog: {0}")]
    BadDialog(#[source] DialogError),
}

impl SubscribeRefusal {
    pub fn code(&self) -> u16 {
        match self {
            SubscribeRefusal::NoEvent
            | SubscribeRefusal::BadEventHeader
            | SubscribeRefusal::BadExpires
            | SubscribeRefusal::BadDialog(_) => 400,
            SubscribeRefusal::BadEvent(_) => 489,
            SubscribeRefusal::NotAcceptable(_) => 406,
            SubscribeRefusal::Body => 415,
            SubscribeRefusal::IntervalTooBrief { .. } => 423,
            SubscribeRefusal::BadId(_) | SubscribeRefusal::DomainNotServed => 404,
            SubscribeRefusal::OtherAccount | SubscribeRefusal::TooMany => 403,
            SubscribeRefusal::Busy => 503,
            SubscribeRefusal::NoSubscription => 481,
        }
    }

    /// The reason phrase, when not the code's usual one.
    pub fn reason(&self) -> Option<Cow<'static, str>> {
        Some(match self {
            SubscribeRefusal::NoEvent => "Missing Event".into(),
            SubscribeRefusal::BadEventHeader => "Bad Event Header".into(),
            SubscribeRefusal::BadEvent(_) => "Bad Event".into(),
            SubscribeRefusal::BadExpires => "Bad Expires".into(),
            SubscribeRefusal::Body => "Filters Not Supported".into(),
            SubscribeRefusal::DomainNotServed => "Domain Not Served".into(),
            SubscribeRefusal::OtherAccount => "Not Your Account".into(),
            SubscribeRefusal::TooMany => "Too Many Subscriptions".into(),
            SubscribeRefusal::BadDialog(e) => e.to_string().into(),
            SubscribeRefusal::NotAcceptable(_)
            | SubscribeRefusal::IntervalTooBrief { .. }
            | SubscribeRefusal::BadId(_)
            | SubscribeRefusal::Busy
            | SubscribeRefusal::NoSubscription => return None,
        })
    }

    /// The headers the response carries beside the usual ones.
    pub fn headers(&self) -> Vec<(&'static str, Cow<'static, str>)> {
        match self {
            SubscribeRefusal::BadEvent(_) => vec![("Allow-Events", ALLOW_EVENTS.into())],
            SubscribeRefusal::NotAcceptable(p) => vec![("Accept", p.content_type().into())],
            SubscribeRefusal::IntervalTooBrief { min } => {
                vec![("Min-Expires", min.to_string().into())]
            }
            SubscribeRefusal::Busy => vec![("Retry-After", "5".into())],
            _ => Vec::new(),
        }
    }

    /// Whether the source guard counts it against the source: what probing collects.
    pub fn is_source_failure(&self) -> bool {
        matches!(
            self,
            SubscribeRefusal::OtherAccount | SubscribeRefusal::DomainNotServed
        )
    }
}

/// The Event header of a SUBSCRIBE: the package and its `id` parameter, echoed in every
/// NOTIFY (RFC 6665 §8.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub package: Package,
    pub id: Option<String>,
}

impl Event {
    /// The Event header value of the NOTIFYs.
    pub fn header(&self) -> String {
        match &self.id {
            Some(id) => format!("{};id={id}", self.package.name()),
            None => self.package.name().to_string(),
        }
    }
}

/// What a valid SUBSCRIBE asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub event: Event,
    /// Seconds, within the rules; 0 ends the subscription (or, out of a dialog, fetches the
    /// state once, RFC 6665 §4.4.3).
    pub expires: u32,
}

/// Reads a SUBSCRIBE (new or in its dialog): Event (400, 489), Accept (406), body (415),
/// Expires (400, 423; cut to `max_expires`).
pub fn read(
    req: &rsip::Request,
    rules: &PresenceConfig,
) -> Result<SubscribeRequest, SubscribeRefusal> {
    let mut events = message::header_values(req, "Event");
    let first = events.next().ok_or(SubscribeRefusal::NoEvent)?;
    if events.next().is_some() {
        return Err(SubscribeRefusal::BadEventHeader);
    }
    let event = parse_event(first.as_bytes())?;
    if let Some(accept) = accept_values(req) {
        if !accepts(&accept, event.package.content_type()) {
            return Err(SubscribeRefusal::NotAcceptable(event.package));
        }
    }
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(SubscribeRefusal::Body);
    }
    let expires = match message::header_str(req, "Expires") {
        None => rules.default_expires,
        Some(_) => message::expires(req).ok_or(SubscribeRefusal::BadExpires)?,
    };
    let expires = match expires {
        0 => 0,
        e if e < rules.min_expires => {
            return Err(SubscribeRefusal::IntervalTooBrief {
                min: rules.min_expires,
            })
        }
        e => e.min(rules.max_expires),
    };
    Ok(SubscribeRequest { event, expires })
}

/// RFC 6665 §8.4: `event-type *( SEMI event-param )`, the type a token of the package and
/// its templates, `id=token` among generic parameters (a quoted value may hold `;`).
pub fn parse_event(value: &[u8]) -> Result<Event, SubscribeRefusal> {
    let parts = split_params(value);
    let (kind, params) = parts
        .split_first()
        .ok_or(SubscribeRefusal::BadEventHeader)?;
    let kind = trim(kind);
    if kind.is_empty() || !kind.iter().all(|&b| crate::sip::normalize::is_token(b)) {
        return Err(SubscribeRefusal::BadEventHeader);
    }
    // All token bytes: ASCII.
    let kind = String::from_utf8_lossy(kind);
    let mut id = None;
    for p in params {
        let p = trim(p);
        let (name, value) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&p[..i]), Some(trim(&p[i + 1..]))),
            None => (p, None),
        };
        if name.is_empty() || !name.iter().all(|&b| crate::sip::normalize::is_token(b)) {
            return Err(SubscribeRefusal::BadEventHeader);
        }
        if name.eq_ignore_ascii_case(b"id") {
            let v = value.ok_or(SubscribeRefusal::BadEventHeader)?;
            if v.is_empty()
                || v.len() > MAX_EVENT_ID
                || !v.iter().all(|&b| crate::sip::normalize::is_token(b))
                || id.is_some()
            {
                return Err(SubscribeRefusal::BadEventHeader);
            }
            id = Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    let package =
        Package::from_name(&kind).ok_or_else(|| SubscribeRefusal::BadEvent(kind.into_owned()))?;
    Ok(Event { package, id })
}

/// A header value split at the `;` outside double quotes.
fn split_params(value: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in value.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

fn trim(s: &[u8]) -> &[u8] {
    crate::sip::normalize::trim(s)
}

/// Every Accept value of a request joined, or None without an Accept header (an empty one
/// is present and admits nothing).
fn accept_values(req: &rsip::Request) -> Option<String> {
    let values: Vec<&str> = message::header_values(req, "Accept").collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Whether an Accept value admits `media_type` (`type/subtype` ranges with `*` wildcards).
fn accepts(accept: &str, media_type: &str) -> bool {
    let (want_type, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case(media_type)
            || media == "*/*"
            || media
                .strip_suffix("/*")
                .is_some_and(|t| t.eq_ignore_ascii_case(want_type))
    })
}

/// The presence id a new SUBSCRIBE watches: its Request-URI, in the watching device's
/// account. The URI's host must be that account's realm (403 for another account's, 404
/// for one no account has), or an IP address (a phone that names the server by address):
/// the account's realm is then filled in.
pub fn watched(
    req: &rsip::Request,
    cfg: &Config,
    account_id: &str,
) -> Result<PresenceId, SubscribeRefusal> {
    let own = cfg
        .account(account_id)
        .ok_or(SubscribeRefusal::OtherAccount)?;
    let host = &req.uri.host_with_port.host;
    let realm = match cfg.account_for_realm(&host.to_string()) {
        Some(a) if a.id == own.id => own.realm.as_str(),
        Some(_) => return Err(SubscribeRefusal::OtherAccount),
        None if matches!(host, rsip::Host::IpAddr(_)) => own.realm.as_str(),
        None => return Err(SubscribeRefusal::DomainNotServed),
    };
    PresenceId::from_parts(req.uri.user().unwrap_or(""), realm).map_err(SubscribeRefusal::BadId)
}

/// The device that watches: the one whose credentials the SUBSCRIBE carried.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Watcher {
    pub account_id: String,
    pub device_id: String,
}

/// Why a subscription ends (RFC 6665 §4.2.2 reasons, on the final NOTIFY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Expired, or the subscriber unsubscribed (Expires: 0; RFC 6665 §4.4.1).
    Timeout,
    /// The subscriber may subscribe again at once (RFC 6665 §4.2.2).
    Deactivated,
    /// What it watched is gone (a deleted device).
    Noresource,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Deactivated => "deactivated",
            EndReason::Noresource => "noresource",
        }
    }
}

/// One subscription: the dialog pivotd's 200 created, what it watches, when it ends.
#[derive(Debug)]
pub struct Subscription {
    pub dialog: Dialog,
    pub event: Event,
    pub watched: PresenceId,
    pub watcher: Watcher,
    /// Unix seconds.
    pub expires_at: u64,
    /// Documents sent so far: the next dialog-info `version` (RFC 4235 §4.1).
    pub version: u32,
}

/// Why a stored subscription could not be taken back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("unreadable state: {0}")]
    State(#[from] serde_json::Error),
    #[error("unknown transport {0:?}, or no socket of it")]
    Transport(String),
    #[error("unknown package {0:?}")]
    Package(String),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// What the store keeps beyond its columns (as JSON).
#[derive(Serialize, Deserialize)]
struct Written {
    dialog: DialogSnapshot,
    event_id: Option<String>,
    version: u32,
}

impl Subscription {
    /// The subscription a new SUBSCRIBE creates (its dialog per RFC 3261 §12.1.1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        req: &rsip::Request,
        call_id: &str,
        local_tag: &str,
        peer: Peer,
        local_host: String,
        asked: &SubscribeRequest,
        watched: PresenceId,
        watcher: Watcher,
        now: u64,
    ) -> Result<Subscription, DialogError> {
        let dialog = Dialog::from_request(req, call_id, local_tag, peer, local_host)?;
        // Every NOTIFY goes to this URI: one pivotd could not read back is refused now.
        if !message::is_request_target(dialog.remote_target()) {
            return Err(DialogError::Bad("Contact"));
        }
        Ok(Subscription {
            dialog,
            event: asked.event.clone(),
            watched,
            watcher,
            expires_at: now + u64::from(asked.expires),
            version: 0,
        })
    }

    pub fn id(&self) -> &DialogId {
        &self.dialog.id
    }

    /// The headers of the 200 to a SUBSCRIBE (RFC 6665 §4.2.1.1: Expires, and the Contact
    /// the dialog's requests come to).
    pub fn ok_headers(&self, now: u64) -> Vec<(&'static str, String)> {
        vec![
            ("Expires", self.expires_at.saturating_sub(now).to_string()),
            ("Contact", self.dialog.contact(self.watched.user())),
        ]
    }

    /// The next NOTIFY, with `lamp` as the state (RFC 6665 §4.2.2): `active;expires=N`, or
    /// `terminated;reason=…` when `end` says it is the last.
    pub fn notify(&mut self, lamp: &Lamp, now: u64, end: Option<EndReason>) -> OutgoingRequest {
        let state = match end {
            Some(r) => format!("terminated;reason={}", r.as_str()),
            None => format!("active;expires={}", self.expires_at.saturating_sub(now)),
        };
        let event = self.event.header();
        let contact = self.dialog.contact(self.watched.user());
        let body = self.event.package.body(&self.watched, self.version, lamp);
        self.version = self.version.wrapping_add(1);
        self.dialog.request(
            rsip::Method::Notify,
            &[
                ("Event", &event),
                ("Subscription-State", &state),
                ("Contact", &contact),
            ],
            Some((self.event.package.content_type(), &body)),
        )
    }

    /// The row the store keeps.
    pub fn stored(&self, now: u64) -> StoredSubscription {
        let written = Written {
            dialog: self.dialog.snapshot(),
            event_id: self.event.id.clone(),
            version: self.version,
        };
        StoredSubscription {
            call_id: self.dialog.id.call_id.clone(),
            local_tag: self.dialog.id.local_tag.clone(),
            account_id: self.watcher.account_id.clone(),
            device_id: self.watcher.device_id.clone(),
            presence_id: self.watched.to_string(),
            package: self.event.package.name().to_string(),
            expires_at: self.expires_at,
            // Plain data: serialising cannot fail.
            state: serde_json::to_string(&written).unwrap_or_default(),
            updated: now,
        }
    }

    /// A stored subscription in a new process, its CSeq and version moved on by
    /// [`RESTORE_MARGIN`]. `local_for` names our socket for its dialog now (and the address
    /// advertised for it): the old process's may be gone.
    pub fn restore(
        row: StoredSubscription,
        local_for: impl Fn(&DialogSnapshot) -> Option<(std::net::SocketAddr, String)>,
    ) -> Result<Subscription, RestoreError> {
        let w: Written = serde_json::from_str(&row.state)?;
        let transport = w.dialog.transport.clone();
        let dialog = local_for(&w.dialog)
            .and_then(|(local, host)| Dialog::restore(w.dialog, local, host, RESTORE_MARGIN))
            .ok_or(RestoreError::Transport(transport))?;
        let package =
            Package::from_name(&row.package).ok_or(RestoreError::Package(row.package.clone()))?;
        let watched = PresenceId::parse(&row.presence_id, "")?;
        Ok(Subscription {
            dialog,
            event: Event {
                package,
                id: w.event_id,
            },
            watched,
            watcher: Watcher {
                account_id: row.account_id,
                device_id: row.device_id,
            },
            expires_at: row.expires_at,
            version: w.version.saturating_add(RESTORE_MARGIN),
        })
    }
}

/// What an operator is shown of a subscription (the presence API): read from its stored
/// row, whose state only this file writes and reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionView {
    pub call_id: String,
    pub watched: PresenceId,
    pub package: Package,
    /// The subscriber's address of record (its From URI's `user@host`), when readable.
    pub from: Option<String>,
    /// Where its NOTIFYs go: the dialog's remote target.
    pub contact: String,
    /// `UDP`, `TCP` or `TLS`, and the address its requests came from.
    pub transport: String,
    pub remote: std::net::SocketAddr,
    pub account_id: String,
    pub device_id: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// NOTIFYs sent (the next dialog-info `version`).
    pub version: u32,
    /// Unix seconds of the row's last write.
    pub updated: u64,
}

impl SubscriptionView {
    pub fn of(row: &StoredSubscription) -> Result<SubscriptionView, RestoreError> {
        let w: Written = serde_json::from_str(&row.state)?;
        let package =
            Package::from_name(&row.package).ok_or(RestoreError::Package(row.package.clone()))?;
        let from = message::addr_uri(&w.dialog.remote_uri)
            .and_then(message::parse_sip_uri)
            .map(|u| match u.user() {
                Some(user) => format!("{user}@{}", u.host_with_port.host),
                None => u.host_with_port.host.to_string(),
            });
        Ok(SubscriptionView {
            call_id: row.call_id.clone(),
            watched: PresenceId::parse(&row.presence_id, "")?,
            package,
            from,
            contact: w.dialog.remote_target,
            transport: w.dialog.transport,
            remote: w.dialog.remote,
            account_id: row.account_id.clone(),
            device_id: row.device_id.clone(),
            expires_at: row.expires_at,
            version: w.version,
            updated: row.updated,
        })
    }
}

#[cfg(test)]
mod tests;
