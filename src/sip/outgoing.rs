//! Serialising what pivotd sends: responses built from a request, and requests it originates.
//! Content-Length is always computed here, never copied.

use std::borrow::Cow;
use std::fmt::Write;

use bytes::Bytes;
use rsip::headers::untyped::{self, UntypedHeader};
use rsip::message::HasHeaders;
use rsip::{Header, Headers, Request, Response, StatusCode, Version};

use super::message;

/// The reason phrase pivotd uses for a status code (RFC 3261 §21 and extensions).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// A reason phrase safe to put on a status line: printable, no CR/LF, bounded.
fn clean_reason(r: &str) -> String {
    r.chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect::<String>()
}

/// A response to `req`: Via, From, To (with `to_tag` added if it has none), Call-ID and CSeq
/// copied; then `extra` header lines; then the body with Content-Type and Content-Length.
/// Written straight from the request's headers: no [`Response`] is built for it.
pub fn response_bytes(
    req: &rsip::Request,
    code: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Bytes {
    let reason = reason.map_or(Cow::Borrowed(reason_phrase(code)), |r| {
        Cow::Owned(clean_reason(r))
    });
    let mut out = String::with_capacity(512 + body.map(|b| b.1.len()).unwrap_or(0));
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    copied_headers(req, to_tag, |h| {
        let _ = write!(out, "{h}\r\n");
    });
    finish(out, extra, body)
}

/// Builds a response to `req` (Via(s), From, To, Call-ID, CSeq copied; To-tag added when
/// `to_tag` is Some and the To has none; Content-Length: 0 unless a body is set later).
/// RFC 3261 §8.2.6.2. `reason` replaces the default reason phrase.
pub fn response(req: &Request, code: u16, reason: Option<&str>, to_tag: Option<&str>) -> Response {
    let default = StatusCode::from(code);
    let status_code = match reason {
        Some(r) if default.to_string() != format!("{code} {r}") => {
            StatusCode::Other(code, message::clean_reason(r))
        }
        _ => default,
    };
    let mut headers = Headers::default();
    copied_headers(req, to_tag, |h| headers.push(h.into_owned()));
    headers.push(Header::ContentLength(untyped::ContentLength::new("0")));
    Response {
        status_code,
        version: Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The request's headers a response copies (RFC 3261 §8.2.6.2), in the request's order, to
/// `each`: every Via, the first From, To, Call-ID and CSeq; the To with `to_tag` added when
/// it has no tag.
fn copied_headers<'r>(
    req: &'r Request,
    to_tag: Option<&str>,
    mut each: impl FnMut(Cow<'r, Header>),
) {
    let (mut from, mut to, mut call_id, mut cseq) = (false, false, false, false);
    for h in req.headers().iter() {
        match h {
            Header::Via(_) => each(Cow::Borrowed(h)),
            Header::From(_) if !from => {
                from = true;
                each(Cow::Borrowed(h));
            }
            Header::To(t) if !to => {
                to = true;
                match to_tag {
                    Some(tag) if message::tag_of(t.value()).is_none() => each(Cow::Owned(
                        Header::To(untyped::To::new(format!("{};tag={tag}", t.value().trim()))),
                    )),
                    _ => each(Cow::Borrowed(h)),
                }
            }
            Header::CallId(_) if !call_id => {
                call_id = true;
                each(Cow::Borrowed(h));
            }
            Header::CSeq(_) if !cseq => {
                cseq = true;
                each(Cow::Borrowed(h));
            }
            _ => {}
        }
    }
}

/// What starts every request pivotd sends (RFC 3261 §8.1.1): the request line, our Via,
/// Max-Forwards, From (with our tag), To, Call-ID, CSeq and the Route set in order.
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub proto: crate::sip::transport::Proto,
    pub local_host: &'a str,
    pub branch: &'a str,
    pub max_forwards: u32,
    pub from: &'a str,
    pub local_tag: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub route: &'a [&'a str],
}

impl RequestHead<'_> {
    /// The head's lines, ready for [`finish`].
    pub fn write(&self) -> String {
        let mut out = String::with_capacity(768);
        let _ = write!(
            out,
            "{} {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\nMax-Forwards: {}\r\n\
             From: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
            self.method,
            self.uri,
            self.proto.via_token(),
            self.local_host,
            self.branch,
            self.max_forwards,
            self.from,
            self.local_tag,
            self.to,
            self.call_id,
            self.cseq,
            self.method
        );
        for r in self.route {
            let _ = write!(out, "Route: {r}\r\n");
        }
        out
    }
}

/// Appends extra headers, Content-Type/Content-Length and the body.
pub fn finish(mut out: String, extra: &[(&str, &str)], body: Option<(&str, &[u8])>) -> Bytes {
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let len = match body {
        Some((ctype, b)) => {
            let _ = write!(out, "Content-Type: {ctype}\r\n");
            b.len()
        }
        None => 0,
    };
    let _ = write!(out, "Content-Length: {len}\r\n\r\n");
    let mut bytes = out.into_bytes();
    if let Some((_, b)) = body {
        bytes.extend_from_slice(b);
    }
    Bytes::from(bytes)
}

/// A fresh RFC 3261 branch (magic cookie + random).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_token(16))
}

/// A fresh tag or Call-ID part.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}
