//! SIP message parsing (normaliser + rsip + the checks of RFC 3261 §8.2 / §16.3 a server
//! makes before it answers), accessors that never panic, and response building.

use super::normalize::{self, is_token, normalize_cow, normalize_headers_lenient};
use rsip::headers::untyped::{self, UntypedHeader};
use rsip::message::HasHeaders;
use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode, Version};
use std::str::FromStr;

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
    /// Well-formed, but its request line names what rsip 0.4 cannot represent: an unknown
    /// method (answer 501, RFC 3261 §21.5.2), a SIP version other than 2.0 (505, RFC 3261
    /// §21.5.6, RFC 4475 §3.1.2.16), or a Request-URI scheme rsip cannot read (416,
    /// RFC 3261 §8.2.2.1).
    /// `request` carries the header fields with a placeholder request line
    /// (`<known method or OPTIONS> sip:invalid.invalid SIP/2.0`) for [`response`].
    #[error("{code} {reason}")]
    Unsupported {
        code: u16,
        reason: String,
        request: Request,
    },
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
    let mut msg = match SipMessage::try_from(&norm[..]) {
        Ok(m) => m,
        Err(_) => match reparse_with_own_uri(&norm) {
            Some(req) => SipMessage::Request(req),
            None => return Err(fallback(raw, "malformed message".into(), false)),
        },
    };
    if let SipMessage::Request(req) = &mut msg {
        let uri_text = request_uri_text(&norm);
        if let Err(reason) = check_request_uri(uri_text) {
            return Err(invalid_request(reason.into(), req.clone()));
        }
        // rsip 0.4 reads an unknown scheme with a user part (`foo:bar@host`) as user "foo",
        // password "bar" and no scheme at all: put the scheme back, so the request is
        // answered 416 (RFC 3261 §8.2.2.1) instead of being taken for a SIP URI.
        if req.uri.scheme.is_none() {
            if let Some(scheme) = uri_scheme(uri_text.as_bytes()) {
                let scheme = String::from_utf8_lossy(scheme);
                if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
                    req.uri.scheme = Some(rsip::Scheme::Other(scheme.into_owned()));
                }
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
            SipMessage::Request(req) => invalid_request(reason, req),
            SipMessage::Response(_) => ParseError::Invalid {
                reason,
                request: None,
            },
        }),
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
fn clean_reason(r: &str) -> String {
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
        .and_then(|v| parse_cseq(&v).ok())
        .and_then(|(_, m)| known_method(&m));
    let placeholder = start_method.or(cseq_method).unwrap_or(Method::Options);
    let mut bytes = format!("{placeholder} {PLACEHOLDER_URI} SIP/2.0\r\n").into_bytes();
    bytes.extend_from_slice(&head);
    let req = match Request::try_from(&bytes[..]) {
        Ok(r) => r,
        Err(_) => return ParseError::Unparsable(reason),
    };
    if let Err(r) = validate_headers(req.headers(), Some(&method_text)) {
        return invalid_request(r, req);
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
    if version != b"SIP/2.0" {
        return ParseError::Unsupported {
            code: 505,
            reason: "Version Not Supported".into(),
            request: req,
        };
    }
    if start_method.is_none() {
        return ParseError::Unsupported {
            code: 501,
            reason: "Not Implemented".into(),
            request: req,
        };
    }
    if let Some(scheme) = uri_scheme(uri) {
        if !scheme.eq_ignore_ascii_case(b"sip") && !scheme.eq_ignore_ascii_case(b"sips") {
            return ParseError::Unsupported {
                code: 416,
                reason: "Unsupported URI Scheme".into(),
                request: req,
            };
        }
    }
    invalid_request("malformed Request-URI".into(), req)
}

/// The Request-URI of a normalised request (second element of the first line).
fn request_uri_text(norm: &[u8]) -> &str {
    let line_end = norm.iter().position(|&b| b == b'\r').unwrap_or(norm.len());
    let line = &norm[..line_end];
    let uri = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    std::str::from_utf8(uri).unwrap_or_default()
}

/// RFC 3261 §19.1.1 / RFC 4475 §3.1.2.7, §3.1.2.11: no `<>`, no escaped headers.
fn check_request_uri(uri: &str) -> Result<(), &'static str> {
    if uri_scheme(uri.as_bytes()).is_none() || uri.contains(['<', '>', '"']) {
        return Err("malformed Request-URI");
    }
    // Bytes, not `&str` ranges: a multi-byte character at the cut would panic (issue 7).
    let b = uri.as_bytes();
    let is_sip = b.len() > 4
        && (b.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"sip:"))
            || b.get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"sips:")));
    if is_sip && uri.contains('?') {
        return Err("headers in the Request-URI");
    }
    Ok(())
}

/// A sip/sips URI read by hand (RFC 3261 §25.1 `SIP-URI`), for the URIs rsip 0.4 misreads
/// or refuses: `;` or `.` in the user part, IPv6 references. Parameters are parsed by rsip.
pub fn parse_sip_uri(text: &str) -> Option<rsip::Uri> {
    let colon = text.find(':')?;
    let scheme = match &text[..colon] {
        s if s.eq_ignore_ascii_case("sip") => rsip::Scheme::Sip,
        s if s.eq_ignore_ascii_case("sips") => rsip::Scheme::Sips,
        _ => return None,
    };
    let rest = &text[colon + 1..];
    if rest.contains(['?', ' ', '<', '>']) {
        return None;
    }
    let (auth, hostpart) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p.to_string())),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return None;
            }
            (
                Some(rsip::Auth {
                    user: user.to_string(),
                    password,
                }),
                &rest[at + 1..],
            )
        }
        None => (None, rest),
    };
    let (hostport, params) = match hostpart.find(';') {
        Some(i) => hostpart.split_at(i),
        None => (hostpart, ""),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        let ip: std::net::Ipv6Addr = v6[..close].parse().ok()?;
        let port = v6[close + 1..].strip_prefix(':');
        (rsip::Host::IpAddr(ip.into()), port)
    } else {
        let (h, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return None;
        }
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => (rsip::Host::IpAddr(ip), port),
            Err(_) => (rsip::Host::Domain(h.to_string().into()), port),
        }
    };
    let port = match port {
        Some(p) => Some(rsip::Port::from(p.parse::<u16>().ok()?)),
        None => None,
    };
    let params = if params.is_empty() {
        Vec::new()
    } else {
        rsip::Uri::try_from(format!("sip:h{params}")).ok()?.params
    };
    Some(rsip::Uri {
        scheme: Some(scheme),
        auth,
        host_with_port: rsip::HostWithPort { host, port },
        params,
        headers: Vec::new(),
    })
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

/// `scheme` of `scheme:...` (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
fn uri_scheme(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&b| b == b':')?;
    let scheme = &uri[..colon];
    let ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    ok.then_some(scheme)
}

/// rsip's methods, matched case-sensitively (RFC 3261 §7.1: methods are case-sensitive).
fn known_method(text: &str) -> Option<Method> {
    Method::all().into_iter().find(|m| m.to_string() == text)
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

/// Name and value of any rsip header.
pub fn header_name_value(h: &Header) -> (&str, &str) {
    macro_rules! nv {
        ($($variant:ident => $name:literal),* $(,)?) => {
            match h {
                $(Header::$variant(v) => ($name, v.value()),)*
                Header::Other(n, v) => (n.as_str(), v.as_str()),
            }
        };
    }
    nv!(
        Accept => "Accept", AcceptEncoding => "Accept-Encoding",
        AcceptLanguage => "Accept-Language", AlertInfo => "Alert-Info", Allow => "Allow",
        AuthenticationInfo => "Authentication-Info", Authorization => "Authorization",
        CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info", Contact => "Contact",
        ContentDisposition => "Content-Disposition", ContentEncoding => "Content-Encoding",
        ContentLanguage => "Content-Language", ContentLength => "Content-Length",
        ContentType => "Content-Type", Date => "Date", ErrorInfo => "Error-Info",
        Event => "Event", Expires => "Expires", From => "From", InReplyTo => "In-Reply-To",
        MaxForwards => "Max-Forwards", MimeVersion => "MIME-Version",
        MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
        ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
        ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
        Require => "Require", RetryAfter => "Retry-After", Route => "Route", Server => "Server",
        Subject => "Subject", SubscriptionState => "Subscription-State",
        Supported => "Supported", Timestamp => "Timestamp", To => "To",
        Unsupported => "Unsupported", UserAgent => "User-Agent", Via => "Via",
        Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
    )
}

fn values<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers.iter().filter_map(move |h| {
        let (n, v) = header_name_value(h);
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn validate(msg: &SipMessage) -> Result<(), String> {
    match msg {
        SipMessage::Request(req) => {
            let method = req.method().to_string();
            validate_headers(req.headers(), Some(&method))
        }
        SipMessage::Response(resp) => validate_headers(resp.headers(), None),
    }
}

/// The checks of RFC 3261 §8.2 and RFC 4475 §3.1.2/§3.3 on the header fields.
fn validate_headers(headers: &Headers, request_method: Option<&str>) -> Result<(), String> {
    let mut vias = 0;
    for v in values(headers, "Via") {
        parse_via(v).map_err(|e| format!("malformed Via: {e}"))?;
        vias += 1;
    }
    if vias == 0 {
        return Err("missing Via".into());
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        match values(headers, name).count() {
            0 => return Err(format!("missing {name}")),
            1 => {}
            _ => return Err(format!("more than one {name}")),
        }
    }
    for name in ["From", "To"] {
        for v in values(headers, name) {
            check_name_addr(v).map_err(|e| format!("malformed {name}: {e}"))?;
        }
    }
    for v in values(headers, "Contact") {
        if v == "*" {
            continue;
        }
        for c in normalize::split_top_level_commas(v.as_bytes()) {
            let c = String::from_utf8_lossy(c);
            check_name_addr(c.trim()).map_err(|e| format!("malformed Contact: {e}"))?;
        }
    }
    if let Some(id) = values(headers, "Call-ID").next() {
        if id.is_empty() || id.contains([' ', '\t']) {
            return Err("malformed Call-ID".into());
        }
    }
    if let Some(v) = values(headers, "CSeq").next() {
        let (_, m) = parse_cseq(v)?;
        if let Some(rm) = request_method {
            if m != rm {
                return Err("CSeq method does not match the request method".into());
            }
        }
    }
    let mut mf = values(headers, "Max-Forwards");
    if let Some(v) = mf.next() {
        if mf.next().is_some() {
            return Err("more than one Max-Forwards".into());
        }
        match parse_u32(v) {
            Some(n) if n <= 255 => {}
            _ => return Err("malformed Max-Forwards".into()),
        }
    }
    for v in values(headers, "Expires") {
        if parse_u32(v).is_none() {
            return Err("malformed Expires".into());
        }
    }
    Ok(())
}

/// 1*DIGIT that fits in 32 bits (leading zeros allowed, RFC 4475 §3.1.1.1).
fn parse_u32(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse().ok()
}

/// `CSeq: 1*DIGIT LWS Method` (RFC 3261 §20.16): number within 32 bits.
fn parse_cseq(v: &str) -> Result<(u32, String), String> {
    let v = v.trim();
    let sp = v.find([' ', '\t']).ok_or("malformed CSeq")?;
    let (n, m) = v.split_at(sp);
    let n = parse_u32(n).ok_or("malformed CSeq number")?;
    let m = m.trim();
    if m.is_empty() || !m.bytes().all(is_token) {
        return Err("malformed CSeq method".into());
    }
    Ok((n, m.to_string()))
}

/// Splits at `;` outside quoted strings; the first piece is what comes before any `;`.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_q = false;
    let mut esc = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if in_q {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_q = false;
            }
            continue;
        }
        match c {
            '"' => in_q = true,
            ';' => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `;name[=value]` list: each name a non-empty token. Returns (name, value) pairs.
fn parse_params(s: &str) -> Result<Vec<(&str, Option<&str>)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let pieces = split_params(s);
    let mut it = pieces.into_iter();
    if it.next().map(str::trim) != Some("") {
        return Err("unexpected text before parameters".into());
    }
    it.map(|p| {
        let (n, v) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        if n.is_empty() || !n.bytes().all(is_token) {
            return Err("empty or malformed parameter".to_string());
        }
        Ok((n, v))
    })
    .collect()
}

/// Position just after the closing quote of a quoted string starting at `s[0] == '"'`.
fn quoted_end(s: &str) -> Option<usize> {
    let mut esc = false;
    for (i, c) in s.char_indices().skip(1) {
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '"' {
            return Some(i + 1);
        }
    }
    None
}

/// Splits a name-addr / addr-spec value (RFC 3261 §20.10, §25.1) into URI and the text of
/// its header parameters, checking what RFC 4475 §3.1.2.6/.13/.14/.15 call malformed.
fn split_name_addr(v: &str) -> Result<(&str, &str), String> {
    let v = v.trim();
    let angle = if v.starts_with('"') {
        let end = quoted_end(v).ok_or("unterminated quoted string")?;
        let rest = v[end..].trim_start();
        if !rest.starts_with('<') {
            return Err("display name without <addr-spec>".into());
        }
        Some(rest)
    } else if let Some(lt) = v.find('<') {
        let display = &v[..lt];
        if !display
            .bytes()
            .all(|b| is_token(b) || b == b' ' || b == b'\t')
        {
            return Err("display name needs quotes".into());
        }
        Some(&v[lt..])
    } else {
        None
    };
    match angle {
        Some(a) => {
            let gt = a.find('>').ok_or("missing >")?;
            let uri = &a[1..gt];
            if uri.is_empty() || uri.contains([' ', '\t']) {
                return Err("whitespace in addr-spec".into());
            }
            Ok((uri, &a[gt + 1..]))
        }
        None => {
            let (uri, params) = match v.find(';') {
                Some(i) => v.split_at(i),
                None => (v, ""),
            };
            if uri.is_empty() || uri.contains([' ', '\t', '?', ',', '"', '>']) {
                return Err("URI with ?, comma or whitespace must be inside <>".into());
            }
            Ok((uri, params))
        }
    }
}

fn check_name_addr(v: &str) -> Result<(), String> {
    let (_, params) = split_name_addr(v)?;
    parse_params(params).map(|_| ())
}

fn tag_of(v: &str) -> Option<String> {
    let (_, params) = split_name_addr(v).ok()?;
    parse_params(params)
        .ok()?
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("tag"))
        .and_then(|(_, v)| v)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The top Via of a request or response, read forgivingly of LWS (RFC 3261 §20.42,
/// RFC 3581 `rport`/`received`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopVia {
    pub branch: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Upper case: "UDP", "TCP", "TLS", …
    pub transport: String,
    /// Some(None) = `rport` without value.
    pub rport: Option<Option<u16>>,
    pub received: Option<String>,
    /// host[:port] as written.
    pub sent_by: String,
}

fn parse_via(v: &str) -> Result<TopVia, String> {
    parse_via_with(v, true)
}

/// `strict`: empty parameters are an error (validation); otherwise skipped (answering).
fn parse_via_with(v: &str, strict: bool) -> Result<TopVia, String> {
    let v = v.trim();
    let sp = v.find([' ', '\t']).ok_or("no sent-by")?;
    let (proto, rest) = v.split_at(sp);
    let mut p = proto.split('/');
    let (name, version, transport) = match (p.next(), p.next(), p.next(), p.next()) {
        (Some(n), Some(ver), Some(t), None) => (n, ver, t),
        _ => return Err("malformed sent-protocol".into()),
    };
    if !name.eq_ignore_ascii_case("SIP")
        || version.is_empty()
        || transport.is_empty()
        || !transport.bytes().all(is_token)
    {
        return Err("malformed sent-protocol".into());
    }
    let rest = rest.trim();
    let (sent_by, params) = match rest.find(';') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let sent_by = sent_by.trim();
    let (host, port) = if let Some(stripped) = sent_by.strip_prefix('[') {
        let close = stripped.find(']').ok_or("malformed IPv6 sent-by")?;
        let host = &sent_by[..close + 2];
        (host, sent_by[close + 2..].strip_prefix(':'))
    } else {
        match sent_by.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (sent_by, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
    {
        return Err("malformed host".into());
    }
    let port = match port {
        Some(p) => Some(p.trim().parse::<u16>().map_err(|_| "malformed port")?),
        None => None,
    };
    let mut via = TopVia {
        branch: None,
        host: host.to_string(),
        port,
        transport: transport.to_ascii_uppercase(),
        rport: None,
        received: None,
        sent_by: sent_by.to_string(),
    };
    let params = if strict {
        parse_params(params)?
    } else {
        split_params(params)
            .into_iter()
            .skip(1)
            .filter_map(|p| {
                let (n, v) = match p.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (p.trim(), None),
                };
                (!n.is_empty()).then_some((n, v))
            })
            .collect()
    };
    for (n, val) in params {
        if n.eq_ignore_ascii_case("branch") {
            via.branch = val.map(str::to_string);
        } else if n.eq_ignore_ascii_case("rport") {
            via.rport = Some(match val {
                Some(p) if !p.is_empty() => Some(p.parse().map_err(|_| "malformed rport")?),
                _ => None,
            });
        } else if n.eq_ignore_ascii_case("received") {
            via.received = val.map(str::to_string);
        }
    }
    Ok(via)
}

fn top_via_of(headers: &Headers) -> Option<TopVia> {
    // The first hop of a comma-joined value too (normalised messages have one per line).
    let first = values(headers, "Via").next()?;
    let hop = normalize::split_top_level_commas(first.as_bytes())
        .into_iter()
        .next()
        .unwrap_or_default();
    parse_via_with(std::str::from_utf8(hop).ok()?, false).ok()
}

/// Accessors take a request, a response or a message alike.
fn headers_of_msg(msg: &impl rsip::message::HasHeaders) -> &Headers {
    msg.headers()
}

/// The Call-ID value.
pub fn call_id(msg: &impl rsip::message::HasHeaders) -> Option<String> {
    values(headers_of_msg(msg), "Call-ID")
        .next()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// CSeq number and method (None when the method is one rsip does not know).
pub fn cseq(msg: &impl rsip::message::HasHeaders) -> Option<(u32, Method)> {
    let (n, m) = parse_cseq(values(headers_of_msg(msg), "CSeq").next()?).ok()?;
    Some((n, known_method(&m)?))
}

/// The From tag.
pub fn from_tag(msg: &impl rsip::message::HasHeaders) -> Option<String> {
    tag_of(values(headers_of_msg(msg), "From").next()?)
}

/// The To tag.
pub fn to_tag(msg: &impl rsip::message::HasHeaders) -> Option<String> {
    tag_of(values(headers_of_msg(msg), "To").next()?)
}

/// The first Via.
pub fn top_via(msg: &impl rsip::message::HasHeaders) -> Option<TopVia> {
    top_via_of(headers_of_msg(msg))
}

/// Max-Forwards as a number (RFC 3261 §20.22).
pub fn max_forwards(req: &Request) -> Option<u32> {
    parse_u32(values(req.headers(), "Max-Forwards").next()?)
}

/// First value of a header; `name` is matched case-insensitively, full or compact form.
pub fn header_value(msg: &impl rsip::message::HasHeaders, name: &str) -> Option<String> {
    let name = match name.as_bytes() {
        [c] => normalize::expand_compact(*c).unwrap_or(name),
        _ => name,
    };
    values(headers_of_msg(msg), name).next().map(str::to_string)
}

/// Builds a response to `req` (Via(s), From, To, Call-ID, CSeq copied; To-tag added when
/// `to_tag` is Some and the To has none; Content-Length: 0 unless a body is set later).
/// RFC 3261 §8.2.6.2. `reason` replaces the default reason phrase.
pub fn response(req: &Request, code: u16, reason: Option<&str>, to_tag: Option<&str>) -> Response {
    let default = StatusCode::from(code);
    let status_code = match reason {
        Some(r) if default.to_string() != format!("{code} {r}") => {
            StatusCode::Other(code, clean_reason(r))
        }
        _ => default,
    };
    let mut headers = Headers::default();
    let (mut from, mut to, mut call_id, mut cseq) = (false, false, false, false);
    for h in req.headers().iter() {
        match h {
            Header::Via(_) => headers.push(h.clone()),
            Header::From(_) if !from => {
                from = true;
                headers.push(h.clone());
            }
            Header::To(t) if !to => {
                to = true;
                match to_tag {
                    Some(tag) if tag_of(t.value()).is_none() => headers.push(Header::To(
                        untyped::To::new(format!("{};tag={tag}", t.value().trim())),
                    )),
                    _ => headers.push(h.clone()),
                }
            }
            Header::CallId(_) if !call_id => {
                call_id = true;
                headers.push(h.clone());
            }
            Header::CSeq(_) if !cseq => {
                cseq = true;
                headers.push(h.clone());
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(untyped::ContentLength::new("0")));
    Response {
        status_code,
        version: Version::V2,
        headers,
        body: Vec::new(),
    }
}

impl FromStr for TopVia {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_via(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::normalize::{frame, normalize};
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    #[derive(serde::Deserialize, Debug)]
    struct Expectation {
        section: String,
        expect: String,
        unsupported: Option<u16>,
        #[allow(dead_code)]
        server_response: Option<u16>,
        parses: Option<bool>,
        #[allow(dead_code)]
        note: Option<String>,
    }

    fn corpus_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475")
    }

    fn corpus() -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(corpus_dir()).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().and_then(|e| e.to_str()) == Some("dat") {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("file name")
                    .to_string();
                files.insert(name, std::fs::read(&path).expect("read fixture"));
            }
        }
        files
    }

    fn expectations() -> BTreeMap<String, Expectation> {
        let text = std::fs::read_to_string(corpus_dir().join("expected.toml")).expect("toml");
        toml::from_str(&text).expect("expected.toml parses")
    }

    fn load(name: &str) -> Vec<u8> {
        std::fs::read(corpus_dir().join(format!("{name}.dat"))).expect("fixture")
    }

    fn outcome(r: &Result<SipMessage, ParseError>) -> String {
        match r {
            Ok(SipMessage::Request(req)) => format!("Ok(request {})", req.method()),
            Ok(SipMessage::Response(resp)) => format!("Ok(response {})", resp.status_code()),
            Err(ParseError::Unparsable(r)) => format!("Unparsable({r})"),
            Err(ParseError::Invalid { reason, request }) => {
                format!("Invalid({reason}, request: {})", request.is_some())
            }
            Err(ParseError::Unsupported { code, reason, .. }) => {
                format!("Unsupported({code} {reason})")
            }
        }
    }

    #[test]
    fn rfc4475_corpus_meets_expectations() {
        let files = corpus();
        let table = expectations();
        assert_eq!(files.len(), 50, "the corpus has 50 messages");
        let missing: Vec<_> = files.keys().filter(|k| !table.contains_key(*k)).collect();
        assert!(missing.is_empty(), "no expectation for {missing:?}");
        let extra: Vec<_> = table.keys().filter(|k| !files.contains_key(*k)).collect();
        assert!(extra.is_empty(), "expectation without file: {extra:?}");

        let mut failures = Vec::new();
        for (name, raw) in &files {
            let exp = &table[name];
            let r = parse(raw);
            let ok = match exp.expect.as_str() {
                "valid" => matches!(r, Ok(SipMessage::Request(_))),
                "unsupported" => matches!(
                    &r,
                    Err(ParseError::Unsupported { code, request, .. })
                        if Some(*code) == exp.unsupported && top_via_of(request.headers()).is_some()
                ),
                "reject_400" => matches!(
                    &r,
                    Err(ParseError::Invalid { request: Some(req), .. })
                        if top_via_of(req.headers()).is_some()
                ),
                "drop" => match &r {
                    Ok(SipMessage::Response(_)) => true,
                    Ok(SipMessage::Request(_)) => false,
                    Err(ParseError::Unparsable(_)) => exp.parses != Some(true),
                    Err(ParseError::Invalid { request: None, .. }) => exp.parses != Some(true),
                    Err(_) => false,
                },
                other => panic!("{name}: unknown expectation {other}"),
            };
            if !ok {
                failures.push(format!(
                    "{name} (RFC 4475 {}): expected {}, got {}",
                    exp.section,
                    exp.expect,
                    outcome(&r)
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn request(name: &str) -> Request {
        match parse(&load(name)) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{name}: {}", outcome(&other)),
        }
    }

    #[test]
    fn wsinv_reads_like_the_rfc_says() {
        let req = request("TC_WSINV");
        let msg = SipMessage::Request(req.clone());
        assert_eq!(req.method(), &Method::Invite);
        assert_eq!(call_id(&msg).as_deref(), Some("wsinv.ndaksdj@192.0.2.1"));
        assert_eq!(cseq(&msg), Some((9, Method::Invite)));
        assert_eq!(max_forwards(&req), Some(68));
        assert_eq!(to_tag(&msg).as_deref(), Some("1918181833n"));
        assert_eq!(from_tag(&msg).as_deref(), Some("98asjd8"));
        let vias: Vec<TopVia> = values(req.headers(), "Via")
            .map(|v| parse_via(v).expect("via"))
            .collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].host, "192.0.2.2");
        assert_eq!(vias[0].branch.as_deref(), Some("390skdjuw"));
        assert_eq!(vias[1].transport, "TCP");
        assert_eq!(vias[1].host, "spindle.example.com");
        assert_eq!(vias[1].branch.as_deref(), Some("z9hG4bK9ikj8"));
        assert_eq!(vias[2].host, "192.168.255.111");
        assert_eq!(vias[2].branch.as_deref(), Some("z9hG4bK30239"));
        assert_eq!(header_value(&msg, "subject").as_deref(), Some(""));
        assert_eq!(
            header_value(&msg, "NewFangledHeader").as_deref(),
            Some("newfangled value continued newfangled value")
        );
        assert_eq!(
            header_value(&msg, "UnknownHeaderWithUnusualValue").as_deref(),
            Some(";;,,;;,;")
        );
        assert_eq!(
            header_value(&msg, "m").as_deref(),
            Some("\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com>;newparam=newvalue;secondparam;q=0.33")
        );
        assert_eq!(req.body().len(), 150);
        assert!(req.body().starts_with(b"v=0\r\n"));
    }

    #[test]
    fn longreq_keeps_all_34_via_hops_in_order() {
        let req = request("TC_LONGREQ_V");
        let hosts: Vec<String> = values(req.headers(), "Via")
            .map(|v| parse_via(v).expect("via").host)
            .collect();
        assert_eq!(hosts.len(), 34);
        assert_eq!(hosts[0], "sip33.example.com");
        assert_eq!(hosts[32], "sip1.example.com");
        assert_eq!(hosts[33], "host.example.com");
        assert_eq!(req.body().len(), 150);
    }

    #[test]
    fn datagram_content_length_rules() {
        // Extra octets after Content-Length are discarded (RFC 3261 §18.3).
        let req = request("TC_DBLREQ");
        assert_eq!(req.method(), &Method::Register);
        assert!(req.body().is_empty());
        // Binary multipart body kept exactly.
        let req = request("TC_MPART01");
        assert_eq!(req.body().len(), 553);
        assert!(req.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
        // No Content-Length on a datagram: the body is the rest.
        let req = request("TC_INV2543_I");
        assert!(req.body().starts_with(b"v=0\r\n"));
        assert!(req.body().ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
        let msg = SipMessage::Request(req.clone());
        assert_eq!(top_via(&msg).and_then(|v| v.branch), None);
        assert_eq!(from_tag(&msg), None);
        assert_eq!(max_forwards(&req), None);
    }

    #[test]
    fn invalid_reasons_name_the_problem() {
        let reason = |name: &str| match parse(&load(name)) {
            Err(ParseError::Invalid { reason, .. }) => reason,
            other => panic!("{name}: {}", outcome(&other)),
        };
        assert!(reason("TC_CLERR_I").contains("Content-Length"));
        assert!(reason("TC_MCL01_I").contains("Content-Length"));
        assert!(reason("TC_MISMATCH01_V").contains("CSeq"));
        assert!(reason("TC_MULTI01_I").contains("more than one"));
        assert!(reason("TC_INSUF_I").contains("missing"));
        assert!(reason("TC_QUOTBAL_I").contains("quoted"));
    }

    #[test]
    fn unsupported_keeps_headers_for_the_answer() {
        match parse(&load("TC_INTMETH")) {
            Err(ParseError::Unsupported { code, request, .. }) => {
                assert_eq!(code, 501);
                let msg = SipMessage::Request(request.clone());
                assert_eq!(
                    call_id(&msg).as_deref(),
                    Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
                );
                assert_eq!(from_tag(&msg).as_deref(), Some("_token~1'+`*%!-."));
                let resp = response(&request, code, None, Some("abc"));
                let text = resp.to_string();
                assert!(text.starts_with("SIP/2.0 501 "), "{text}");
                assert!(
                    text.contains("CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~")
                );
            }
            other => panic!("{}", outcome(&other)),
        }
    }

    #[test]
    fn responses_reparse_as_valid_sip() {
        for (name, raw) in corpus() {
            // Answers to invalid requests echo their bad headers: rsip must still read them.
            let (req, echoes_bad_headers) = match parse(&raw) {
                Ok(SipMessage::Request(r)) => (r, false),
                Err(ParseError::Unsupported { request, .. }) => (request, false),
                Err(ParseError::Invalid {
                    request: Some(r), ..
                }) => (r, true),
                _ => continue,
            };
            for (code, reason, tag) in [
                (200u16, None, Some("t1")),
                (400, Some("Bad Request: x"), None),
                (486, None, Some("t2")),
                (100, None, None),
            ] {
                let resp = response(&req, code, reason, tag);
                let bytes = resp.to_string().into_bytes();
                if echoes_bad_headers {
                    let back = SipMessage::try_from(&bytes[..]);
                    assert!(
                        matches!(back, Ok(SipMessage::Response(_))),
                        "{name}: {resp}"
                    );
                    continue;
                }
                let back = match parse(&bytes) {
                    Ok(SipMessage::Response(r)) => r,
                    other => panic!("{name} {code}: {} in\n{}", outcome(&other), resp),
                };
                assert_eq!(u16::from(back.status_code().clone()), code);
                let back = SipMessage::Response(back);
                let orig = SipMessage::Request(req.clone());
                assert_eq!(call_id(&back), call_id(&orig), "{name}");
                assert_eq!(cseq(&back), cseq(&orig), "{name}");
                assert_eq!(from_tag(&back), from_tag(&orig), "{name}");
                assert_eq!(top_via(&back), top_via(&orig), "{name}");
                let vias = |m: &SipMessage| values(m.headers(), "Via").count();
                assert_eq!(vias(&back), vias(&orig), "{name}");
                let want_tag = to_tag(&orig).or(tag.map(str::to_string));
                assert_eq!(to_tag(&back), want_tag, "{name}");
                assert_eq!(header_value(&back, "Content-Length").as_deref(), Some("0"));
                if let Some(r) = reason {
                    assert!(resp
                        .to_string()
                        .starts_with(&format!("SIP/2.0 {code} {r}\r\n")));
                }
            }
        }
    }

    fn mutate(rng: &mut StdRng, src: &[u8]) -> Vec<u8> {
        let mut v = src.to_vec();
        let n = rng.gen_range(1..=4);
        for _ in 0..n {
            let len = v.len().max(1);
            match rng.gen_range(0..8) {
                0 => v.truncate(rng.gen_range(0..len)),
                1 => {
                    let i = rng.gen_range(0..len);
                    if let Some(b) = v.get_mut(i) {
                        *b = rng.gen();
                    }
                }
                2 => {
                    let i = rng.gen_range(0..=v.len());
                    let tokens: [&[u8]; 10] = [
                        b"\r\n", b"\n", b" ", b",", b"\"", b"<", b">", b";", b":", b"\r\n ",
                    ];
                    let t = tokens[rng.gen_range(0..tokens.len())];
                    v.splice(i..i, t.iter().copied());
                }
                3 => {
                    let a = rng.gen_range(0..=v.len());
                    let b = rng.gen_range(a..=v.len());
                    v.drain(a..b);
                }
                4 => {
                    let a = rng.gen_range(0..=v.len());
                    let b = rng.gen_range(a..=v.len().min(a + 64));
                    let chunk: Vec<u8> = v[a..b].to_vec();
                    let i = rng.gen_range(0..=v.len());
                    v.splice(i..i, chunk);
                }
                5 => {
                    let i = rng.gen_range(0..=v.len());
                    let cl: &[u8] = match rng.gen_range(0..4) {
                        0 => b"Content-Length: 99999999999999999999999\r\n",
                        1 => b"l: 5\r\n",
                        2 => b"Via: SIP/2.0/UDP a, ,,\r\n",
                        _ => b"v:\r\n\r\n",
                    };
                    v.splice(i..i, cl.iter().copied());
                }
                6 => v.iter_mut().for_each(|b| {
                    if *b == b'\r' {
                        *b = b' ';
                    }
                }),
                _ => {
                    let i = rng.gen_range(0..=v.len());
                    v.insert(i, 0);
                }
            }
        }
        v
    }

    #[test]
    fn mutated_corpus_never_panics() {
        let mut rng = StdRng::seed_from_u64(4475);
        let files: Vec<Vec<u8>> = corpus().into_values().collect();
        let mut outcomes = [0usize; 4];
        for i in 0..4000 {
            let src = &files[i % files.len()];
            let m = mutate(&mut rng, src);
            match parse(&m) {
                Ok(_) => outcomes[0] += 1,
                Err(ParseError::Invalid { .. }) => outcomes[1] += 1,
                Err(ParseError::Unsupported { .. }) => outcomes[2] += 1,
                Err(ParseError::Unparsable(_)) => outcomes[3] += 1,
            }
            let _ = normalize(&m);
            let _ = frame(&m, 65536);
            let _ = frame(&m, 200);
            let cut = rng.gen_range(0..=m.len());
            let _ = frame(&m[..cut], 65536);
        }
        // The mutations must reach every kind of outcome, or they test too little.
        assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    }

    #[test]
    fn stream_framing_of_the_corpus_with_content_length() {
        for (name, raw) in corpus() {
            let Ok(norm) = normalize(&raw) else { continue };
            if !norm
                .windows(15)
                .any(|w| w.eq_ignore_ascii_case(b"content-length:"))
            {
                assert_eq!(
                    frame(&norm, 65536),
                    crate::sip::normalize::Frame::Invalid,
                    "{name}"
                );
                continue;
            }
            let mut stream = b"\r\n\r\n".to_vec();
            stream.extend_from_slice(&norm);
            stream.extend_from_slice(&norm);
            assert_eq!(
                frame(&stream, 65536),
                crate::sip::normalize::Frame::KeepAlive(4)
            );
            let rest = &stream[4..];
            assert_eq!(
                frame(rest, 65536),
                crate::sip::normalize::Frame::Complete(norm.len()),
                "{name}"
            );
            assert_eq!(
                frame(&rest[..norm.len() - 1], 65536),
                crate::sip::normalize::Frame::Incomplete,
                "{name}"
            );
        }
    }
}

#[cfg(test)]
mod uri_tests {
    use super::*;

    #[allow(clippy::result_large_err)]
    fn req(line: &str) -> Result<SipMessage, ParseError> {
        parse(
            format!(
                "{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
    }

    fn uri_of(line: &str) -> rsip::Uri {
        match req(line) {
            Ok(SipMessage::Request(r)) => r.uri,
            Err(e) => panic!("{line}: {e}"),
            Ok(_) => panic!("{line}: response"),
        }
    }

    #[test]
    fn request_uris_rsip_misreads_are_read_by_hand() {
        let u = uri_of("OPTIONS sip:first.last@example.com SIP/2.0");
        assert_eq!(u.auth.map(|a| a.user).as_deref(), Some("first.last"));
        assert_eq!(u.host_with_port.host.to_string(), "example.com");

        let u = uri_of("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0");
        assert_eq!(
            u.auth.map(|a| a.user).as_deref(),
            Some("user;par=u%40example.net")
        );

        let u = uri_of("OPTIONS sip:bob@[2001:db8::1]:5070;lr SIP/2.0");
        assert_eq!(
            u.host_with_port.host,
            rsip::Host::IpAddr("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(u.host_with_port.port, Some(rsip::Port::from(5070)));
        assert_eq!(u.params, vec![rsip::Param::Lr]);
    }

    #[test]
    fn bad_request_uris_get_400_or_416() {
        for line in [
            "OPTIONS <sip:a@b> SIP/2.0",
            "OPTIONS sip:a@b?Route=x SIP/2.0",
            "OPTIONS sip:a@b; lr SIP/2.0",
            "OPTIONS a@b SIP/2.0",
        ] {
            assert!(
                matches!(
                    req(line),
                    Err(ParseError::Invalid {
                        request: Some(_),
                        ..
                    })
                ),
                "{line}"
            );
        }
        assert!(matches!(
            req("OPTIONS tel:+15551234 SIP/2.0"),
            Err(ParseError::Unsupported { code: 416, .. })
        ));
        // rsip alone reads this one as user "foo", password "bar" and no scheme.
        assert_eq!(
            uri_of("OPTIONS foo:bar@pivotd.test SIP/2.0").scheme,
            Some(rsip::Scheme::Other("foo".into()))
        );
        assert_eq!(
            uri_of("OPTIONS sip:bar@pivotd.test SIP/2.0").scheme,
            Some(rsip::Scheme::Sip)
        );
    }

    #[test]
    fn top_via_reads_rport_and_received() {
        let v: TopVia = "SIP/2.0/udp 10.0.0.1:5070 ; branch=z9hG4bKx;rport;received=1.2.3.4"
            .parse()
            .expect("via");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received.as_deref(), Some("1.2.3.4"));
        assert_eq!(v.sent_by, "10.0.0.1:5070");
        let v: TopVia = "SIP/2.0/TCP [::1]:5061;rport=5062".parse().expect("v6");
        assert_eq!(v.host, "[::1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport, Some(Some(5062)));
        assert!("SIP/2.0/UDP".parse::<TopVia>().is_err());
        assert!("SIP/2.0/UDP h:99999".parse::<TopVia>().is_err());
    }

    /// Issue 7, symptom 1: a multi-byte character in the first bytes of the Request-URI
    /// panicked the shard that parsed it (`uri[..4]` cut a character in two).
    #[test]
    fn multibyte_request_uris_are_answered_not_panicked_on() {
        for method in ["OPTIONS", "INVITE"] {
            match req_with_method(method, &format!("{method} ab:é SIP/2.0")) {
                Err(ParseError::Unsupported {
                    code: 416, request, ..
                }) => {
                    assert!(top_via_of(request.headers()).is_some())
                }
                other => panic!("{method} ab:é: {:?}", other.map(|m| m.to_string())),
            }
        }
        for uri in [
            "ab:é", "sip€", "sipé:x", "sip:é", "sips:€", "a:𝄞", "é", "ab:", "x:€€",
        ] {
            let _ = check_request_uri(uri);
        }
        assert!(check_request_uri("sip:a@b?x=1").is_err());
        assert!(check_request_uri("SIPS:a@b?x=1").is_err());
        assert!(check_request_uri("ab:é?x").is_ok());
    }

    /// Every multi-byte character at every byte position of the request line: no panic, and
    /// anything that is still a request with a Via can be answered.
    #[test]
    fn multibyte_characters_anywhere_in_the_request_line() {
        let mut answered = 0;
        for line in [
            "OPTIONS sip:a@b SIP/2.0",
            "INVITE sips:1234@pivotd.test SIP/2.0",
            // A scheme shorter than `sip:`: the character lands inside the first 4 bytes.
            "MESSAGE im:bob@pivotd.test SIP/2.0",
        ] {
            let method = line.split(' ').next().unwrap_or_default();
            for ch in ["é", "€", "𝄞", "\u{80}"] {
                for at in 0..=line.len() {
                    let mut l = line.as_bytes().to_vec();
                    l.splice(at..at, ch.bytes());
                    let l = String::from_utf8_lossy(&l).into_owned();
                    match req_with_method(method, &l) {
                        Ok(SipMessage::Request(r)) => {
                            let _ = response(&r, 200, None, Some("t"));
                            answered += 1;
                        }
                        Err(ParseError::Unsupported { request, .. })
                        | Err(ParseError::Invalid {
                            request: Some(request),
                            ..
                        }) => {
                            let _ = response(&request, 400, Some(&l), None);
                            answered += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        assert!(answered > 100, "{answered}");
    }

    #[allow(clippy::result_large_err)]
    fn req_with_method(method: &str, line: &str) -> Result<SipMessage, ParseError> {
        parse(
            format!(
                "{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
    }
}
