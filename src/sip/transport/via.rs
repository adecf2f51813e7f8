//! The top Via of a request received over UDP: `received` and `rport` stamped (RFC 3581), and
//! the address its responses go to (RFC 3261 §18.2.2).

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use rsip::headers::UntypedHeader;

use super::{Peer, Proto};

/// Adds `received` (when the sent-by host is not the source address) and fills `rport`
/// (RFC 3581 §4) in the top Via, and returns where responses go (RFC 3261 §18.2.2): the source
/// address, and the source port when rport was asked for, else the sent-by port (default 5060).
///
/// `maddr` is deliberately not honoured: answering to an address named in the message would let
/// anyone reflect traffic through pivotd.
pub fn stamp_via(req: &mut rsip::Request, peer: &Peer) -> SocketAddr {
    let mut reply = peer.remote;
    if peer.proto == Proto::Tcp {
        return reply;
    }
    for h in req.headers.iter_mut() {
        if let rsip::Header::Via(via) = h {
            let (value, port) = stamp_via_value(via.value(), peer.remote);
            reply = SocketAddr::new(peer.remote.ip(), port);
            via.replace(value);
            break;
        }
    }
    reply
}

/// The string work of [`stamp_via`]: returns the new Via value and the response port.
pub fn stamp_via_value(value: &str, src: SocketAddr) -> (String, u16) {
    let mut parts = value.split(';');
    let head = parts.next().unwrap_or("").trim();
    // head: "SIP/2.0/UDP host[:port]"
    let sent_by = head.split_whitespace().last().unwrap_or("");
    let (host, port) = split_host_port(sent_by);
    let mut out = String::with_capacity(value.len() + 32);
    out.push_str(head);
    let mut has_rport = false;
    let mut has_received = false;
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            has_rport = true;
            let _ = write!(out, ";rport={}", src.port());
        } else if name.eq_ignore_ascii_case("received") {
            has_received = true;
            let _ = write!(out, ";received={}", src.ip());
        } else {
            out.push(';');
            out.push_str(p);
        }
    }
    let host_is_src = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip == src.ip())
        .unwrap_or(false);
    if !host_is_src && !has_received {
        let _ = write!(out, ";received={}", src.ip());
    }
    let reply_port = if has_rport {
        src.port()
    } else {
        port.unwrap_or(5060)
    };
    (out, reply_port)
}

/// Splits `host[:port]`, with IPv6 references in brackets.
pub fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &s[..end + 2];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.trim().parse().ok()),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_gets_received_and_rport() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (v, port) = stamp_via_value("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport", src);
        assert_eq!(
            v,
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport=40000;received=127.0.0.1"
        );
        assert_eq!(port, 40000);
    }

    #[test]
    fn via_without_rport_answers_sent_by_port() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (v, port) = stamp_via_value("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1", src);
        assert_eq!(v, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1");
        assert_eq!(port, 5070);
        let (_, port) = stamp_via_value("SIP/2.0/UDP host.example;branch=z9hG4bK1", src);
        assert_eq!(port, 5060);
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("[::1]:5060"), ("[::1]", Some(5060)));
        assert_eq!(split_host_port("a.b"), ("a.b", None));
        assert_eq!(split_host_port("1.2.3.4:7"), ("1.2.3.4", Some(7)));
    }
}
