//! The answer to a REGISTER (RFC 3261 §10.3): which code, which headers. "Which code for this
//! REGISTER?" is decided here and nowhere else.

use std::borrow::Cow;
use std::net::SocketAddr;

use super::auth::{Scheme, Verdict};
use super::bindings::{BindingError, DeviceKey, Update};
use super::Registrar;
use crate::logsafe::wire;
use crate::sip::message::{self, contacts};
use crate::sip::transport::Peer;
use crate::store::{DeviceBindings, Registration, Write};

/// A response to send: code, reason phrase when not the usual one, extra headers.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub reason: Option<Cow<'static, str>>,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn new(code: u16) -> Answer {
        Answer {
            code,
            reason: None,
            headers: Vec::new(),
        }
    }
    fn reason(mut self, r: impl Into<Cow<'static, str>>) -> Answer {
        self.reason = Some(r.into());
        self
    }
}

impl Registrar {
    /// Authenticates a REGISTER and applies it to the device's bindings. `caller`: who sent
    /// it (behind a trusted proxy, the hop before it), named in the authentication log; the
    /// binding is reached through `peer`, where it came from.
    pub fn register(&self, req: &rsip::Request, peer: &Peer, caller: SocketAddr) -> Answer {
        let Some((to_user, to_host)) = message::header_aor(req, "To") else {
            // RFC 4475 §3.3.4: an address-of-record in a scheme other than sip/sips is 416.
            let foreign = message::header_str(req, "To")
                .and_then(message::addr_uri)
                .and_then(|u| u.split_once(':'))
                .is_some_and(|(scheme, _)| !message::is_sip_scheme(scheme.as_bytes()));
            return if foreign {
                let why = message::Unsupported::Scheme;
                Answer::new(why.code()).reason(why.reason())
            } else {
                Answer::new(400).reason("Bad To")
            };
        };
        let cfg = self.cfg.get();
        let Some(account) = cfg.account_for_realm(&to_host) else {
            return Answer::new(404).reason("Domain Not Served");
        };
        let device = match self.auth.check(req, Scheme::Www, &account.realm, caller) {
            Verdict::Authenticated(d) => d,
            Verdict::Challenge { stale } => {
                let mut a = Answer::new(401);
                for c in self.auth.challenges(req, &account.realm, stale) {
                    a.headers.push((Scheme::Www.challenge_header(), c));
                }
                return a;
            }
            Verdict::Refused(_) => return Answer::new(403),
        };
        // The credentials are the device's; the AOR must be its own (§10.3 step 4).
        if device.username != to_user {
            tracing::warn!(
                target: "pivotd::auth",
                "authentication failed source={} port={} method=REGISTER realm=\"{}\" user=\"{}\" reason=\"registers another AOR ({})\"",
                caller.ip(),
                caller.port(),
                wire(&account.realm),
                wire(&device.username),
                wire(&to_user)
            );
            return Answer::new(403).reason("Not Your AOR");
        }
        let list = match contacts(req) {
            Ok(l) => l,
            Err(e) => return Answer::new(400).reason(e.to_string()),
        };
        let (Some(call_id), Some((cseq, _))) = (message::call_id(req), message::cseq(req)) else {
            return Answer::new(400);
        };
        let now = super::auth::unix_now();
        let template = Registration {
            account_id: device.account_id.clone(),
            device_id: device.device_id.clone(),
            contact: String::new(),
            expires_at: 0,
            call_id: String::new(),
            cseq: 0,
            path: list_values(req, "Path"),
            source: peer.remote,
            local: peer.local,
            transport: peer.proto.via_token().to_string(),
            user_agent: message::header_value(req, "User-Agent"),
            instance: None,
            q: None,
            updated: now,
        };
        let key = DeviceKey {
            account_id: device.account_id.clone(),
            device_id: device.device_id.clone(),
        };
        let expires = message::header_str(req, "Expires").and_then(|v| v.trim().parse().ok());
        let is_query = matches!(&list, message::Contacts::List(l) if l.is_empty());
        let result = {
            let mut b = self.lock_bindings();
            if is_query {
                // RFC 3261 §10.2.3: no Contact asks for the current bindings.
                Ok(b.current(&key, now))
            } else {
                b.apply(
                    &key,
                    &Update {
                        contacts: &list,
                        expires,
                        call_id: &call_id,
                        cseq,
                        template: &template,
                        now,
                    },
                    self.rules,
                )
            }
        };
        match result {
            Ok(bindings) => {
                if !is_query {
                    self.persist(&key, &bindings);
                }
                self.ok_answer(req, &bindings, now)
            }
            Err(BindingError::IntervalTooBrief { min }) => {
                let mut a = Answer::new(423);
                a.headers.push(("Min-Expires", min.to_string()));
                a
            }
            Err(e @ (BindingError::StarNeedsZero | BindingError::OutOfOrder)) => {
                Answer::new(400).reason(e.to_string())
            }
        }
    }

    fn persist(&self, key: &DeviceKey, bindings: &[Registration]) {
        if let Some(store) = &self.store {
            store.write(Write::Registrations(DeviceBindings {
                account_id: key.account_id.clone(),
                device_id: key.device_id.clone(),
                bindings: bindings.to_vec(),
            }));
        }
    }

    /// 200 listing every binding with its remaining time (§10.3 step 8).
    fn ok_answer(&self, req: &rsip::Request, bindings: &[Registration], now: u64) -> Answer {
        let mut a = Answer::new(200);
        for b in bindings {
            a.headers.push((
                "Contact",
                format!(
                    "<{}>;expires={}",
                    b.contact,
                    b.expires_at.saturating_sub(now)
                ),
            ));
        }
        // RFC 3327 §5.3: the Path stored is echoed when the phone supports it.
        if supports(req, "path") {
            for p in list_values(req, "Path") {
                a.headers.push(("Path", p));
            }
        }
        a.headers.push((
            "Date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        ));
        a
    }
}

/// Every value of a header that may repeat or hold a comma-separated list.
fn list_values(req: &rsip::Request, name: &str) -> Vec<String> {
    message::header_values(req, name)
        .flat_map(|v| crate::sip::normalize::split_top_level_commas(v.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Whether Supported lists `tag` (the normaliser has expanded its compact form `k`).
fn supports(req: &rsip::Request, tag: &str) -> bool {
    list_values(req, "Supported")
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tag))
}
