//! The receive side: RTCP demux, the latch on the wire, foreign sources, events, proof by RTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtp_rs::{RtpPacketBuilder, Seq};
use tokio::net::UdpSocket as TokioUdp;

use super::*;
use crate::media::player::Pacer;
use crate::media::rtp::test_support::{collect, receiver, session, wait_for, LOCAL};
use crate::media::rtp::PlayResult;

fn rtp_packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::new()
        .payload_type(pt)
        .sequence(Seq::from(seq))
        .ssrc(42)
        .timestamp(7)
        .payload(payload)
        .build()
        .unwrap()
}

fn rtp_from(ssrc: u32, pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::new()
        .payload_type(pt)
        .sequence(Seq::from(seq))
        .ssrc(ssrc)
        .timestamp(7)
        .payload(payload)
        .build()
        .unwrap()
}

#[test]
fn rtcp_demux_by_second_byte() {
    assert!(is_rtcp(&[0x80, 200]));
    assert!(is_rtcp(&[0x81, 201]));
    assert!(is_rtcp(&[0x81, 223]));
    assert!(!is_rtcp(&[0x80, 0]));
    assert!(!is_rtcp(&[0x80, 0x80])); // PCMU with marker
    assert!(!is_rtcp(&[0x80, 101]));
    assert!(!is_rtcp(&[0x80]));
    assert!(!is_rtcp(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_rtp_latches_to_the_first_source() {
    let pacer = Pacer::start(1);
    let (sdp_rx, sdp_to) = receiver().await;
    let (nat_rx, _) = receiver().await;
    let s = session(&pacer, Some(sdp_to));
    let target: SocketAddr = (LOCAL, s.local_port()).into();
    nat_rx
        .send_to(&rtp_packet(0, 1, &[0xFF; 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.latched_remote().is_some()).await);
    assert_eq!(s.latched_remote(), Some(nat_rx.local_addr().unwrap()));
    // A later SDP address does not undo the latch.
    s.set_remote(Some(sdp_to));
    let from_sdp = collect(sdp_rx, Duration::from_millis(200));
    let from_nat = collect(nat_rx, Duration::from_millis(200));
    assert_eq!(
        s.play(Arc::from(vec![3u8; 480])).await,
        PlayResult::Finished
    );
    assert_eq!(from_nat.await.unwrap().len(), 3);
    assert_eq!(from_sdp.await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_and_garbage_are_ignored_and_last_received_updates() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let target: SocketAddr = (LOCAL, s.local_port()).into();
    let other = TokioUdp::bind((LOCAL, 0)).await.unwrap();
    // RTCP receiver report (RFC 3550 §6.4.2), garbage, an RTP version 1 packet, a truncated header.
    let rr = [
        0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ];
    other.send_to(&rr, target).await.unwrap();
    other
        .send_to(b"\xde\xad\xbe\xef garbage", target)
        .await
        .unwrap();
    other.send_to(&[0x40; 20], target).await.unwrap();
    other.send_to(&[0x80, 0], target).await.unwrap();
    other
        .send_to(&[0x90, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0], target)
        .await
        .unwrap();
    other.send_to(&rr, target).await.unwrap();
    assert!(
        wait_for(|| s.ignored_packets() == 6).await,
        "ignored {}",
        s.ignored_packets()
    );
    assert_eq!(s.received_packets(), 0);
    assert_eq!(s.last_received(), None);
    assert_eq!(s.latched_remote(), None);
    // Still plays to the SDP address.
    let got = collect(rx, Duration::from_millis(200));
    assert_eq!(
        s.play(Arc::from(vec![9u8; 320])).await,
        PlayResult::Finished
    );
    assert_eq!(got.await.unwrap().len(), 2);
    // A real RTP packet counts and stamps the time.
    let before = Instant::now();
    other
        .send_to(&rtp_packet(0, 5, &[0xFF; 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.received_packets() == 1).await);
    let t = s.last_received().unwrap();
    assert!(t >= before && t <= Instant::now(), "{t:?} vs {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telephone_events_reach_the_event_queue_and_it_stays_bounded() {
    let pacer = Pacer::start(1);
    let s = session(&pacer, None);
    s.set_event_payload_type(Some(101));
    let target: SocketAddr = (LOCAL, s.local_port()).into();
    let other = TokioUdp::bind((LOCAL, 0)).await.unwrap();
    other
        .send_to(&rtp_packet(0, 1, &[0xFF; 160]), target)
        .await
        .unwrap();
    other
        .send_to(&rtp_packet(101, 2, &[5, 0x8a, 0, 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.received_packets() == 2).await);
    let mut events = s.take_events().unwrap();
    assert!(s.take_events().is_none());
    let e = events.recv().await.unwrap();
    assert_eq!(e.payload_type, 101);
    assert_eq!(e.sequence, 2);
    assert_eq!(e.payload, vec![5, 0x8a, 0, 160]);
    assert!(events.try_recv().is_err());
    // Nobody reading: the queue holds at most EVENT_QUEUE packets.
    for seq in 0..(EVENT_QUEUE as u16 + 20) {
        other
            .send_to(&rtp_packet(101, seq, &[1, 0, 0, 0]), target)
            .await
            .unwrap();
    }
    assert!(wait_for(|| s.received_packets() == 2 + EVENT_QUEUE as u64 + 20).await);
    let mut n = 0;
    while events.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, EVENT_QUEUE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_latched_other_sources_are_dropped_and_counted() {
    let pacer = Pacer::start(1);
    let (caller, caller_addr) = receiver().await;
    let (intruder, _) = receiver().await;
    let s = session(&pacer, Some(caller_addr));
    s.set_event_payload_type(Some(101));
    let mut events = s.take_events().unwrap();
    let target: SocketAddr = (LOCAL, s.local_port()).into();
    caller
        .send_to(&rtp_from(1, 0, 1, &[0xFF; 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.latched_remote() == Some(caller_addr)).await);
    assert!(s.is_proven());
    let last = s.last_received();
    // Another address with another SSRC: audio and a key press.
    for seq in 0..5 {
        intruder
            .send_to(&rtp_from(99, 0, seq, &[0xFF; 160]), target)
            .await
            .unwrap();
    }
    intruder
        .send_to(&rtp_from(99, 101, 9, &[5, 0x8a, 0, 160]), target)
        .await
        .unwrap();
    assert!(
        wait_for(|| s.foreign_packets() == 6).await,
        "foreign {}",
        s.foreign_packets()
    );
    assert_eq!(s.received_packets(), 1);
    assert_eq!(
        s.last_received(),
        last,
        "foreign packets do not count as heard"
    );
    assert_eq!(s.latched_remote(), Some(caller_addr));
    assert!(
        events.try_recv().is_err(),
        "a foreign key press reached DTMF"
    );
    // The audio still goes to the caller. The quiet window starts before the play does: a
    // loaded machine (the whole suite in parallel) once took over 200 ms to send the first.
    let to_caller = collect(caller, Duration::from_millis(1000));
    let to_intruder = collect(intruder, Duration::from_millis(1000));
    assert_eq!(
        s.play(Arc::from(vec![3u8; 480])).await,
        PlayResult::Finished
    );
    assert_eq!(to_caller.await.unwrap().len(), 3);
    assert_eq!(to_intruder.await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdp_address_wins_the_latch_during_learning() {
    let pacer = Pacer::start(1);
    let (sdp_rx, sdp_to) = receiver().await;
    let (first_rx, first_addr) = receiver().await;
    let s = session(&pacer, Some(sdp_to));
    let target: SocketAddr = (LOCAL, s.local_port()).into();
    first_rx
        .send_to(&rtp_from(7, 0, 1, &[0xFF; 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.latched_remote() == Some(first_addr)).await);
    sdp_rx
        .send_to(&rtp_from(8, 0, 1, &[0xFF; 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.latched_remote() == Some(sdp_to)).await);
    first_rx
        .send_to(&rtp_from(7, 0, 2, &[0xFF; 160]), target)
        .await
        .unwrap();
    assert!(wait_for(|| s.foreign_packets() == 1).await);
    assert_eq!(s.latched_remote(), Some(sdp_to));
    let to_sdp = collect(sdp_rx, Duration::from_millis(200));
    let to_first = collect(first_rx, Duration::from_millis(200));
    assert_eq!(
        s.play(Arc::from(vec![3u8; 320])).await,
        PlayResult::Finished
    );
    assert_eq!(to_sdp.await.unwrap().len(), 2);
    assert_eq!(to_first.await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_rtp_proves_its_address() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    s.require_proof();
    assert!(!s.is_proven());
    rx.send_to(&rtp_from(1, 0, 1, &[0xFF; 160]), (LOCAL, s.local_port()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), s.wait_proven())
        .await
        .expect("proven by RTP");
    let got = collect(rx, Duration::from_millis(200));
    assert_eq!(
        s.play(Arc::from(vec![1u8; 320])).await,
        PlayResult::Finished
    );
    assert_eq!(got.await.unwrap().len(), 2);
}
