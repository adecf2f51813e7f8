//! Tests of prompt decoding, resampling and the library, against files made by sox.

use std::path::Path;
use std::process::Command;

use super::library::EMBEDDED;
use super::resample::resample;
use super::test_support::TempDir;
use super::wav::{le_u16, parse_wav_chunks, WAVE_FORMAT_ALAW, WAVE_FORMAT_EXTENSIBLE};
use super::*;

/// Makes `path` with sox: `rate` Hz, `channels`, the output `format` options (`-b`, `-e`),
/// then the `synth` effect's arguments (`["0.5", "sine", "1000"]`); `dither` false keeps
/// sox's default dither. A missing sox fails the test (it is a required tool).
fn sox_synth(
    path: &Path,
    dither: bool,
    rate: &str,
    channels: &str,
    format: &[&str],
    synth: &[&str],
) {
    let mut args = vec![];
    if dither {
        args.push("-D");
    }
    args.extend(["-r", rate, "-c", channels, "-n"]);
    args.extend_from_slice(format);
    args.extend([path.to_str().unwrap(), "synth"]);
    args.extend_from_slice(synth);
    let out = Command::new("sox")
        .args(&args)
        .output()
        .expect("sox is required for these tests (apt-get install sox libsox-fmt-mp3)");
    assert!(
        out.status.success(),
        "sox {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Goertzel power of `freq` in 8 kHz samples.
fn goertzel(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// The tone is at 1000 Hz: far more energy there than at neighbours, a plausible level,
/// and ~2 zero crossings per ms; `secs` long ± one 20 ms packet.
fn assert_1khz(p: &Prompt, secs: f64, amp: f64) {
    assert_1khz_within(p, secs, 0.0, amp, 0.05)
}

/// As `assert_1khz`, allowing `extra` seconds more (MP3 encoder delay and padding) and a
/// level within `tol` (lossy coding).
fn assert_1khz_within(p: &Prompt, secs: f64, extra: f64, amp: f64, tol: f64) {
    let n = p.pcm.len() as f64;
    let (lo, hi) = (secs * 8000.0 - 160.0, (secs + extra) * 8000.0 + 160.0);
    assert!(
        n >= lo && n <= hi,
        "{}: {n} samples, want {lo}..={hi}",
        p.name
    );
    // Skip the edges (resampler ramps, MP3 priming).
    let mid = &p.pcm[800..p.pcm.len() - 800];
    let at = goertzel(mid, 1000.0);
    for f in [500.0, 800.0, 1200.0, 1500.0, 2000.0, 3000.0] {
        let other = goertzel(mid, f);
        assert!(
            at > 1000.0 * other,
            "{}: {f} Hz has {other:e} vs 1 kHz {at:e}",
            p.name
        );
    }
    let crossings = mid.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
    let expect = mid.len() as f64 / 8000.0 * 2000.0;
    assert!(
        (crossings - expect).abs() <= 4.0,
        "{}: {crossings} crossings vs {expect}",
        p.name
    );
    let peak = mid.iter().map(|&s| i32::from(s).abs()).max().unwrap_or(0) as f64 / 32768.0;
    assert!(
        (peak - amp).abs() < tol,
        "{}: peak {peak} want {amp}",
        p.name
    );
    // Both laws encode the same audio.
    assert_eq!(p.pcmu.len(), p.pcm.len());
    assert_eq!(p.pcma.len(), p.pcm.len());
    assert_eq!(&p.pcmu[..], &Codec::Pcmu.encode(&p.pcm)[..]);
    assert_eq!(&p.pcma[..], &Codec::Pcma.encode(&p.pcm)[..]);
}

/// LAME's encoder delay (1105 samples) plus up to one frame of padding, at 44.1 kHz.
const MP3_EXTRA_44K: f64 = (1105.0 + 1152.0) / 44100.0;

fn decode_file(path: &Path) -> Prompt {
    let bytes = std::fs::read(path).unwrap();
    Prompt::decode(&path.display().to_string(), &bytes).unwrap()
}

/// One second of a 1 kHz sine at -6 dBFS made by sox (see [`sox_synth`]).
fn sox_tone(path: &Path, dither: bool, rate: &str, channels: &str, format: &[&str]) {
    let tone = ["1.0", "sine", "1000", "gain", "-6"];
    sox_synth(path, dither, rate, channels, format, &tone);
}

#[test]
fn decodes_sox_made_files_to_1khz() {
    let t = TempDir::new("prompt-sox");
    // File, dither, rate, channels, sox output format.
    let wavs: [(&str, bool, &str, &str, &[&str]); 8] = [
        // 44.1 kHz stereo 24-bit (sox writes WAVE_FORMAT_EXTENSIBLE for > 16 bits).
        ("s24.wav", true, "44100", "2", &["-b", "24"]),
        // 22.05 kHz 32-bit float.
        (
            "f32.wav",
            false,
            "22050",
            "1",
            &["-e", "floating-point", "-b", "32"],
        ),
        // 8-bit unsigned PCM at 16 kHz.
        (
            "u8.wav",
            true,
            "16000",
            "1",
            &["-b", "8", "-e", "unsigned-integer"],
        ),
        // 48 kHz 32-bit integer, 3 channels.
        ("s32.wav", true, "48000", "3", &["-b", "32"]),
        // μ-law and A-law WAV (format 7 and 6), 8 kHz mono and 16 kHz stereo.
        ("u-law.wav", true, "8000", "1", &["-e", "u-law"]),
        ("u-law-16k.wav", true, "16000", "2", &["-e", "u-law"]),
        ("a-law.wav", true, "8000", "1", &["-e", "a-law"]),
        ("a-law-16k.wav", true, "16000", "2", &["-e", "a-law"]),
    ];
    for (name, dither, rate, channels, format) in wavs {
        let f = t.join(name);
        sox_tone(&f, dither, rate, channels, format);
        assert_1khz(&decode_file(&f), 1.0, 0.5);
    }
    for (name, tag) in [("u-law.wav", 7u16), ("a-law.wav", 6u16)] {
        let bytes = std::fs::read(t.join(name)).unwrap();
        assert_eq!(le_u16(&bytes, 20), Some(tag), "sox wrote format {tag}");
    }
    // MP3 (libsox-fmt-mp3), 44.1 kHz stereo.
    let f = t.join("tone.mp3");
    sox_tone(&f, false, "44100", "2", &[]);
    // sox writes no LAME/Xing header, so nothing tells the decoder to trim LAME's
    // 1105-sample delay and the padding to whole 1152-sample frames.
    assert_1khz_within(&decode_file(&f), 1.0, MP3_EXTRA_44K, 0.5, 0.1);
}

#[test]
fn ulaw_wav_at_8k_keeps_bytes() {
    // An 8 kHz μ-law WAV is decoded sample for sample: re-encoding gives the same bytes.
    let t = TempDir::new("prompt-ulaw");
    let f = t.join("u.wav");
    sox_synth(
        &f,
        true,
        "8000",
        "1",
        &["-e", "u-law"],
        &["0.5", "sine", "440"],
    );
    let bytes = std::fs::read(&f).unwrap();
    let (_, data) = parse_wav_chunks(&bytes).unwrap();
    let p = Prompt::decode("u", &bytes).unwrap();
    assert_eq!(&p.pcmu[..], data);
}

/// A hand-made A-law WAV with WAVE_FORMAT_EXTENSIBLE, an odd-sized chunk before the data
/// (with its pad byte), and a data size that runs past the end of the file.
#[test]
fn riff_chunk_walk() {
    let samples: Vec<u8> = (0..800).map(alaw_encode_ref).collect();
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&WAVE_FORMAT_EXTENSIBLE.to_le_bytes());
    fmt.extend_from_slice(&1u16.to_le_bytes()); // channels
    fmt.extend_from_slice(&8000u32.to_le_bytes());
    fmt.extend_from_slice(&8000u32.to_le_bytes());
    fmt.extend_from_slice(&1u16.to_le_bytes()); // block align
    fmt.extend_from_slice(&8u16.to_le_bytes()); // bits
    fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
    fmt.extend_from_slice(&8u16.to_le_bytes()); // valid bits
    fmt.extend_from_slice(&4u32.to_le_bytes()); // channel mask
    fmt.extend_from_slice(&WAVE_FORMAT_ALAW.to_le_bytes());
    fmt.extend_from_slice(&[0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]);
    let mut wav = b"RIFF\0\0\0\0WAVE".to_vec();
    wav.extend_from_slice(b"fmt ");
    wav.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    wav.extend_from_slice(&fmt);
    wav.extend_from_slice(b"LIST");
    wav.extend_from_slice(&3u32.to_le_bytes());
    wav.extend_from_slice(b"abc\0"); // 3 bytes + pad
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&u32::MAX.to_le_bytes()); // streamed: size unknown
    wav.extend_from_slice(&samples);
    let p = Prompt::decode("x", &wav).unwrap();
    assert_eq!(p.pcm.len(), 800);
    assert_eq!(&p.pcma[..], &samples[..]);
    assert_eq!(p.duration(), Duration::from_millis(100));
}

fn alaw_encode_ref(i: i32) -> u8 {
    crate::media::codec::alaw_encode((i * 37 % 20000) as i16)
}

#[test]
fn from_pcm_8k_is_exact_and_other_rates_resample() {
    let tone: Vec<i16> = (0..16000)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI / 8.0).sin() * 16423.0).round() as i16)
        .collect();
    let p = Prompt::from_pcm("t", &tone, 8000, 1).unwrap();
    assert_eq!(&p.pcm[..], &tone[..]);
    assert_eq!(p.duration(), Duration::from_secs(2));
    assert!(Arc::ptr_eq(p.payload(Codec::Pcmu), &p.pcmu));
    assert!(Arc::ptr_eq(p.payload(Codec::Pcma), &p.pcma));
    // 16 kHz stereo of the same tone.
    let st: Vec<i16> = (0..32000)
        .flat_map(|i| {
            let v = ((i as f64 * 2.0 * std::f64::consts::PI / 16.0).sin() * 16423.0) as i16;
            [v, v]
        })
        .collect();
    let p = Prompt::from_pcm("t", &st, 16000, 2).unwrap();
    assert_1khz(&p, 2.0, 0.5);
    assert!(Prompt::from_pcm("t", &st, 0, 2).is_err());
    assert!(Prompt::from_pcm("t", &st, 8000, 0).is_err());
}

#[test]
fn resampler_rejects_aliases() {
    // RMS, away from the edges, of a half-scale `freq` Hz tone taken from 44.1 kHz to 8 kHz.
    let rms_at_8k = |freq: f64| {
        let x: Vec<f32> = (0..44100)
            .map(|i| (i as f64 * 2.0 * std::f64::consts::PI * freq / 44100.0).sin() as f32 * 0.5)
            .collect();
        let y = resample(&x, 44100, 8000);
        assert_eq!(y.len(), 8000);
        (y[400..7600]
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / 7200.0)
            .sqrt()
    };
    // A 6 kHz tone at 44.1 kHz lies above 4 kHz: it must vanish, not fold to 2 kHz.
    let rms = rms_at_8k(6000.0);
    assert!(rms < 0.5 * 1e-3, "alias rms {rms}");
    // A 3 kHz tone passes at (almost) full level.
    let rms = rms_at_8k(3000.0);
    assert!((rms - 0.5 / 2f64.sqrt()).abs() < 0.02, "passband rms {rms}");
    // Upsampling from 4 kHz keeps a 1 kHz tone.
    let x: Vec<i16> = (0..4000)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI / 4.0).sin() * 16423.0) as i16)
        .collect();
    assert_1khz(&Prompt::from_pcm("up", &x, 4000, 1).unwrap(), 1.0, 0.5);
    // An odd rate (8000 distinct phases: weights computed per sample, not cached).
    let x: Vec<i16> = (0..44101)
        .map(|i| {
            ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 44101.0).sin() * 16423.0) as i16
        })
        .collect();
    assert_1khz(&Prompt::from_pcm("odd", &x, 44101, 1).unwrap(), 1.0, 0.5);
}

#[test]
fn rejects_non_audio() {
    assert!(matches!(
        Prompt::decode("x", b"hello"),
        Err(PromptError::Unsupported(_))
    ));
    assert!(matches!(
        Prompt::decode("x", b""),
        Err(PromptError::Unsupported(_))
    ));
    assert!(matches!(
        Prompt::decode("x", b"RIFF\0\0\0\0WAVE"),
        Err(PromptError::Decode(_))
    ));
}

#[test]
fn shipped_tone_is_exact() {
    let lib = PromptLibrary::new(None);
    let p = lib.get("tone-1khz").unwrap();
    assert_eq!(p.pcm.len(), 16000);
    assert_eq!(p.duration(), Duration::from_secs(2));
    assert_eq!(
        &p.pcm[0..8],
        &[0, 11613, 16423, 11613, 0, -11613, -16423, -11613]
    );
    assert_1khz(&p, 2.0, 0.5);
    for name in PromptLibrary::embedded_names() {
        let p = lib.get(name).unwrap();
        assert!(
            p.duration() > Duration::from_millis(300),
            "{name} too short"
        );
        assert!(
            p.pcm.iter().any(|&s| s.unsigned_abs() > 2000),
            "{name} is silent"
        );
    }
}

#[test]
fn library_ids_and_cache() {
    let lib = PromptLibrary::new(None);
    let a = lib.get("welcome").unwrap();
    let b = lib.get("welcome").unwrap();
    let c = lib.get("welcome.wav").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a, &c));
    assert!(lib.exists("welcome"));
    assert!(lib.exists("digit-7"));
    assert!(!lib.exists("nope"));
    assert!(lib.check_dir().is_ok());
    for bad in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../x",
        "..",
        "a\\b",
        "a\0b",
        "",
        "dir/",
    ] {
        assert!(
            matches!(lib.get(bad), Err(PromptError::BadId(_))),
            "{bad:?} accepted"
        );
        assert!(!lib.exists(bad));
    }
    assert!(matches!(lib.get("nope"), Err(PromptError::NotFound(_))));
}

#[test]
fn library_dir_files_override_and_stay_inside() {
    let t = TempDir::new("prompt-lib");
    let media = t.join("media");
    std::fs::create_dir_all(media.join("sub")).unwrap();
    // 8 kHz 16-bit WAVs of a 1 kHz tone, `secs` long.
    let wav = |name: &str, secs: &str| {
        let tone = [secs, "sine", "1000"];
        sox_synth(&media.join(name), true, "8000", "1", &["-b", "16"], &tone);
    };
    wav("welcome.wav", "0.5");
    wav("sub/x.wav", "0.25");
    sox_synth(
        &media.join("m.mp3"),
        false,
        "8000",
        "1",
        &[],
        &["0.5", "sine", "1000"],
    );
    std::fs::write(
        t.join("secret.wav"),
        std::fs::read(media.join("welcome.wav")).unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(t.join("secret.wav"), media.join("escape.wav")).unwrap();
    std::os::unix::fs::symlink(media.join("sub/x.wav"), media.join("inside.wav")).unwrap();
    std::fs::write(media.join("broken.wav"), b"RIFF\x04\0\0\0WAVEjunk").unwrap();

    let lib = PromptLibrary::new(Some(media.clone()));
    assert!(lib.check_dir().is_ok());
    // The dir's welcome (0.5 s tone) wins over the embedded one.
    assert_eq!(lib.get("welcome").unwrap().pcm.len(), 4000);
    assert_eq!(lib.get("sub/x").unwrap().pcm.len(), 2000);
    assert_eq!(lib.get("inside").unwrap().pcm.len(), 2000);
    // No .wav: the .mp3 is found.
    let got = lib.get("m").unwrap().pcm.len();
    // 0.5 s plus LAME's delay (1105) and padding to 576-sample frames.
    assert!(
        (4000..=4000 + 1105 + 576).contains(&got),
        "mp3 {got} samples"
    );
    // Embedded fallback for what the dir lacks.
    assert!(lib.get("digit-3").is_ok());
    assert!(matches!(lib.get("escape"), Err(PromptError::BadId(_))));
    assert!(matches!(
        lib.get("../secret.wav"),
        Err(PromptError::BadId(_))
    ));
    assert!(matches!(lib.get("broken"), Err(PromptError::Decode(_))));

    let missing = PromptLibrary::new(Some(t.join("nope")));
    assert!(matches!(missing.check_dir(), Err(PromptError::Io { .. })));
    assert!(missing.get("welcome").is_ok());
    let file_as_dir = PromptLibrary::new(Some(t.join("secret.wav")));
    assert!(file_as_dir.check_dir().is_err());
}

#[test]
fn decode_never_panics() {
    use rand::{Rng, SeedableRng};
    let t = TempDir::new("prompt-fuzz");
    let mp3 = t.join("f.mp3");
    sox_synth(&mp3, false, "8000", "1", &[], &["0.2", "sine", "1000"]);
    let wav = t.join("f.wav");
    sox_synth(
        &wav,
        false,
        "11025",
        "2",
        &["-b", "24"],
        &["0.1", "sine", "1000"],
    );
    let ul = t.join("u.wav");
    sox_synth(
        &ul,
        false,
        "8000",
        "1",
        &["-e", "u-law"],
        &["0.1", "sine", "1000"],
    );
    let seeds: Vec<Vec<u8>> = [&mp3, &wav, &ul]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .chain(EMBEDDED.iter().take(1).map(|(_, b)| b.to_vec()))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for seed in &seeds {
        // Every truncation of the header region and a spread of longer ones.
        for cut in (0..seed.len().min(200)).chain((200..seed.len()).step_by(97)) {
            let _ = Prompt::decode("cut", &seed[..cut]);
        }
        // Random byte flips in the first 256 bytes.
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..m.len().min(256));
                m[i] = rng.gen();
            }
            let _ = Prompt::decode("flip", &m);
        }
    }
    for _ in 0..300 {
        let n = rng.gen_range(0..600);
        let mut b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        // Make some of them look like the formats we sniff.
        match rng.gen_range(0..3) {
            0 if b.len() >= 12 => b[..12].copy_from_slice(b"RIFF\0\0\0\0WAVE"),
            1 if b.len() >= 3 => b[..3].copy_from_slice(b"ID3"),
            _ => {}
        }
        let _ = Prompt::decode("rand", &b);
    }
}

/// Found by `fuzz/` (media_file): a 560-byte WAVE_FORMAT_EXTENSIBLE file whose data chunk
/// declares 4 GB. hound's sample count came from that header and was reserved up front
/// (5.7 GB of f32): a pivot server could make pivotd reserve memory at will, or abort it
/// where the reservation fails.
#[test]
fn a_wav_declaring_more_than_it_holds_reserves_only_what_it_holds() {
    let crash = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/media_file/oom-c926603e373fb19a033cdb19ad3a25f8be9493ca"
    ));
    assert_eq!(crash.get(0x48..0x4c), Some(&b"data"[..]));
    assert_eq!(
        crash
            .get(0x4c..0x50)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Some(0xFF00_01E0),
        "declared data length"
    );
    assert!(Prompt::decode("oom", crash).is_err());
    assert_eq!(
        super::wav::sample_capacity(u32::MAX, crash.len()),
        crash.len()
    );
    assert_eq!(super::wav::sample_capacity(100, crash.len()), 100);
}
