//! SIP messages in: parsing (normaliser + rsip + the checks of RFC 3261 §8.2 / §16.3 a server
//! makes before it answers), the Request-URI, header grammar and accessors that never panic.
//! Responses are built in [`super::outgoing`].
//!
//! - `parse.rs`: normalise, parse, repair what rsip 0.4 misreads, [`ParseError`], and
//!   [`Unsupported`]: the code for a method, version or scheme pivotd does not serve;
//! - `uri.rs`: the Request-URI checks, the schemes served, the sip/sips URIs read by hand;
//! - `headers.rs`: header grammar, the checks every message passes, the accessors;
//! - `body.rs`: the body by its Content-Type (the SDP a request carries);
//! - `contact.rs`: Contact values as a registrar reads them;
//! - `uri_eq.rs`: URI equivalence (RFC 3261 §19.1.4) and `%XX` unescaping.

mod body;
mod contact;
mod headers;
mod parse;
mod uri;
mod uri_eq;

pub use body::{media_type_is, response_sdp_body, sdp_body, NotSdp};
pub use contact::{addr_uri, contacts, header_aor, ContactError, ContactValue, Contacts};
pub(in crate::sip) use headers::tag_of;
pub use headers::{
    call_id, cseq, expires, from_tag, header_name_value, header_str, header_value, header_values,
    max_forwards, method_name, to_tag, top_via, GrammarError, HeaderError, TopVia,
};
pub(in crate::sip) use parse::clean_reason;
pub use parse::{parse, ParseError, Unsupported};
pub use uri::{is_request_target, is_sip_scheme, parse_sip_uri, scheme_supported, RequestUriError};
pub use uri_eq::{percent_decode, uri_equivalent};

#[cfg(test)]
mod tests;
