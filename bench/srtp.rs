//! SRTP's CPU per packet (issue 15): protecting and checking one 20 ms PCMU packet (172 bytes)
//! with each suite, beside the plain `sendto` of the same packet on loopback, all in one run so
//! the figures compare as ratios. What pivotd does per packet on a keyed leg is one protect
//! (`media/srtp/out.rs`, through the leg's `SrtpOut`) and, per packet received, one unprotect.
//!
//!   cargo bench --bench srtp [-- N]        (N packets per figure, default 200000)

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::Instant;

use pivotd::media::srtp::{SrtpKey, SrtpOut, SrtpReceiver, SrtpSender, Suite};

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..160u32).map(|i| (i * 7 % 251) as u8));
    p
}

/// Nanoseconds per call of `f` over `n` calls.
fn per(n: u32, mut f: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("srtp: a benchmark; run it with cargo bench --bench srtp");
        return;
    }
    let n: u32 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let packets: Vec<Vec<u8>> = (0..1024u16).map(packet).collect();
    let sink = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    sink.set_nonblocking(true).ok();
    let to = sink.local_addr().expect("its address");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    tx.set_nonblocking(true).ok();
    // Drain the sink now and then so the kernel queue never fills (a full one drops, cheaply).
    let mut buf = [0u8; 2048];
    let mut drain = |i: u32| {
        if i % 64 == 0 {
            while sink.recv(&mut buf).is_ok() {}
        }
    };

    let plain_out = SrtpOut::default();
    let plain_send = per(n, |i| {
        let p = &packets[(i % 1024) as usize];
        let _ = black_box(plain_out.send_to(&tx, p, to));
        drain(i);
    });
    println!("srtp bench: {n} packets of 172 bytes per figure");
    println!("  plain RTP sendto (SrtpOut off): {plain_send:>8.0} ns/packet");
    for suite in Suite::ALL {
        let key = SrtpKey::generate(suite);
        let mut sender = SrtpSender::new(&key).expect("a sender");
        // Sequence numbers run on, as on a leg (the rollover counter follows).
        let protect = per(n, |i| {
            let p = packet(i as u16);
            black_box(sender.protect(black_box(&p)).expect("protected"));
        });
        let build_only = per(n, |i| {
            black_box(packet(i as u16));
        });
        let mut sender = SrtpSender::new(&key).expect("a sender");
        let sealed: Vec<_> = (0..n)
            .map(|i| sender.protect(&packet(i as u16)).expect("protected"))
            .collect();
        let mut receiver = SrtpReceiver::new(&key).expect("a receiver");
        let unprotect = per(n, |i| {
            black_box(receiver.unprotect(&sealed[i as usize]).expect("authentic"));
        });
        let out = SrtpOut::default();
        out.set(SrtpSender::new(&key).expect("a sender"));
        let srtp_send = per(n, |i| {
            let p = packet(i as u16);
            let _ = black_box(out.send_to(&tx, &p, to));
            drain(i);
        });
        println!(
            "  {:<24} protect {:>6.0} ns, unprotect {:>6.0} ns; SrtpOut sendto {:>6.0} ns/packet = {:.2} x plain",
            suite.name(),
            protect - build_only,
            unprotect,
            srtp_send - build_only,
            (srtp_send - build_only) / plain_send
        );
    }
}
