//! Even/odd RTP/RTCP port pairs: the pool, and the bound pair a session takes from it.
//!
//! A pair's sockets outlive its call: when the last user of a pair drops it, its two sockets
//! go back to the pool still bound (up to [`KEEP_BOUND`] pairs), and the next call gets them
//! after whatever the old call's peer sent meanwhile has been read away. That saves a call
//! two `socket`s, two `bind`s, the non-blocking switch and two `close`s (the kernel's socket
//! teardown), about 4 % of pivotd's CPU per short call.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use super::RtpError;

/// Pairs kept bound after their call, at most: 2,048 descriptors. Reuse is oldest first, so a
/// pair rests while this many other pairs are handed out (half a second at 2,000 calls/s).
const KEEP_BOUND: usize = 1024;
/// A kept socket with more than this many datagrams queued is being sprayed: it is closed
/// rather than drained without end, and its pair bound anew later.
const DRAIN_MAX: usize = 64;

struct Free {
    /// Pairs with no sockets, in the order they were freed.
    ports: VecDeque<u16>,
    /// Pairs whose sockets were kept bound, in the order they were freed.
    bound: VecDeque<(u16, UdpSocket, UdpSocket)>,
}

/// Reads away every datagram (and pending ICMP error) queued on `s`; false when more than
/// [`DRAIN_MAX`] were, or the socket failed.
fn drain(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    for _ in 0..=DRAIN_MAX {
        match s.recv_from(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            // An ICMP error of the old call's sending (port unreachable): read once, gone.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => return false,
        }
    }
    false
}

/// Even/odd UDP port pairs from [min, max]; a pair returns to the pool when its `RtpPorts`
/// (and every socket made from it) drops. RFC 3550 §11: RTP on an even port, RTCP on the next.
pub struct PortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    total: usize,
    // Only touched at call set-up and tear-down, never per packet.
    free: Mutex<Free>,
}

impl PortPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Result<Arc<PortPool>, RtpError> {
        let first = u32::from(min) + u32::from(min) % 2;
        let free: VecDeque<u16> = (first..u32::from(max))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if free.is_empty() {
            return Err(RtpError::EmptyRange { min, max });
        }
        Ok(Arc::new(PortPool {
            ip,
            min,
            max,
            total: free.len(),
            free: Mutex::new(Free {
                ports: free,
                bound: VecDeque::new(),
            }),
        }))
    }

    /// Takes a pair: one kept bound from an ended call (drained), else a free one whose two
    /// sockets it binds. Pairs that another program holds are skipped (and kept for later);
    /// `Exhausted` when no pair could be bound (the SIP layer's 503).
    pub fn allocate(self: &Arc<Self>) -> Result<RtpPorts, RtpError> {
        loop {
            let Some((port, rtp, rtcp)) = self.queue().bound.pop_front() else {
                break;
            };
            // The old call's late packets must not reach the new one.
            if drain(&rtp) && drain(&rtcp) {
                return Ok(self.lease(port, rtp, rtcp));
            }
            drop((rtp, rtcp));
            self.queue().ports.push_back(port);
        }
        let attempts = self.available();
        for _ in 0..attempts {
            let Some(port) = self.queue().ports.pop_front() else {
                break;
            };
            match bind_pair(self.ip, port) {
                Ok((rtp, rtcp)) => return Ok(self.lease(port, rtp, rtcp)),
                Err((p, e)) => {
                    self.queue().ports.push_back(port);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        // Wrong address or no permission: every port would fail alike.
                        return Err(RtpError::Bind {
                            ip: self.ip,
                            port: p,
                            source: e,
                        });
                    }
                }
            }
        }
        Err(RtpError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    fn lease(self: &Arc<Self>, port: u16, rtp: UdpSocket, rtcp: UdpSocket) -> RtpPorts {
        let (rtp, rtcp) = (Arc::new(rtp), Arc::new(rtcp));
        RtpPorts {
            lease: Arc::new(Lease {
                pool: Some(self.clone()),
                port,
                keep: Some((rtp.clone(), rtcp.clone())),
            }),
            rtp,
            rtcp,
        }
    }

    /// Pairs in the pool (some may be held by other programs).
    pub fn available(&self) -> usize {
        let q = self.queue();
        q.ports.len() + q.bound.len()
    }

    /// Pairs kept bound for the next calls.
    pub fn kept_bound(&self) -> usize {
        self.queue().bound.len()
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.total
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pair back from its call, with its sockets when nothing else holds them any more.
    fn give_back(&self, port: u16, sockets: Option<(UdpSocket, UdpSocket)>) {
        let mut q = self.queue();
        match sockets {
            Some((rtp, rtcp)) if q.bound.len() < KEEP_BOUND => q.bound.push_back((port, rtp, rtcp)),
            // Back of the queue: a just-freed pair is reused last, so late packets of the
            // old call are unlikely to reach a new one.
            other => {
                q.ports.push_back(port);
                drop(q);
                drop(other);
            }
        }
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> Result<(UdpSocket, UdpSocket), (u16, io::Error)> {
    let rtp = UdpSocket::bind((ip, port)).map_err(|e| (port, e))?;
    let rtcp_port = port.wrapping_add(1);
    let rtcp = UdpSocket::bind((ip, rtcp_port)).map_err(|e| (rtcp_port, e))?;
    for s in [&rtp, &rtcp] {
        s.set_nonblocking(true).map_err(|e| (port, e))?;
    }
    Ok((rtp, rtcp))
}

/// Returns the pair to its pool once every user of its sockets is gone (each holds its
/// socket before the lease, so it drops the socket first).
pub(super) struct Lease {
    pool: Option<Arc<PortPool>>,
    port: u16,
    /// The pair's sockets, kept for the pool: the last holder when the lease drops.
    keep: Option<(Arc<UdpSocket>, Arc<UdpSocket>)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            // Someone still holding a socket (not expected) keeps it: the pair is bound anew.
            let sockets = self.keep.take().and_then(|(rtp, rtcp)| {
                Some((Arc::try_unwrap(rtp).ok()?, Arc::try_unwrap(rtcp).ok()?))
            });
            pool.give_back(self.port, sockets);
        }
    }
}

/// A bound RTP/RTCP socket pair taken from a [`PortPool`].
pub struct RtpPorts {
    // Sockets before the lease: they are released before the pair goes back to the pool.
    pub(super) rtp: Arc<UdpSocket>,
    pub(super) rtcp: Arc<UdpSocket>,
    pub(super) lease: Arc<Lease>,
}

impl RtpPorts {
    pub fn rtp_port(&self) -> u16 {
        self.lease.port
    }

    pub fn rtcp_port(&self) -> u16 {
        self.rtcp.local_addr().map_or(0, |a| a.port())
    }

    /// Two sockets on kernel-chosen ports, outside any pool (tests, tools).
    pub fn ephemeral(ip: IpAddr) -> Result<RtpPorts, RtpError> {
        let rtp = UdpSocket::bind((ip, 0))?;
        let rtcp = UdpSocket::bind((ip, 0))?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        let port = rtp.local_addr()?.port();
        Ok(RtpPorts {
            rtp: Arc::new(rtp),
            rtcp: Arc::new(rtcp),
            lease: Arc::new(Lease {
                pool: None,
                port,
                keep: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::test_support::{free_range, LOCAL};

    #[test]
    fn port_pool_allocates_pairs_and_gets_them_back() {
        let (min, max) = free_range(2);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        assert_eq!(pool.available(), 2);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a.rtp_port() % 2, 0);
        assert_eq!(a.rtcp_port(), a.rtp_port() + 1);
        assert_ne!(a.rtp_port(), b.rtp_port());
        assert!(matches!(pool.allocate(), Err(RtpError::Exhausted { .. })));
        assert_eq!(pool.available(), 0);
        let freed = a.rtp_port();
        drop(a);
        assert_eq!(pool.available(), 1);
        let c = pool.allocate().unwrap();
        assert_eq!(c.rtp_port(), freed);
        drop((b, c));
        assert_eq!(pool.available(), 2);
    }

    fn assert_nothing_queued(s: &UdpSocket) {
        let mut buf = [0u8; 64];
        let r = s.recv_from(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "queued: {r:?}"
        );
    }

    /// The old call's peer sends `n` datagrams to both ports of `p`, and `p` gets an ICMP
    /// error pending (it sent to a closed port).
    fn old_call_traffic(p: &RtpPorts, n: usize) {
        let peer = UdpSocket::bind((LOCAL, 0)).unwrap();
        for _ in 0..n {
            peer.send_to(b"old", (LOCAL, p.rtp_port())).unwrap();
            peer.send_to(b"old", (LOCAL, p.rtcp_port())).unwrap();
        }
        let gone = UdpSocket::bind((LOCAL, 0)).unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        p.rtp.send_to(b"x", gone_addr).unwrap();
    }

    #[test]
    fn a_kept_pair_reaches_the_next_call_with_nothing_of_the_last_one() {
        let (min, max) = free_range(1);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        let a = pool.allocate().unwrap();
        let port = a.rtp_port();
        old_call_traffic(&a, 5);
        drop(a);
        assert_eq!(pool.kept_bound(), 1);
        assert_eq!(pool.available(), 1);
        let b = pool.allocate().unwrap();
        // The same sockets, not a new bind.
        assert_eq!(pool.kept_bound(), 0);
        assert_eq!(b.rtp_port(), port);
        assert_nothing_queued(&b.rtp);
        assert_nothing_queued(&b.rtcp);
        // What the new call's peer sends arrives.
        let peer = UdpSocket::bind((LOCAL, 0)).unwrap();
        peer.send_to(b"new", (LOCAL, port)).unwrap();
        b.rtp.set_nonblocking(false).unwrap();
        b.rtp
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = b.rtp.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"new"[..], peer.local_addr().unwrap()));
    }

    #[test]
    fn a_kept_pair_being_sprayed_is_closed_and_bound_anew() {
        let (min, max) = free_range(1);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        let a = pool.allocate().unwrap();
        let port = a.rtp_port();
        old_call_traffic(&a, DRAIN_MAX + 10);
        drop(a);
        assert_eq!(pool.kept_bound(), 1);
        let b = pool.allocate().unwrap();
        assert_eq!((b.rtp_port(), pool.kept_bound()), (port, 0));
        assert_nothing_queued(&b.rtp);
        assert_nothing_queued(&b.rtcp);
    }

    #[test]
    fn a_pair_still_in_use_elsewhere_is_not_kept() {
        let (min, max) = free_range(1);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        let a = pool.allocate().unwrap();
        let stray = a.rtp.clone();
        drop(a);
        assert_eq!((pool.kept_bound(), pool.available()), (0, 1));
        drop(stray);
        // Bound anew once the stray holder let go.
        assert_eq!(pool.allocate().unwrap().rtp_port(), min);
    }

    #[test]
    fn port_pool_skips_ports_held_elsewhere() {
        let (min, max) = free_range(2);
        let pool = PortPool::new(LOCAL, min, max).unwrap();
        // Someone else holds the RTCP port of the first pair.
        let squatter = UdpSocket::bind((LOCAL, min + 1)).unwrap();
        let a = pool.allocate().unwrap();
        assert_eq!(a.rtp_port(), min + 2);
        assert!(matches!(pool.allocate(), Err(RtpError::Exhausted { .. })));
        // The held pair was kept in the pool, not lost.
        assert_eq!(pool.available(), 1);
        drop(squatter);
        assert_eq!(pool.allocate().unwrap().rtp_port(), min);
    }

    #[test]
    fn port_pool_rejects_empty_ranges() {
        assert!(matches!(
            PortPool::new(LOCAL, 20001, 20001),
            Err(RtpError::EmptyRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCAL, 20001, 20002),
            Err(RtpError::EmptyRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCAL, 65535, 65535),
            Err(RtpError::EmptyRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LOCAL, 30000, 20000),
            Err(RtpError::EmptyRange { .. })
        ));
        assert_eq!(PortPool::new(LOCAL, 20001, 20005).unwrap().capacity(), 2);
        assert_eq!(PortPool::new(LOCAL, 20001, 20004).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(LOCAL, 20000, 20003).unwrap().capacity(), 2);
    }
}
