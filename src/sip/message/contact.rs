//! Contact header values as a registrar reads them (RFC 3261 §10.2.1, §20.10): `*`, or
//! addresses with their header parameters (`expires`, `q`, `+sip.instance`, …).

use rsip::message::HasHeaders;

use super::headers::{headers_of_msg, parse_params, parse_u32, split_name_addr, values};
use super::GrammarError;
use crate::sip::normalize;

/// The Contact header fields of a message, all values together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (only meaningful with `Expires: 0`).
    Star,
    /// The addresses, in order; empty when there is no Contact.
    List(Vec<ContactValue>),
}

/// One contact address: the URI (without its `<>`) and the header parameters after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactValue {
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl ContactValue {
    /// A header parameter's value (`Some(None)`: present without a value); any case.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The `expires` parameter, when it is a number.
    pub fn expires(&self) -> Option<u32> {
        parse_u32(self.param("expires")??)
    }
}

/// Why the Contact header fields cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error("malformed Contact: {0}")]
    Grammar(#[from] GrammarError),
    /// `*` beside other contacts (RFC 3261 §10.3 step 6).
    #[error("Contact * with other contacts")]
    StarWithOthers,
}

/// Reads every Contact value of `msg`.
pub fn contacts(msg: &impl HasHeaders) -> Result<Contacts, ContactError> {
    let mut list = Vec::new();
    let mut star = false;
    for v in values(headers_of_msg(msg), "Contact") {
        for c in normalize::split_top_level_commas(v.as_bytes()) {
            let c = String::from_utf8_lossy(c);
            let c = c.trim();
            if c == "*" {
                star = true;
                continue;
            }
            let (uri, params) = split_name_addr(c)?;
            let params = parse_params(params)?
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.map(unquote)))
                .collect();
            list.push(ContactValue {
                uri: uri.to_string(),
                params,
            });
        }
    }
    match (star, list.is_empty()) {
        (true, true) => Ok(Contacts::Star),
        (true, false) => Err(ContactError::StarWithOthers),
        (false, _) => Ok(Contacts::List(list)),
    }
}

/// The URI of a name-addr or addr-spec header value (From, To, Path), without its `<>`.
pub fn addr_uri(value: &str) -> Option<&str> {
    split_name_addr(value).ok().map(|(uri, _)| uri)
}

/// The user (empty when none) and host of the URI in a From or To header: the caller's or
/// the registered address-of-record.
pub fn header_aor(msg: &impl HasHeaders, name: &str) -> Option<(String, String)> {
    let value = values(headers_of_msg(msg), name).next()?;
    let uri = super::parse_sip_uri(addr_uri(value)?)?;
    Some((
        uri.user().unwrap_or_default().to_string(),
        uri.host_with_port.host.to_string(),
    ))
}

/// A parameter value without its surrounding quotes (`+sip.instance="<urn:…>"`).
fn unquote(v: &str) -> String {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(contact_lines: &str) -> rsip::Request {
        let raw = format!(
            "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:2001@pbx.test>;tag=a\r\nTo: <sip:2001@pbx.test>\r\nCall-ID: c1\r\n\
             CSeq: 1 REGISTER\r\n{contact_lines}Content-Length: 0\r\n\r\n"
        );
        match crate::sip::message::parse(raw.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn lists_addresses_with_parameters_across_headers() {
        let r = request(
            "Contact: \"Desk, 1\" <sip:2001@10.0.0.5:5060;transport=udp>;expires=60;q=0.5, <sip:2001@10.0.0.6>\r\n\
             Contact: sip:2001@10.0.0.7;+sip.instance=\"<urn:uuid:1>\"\r\n",
        );
        let Contacts::List(l) = contacts(&r).unwrap() else {
            panic!("not a list");
        };
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].uri, "sip:2001@10.0.0.5:5060;transport=udp");
        assert_eq!(l[0].expires(), Some(60));
        assert_eq!(l[0].param("Q"), Some(Some("0.5")));
        assert_eq!(l[1].uri, "sip:2001@10.0.0.6");
        assert_eq!(l[1].expires(), None);
        assert_eq!(l[2].param("+sip.instance"), Some(Some("<urn:uuid:1>")));
    }

    #[test]
    fn star_alone_or_refused() {
        assert_eq!(
            contacts(&request("Contact: *\r\n")).unwrap(),
            Contacts::Star
        );
        assert_eq!(contacts(&request("")).unwrap(), Contacts::List(Vec::new()));
        assert_eq!(
            contacts(&request("Contact: *\r\nContact: <sip:a@b>\r\n")).unwrap_err(),
            ContactError::StarWithOthers
        );
    }
}
