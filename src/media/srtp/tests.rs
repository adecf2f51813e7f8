use super::sdes::{choose, offer, parse_value, CryptoLineError};
use super::*;

/// An RTP packet: PCMU, `seq`, 160 bytes of audio.
fn rtp(seq: u16) -> Vec<u8> {
    let audio: Vec<u8> = (0..160u32).map(|i| (i * 7 % 251) as u8).collect();
    crate::media::rtp::test_support::pcmu_packet(seq, 0x1234_5678, &audio)
}

fn pair(suite: Suite) -> (SrtpSender, SrtpReceiver) {
    let key = SrtpKey::generate(suite);
    (
        SrtpSender::new(&key).unwrap(),
        SrtpReceiver::new(&key).unwrap(),
    )
}

#[test]
fn every_suite_round_trips_and_hides_the_audio() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite);
        // Across the sequence number wrap (the rollover counter, RFC 3711 §3.3.1).
        for seq in [65532u16, 65533, 65534, 65535, 0, 1, 2] {
            let plain = rtp(seq);
            let sealed = tx.protect(&plain).unwrap();
            assert_eq!(sealed.len(), plain.len() + suite.overhead(), "{suite:?}");
            assert_eq!(sealed[..12], plain[..12], "the header stays clear");
            assert_ne!(sealed[12..172], plain[12..], "{suite:?}: audio encrypted");
            assert_eq!(&rx.unprotect(&sealed).unwrap()[..], &plain[..], "{suite:?}");
        }
    }
}

#[test]
fn the_tag_lengths_are_the_suites() {
    assert_eq!(Suite::AesCm128HmacSha1_80.overhead(), 10);
    assert_eq!(Suite::AesCm128HmacSha1_32.overhead(), 4);
    assert_eq!(Suite::AeadAes128Gcm.overhead(), 16);
    assert_eq!(
        Suite::AeadAes128Gcm.key_len() + Suite::AeadAes128Gcm.salt_len(),
        28
    );
}

#[test]
fn a_bad_tag_a_replay_and_another_key_are_refused() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite);
        let sealed = tx.protect(&rtp(10)).unwrap();
        let mut bad = sealed.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert_eq!(
            rx.unprotect(&bad),
            Err(SrtpError::Authentication),
            "{suite:?}"
        );
        let mut flipped = sealed.to_vec();
        flipped[20] ^= 0x80;
        assert_eq!(
            rx.unprotect(&flipped),
            Err(SrtpError::Authentication),
            "{suite:?}"
        );
        // The refused copies did not use up the sequence number: the real one passes once.
        assert!(rx.unprotect(&sealed).is_ok(), "{suite:?}");
        assert_eq!(rx.unprotect(&sealed), Err(SrtpError::Replay), "{suite:?}");
        // Within the window, an older packet not seen yet still passes.
        let (mut tx2, mut rx2) = pair(suite);
        let old = tx2.protect(&rtp(100)).unwrap();
        let new = tx2.protect(&rtp(101)).unwrap();
        assert!(rx2.unprotect(&new).is_ok());
        assert!(rx2.unprotect(&old).is_ok());
        // Another leg's key cannot open it.
        let (_, mut stranger) = pair(suite);
        assert_eq!(
            stranger.unprotect(&tx.protect(&rtp(11)).unwrap()),
            Err(SrtpError::Authentication)
        );
    }
}

#[test]
fn short_and_non_rtp_input_is_refused_without_panic() {
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
    for junk in [
        &[][..],
        &[0x80],
        &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        &[0xff; 20],
    ] {
        assert!(rx.unprotect(junk).is_err());
        let _ = tx.protect(junk);
    }
}

#[test]
fn rfc4568_example_lines_parse_and_what_pivotd_cannot_honour_is_refused() {
    // RFC 4568 §4's example, without its MKI.
    let line = parse_value(
        b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
    )
    .unwrap();
    assert_eq!(line.tag, 1);
    assert_eq!(line.key.suite, Suite::AesCm128HmacSha1_80);
    assert_eq!(line.key.material().len(), 30);
    assert_eq!(
        parse_value(
            b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
        ),
        Err(CryptoLineError::Mki)
    );
    let cases: &[(&[u8], CryptoLineError)] = &[
        (b"", CryptoLineError::Shape),
        (b"1 AES_CM_128_HMAC_SHA1_80", CryptoLineError::Shape),
        (b"x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", CryptoLineError::Tag),
        (b"1234567890 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", CryptoLineError::Tag),
        (b"1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", CryptoLineError::Suite),
        (b"1 aes_cm_128_hmac_sha1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", CryptoLineError::Suite),
        (b"1 AES_CM_128_HMAC_SHA1_80 uri:http://x/", CryptoLineError::KeyMethod),
        (b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFC", CryptoLineError::Key),
        (b"1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", CryptoLineError::Key),
        (b"1 AEAD_AES_128_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", CryptoLineError::Key),
        (b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^x", CryptoLineError::Lifetime),
        (b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=1", CryptoLineError::SessionParams),
        (b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR;inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", CryptoLineError::SeveralKeys),
    ];
    for (value, want) in cases {
        assert_eq!(
            parse_value(value).as_ref().map(|_| ()),
            Err(want),
            "{}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn the_answer_takes_the_first_usable_offered_line_with_its_tag_and_a_key_of_ours() {
    let offered: Vec<&[u8]> = vec![
        b"1 AES_256_CM_HMAC_SHA1_80 inline:d2VsbCB0aGlzIGlzIG5vdCBhIGtleSB3ZSBrbm93IGFib3V0IGF0IGFsbA==",
        b"2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        b"3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
    ];
    let (theirs, ours) = choose(offered.iter().copied()).unwrap();
    assert_eq!(theirs.tag, 2);
    assert_eq!(ours.tag, 2);
    assert_eq!(ours.key.suite, Suite::AesCm128HmacSha1_32);
    assert_ne!(ours.key, theirs.key);
    // What we write reads back as the same line.
    let value = ours.to_value();
    assert!(
        value.starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"),
        "{value}"
    );
    assert_eq!(parse_value(value.as_bytes()).unwrap(), ours);
    assert!(choose([&b"1 F8_128_HMAC_SHA1_80 inline:AAAA"[..]]).is_none());
}

#[test]
fn our_offer_lists_every_suite_with_its_own_key() {
    let lines = offer();
    let suites: Vec<Suite> = lines.iter().map(|l| l.key.suite).collect();
    assert_eq!(suites, Suite::ALL);
    let tags: Vec<u32> = lines.iter().map(|l| l.tag).collect();
    assert_eq!(tags, [1, 2, 3]);
    assert_ne!(lines[0].key.material(), lines[1].key.material());
    for l in &lines {
        assert_eq!(parse_value(l.to_value().as_bytes()).unwrap(), *l);
    }
    // A key never reaches a log through Debug.
    let shown = format!("{:?}", lines[0]);
    let key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(lines[0].key.material())
    };
    assert!(!shown.contains(&key), "{shown}");
}

mod policy_tests {
    use super::super::policy::{
        answer, answered, follow_offer, late_offer, offer, rekey, Followed, MediaSecurity, Rekey,
        SrtpRefusal,
    };
    use super::super::sdes;
    use crate::config::MediaEncryption::{self, Off, Optional, Required};
    use crate::media::sdp::{parse, Media};

    const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    fn stream(proto: &str, crypto: &[String]) -> Media {
        let mut body = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 {proto} 0\r\n"
        );
        for c in crypto {
            body.push_str(&format!("a=crypto:{c}\r\n"));
        }
        let sdp = parse(&body).unwrap();
        sdp.audio().expect("a usable audio stream").clone()
    }

    fn savp() -> Media {
        stream(
            "RTP/SAVP",
            &[
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
                format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"),
            ],
        )
    }

    fn is_srtp(r: &Result<MediaSecurity, SrtpRefusal>) -> bool {
        matches!(r, Ok(MediaSecurity::Srtp { .. }))
    }

    #[test]
    fn an_answer_follows_the_mode_the_transport_and_the_offer() {
        let plain = stream("RTP/AVP", &[]);
        let table: &[(MediaEncryption, bool, &Media, Result<bool, SrtpRefusal>)] = &[
            (Optional, true, &savp(), Ok(true)),
            (Required, true, &savp(), Ok(true)),
            (Off, true, &savp(), Ok(false)),
            // SDES keys never over a transport anyone can read.
            (Optional, false, &savp(), Ok(false)),
            (Required, false, &savp(), Err(SrtpRefusal::NotOverTls)),
            (Optional, true, &plain, Ok(false)),
            (Required, true, &plain, Err(SrtpRefusal::PlainOffered)),
            (Off, false, &plain, Ok(false)),
        ];
        for (mode, tls, media, want) in table {
            let got = answer(*mode, *tls, media);
            match want {
                Ok(srtp) => assert_eq!(is_srtp(&got), *srtp, "{mode:?} tls={tls}: {got:?}"),
                Err(e) => assert_eq!(got.as_ref().err(), Some(e), "{mode:?} tls={tls}"),
            }
        }
        // A best-effort offer (RTP/AVP with lines) over TLS is answered with SRTP too, and
        // satisfies `required`; not over TLS it is plain (or refused when required).
        let optimistic = stream(
            "RTP/AVP",
            &[format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")],
        );
        assert!(is_srtp(&answer(Optional, true, &optimistic)));
        assert!(is_srtp(&answer(Required, true, &optimistic)));
        assert_eq!(
            answer(Optional, false, &optimistic),
            Ok(MediaSecurity::Plain)
        );
        assert_eq!(
            answer(Required, false, &optimistic),
            Err(SrtpRefusal::NotOverTls)
        );
        let unusable = stream("RTP/SAVP", &[format!("1 F8_128_HMAC_SHA1_80 inline:{KEY}")]);
        assert_eq!(answer(Optional, true, &unusable), Ok(MediaSecurity::Plain));
        assert_eq!(
            answer(Required, true, &unusable),
            Err(SrtpRefusal::NoUsableKey)
        );
        // The first usable line is taken, answered with its tag.
        let Ok(MediaSecurity::Srtp { theirs, ours }) = answer(Optional, true, &savp()) else {
            panic!()
        };
        assert_eq!((theirs.tag, ours.tag), (1, 1));
        assert_ne!(theirs.key, ours.key);
    }

    #[test]
    fn our_offer_and_the_answer_to_it() {
        assert!(offer(Optional, false).0.is_empty());
        assert!(offer(Required, false).0.is_empty());
        assert!(offer(Off, true).0.is_empty());
        // Optional: best-effort, the lines on RTP/AVP; required: RTP/SAVP.
        let (lines, savp) = offer(Optional, true);
        assert_eq!((lines.len(), savp), (3, false));
        let (required, savp) = offer(Required, true);
        assert_eq!((required.len(), savp), (3, true));
        // The far end picks our second line and answers with its own key on that tag.
        let pick = &lines[1];
        let reply = stream(
            "RTP/SAVP",
            &[format!(
                "{} {} inline:{KEY}",
                pick.tag,
                pick.key.suite.name()
            )],
        );
        let Ok(MediaSecurity::Srtp { theirs, ours }) = answered(Optional, &lines, &reply) else {
            panic!()
        };
        assert_eq!(ours, *pick);
        assert_eq!(theirs.tag, pick.tag);
        // A tag we did not offer, or a suite that does not match its tag, is not an answer.
        // To a best-effort offer, an RTP/AVP answer with a line of ours is SRTP too.
        let avp_reply = stream(
            "RTP/AVP",
            &[format!(
                "{} {} inline:{KEY}",
                pick.tag,
                pick.key.suite.name()
            )],
        );
        assert!(matches!(
            answered(Optional, &lines, &avp_reply),
            Ok(MediaSecurity::Srtp { .. })
        ));
        let stray = stream(
            "RTP/SAVP",
            &[format!("9 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")],
        );
        assert_eq!(answered(Optional, &lines, &stray), Ok(MediaSecurity::Plain));
        let crossed = stream(
            "RTP/SAVP",
            &[format!("1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")],
        );
        assert_eq!(
            answered(Required, &lines, &crossed),
            Err(SrtpRefusal::PlainAnswer)
        );
        let plain = stream("RTP/AVP", &[]);
        assert_eq!(answered(Optional, &lines, &plain), Ok(MediaSecurity::Plain));
        assert_eq!(
            answered(Required, &lines, &plain),
            Err(SrtpRefusal::PlainAnswer)
        );
        assert_eq!(answered(Optional, &[], &reply), Ok(MediaSecurity::Plain));
    }

    #[test]
    fn a_keyed_legs_re_offer_keeps_rekeys_or_is_refused() {
        let Ok(MediaSecurity::Srtp {
            theirs: current, ..
        }) = answer(Required, true, &savp())
        else {
            panic!()
        };
        assert_eq!(follow_offer(&current, Some(&savp())), Followed::Same);
        let other = stream(
            "RTP/SAVP",
            &[format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
                "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
            )],
        );
        let Followed::Rekey { theirs, ours } = follow_offer(&current, Some(&other)) else {
            panic!("a new key of theirs rekeys")
        };
        assert_ne!(theirs, current);
        assert_eq!(ours.tag, theirs.tag);
        // Never a downgrade to audio in clear.
        let plain = stream("RTP/AVP", &[]);
        assert_eq!(follow_offer(&current, Some(&plain)), Followed::Refused);
        assert_eq!(follow_offer(&current, None), Followed::Refused);
    }

    #[test]
    fn a_late_offer_offers_what_a_fork_offer_does_and_never_keys_in_clear() {
        for mode in [Off, Optional, Required] {
            for tls in [false, true] {
                let got = late_offer(mode, tls);
                if mode == Required && !tls {
                    assert_eq!(got, Err(SrtpRefusal::NotOverTls));
                    continue;
                }
                let (lines, savp) = got.unwrap();
                let (want, want_savp) = offer(mode, tls);
                assert_eq!(
                    (lines.len(), savp),
                    (want.len(), want_savp),
                    "{mode:?} {tls}"
                );
            }
        }
        // Over TLS: best effort on RTP/AVP when optional, RTP/SAVP when required.
        assert_eq!(
            late_offer(Optional, true).map(|(l, s)| (l.len(), s)),
            Ok((3, false))
        );
        assert_eq!(
            late_offer(Required, true).map(|(l, s)| (l.len(), s)),
            Ok((3, true))
        );
    }

    /// The bridge's outbound session after another fork's early media keyed it: the far end
    /// that answers decides. A plain answer clears the keys (the bug: they stayed, and a
    /// plain callee heard noise), another fork's keys replace them both ways.
    #[test]
    fn the_answering_far_end_decides_the_outbound_keys() {
        let a = (sdes::offer().remove(0), sdes::offer().remove(0));
        let b = (sdes::offer().remove(0), sdes::offer().remove(0));
        let a_new_key = (a.0.clone(), sdes::offer().remove(0));
        assert_eq!(rekey(None, None), Rekey::Keep);
        assert_eq!(rekey(Some(&a), Some(&a)), Rekey::Keep);
        assert_eq!(rekey(None, Some(&a)), Rekey::Both);
        assert_eq!(rekey(Some(&a), Some(&b)), Rekey::Both);
        assert_eq!(rekey(Some(&a), Some(&a_new_key)), Rekey::Receive);
        assert_eq!(rekey(Some(&a), None), Rekey::Clear);
    }
}
