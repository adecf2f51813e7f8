//! The sockets of one SIP UDP address (`[sip] udp_readers`): one reader task is one core's
//! worth of `recvmsg` and hand-off, so an address gets several sockets bound with
//! `SO_REUSEPORT`, each read by its own task. Linux hashes each datagram's 4-tuple to one
//! socket of the group, so all of one caller's datagrams reach one reader, in the order sent.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `readers` non-blocking sockets to `addr` (at least one). One reader: a plain socket,
/// as before there were several. More: all with `SO_REUSEPORT`; with port 0 the first picks
/// the port and the others join it.
///
/// A fixed port is first bound once without `SO_REUSEPORT`, and released: a group of another
/// process of the same user on that port would otherwise be joined silently (and share its
/// traffic) rather than refused with "address in use".
pub fn bind(addr: SocketAddr, readers: usize) -> io::Result<Vec<UdpSocket>> {
    if readers <= 1 {
        let sock = UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        return Ok(vec![sock]);
    }
    if addr.port() != 0 {
        drop(UdpSocket::bind(addr)?);
    }
    let first = member(addr)?;
    let local = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..readers {
        socks.push(member(local)?);
    }
    Ok(socks)
}

/// One socket of the group.
fn member(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn one_reader_is_one_plain_socket() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        assert_eq!(socks.len(), 1);
        let local = socks[0].local_addr().unwrap();
        // Not in a reuseport group: nothing else may bind its port.
        assert!(member(local).is_err(), "a second socket joined {local}");
    }

    #[test]
    fn port_zero_is_picked_once_and_every_datagram_of_a_source_reaches_one_socket() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(socks.len(), 3);
        let local = socks[0].local_addr().unwrap();
        assert_ne!(local.port(), 0);
        for s in &socks {
            assert_eq!(s.local_addr().unwrap(), local);
        }
        // 40 sources, 5 datagrams each: each source's datagrams land on one socket, in order,
        // and more than one socket gets some.
        let senders: Vec<_> = (0..40)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for i in 0..5u8 {
            for s in &senders {
                s.send_to(&[i], local).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut seen: Vec<(usize, SocketAddr, u8)> = Vec::new();
        for (k, s) in socks.iter().enumerate() {
            let mut buf = [0u8; 8];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                assert_eq!(n, 1);
                seen.push((k, from, buf[0]));
            }
        }
        assert_eq!(seen.len(), 200, "every datagram read");
        for s in &senders {
            let me = s.local_addr().unwrap();
            let mine: Vec<_> = seen.iter().filter(|(_, f, _)| *f == me).collect();
            let on: HashSet<usize> = mine.iter().map(|(k, _, _)| *k).collect();
            assert_eq!(on.len(), 1, "{me} spread over sockets {on:?}");
            let order: Vec<u8> = mine.iter().map(|(_, _, i)| *i).collect();
            assert_eq!(order, [0, 1, 2, 3, 4], "{me}");
        }
        let used: HashSet<usize> = seen.iter().map(|(k, _, _)| *k).collect();
        assert!(used.len() > 1, "40 sources all hashed to one socket");
    }

    #[test]
    fn a_fixed_port_in_use_is_refused() {
        let holder = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let taken = holder[0].local_addr().unwrap();
        let err = bind(taken, 2).expect_err("joined another group's port");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let err = bind(taken, 1).expect_err("bound a port in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
