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

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
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

    /// Waits until a datagram may be waiting. The read is [`Ready::recv_from`]'s, into a
    /// buffer the caller lends only then: a task waiting here holds no buffer.
    pub(super) async fn readable(&self) -> io::Result<Ready<'_>> {
        Ok(Ready(self.fd.readable().await?))
    }
}

/// The socket was found readable.
pub(super) struct Ready<'a>(AsyncFdReadyGuard<'a, Arc<UdpSocket>>);

impl Ready<'_> {
    /// The next datagram, as `UdpSocket::recv_from`; None when there was none after all
    /// (drained since the readiness event, which is cleared: wait for the next one).
    pub(super) fn recv_from(&mut self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        self.0.try_io(|s| s.get_ref().recv_from(buf)).ok()
    }
}
