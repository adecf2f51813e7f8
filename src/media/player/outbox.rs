//! How a shard hands its packets to the kernel: all of a subtick's packets in one io_uring
//! submission, or one `sendto` each where io_uring is unavailable.
//!
//! Why io_uring: each stream sends from its own socket (symmetric RTP: the source port is the
//! one in our SDP), so `sendmmsg` cannot batch them; a ring takes every packet of the subtick
//! in one `io_uring_enter`, and with the sockets in the ring's registered file table the kernel
//! skips the per-packet descriptor lookup and its reference count too (`fdget` alone was ~5 %
//! of the pacer's CPU). A ring that cannot be set up (an old kernel, a seccomp filter, the
//! `io_uring_disabled` sysctl) leaves the shard on `sendto`, which sends the same packets.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::{opcode, types, IoUring};

use super::stream::{TickTotals, HEADER_BYTES, PAYLOAD_BYTES};
use super::LATE_THRESHOLD;

const PACKET: usize = HEADER_BYTES + PAYLOAD_BYTES;
/// Packets per submission: a fuller subtick is submitted in several.
const BATCH: usize = 256;
/// Registered file slots per shard; a stream beyond them is sent by plain descriptor.
const FILE_SLOTS: u32 = 16_384;

/// One queued packet and everything the kernel reads for it; its pointers point into itself,
/// so entries never move while queued (a boxed slice, never grown).
#[repr(C)]
struct Entry {
    packet: [u8; PACKET],
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    hdr: libc::msghdr,
    /// The stream's index in its slot, to note its lateness once sent.
    stream: usize,
}

struct Ring {
    ring: IoUring,
    entries: Box<[Entry]>,
    queued: usize,
    free_files: Vec<u32>,
    /// A submission failed: operations may still be in flight, so the entries are never
    /// written again and the shard sends with `sendto` from now on.
    broken: bool,
}

/// A shard's way out: a ring, or `sendto`.
pub(super) struct Outbox {
    ring: Option<Ring>,
}

/// What a stream needs to send through an [`Outbox`]: its socket and its registered slot.
pub(super) struct Route<'a> {
    pub(super) socket: &'a UdpSocket,
    pub(super) file: Option<u32>,
}

impl Outbox {
    /// A ring when the kernel gives one, else `sendto`. `PIVOTD_RTP_SENDTO` set in the
    /// environment forces `sendto` (to compare the two, or to step around a kernel's ring).
    pub(super) fn new() -> Outbox {
        if std::env::var_os("PIVOTD_RTP_SENDTO").is_some() {
            return Outbox::with_ring(Err(io::Error::other("PIVOTD_RTP_SENDTO is set")));
        }
        Outbox::with_ring(Ring::new())
    }

    /// Plain `sendto` per packet.
    #[cfg(test)]
    pub(super) fn plain() -> Outbox {
        Outbox { ring: None }
    }

    fn with_ring(ring: io::Result<Ring>) -> Outbox {
        match ring {
            Ok(r) => Outbox { ring: Some(r) },
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable: RTP is sent with sendto");
                Outbox { ring: None }
            }
        }
    }

    pub(super) fn uses_ring(&self) -> bool {
        self.ring.as_ref().is_some_and(|r| !r.broken)
    }

    fn ring(&mut self) -> Option<&mut Ring> {
        self.ring.as_mut().filter(|r| !r.broken)
    }

    /// A registered file slot for `socket` (None: sent by descriptor).
    pub(super) fn register(&mut self, socket: &UdpSocket) -> Option<u32> {
        let ring = self.ring()?;
        let slot = ring.free_files.pop()?;
        let fd = socket.as_raw_fd();
        match ring.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(_) => {
                ring.free_files.push(slot);
                None
            }
        }
    }

    /// Frees `slot` (the ring's reference to the socket goes with it). Nothing of the stream
    /// is queued: a subtick's packets are all sent before its commands are applied.
    pub(super) fn unregister(&mut self, slot: Option<u32>) {
        if let (Some(ring), Some(slot)) = (self.ring(), slot) {
            if ring
                .ring
                .submitter()
                .register_files_update(slot, &[-1])
                .is_ok()
            {
                ring.free_files.push(slot);
            }
        }
    }

    /// True when the next [`Outbox::send`] needs a [`Outbox::flush`] first.
    pub(super) fn is_full(&self) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|r| !r.broken && r.queued >= BATCH)
    }

    /// Sends `packet` of the slot's stream `stream` now (`sendto`: returns its lateness in
    /// ns) or queues it for [`Outbox::flush`] (None). Flush first when [`Outbox::is_full`].
    pub(super) fn send(
        &mut self,
        route: Route<'_>,
        remote: SocketAddr,
        packet: &[u8; PACKET],
        due: Instant,
        stream: usize,
        totals: &mut TickTotals,
    ) -> Option<u64> {
        if let Some(ring) = self.ring() {
            if ring.queue(&route, remote, packet, stream) {
                return None;
            }
        }
        let ok = route.socket.send_to(packet, remote).is_ok();
        Some(totals.count(ok, due, Instant::now()))
    }

    /// Hands the queued packets to the kernel and waits for their completions (at once: the
    /// sockets are non-blocking and the sends say `MSG_DONTWAIT`); `noted` gets each one's
    /// stream index and lateness in ns.
    pub(super) fn flush(
        &mut self,
        due: Instant,
        totals: &mut TickTotals,
        noted: &mut dyn FnMut(usize, u64),
    ) {
        if let Some(ring) = self.ring() {
            ring.submit(due, totals, noted);
        }
    }
}

impl TickTotals {
    /// Counts one packet handed over at `now`; returns its lateness in ns.
    pub(super) fn count(&mut self, ok: bool, due: Instant, now: Instant) -> u64 {
        if ok {
            self.sent += 1;
        } else {
            self.errors += 1;
        }
        let late = u64::try_from(now.saturating_duration_since(due).as_nanos()).unwrap_or(u64::MAX);
        if late > LATE_THRESHOLD.as_nanos() as u64 {
            self.late += 1;
        }
        self.max_late_ns = self.max_late_ns.max(late);
        late
    }
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let ring = IoUring::new(BATCH as u32)?;
        ring.submitter().register_files_sparse(FILE_SLOTS)?;
        let entries = (0..BATCH)
            .map(|_| Entry {
                packet: [0; PACKET],
                // SAFETY: plain C structs; all-zero is a valid (empty) value of each.
                iov: unsafe { std::mem::zeroed() },
                addr: unsafe { std::mem::zeroed() },
                hdr: unsafe { std::mem::zeroed() },
                stream: 0,
            })
            .collect();
        Ok(Ring {
            ring,
            entries,
            queued: 0,
            free_files: (0..FILE_SLOTS).rev().collect(),
            broken: false,
        })
    }

    /// False when the batch is full (the caller sends the packet itself).
    fn queue(
        &mut self,
        route: &Route<'_>,
        remote: SocketAddr,
        packet: &[u8; PACKET],
        stream: usize,
    ) -> bool {
        let Some(e) = self.entries.get_mut(self.queued) else {
            return false;
        };
        e.packet = *packet;
        e.stream = stream;
        let addr_len = write_sockaddr(&mut e.addr, remote);
        e.iov = libc::iovec {
            iov_base: e.packet.as_mut_ptr().cast(),
            iov_len: PACKET,
        };
        // SAFETY: zeroed msghdr is valid; the fields set point into this entry, which stays
        // put (boxed slice) and untouched until the submission's completions are reaped.
        e.hdr = unsafe { std::mem::zeroed() };
        e.hdr.msg_name = std::ptr::addr_of_mut!(e.addr).cast();
        e.hdr.msg_namelen = addr_len;
        e.hdr.msg_iov = std::ptr::addr_of_mut!(e.iov);
        e.hdr.msg_iovlen = 1;
        let op = match route.file {
            Some(slot) => opcode::SendMsg::new(types::Fixed(slot), &e.hdr),
            None => opcode::SendMsg::new(types::Fd(route.socket.as_raw_fd()), &e.hdr),
        }
        // A full socket buffer fails the send at once instead of waiting for room.
        .flags(libc::MSG_DONTWAIT as u32)
        .build()
        .user_data(self.queued as u64);
        // SAFETY: the entry's buffers outlive the operation (reaped in `submit` before the
        // entry is written again); the socket stays open until its stream is removed, which
        // happens between subticks, after the reaping.
        if unsafe { self.ring.submission().push(&op) }.is_err() {
            return false;
        }
        self.queued += 1;
        true
    }

    fn submit(&mut self, due: Instant, totals: &mut TickTotals, noted: &mut dyn FnMut(usize, u64)) {
        let mut left = self.queued;
        while left > 0 {
            match self.ring.submit_and_wait(left) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            let now = Instant::now();
            for cqe in self.ring.completion() {
                left = left.saturating_sub(1);
                let late = totals.count(cqe.result() >= 0, due, now);
                if let Some(e) = self.entries.get(cqe.user_data() as usize) {
                    noted(e.stream, late);
                }
            }
        }
        if left > 0 {
            // The ring failed: whatever is still in it completes later or never; its entries
            // must not be rewritten meanwhile, so the ring is no longer used.
            totals.errors += left as u64;
            self.broken = true;
            tracing::error!("io_uring submission failed: RTP is sent with sendto from now on");
        }
        self.queued = 0;
    }
}

/// Writes `a` as a C socket address; returns its length.
fn write_sockaddr(out: &mut libc::sockaddr_storage, a: SocketAddr) -> libc::socklen_t {
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::from_mut(out).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::from_mut(out).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver() -> UdpSocket {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        rx
    }

    fn packet(n: u8) -> [u8; PACKET] {
        [n; PACKET]
    }

    #[test]
    fn the_ring_queues_until_flushed_and_notes_each_stream() {
        let mut out = Outbox::new();
        assert!(
            out.uses_ring(),
            "io_uring is unavailable in this kernel or container: the pacer would fall back to sendto"
        );
        let rx = receiver();
        let to = rx.local_addr().unwrap();
        let socks: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let files: Vec<Option<u32>> = socks.iter().map(|s| out.register(s)).collect();
        assert!(files.iter().all(Option::is_some));
        // The third by plain descriptor, as a stream beyond the file table is.
        let routes = [files[0], files[1], None];
        let mut totals = TickTotals::default();
        let due = Instant::now();
        for (i, s) in socks.iter().enumerate() {
            let route = Route {
                socket: s,
                file: routes[i],
            };
            assert_eq!(
                out.send(route, to, &packet(i as u8), due, 10 + i, &mut totals),
                None
            );
        }
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 400];
        assert!(rx.recv(&mut buf).is_err(), "sent before the flush");
        rx.set_nonblocking(false).unwrap();
        let mut noted = Vec::new();
        out.flush(due, &mut totals, &mut |i, late| noted.push((i, late)));
        noted.sort_unstable();
        assert_eq!(noted.iter().map(|n| n.0).collect::<Vec<_>>(), [10, 11, 12]);
        assert!(noted.iter().all(|n| n.1 > 0));
        assert_eq!((totals.sent, totals.errors), (3, 0));
        let mut got = Vec::new();
        for _ in 0..3 {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, PACKET);
            got.push((buf[0], from));
        }
        got.sort_unstable();
        for (i, s) in socks.iter().enumerate() {
            assert_eq!(got[i], (i as u8, s.local_addr().unwrap()));
        }
        for f in files {
            out.unregister(f);
        }
        assert_eq!(
            out.ring.as_ref().map(|r| r.free_files.len()),
            Some(FILE_SLOTS as usize)
        );
    }

    #[test]
    fn without_a_ring_packets_go_out_with_sendto_at_once() {
        let mut out = Outbox::with_ring(Err(io::Error::from(io::ErrorKind::PermissionDenied)));
        assert!(!out.uses_ring());
        let rx = receiver();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(out.register(&tx), None);
        let mut totals = TickTotals::default();
        let route = Route {
            socket: &tx,
            file: None,
        };
        let late = out.send(
            route,
            rx.local_addr().unwrap(),
            &packet(7),
            Instant::now(),
            0,
            &mut totals,
        );
        assert!(late.is_some());
        assert_eq!(totals.sent, 1);
        let mut buf = [0u8; 400];
        assert_eq!(rx.recv(&mut buf).unwrap(), PACKET);
        assert_eq!(buf[0], 7);
        // Nothing queued: a flush sends nothing more.
        out.flush(Instant::now(), &mut totals, &mut |_, _| {
            panic!("nothing was queued")
        });
        assert_eq!(totals.sent, 1);
    }

    #[test]
    fn a_full_socket_buffer_fails_the_send_instead_of_blocking() {
        let mut out = Outbox::new();
        assert!(
            out.uses_ring(),
            "io_uring is unavailable in this kernel or container"
        );
        // A tiny send buffer on a socket towards a receiver that never reads: some sends of
        // a large batch fail with EAGAIN (or all pass); the flush returns either way.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let file = out.register(&tx);
        let mut totals = TickTotals::default();
        let due = Instant::now();
        for round in 0..20 {
            for i in 0..BATCH {
                if out.is_full() {
                    out.flush(due, &mut totals, &mut |_, _| {});
                }
                let route = Route { socket: &tx, file };
                let _ = out.send(
                    route,
                    rx.local_addr().unwrap(),
                    &packet((round + i) as u8),
                    due,
                    i,
                    &mut totals,
                );
            }
        }
        out.flush(due, &mut totals, &mut |_, _| {});
        assert_eq!(totals.sent + totals.errors, 20 * BATCH as u64);
        out.unregister(file);
    }
}
