//! The receive buffer of a SIP UDP socket (`[sip] udp_receive_buffer_bytes`).
//!
//! An address's sockets (`[sip] udp_readers`, each source hashed to one) take every caller's
//! requests and every callee's answers. What arrives while a receive task is not reading (a
//! burst: hundreds of callers hanging up at once, and the callees' answers to our BYEs) waits
//! in the kernel's buffer; when it is full the kernel
//! drops the datagram silently. Linux's default (`net.core.rmem_default`, 212992 bytes)
//! holds about 166 datagrams, whatever their size, as each is charged about 1280 bytes.

use std::io;
use std::os::fd::AsRawFd;

/// Asks the kernel for a receive buffer of `bytes` on `sock` and returns what it granted.
/// `SO_RCVBUFFORCE` first (with `CAP_NET_ADMIN` it passes `net.core.rmem_max`), else
/// `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`. Linux reports twice the size
/// asked (the other half is its bookkeeping); the size returned is that half, comparable with
/// `bytes`.
pub fn set_receive_buffer(sock: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let forced = setsockopt_int(fd, libc::SO_RCVBUFFORCE, value);
    if forced.is_err() {
        setsockopt_int(fd, libc::SO_RCVBUF, value)?;
    }
    receive_buffer(sock)
}

/// The receive buffer the kernel gives `sock` (half the reported size, as set above).
pub fn receive_buffer(sock: &impl AsRawFd) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, an int it is told the size of.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0) / 2)
}

fn setsockopt_int(fd: libc::c_int, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is an int that lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_asked_for_is_granted_up_to_the_kernels_limit() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = receive_buffer(&sock).expect("read SO_RCVBUF");
        let got = set_receive_buffer(&sock, 1 << 20).expect("set SO_RCVBUF");
        // Either all of it, or (unprivileged, small rmem_max) the kernel's cap; never less
        // than the socket had, and what is read back is what was returned.
        assert!(got >= before.min(1 << 20), "{got} < {before}");
        assert_eq!(receive_buffer(&sock).expect("read again"), got);
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("Linux: /proc/sys/net/core/rmem_max")
            .trim()
            .parse()
            .expect("a number");
        assert!(
            got >= (1 << 20).min(rmem_max),
            "granted {got}, rmem_max {rmem_max}"
        );
    }
}
