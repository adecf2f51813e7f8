//! The UAC side of an INVITE pivotd sends (the bridge's second leg): the INVITE itself
//! (RFC 3261 §8.1.1, §13.2.1), its CANCEL (§9.1), the retry with credentials after a 401/407
//! (§22.2) and the ACK of a 2xx (§13.2.2.4). The client transaction (retransmissions, the ACK
//! of a non-2xx, RFC 6026's Accepted state) is the endpoint's; this builds what it sends.

use std::fmt::Write;

use super::auth::answer::ReceivedChallenge;
use super::endpoint::OutgoingRequest;
use super::message::{self, addr_uri};
use super::outgoing::{finish, new_branch, random_token, RequestHead};
use super::transport::Peer;

/// What the INVITE says and where it goes.
#[derive(Clone, Debug)]
pub struct InviteSpec {
    /// The Request-URI (a registered Contact, or a carrier's URI for the number).
    pub request_uri: String,
    /// The To value: whom we call (no tag).
    pub to: String,
    /// The From value without its tag (the caller ID shown to the callee).
    pub from: String,
    /// `host:port` we put in Via and Contact.
    pub local_host: String,
    /// Where the INVITE goes (the binding's source address and transport for a phone behind
    /// NAT), and the TCP connection to reuse if any.
    pub peer: Peer,
    /// Route headers (a registration's Path, RFC 3327), in order.
    pub route: Vec<String>,
    /// Max-Forwards: the caller's, decremented, so a bridge back into pivotd cannot loop.
    pub max_forwards: u32,
    pub contact_user: String,
    /// The SDP offer.
    pub sdp: Option<String>,
}

/// An outbound INVITE and what follows from it.
#[derive(Clone, Debug)]
pub struct OutboundInvite {
    spec: InviteSpec,
    pub call_id: String,
    pub local_tag: String,
    cseq: u32,
    branch: String,
    /// Credentials already sent once: a second challenge means they are wrong.
    answered_challenge: bool,
}

/// Why a response cannot be answered with credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    #[error("no challenge we can answer")]
    NoChallenge,
    #[error("the credentials were refused")]
    Refused,
}

impl OutboundInvite {
    pub fn new(spec: InviteSpec) -> OutboundInvite {
        OutboundInvite {
            spec,
            call_id: format!("{}@pivotd", random_token(20)),
            local_tag: random_token(10),
            cseq: 1,
            branch: new_branch(),
            answered_challenge: false,
        }
    }

    /// What the INVITE says and where it goes.
    pub fn spec(&self) -> &InviteSpec {
        &self.spec
    }

    /// The INVITE as it stands (after a retry: the new CSeq, branch and credentials).
    pub fn request(&self) -> OutgoingRequest {
        self.invite_with(&[])
    }

    fn invite_with(&self, extra: &[(&str, &str)]) -> OutgoingRequest {
        let s = &self.spec;
        let mut out = self.head("INVITE", self.cseq);
        let _ = write!(
            out,
            "Contact: {}\r\nAllow: {}\r\nUser-Agent: pivotd\r\n",
            super::dialog::contact_value(
                &s.contact_user,
                &s.local_host,
                &s.peer,
                super::dialog::uri_is_sips(&s.request_uri),
            ),
            super::ALLOW
        );
        let body = s.sdp.as_deref().map(|b| ("application/sdp", b.as_bytes()));
        let bytes = finish(out, extra, body);
        self.outgoing(rsip::Method::Invite, self.branch.clone(), bytes)
    }

    /// Start line, Via, Max-Forwards, From, To, Call-ID, CSeq and Route, shared by INVITE
    /// and CANCEL (which must match the INVITE's, §9.1).
    fn head(&self, method: &str, cseq: u32) -> String {
        let s = &self.spec;
        let route: Vec<&str> = s.route.iter().map(String::as_str).collect();
        RequestHead {
            method,
            uri: &s.request_uri,
            proto: s.peer.proto,
            local_host: &s.local_host,
            branch: &self.branch,
            max_forwards: s.max_forwards,
            from: &s.from,
            local_tag: &self.local_tag,
            to: &s.to,
            call_id: &self.call_id,
            cseq,
            route: &route,
        }
        .write()
    }

    /// CANCEL of the INVITE (§9.1): the same Request-URI, top Via (branch), From, To,
    /// Call-ID, CSeq number and Route.
    pub fn cancel(&self) -> OutgoingRequest {
        let bytes = finish(self.head("CANCEL", self.cseq), &[], None);
        self.outgoing(rsip::Method::Cancel, self.branch.clone(), bytes)
    }

    /// The INVITE again after a 401/407 (§22.2): a new branch and CSeq, the credentials for
    /// the first challenge we support. A second challenge after credentials were sent (not
    /// stale) means they are wrong.
    pub fn retry_with_credentials(
        &mut self,
        resp: &rsip::Response,
        username: &str,
        password: &str,
    ) -> Result<OutgoingRequest, RetryError> {
        let (challenge_header, credentials_header) = match resp.status_code.code() {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return Err(RetryError::NoChallenge),
        };
        let challenge = ReceivedChallenge::first_supported(
            message::header_values(resp, challenge_header).map(str::as_bytes),
        )
        .ok_or(RetryError::NoChallenge)?;
        if self.answered_challenge && !challenge.stale {
            return Err(RetryError::Refused);
        }
        self.answered_challenge = true;
        self.cseq += 1;
        self.branch = new_branch();
        let credentials = challenge.answer(
            username,
            password,
            "INVITE",
            &self.spec.request_uri,
            1,
            &random_token(16),
        );
        Ok(self.invite_with(&[(credentials_header, &credentials)]))
    }

    /// The ACK of a 2xx (§13.2.2.4): a transaction of its own (new branch), to the 2xx's
    /// Contact, with the To tag, the INVITE's CSeq number and the route set of the 2xx's
    /// Record-Route in reverse. Sent as is (an ACK has no client transaction). `None` when
    /// the 2xx has no usable Contact.
    pub fn ack_for_2xx(&self, resp: &rsip::Response) -> Option<OutgoingRequest> {
        self.in_dialog(rsip::Method::Ack, self.cseq, resp, None)
    }

    /// A BYE in the dialog the 2xx formed (§15.1.1): the next CSeq, same target and route.
    pub fn bye_after_2xx(&self, resp: &rsip::Response) -> Option<OutgoingRequest> {
        self.in_dialog(rsip::Method::Bye, self.cseq + 1, resp, None)
    }

    /// The CSeq number of the INVITE as it stands (after a retry with credentials, its new
    /// one): the dialog's later requests count on from it.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// A request of our own in the dialog the 2xx formed, with CSeq `cseq`: a BYE, a
    /// re-INVITE carrying `sdp` (hold), or the ACK of a re-INVITE's 2xx (same `cseq`).
    pub fn dialog_request(
        &self,
        method: rsip::Method,
        cseq: u32,
        resp: &rsip::Response,
        sdp: Option<&str>,
    ) -> Option<OutgoingRequest> {
        self.in_dialog(method, cseq, resp, sdp)
    }

    /// A request in the dialog of `resp` (a 2xx to our INVITE) as the UAC (§12.1.2: the
    /// remote target is its Contact, the route set its Record-Route reversed).
    fn in_dialog(
        &self,
        method: rsip::Method,
        cseq: u32,
        resp: &rsip::Response,
        sdp: Option<&str>,
    ) -> Option<OutgoingRequest> {
        let s = &self.spec;
        let target = addr_uri(message::header_str(resp, "Contact")?)?;
        let to = message::header_str(resp, "To")?;
        let branch = new_branch();
        let mut route: Vec<&str> = message::header_values(resp, "Record-Route").collect();
        route.reverse();
        let out = RequestHead {
            method: message::method_name(method),
            uri: target,
            proto: s.peer.proto,
            local_host: &s.local_host,
            branch: &branch,
            max_forwards: 70,
            from: &s.from,
            local_tag: &self.local_tag,
            to,
            call_id: &self.call_id,
            cseq,
            route: &route,
        }
        .write();
        let is_invite = method == rsip::Method::Invite;
        let contact;
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if is_invite {
            // A re-INVITE names our Contact again (§12.2.1.1, a target refresh).
            contact = super::dialog::contact_value(
                &s.contact_user,
                &s.local_host,
                &s.peer,
                super::dialog::uri_is_sips(&s.request_uri),
            );
            extra.push(("Contact", contact.as_str()));
        }
        let body = sdp.map(|b| ("application/sdp", b.as_bytes()));
        let bytes = finish(out, &extra, body);
        Some(self.outgoing(method, branch, bytes))
    }

    fn outgoing(
        &self,
        method: rsip::Method,
        branch: String,
        bytes: bytes::Bytes,
    ) -> OutgoingRequest {
        OutgoingRequest::new(method, branch, bytes, &self.spec.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::digest::{Algorithm, Challenge, Credentials};
    use crate::sip::transport::Proto;

    fn spec() -> InviteSpec {
        InviteSpec {
            request_uri: "sip:2001@192.0.2.10:40000".into(),
            to: "<sip:2001@pbx.test>".into(),
            from: "\"Alice\" <sip:1000@pbx.test>".into(),
            local_host: "127.0.0.1:5060".into(),
            peer: Peer {
                proto: Proto::Udp,
                remote: "192.0.2.10:40000".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                conn: None,
            },
            route: vec!["<sip:edge.pbx.test;lr>".into()],
            max_forwards: 69,
            contact_user: "b2b".into(),
            sdp: Some("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\n".into()),
        }
    }

    fn parsed(r: &OutgoingRequest) -> rsip::Request {
        match message::parse(&r.bytes) {
            Ok(rsip::SipMessage::Request(req)) => req,
            other => panic!("{other:?}\n{}", String::from_utf8_lossy(&r.bytes)),
        }
    }

    fn h(req: &rsip::Request, name: &str) -> String {
        message::header_value(req, name).unwrap_or_default()
    }

    #[test]
    fn the_invite_and_its_cancel_match_as_section_9_1_says() {
        let inv = OutboundInvite::new(spec());
        let r = inv.request();
        assert_eq!(r.to, "192.0.2.10:40000".parse().unwrap());
        assert!(r.request.is_some(), "kept for the non-2xx ACK");
        let invite = parsed(&r);
        assert_eq!(invite.uri.to_string(), "sip:2001@192.0.2.10:40000");
        assert_eq!(h(&invite, "Max-Forwards"), "69");
        assert_eq!(h(&invite, "CSeq"), "1 INVITE");
        assert_eq!(h(&invite, "Route"), "<sip:edge.pbx.test;lr>");
        assert_eq!(h(&invite, "Content-Type"), "application/sdp");
        assert!(h(&invite, "From").ends_with(&format!("tag={}", inv.local_tag)));
        let cancel = parsed(&inv.cancel());
        assert_eq!(inv.cancel().branch, r.branch);
        for name in ["Via", "From", "To", "Call-ID", "Route"] {
            assert_eq!(h(&cancel, name), h(&invite, name), "{name}");
        }
        assert_eq!(h(&cancel, "CSeq"), "1 CANCEL");
        assert_eq!(cancel.uri, invite.uri);
    }

    fn response(raw: &str) -> rsip::Response {
        match message::parse(raw.as_bytes()) {
            Ok(rsip::SipMessage::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn challenge_response(code: u16, header: &str, nonce: &str, stale: bool) -> rsip::Response {
        let c = Challenge {
            realm: "carrier.test",
            nonce,
            algorithm: Algorithm::Md5,
            stale,
        };
        response(&format!(
            "SIP/2.0 {code} Auth\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
             From: <sip:1000@pbx.test>;tag=a\r\nTo: <sip:2001@pbx.test>;tag=b\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{header}: {c}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn a_407_is_answered_once_with_proxy_authorization_then_refused() {
        let mut inv = OutboundInvite::new(spec());
        let first = inv.request();
        let resp = challenge_response(407, "Proxy-Authenticate", "n1", false);
        let again = inv.retry_with_credentials(&resp, "trunk", "pw").unwrap();
        assert_ne!(again.branch, first.branch, "a new transaction");
        let req = parsed(&again);
        assert_eq!(h(&req, "CSeq"), "2 INVITE");
        let creds = Credentials::parse(h(&req, "Proxy-Authorization").as_bytes()).unwrap();
        assert!(creds.verify(&Algorithm::Md5.ha1("trunk", "carrier.test", "pw"), "INVITE"));
        assert_eq!(creds.uri, "sip:2001@192.0.2.10:40000");
        // The same challenge again: the credentials were wrong; a stale one is answered.
        assert_eq!(
            inv.retry_with_credentials(&resp, "trunk", "pw")
                .unwrap_err(),
            RetryError::Refused
        );
        let stale = challenge_response(407, "Proxy-Authenticate", "n2", true);
        let r = parsed(&inv.retry_with_credentials(&stale, "trunk", "pw").unwrap());
        assert_eq!(h(&r, "CSeq"), "3 INVITE");
        let www = challenge_response(401, "WWW-Authenticate", "n3", true);
        let r = parsed(&inv.retry_with_credentials(&www, "trunk", "pw").unwrap());
        assert!(!h(&r, "Authorization").is_empty());
        let busy = response(
            "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
             From: <sip:1000@pbx.test>;tag=a\r\nTo: <sip:2001@pbx.test>;tag=b\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            inv.retry_with_credentials(&busy, "trunk", "pw")
                .unwrap_err(),
            RetryError::NoChallenge
        );
    }

    #[test]
    fn the_ack_of_a_2xx_goes_to_its_contact_with_the_reversed_record_route() {
        let inv = OutboundInvite::new(spec());
        let ok = response(&format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
             Record-Route: <sip:p2.test;lr>\r\nRecord-Route: <sip:p1.test;lr>\r\n\
             From: <sip:1000@pbx.test>;tag={}\r\nTo: <sip:2001@pbx.test>;tag=callee\r\n\
             Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:2001@192.0.2.10:40000;ob>\r\n\
             Content-Length: 0\r\n\r\n",
            inv.local_tag, inv.call_id
        ));
        let ack = inv.ack_for_2xx(&ok).unwrap();
        assert_ne!(
            ack.branch,
            inv.request().branch,
            "the 2xx ACK is a transaction of its own"
        );
        let req = parsed(&ack);
        assert_eq!(req.uri.to_string(), "sip:2001@192.0.2.10:40000;ob");
        assert_eq!(h(&req, "CSeq"), "1 ACK");
        assert!(h(&req, "To").ends_with("tag=callee"));
        let routes: Vec<&str> = message::header_values(&req, "Route").collect();
        assert_eq!(routes, ["<sip:p1.test;lr>", "<sip:p2.test;lr>"]);
        let bye = parsed(&inv.bye_after_2xx(&ok).unwrap());
        assert_eq!(h(&bye, "CSeq"), "2 BYE");
        assert_eq!(bye.uri, req.uri);
        assert_eq!(h(&bye, "To"), h(&req, "To"));
    }
}
