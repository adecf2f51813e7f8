//! Framing on a stream (RFC 3261 §18.3): where one message ends in a TCP buffer. Apart from
//! the normaliser because it answers a different question — how many bytes — with the same
//! header scan.

use super::{content_length, scan};

/// Result of looking for one SIP message at the start of a TCP stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// A whole message: this many bytes (start line, headers, blank line and body).
    Complete(usize),
    /// CRLF(s) before a start line: keep-alive (RFC 5626 §3.5.1 double-CRLF ping, or the
    /// CRLF pong); skip this many bytes. A double-CRLF ping (`n >= 4`) is answered with CRLF.
    KeepAlive(usize),
    /// The message is larger than the cap: close the connection.
    TooLarge,
    /// No Content-Length or a bad one: the stream cannot be framed; close the connection.
    Invalid,
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    // Index just after the blank line; accepts CRLFCRLF and bare-LF line ends.
    let mut i = 0;
    while let Some(off) = buf
        .get(i..)
        .and_then(|s| s.iter().position(|&b| b == b'\n'))
    {
        let nl = i + off;
        let next = buf.get(nl + 1).copied();
        match next {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// Looks for one SIP message at the start of a stream buffer (RFC 3261 §18.3): CRLFs before
/// a start line are keep-alives; the header part ends at the blank line and the body is
/// exactly Content-Length bytes (mandatory on streams). `max_size` caps header part + body.
pub fn frame(buf: &[u8], max_size: usize) -> Frame {
    let crlfs = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if crlfs > 0 {
        return Frame::KeepAlive(crlfs);
    }
    let header_end = match find_header_end(buf) {
        Some(end) if end > max_size => return Frame::TooLarge,
        Some(end) => end,
        None if buf.len() >= max_size => return Frame::TooLarge,
        None => return Frame::Incomplete,
    };
    let head = &buf[..header_end];
    let scan = match scan(head, false) {
        Ok(s) => s,
        Err(_) => return Frame::Invalid,
    };
    let cl = match content_length(&scan.fields) {
        Ok(Some(cl)) => cl,
        Ok(None) | Err(_) => return Frame::Invalid,
    };
    match header_end.checked_add(cl) {
        Some(total) if total <= max_size => {
            if buf.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Incomplete
            }
        }
        _ => Frame::TooLarge,
    }
}
