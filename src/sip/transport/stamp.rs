//! When a UDP datagram arrived: the kernel's receive timestamp (`SO_TIMESTAMPNS`), read with
//! the datagram. Under load the backlog waits in the socket's buffer before the receive task
//! reads it, so a stamp taken after `recv` would miss most of the queue delay that
//! `sip::overload` measures.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A kernel stamp further in the past than this is taken as a clock step, not a wait.
const MAX_AGE: Duration = Duration::from_secs(60);

/// Asks the kernel to stamp each datagram `sock` receives.
pub fn enable(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is an int that lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one datagram into `buf`: its length, its source and when it arrived (the kernel's
/// stamp on the monotonic clock; now, when the datagram carries none).
pub async fn recv_from(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Instant)> {
    let fd = sock.as_raw_fd();
    let (n, from, stamp) = sock
        .async_io(Interest::READABLE, || recvmsg(fd, buf))
        .await?;
    let now = Instant::now();
    let age = stamp
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .filter(|age| *age <= MAX_AGE)
        .unwrap_or_default();
    Ok((n, from, now.checked_sub(age).unwrap_or(now)))
}

/// One `recvmsg` on the non-blocking socket `fd` (WouldBlock when nothing is there).
fn recvmsg(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr (plain C structs).
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a few control messages; u64s keep it aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at a live buffer of the length it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = socket_addr(&addr)?;
    let mut stamp = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with well-formed control
    // messages; the CMSG_* helpers stay within them, and the timestamp is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if let (Ok(s), Ok(ns)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
                    stamp = UNIX_EPOCH.checked_add(Duration::new(s, ns));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, from, stamp))
}

/// The source address the kernel wrote.
fn socket_addr(addr: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((addr as *const libc::sockaddr_storage).cast()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((addr as *const libc::sockaddr_storage).cast()) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram from an unknown address family",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_carries_its_source_and_when_it_arrived() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&rx).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel switches its receive stamping on a moment after the first socket asks
        // (a deferred work item); until then a datagram is stamped when it is read. So send
        // until one datagram's stamp counts its wait in the buffer.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = Instant::now();
            tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 64];
            let (n, from, at) = recv_from(&rx, &mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(from, tx.local_addr().unwrap());
            // Never before it was sent (a little slack for the two clocks' conversion).
            assert!(at + Duration::from_millis(5) >= sent, "{:?}", sent - at);
            let waited = Instant::now() - at;
            if waited >= Duration::from_millis(45) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stamp never counted the wait in the buffer: {waited:?}"
            );
        }
    }
}
