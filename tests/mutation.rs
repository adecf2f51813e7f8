//! Deterministic mutation test (issue 7, "parsing is total"): the seed inputs of the fuzz
//! targets (fuzz/seeds/, fuzz/regressions/, the RFC 4475 torture messages) put through about
//! 400 000 mutations made by a fixed-seed PRNG, into the same entry points as the cargo-fuzz
//! targets (`pivotd::fuzzing`). Nothing may panic. It runs on the stable toolchain in a few
//! seconds, so CI catches what a long fuzzing run found once: a failure prints the input.
//!
//! Besides random flips, inserts, cuts, duplications and splices, every multi-byte character
//! of a small set is put at every position of every seed's first line (the `uri[..4]` panic of
//! symptom 1 was a multi-byte character at byte 4 of the Request-URI).

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pivotd::fuzzing;

/// xorshift64* (Vigna): fixed seed, no dependency, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// UTF-8 of 2, 3 and 4 bytes, and the broken sequences a network also delivers.
const MULTIBYTE: &[&[u8]] = &[
    "é".as_bytes(),
    "€".as_bytes(),
    "𝄞".as_bytes(),
    b"\x80",
    b"\xC3",
    b"\xF0\x9D",
    b"\xFF",
];

/// Bytes that mean something to one of the grammars.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"\r\n ",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"=",
    b"\"",
    b"<",
    b">",
    b"/",
    b"@",
    b"[",
    b"]",
    b"?",
    b"%",
    b"%4",
    b"\0",
    b"0",
    b"99999999999999999999",
    b"-1",
    b"<![CDATA[",
    b"]]>",
    b"&amp;",
    b"&#x",
    b"<!--",
    b"{",
    b"}",
    b"[[",
    b"\\",
    b"'",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, ext: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| ext.is_none_or(|x| p.extension().and_then(|e| e.to_str()) == Some(x)))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut s = files(&repo().join("fuzz/seeds").join(target), None);
    // Inputs that once crashed a fuzz target.
    let found = repo().join("fuzz/regressions").join(target);
    if found.is_dir() {
        s.extend(files(&found, None));
    }
    if target == "sip_message" {
        s.extend(files(&repo().join("tests/fixtures/rfc4475"), Some("dat")));
    }
    s
}

/// One to eight mutations of `src`; `others` gives splice material. Returns the input and
/// the number of mutations made.
fn mutate(rng: &mut Rng, src: &[u8], others: &[(String, Vec<u8>)]) -> (Vec<u8>, usize) {
    let mut v = src.to_vec();
    let ops = 1 + rng.below(8);
    for _ in 0..ops {
        let len = v.len();
        match rng.below(10) {
            0 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            2 | 3 => {
                let i = rng.below(len + 1);
                let t = *rng.pick(MULTIBYTE);
                v.splice(i..i, t.iter().copied());
            }
            4 => {
                let i = rng.below(len + 1);
                let t = *rng.pick(TOKENS);
                v.splice(i..i, t.iter().copied());
            }
            5 => {
                let cut = rng.below(len + 1);
                v.truncate(cut);
            }
            6 => {
                let a = rng.below(len + 1);
                let b = (a + rng.below(64)).min(len);
                v.drain(a..b);
            }
            7 => {
                // Duplicate a chunk (a header line, a packet, an element) elsewhere.
                let a = rng.below(len + 1);
                let b = (a + rng.below(128)).min(len);
                let chunk = v[a..b].to_vec();
                let i = rng.below(len + 1);
                v.splice(i..i, chunk);
            }
            8 => {
                // Splice: the head of this input, the tail of another seed.
                let (_, other) = rng.pick(others);
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            _ => {
                // Line ends: bare LF, bare CR, or CRLF everywhere.
                let from: &[u8] = if rng.below(2) == 0 { b"\r\n" } else { b"\n" };
                const ENDS: [&[u8]; 4] = [b"\n", b"\r", b"\r\n", b"\r\r\n"];
                let to = *rng.pick(&ENDS);
                let mut out = Vec::with_capacity(v.len());
                let mut i = 0;
                while i < v.len() {
                    if v[i..].starts_with(from) {
                        out.extend_from_slice(to);
                        i += from.len();
                    } else {
                        out.push(v[i]);
                        i += 1;
                    }
                }
                v = out;
            }
        }
    }
    (v, ops)
}

/// Runs `f` on `input`, turning a panic into a failure that shows how to replay it.
fn run<T>(target: &str, origin: &str, input: &[u8], f: &dyn Fn(&[u8]) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(t) => t,
        Err(_) => panic!(
            "{target} panicked on a mutation of {origin}; input ({} bytes): {:?}\n\
             replay: write these bytes to a file and run \
             `cargo +nightly fuzz run {target} FILE` in fuzz/, or call pivotd::fuzzing::{target}",
            input.len(),
            String::from_utf8_lossy(input),
        ),
    }
}

/// Every seed with each multi-byte sequence at each position of its first line (at most 200
/// bytes of it), then `rounds` randomly mutated inputs. Returns (inputs run, mutations).
fn campaign<T>(
    target: &str,
    seed: u64,
    rounds: usize,
    f: &dyn Fn(&[u8]) -> T,
    mut seen: impl FnMut(&T),
) -> (usize, usize) {
    let seeds = seeds(target);
    let mut rng = Rng(seed);
    let (mut inputs, mut mutations) = (0, 0);
    for (name, s) in &seeds {
        seen(&run(target, name, s, f));
        // Binary formats have no first line to speak of.
        let first_line = match target {
            "media_file" | "rtp_dtmf" => 0,
            _ => s
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(s.len())
                .min(200),
        };
        for at in 0..=first_line {
            for mb in MULTIBYTE.iter().take(3) {
                let mut m = s.clone();
                m.splice(at..at, mb.iter().copied());
                seen(&run(target, name, &m, f));
                inputs += 1;
                mutations += 1;
            }
        }
    }
    for i in 0..rounds {
        let (name, s) = &seeds[i % seeds.len()];
        let (m, n) = mutate(&mut rng, s, &seeds);
        seen(&run(target, name, &m, f));
        inputs += 1;
        mutations += n;
    }
    (inputs, mutations)
}

#[test]
fn mutated_sip_messages_never_panic() {
    let mut outcomes = BTreeSet::new();
    let (inputs, mutations) = campaign(
        "sip_message",
        0x5EED_4475,
        4000,
        &fuzzing::sip_message,
        |o| {
            outcomes.insert(*o);
        },
    );
    assert_eq!(
        outcomes.len(),
        5,
        "the mutations reach every outcome: {outcomes:?}"
    );
    eprintln!("sip_message: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 20_000, "{mutations}");
}

#[test]
fn mutated_sdp_never_panics() {
    let (mut negotiated, mut refused) = (0, 0);
    let (inputs, mutations) = campaign("sdp", 0x5D9_3264, 20_000, &fuzzing::sdp, |o| match o {
        Some(_) => negotiated += 1,
        None => refused += 1,
    });
    assert!(negotiated > 100 && refused > 100, "{negotiated} {refused}");
    eprintln!("sdp: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn mutated_digest_credentials_never_panic() {
    let (mut parsed, mut refused) = (0, 0);
    let (inputs, mutations) = campaign(
        "digest",
        0x7616,
        20_000,
        &fuzzing::digest_credentials,
        |ok| {
            if *ok {
                parsed += 1
            } else {
                refused += 1
            }
        },
    );
    assert!(parsed > 100 && refused > 100, "{parsed} {refused}");
    eprintln!("digest: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 20_000, "{mutations}");
}

#[test]
fn mutated_rtp_and_telephone_events_never_panic() {
    let mut with_digits = 0;
    let (inputs, mutations) = campaign("rtp_dtmf", 0x4733, 30_000, &fuzzing::rtp_dtmf, |d| {
        if !d.is_empty() {
            with_digits += 1
        }
    });
    assert!(with_digits > 100, "{with_digits}");
    eprintln!("rtp_dtmf: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn mutated_tone_streams_never_panic() {
    let (mut ok, mut err) = (0, 0);
    let (inputs, mutations) = campaign(
        "tone_spec",
        0x440,
        15_000,
        &fuzzing::tone_spec,
        |r| match r {
            Ok(d) => {
                assert!(*d <= Duration::from_secs(120), "{d:?}");
                ok += 1
            }
            Err(_) => err += 1,
        },
    );
    assert!(ok > 100 && err > 100, "{ok} {err}");
    eprintln!("tone_spec: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn mutated_srtp_crypto_lines_and_packets_never_panic() {
    let (mut keyed, mut refused) = (0, 0);
    let (inputs, mutations) = campaign("srtp", 0x5e5, 15_000, &fuzzing::srtp, |r| match r {
        fuzzing::SrtpOutcome::Keyed { .. } => keyed += 1,
        fuzzing::SrtpOutcome::Refused => refused += 1,
    });
    assert!(keyed > 100 && refused > 100, "{keyed} {refused}");
    eprintln!("srtp: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn mutated_twiml_never_panics() {
    let (mut ok, mut err) = (0, 0);
    let (inputs, mutations) = campaign("twiml", 0x7E1, 15_000, &fuzzing::twiml, |r| match r {
        Ok(_) => ok += 1,
        Err(_) => err += 1,
    });
    assert!(ok > 100 && err > 100, "{ok} {err}");
    eprintln!("twiml: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn mutated_kazoo_json_never_panics() {
    let (mut ok, mut err) = (0, 0);
    let (inputs, mutations) =
        campaign(
            "kazoo_json",
            0x2600,
            15_000,
            &fuzzing::kazoo_json,
            |r| match r {
                Ok(()) => ok += 1,
                Err(_) => err += 1,
            },
        );
    assert!(ok > 50 && err > 100, "{ok} {err}");
    eprintln!("kazoo_json: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn mutated_config_never_panics() {
    let (mut ok, mut err) = (0, 0);
    let (inputs, mutations) = campaign("config", 0xC0F1, 1500, &fuzzing::config, |r| {
        if *r {
            ok += 1
        } else {
            err += 1
        }
    });
    assert!(ok > 10 && err > 100, "{ok} {err}");
    eprintln!("config: {inputs} inputs, {mutations} mutations");
}

#[test]
fn mutated_media_files_never_panic() {
    let (mut ok, mut err) = (0, 0);
    let (inputs, mutations) = campaign("media_file", 0x3AE, 600, &fuzzing::media_file, |r| {
        if *r {
            ok += 1
        } else {
            err += 1
        }
    });
    assert!(ok > 10 && err > 100, "{ok} {err}");
    eprintln!("media_file: {inputs} inputs, {mutations} mutations");
}

#[test]
fn mutated_subscribes_never_panic() {
    let (mut accepted, mut refused) = (0, 0);
    let (inputs, mutations) = campaign(
        "subscribe",
        0x6665,
        12_000,
        &fuzzing::subscribe,
        |o| match o {
            fuzzing::SubscribeOutcome::Accepted => accepted += 1,
            fuzzing::SubscribeOutcome::Refused => refused += 1,
        },
    );
    assert!(accepted > 100 && refused > 100, "{accepted} {refused}");
    eprintln!("subscribe: {inputs} inputs, {mutations} mutations");
    assert!(mutations > 10_000, "{mutations}");
}

#[test]
fn mutated_presence_messages_never_panic() {
    let (mut read, mut unreadable) = (0, 0);
    let (inputs, mutations) = campaign(
        "presence_message",
        0x13,
        20_000,
        &fuzzing::presence_message,
        |o| match o {
            fuzzing::NodeMessageOutcome::Read => read += 1,
            fuzzing::NodeMessageOutcome::Unreadable => unreadable += 1,
        },
    );
    assert!(read > 100 && unreadable > 100, "{read} {unreadable}");
    eprintln!("presence_message: {inputs} inputs, {mutations} mutations");
}
