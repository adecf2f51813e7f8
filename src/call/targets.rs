//! Where a bridge's INVITEs go: one [`Target`] (a device, a user, a number, a SIP URI)
//! resolved into the INVITEs to send, grouped in stages. The forks of a stage ring at once; a
//! stage is tried after the one before it failed (carriers, in order).
//!
//! - A device rings at every contact it is registered at (the registrar's unexpired
//!   bindings), each reached at the address its REGISTER came from (the phone is behind NAT)
//!   over its transport, through its Path. Over TCP the INVITE leaves on the connection
//!   still open to that address (the REGISTER's: the transport looks connections up by
//!   remote address, as no connection id is stored with a binding), else on a new one. Over
//!   TLS only on the open one: the transport never connects back to a phone, so with the
//!   phone's connection gone the fork hears nothing and fails (408).
//! - A user rings every device it owns, at once.
//! - A number goes to the carriers, one stage each: the account's (`local`), else the
//!   system's `[[resources]]` when there are any. A gateway's host name is looked up (A/AAAA
//!   only: no SRV or NAPTR, RFC 3263's other steps) and its first address we have a socket
//!   for is used. A TLS carrier (`sips:`, `;transport=tls`) is verified by its host name
//!   ([`Fork::tls_name`]).
//! - A SIP URI (TwiML `<Sip>`) is dialled only when its host is one of the account's
//!   registered devices, one of its carriers, or in its `sip_targets`: anything else would
//!   let a web server that answers TwiML dial anywhere on the company's bill.
//!
//! Nothing here sends: the bridge (`call/bridge.rs`) builds an `sip::uac::InviteSpec` from
//! each [`Fork`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{
    Account, CallerIds, Config, GatewayHost, GatewayTransport, Resource, SipTarget,
};
use crate::flow::bridge::Target;
use crate::logsafe::wire;
use crate::presence::PresenceId;
use crate::registrar::Registrar;
use crate::sip::dialog::host_port;
use crate::sip::message::parse_sip_uri;
use crate::sip::transport::{Peer, Proto, Transport};
use crate::store::Registration;

use super::lamps::device_ids;

/// How long a carrier's or a SIP target's host name may take to look up.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One INVITE to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fork {
    /// The binding's Contact URI, `sip:{prefix}{number}{suffix}@{gateway}` for a carrier, or
    /// the `<Sip>` URI as given.
    pub request_uri: String,
    /// The To value: `<sip:{username}@{realm}>` for a device, the Request-URI without
    /// parameters for a carrier (the same user part, so the carrier reads one number), the
    /// URI for a `<Sip>`.
    pub to: String,
    /// Where it goes: transport, remote address, our socket, and no connection id (see the
    /// module doc for TCP).
    pub peer: Peer,
    /// `host:port` for Via and Contact: `[sip] advertise` if set, else our socket's address.
    pub local_host: String,
    /// The binding's Path (RFC 3327), in order: the Route set.
    pub route: Vec<String>,
    /// A carrier's username and password for a 401/407.
    pub credentials: Option<(String, String)>,
    /// The caller ID the callee sees, for carriers per `caller_id_type`; None: the caller's
    /// own.
    pub from_number: Option<String>,
    pub from_name: Option<String>,
    /// For logs: `device d1 at sip:…`, `carrier c1 (sip:gw…)`, `sip target sip:…`, with wire
    /// values escaped.
    pub label: String,
    /// The device rung, when it is one.
    pub device_id: Option<String>,
    /// The presence ids its ringing lights (`call/lamps.rs`): the device's, its owner's.
    pub presence_ids: Vec<PresenceId>,
    /// Over TLS to a server (a carrier, a `<Sip>` host): the name its certificate must show,
    /// sent as SNI. None for a phone (reached on its own connection) and for UDP/TCP.
    pub tls_name: Option<String>,
}

/// An endpoint resolved: stages tried one after another, the forks of a stage rung at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub stages: Vec<Vec<Fork>>,
}

/// Our listening sockets by transport (`Transport::udp_addrs`, `tcp_addrs`): the socket a
/// request to a carrier or a SIP target leaves from, and what its Via names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalSockets {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl LocalSockets {
    /// The sockets a transport has bound.
    pub fn of(transport: &Transport) -> LocalSockets {
        LocalSockets {
            udp: transport.udp_addrs(),
            tcp: transport.tcp_addrs(),
            tls: transport.tls_addrs(),
        }
    }

    /// Our sockets of one transport.
    fn of_proto(&self, proto: Proto) -> &[SocketAddr] {
        match proto {
            Proto::Udp => &self.udp,
            Proto::Tcp => &self.tcp,
            Proto::Tls => &self.tls,
        }
    }

    /// Our socket of `proto` for a request to `remote`: one of its address family, preferably
    /// one that can reach it (bound to any address, or loopback to loopback).
    fn for_remote(&self, proto: Proto, remote: IpAddr) -> Option<SocketAddr> {
        let sockets = self.of_proto(proto);
        let same_family = || {
            sockets
                .iter()
                .filter(move |s| s.is_ipv4() == remote.is_ipv4())
        };
        same_family()
            .find(|s| s.ip().is_unspecified() || s.ip().is_loopback() == remote.is_loopback())
            .or_else(|| same_family().next())
            .copied()
    }
}

/// What resolving needs from the call and the server.
pub(crate) struct ResolveContext<'a> {
    pub config: &'a Config,
    /// The caller's account: ids resolve inside it only.
    pub account_id: &'a str,
    /// Bindings, and the directory of devices (config and API) with owners and caller IDs.
    pub registrar: &'a Registrar,
    pub local: &'a LocalSockets,
    /// The device placing the call, if a device is.
    pub calling_device: Option<&'a str>,
    /// Whether the calling device may ring itself (Kazoo's `can_call_self`).
    pub can_call_self: bool,
}

/// Why a target yields no INVITE. Wire values are escaped in the messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotResolved {
    #[error("no device {} in the account", wire(.0))]
    UnknownDevice(String),
    #[error("no user {} in the account", wire(.0))]
    UnknownUser(String),
    #[error("device {} is not registered", wire(.0))]
    DeviceNotRegistered(String),
    #[error("no device of user {} is registered", wire(.0))]
    UserNotRegistered(String),
    /// The target is the calling device.
    #[error("device {} is the calling device and can_call_self is off", wire(.0))]
    CalledSelf(String),
    /// The target is the calling device's owner, or another device of that owner.
    #[error("the caller's owner {} would ring itself and can_call_self is off", wire(.0))]
    OwnerCalledSelf(String),
    #[error("no carrier to send the number to")]
    NoCarriers,
    #[error("{} is not a number that can be dialled", wire(.0))]
    InvalidNumber(String),
    #[error("{} is not a sip: URI pivotd can dial", wire(.0))]
    InvalidUri(String),
    /// Not a device, carrier or `sip_targets` entry of the account (toll-fraud guard).
    #[error("{} is not a device, carrier or sip_targets entry of the account", wire(.uri))]
    SipNotAllowed { uri: String },
    /// A transport other than UDP, TCP and TLS.
    #[error("{} needs {transport}, which pivotd does not speak", wire(.uri))]
    UnsupportedTransport {
        uri: String,
        transport: &'static str,
    },
    #[error("cannot look up {}", wire(.0))]
    HostLookup(String),
    #[error("no {proto:?} socket of the address family of {remote}")]
    NoLocalSocket { proto: Proto, remote: IpAddr },
    /// The account id is not one of the config's.
    #[error("no account {}", wire(.0))]
    UnknownAccount(String),
}

impl NotResolved {
    /// The hangup cause in FreeSWITCH/Kazoo terms.
    pub fn cause(&self) -> &'static str {
        match self {
            NotResolved::UnknownDevice(_) | NotResolved::UnknownUser(_) => "UNALLOCATED_NUMBER",
            // FreeSWITCH's cause for a user with no registration (SIP 480).
            NotResolved::DeviceNotRegistered(_) | NotResolved::UserNotRegistered(_) => {
                "USER_NOT_REGISTERED"
            }
            // Kazoo's `cf_user` continues with the upper-cased build error.
            NotResolved::CalledSelf(_) => "ENDPOINT_CALLED_SELF",
            NotResolved::OwnerCalledSelf(_) => "OWNER_CALLED_SELF",
            NotResolved::SipNotAllowed { .. } => "CALL_REJECTED",
            NotResolved::InvalidNumber(_) | NotResolved::InvalidUri(_) => "INVALID_NUMBER_FORMAT",
            NotResolved::NoCarriers
            | NotResolved::UnsupportedTransport { .. }
            | NotResolved::HostLookup(_)
            | NotResolved::NoLocalSocket { .. }
            | NotResolved::UnknownAccount(_) => "NO_ROUTE_DESTINATION",
        }
    }
}

/// The INVITEs that ring `target` for a call in `ctx`'s account.
pub(crate) async fn resolve(
    ctx: &ResolveContext<'_>,
    target: &Target,
) -> Result<Resolved, NotResolved> {
    let stages = match target {
        Target::Device { id } => vec![device_stage(ctx, id)?],
        Target::User { id } => vec![user_stage(ctx, id)?],
        Target::Number { number, local } => carrier_stages(ctx, number, *local).await?,
        Target::Sip { uri } => vec![vec![sip_fork(ctx, uri).await?]],
    };
    Ok(Resolved { stages })
}

/// Kazoo's self-call rule (`kz_endpoint`): without `can_call_self` a call rings neither the
/// device placing it (`endpoint_called_self`) nor anything of that device's owner — the user
/// or the user's other devices (`owner_called_self`).
fn refuse_self_call(
    ctx: &ResolveContext<'_>,
    device_id: Option<&str>,
    owner_id: Option<&str>,
) -> Result<(), NotResolved> {
    if ctx.can_call_self {
        return Ok(());
    }
    if let Some(d) = device_id.filter(|d| ctx.calling_device == Some(*d)) {
        return Err(NotResolved::CalledSelf(d.to_string()));
    }
    let caller_owner = ctx
        .calling_device
        .and_then(|d| ctx.registrar.directory().device(ctx.account_id, d))
        .and_then(|d| d.owner_id.clone());
    match (caller_owner, owner_id) {
        (Some(caller), Some(owner)) if caller == owner => {
            Err(NotResolved::OwnerCalledSelf(owner.to_string()))
        }
        _ => Ok(()),
    }
}

/// Every binding of one device.
fn device_stage(ctx: &ResolveContext<'_>, id: &str) -> Result<Vec<Fork>, NotResolved> {
    let directory = ctx.registrar.directory();
    // A config device without credentials is not in the directory: it exists, but can never
    // register.
    let known = directory.device(ctx.account_id, id).is_some()
        || ctx
            .config
            .account(ctx.account_id)
            .is_some_and(|a| a.devices.iter().any(|d| d.id == id));
    if !known {
        return Err(NotResolved::UnknownDevice(id.to_string()));
    }
    let owner = directory
        .device(ctx.account_id, id)
        .and_then(|d| d.owner_id.clone());
    refuse_self_call(ctx, Some(id), owner.as_deref())?;
    let forks = device_forks(ctx, id);
    if forks.is_empty() {
        return Err(NotResolved::DeviceNotRegistered(id.to_string()));
    }
    Ok(forks)
}

/// Every binding of every device a user owns.
fn user_stage(ctx: &ResolveContext<'_>, id: &str) -> Result<Vec<Fork>, NotResolved> {
    let owned = |owner: &Option<String>| owner.as_deref() == Some(id);
    let mut devices: Vec<String> = ctx
        .registrar
        .directory()
        .devices_of(ctx.account_id)
        .into_iter()
        .filter(|d| owned(&d.owner_id))
        .map(|d| d.device_id.clone())
        .collect();
    // Ring in a stable order (the directory is a hash map).
    devices.sort();
    // A user is known by the config, or (API users are not in the directory) by a device
    // that names it as owner.
    let known = !devices.is_empty()
        || ctx.config.account(ctx.account_id).is_some_and(|a| {
            a.users.iter().any(|u| u.id == id) || a.devices.iter().any(|d| owned(&d.owner_id))
        });
    if !known {
        return Err(NotResolved::UnknownUser(id.to_string()));
    }
    refuse_self_call(ctx, None, Some(id))?;
    let forks: Vec<Fork> = devices.iter().flat_map(|d| device_forks(ctx, d)).collect();
    if forks.is_empty() {
        return Err(NotResolved::UserNotRegistered(id.to_string()));
    }
    Ok(forks)
}

/// One fork per unexpired binding of a device.
fn device_forks(ctx: &ResolveContext<'_>, device_id: &str) -> Vec<Fork> {
    let entry = ctx.registrar.directory().device(ctx.account_id, device_id);
    ctx.registrar
        .bindings_of(ctx.account_id, device_id)
        .iter()
        .filter_map(|b| {
            let Some(peer) = binding_peer(b, ctx.local) else {
                tracing::warn!(device = %wire(device_id), transport = %wire(&b.transport),
                    "binding skipped: an unknown transport, or no socket of ours for it");
                return None;
            };
            let to = match &entry {
                Some(e) => format!("<sip:{}@{}>", uri_user(&e.username), e.realm),
                None => format!("<{}>", b.contact),
            };
            Some(Fork {
                request_uri: b.contact.clone(),
                to,
                local_host: host_port(ctx.config.sip.advertise, peer.local),
                peer,
                route: b.path.clone(),
                credentials: None,
                from_number: None,
                from_name: None,
                label: format!("device {} at {}", wire(device_id), wire(&b.contact)),
                device_id: Some(device_id.to_string()),
                presence_ids: entry.as_deref().map(device_ids).unwrap_or_default(),
                tls_name: None,
            })
        })
        .collect()
}

/// The presence ids a rung device lights (`call/lamps.rs`); none for what is no device.
fn lamp_ids(ctx: &ResolveContext<'_>, device_id: &Option<String>) -> Vec<PresenceId> {
    device_id
        .as_deref()
        .and_then(|d| ctx.registrar.directory().device(ctx.account_id, d))
        .as_deref()
        .map(device_ids)
        .unwrap_or_default()
}

/// Where requests to a binding go: its REGISTER's source, on the socket it came in on.
fn binding_peer(b: &Registration, local: &LocalSockets) -> Option<Peer> {
    let proto = Proto::from_via_token(&b.transport)?;
    let ours = local.of_proto(proto);
    // The socket the REGISTER reached, when it is ours. A binding another node took (a store
    // shared by several nodes) names that node's socket: our Via and Contact must name one of
    // ours, or the device's answers and in-dialog requests go to the other node.
    let local = if ours.contains(&b.local) {
        b.local
    } else {
        local.for_remote(proto, b.source.ip())?
    };
    Some(Peer {
        proto,
        remote: b.source,
        local,
        conn: None,
    })
}

/// The carriers a number goes to, in order.
fn carriers_for<'c>(cfg: &'c Config, account: Option<&'c Account>, local: bool) -> &'c [Resource] {
    let own = account.map_or(&[][..], |a| a.resources.as_slice());
    if local || cfg.resources.is_empty() {
        own
    } else {
        &cfg.resources
    }
}

/// One stage per carrier that can be reached, in order. A carrier that cannot (a host that
/// does not resolve, no socket of ours for its transport) is logged and left out; with none
/// left, the last reason.
async fn carrier_stages(
    ctx: &ResolveContext<'_>,
    number: &str,
    local: bool,
) -> Result<Vec<Vec<Fork>>, NotResolved> {
    if number.is_empty() || number.chars().any(char::is_control) {
        return Err(NotResolved::InvalidNumber(number.to_string()));
    }
    let account = ctx.config.account(ctx.account_id);
    let carriers = carriers_for(ctx.config, account, local);
    let mut stages = Vec::new();
    let mut last_error = NotResolved::NoCarriers;
    for carrier in carriers {
        match carrier_fork(ctx, account, carrier, number).await {
            Ok(fork) => stages.push(vec![fork]),
            Err(e) => {
                tracing::warn!(carrier = %wire(&carrier.id), error = %e, "carrier left out");
                last_error = e;
            }
        }
    }
    if stages.is_empty() {
        return Err(last_error);
    }
    Ok(stages)
}

async fn carrier_fork(
    ctx: &ResolveContext<'_>,
    account: Option<&Account>,
    carrier: &Resource,
    number: &str,
) -> Result<Fork, NotResolved> {
    let gateway = &carrier.gateway;
    let proto = gateway_proto(gateway.transport);
    let candidates = addresses(&gateway.host, gateway.port_or_default()).await?;
    let (remote, local) = first_reachable(ctx.local, proto, &candidates, |_| true)?;
    let user = uri_user(&format!("{}{number}{}", carrier.prefix, carrier.suffix));
    let host = gateway.host_port();
    // The gateway's own form: sips: stays sips: (RFC 5630), sip: names its transport.
    let (scheme, transport) = match (gateway.secure, proto) {
        (true, _) => ("sips", ""),
        (false, Proto::Tcp) => ("sip", ";transport=tcp"),
        (false, Proto::Tls) => ("sip", ";transport=tls"),
        (false, Proto::Udp) => ("sip", ""),
    };
    let caller_id = carrier_caller_id(ctx, account, carrier);
    Ok(Fork {
        request_uri: format!("{scheme}:{user}@{host}{transport}"),
        to: format!("<{scheme}:{user}@{host}>"),
        peer: Peer {
            proto,
            remote,
            local,
            conn: None,
        },
        local_host: host_port(ctx.config.sip.advertise, local),
        route: Vec::new(),
        credentials: carrier.username.clone().zip(carrier.password.clone()),
        from_number: caller_id.number,
        from_name: caller_id.name,
        label: format!("carrier {} ({gateway})", wire(&carrier.id)),
        device_id: None,
        presence_ids: Vec::new(),
        tls_name: (proto == Proto::Tls).then(|| gateway.host.to_string()),
    })
}

/// The transport of a gateway.
fn gateway_proto(t: GatewayTransport) -> Proto {
    match t {
        GatewayTransport::Udp => Proto::Udp,
        GatewayTransport::Tcp => Proto::Tcp,
        GatewayTransport::Tls => Proto::Tls,
    }
}

/// The caller ID a carrier sees, of the carrier's `caller_id_type`: the calling device's
/// (its owner's filling the gaps, as the directory holds it), then the account's, field by
/// field (Kazoo's order). A call that no device places (from a carrier, anonymous) keeps the
/// caller's own.
fn carrier_caller_id(
    ctx: &ResolveContext<'_>,
    account: Option<&Account>,
    carrier: &Resource,
) -> crate::config::CallerId {
    let Some(device_id) = ctx.calling_device else {
        return Default::default();
    };
    let kind = carrier.caller_id_type;
    let device = ctx.registrar.directory().device(ctx.account_id, device_id);
    let mut id = device
        .map(|d| kind.of(&d.caller_id).clone())
        .unwrap_or_default();
    let none = CallerIds::default();
    let fallback = kind.of(account.map_or(&none, |a| &a.caller_id));
    if id.number.is_none() {
        id.number.clone_from(&fallback.number);
    }
    if id.name.is_none() {
        id.name.clone_from(&fallback.name);
    }
    id
}

/// A `<Sip>` URI, if the account allows it.
async fn sip_fork(ctx: &ResolveContext<'_>, text: &str) -> Result<Fork, NotResolved> {
    let invalid = || NotResolved::InvalidUri(text.to_string());
    let text = text.trim();
    // The text goes into the Request-URI and To as is: printable ASCII only (a CR LF in the
    // user part would add headers), nothing that ends a name-addr.
    if !text
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"<>\"\\`{}|^".contains(&b))
    {
        return Err(invalid());
    }
    let uri = parse_sip_uri(text).ok_or_else(invalid)?;
    let sips = matches!(uri.scheme, Some(rsip::Scheme::Sips));
    let mut proto = None;
    for param in &uri.params {
        match param {
            rsip::Param::Transport(rsip::Transport::Udp) if !sips => proto = Some(Proto::Udp),
            rsip::Param::Transport(rsip::Transport::Tcp) => proto = Some(Proto::Tcp),
            rsip::Param::Transport(rsip::Transport::Tls) => proto = Some(Proto::Tls),
            rsip::Param::Transport(_) => {
                return Err(NotResolved::UnsupportedTransport {
                    uri: text.to_string(),
                    transport: "a transport other than UDP, TCP or TLS",
                })
            }
            // maddr would send the request elsewhere than the host the checks below read.
            rsip::Param::Maddr(_) => return Err(invalid()),
            rsip::Param::Other(name, _) if name.to_string().eq_ignore_ascii_case("transport") => {
                return Err(NotResolved::UnsupportedTransport {
                    uri: text.to_string(),
                    transport: "a transport other than UDP, TCP or TLS",
                })
            }
            _ => {}
        }
    }
    // sips: is TLS whatever the parameter says (RFC 5630: transport=tcp is TLS over TCP).
    if sips {
        proto = Some(Proto::Tls);
    }
    let host = match &uri.host_with_port.host {
        rsip::Host::IpAddr(ip) => GatewayHost::Ip(*ip),
        rsip::Host::Domain(d) => GatewayHost::Name(d.to_string().to_ascii_lowercase()),
    };
    let default_port = if proto == Some(Proto::Tls) {
        5061
    } else {
        5060
    };
    let port = uri.host_with_port.port.map_or(default_port, |p| *p.value());
    let account = ctx
        .config
        .account(ctx.account_id)
        .ok_or_else(|| NotResolved::UnknownAccount(ctx.account_id.to_string()))?;
    let fork = |peer: Peer, route: Vec<String>, credentials, label: String, device_id| Fork {
        presence_ids: lamp_ids(ctx, &device_id),
        // A device is reached on its own connection; any other host by its name.
        tls_name: (peer.proto == Proto::Tls && device_id.is_none()).then(|| host.to_string()),
        request_uri: text.to_string(),
        to: format!("<{text}>"),
        local_host: host_port(ctx.config.sip.advertise, peer.local),
        peer,
        route,
        credentials,
        from_number: None,
        from_name: None,
        label,
        device_id,
    };

    // One of the account's registered devices: reached as the device is (its NAT source,
    // transport and Path), whatever address the URI names it by.
    if let Some(b) = account_bindings(ctx)
        .into_iter()
        .find(|b| binding_matches(b, &host, port))
    {
        if let Some(peer) = binding_peer(&b, ctx.local) {
            let label = format!("sip target {} (device {})", wire(text), wire(&b.device_id));
            return Ok(fork(peer, b.path.clone(), None, label, Some(b.device_id)));
        }
    }

    // One of the account's carriers: with its credentials, over the URI's transport, else
    // the carrier's.
    let carrier = account
        .resources
        .iter()
        .find(|c| c.gateway.host == host && c.gateway.port_or_default() == port);
    let proto = proto.unwrap_or(carrier.map_or(Proto::Udp, |c| gateway_proto(c.gateway.transport)));
    let named = matches!(&host, GatewayHost::Name(n)
        if account.sip_targets.iter().any(|t| matches!(t, SipTarget::Host(h) if h == n)));
    let candidates = addresses(&host, port).await?;
    let allowed = |ip: IpAddr| {
        let ip = ip.to_canonical();
        carrier.is_some()
            || named
            || account
                .sip_targets
                .iter()
                .any(|t| matches!(t, SipTarget::Network(net) if net.contains(&ip)))
    };
    if !candidates.iter().any(|a| allowed(a.ip())) {
        tracing::warn!(account = %wire(ctx.account_id), uri = %wire(text),
            "SIP target refused: not a device, carrier or sip_targets entry of the account \
             (toll-fraud guard)");
        return Err(NotResolved::SipNotAllowed {
            uri: text.to_string(),
        });
    }
    let (remote, local) = first_reachable(ctx.local, proto, &candidates, allowed)?;
    let peer = Peer {
        proto,
        remote,
        local,
        conn: None,
    };
    let credentials = carrier.and_then(|c| c.username.clone().zip(c.password.clone()));
    let label = match carrier {
        Some(c) => format!("sip target {} (carrier {})", wire(text), wire(&c.id)),
        None => format!("sip target {}", wire(text)),
    };
    Ok(fork(peer, Vec::new(), credentials, label, None))
}

/// The unexpired bindings of the account's devices.
fn account_bindings(ctx: &ResolveContext<'_>) -> Vec<Registration> {
    let mut all = ctx.registrar.all_bindings();
    all.retain(|b| b.account_id == ctx.account_id);
    all
}

/// Whether a URI's host and port name a binding: its Contact's (port 5060 when left out),
/// or the address its REGISTER came from.
fn binding_matches(b: &Registration, host: &GatewayHost, port: u16) -> bool {
    let by_source = matches!(host, GatewayHost::Ip(ip)
        if ip.to_canonical() == b.source.ip().to_canonical() && port == b.source.port());
    let by_contact = parse_sip_uri(&b.contact).is_some_and(|c| {
        let contact_port = c.host_with_port.port.map_or(5060, |p| *p.value());
        let same_host = match (&c.host_with_port.host, host) {
            (rsip::Host::IpAddr(a), GatewayHost::Ip(b)) => a.to_canonical() == b.to_canonical(),
            (rsip::Host::Domain(a), GatewayHost::Name(b)) => a.to_string().eq_ignore_ascii_case(b),
            _ => false,
        };
        same_host && contact_port == port
    });
    by_source || by_contact
}

/// The addresses of a host: itself, or its A/AAAA records.
async fn addresses(host: &GatewayHost, port: u16) -> Result<Vec<SocketAddr>, NotResolved> {
    let name = match host {
        GatewayHost::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        GatewayHost::Name(name) => name,
    };
    let failed = || NotResolved::HostLookup(name.clone());
    match tokio::time::timeout(
        LOOKUP_TIMEOUT,
        tokio::net::lookup_host((name.as_str(), port)),
    )
    .await
    {
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(failed())
            } else {
                Ok(found)
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(host = %wire(name), error = %e, "host lookup failed");
            Err(failed())
        }
        Err(_) => {
            tracing::debug!(host = %wire(name), "host lookup timed out");
            Err(failed())
        }
    }
}

/// The first candidate that `usable` accepts and that we have a socket for, with that socket.
fn first_reachable(
    local: &LocalSockets,
    proto: Proto,
    candidates: &[SocketAddr],
    usable: impl Fn(IpAddr) -> bool,
) -> Result<(SocketAddr, SocketAddr), NotResolved> {
    candidates
        .iter()
        .filter(|a| usable(a.ip()))
        .find_map(|a| local.for_remote(proto, a.ip()).map(|l| (*a, l)))
        .ok_or_else(|| NotResolved::NoLocalSocket {
            proto,
            remote: candidates
                .first()
                .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
        })
}

/// Text as a SIP URI user part (RFC 3261 §25.1): unreserved characters and the
/// user-unreserved ones kept, anything else `%XX` (a `#`, an `@` in a number cannot change
/// where the request goes). `;` and `?` are escaped too, for parsers that split on them.
fn uri_user(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
