//! Even/odd RTP/RTCP port pairs: the pool, and the bound pair a session takes from it.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use super::RtpError;

/// Even/odd UDP port pairs from [min, max]; a pair returns to the pool when its `RtpPorts`
/// (and every socket made from it) drops. RFC 3550 §11: RTP on an even port, RTCP on the next.
pub struct PortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    total: usize,
    // Only touched at call set-up and tear-down, never per packet.
    free: Mutex<VecDeque<u16>>,
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
            free: Mutex::new(free),
        }))
    }

    /// Takes a pair and binds both sockets. Pairs that another program holds are skipped
    /// (and kept for later); `Exhausted` when no pair could be bound (the SIP layer's 503).
    pub fn allocate(self: &Arc<Self>) -> Result<RtpPorts, RtpError> {
        let attempts = self.available();
        for _ in 0..attempts {
            let Some(port) = self.queue().pop_front() else {
                break;
            };
            match bind_pair(self.ip, port) {
                Ok((rtp, rtcp)) => {
                    return Ok(RtpPorts {
                        rtp,
                        rtcp,
                        lease: Arc::new(Lease {
                            pool: Some(self.clone()),
                            port,
                        }),
                    })
                }
                Err((p, e)) => {
                    self.queue().push_back(port);
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

    /// Pairs in the pool (some may be held by other programs).
    pub fn available(&self) -> usize {
        self.queue().len()
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.total
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
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

/// Returns the pair to its pool when the last socket made from it has closed.
pub(super) struct Lease {
    pool: Option<Arc<PortPool>>,
    port: u16,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            // Back of the queue: a just-freed pair is reused last, so late packets of the
            // old call are unlikely to reach a new one.
            pool.queue().push_back(self.port);
        }
    }
}

/// A bound RTP/RTCP socket pair taken from a [`PortPool`].
pub struct RtpPorts {
    // Sockets before the lease: they close before the pair goes back to the pool.
    pub(super) rtp: UdpSocket,
    pub(super) rtcp: UdpSocket,
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
            rtp,
            rtcp,
            lease: Arc::new(Lease { pool: None, port }),
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
