//! The UAS side of a dialog (RFC 3261 §12): its identity, CSeq spaces, route set and remote
//! target, and the requests pivotd sends inside it (BYE, NOTIFY). A dialog is created by
//! answering an INVITE (a call) or a SUBSCRIBE (a presence subscription: RFC 6665 dialogs
//! follow the same §12.1.1 rules), and can be written down ([`DialogSnapshot`]) to outlive a
//! restart.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use rsip::headers::UntypedHeader;

use super::endpoint::{DialogId, OutgoingRequest};
use super::message::method_name;
use super::outgoing::{finish, new_branch, RequestHead};
use super::transport::{Peer, Proto};

/// Why a dialog could not be formed from a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("bad {0} header")]
    Bad(&'static str),
}

/// A dialog created by answering an INVITE or a SUBSCRIBE.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    /// Our party: the INVITE's To value (without tag; ours is added when written).
    local_uri: String,
    /// The caller: the INVITE's From value, with its tag.
    remote_uri: String,
    /// The caller's Contact URI: the Request-URI of what we send in the dialog.
    remote_target: String,
    /// Record-Route values of the INVITE, in order (§12.1.1).
    pub route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: u32,
    /// Where the caller's requests come from: ours go back there (symmetric signalling, which
    /// also works for callers behind NAT).
    pub peer: Peer,
    /// The address we put in Via and Contact.
    pub local_host: String,
    /// The INVITE's Request-URI was `sips:`: our Contact must be one too (RFC 3261 §12.1.1).
    sips: bool,
}

fn strip_angle(uri: &str) -> &str {
    let s = uri.trim();
    match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s.split(';').next().unwrap_or(s).trim(),
    }
}

impl Dialog {
    /// Builds the dialog state from the INVITE or SUBSCRIBE we answer (§12.1.1).
    pub fn from_request(
        req: &rsip::Request,
        call_id: &str,
        local_tag: &str,
        peer: Peer,
        local_host: String,
    ) -> Result<Dialog, DialogError> {
        let mut from = None;
        let mut to = None;
        let mut contact = None;
        let mut cseq = None;
        let mut route_set = Vec::new();
        for h in req.headers.iter() {
            match h {
                rsip::Header::From(v) => from = Some(v.value().to_string()),
                rsip::Header::To(v) => to = Some(v.value().to_string()),
                rsip::Header::Contact(v) if contact.is_none() => {
                    contact = Some(strip_angle(v.value()).to_string())
                }
                rsip::Header::CSeq(v) => {
                    cseq = v
                        .value()
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                }
                rsip::Header::RecordRoute(v) => route_set.push(v.value().to_string()),
                _ => {}
            }
        }
        let from = from.ok_or(DialogError::Missing("From"))?;
        let to = to.ok_or(DialogError::Missing("To"))?;
        if call_id.is_empty() {
            return Err(DialogError::Missing("Call-ID"));
        }
        let remote_cseq: u32 = cseq.ok_or(DialogError::Bad("CSeq"))?;
        // No Contact (broken client): fall back to the From URI, which is where it can be found.
        let remote_target = contact.unwrap_or_else(|| strip_angle(&from).to_string());
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
            },
            local_uri: to,
            remote_uri: from,
            remote_target,
            route_set,
            local_cseq: rand::random::<u16>() as u32 + 1,
            remote_cseq,
            peer,
            local_host,
            sips: is_sips(&req.uri),
        })
    }

    /// Checks an in-dialog request's CSeq (§12.2.2): lower than the last one is out of order
    /// (answered 500); equal is the INVITE's own ACK or a retransmission.
    pub fn accept_remote_cseq(&mut self, cseq: u32, method: &rsip::Method) -> bool {
        if *method == rsip::Method::Ack || *method == rsip::Method::Cancel {
            return true;
        }
        if cseq <= self.remote_cseq {
            return false;
        }
        self.remote_cseq = cseq;
        true
    }

    /// A target refresh (§12.2): the Contact of a re-INVITE or a SUBSCRIBE, or of the 2xx to
    /// ours (§12.2.1.2), replaces the remote target.
    pub fn refresh_target(&mut self, headers: &rsip::Headers) {
        if let Some(t) = contact_of(headers) {
            self.remote_target = t;
        }
    }

    /// The URI of a request's first Contact: the remote target it asks for.
    pub fn contact_target(req: &rsip::Request) -> Option<String> {
        contact_of(&req.headers)
    }

    /// Where requests in the dialog go (the Request-URI).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// Our Contact header value.
    pub fn contact(&self, user: &str) -> String {
        contact_value(user, &self.local_host, &self.peer, self.sips)
    }

    /// A request inside the dialog (§12.2.1.1) with the next CSeq: BYE, INFO, re-INVITE.
    pub fn request(
        &mut self,
        method: rsip::Method,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> OutgoingRequest {
        self.local_cseq += 1;
        self.request_at(method, self.local_cseq, extra, body)
    }

    /// The CSeq number of our last request in the dialog.
    pub fn local_cseq(&self) -> u32 {
        self.local_cseq
    }

    /// A request inside the dialog with CSeq `cseq`: the ACK of a 2xx to our re-INVITE
    /// carries that INVITE's number (§13.2.2.4).
    pub fn request_at(
        &self,
        method: rsip::Method,
        cseq: u32,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> OutgoingRequest {
        let branch = new_branch();
        let route: Vec<&str> = self.route_set.iter().map(String::as_str).collect();
        // The UAS keeps the Record-Route order of the request (§12.1.1): the nearest hop first.
        let mut out = RequestHead {
            method: method_name(method),
            uri: &self.remote_target,
            proto: self.peer.proto,
            local_host: &self.local_host,
            branch: &branch,
            max_forwards: 70,
            from: &self.local_uri,
            local_tag: &self.id.local_tag,
            to: &self.remote_uri,
            call_id: &self.id.call_id,
            cseq,
            route: &route,
        }
        .write();
        let _ = write!(out, "User-Agent: pivotd\r\n");
        let bytes = finish(out, extra, body);
        OutgoingRequest::new(method, branch, bytes, &self.peer)
    }
}

/// What a dialog needs to go on in another process (a stored subscription): everything but
/// the TCP connection and our own address, which are the new process's
/// ([`Dialog::restore`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DialogSnapshot {
    pub call_id: String,
    pub local_tag: String,
    pub local_uri: String,
    pub remote_uri: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// `UDP`, `TCP` or `TLS` (a Via transport token).
    pub transport: String,
    /// Where the peer's requests came from: ours go there.
    pub remote: SocketAddr,
}

impl Dialog {
    /// The dialog written down.
    pub fn snapshot(&self) -> DialogSnapshot {
        DialogSnapshot {
            call_id: self.id.call_id.clone(),
            local_tag: self.id.local_tag.clone(),
            local_uri: self.local_uri.clone(),
            remote_uri: self.remote_uri.clone(),
            remote_target: self.remote_target.clone(),
            route_set: self.route_set.clone(),
            local_cseq: self.local_cseq,
            remote_cseq: self.remote_cseq,
            transport: self.peer.proto.via_token().to_string(),
            remote: self.peer.remote,
        }
    }

    /// A dialog written down by [`Dialog::snapshot`], going on from our socket `local`
    /// (advertised as `local_host`). Our CSeq jumps by `cseq_margin`: requests sent after the
    /// snapshot was last written must not be outnumbered by the next one (§12.2.1.1 wants it
    /// higher than every earlier one; gaps are allowed). `None` for an unknown transport.
    pub fn restore(
        s: DialogSnapshot,
        local: SocketAddr,
        local_host: String,
        cseq_margin: u32,
    ) -> Option<Dialog> {
        let proto = Proto::from_via_token(&s.transport)?;
        let sips = uri_is_sips(&s.remote_target);
        Some(Dialog {
            id: DialogId {
                call_id: s.call_id,
                local_tag: s.local_tag,
            },
            local_uri: s.local_uri,
            remote_uri: s.remote_uri,
            remote_target: s.remote_target,
            route_set: s.route_set,
            local_cseq: s.local_cseq.saturating_add(cseq_margin),
            remote_cseq: s.remote_cseq,
            peer: Peer {
                proto,
                remote: s.remote,
                local,
                conn: None,
            },
            local_host,
            sips,
        })
    }
}

/// Whether a parsed URI is `sips:`.
pub fn is_sips(uri: &rsip::Uri) -> bool {
    matches!(uri.scheme, Some(rsip::Scheme::Sips))
}

/// Whether a URI's text is `sips:` (any case).
pub fn uri_is_sips(uri: &str) -> bool {
    uri.trim_start_matches('<')
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
}

/// A Contact value naming us on the transport a peer uses. Over TLS it is `sips:` when the
/// dialog's Request-URI is (`sips`, RFC 3261 §8.1.1.8, §12.1.1), else `;transport=tls`.
pub fn contact_value(user: &str, local_host: &str, peer: &Peer, sips: bool) -> String {
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(*c))
        .collect();
    let at = if user.is_empty() { "" } else { "@" };
    match peer.proto {
        Proto::Udp => format!("<sip:{user}{at}{local_host}>"),
        Proto::Tcp => format!("<sip:{user}{at}{local_host};transport=tcp>"),
        Proto::Tls if sips => format!("<sips:{user}{at}{local_host}>"),
        Proto::Tls => format!("<sip:{user}{at}{local_host};transport=tls>"),
    }
}

/// `host:port` for Via/Contact: the advertised address if set, else the socket's.
pub fn host_port(advertise: Option<IpAddr>, local: SocketAddr) -> String {
    let ip = advertise.unwrap_or(local.ip());
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{}", local.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", local.port()),
    }
}

/// The first Contact's URI, without its angle brackets.
fn contact_of(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Contact(v) => Some(strip_angle(v.value()).to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transport::Proto;

    fn invite() -> rsip::Request {
        let raw = "INVITE sip:5000@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc\r\n\
Record-Route: <sip:p1.test;lr>\r\n\
Record-Route: <sip:p2.test;lr>\r\n\
From: \"Alice\" <sip:alice@a.test>;tag=ft\r\n\
To: <sip:5000@pbx.test>\r\n\
Call-ID: c1@a.test\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
Content-Length: 0\r\n\r\n";
        rsip::Request::try_from(raw.as_bytes()).unwrap()
    }

    fn peer() -> Peer {
        Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        }
    }

    #[test]
    fn bye_is_built_from_the_dialog() {
        let mut d = Dialog::from_request(
            &invite(),
            "c1@a.test",
            "lt",
            peer(),
            "127.0.0.1:5060".into(),
        )
        .unwrap();
        let r = d.request(rsip::Method::Bye, &[], None);
        let text = String::from_utf8(r.bytes.to_vec()).unwrap();
        assert!(
            text.starts_with("BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("From: <sip:5000@pbx.test>;tag=lt\r\n"));
        assert!(text.contains("To: \"Alice\" <sip:alice@a.test>;tag=ft\r\n"));
        assert!(text.contains("Call-ID: c1@a.test\r\n"));
        assert!(text.contains("Route: <sip:p1.test;lr>\r\nRoute: <sip:p2.test;lr>\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let parsed = rsip::Request::try_from(r.bytes.as_ref()).unwrap();
        assert_eq!(parsed.method, rsip::Method::Bye);
        assert_eq!(r.to, peer().remote);
        // CSeq increases
        let r2 = d.request(rsip::Method::Bye, &[], None);
        let t2 = String::from_utf8(r2.bytes.to_vec()).unwrap();
        assert_ne!(
            text.lines().find(|l| l.starts_with("CSeq")),
            t2.lines().find(|l| l.starts_with("CSeq"))
        );
    }

    #[test]
    fn a_snapshot_restores_the_dialog_from_a_new_socket_with_a_higher_cseq() {
        let mut d = Dialog::from_request(
            &invite(),
            "c1@a.test",
            "lt",
            peer(),
            "127.0.0.1:5060".into(),
        )
        .unwrap();
        let before = d.request(rsip::Method::Notify, &[], None);
        let snap = d.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        let back: DialogSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        let local: SocketAddr = "127.0.0.1:5099".parse().unwrap();
        let mut r = Dialog::restore(back, local, "127.0.0.1:5099".into(), 100).unwrap();
        assert_eq!(r.id, d.id);
        assert_eq!(r.peer.remote, peer().remote);
        assert_eq!(r.peer.local, local);
        assert_eq!(r.peer.conn, None);
        let after = r.request(rsip::Method::Notify, &[], None);
        let cseq = |o: &OutgoingRequest| {
            let m = crate::sip::message::parse(&o.bytes).unwrap();
            crate::sip::message::cseq(&m).unwrap().0
        };
        assert_eq!(cseq(&after), cseq(&before) + 101);
        let text = String::from_utf8(after.bytes.to_vec()).unwrap();
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5099;"), "{text}");
        assert!(text.contains("Route: <sip:p1.test;lr>\r\n"), "{text}");
        let mut odd = d.snapshot();
        odd.transport = "SCTP".into();
        assert!(Dialog::restore(odd, local, String::new(), 0).is_none());
    }

    #[test]
    fn remote_cseq_must_increase() {
        let mut d = Dialog::from_request(&invite(), "c1@a.test", "lt", peer(), "h".into()).unwrap();
        assert!(!d.accept_remote_cseq(7, &rsip::Method::Bye));
        assert!(d.accept_remote_cseq(8, &rsip::Method::Bye));
        assert!(!d.accept_remote_cseq(8, &rsip::Method::Invite));
        assert!(d.accept_remote_cseq(7, &rsip::Method::Ack));
    }
}
