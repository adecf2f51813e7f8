//! The keys that match a message to its transaction (RFC 3261 §17.1.3, §17.2.3), compared and
//! hashed field by field.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::sip::message;

/// A request method as part of a key (rsip 0.4's `Method` is not `Hash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyMethod(pub(super) rsip::Method);

impl Hash for KeyMethod {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(&self.0).hash(state);
    }
}

/// What identifies a server transaction (RFC 3261 §17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum ServerKey {
    /// The top Via's branch, which starts with the magic cookie `z9hG4bK`, its sent-by
    /// (lower case) and the method.
    Branch {
        branch: String,
        sent_by: String,
        method: KeyMethod,
    },
    /// An RFC 2543 client (no magic cookie): the request's identifying fields instead,
    /// with the sent-by as written.
    Rfc2543 {
        call_id: String,
        cseq: u32,
        from_tag: String,
        sent_by: String,
        method: KeyMethod,
    },
}

/// Shared: the key is held by the table, the transaction's handle and its timers.
pub(super) type ServerKeyRef = Arc<ServerKey>;

impl ServerKey {
    /// The key of the transaction `req` belongs to, `call_id` being its Call-ID. An ACK is
    /// looked for under its INVITE's key: the ACK of a non-2xx is part of that transaction
    /// (§17.2.1). None without a usable top Via (or, for RFC 2543, Call-ID and CSeq).
    pub(super) fn of_request(req: &rsip::Request, call_id: &str) -> Option<ServerKey> {
        let via = message::top_via(req)?;
        let method = KeyMethod(match req.method {
            rsip::Method::Ack => rsip::Method::Invite,
            m => m,
        });
        match via.branch {
            Some(branch) if branch.starts_with("z9hG4bK") => {
                let mut sent_by = via.sent_by;
                sent_by.make_ascii_lowercase();
                Some(ServerKey::Branch {
                    branch,
                    sent_by,
                    method,
                })
            }
            _ => {
                if call_id.is_empty() {
                    return None;
                }
                let (cseq, _) = message::cseq(req)?;
                Some(ServerKey::Rfc2543 {
                    call_id: call_id.to_string(),
                    cseq,
                    from_tag: message::from_tag(req).unwrap_or_default(),
                    sent_by: via.sent_by,
                    method,
                })
            }
        }
    }

    /// The same transaction identity with another method: a CANCEL looks for the INVITE it
    /// cancels under the INVITE's key (§9.2).
    pub(super) fn with_method(&self, m: rsip::Method) -> ServerKey {
        let mut key = self.clone();
        match &mut key {
            ServerKey::Branch { method, .. } | ServerKey::Rfc2543 { method, .. } => {
                *method = KeyMethod(m)
            }
        }
        key
    }
}

/// What identifies a client transaction (RFC 3261 §17.1.3): the branch pivotd put in the top
/// Via, and the CSeq method (a CANCEL shares its INVITE's branch).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    pub(super) branch: String,
    pub(super) method: KeyMethod,
}

/// Shared: the key is held by the table and the transaction's timers.
pub(super) type ClientKeyRef = Arc<ClientKey>;

impl ClientKey {
    /// The key of the transaction a response answers: None without a branch or a known CSeq
    /// method.
    pub(super) fn of_response(resp: &rsip::Response) -> Option<ClientKey> {
        let branch = message::top_via(resp)?.branch?;
        let (_, method) = message::cseq(resp)?;
        Some(ClientKey {
            branch,
            method: KeyMethod(method),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, via: &str, extra: &str) -> rsip::Request {
        let raw = format!(
            "{method} sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP {via}\r\nFrom: <sip:a@b>;tag=f1\r\n\
             To: <sip:c@d>{extra}\r\nCall-ID: k1\r\nCSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match message::parse(raw.as_bytes()) {
            Ok(rsip::SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ack_and_cancel_find_the_invite() {
        let invite = request("INVITE", "Host.Example:5060;branch=z9hG4bKa", "");
        let key = ServerKey::of_request(&invite, "k1").expect("key");
        // sent-by compares case-insensitively (§17.2.3 compares hosts as §19.1.4 does).
        let ack = request("ACK", "host.example:5060;branch=z9hG4bKa", ";tag=t");
        assert_eq!(ServerKey::of_request(&ack, "k1"), Some(key.clone()));
        let cancel = request("CANCEL", "host.example:5060;branch=z9hG4bKa", "");
        let cancel_key = ServerKey::of_request(&cancel, "k1").expect("key");
        assert_ne!(cancel_key, key);
        assert_eq!(cancel_key.with_method(rsip::Method::Invite), key);
        // Another branch or another sent-by is another transaction.
        let other = request("INVITE", "host.example:5060;branch=z9hG4bKb", "");
        assert_ne!(ServerKey::of_request(&other, "k1"), Some(key.clone()));
        let other = request("INVITE", "host.example:5070;branch=z9hG4bKa", "");
        assert_ne!(ServerKey::of_request(&other, "k1"), Some(key));
    }

    #[test]
    fn rfc2543_requests_are_keyed_by_their_fields() {
        let invite = request("INVITE", "h:5060;branch=old1", "");
        let key = ServerKey::of_request(&invite, "k1").expect("key");
        assert_eq!(
            key,
            ServerKey::Rfc2543 {
                call_id: "k1".into(),
                cseq: 7,
                from_tag: "f1".into(),
                sent_by: "h:5060".into(),
                method: KeyMethod(rsip::Method::Invite),
            }
        );
        let cancel = request("CANCEL", "h:5060", "");
        let cancel_key = ServerKey::of_request(&cancel, "k1").expect("key");
        assert_eq!(cancel_key.with_method(rsip::Method::Invite), key);
        assert_eq!(ServerKey::of_request(&invite, ""), None);
    }

    #[test]
    fn response_keys_use_branch_and_cseq_method() {
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKc\r\n\
                   From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n\
                   CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let resp = match message::parse(raw.as_bytes()) {
            Ok(rsip::SipMessage::Response(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ClientKey::of_response(&resp),
            Some(ClientKey {
                branch: "z9hG4bKc".into(),
                method: KeyMethod(rsip::Method::Bye),
            })
        );
    }
}
