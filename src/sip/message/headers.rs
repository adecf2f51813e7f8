//! Header fields: their grammar (RFC 3261 §20, §25, and what RFC 4475 calls malformed), the
//! checks a message passes before it is used, and accessors that never panic.

use std::str::FromStr;

use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;
use rsip::{Header, Headers, Method, Request, SipMessage};

use crate::sip::normalize::{self, is_token};

/// Why a message's header fields are refused (RFC 3261 §8.2, RFC 4475 §3.1.2, §3.3): the text
/// is the reason phrase of the 400 that answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("more than one {0}")]
    MoreThanOne(&'static str),
    #[error("malformed {0}: {1}")]
    Malformed(&'static str, GrammarError),
    /// The CSeq value itself (its grammar error is the whole reason).
    #[error(transparent)]
    CSeq(#[from] GrammarError),
    #[error("malformed Call-ID")]
    CallId,
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("malformed Max-Forwards")]
    MaxForwards,
    #[error("malformed Expires")]
    Expires,
}

/// What is wrong in one header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    #[error("no sent-by")]
    NoSentBy,
    #[error("malformed sent-protocol")]
    SentProtocol,
    #[error("malformed IPv6 sent-by")]
    Ipv6SentBy,
    #[error("malformed host")]
    Host,
    #[error("malformed port")]
    Port,
    #[error("malformed rport")]
    Rport,
    #[error("unexpected text before parameters")]
    TextBeforeParameters,
    #[error("empty or malformed parameter")]
    Parameter,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("display name without <addr-spec>")]
    DisplayNameWithoutAddrSpec,
    #[error("display name needs quotes")]
    UnquotedDisplayName,
    #[error("missing >")]
    MissingGreaterThan,
    #[error("whitespace in addr-spec")]
    WhitespaceInAddrSpec,
    #[error("URI with ?, comma or whitespace must be inside <>")]
    BareUri,
    #[error("malformed CSeq")]
    CSeq,
    #[error("malformed CSeq number")]
    CSeqNumber,
    #[error("malformed CSeq method")]
    CSeqMethod,
}

/// rsip's methods, matched case-sensitively (RFC 3261 §7.1: methods are case-sensitive).
pub(super) fn known_method(text: &str) -> Option<Method> {
    METHODS.into_iter().find(|m| method_name(*m) == text)
}

/// Every method rsip 0.4 knows ([`Method::all`] without its Vec).
const METHODS: [Method; 14] = [
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Info,
    Method::Invite,
    Method::Message,
    Method::Notify,
    Method::Options,
    Method::PRack,
    Method::Publish,
    Method::Refer,
    Method::Register,
    Method::Subscribe,
    Method::Update,
];

/// A method's name as on the wire (what rsip's `Display` writes, without the two allocations
/// each of its writes costs: it upper-cases the variant's name every time).
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Info => "INFO",
        Method::Invite => "INVITE",
        Method::Message => "MESSAGE",
        Method::Notify => "NOTIFY",
        Method::Options => "OPTIONS",
        Method::PRack => "PRACK",
        Method::Publish => "PUBLISH",
        Method::Refer => "REFER",
        Method::Register => "REGISTER",
        Method::Subscribe => "SUBSCRIBE",
        Method::Update => "UPDATE",
    }
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

pub(super) fn values<'a>(
    headers: &'a Headers,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers.iter().filter_map(move |h| value_if_named(h, name))
}

/// The trimmed value of `h` when its name is `name` (any case).
fn value_if_named<'h>(h: &'h rsip::Header, name: &str) -> Option<&'h str> {
    let (n, v) = header_name_value(h);
    n.eq_ignore_ascii_case(name).then_some(v.trim())
}

/// The checks of [`validate_headers`] on a parsed message.
pub(super) fn validate(msg: &SipMessage) -> Result<(), HeaderError> {
    match msg {
        SipMessage::Request(req) => {
            validate_headers(req.headers(), Some(method_name(*req.method())))
        }
        SipMessage::Response(resp) => validate_headers(resp.headers(), None),
    }
}

/// The checks of RFC 3261 §8.2 and RFC 4475 §3.1.2/§3.3 on the header fields.
pub(super) fn validate_headers(
    headers: &Headers,
    request_method: Option<&str>,
) -> Result<(), HeaderError> {
    let mut vias = 0;
    for v in values(headers, "Via") {
        parse_via_ref(v, true).map_err(|e| HeaderError::Malformed("Via", e))?;
        vias += 1;
    }
    if vias == 0 {
        return Err(HeaderError::Missing("Via"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        match values(headers, name).count() {
            0 => return Err(HeaderError::Missing(name)),
            1 => {}
            _ => return Err(HeaderError::MoreThanOne(name)),
        }
    }
    for name in ["From", "To"] {
        for v in values(headers, name) {
            check_name_addr(v).map_err(|e| HeaderError::Malformed(name, e))?;
        }
    }
    for v in values(headers, "Contact") {
        if v == "*" {
            continue;
        }
        for c in normalize::split_top_level_commas(v.as_bytes()) {
            let c = String::from_utf8_lossy(c);
            check_name_addr(c.trim()).map_err(|e| HeaderError::Malformed("Contact", e))?;
        }
    }
    if let Some(id) = values(headers, "Call-ID").next() {
        if id.is_empty() || id.contains([' ', '\t']) {
            return Err(HeaderError::CallId);
        }
    }
    if let Some(v) = values(headers, "CSeq").next() {
        let (_, m) = parse_cseq(v)?;
        if let Some(rm) = request_method {
            if m != rm {
                return Err(HeaderError::CSeqMethodMismatch);
            }
        }
    }
    let mut mf = values(headers, "Max-Forwards");
    if let Some(v) = mf.next() {
        if mf.next().is_some() {
            return Err(HeaderError::MoreThanOne("Max-Forwards"));
        }
        match parse_u32(v) {
            Some(n) if n <= 255 => {}
            _ => return Err(HeaderError::MaxForwards),
        }
    }
    for v in values(headers, "Expires") {
        if parse_u32(v).is_none() {
            return Err(HeaderError::Expires);
        }
    }
    Ok(())
}

/// 1*DIGIT that fits in 32 bits (leading zeros allowed, RFC 4475 §3.1.1.1).
pub(super) fn parse_u32(v: &str) -> Option<u32> {
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
pub(super) fn parse_cseq(v: &str) -> Result<(u32, &str), GrammarError> {
    let v = v.trim();
    let sp = v.find([' ', '\t']).ok_or(GrammarError::CSeq)?;
    let (n, m) = v.split_at(sp);
    let n = parse_u32(n).ok_or(GrammarError::CSeqNumber)?;
    let m = m.trim();
    if m.is_empty() || !m.bytes().all(is_token) {
        return Err(GrammarError::CSeqMethod);
    }
    Ok((n, m))
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
pub(super) fn parse_params(s: &str) -> Result<Vec<(&str, Option<&str>)>, GrammarError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let pieces = split_params(s);
    let mut it = pieces.into_iter();
    if it.next().map(str::trim) != Some("") {
        return Err(GrammarError::TextBeforeParameters);
    }
    it.map(|p| {
        let (n, v) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        if n.is_empty() || !n.bytes().all(is_token) {
            return Err(GrammarError::Parameter);
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
pub(super) fn split_name_addr(v: &str) -> Result<(&str, &str), GrammarError> {
    let v = v.trim();
    let angle = if v.starts_with('"') {
        let end = quoted_end(v).ok_or(GrammarError::UnterminatedQuote)?;
        let rest = v[end..].trim_start();
        if !rest.starts_with('<') {
            return Err(GrammarError::DisplayNameWithoutAddrSpec);
        }
        Some(rest)
    // A `<` after a `;` is in a header parameter of a bare URI (`;+sip.instance="<urn:…>"`):
    // a token display name cannot hold a `;`.
    } else if let Some(lt) = v.find('<').filter(|&lt| !v[..lt].contains(';')) {
        let display = &v[..lt];
        if !display
            .bytes()
            .all(|b| is_token(b) || b == b' ' || b == b'\t')
        {
            return Err(GrammarError::UnquotedDisplayName);
        }
        Some(&v[lt..])
    } else {
        None
    };
    match angle {
        Some(a) => {
            let gt = a.find('>').ok_or(GrammarError::MissingGreaterThan)?;
            let uri = &a[1..gt];
            if uri.is_empty() || uri.contains([' ', '\t']) {
                return Err(GrammarError::WhitespaceInAddrSpec);
            }
            Ok((uri, &a[gt + 1..]))
        }
        None => {
            let (uri, params) = match v.find(';') {
                Some(i) => v.split_at(i),
                None => (v, ""),
            };
            if uri.is_empty() || uri.contains([' ', '\t', '?', ',', '"', '>']) {
                return Err(GrammarError::BareUri);
            }
            Ok((uri, params))
        }
    }
}

fn check_name_addr(v: &str) -> Result<(), GrammarError> {
    let (_, params) = split_name_addr(v)?;
    parse_params(params).map(|_| ())
}

pub(in crate::sip) fn tag_of(v: &str) -> Option<String> {
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
    /// `host[:port]` as written.
    pub sent_by: String,
}

pub(super) fn parse_via(v: &str) -> Result<TopVia, GrammarError> {
    parse_via_with(v, true)
}

/// `strict`: empty parameters are an error (validation); otherwise skipped (answering).
fn parse_via_with(v: &str, strict: bool) -> Result<TopVia, GrammarError> {
    let via = parse_via_ref(v, strict)?;
    Ok(TopVia {
        branch: via.branch.map(str::to_string),
        host: via.host.to_string(),
        port: via.port,
        transport: via.transport.to_ascii_uppercase(),
        rport: via.rport,
        received: via.received.map(str::to_string),
        sent_by: via.sent_by.to_string(),
    })
}

/// A Via value read in place: [`TopVia`]'s fields borrowed from the value, `transport` as
/// written. Validation reads every Via of every message with it, and keeps nothing.
struct ViaRef<'a> {
    branch: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
    transport: &'a str,
    rport: Option<Option<u16>>,
    received: Option<&'a str>,
    sent_by: &'a str,
}

/// The Via grammar (see [`parse_via_with`]).
fn parse_via_ref(v: &str, strict: bool) -> Result<ViaRef<'_>, GrammarError> {
    let v = v.trim();
    let sp = v.find([' ', '\t']).ok_or(GrammarError::NoSentBy)?;
    let (proto, rest) = v.split_at(sp);
    let mut p = proto.split('/');
    let (name, version, transport) = match (p.next(), p.next(), p.next(), p.next()) {
        (Some(n), Some(ver), Some(t), None) => (n, ver, t),
        _ => return Err(GrammarError::SentProtocol),
    };
    if !name.eq_ignore_ascii_case("SIP")
        || version.is_empty()
        || transport.is_empty()
        || !transport.bytes().all(is_token)
    {
        return Err(GrammarError::SentProtocol);
    }
    let rest = rest.trim();
    let (sent_by, params) = match rest.find(';') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let sent_by = sent_by.trim();
    let (host, port) = if let Some(stripped) = sent_by.strip_prefix('[') {
        let close = stripped.find(']').ok_or(GrammarError::Ipv6SentBy)?;
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
        return Err(GrammarError::Host);
    }
    let port = match port {
        Some(p) => Some(p.trim().parse::<u16>().map_err(|_| GrammarError::Port)?),
        None => None,
    };
    let mut via = ViaRef {
        branch: None,
        host,
        port,
        transport,
        rport: None,
        received: None,
        sent_by,
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
            via.branch = val;
        } else if n.eq_ignore_ascii_case("rport") {
            via.rport = Some(match val {
                Some(p) if !p.is_empty() => Some(p.parse().map_err(|_| GrammarError::Rport)?),
                _ => None,
            });
        } else if n.eq_ignore_ascii_case("received") {
            via.received = val;
        }
    }
    Ok(via)
}

pub(super) fn top_via_of(headers: &Headers) -> Option<TopVia> {
    // The first hop of a comma-joined value too (normalised messages have one per line).
    let first = values(headers, "Via").next()?;
    let hop = normalize::split_top_level_commas(first.as_bytes())
        .into_iter()
        .next()
        .unwrap_or_default();
    parse_via_with(std::str::from_utf8(hop).ok()?, false).ok()
}

/// Accessors take a request, a response or a message alike.
pub(super) fn headers_of_msg(msg: &impl rsip::message::HasHeaders) -> &Headers {
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
    Some((n, known_method(m)?))
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

/// Expires as delta-seconds (RFC 3261 §20.19); a malformed one never gets past the parser.
pub fn expires(msg: &impl rsip::message::HasHeaders) -> Option<u32> {
    parse_u32(values(headers_of_msg(msg), "Expires").next()?)
}

/// First value of a header; `name` is matched case-insensitively, full or compact form.
pub fn header_value(msg: &impl rsip::message::HasHeaders, name: &str) -> Option<String> {
    header_str(msg, name).map(str::to_string)
}

/// [`header_value`] borrowed from the message, for a look that needs no copy.
pub fn header_str<'m>(msg: &'m impl rsip::message::HasHeaders, name: &str) -> Option<&'m str> {
    let name = full_name(name);
    headers_of_msg(msg)
        .iter()
        .find_map(|h| value_if_named(h, name))
}

/// A one-letter compact name as its full name (RFC 3261 §7.3.3); other names as given.
fn full_name(name: &str) -> &str {
    match name.as_bytes() {
        [c] => normalize::expand_compact(*c).unwrap_or(name),
        _ => name,
    }
}

/// Every value (trimmed) of a header that may repeat, in order; `name` as for
/// [`header_value`].
pub fn header_values<'m>(
    msg: &'m impl rsip::message::HasHeaders,
    name: &'m str,
) -> impl Iterator<Item = &'m str> + 'm {
    values(headers_of_msg(msg), full_name(name))
}

impl FromStr for TopVia {
    type Err = GrammarError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_via(s)
    }
}
