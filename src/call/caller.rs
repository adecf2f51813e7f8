//! Who places a new call: a carrier known by its source address, a device that proved its
//! credentials (RFC 3261 §22.3, 407 challenge), or — only while the operator allows it — an
//! unauthenticated caller. The answer decides the account the call is routed in.

use std::net::SocketAddr;
use std::sync::Arc;

use super::admission::Refusal;
use crate::config::{Account, Config};
use crate::flow::CallInfo;
use crate::registrar::auth::{Authenticator, Scheme, Verdict};
use crate::registrar::directory::DeviceEntry;
use crate::sip::message;

/// The caller of a new INVITE.
#[derive(Clone, Debug)]
pub enum Caller {
    /// From a carrier's `inbound_cidrs`: routed in that carrier's account.
    Carrier { account_id: String },
    /// A device that authenticated: routed in its account, its caller ID shown.
    Device(Arc<DeviceEntry>),
    /// Not authenticated (allowed by `allow_unauthenticated`): routed by the Request-URI.
    Anonymous,
}

impl Caller {
    /// The account the call is routed in; `None`: by the Request-URI host.
    pub fn account<'c>(&self, cfg: &'c Config) -> Option<&'c Account> {
        match self {
            Caller::Carrier { account_id } => cfg.account(account_id),
            Caller::Device(d) => cfg.account(&d.account_id),
            Caller::Anonymous => None,
        }
    }

    /// What the authenticated device adds to the call facts: its owner as User-ID, its
    /// internal caller ID over the From header's (Kazoo's precedence).
    pub fn fill(&self, info: &mut CallInfo) {
        if let Caller::Device(d) = self {
            info.user_id.clone_from(&d.owner_id);
            info.device_id = Some(d.device_id.clone());
            let c = &d.caller_id.internal;
            if let Some(n) = &c.number {
                info.caller_id_number = Some(n.clone());
            }
            if let Some(n) = &c.name {
                info.caller_id_name = Some(n.clone());
            }
        }
    }
}

/// Decides who calls, or refuses: 407 with a challenge, 403 for refused credentials or an
/// unauthenticated caller that is not served.
pub fn identify(
    cfg: &Config,
    auth: &Authenticator,
    req: &rsip::Request,
    source: SocketAddr,
) -> Result<Caller, Refusal> {
    let ip = source.ip().to_canonical();
    if let Some(a) = cfg.accounts.iter().find(|a| {
        a.resources
            .iter()
            .any(|r| r.inbound_cidrs.iter().any(|n| n.contains(&ip)))
    }) {
        return Ok(Caller::Carrier {
            account_id: a.id.clone(),
        });
    }
    let allow_anonymous = cfg
        .sip
        .auth
        .allow_unauthenticated
        .unwrap_or_else(|| auth.directory().is_empty());
    let from = message::header_aor(req, "From");
    let account = challenge_account(cfg, req, from.as_ref());
    let Some(account) = account else {
        return if allow_anonymous {
            Ok(Caller::Anonymous)
        } else {
            Err(Refusal::Unauthenticated)
        };
    };
    let has_credentials = message::header_str(req, "Proxy-Authorization").is_some();
    // While anonymous callers are served, only a known device is asked to prove itself (so
    // its calls carry its identity); a stranger is let through as before.
    let known_device = from
        .as_ref()
        .is_some_and(|(user, _)| auth.directory().find(&account.realm, user).is_some());
    if allow_anonymous && !has_credentials && !known_device {
        return Ok(Caller::Anonymous);
    }
    check(auth, req, account, source).map(Caller::Device)
}

/// The device whose credentials a request carries, for what only devices may do (SUBSCRIBE):
/// challenged (407) and checked as an INVITE's, never anonymous, never a carrier's.
pub fn device(
    cfg: &Config,
    auth: &Authenticator,
    req: &rsip::Request,
    source: SocketAddr,
) -> Result<Arc<DeviceEntry>, Refusal> {
    let from = message::header_aor(req, "From");
    let account = challenge_account(cfg, req, from.as_ref()).ok_or(Refusal::Unauthenticated)?;
    check(auth, req, account, source)
}

/// The account whose realm credentials are asked in: the caller's own domain (From), else
/// the one the Request-URI names.
fn challenge_account<'c>(
    cfg: &'c Config,
    req: &rsip::Request,
    from: Option<&(String, String)>,
) -> Option<&'c Account> {
    from.and_then(|(_, host)| {
        cfg.accounts
            .iter()
            .find(|a| a.realm.eq_ignore_ascii_case(host))
    })
    .or_else(|| cfg.account_for_realm(&req.uri.host_with_port.host.to_string()))
}

/// The verdict on a request's Proxy-Authorization in `account`'s realm (RFC 3261 §22.3).
fn check(
    auth: &Authenticator,
    req: &rsip::Request,
    account: &Account,
    source: SocketAddr,
) -> Result<Arc<DeviceEntry>, Refusal> {
    match auth.check(req, Scheme::Proxy, &account.realm, source) {
        Verdict::Authenticated(d) => Ok(d),
        Verdict::Challenge { stale } => Err(Refusal::AuthRequired(auth.challenges(
            req,
            &account.realm,
            stale,
        ))),
        Verdict::Refused(_) => Err(Refusal::AuthFailed),
    }
}
