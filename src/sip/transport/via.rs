//! The top Via of a request received over UDP: `received` and `rport` stamped (RFC 3581), and
//! the address its responses go to (RFC 3261 §18.2.2).

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use rsip::headers::UntypedHeader;

use super::Peer;

/// Adds `received` (when the sent-by host is not the source address) and fills `rport`
/// (RFC 3581 §4) in the top Via, and returns where responses go (RFC 3261 §18.2.2): the source
/// address, and the source port when rport was asked for, else the sent-by port (default 5060).
///
/// `maddr` is deliberately not honoured: answering to an address named in the message would let
/// anyone reflect traffic through pivotd.
pub fn stamp_via(req: &mut rsip::Request, peer: &Peer) -> SocketAddr {
    let mut reply = peer.remote;
    // Over a stream the answer goes back on the connection: the sent-by is not used.
    if peer.proto.is_reliable() {
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

/// The address of the hop before the one that sent a request: its Via (the second) as the
/// proxy stamped it — `received` if present else the sent-by host, `rport`'s value if present
/// else the sent-by port (RFC 3261 §18.2.1, RFC 3581 §4). `None`: one Via only (the sender
/// originated the request), or a second Via naming no address.
///
/// Only for a request from a trusted proxy: anyone else can write any second Via.
pub fn previous_hop(req: &rsip::Request) -> Option<SocketAddr> {
    // The normaliser writes one hop per Via line, so the second Via header is the second hop.
    let value = req
        .headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Via(via) => Some(via.value()),
            _ => None,
        })
        .nth(1)?;
    hop_address(value)
}

/// [`previous_hop`]'s reading of one Via value.
fn hop_address(value: &str) -> Option<SocketAddr> {
    let mut parts = value.split(';');
    let head = parts.next()?.trim();
    let tls = head
        .split('/')
        .nth(2)
        .and_then(|t| t.split_whitespace().next())
        .is_some_and(|t| t.eq_ignore_ascii_case("TLS"));
    let (host, port) = split_host_port(head.split_whitespace().last()?);
    let mut received = None;
    let mut rport = None;
    for p in parts {
        let (name, v) = p.split_once('=').unwrap_or((p, ""));
        let (name, v) = (name.trim(), v.trim());
        if name.eq_ignore_ascii_case("received") {
            received = v.parse::<IpAddr>().ok();
        } else if name.eq_ignore_ascii_case("rport") {
            rport = v.parse::<u16>().ok().filter(|&p| p != 0);
        }
    }
    let ip = received.or_else(|| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
    })?;
    let port = rport.or(port).unwrap_or(if tls { 5061 } else { 5060 });
    Some(SocketAddr::new(ip, port))
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
    fn previous_hop_reads_received_and_rport() {
        let hop = |v: &str| hop_address(v);
        assert_eq!(
            hop("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.9;rport=40001"),
            Some("203.0.113.9:40001".parse().unwrap())
        );
        assert_eq!(
            hop("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1"),
            Some("192.0.2.7:5070".parse().unwrap())
        );
        assert_eq!(
            hop("SIP/2.0/UDP [2001:db8::1];rport;branch=z9hG4bK1"),
            Some("[2001:db8::1]:5060".parse().unwrap())
        );
        assert_eq!(
            hop("SIP/2.0/TLS phone.example;received=192.0.2.8"),
            Some("192.0.2.8:5061".parse().unwrap())
        );
        // A host name with no received: no address to believe.
        assert_eq!(hop("SIP/2.0/UDP phone.example:5070;branch=z9hG4bK1"), None);
        assert_eq!(hop("garbage"), None);
    }

    #[test]
    fn previous_hop_is_the_second_via() {
        let one = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bK1\r\n\
                   From: <sip:p@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
                   Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let req = rsip::Request::try_from(one.as_bytes()).unwrap();
        assert_eq!(previous_hop(&req), None);
        let two = one.replace(
            "z9hG4bK1\r\n",
            "z9hG4bK1\r\nVia: SIP/2.0/UDP 10.1.1.1:5062;received=198.51.100.4;rport=7000\r\n",
        );
        let req = rsip::Request::try_from(two.as_bytes()).unwrap();
        assert_eq!(
            previous_hop(&req),
            Some("198.51.100.4:7000".parse().unwrap())
        );
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("[::1]:5060"), ("[::1]", Some(5060)));
        assert_eq!(split_host_port("a.b"), ("a.b", None));
        assert_eq!(split_host_port("1.2.3.4:7"), ("1.2.3.4", Some(7)));
    }
}
