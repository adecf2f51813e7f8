//! Two sessions, two fake phones on loopback, the relay between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use tokio::net::UdpSocket as TokioUdp;

use super::*;
use crate::media::codec;
use crate::media::player::{Pacer, PlayResult};
use crate::media::rtp::test_support::{receiver, LOCAL};
use crate::media::rtp::RtpPorts;

const PCMU: LegFormat = LegFormat {
    codec: Codec::Pcmu,
    payload_type: 0,
    event_pt: Some(101),
};
const PCMA: LegFormat = LegFormat {
    codec: Codec::Pcma,
    payload_type: 8,
    event_pt: Some(96),
};

/// A fake phone: its socket, and the session of pivotd that talks to it.
struct Leg {
    phone: Arc<TokioUdp>,
    session: RtpSession,
}

impl Leg {
    async fn new(pacer: &Pacer, pt: u8) -> Leg {
        let (phone, addr) = receiver().await;
        let ports = RtpPorts::ephemeral(LOCAL).unwrap();
        let session = RtpSession::start(ports, pacer, Some(addr), pt).unwrap();
        Leg { phone, session }
    }

    fn to_pivotd(&self) -> SocketAddr {
        SocketAddr::new(LOCAL, self.session.local_port())
    }

    async fn send(&self, p: &Pkt) {
        let payload = p.payload.clone();
        let data = RtpPacketBuilder::new()
            .payload_type(p.pt)
            .marked(p.marker)
            .sequence(Seq::from(p.seq))
            .timestamp(p.ts)
            .ssrc(p.ssrc)
            .payload(&payload)
            .build()
            .unwrap();
        self.phone.send_to(&data, self.to_pivotd()).await.unwrap();
    }

    /// The next datagram the phone gets, if one comes within a second.
    async fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(1), self.phone.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf[..n].to_vec())
    }

    async fn recv_n(&self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for i in 0..n {
            match self.recv().await {
                Some(d) => out.push(d),
                None => panic!("packet {i} of {n} did not come"),
            }
        }
        out
    }

    async fn nothing_more(&self) {
        let mut buf = [0u8; 2048];
        let got = tokio::time::timeout(Duration::from_millis(200), self.phone.recv(&mut buf)).await;
        assert!(got.is_err(), "an unexpected packet came");
    }
}

struct Pkt {
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn audio(pt: u8, seq: u16, ts: u32, ssrc: u32, fill: u8) -> Pkt {
    Pkt {
        pt,
        marker: false,
        seq,
        ts,
        ssrc,
        payload: (0..160u16).map(|i| fill.wrapping_add(i as u8)).collect(),
    }
}

/// Sends `n` audio packets 20 ms apart, from `seq`/`ts` on.
async fn talk(leg: &Leg, pt: u8, ssrc: u32, seq: u16, ts: u32, n: u16) {
    for i in 0..n {
        let ts = ts.wrapping_add(160 * u32::from(i));
        leg.send(&audio(pt, seq.wrapping_add(i), ts, ssrc, i as u8))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parse(d: &[u8]) -> RtpReader<'_> {
    RtpReader::new(d).unwrap()
}

/// Consecutive sequence numbers, timestamps moving forward, one SSRC.
fn assert_one_stream(got: &[Vec<u8>], ssrc: u32) {
    for pair in got.windows(2) {
        let (p, q) = (parse(&pair[0]), parse(&pair[1]));
        assert_eq!(
            u16::from(q.sequence_number()),
            u16::from(p.sequence_number()).wrapping_add(1)
        );
        let step = q.timestamp().wrapping_sub(p.timestamp());
        assert!(
            step > 0 && step < 0x8000_0000,
            "timestamp went back: {step}"
        );
    }
    for d in got {
        assert_eq!(parse(d).ssrc(), ssrc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_audio_passes_byte_identical_both_ways() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 0).await);
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMU).unwrap();
    talk(&a, 0, 0xAAAA, 100, 1000, 5).await;
    let got = b.recv_n(5).await;
    assert_one_stream(&got, b.session.ssrc());
    for (i, d) in got.iter().enumerate() {
        let p = parse(d);
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.payload(), &audio(0, 0, 0, 0, i as u8).payload[..]);
        assert_eq!(p.mark(), i == 0, "marker on the first relayed packet only");
        if i > 0 {
            // The source's own deltas are kept.
            assert_eq!(
                p.timestamp().wrapping_sub(parse(&got[i - 1]).timestamp()),
                160
            );
        }
    }
    talk(&b, 0, 0xBBBB, 7, 99, 3).await;
    let back = a.recv_n(3).await;
    assert_one_stream(&back, a.session.ssrc());
    assert_eq!(parse(&back[2]).payload(), &audio(0, 0, 0, 0, 2).payload[..]);
    let stats = relay.stats();
    assert_eq!(stats.a_to_b.relayed, 5);
    assert_eq!(stats.b_to_a.relayed, 3);
    assert_eq!(stats.a_to_b.transcoded + stats.b_to_a.transcoded, 0);
    assert_eq!(stats.a_to_b.dropped_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_and_pcma_legs_are_transcoded_both_ways() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 8).await);
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMA).unwrap();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let mut p = audio(0, 1, 1, 0xA, 0);
    p.payload = every_byte.clone();
    a.send(&p).await;
    let got = b.recv().await.expect("relayed to B");
    let got = parse(&got);
    assert_eq!(got.payload_type(), 8);
    // The A-law encoding of the same samples.
    let same = Codec::Pcma.encode(&Codec::Pcmu.decode(&every_byte));
    assert_eq!(got.payload(), &same[..]);
    p.payload = every_byte.clone();
    p.pt = 8;
    b.send(&p).await;
    let got = a.recv().await.expect("relayed to A");
    let got = parse(&got);
    assert_eq!(got.payload_type(), 0);
    let same = Codec::Pcmu.encode(&Codec::Pcma.decode(&every_byte));
    assert_eq!(got.payload(), &same[..]);
    let stats = relay.stats();
    assert_eq!((stats.a_to_b.transcoded, stats.b_to_a.transcoded), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_take_the_other_legs_payload_type_and_the_rest_is_dropped() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 8).await);
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMA).unwrap();
    let event = Pkt {
        pt: 101,
        marker: true,
        seq: 5,
        ts: 8000,
        ssrc: 0xE,
        payload: vec![5, 0x0a, 0, 160],
    };
    a.send(&event).await;
    let got = b.recv().await.expect("the event reaches B");
    let p = parse(&got);
    assert_eq!(p.payload_type(), 96);
    assert!(p.mark());
    assert_eq!(p.payload(), &[5, 0x0a, 0, 160][..]);
    // Comfort noise and an unknown payload type go nowhere.
    a.send(&Pkt {
        pt: 13,
        payload: vec![40],
        ..audio(0, 6, 8000, 0xE, 0)
    })
    .await;
    a.send(&audio(18, 7, 8160, 0xE, 0)).await;
    b.nothing_more().await;
    let s = relay.stats().a_to_b;
    assert_eq!((s.relayed, s.events_mapped), (1, 1));
    assert_eq!(s.dropped(DropReason::ComfortNoise), 1);
    assert_eq!(s.dropped(DropReason::UnknownPayloadType), 1);
    relay.stop();
    // B without telephone-event: A's events are dropped.
    let no_events = LegFormat {
        event_pt: None,
        ..PCMA
    };
    let relay = Relay::start(&a.session, PCMU, &b.session, no_events).unwrap();
    a.send(&event).await;
    b.nothing_more().await;
    assert_eq!(
        relay.stats().a_to_b.dropped(DropReason::NoEventPayloadType),
        1
    );
}

/// B hears one stream: a prompt of pivotd's, the relayed audio of A, a change of A's SSRC
/// (only a marker shows it), then a prompt again once the relay stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_sees_one_stream_across_prompt_relay_ssrc_change_and_prompt() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 0).await);
    let prompt = Arc::from(vec![0x55u8; 160 * 3]);
    assert_eq!(b.session.play(prompt).await, PlayResult::Finished);
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMU).unwrap();
    talk(&a, 0, 0x1111, 10, 50_000, 5).await;
    talk(&a, 0, 0x2222, 9000, 7, 3).await;
    relay.stop();
    let prompt = Arc::from(vec![0x66u8; 160 * 2]);
    assert_eq!(b.session.play(prompt).await, PlayResult::Finished);
    let got = b.recv_n(3 + 5 + 3 + 2).await;
    b.nothing_more().await;
    assert_one_stream(&got, b.session.ssrc());
    let markers: Vec<usize> = (0..got.len()).filter(|i| parse(&got[*i]).mark()).collect();
    assert_eq!(markers, vec![0, 3, 8, 11]);
    for i in [1, 2, 4, 5, 6, 7, 9, 10, 12] {
        let step = parse(&got[i])
            .timestamp()
            .wrapping_sub(parse(&got[i - 1]).timestamp());
        assert_eq!(step, 160, "packet {i}");
    }
    // At the changes of sender or source, the timestamp moves on by about the time passed.
    for i in [3, 8, 11] {
        let step = parse(&got[i])
            .timestamp()
            .wrapping_sub(parse(&got[i - 1]).timestamp());
        assert!((160..8000 * 2).contains(&step), "packet {i}: {step}");
    }
    assert!(parse(&got[12]).payload().iter().all(|&x| x == 0x66));
}

/// A source that pauses (a callee's hold) and comes back with its timestamps where it left
/// them: the relay goes on, and what it sends after is timed by the pause, with a marker, so
/// the destination does not take it for late audio of before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_pause_the_timestamps_follow_the_time_passed() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 0).await);
    let _relay = Relay::start(&a.session, PCMU, &b.session, PCMU).unwrap();
    talk(&a, 0, 0x3333, 1, 1000, 3).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Its clock did not move on: the next timestamp is the last one plus 160.
    talk(&a, 0, 0x3333, 4, 1000 + 3 * 160, 2).await;
    let got = b.recv_n(5).await;
    assert_one_stream(&got, b.session.ssrc());
    let step = |i: usize| {
        parse(&got[i])
            .timestamp()
            .wrapping_sub(parse(&got[i - 1]).timestamp())
    };
    assert_eq!((step(1), step(2), step(4)), (160, 160, 160));
    assert!(
        (8000..8000 * 3).contains(&step(3)),
        "the pause of about 1.3 s: {}",
        step(3)
    );
    assert!(parse(&got[3]).mark(), "a new talkspurt after the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_stops_relayed_packets_to_the_held_leg_only() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 0).await);
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMU).unwrap();
    b.session.set_sending(false);
    talk(&a, 0, 1, 1, 1, 3).await;
    b.nothing_more().await;
    talk(&b, 0, 2, 1, 1, 2).await;
    assert_eq!(a.recv_n(2).await.len(), 2);
    b.session.set_sending(true);
    talk(&a, 0, 1, 4, 481, 1).await;
    let got = b.recv().await.expect("sent again after the hold");
    assert!(parse(&got).mark(), "a new talkspurt after the hold");
    let s = relay.stats();
    assert_eq!(s.a_to_b.dropped(DropReason::Held), 3);
    assert_eq!((s.a_to_b.relayed, s.b_to_a.relayed), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_relayed_to_an_unproven_remote() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 0).await);
    b.session.require_proof();
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMU).unwrap();
    talk(&a, 0, 1, 1, 1, 3).await;
    b.nothing_more().await;
    assert_eq!(relay.stats().a_to_b.dropped(DropReason::Unproven), 3);
    // B's own RTP proves its address (and latches it).
    talk(&b, 0, 2, 1, 1, 1).await;
    assert!(a.recv().await.is_some());
    talk(&a, 0, 1, 4, 481, 1).await;
    assert!(b.recv().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_leg_plays_nothing_and_sessions_join_one_relay_at_a_time() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 0).await);
    let c = Leg::new(&pacer, 0).await;
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMU).unwrap();
    assert!(matches!(
        Relay::start(&c.session, PCMU, &b.session, PCMU),
        Err(RelayError::Busy)
    ));
    assert!(matches!(
        Relay::start(&c.session, PCMU, &c.session, PCMU),
        Err(RelayError::SameSession)
    ));
    // The failed start left C to its pacer: a prompt plays on it.
    assert_eq!(
        c.session.play(Arc::from(vec![1u8; 160])).await,
        PlayResult::Finished
    );
    assert!(c.recv().await.is_some());
    // B is relayed: its prompt keeps time but sends nothing.
    assert_eq!(
        b.session.play(Arc::from(vec![1u8; 160 * 3])).await,
        PlayResult::Finished
    );
    b.nothing_more().await;
    // A session that ended takes no more relayed packets.
    drop(b);
    talk(&a, 0, 1, 1, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(relay.stats().a_to_b.dropped(DropReason::NotOwner), 1);
}

/// Wire bytes from a phone: CSRCs, a header extension and padding leave a plain header and the
/// payload alone; random datagrams never stop the receive task that forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_and_random_packets_are_rewritten_or_dropped_never_fatal() {
    let pacer = Pacer::start(1);
    let (a, b) = (Leg::new(&pacer, 0).await, Leg::new(&pacer, 8).await);
    let relay = Relay::start(&a.session, PCMU, &b.session, PCMA).unwrap();
    // V=2, padding, extension, 2 CSRCs; PT 0; then CSRCs, a 1-word extension, 4 bytes of
    // payload and 3 of padding (the last byte says 3).
    let mut odd = vec![0xB2, 0x00, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0xC];
    odd.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    odd.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]);
    odd.extend_from_slice(&[0xFF, 0x00, 0x80, 0x7F]);
    odd.extend_from_slice(&[0, 0, 3]);
    a.phone.send_to(&odd, a.to_pivotd()).await.unwrap();
    let got = b.recv().await.expect("relayed");
    let mut want = [0u8; 4];
    codec::transcode(
        Codec::Pcmu,
        Codec::Pcma,
        &[0xFF, 0x00, 0x80, 0x7F],
        &mut want,
    );
    assert_eq!(got.len(), 12 + 4);
    assert_eq!(
        got.get(..2),
        Some(&[0x80, 0x88][..]),
        "plain header, marker, PT 8"
    );
    assert_eq!(got.get(12..), Some(&want[..]));
    for _ in 0..300 {
        let len = 12 + rand::random::<usize>() % 2000;
        let mut d: Vec<u8> = (0..len).map(|_| rand::random()).collect();
        d[0] = 0x80 | (d[0] & 0x3F);
        d[1] = [0, 8, 13, 101, 96, 18, 127][usize::from(d[1]) % 7] | (d[1] & 0x80);
        a.phone.send_to(&d, a.to_pivotd()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    while tokio::time::timeout(Duration::from_millis(100), b.recv())
        .await
        .is_ok_and(|r| r.is_some())
    {}
    // The forwarding task is alive: a plain packet still goes through.
    a.send(&audio(0, 1, 1, 0x77, 0)).await;
    let last = b.recv().await.expect("still relaying");
    assert_eq!(parse(&last).payload().len(), 160);
    assert!(relay.stats().a_to_b.relayed >= 2);
}
