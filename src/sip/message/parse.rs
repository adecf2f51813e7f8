//! Parsing: the normaliser, then rsip, then the checks of RFC 3261 §8.2 / §16.3 a server
//! makes before it answers; and the repair paths for what rsip 0.4 misreads or refuses, so
//! that what can be answered is answered with the right code.

use rsip::message::HasHeaders;
use rsip::{Method, Request, SipMessage};

use super::headers::{known_method, parse_cseq, top_via_of, validate, validate_headers};
use super::uri::{check_request_uri, is_sip_scheme, parse_sip_uri, uri_scheme, RequestUriError};
use crate::sip::normalize::{self, is_token, normalize_cow, normalize_headers_lenient};

/// Why a datagram or stream message could not be used.
#[derive(Debug, Clone, thiserror::Error)]
// The request is kept whole so the transport can answer without re-parsing.
#[allow(clippy::large_enum_variant)]
pub enum ParseError {
    /// Not recognisable as SIP: drop it, no response is possible.
    #[error("unparsable message: {0}")]
    Unparsable(String),
    /// Malformed (RFC 4475 §3.1.2, §3.3): answer 400 with `reason` when `request` is Some
    /// (it then has at least a usable top Via); drop when None (responses, no Via).
    #[error("invalid message: {reason}")]
    Invalid {
        reason: String,
        request: Option<Request>,
    },
    /// Well-formed, but its request line names what rsip 0.4 cannot represent (`why`),
    /// answered statelessly with [`Unsupported::code`].
    /// `request` carries the header fields with a placeholder request line
    /// (`<known method or OPTIONS> sip:invalid.invalid SIP/2.0`) to answer from
    /// ([`crate::sip::outgoing::response_bytes`]).
    #[error("{} {}", .why.code(), .why.reason())]
    Unsupported { why: Unsupported, request: Request },
}

/// What a well-formed request names that pivotd does not serve. The one place that says
/// which response each gets: the stateless answer to what the parser refuses, and the 416
/// admission gives a request rsip could read (`call::admission::Refusal::UnsupportedScheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A method rsip 0.4 does not know: 501 (RFC 3261 §21.5.2), with Allow.
    #[error("unknown method")]
    Method,
    /// A SIP version other than 2.0: 505 (RFC 3261 §21.5.6, RFC 4475 §3.1.2.16).
    #[error("unsupported SIP version")]
    Version,
    /// A Request-URI scheme other than sip/sips: 416 (RFC 3261 §8.2.2.1).
    #[error("unsupported Request-URI scheme")]
    Scheme,
}

impl Unsupported {
    /// The response code.
    pub fn code(self) -> u16 {
        match self {
            Unsupported::Method => 501,
            Unsupported::Version => 505,
            Unsupported::Scheme => 416,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Unsupported::Method => "Not Implemented",
            Unsupported::Version => "Version Not Supported",
            Unsupported::Scheme => "Unsupported URI Scheme",
        }
    }

    /// The headers the response carries beside the usual ones.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Unsupported::Method => &[("Allow", crate::sip::ALLOW)],
            Unsupported::Version | Unsupported::Scheme => &[],
        }
    }
}

const PLACEHOLDER_URI: &str = "sip:invalid.invalid";

/// normalize + rsip parse + mandatory header checks (Via, From, To, Call-ID, CSeq; CSeq
/// method = request method; Content-Length consistent).
///
/// Also rejected (RFC 4475 §3.1.2, §3.3.8): duplicated single-value headers (From, To,
/// Call-ID, CSeq, Max-Forwards), a CSeq number beyond 32 bits, Max-Forwards above 255,
/// Expires beyond 32 bits, unquoted display names with non-token characters, unterminated
/// quoted strings, whitespace inside `<addr-spec>`, addr-specs with `?` or `,` outside `<>`,
/// empty header parameters.
// The error carries the request by value (contract): it is the rare path, size is fine.
#[allow(clippy::result_large_err)]
pub fn parse(raw: &[u8]) -> Result<SipMessage, ParseError> {
    let norm = match normalize_cow(raw) {
        Ok(n) => n,
        Err(e) => return Err(fallback(raw, e.to_string(), true)),
    };
    let mut msg = match tokenize(&norm) {
        Ok(m) => m,
        Err(_) => match reparse_with_own_uri(&norm) {
            Some(req) => SipMessage::Request(req),
            None => return Err(fallback(raw, "malformed message".into(), false)),
        },
    };
    if let SipMessage::Request(req) = &mut msg {
        let uri_text = request_uri_text(&norm);
        if let Err(reason) = check_request_uri(uri_text) {
            return Err(invalid_request(reason.to_string(), req.clone()));
        }
        // rsip 0.4 reads an unknown scheme with a user part (`foo:bar@host`) as user "foo",
        // password "bar" and no scheme at all: put the scheme back, so the request is
        // answered 416 (RFC 3261 §8.2.2.1) instead of being taken for a SIP URI.
        if req.uri.scheme.is_none() {
            if let Some(scheme) = uri_scheme(uri_text.as_bytes()).filter(|s| !is_sip_scheme(s)) {
                let scheme = String::from_utf8_lossy(scheme).into_owned();
                req.uri.scheme = Some(rsip::Scheme::Other(scheme));
            }
        }
        // rsip 0.4 reads `sip:first.last@host` as a host of "first.last@host": read it again.
        let hp = req.uri.host_with_port.to_string();
        if hp.contains(['@', '<', '>']) {
            if let Some(uri) = parse_sip_uri(uri_text) {
                req.uri = uri;
            }
        }
    }
    match validate(&msg) {
        Ok(()) => Ok(msg),
        Err(reason) => Err(match msg {
            SipMessage::Request(req) => invalid_request(reason.to_string(), req),
            SipMessage::Response(_) => ParseError::Invalid {
                reason: reason.to_string(),
                request: None,
            },
        }),
    }
}

/// rsip's own reading of a message, without its costliest step for a request: rsip tries the
/// response grammar first, and the failed try formats the whole message into an error string
/// (a copy of every byte, char by char). Only a message starting with `SIP/` can be a
/// response (its version comes first), so anything else goes straight to the request grammar:
/// the same result, as the response try fails at once on it.
fn tokenize(norm: &[u8]) -> Result<SipMessage, rsip::Error> {
    if norm.starts_with(b"SIP/") {
        SipMessage::try_from(norm)
    } else {
        Request::try_from(norm).map(SipMessage::Request)
    }
}

fn invalid_request(reason: String, req: Request) -> ParseError {
    let usable = top_via_of(req.headers()).is_some();
    ParseError::Invalid {
        reason: clean_reason(&reason),
        request: usable.then_some(req),
    }
}

/// Reason phrases go into a status line: one line of printable text.
pub(in crate::sip) fn clean_reason(r: &str) -> String {
    r.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// rsip or the normaliser refused the message: find out what to answer, with the header
/// fields parsed forgivingly under a placeholder request line.
fn fallback(raw: &[u8], reason: String, normalizer_failed: bool) -> ParseError {
    let Some((start, head)) = normalize_headers_lenient(raw) else {
        return ParseError::Unparsable(reason);
    };
    if start.starts_with(b"SIP/") {
        // A response that cannot be used: dropped (RFC 3261 §18.1.2 has no answer to it).
        return ParseError::Invalid {
            reason: clean_reason(&reason),
            request: None,
        };
    }
    let parts: Vec<&[u8]> = start
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|p| !p.is_empty())
        .collect();
    let is_request = parts.len() >= 2
        && parts
            .first()
            .is_some_and(|m| m.iter().all(|&b| is_token(b)))
        && parts.last().is_some_and(|v| v.starts_with(b"SIP/"));
    if !is_request {
        return ParseError::Unparsable(reason);
    }
    let method_text = String::from_utf8_lossy(parts.first().copied().unwrap_or_default());
    let start_method = known_method(&method_text);
    let cseq_method = headers_of(&head, "CSeq")
        .and_then(|v| parse_cseq(&v).ok().and_then(|(_, m)| known_method(m)));
    let placeholder = start_method.or(cseq_method).unwrap_or(Method::Options);
    let mut bytes = format!("{placeholder} {PLACEHOLDER_URI} SIP/2.0\r\n").into_bytes();
    bytes.extend_from_slice(&head);
    let req = match Request::try_from(&bytes[..]) {
        Ok(r) => r,
        Err(_) => return ParseError::Unparsable(reason),
    };
    if let Err(r) = validate_headers(req.headers(), Some(&method_text)) {
        return invalid_request(r.to_string(), req);
    }
    if normalizer_failed || parts.len() != 3 {
        let reason = if parts.len() != 3 {
            "malformed Request-Line".to_string()
        } else {
            reason
        };
        return invalid_request(reason, req);
    }
    let version = parts.get(2).copied().unwrap_or_default();
    let uri = parts.get(1).copied().unwrap_or_default();
    if top_via_of(req.headers()).is_none() {
        return ParseError::Invalid {
            reason: clean_reason(&reason),
            request: None,
        };
    }
    let why = if version != b"SIP/2.0" {
        Some(Unsupported::Version)
    } else if start_method.is_none() {
        Some(Unsupported::Method)
    } else if uri_scheme(uri).is_some_and(|s| !is_sip_scheme(s)) {
        Some(Unsupported::Scheme)
    } else {
        None
    };
    if let Some(why) = why {
        return ParseError::Unsupported { why, request: req };
    }
    invalid_request(RequestUriError::Malformed.to_string(), req)
}

/// The Request-URI of a normalised request (second element of the first line).
fn request_uri_text(norm: &[u8]) -> &str {
    let line_end = norm.iter().position(|&b| b == b'\r').unwrap_or(norm.len());
    let line = &norm[..line_end];
    let uri = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    std::str::from_utf8(uri).unwrap_or_default()
}

/// rsip refused the request line of an otherwise well-formed request: when the method and
/// version are fine and the Request-URI is a SIP URI rsip cannot read, parse the rest with
/// a placeholder URI and put the hand-read URI in.
fn reparse_with_own_uri(norm: &[u8]) -> Option<Request> {
    let line_end = norm.iter().position(|&b| b == b'\r')?;
    let line = std::str::from_utf8(&norm[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "SIP/2.0" {
        return None;
    }
    let method = known_method(method)?;
    check_request_uri(uri).ok()?;
    let uri = parse_sip_uri(uri)?;
    let mut bytes = format!("{method} {PLACEHOLDER_URI} SIP/2.0").into_bytes();
    bytes.extend_from_slice(&norm[line_end..]);
    let mut req = Request::try_from(&bytes[..]).ok()?;
    req.uri = uri;
    Some(req)
}

/// First value of a header in a normalised header block (full names).
fn headers_of(head: &[u8], name: &str) -> Option<String> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (n, v) = line.split_at(colon);
        n.eq_ignore_ascii_case(name.as_bytes())
            .then(|| String::from_utf8_lossy(normalize::trim(&v[1..])).into_owned())
    })
}
