//! One normalising pass in front of rsip 0.4.
//!
//! rsip parses only a narrow form of SIP: CRLF line ends, one header per line, `Name: value`
//! with no whitespace before the colon, full header names, one Via hop per Via line, and it
//! takes everything after the blank line as the body. Real traffic (and RFC 4475) uses the
//! wider grammar of RFC 3261 §7.3 and §25. This module rewrites the raw bytes into rsip's form,
//! and frames messages on stream transports (RFC 3261 §18.3).
//!
//! Most messages from real phones already are in rsip's form: they are checked in one scan and
//! returned borrowed ([`normalize_cow`]), without copying or rewriting.

use std::borrow::Cow;

mod frame;
pub use frame::{frame, Frame};

/// Why raw bytes could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("empty message")]
    Empty,
    #[error("no blank line after the header fields")]
    NoHeaderEnd,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed header line: {0}")]
    BadHeaderLine(String),
    #[error("more than one Content-Length header")]
    MultipleContentLength,
    #[error("invalid Content-Length: {0}")]
    BadContentLength(String),
    #[error("body shorter than Content-Length ({content_length} > {body})")]
    BodyTooShort { content_length: usize, body: usize },
}

/// The compact header names of RFC 3261 §7.3.3 and of the extensions that define one.
pub fn expand_compact(name: u8) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",               // RFC 6665
        b'r' => "Refer-To",            // RFC 3515
        b'b' => "Referred-By",         // RFC 3892
        b'u' => "Allow-Events",        // RFC 6665
        b'x' => "Session-Expires",     // RFC 4028
        b'a' => "Accept-Contact",      // RFC 3841
        b'j' => "Reject-Contact",      // RFC 3841
        b'd' => "Request-Disposition", // RFC 3841
        b'y' => "Identity",            // RFC 8224
        _ => return None,
    })
}

/// token characters of RFC 3261 §25.1 (the same set rsip accepts in names).
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Physical lines: (content without the line end, offset just after the line end, CRLF?).
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a [u8], usize, bool);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let line = &rest[..nl];
                self.pos += nl + 1;
                match line.split_last() {
                    Some((b'\r', l)) => Some((l, self.pos, true)),
                    _ => Some((line, self.pos, false)),
                }
            }
            None => {
                // A last line without line end.
                self.pos = self.buf.len();
                Some((rest, self.pos, false))
            }
        }
    }
}

/// One logical header field: name as written, value lines (first + continuation lines).
struct Field<'a> {
    name: &'a [u8],
    /// Value on the first line (after the colon, untrimmed).
    first: &'a [u8],
    /// Continuation lines (folded, RFC 3261 §7.3.1), each untrimmed.
    cont: Vec<&'a [u8]>,
}

impl Field<'_> {
    /// Unfolded, trimmed value: folding is equivalent to one SP (RFC 3261 §7.3.1).
    fn value(&self) -> Cow<'_, [u8]> {
        if self.cont.is_empty() {
            return Cow::Borrowed(trim(self.first));
        }
        let mut v = trim(self.first).to_vec();
        for c in &self.cont {
            let c = trim(c);
            if c.is_empty() {
                continue;
            }
            if !v.is_empty() {
                v.push(b' ');
            }
            v.extend_from_slice(c);
        }
        Cow::Owned(v)
    }

    fn full_name(&self) -> Cow<'_, [u8]> {
        match self.name {
            [c] => match expand_compact(*c) {
                Some(full) => Cow::Borrowed(full.as_bytes()),
                None => Cow::Borrowed(self.name),
            },
            n => Cow::Borrowed(n),
        }
    }
}

/// What one scan of a message found.
struct Scan<'a> {
    start_line: &'a [u8],
    fields: Vec<Field<'a>>,
    /// Offset of the body in the message (after the blank line).
    body_start: usize,
    /// Rewriting needed for rsip.
    dirty: bool,
}

fn eq_name(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn scan(msg: &[u8], lenient: bool) -> Result<Scan<'_>, NormalizeError> {
    let mut lines = Lines { buf: msg, pos: 0 };
    let (start_line, _, crlf) = lines.next().ok_or(NormalizeError::Empty)?;
    let mut dirty = !crlf || !start_line_clean(start_line);
    let mut fields: Vec<Field<'_>> = Vec::with_capacity(16);
    let mut body_start = msg.len();
    let mut has_blank_line = false;
    for (line, next, crlf) in lines.by_ref() {
        if line.is_empty() {
            dirty |= !crlf;
            body_start = next;
            has_blank_line = true;
            break;
        }
        dirty |= !crlf;
        if line.first().copied().is_some_and(is_ws) {
            // Folded continuation of the previous header field.
            dirty = true;
            match fields.last_mut() {
                Some(f) => f.cont.push(line),
                None if lenient => {}
                None => return Err(bad_line(line)),
            }
            continue;
        }
        let name_len = line
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_len);
        let after_ws = trim_start(rest);
        let ws_before_colon = after_ws.len() != rest.len();
        let value = match after_ws.split_first() {
            Some((b':', v)) if !name.is_empty() => v,
            _ if lenient => continue,
            _ => return Err(bad_line(line)),
        };
        dirty |= ws_before_colon;
        if name.len() == 1 && expand_compact(name[0]).is_some() {
            dirty = true;
        }
        // rsip skips spaces and tabs after the colon but keeps trailing whitespace.
        if value.last().copied().is_some_and(is_ws) {
            dirty = true;
        }
        if !dirty {
            dirty = needs_value_rewrite(name, value);
        }
        fields.push(Field {
            name,
            first: value,
            cont: Vec::new(),
        });
    }
    if !has_blank_line && !lenient {
        return Err(NormalizeError::NoHeaderEnd);
    }
    Ok(Scan {
        start_line,
        fields,
        body_start,
        dirty,
    })
}

fn bad_line(line: &[u8]) -> NormalizeError {
    let shown = &line[..line.len().min(40)];
    NormalizeError::BadHeaderLine(String::from_utf8_lossy(shown).into_owned())
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// A request line rsip takes as it is: `METHOD SP URI SP SIP/x.y`, single spaces, no tabs,
/// no trailing whitespace. Status lines are left alone (the reason phrase may hold anything).
fn start_line_clean(line: &[u8]) -> bool {
    if line.starts_with(b"SIP/") {
        return true;
    }
    let spaces = line.iter().filter(|&&b| b == b' ').count();
    spaces == 2
        && !line.contains(&b'\t')
        && !line.windows(2).any(|w| w == b"  ")
        && line.first() != Some(&b' ')
        && line.last() != Some(&b' ')
}

/// Header values rsip's typed parsers (and our accessors) would misread as written.
fn needs_value_rewrite(name: &[u8], value: &[u8]) -> bool {
    let value = trim(value);
    if eq_name(name, "Via") {
        // Canonical: one SP between sent-protocol and sent-by, no comma-joined hops.
        value.iter().filter(|&&b| b == b' ').count() != 1 || value.contains(&b',')
    } else if eq_name(name, "From")
        || eq_name(name, "To")
        || eq_name(name, "Contact")
        || eq_name(name, "Route")
        || eq_name(name, "Record-Route")
    {
        ws_around_separators(value)
    } else {
        false
    }
}

/// Where the bytes of a header value stand: inside a quoted string (RFC 3261 §25.1, with
/// backslash escapes), inside `<...>`, or outside both. The separators that matter to the
/// normaliser (`,` `;` `=` and whitespace) only count outside.
#[derive(Default)]
struct Nesting {
    quoted: bool,
    angled: bool,
    escaped: bool,
}

impl Nesting {
    /// Steps over `b`; true when `b` stands outside quotes and `<...>` (a delimiter that
    /// opens one stands outside, the one that closes it inside).
    fn outside(&mut self, b: u8) -> bool {
        if self.quoted {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.quoted = false;
            }
            return false;
        }
        if self.angled {
            if b == b'>' {
                self.angled = false;
            }
            return false;
        }
        match b {
            b'"' => self.quoted = true,
            b'<' => self.angled = true,
            _ => {}
        }
        true
    }
}

/// Whitespace next to `;` or `=` outside quoted strings and `<...>`.
fn ws_around_separators(value: &[u8]) -> bool {
    let mut nesting = Nesting::default();
    let mut prev: u8 = 0;
    for &b in value {
        if nesting.outside(b) {
            match b {
                b';' | b'=' if is_ws(prev) => return true,
                _ if is_ws(b) && (prev == b';' || prev == b'=') => return true,
                _ => {}
            }
        }
        prev = b;
    }
    false
}

/// Parses a Content-Length value: 1*DIGIT (RFC 3261 §20.14).
fn parse_content_length(v: &[u8]) -> Result<usize, NormalizeError> {
    let bad = || NormalizeError::BadContentLength(String::from_utf8_lossy(v).into_owned());
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let mut n: usize = 0;
    for &d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(n)
}

fn content_length(fields: &[Field<'_>]) -> Result<Option<usize>, NormalizeError> {
    let mut found = None;
    for f in fields {
        if eq_name(&f.full_name(), "Content-Length") {
            if found.is_some() {
                return Err(NormalizeError::MultipleContentLength);
            }
            found = Some(parse_content_length(&f.value())?);
        }
    }
    Ok(found)
}

fn skip_leading_crlf(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(raw.len());
    &raw[start..]
}

/// Rewrites raw bytes into the form rsip 0.4 parses (see TOOLING.md for what rsip lacks):
/// CRLF line ends, unfolded header lines, no whitespace before ':', compact header names
/// expanded, comma-joined Via values split into one Via header each, body cut to
/// Content-Length (datagram: longer body truncated per RFC 3261 §18.3, shorter = error).
pub fn normalize(raw: &[u8]) -> Result<Vec<u8>, NormalizeError> {
    normalize_cow(raw).map(Cow::into_owned)
}

/// [`normalize`] without a copy when the message needs no rewriting (the common case):
/// returns a slice of `raw` (leading CRLFs skipped, extra datagram bytes cut off).
///
/// Datagram rules (RFC 3261 §18.3): without Content-Length the body is the rest of the
/// datagram; bytes beyond Content-Length are discarded; a body shorter than Content-Length
/// is an error. Several Content-Length headers or a value that is not 1*DIGIT are errors.
pub fn normalize_cow(raw: &[u8]) -> Result<Cow<'_, [u8]>, NormalizeError> {
    let msg = skip_leading_crlf(raw);
    let scan = scan(msg, false)?;
    let body = msg.get(scan.body_start..).unwrap_or_default();
    let body = match content_length(&scan.fields)? {
        Some(cl) if cl > body.len() => {
            return Err(NormalizeError::BodyTooShort {
                content_length: cl,
                body: body.len(),
            })
        }
        Some(cl) => &body[..cl],
        None => body,
    };
    if !scan.dirty {
        return Ok(Cow::Borrowed(&msg[..scan.body_start + body.len()]));
    }
    let start = normalize_start_line(scan.start_line).ok_or(NormalizeError::BadStartLine)?;
    let mut out = Vec::with_capacity(msg.len() + 64);
    out.extend_from_slice(&start);
    out.extend_from_slice(b"\r\n");
    write_fields(&mut out, &scan.fields);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(Cow::Owned(out))
}

/// The header part, rewritten like [`normalize`] but forgiving (for building an error
/// response to a message that failed): lines that are not header fields are dropped, the
/// blank line may be missing, Content-Length is not checked and the body is left out.
/// Returns the start line as written (trimmed) and the header block ending in the blank line.
pub fn normalize_headers_lenient(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let msg = skip_leading_crlf(raw);
    let scan = scan(msg, true).ok()?;
    let mut out = Vec::with_capacity(msg.len().min(scan.body_start) + 64);
    write_fields(&mut out, &scan.fields);
    out.extend_from_slice(b"\r\n");
    Some((trim(scan.start_line).to_vec(), out))
}

/// Request line with runs of whitespace collapsed to one SP and trailing whitespace removed:
/// RFC 4475 §3.1.2.9/§3.1.2.10 allow an element to be liberal here. `None` unless it has
/// exactly three parts. Status lines are returned as they are.
fn normalize_start_line(line: &[u8]) -> Option<Cow<'_, [u8]>> {
    if line.starts_with(b"SIP/") {
        return Some(Cow::Borrowed(line));
    }
    if start_line_clean(line) {
        return Some(Cow::Borrowed(line));
    }
    let parts: Vec<&[u8]> = line
        .split(|&b| is_ws(b))
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 3 {
        return None;
    }
    Some(Cow::Owned(parts.join(&b' ')))
}

fn write_fields(out: &mut Vec<u8>, fields: &[Field<'_>]) {
    for f in fields {
        let name = f.full_name();
        let value = f.value();
        if eq_name(&name, "Via") {
            for hop in split_top_level_commas(&value) {
                write_field(out, &name, &canonical_via(trim(hop)));
            }
        } else if eq_name(&name, "From")
            || eq_name(&name, "To")
            || eq_name(&name, "Contact")
            || eq_name(&name, "Route")
            || eq_name(&name, "Record-Route")
        {
            write_field(out, &name, &squeeze(&value, b";=,"));
        } else {
            write_field(out, &name, &value);
        }
    }
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Splits a header value at commas that are outside quoted strings and `<...>`
/// (RFC 3261 §7.3.1: comma-separated values are equivalent to separate header fields).
pub fn split_top_level_commas(value: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut nesting = Nesting::default();
    let mut start = 0;
    for (i, &b) in value.iter().enumerate() {
        if nesting.outside(b) && b == b',' {
            parts.push(&value[start..i]);
            start = i + 1;
        }
    }
    parts.push(&value[start..]);
    parts
}

/// Removes whitespace next to the separators `seps` (outside quotes and `<...>`) and
/// collapses other whitespace runs to one SP.
fn squeeze(value: &[u8], seps: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut nesting = Nesting::default();
    let mut pending_ws = false;
    for &b in value {
        if !nesting.outside(b) {
            out.push(b);
            continue;
        }
        if is_ws(b) {
            pending_ws = true;
            continue;
        }
        if pending_ws {
            pending_ws = false;
            let prev_sep = out.last().is_some_and(|p| seps.contains(p));
            if !prev_sep && !seps.contains(&b) && !out.is_empty() {
                out.push(b' ');
            }
        }
        out.push(b);
    }
    out
}

/// `SIP / 2.0 / UDP  host ; branch = x` becomes `SIP/2.0/UDP host;branch=x`
/// (RFC 3261 §20.42 allows LWS around `/`, `;`, `=` and `:`). Values it cannot read are
/// returned as they are, for the validation after rsip to reject.
fn canonical_via(hop: &[u8]) -> Cow<'_, [u8]> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(3);
    let mut rest = hop;
    for i in 0..3 {
        rest = trim_start(rest);
        let len = rest
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(rest.len());
        if len == 0 {
            return Cow::Borrowed(hop);
        }
        parts.push(&rest[..len]);
        rest = trim_start(&rest[len..]);
        if i < 2 {
            match rest.split_first() {
                Some((b'/', r)) => rest = r,
                _ => return Cow::Borrowed(hop),
            }
        }
    }
    let mut out = Vec::with_capacity(hop.len());
    out.extend_from_slice(&parts.join(&b'/'));
    out.push(b' ');
    out.extend_from_slice(&squeeze(trim(rest), b";=:"));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn clean_message_is_returned_borrowed() {
        let out = normalize_cow(CLEAN).expect("clean");
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&out[..], CLEAN);
        // Leading CRLFs and extra datagram bytes are cut without copying.
        let mut dgram = b"\r\n".to_vec();
        dgram.extend_from_slice(CLEAN);
        dgram.extend_from_slice(b"garbage");
        let out = normalize_cow(&dgram).expect("with extras");
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&out[..], CLEAN);
    }

    #[test]
    fn compact_folded_lf_only_and_spaced_colons_are_rewritten() {
        let raw = b"OPTIONS  sip:bob@example.com SIP/2.0 \n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP / 2.0 / TCP b.example.com ; branch = z9hG4bK2\n\
f : <sip:alice@example.com> ; tag = a1\n\
t:\n <sip:bob@example.com>\n\
i: c1\n\
CSeq: 1\n  OPTIONS\n\
k: timer\n\
x: 1800\n\
l: 0\n\n";
        let out = normalize(raw).expect("normalises");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
Via: SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 OPTIONS\r\n\
Supported: timer\r\n\
Session-Expires: 1800\r\n\
Content-Length: 0\r\n\
\r\n"
        );
    }

    #[test]
    fn commas_inside_quotes_and_angles_do_not_split() {
        let parts = split_top_level_commas(b"\"a, b\" <sip:x@y;p=1,2>, <sip:z@w>");
        assert_eq!(
            parts,
            vec![&b"\"a, b\" <sip:x@y;p=1,2>"[..], &b" <sip:z@w>"[..]]
        );
        let parts = split_top_level_commas(b"SIP/2.0/UDP h;x=\"1,2\",SIP/2.0/UDP g");
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn all_compact_names_expand() {
        let pairs = [
            (b'i', "Call-ID"),
            (b'M', "Contact"),
            (b'e', "Content-Encoding"),
            (b'l', "Content-Length"),
            (b'c', "Content-Type"),
            (b'f', "From"),
            (b's', "Subject"),
            (b'k', "Supported"),
            (b't', "To"),
            (b'v', "Via"),
            (b'o', "Event"),
            (b'r', "Refer-To"),
            (b'b', "Referred-By"),
            (b'u', "Allow-Events"),
            (b'x', "Session-Expires"),
            (b'a', "Accept-Contact"),
            (b'j', "Reject-Contact"),
            (b'd', "Request-Disposition"),
            (b'y', "Identity"),
        ];
        for (c, name) in pairs {
            assert_eq!(expand_compact(c), Some(name));
        }
        assert_eq!(expand_compact(b'z'), None);
    }

    #[test]
    fn content_length_rules_on_datagrams() {
        let msg = |cl: &str, body: &str| {
            format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{cl}\r\n{body}"
            )
            .into_bytes()
        };
        let out = normalize(&msg("Content-Length: 3\r\n", "abcdef")).expect("truncated");
        assert!(out.ends_with(b"\r\n\r\nabc"));
        let out = normalize(&msg("", "abcdef")).expect("no CL: rest");
        assert!(out.ends_with(b"\r\n\r\nabcdef"));
        assert_eq!(
            normalize(&msg("Content-Length: 9\r\n", "abc")),
            Err(NormalizeError::BodyTooShort {
                content_length: 9,
                body: 3
            })
        );
        assert!(matches!(
            normalize(&msg("Content-Length: -1\r\n", "")),
            Err(NormalizeError::BadContentLength(_))
        ));
        assert_eq!(
            normalize(&msg("Content-Length: 0\r\nl: 0\r\n", "")),
            Err(NormalizeError::MultipleContentLength)
        );
        assert_eq!(
            normalize(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n"),
            Err(NormalizeError::NoHeaderEnd)
        );
        assert_eq!(normalize(b"\r\n\r\n"), Err(NormalizeError::Empty));
        assert!(matches!(
            normalize(b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\n\r\n"),
            Err(NormalizeError::BadHeaderLine(_))
        ));
    }

    #[test]
    fn framing_on_streams() {
        assert_eq!(frame(b"", 65536), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r\n", 65536), Frame::KeepAlive(4));
        assert_eq!(frame(b"\r\nINVITE", 65536), Frame::KeepAlive(2));
        assert_eq!(frame(&CLEAN[..20], 65536), Frame::Incomplete);
        assert_eq!(frame(CLEAN, 65536), Frame::Complete(CLEAN.len()));
        let mut two = CLEAN.to_vec();
        two.extend_from_slice(CLEAN);
        assert_eq!(frame(&two, 65536), Frame::Complete(CLEAN.len()));
        // Header part complete, body still coming.
        assert_eq!(frame(&CLEAN[..CLEAN.len() - 2], 65536), Frame::Incomplete);
        // Caps: on the header part and on header part + body.
        assert_eq!(frame(CLEAN, 100), Frame::TooLarge);
        assert_eq!(frame(&[b'A'; 200], 100), Frame::TooLarge);
        assert_eq!(
            frame(&CLEAN[..CLEAN.len() - 1], CLEAN.len() - 2),
            Frame::TooLarge
        );
        // No Content-Length on a stream cannot be framed.
        let no_cl = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(frame(no_cl, 65536), Frame::Invalid);
        let compact = b"OPTIONS sip:a@b SIP/2.0\r\nl : 2\r\n\r\nab";
        assert_eq!(frame(compact, 65536), Frame::Complete(compact.len()));
        let huge = b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999999\r\n\r\n";
        assert_eq!(frame(huge, 65536), Frame::Invalid);
        let big = b"OPTIONS sip:a@b SIP/2.0\r\nl: 70000\r\n\r\n";
        assert_eq!(frame(big, 65536), Frame::TooLarge);
    }
}
