//! Telephone-events on a real session: a fake phone on loopback receives them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtp_rs::RtpReader;

use super::*;
use crate::media::codec::Codec;
use crate::media::dtmf::{DtmfReceiver, TelephoneEvent};
use crate::media::player::{Pacer, PlayResult};
use crate::media::relay::{LegFormat, Relay};
use crate::media::rtp::test_support::{collect, receiver, session, Got};

/// One received packet, header and event payload (None: not an event packet).
#[derive(Debug)]
struct Rx {
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    event: Option<TelephoneEvent>,
    payload: Vec<u8>,
}

fn read(got: &[Got]) -> Vec<Rx> {
    got.iter()
        .map(|g| {
            let p = RtpReader::new(&g.data).unwrap();
            assert_eq!(p.version(), 2);
            Rx {
                pt: p.payload_type(),
                marker: p.mark(),
                seq: u16::from(p.sequence_number()),
                ts: p.timestamp(),
                ssrc: p.ssrc(),
                event: (p.payload_type() == 101)
                    .then(|| TelephoneEvent::parse(p.payload()).unwrap()),
                payload: p.payload().to_vec(),
            }
        })
        .collect()
}

fn assert_contiguous(pkts: &[Rx]) {
    for w in pkts.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "{pkts:#?}");
    }
}

/// The packets of one event: durations 160, 320, … then three end packets.
fn assert_event(ev: &[Rx], code: u8, packets: u16) {
    assert_eq!(ev.len(), usize::from(packets) + 2, "{ev:#?}");
    for (i, p) in ev.iter().enumerate() {
        let e = p.event.unwrap();
        assert_eq!(p.pt, 101);
        assert_eq!(p.marker, i == 0, "marker on the first packet only");
        assert_eq!(p.ts, ev[0].ts, "one timestamp per event");
        assert_eq!(e.code, code);
        assert_eq!(e.volume, 10);
        let n = (i as u16 + 1).min(packets);
        assert_eq!(e.duration, 160 * n);
        assert_eq!(e.end, i + 1 >= usize::from(packets));
    }
    assert_eq!(ev.iter().filter(|p| p.event.unwrap().end).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_go_out_as_rfc4733_events_and_the_pacer_continues_after() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let got = collect(rx.clone(), Duration::from_millis(300));
    let started = Instant::now();
    s.send_digits("1#", Duration::from_millis(60), 101)
        .await
        .unwrap();
    // Two events of 3 slots, two retransmissions each, and the gap between them.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let pkts = read(&got.await.unwrap());
    assert_eq!(pkts.len(), 10, "{pkts:#?}");
    assert!(pkts.iter().all(|p| p.ssrc == s.ssrc()));
    assert_contiguous(&pkts);
    let (one, hash) = pkts.split_at(5);
    assert_event(one, 1, 3);
    assert_event(hash, 11, 3);
    // The second event starts 60 ms + 100 ms after the first, on the sampling clock.
    assert_eq!(hash[0].ts.wrapping_sub(one[0].ts), 160 * (3 + 5));

    // The receiving side's own decoder reads exactly these digits.
    let mut decoder = DtmfReceiver::new();
    let digits: String = pkts
        .iter()
        .filter_map(|p| decoder.on_packet(p.ssrc, p.ts, p.marker, &p.payload))
        .collect();
    assert_eq!(digits, "1#");

    // The clock is the pacer's again: a prompt goes out, continuing the stream.
    let (out, _) = s.relay_end();
    assert_eq!(out.clock().owner(), PACER);
    let got = collect(rx, Duration::from_millis(200));
    assert_eq!(
        s.play(Arc::from(vec![0x55u8; 320])).await,
        PlayResult::Finished
    );
    let audio = read(&got.await.unwrap());
    assert_eq!(audio.len(), 2);
    let last = &pkts[9];
    assert_eq!(audio[0].pt, 0);
    assert_eq!(audio[0].ssrc, s.ssrc());
    assert!(audio[0].marker, "a new sender starts a talkspurt");
    assert_eq!(audio[0].seq, last.seq.wrapping_add(1));
    assert_eq!(audio[1].seq, last.seq.wrapping_add(2));
    // After the end of the last event (its start plus its 480 samples), never back into it.
    let after = audio[0].ts.wrapping_sub(last.ts);
    assert!((480..0x8000_0000).contains(&after), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn characters_that_are_not_digits_are_skipped() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let got = collect(rx.clone(), Duration::from_millis(300));
    // A 10 ms duration is raised to the 40 ms minimum: two slots.
    s.send_digits("x é,a\u{1b}\n", Duration::from_millis(10), 101)
        .await
        .unwrap();
    let pkts = read(&got.await.unwrap());
    assert_contiguous(&pkts);
    assert_event(&pkts, 12, 2);

    // Nothing valid: nothing sent, and the pacer keeps the stream.
    let got = collect(rx, Duration::from_millis(100));
    s.send_digits("wxyz?", Duration::from_millis(60), 101)
        .await
        .unwrap();
    s.send_digits("", Duration::from_millis(60), 101)
        .await
        .unwrap();
    assert!(got.await.unwrap().is_empty());
    assert_eq!(s.relay_end().0.clock().owner(), PACER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_session_is_busy_until_the_relay_stops() {
    let pacer = Pacer::start(1);
    let (_rx_a, to_a) = receiver().await;
    let (rx_b, to_b) = receiver().await;
    let a = session(&pacer, Some(to_a));
    let b = session(&pacer, Some(to_b));
    let format = LegFormat::new(Codec::Pcmu, Some(101));
    let relay = Relay::start(&a, format, &b, format).unwrap();
    assert_eq!(
        b.send_digits("1", Duration::from_millis(60), 101).await,
        Err(SendDigitsError::Busy)
    );
    // The refusal left the relay its clock.
    assert_ne!(b.relay_end().0.clock().owner(), PACER);
    drop(relay);
    let got = collect(rx_b, Duration::from_millis(200));
    b.send_digits("1", Duration::from_millis(60), 101)
        .await
        .unwrap();
    assert_eq!(got.await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_owns_the_stream_so_a_relay_or_a_second_send_is_refused() {
    let pacer = Pacer::start(1);
    let (_rx_a, to_a) = receiver().await;
    let (_rx_b, to_b) = receiver().await;
    let a = session(&pacer, Some(to_a));
    let b = session(&pacer, Some(to_b));
    let format = LegFormat::new(Codec::Pcmu, Some(101));
    let (first, (second, relay)) =
        tokio::join!(b.send_digits("12", Duration::from_millis(60), 101), async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let second = b.send_digits("3", Duration::from_millis(60), 101).await;
            (second, Relay::start(&a, format, &b, format).err())
        });
    assert_eq!(first, Ok(()));
    assert_eq!(second, Err(SendDigitsError::Busy));
    assert!(matches!(relay, Some(crate::media::relay::RelayError::Busy)));
    // The relay's failed start gave leg A back to the pacer.
    assert_eq!(a.relay_end().0.clock().owner(), PACER);
    assert_eq!(b.relay_end().0.clock().owner(), PACER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_during_the_events_keeps_its_time_and_the_stream_stays_one() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let got = collect(rx, Duration::from_millis(300));
    // 600 ms of audio; the events take the stream from ~100 ms to ~200 ms.
    let (played, sent) = tokio::join!(s.play(Arc::from(vec![0x55u8; 160 * 30])), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.send_digits("7", Duration::from_millis(60), 101).await
    });
    assert_eq!(played, PlayResult::Finished);
    assert_eq!(sent, Ok(()));
    let pkts = read(&got.await.unwrap());
    assert_contiguous(&pkts);
    let first = pkts.iter().position(|p| p.pt == 101).unwrap();
    let events = &pkts[first..first + 5];
    assert_event(events, 7, 3);
    let (before, after) = (&pkts[..first], &pkts[first + 5..]);
    assert!(before.len() >= 2 && after.len() >= 2, "{pkts:#?}");
    assert!(before.iter().chain(after).all(|p| p.pt == 0));
    // The audio after was held back while the events went out (no packet mixed in, the
    // play kept its time) and continues after the event's end.
    assert!(before.len() + after.len() < 30);
    assert!(after[0].marker);
    let ev_ts = events[0].ts;
    assert!(ev_ts.wrapping_sub(before.last().unwrap().ts) < 0x8000_0000);
    assert!((480..0x8000_0000).contains(&after[0].ts.wrapping_sub(ev_ts)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_send_ends_its_event_and_gives_the_stream_back() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let got = collect(rx, Duration::from_millis(300));
    let cut = tokio::time::timeout(
        Duration::from_millis(70),
        s.send_digits("5", Duration::from_secs(2), 101),
    )
    .await;
    assert!(cut.is_err(), "still sending after 70 ms");
    assert_eq!(s.relay_end().0.clock().owner(), PACER);
    assert_eq!(
        s.play(Arc::from(vec![0x55u8; 160])).await,
        PlayResult::Finished
    );
    let pkts = read(&got.await.unwrap());
    assert_contiguous(&pkts);
    let (last_audio, events) = pkts.split_last().unwrap();
    assert_eq!(last_audio.pt, 0);
    assert!(events.len() >= 3, "{pkts:#?}");
    let (end, updates) = events.split_last().unwrap();
    assert!(updates.iter().all(|p| !p.event.unwrap().end));
    let end = end.event.unwrap();
    assert!(end.end && end.code == 5);
    assert_eq!(
        end.duration,
        updates.last().unwrap().event.unwrap().duration
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_hold_the_events_keep_their_time_and_send_nothing() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    s.set_sending(false);
    let got = collect(rx, Duration::from_millis(200));
    let started = Instant::now();
    s.send_digits("9", Duration::from_millis(40), 101)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert!(got.await.unwrap().is_empty());
    assert_eq!(s.relay_end().0.clock().owner(), PACER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_ended() {
    let pacer = Pacer::start(1);
    let s = session(&pacer, None);
    let (out, _) = s.relay_end();
    out.clock().close();
    assert_eq!(
        send_digits(&out, "1", Duration::from_millis(40), 101).await,
        Err(SendDigitsError::Ended)
    );
}

#[test]
fn durations_are_held_within_the_caps_in_whole_packets() {
    assert_eq!(packets_per_event(Duration::ZERO), 2);
    assert_eq!(packets_per_event(Duration::from_millis(40)), 2);
    assert_eq!(packets_per_event(Duration::from_millis(50)), 3);
    assert_eq!(packets_per_event(Duration::from_millis(60)), 3);
    assert_eq!(packets_per_event(DEFAULT_EVENT_DURATION), 100);
    assert_eq!(packets_per_event(Duration::from_secs(3600)), 250);
    // The longest event's duration fits the 16-bit field.
    assert!(250 * SAMPLES_PER_PACKET <= u32::from(u16::MAX));
}

#[test]
fn digits_are_read_by_character_and_capped() {
    assert_eq!(
        Codes::parse("0123456789*#ABCDabcd").as_slice(),
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 12, 13, 14, 15]
    );
    // Multi-byte characters around digits: no byte slicing, no panic.
    assert_eq!(Codes::parse("é1\u{10FFFF}2😀#").as_slice(), &[1, 2, 11]);
    let long = "1".repeat(1000);
    let codes = Codes::parse(&long);
    assert_eq!(codes.as_slice().len(), MAX_DIGITS);
    assert!(Codes::parse("xyz").as_slice().is_empty());
}

#[test]
fn an_event_packet_is_laid_out_as_rfc4733_says() {
    let mut buf = [0u8; PACKET];
    EventPacket {
        pt: 101,
        marker: true,
        seq: 0x1234,
        ts: 0xDEAD_BEEF,
        ssrc: 0x0102_0304,
        code: 11,
        end: true,
        duration: 480,
    }
    .write(&mut buf);
    assert_eq!(
        buf,
        [
            0x80,
            0x80 | 101,
            0x12,
            0x34,
            0xDE,
            0xAD,
            0xBE,
            0xEF,
            1,
            2,
            3,
            4,
            11,
            0x80 | 10,
            0x01,
            0xE0
        ]
    );
    let p = RtpReader::new(&buf).unwrap();
    assert_eq!(p.payload_type(), 101);
    assert!(p.mark());
    assert_eq!(
        TelephoneEvent::parse(p.payload()),
        Some(TelephoneEvent {
            code: 11,
            end: true,
            volume: 10,
            duration: 480
        })
    );
}
