//! A UDP socket the runtime watches for reads only.
//!
//! Why not `tokio::net::UdpSocket`: it registers EPOLLIN and EPOLLOUT. On Linux every datagram
//! sent on a socket frees its buffer (at once over loopback) and calls the socket's
//! write-space callback, which, with an epoll entry asking for EPOLLOUT, queues an event and
//! wakes the runtime's poller. The pacer sends ~50 packets per second per call on the same
//! socket, so each packet cost a wake-up and an event the runtime
//! then dispatched to nobody. Registered for reads only, the callback finds no interest and
//! returns. Nothing sends through the runtime (the pacer, a relay and DTMF use plain
//! non-blocking `sendto`), so no write readiness is needed.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Shares its descriptor with the pacer's sending (one socket, no `dup`).
pub(super) struct ReadableSocket {
    fd: AsyncFd<Arc<UdpSocket>>,
}

impl ReadableSocket {
    /// `socket` must be non-blocking already (the port pool's are: no `fcntl` here). Needs a
    /// tokio runtime.
    pub(super) fn new(socket: Arc<UdpSocket>) -> io::Result<ReadableSocket> {
        // SAFETY: the AsyncFd holds the socket, which owns its descriptor: it stays open and
        // `as_raw_fd` returns the same one until the AsyncFd is dropped (tokio's condition).
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ReadableSocket { fd })
    }

    /// The next datagram, as `tokio::net::UdpSocket::recv_from`.
    pub(super) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|s| s.get_ref().recv_from(buf)) {
                Ok(result) => return result,
                // Drained since the readiness event: wait for the next one.
                Err(_would_block) => continue,
            }
        }
    }
}
