//! Sessions sending: pacing, packet form, plays, codec switches, hold, proof, drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtp_rs::RtpReader;

use super::*;
use crate::media::rtp::test_support::{collect, free_range, receiver, session, wait_for, LOCAL};
use crate::media::rtp::{PortPool, RtpError};

#[test]
fn start_outside_a_runtime_is_an_error() {
    let pacer = Pacer::start(1);
    let r = RtpSession::start(RtpPorts::ephemeral(LOCAL).unwrap(), &pacer, None, 0);
    assert!(matches!(r, Err(RtpError::NoRuntime)));
}

#[test]
fn handles_can_be_shared_between_tasks() {
    fn shared<T: Send + Sync>() {}
    shared::<Pacer>();
    shared::<RtpSession>();
    shared::<Arc<PortPool>>();
    shared::<RtpPorts>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_one_second_paced_and_well_formed() {
    let pacer = Pacer::start(2);
    let (rx, to) = receiver().await;
    // Start near the wrap so the sequence wraps mid-prompt.
    let s = RtpSession::start_with_seq(
        RtpPorts::ephemeral(LOCAL).unwrap(),
        &pacer,
        Some(to),
        8,
        0xFFE0,
    )
    .unwrap();
    let prompt: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
    let got = collect(rx, Duration::from_millis(300));
    assert_eq!(
        s.play(Arc::from(prompt.clone())).await,
        PlayResult::Finished
    );
    let got = got.await.unwrap();
    assert_eq!(got.len(), 50);
    let mut audio = Vec::new();
    let first = RtpReader::new(&got[0].data).unwrap();
    for (i, g) in got.iter().enumerate() {
        let p = RtpReader::new(&g.data).unwrap();
        assert_eq!(p.version(), 2);
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.ssrc(), first.ssrc());
        assert_eq!(p.ssrc(), s.ssrc());
        assert_eq!(p.mark(), i == 0, "marker only on the first packet (i={i})");
        let i16 = i as u16;
        assert_eq!(u16::from(p.sequence_number()), 0xFFE0u16.wrapping_add(i16));
        assert_eq!(
            p.timestamp(),
            first.timestamp().wrapping_add(160 * i as u32)
        );
        assert_eq!(p.payload().len(), 160);
        audio.extend_from_slice(p.payload());
    }
    assert_eq!(audio, prompt);
    let span = got[49].at - got[0].at;
    assert!(
        span >= Duration::from_millis(900) && span <= Duration::from_millis(1300),
        "span {span:?}"
    );
    let mean = span / 49;
    assert!(
        mean >= Duration::from_millis(18) && mean <= Duration::from_millis(27),
        "mean {mean:?}"
    );
    assert_eq!(s.packets_sent(), 50);
    let stats = pacer.stats();
    assert_eq!(stats.packets_sent, 50);
    assert_eq!(stats.streams, 1);
    assert!(stats.max_lateness < Duration::from_millis(500), "{stats:?}");
    assert_eq!(s.max_lateness(), stats.max_lateness);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_last_packet_is_padded_with_alaw_silence_and_timestamps_run_over_gaps() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    s.set_payload_type(8);
    let got = collect(rx, Duration::from_millis(300));
    assert_eq!(
        s.play(Arc::from(vec![1u8; 200])).await,
        PlayResult::Finished
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.play(Arc::from(vec![2u8; 160])).await,
        PlayResult::Finished
    );
    let got = got.await.unwrap();
    assert_eq!(got.len(), 3);
    let p: Vec<RtpReader> = got
        .iter()
        .map(|g| RtpReader::new(&g.data).unwrap())
        .collect();
    let mut second = vec![1u8; 40];
    second.resize(160, 0xD5);
    assert_eq!(p[1].payload(), &second[..]);
    assert_eq!(p[1].payload_type(), 8);
    // New talkspurt: marker again, consecutive seq, timestamp advanced over the pause.
    assert!(p[2].mark());
    assert_eq!(
        u16::from(p[2].sequence_number()),
        u16::from(p[1].sequence_number()).wrapping_add(1)
    );
    let gap = p[2].timestamp().wrapping_sub(p[1].timestamp());
    assert_eq!(gap % 160, 0);
    assert!(
        gap >= 160 * 5,
        "timestamp gap {gap} should cover the ~100 ms pause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_playing_resolves_stopped_and_silences() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let got = collect(rx, Duration::from_millis(300));
    let (result, ()) = tokio::join!(s.play(Arc::from(vec![0u8; 160 * 250])), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.stop_playing();
    });
    assert_eq!(result, PlayResult::Stopped);
    let got = got.await.unwrap();
    // ~10 expected; loose for a loaded machine.
    assert!(got.len() >= 5 && got.len() <= 40, "{} packets", got.len());
    assert_eq!(s.packets_sent(), got.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_play_stops_the_running_one() {
    let pacer = Pacer::start(1);
    let s = session(&pacer, None);
    let (a, b) = tokio::join!(s.play(Arc::from(vec![0u8; 160 * 100])), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.play(Arc::from(vec![0u8; 320])).await
    });
    assert_eq!(a, PlayResult::Stopped);
    assert_eq!(b, PlayResult::Finished);
    // No remote: nothing sent, but plays still keep time.
    assert_eq!(s.packets_sent(), 0);
}

/// The call task may handle a re-INVITE between starting a play and first polling it:
/// the codec switch must still find the play and swap its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_switch_before_the_play_is_polled_swaps_its_bytes() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    let got = collect(rx, Duration::from_millis(200));
    let playing = s.play(Arc::from(vec![0x11u8; 160 * 5]));
    s.switch_codec(8, 0xD5, Arc::from(vec![0x22u8; 160 * 5]));
    assert_eq!(playing.await, PlayResult::Finished);
    let got = got.await.unwrap();
    assert_eq!(got.len(), 5);
    for g in &got {
        let p = RtpReader::new(&g.data).unwrap();
        assert_eq!(p.payload_type(), 8);
        assert!(
            p.payload().iter().all(|&b| b == 0x22),
            "old codec's bytes under PT 8"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_sends_nothing_but_the_play_keeps_time() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    s.set_sending(false);
    let got = collect(rx, Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(
        s.play(Arc::from(vec![0u8; 160 * 10])).await,
        PlayResult::Finished
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(got.await.unwrap().len(), 0);
    s.set_sending(true);
    assert_eq!(
        s.play(Arc::from(vec![0u8; 160])).await,
        PlayResult::Finished
    );
    assert_eq!(s.packets_sent(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_sending_and_frees_the_port() {
    let (min, max) = free_range(1);
    let pool = PortPool::new(LOCAL, min, max).unwrap();
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = RtpSession::start(pool.allocate().unwrap(), &pacer, Some(to), 0).unwrap();
    assert_eq!(s.local_port(), min);
    assert_eq!(pool.available(), 0);
    let got = collect(rx, Duration::from_millis(300));
    // Dropping the play future stops the playback.
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        s.play(Arc::from(vec![0u8; 160 * 100])),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(pacer.stats().streams, 1);
    drop(s);
    assert!(wait_for(|| pool.available() == 1).await);
    assert_eq!(pacer.stats().streams, 0);
    let n = got.await.unwrap().len();
    assert!((2..=25).contains(&n), "{n} packets");
    // The pair really is free: it binds again.
    let again = pool.allocate().unwrap();
    assert_eq!(again.rtp_port(), min);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_on_one_pacer_all_deliver() {
    const N: usize = 200;
    const PACKETS: usize = 25;
    let pacer = Pacer::start(2);
    let mut sessions = Vec::new();
    let mut collectors = Vec::new();
    for _ in 0..N {
        let (rx, to) = receiver().await;
        sessions.push(Arc::new(session(&pacer, Some(to))));
        collectors.push(collect(rx, Duration::from_millis(500)));
    }
    let prompt: Arc<[u8]> = (0..160 * PACKETS)
        .map(|i| (i % 256) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut plays = tokio::task::JoinSet::new();
    for s in &sessions {
        let (s, p) = (s.clone(), prompt.clone());
        plays.spawn(async move { s.play(p).await });
    }
    while let Some(r) = plays.join_next().await {
        assert_eq!(r.unwrap(), PlayResult::Finished);
    }
    for (i, c) in collectors.into_iter().enumerate() {
        let got = c.await.unwrap();
        assert_eq!(got.len(), PACKETS, "receiver {i}");
        let first = RtpReader::new(&got[0].data).unwrap();
        let mut audio = Vec::new();
        for (j, g) in got.iter().enumerate() {
            let p = RtpReader::new(&g.data).unwrap();
            assert_eq!(
                u16::from(p.sequence_number()),
                u16::from(first.sequence_number()).wrapping_add(j as u16)
            );
            assert_eq!(p.ssrc(), sessions[i].ssrc());
            audio.extend_from_slice(p.payload());
        }
        assert_eq!(&audio[..], &prompt[..]);
    }
    let stats = pacer.stats();
    assert_eq!(stats.packets_sent, (N * PACKETS) as u64);
    assert_eq!(stats.streams, N);
    assert_eq!(stats.send_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unproven_address_gets_nothing_until_it_proves_itself() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = Arc::new(session(&pacer, Some(to)));
    s.require_proof();
    let got = collect(rx.clone(), Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(
        s.play(Arc::from(vec![1u8; 160 * 10])).await,
        PlayResult::Finished
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the play keeps time"
    );
    assert_eq!(got.await.unwrap().len(), 0);
    assert_eq!(s.packets_sent(), 0);
    // The ACK proves it: a waiter wakes, and sending starts.
    let w = s.clone();
    let waiter = tokio::spawn(async move { w.wait_proven().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    s.prove();
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("wait_proven resolves")
        .unwrap();
    let got = collect(rx, Duration::from_millis(200));
    assert_eq!(
        s.play(Arc::from(vec![1u8; 320])).await,
        PlayResult::Finished
    );
    assert_eq!(got.await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_early_audio_stops_when_its_window_closes() {
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    s.require_proof();
    s.allow_unproven_for(Duration::from_millis(200));
    let got = collect(rx, Duration::from_millis(300));
    let started = Instant::now();
    // One second of audio: about 200 ms of it goes out, the rest keeps time silently.
    assert_eq!(
        s.play(Arc::from(vec![1u8; 160 * 50])).await,
        PlayResult::Finished
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let n = got.await.unwrap().len();
    assert!((5..=14).contains(&n), "{n} packets in a 200 ms window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_pair_starts_session_after_session() {
    let (min, max) = free_range(2);
    let pool = PortPool::new(LOCAL, min, max).unwrap();
    let pacer = Pacer::start(1);
    let (_rx, to) = receiver().await;
    for round in 0..50 {
        let ports = pool
            .allocate()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let s = RtpSession::start(ports, &pacer, Some(to), 0)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(s);
        assert!(wait_for(|| pool.available() == 2).await, "round {round}");
    }
    // One pair served every call, kept bound between them.
    assert_eq!(pool.kept_bound(), 1);
}

// ---------------------------------------------------------------------------------------
// SRTP (RFC 3711): what a keyed session sends and takes.

/// An RTP packet from the far end: PCMU, `seq`, audio bytes of `fill`.
fn far_end_rtp(seq: u16, fill: u8) -> Vec<u8> {
    crate::media::rtp::test_support::pcmu_packet(seq, 0xfeed_f00d, &[fill; 160])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_session_sends_srtp_only_and_takes_only_authentic_packets_once() {
    use crate::media::srtp::{SrtpKey, SrtpReceiver, SrtpSender, Suite};
    for suite in Suite::ALL {
        let pacer = Pacer::start(1);
        let (rx, to) = receiver().await;
        let s = session(&pacer, Some(to));
        let (ours, theirs) = (SrtpKey::generate(suite), SrtpKey::generate(suite));
        s.set_srtp(&ours, &theirs).unwrap();
        assert!(s.is_srtp());

        // What the session plays leaves as SRTP under our key: the far end opens every
        // packet to the prompt's bytes, and nothing is readable without the key.
        let prompt: Vec<u8> = (0..1600u32).map(|i| (i % 199) as u8).collect();
        let got = collect(rx.clone(), Duration::from_millis(300));
        assert_eq!(
            s.play(Arc::from(prompt.clone())).await,
            PlayResult::Finished
        );
        let got = got.await.unwrap();
        assert_eq!(got.len(), 10, "{suite:?}");
        let mut far = SrtpReceiver::new(&ours).unwrap();
        let mut audio = Vec::new();
        for g in &got {
            assert_eq!(g.data.len(), 12 + 160 + suite.overhead(), "{suite:?}");
            assert!(!g
                .data
                .windows(16)
                .any(|w| prompt.windows(16).any(|p| p == w)));
            let plain = far.unprotect(&g.data).unwrap();
            audio.extend_from_slice(RtpReader::new(&plain).unwrap().payload());
        }
        assert_eq!(audio, prompt, "{suite:?}");

        // The far end's packets: authentic ones count, a forged or corrupted one and a replay
        // are dropped and counted, and a plain RTP packet is no longer taken at all.
        let far_sock = tokio::net::UdpSocket::bind((LOCAL, 0)).await.unwrap();
        let ours_addr = std::net::SocketAddr::new(LOCAL, s.local_port());
        let mut far_tx = SrtpSender::new(&theirs).unwrap();
        let first = far_tx.protect(&far_end_rtp(1, 0x55)).unwrap();
        far_sock.send_to(&first, ours_addr).await.unwrap();
        assert!(wait_for(|| s.received_packets() == 1).await, "{suite:?}");
        let mut forged = far_tx.protect(&far_end_rtp(2, 0x55)).unwrap().to_vec();
        forged[30] ^= 0x01;
        far_sock.send_to(&forged, ours_addr).await.unwrap();
        far_sock.send_to(&first, ours_addr).await.unwrap();
        far_sock
            .send_to(&far_end_rtp(3, 0x55), ours_addr)
            .await
            .unwrap();
        let mut stranger = SrtpSender::new(&SrtpKey::generate(suite)).unwrap();
        let other = stranger.protect(&far_end_rtp(4, 0x55)).unwrap();
        far_sock.send_to(&other, ours_addr).await.unwrap();
        assert!(
            wait_for(|| s.srtp_refused_packets() == (3, 1)).await,
            "{suite:?}: {:?}",
            s.srtp_refused_packets()
        );
        assert_eq!(s.received_packets(), 1, "{suite:?}");
        let next = far_tx.protect(&far_end_rtp(5, 0x55)).unwrap();
        far_sock.send_to(&next, ours_addr).await.unwrap();
        assert!(wait_for(|| s.received_packets() == 2).await, "{suite:?}");
    }
}

/// A leg that must be SRTP before its keys are known (a late offer under `required`) sends
/// nothing; the bridge's outbound session handed to a plain far end (`clear_srtp`) sends and
/// takes plain RTP again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_forbidden_clear_sends_nothing_and_a_cleared_one_is_plain_again() {
    use crate::media::srtp::{SrtpKey, Suite};
    let pacer = Pacer::start(1);
    let (rx, to) = receiver().await;
    let s = session(&pacer, Some(to));
    s.forbid_clear();
    assert!(!s.is_srtp(), "not keyed: not counted as an SRTP call");
    let prompt: Vec<u8> = (0..800u32).map(|i| (i % 199) as u8).collect();
    let got = collect(rx.clone(), Duration::from_millis(300));
    assert_eq!(
        s.play(Arc::from(prompt.clone())).await,
        PlayResult::Finished
    );
    assert!(got.await.unwrap().is_empty(), "nothing in clear");

    let suite = Suite::AesCm128HmacSha1_80;
    s.set_srtp(&SrtpKey::generate(suite), &SrtpKey::generate(suite))
        .unwrap();
    s.clear_srtp();
    assert!(!s.is_srtp());
    let got = collect(rx.clone(), Duration::from_millis(300));
    assert_eq!(
        s.play(Arc::from(prompt.clone())).await,
        PlayResult::Finished
    );
    let got = got.await.unwrap();
    let audio: Vec<u8> = got
        .iter()
        .flat_map(|g| RtpReader::new(&g.data).unwrap().payload().to_vec())
        .collect();
    assert_eq!(audio, prompt, "plain RTP again");
    // The far end's plain RTP is taken again.
    let far_sock = tokio::net::UdpSocket::bind((LOCAL, 0)).await.unwrap();
    let ours_addr = std::net::SocketAddr::new(LOCAL, s.local_port());
    far_sock
        .send_to(&far_end_rtp(1, 0x55), ours_addr)
        .await
        .unwrap();
    assert!(wait_for(|| s.received_packets() == 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_hears_every_packet_the_session_accepts() {
    let pacer = Pacer::start(1);
    let ear = RtpSession::start(RtpPorts::ephemeral(LOCAL).unwrap(), &pacer, None, 0).unwrap();
    let mut heard = ear.listen();
    let to = std::net::SocketAddr::new(LOCAL, ear.local_port());
    let mouth =
        RtpSession::start(RtpPorts::ephemeral(LOCAL).unwrap(), &pacer, Some(to), 0).unwrap();
    let prompt: Vec<u8> = (0..1600u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        mouth.play(Arc::from(prompt.clone())).await,
        PlayResult::Finished
    );
    let mut got = Vec::new();
    while got.len() < 10 {
        let p = tokio::time::timeout(Duration::from_secs(2), heard.recv())
            .await
            .expect("the ten packets heard")
            .expect("the listener stays while the session lives");
        assert_eq!((p.payload_type, p.ssrc), (0, mouth.ssrc()));
        got.push(p);
    }
    for w in got.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(160));
    }
    let audio: Vec<u8> = got.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(audio, prompt);
    assert_eq!(ear.received_packets(), 10);
}
