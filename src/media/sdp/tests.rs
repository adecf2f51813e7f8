//! SDP parsing, offer/answer and the answers pivotd writes, against real clients' offers.

use super::*;

/// SIPp's built-in `uac` scenario offer, with its keywords filled in.
const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
    c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Linphone-style offer: opus, G722, PCMU, PCMA and two telephone-events.
const LINPHONE: &str = "v=0\r\n\
    o=alice 3071 1262 IN IP4 192.168.1.20\r\n\
    s=Talk\r\n\
    c=IN IP4 192.168.1.20\r\n\
    t=0 0\r\n\
    a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
    m=audio 7078 RTP/AVP 96 9 0 8 101 97\r\n\
    a=rtpmap:96 opus/48000/2\r\n\
    a=fmtp:96 useinbandfec=1\r\n\
    a=rtpmap:9 G722/8000\r\n\
    a=rtpmap:101 telephone-event/48000\r\n\
    a=rtpmap:97 telephone-event/8000\r\n\
    a=rtcp-fb:* trr-int 1000\r\n\
    m=video 9078 RTP/AVP 96\r\n\
    a=rtpmap:96 VP8/90000\r\n";

/// baresip-style offer: PCMA before PCMU, LF line ends, IPv6, ptime 20.
const BARESIP6: &str = "v=0\n\
    o=- 1234 5678 IN IP6 2001:db8::5\n\
    s=-\n\
    c=IN IP6 2001:db8::5\n\
    t=0 0\n\
    m=audio 10000 RTP/AVP 96 8 0 101\n\
    b=AS:64\n\
    a=rtpmap:96 opus/48000/2\n\
    a=rtpmap:101 telephone-event/8000\n\
    a=fmtp:101 0-15\n\
    a=ptime:20\n\
    a=sendrecv\n";

const HOLD: &str = "v=0\r\no=bob 1 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

const OLD_HOLD: &str = "v=0\r\no=bob 1 3 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 0\r\n";

const G729: &str = "v=0\r\no=x 1 1 IN IP4 10.0.0.3\r\ns=-\r\nc=IN IP4 10.0.0.3\r\nt=0 0\r\n\
    m=audio 5000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\n";

fn local() -> LocalSession {
    LocalSession {
        ip: "192.0.2.1".parse().unwrap(),
        port: 20000,
        session_id: 42,
        version: 7,
        crypto: Vec::new(),
        savp: false,
    }
}

#[test]
fn sipp_offer() {
    let sdp = parse(SIPP).unwrap();
    assert_eq!(sdp.origin.as_ref().unwrap().session_id, "53655765");
    let n = negotiate(&sdp).unwrap();
    assert_eq!(
        n,
        Negotiated {
            codec: Codec::Pcmu,
            codec_pt: 0,
            dtmf_pt: None,
            remote: Some("127.0.0.1:6000".parse().unwrap()),
            direction: Direction::SendRecv,
            ptime_ms: 20,
        }
    );
    let a = answer(&local(), &n);
    assert_eq!(
        a,
        "v=0\r\no=pivotd 42 7 IN IP4 192.0.2.1\r\ns=pivotd\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    );
}

/// An offer that maps one payload type to both PCMU and telephone-event: the audio keeps
/// it, DTMF gets none (with it, every audio packet was read as a key press).
#[test]
fn telephone_event_never_takes_the_audio_payload_type() {
    let offer = "v=0\r\no=x 1 1 IN IP4 10.0.0.3\r\ns=-\r\nc=IN IP4 10.0.0.3\r\nt=0 0\r\n\
        m=audio 5000 RTP/AVP 96 96\r\na=rtpmap:96 PCMU/8000\r\n\
        a=rtpmap:96 telephone-event/8000\r\n";
    let n = negotiate(&parse(offer).unwrap()).unwrap();
    assert_eq!((n.codec, n.codec_pt, n.dtmf_pt), (Codec::Pcmu, 96, None));
    let offer = offer
        .replace("96 96", "96 101")
        .replace("a=rtpmap:96 t", "a=rtpmap:101 t");
    let n = negotiate(&parse(&offer).unwrap()).unwrap();
    assert_eq!(n.dtmf_pt, Some(101));
}

#[test]
fn linphone_offer_picks_first_g711_and_8k_dtmf() {
    let sdp = parse(LINPHONE).unwrap();
    assert_eq!(sdp.media.len(), 2);
    let n = negotiate(&sdp).unwrap();
    assert_eq!(n.codec, Codec::Pcmu);
    assert_eq!(n.codec_pt, 0);
    assert_eq!(n.dtmf_pt, Some(97));
    assert_eq!(n.remote, Some("192.168.1.20:7078".parse().unwrap()));
    let a = answer(&local(), &n);
    assert!(a.contains("m=audio 20000 RTP/AVP 0 97\r\n"), "{a}");
    assert!(a.contains("a=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-16\r\n"));
    assert!(!a.contains("opus") && !a.contains("PCMA"));
    // With all m= lines mirrored, the video stream is refused with port 0.
    let full = answer_to_offer(&local(), &sdp, &n);
    assert!(
        full.ends_with("a=sendrecv\r\nm=video 0 RTP/AVP 96\r\n"),
        "{full}"
    );
    let back = parse(&full).unwrap();
    assert_eq!(back.media.len(), 2);
    assert_eq!(back.media[1].port, 0);
    // A later offer of ours keeps both lines, audio offered anew, video still refused.
    let again = offer_keeping_lines(&local(), &sdp, 101, Direction::SendRecv);
    let back = parse(&again).unwrap();
    assert_eq!(back.media.len(), 2);
    assert_eq!(back.media[0].formats, ["0", "8", "101"]);
    assert_eq!(back.media[0].port, 20000);
    assert_eq!(
        (back.media[1].kind.as_str(), back.media[1].port),
        ("video", 0)
    );
    assert_eq!(
        again.replace("m=video 0 RTP/AVP 96\r\n", ""),
        offer(&local(), 101)
    );
}

#[test]
fn baresip_ipv6_prefers_pcma() {
    let sdp = parse(BARESIP6).unwrap();
    let n = negotiate(&sdp).unwrap();
    assert_eq!(
        (n.codec, n.codec_pt, n.dtmf_pt),
        (Codec::Pcma, 8, Some(101))
    );
    assert_eq!(n.remote, Some("[2001:db8::5]:10000".parse().unwrap()));
    assert_eq!(sdp.media[0].ptime, Some(20));
    let l6 = LocalSession {
        ip: "2001:db8::1".parse().unwrap(),
        ..local()
    };
    let a = answer(&l6, &n);
    assert!(a.contains("o=pivotd 42 7 IN IP6 2001:db8::1\r\n"));
    assert!(a.contains("c=IN IP6 2001:db8::1\r\n"));
    assert!(a.contains("m=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"));
}

#[test]
fn dynamic_pt_for_g711_and_dtmf_clock_must_match() {
    let o = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n\
             m=audio 1000 RTP/AVP 112 110 111\r\na=rtpmap:112 pcmu/8000\r\n\
             a=rtpmap:110 telephone-event/16000\r\na=rtpmap:111 telephone-event/8000\r\n";
    let n = negotiate(&parse(o).unwrap()).unwrap();
    assert_eq!(
        (n.codec, n.codec_pt, n.dtmf_pt),
        (Codec::Pcmu, 112, Some(111))
    );
    // Only telephone-event at another clock: none.
    let o = o.replace("telephone-event/8000", "telephone-event/48000");
    assert_eq!(negotiate(&parse(&o).unwrap()).unwrap().dtmf_pt, None);
    // PT 0 remapped by rtpmap to something else is not PCMU.
    let o = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1000 RTP/AVP 0\r\na=rtpmap:0 G729/8000\r\n";
    assert_eq!(negotiate(&parse(o).unwrap()), Err(SdpError::NoCommonCodec));
}

#[test]
fn hold_offers() {
    let n = negotiate(&parse(HOLD).unwrap()).unwrap();
    assert_eq!(n.direction, Direction::RecvOnly);
    assert!(!n.direction.we_send() && n.direction.we_receive());
    assert_eq!(n.remote, Some("10.0.0.2:4000".parse().unwrap()));
    assert!(answer(&local(), &n).ends_with("a=recvonly\r\n"));

    let n = negotiate(&parse(OLD_HOLD).unwrap()).unwrap();
    assert_eq!(n.remote, None);
    assert_eq!(n.direction, Direction::RecvOnly);

    let inactive = HOLD.replace("a=sendonly", "a=inactive");
    let n = negotiate(&parse(&inactive).unwrap()).unwrap();
    assert_eq!(n.direction, Direction::Inactive);
    assert!(!n.direction.we_send() && !n.direction.we_receive());

    let recvonly = HOLD.replace("a=sendonly", "a=recvonly");
    assert_eq!(
        negotiate(&parse(&recvonly).unwrap()).unwrap().direction,
        Direction::SendOnly
    );
    // Session-level direction applies; media level wins over it.
    let s = "v=0\r\nc=IN IP4 1.2.3.4\r\na=sendonly\r\nm=audio 1000 RTP/AVP 0\r\n";
    assert_eq!(
        negotiate(&parse(s).unwrap()).unwrap().direction,
        Direction::RecvOnly
    );
    let s = "v=0\r\nc=IN IP4 1.2.3.4\r\na=sendonly\r\nm=audio 1000 RTP/AVP 0\r\na=sendrecv\r\n";
    assert_eq!(
        negotiate(&parse(s).unwrap()).unwrap().direction,
        Direction::SendRecv
    );
}

#[test]
fn media_level_connection_wins() {
    let s = "v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 1000 RTP/AVP 0\r\nc=IN IP4 2.2.2.2\r\n";
    let n = negotiate(&parse(s).unwrap()).unwrap();
    assert_eq!(n.remote, Some("2.2.2.2:1000".parse().unwrap()));
    // Multicast TTL suffix is stripped.
    let s = "v=0\r\nc=IN IP4 224.2.1.1/127\r\nm=audio 1000 RTP/AVP 0\r\n";
    assert_eq!(
        parse(s).unwrap().connection,
        Some("224.2.1.1".parse().unwrap())
    );
    // No c= anywhere.
    let s = "v=0\r\nm=audio 1000 RTP/AVP 0\r\n";
    assert!(matches!(
        negotiate(&parse(s).unwrap()),
        Err(SdpError::Malformed { line: 2, .. })
    ));
}

#[test]
fn unusable_offers() {
    assert_eq!(
        negotiate(&parse(G729).unwrap()),
        Err(SdpError::NoCommonCodec)
    );
    // RTP/SAVP is a stream pivotd can use (whether as SRTP is media/srtp/policy.rs's
    // decision); WebRTC's feedback profiles are not.
    let srtp = SIPP.replace("RTP/AVP", "RTP/SAVP");
    assert!(negotiate(&parse(&srtp).unwrap()).is_ok());
    let savpf = SIPP.replace("RTP/AVP", "RTP/SAVPF");
    assert_eq!(negotiate(&parse(&savpf).unwrap()), Err(SdpError::NoAudio));
    let port0 = SIPP.replace("m=audio 6000", "m=audio 0");
    assert_eq!(negotiate(&parse(&port0).unwrap()), Err(SdpError::NoAudio));
    let video = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 1000 RTP/AVP 96\r\n";
    assert_eq!(negotiate(&parse(video).unwrap()), Err(SdpError::NoAudio));
    // A refused first audio stream, a usable second one: the second is used.
    let two = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\nm=audio 2000 RTP/AVP 8\r\n";
    let n = negotiate(&parse(two).unwrap()).unwrap();
    assert_eq!(
        (n.codec, n.remote.map(|r| r.port())),
        (Codec::Pcma, Some(2000))
    );
}

#[test]
fn malformed_lines() {
    let cases: &[(&str, usize)] = &[
        ("", 1),
        ("hello\r\n", 1),
        ("v=1\r\n", 1),
        ("o=x 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", 1),
        ("v=0\r\nm=audio notaport RTP/AVP 0\r\n", 2),
        ("v=0\r\nm=audio 70000 RTP/AVP 0\r\n", 2),
        ("v=0\r\nm=audio 1000 RTP/AVP\r\n", 2),
        ("v=0\r\nc=IN IP4 999.1.1.1\r\n", 2),
        ("v=0\r\nc=IN IP4 2001:db8::1\r\n", 2),
        ("v=0\r\nc=IN IP4 media.example.com\r\n", 2),
        ("v=0\r\nc=IN IP4\r\n", 2),
        ("v=0\r\no=x 1\r\n", 2),
        ("v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:xx PCMU/8000\r\n", 3),
        ("v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", 3),
        (
            "v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:200 PCMU/8000\r\n",
            3,
        ),
        ("v=0\r\nm=audio 1 RTP/AVP 0\r\na=ptime:abc\r\n", 3),
        ("v=0\r\nm=audio 1 RTP/AVP 0\r\n\r\n=x\r\n", 4),
        ("v=0\r\ns=x\r\nv=0\r\n", 3),
    ];
    for (body, line) in cases {
        match parse(body) {
            Err(SdpError::Malformed { line: l, reason }) => {
                assert_eq!(l, *line, "{body:?}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{body:?} gave {other:?}"),
        }
    }
}

#[test]
fn late_offer_round_trip() {
    let o = offer(&local(), 101);
    assert_eq!(
        o,
        "v=0\r\no=pivotd 42 7 IN IP4 192.0.2.1\r\ns=pivotd\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    assert!(!offer(&local(), 8).contains("telephone-event"));
    // The caller answers with PCMA only, from its own address.
    let ans = "v=0\r\no=c 5 5 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
               m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let n = negotiate_answer(&parse(ans).unwrap()).unwrap();
    assert_eq!(
        (n.codec, n.codec_pt, n.dtmf_pt),
        (Codec::Pcma, 8, Some(101))
    );
    assert_eq!(n.remote, Some("198.51.100.7:30000".parse().unwrap()));
    assert_eq!(n.direction, Direction::SendRecv);
    // Our own answer, read back by a peer, negotiates the same thing.
    let ours = parse(&answer(&local(), &n)).unwrap();
    let again = negotiate_answer(&ours).unwrap();
    assert_eq!(
        (again.codec, again.codec_pt, again.dtmf_pt),
        (n.codec, n.codec_pt, n.dtmf_pt)
    );
    assert_eq!(again.remote, Some("192.0.2.1:20000".parse().unwrap()));
}

#[test]
fn direction_helpers() {
    use Direction::*;
    assert_eq!(SendOnly.answer_to(), RecvOnly);
    assert_eq!(RecvOnly.answer_to(), SendOnly);
    assert_eq!(SendRecv.answer_to(), SendRecv);
    assert_eq!(Inactive.answer_to(), Inactive);
    assert!(SendRecv.we_send() && SendRecv.we_receive());
    assert!(SendOnly.we_send() && !SendOnly.we_receive());
}

#[test]
fn hold_offers_and_answers_follow_rfc_3264() {
    use Direction::*;
    // §8.4: sendonly holds; inactive holds a side that holds us; resuming undoes each.
    assert_eq!(Direction::hold_offer(true, false), SendOnly);
    assert_eq!(Direction::hold_offer(true, true), Inactive);
    assert_eq!(Direction::hold_offer(false, false), SendRecv);
    assert_eq!(Direction::hold_offer(false, true), RecvOnly);
    // §6.1 while we hold the other side: only sendrecv changes (the hold stays).
    for offered in [SendRecv, SendOnly, RecvOnly, Inactive] {
        assert_eq!(offered.answer_to().holding(false), offered.answer_to());
    }
    assert_eq!(SendRecv.answer_to().holding(true), SendOnly);
    assert_eq!(SendOnly.answer_to().holding(true), RecvOnly);
    assert_eq!(Inactive.answer_to().holding(true), Inactive);
    assert_eq!(RecvOnly.answer_to().holding(true), SendOnly);
    // Who holds, read from our negotiated direction.
    assert!(RecvOnly.held() && Inactive.held());
    assert!(!SendRecv.held() && !SendOnly.held());
    // A hold offer keeps the m= lines of the last description, with the new direction.
    let two = parse(&format!("{SIPP}m=video 6002 RTP/AVP 31\r\n")).unwrap();
    let held = offer_keeping_lines(&local(), &two, 101, SendOnly);
    let back = parse(&held).unwrap();
    assert_eq!(back.media.len(), 2);
    assert_eq!(back.audio().unwrap().direction, Some(SendOnly));
}

#[test]
fn our_description_raises_its_version_only_on_a_change() {
    let mut ours = OurDescription::new(local(), Some(offer(&local(), 101)));
    let same = ours.describe(|l| offer(l, 101));
    assert_eq!(same, offer(&local(), 101), "unchanged: the same version");
    let held = ours.describe(|l| offer_with_direction(l, 101, Direction::SendOnly));
    let o = parse(&held).unwrap().origin.unwrap();
    assert_eq!(o.version, (local().version + 1).to_string());
    assert_eq!(o.session_id, local().session_id.to_string());
    let again = ours.describe(|l| offer_with_direction(l, 101, Direction::SendOnly));
    assert_eq!(again, held);
}

#[test]
fn never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(4566);
    let seeds = [SIPP, LINPHONE, BARESIP6, HOLD, OLD_HOLD, G729];
    let exercise = |s: &str| {
        if let Ok(sdp) = parse(s) {
            if let Ok(n) = negotiate(&sdp) {
                let _ = answer_to_offer(&local(), &sdp, &n);
                let _ = answer(&local(), &n);
            }
        }
    };
    for seed in seeds {
        for cut in 0..=seed.len() {
            if let Some(s) = seed.get(..cut) {
                exercise(s);
            }
        }
        for _ in 0..2000 {
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = rng.gen(),
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, *b"=/: \r\n0".get(rng.gen_range(0..7)).unwrap_or(&b'0')),
                }
            }
            exercise(&String::from_utf8_lossy(&b));
        }
    }
    for _ in 0..2000 {
        let n = rng.gen_range(0..300);
        let b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        exercise(&String::from_utf8_lossy(&b));
        let mut v = b"v=0\n".to_vec();
        v.extend_from_slice(&b);
        exercise(&String::from_utf8_lossy(&v));
    }
}
