//! Helpers shared by the RTP tests: loopback sockets, free port ranges, packet collection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket as TokioUdp;
use tokio::task::JoinHandle;

use super::{RtpPorts, RtpSession};
use crate::media::player::Pacer;

pub(crate) const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A range of `pairs` port pairs below the kernel's ephemeral range that is free right now
/// (a pool cannot use port 0; probing keeps parallel tests apart).
pub(crate) fn free_range(pairs: u16) -> (u16, u16) {
    loop {
        let base = 20_000 + 2 * (rand::random::<u16>() % 5_000);
        let max = base + 2 * pairs - 1;
        let probes: Result<Vec<_>, _> = (base..=max).map(|p| UdpSocket::bind((LOCAL, p))).collect();
        if probes.is_ok() {
            return (base, max);
        }
    }
}

pub(crate) struct Got {
    pub(super) at: Instant,
    pub(super) data: Vec<u8>,
}

/// Collects datagrams until `quiet` passes without one.
pub(crate) fn collect(sock: Arc<TokioUdp>, quiet: Duration) -> JoinHandle<Vec<Got>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, sock.recv(&mut buf)).await {
            out.push(Got {
                at: Instant::now(),
                data: buf[..n].to_vec(),
            });
        }
        out
    })
}

pub(crate) async fn receiver() -> (Arc<TokioUdp>, SocketAddr) {
    let s = TokioUdp::bind((LOCAL, 0)).await.unwrap();
    let a = s.local_addr().unwrap();
    (Arc::new(s), a)
}

pub(crate) fn session(pacer: &Pacer, remote: Option<SocketAddr>) -> RtpSession {
    RtpSession::start(RtpPorts::ephemeral(LOCAL).unwrap(), pacer, remote, 0).unwrap()
}

pub(crate) async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// An RTP packet as a far end sends it: version 2, PCMU (PT 0), `seq`, a timestamp of 160
/// per sequence number, `ssrc`, then `audio`.
pub(crate) fn pcmu_packet(seq: u16, ssrc: u32, audio: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(audio);
    p
}
