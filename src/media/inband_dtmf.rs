//! In-band DTMF: keys heard as tones in the caller's audio, for callers that offer no
//! telephone-event (carriers without RFC 4733 are common). Goertzel filters at the eight DTMF
//! frequencies over blocks of 205 samples (25.6 ms at 8 kHz, the classic size whose bins
//! fall near every DTMF frequency), with the usual checks of a DTMF receiver (ITU-T Q.24):
//! both tones strong enough, each well above the others of its group, the twist within
//! limits, and the two tones most of the block's energy — so speech and music rarely pass.
//! A key counts once it is heard in two blocks running (about 50 ms), and again only after
//! two blocks without it.

/// Samples per block at 8 kHz.
const BLOCK: usize = 205;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// The weakest tone accepted: about -36 dBm0 (an amplitude of 400 of 32767).
const MIN_POWER: f32 = (400.0 * BLOCK as f32 / 2.0) * (400.0 * BLOCK as f32 / 2.0);
/// A column tone may be this much weaker than the row tone (normal twist, 8 dB) …
const NORMAL_TWIST: f32 = 6.3;
/// … or this much stronger (reverse twist, 4 dB).
const REVERSE_TWIST: f32 = 2.5;
/// Each tone at least this much above the other frequencies of its group (6 dB).
const GROUP_MARGIN: f32 = 4.0;
/// The two tones' share of the block's energy: 0.5 for two pure tones (see `classify`).
const TONE_SHARE: f32 = 0.35;

/// The detector of one stream. Small (a block of samples and a few counters), made only for
/// a session that needs it.
pub struct InbandDtmf {
    coeffs: [f32; 8],
    block: [f32; BLOCK],
    filled: usize,
    /// The RTP timestamp of the block's first sample.
    block_ts: u32,
    /// The key heard in the last block(s), how many blocks running, and the timestamp of its
    /// first block.
    candidate: Option<(char, u8, u32)>,
    /// The key reported and not yet released, and the blocks without it since.
    active: Option<(char, u8)>,
}

impl Default for InbandDtmf {
    fn default() -> Self {
        InbandDtmf::new()
    }
}

impl InbandDtmf {
    pub fn new() -> InbandDtmf {
        let coeff = |f: f32| 2.0 * (std::f32::consts::TAU * f / 8000.0).cos();
        let mut coeffs = [0.0; 8];
        for (c, f) in coeffs.iter_mut().zip(ROWS.iter().chain(&COLS)) {
            *c = coeff(*f);
        }
        InbandDtmf {
            coeffs,
            block: [0.0; BLOCK],
            filled: 0,
            block_ts: 0,
            candidate: None,
            active: None,
        }
    }

    /// Feeds one packet's samples (8 kHz) whose first has RTP timestamp `ts`; returns each
    /// key that starts in them, with the timestamp where its tone began.
    pub fn push(&mut self, samples: &[i16], ts: u32, out: &mut Vec<(char, u32)>) {
        for (i, s) in samples.iter().enumerate() {
            if self.filled == 0 {
                self.block_ts = ts.wrapping_add(i as u32);
            }
            self.block[self.filled] = f32::from(*s);
            self.filled += 1;
            if self.filled == BLOCK {
                self.filled = 0;
                let heard = classify(&self.coeffs, &self.block);
                if let Some(key) = self.on_block(heard) {
                    out.push(key);
                }
            }
        }
    }

    fn on_block(&mut self, heard: Option<char>) -> Option<(char, u32)> {
        match heard {
            Some(k) => {
                let (count, since) = match self.candidate {
                    Some((c, n, t)) if c == k => (n.saturating_add(1), t),
                    _ => (1, self.block_ts),
                };
                self.candidate = Some((k, count, since));
                match self.active {
                    Some((a, _)) if a == k => {
                        self.active = Some((k, 0));
                        None
                    }
                    _ if count >= 2 => {
                        self.active = Some((k, 0));
                        Some((k, since))
                    }
                    _ => None,
                }
            }
            None => {
                self.candidate = None;
                if let Some((a, gaps)) = self.active {
                    self.active = (gaps + 1 < 2).then_some((a, gaps + 1));
                }
                None
            }
        }
    }
}

/// Goertzel power at each of the eight frequencies (`coeffs` = 2·cos(2πf/8000)).
fn powers(coeffs: &[f32; 8], x: &[f32; BLOCK]) -> [f32; 8] {
    let mut out = [0.0; 8];
    for (p, c) in out.iter_mut().zip(coeffs) {
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for v in x {
            let s = v + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        *p = s1 * s1 + s2 * s2 - c * s1 * s2;
    }
    out
}

/// The key a block holds, if it passes every check.
fn classify(coeffs: &[f32; 8], x: &[f32; BLOCK]) -> Option<char> {
    let p = powers(coeffs, x);
    let (rows, cols) = p.split_at(4);
    let strongest = |g: &[f32]| {
        g.iter().enumerate().fold(
            (0, 0.0f32),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
    };
    let (r, pr) = strongest(rows);
    let (c, pc) = strongest(cols);
    if pr < MIN_POWER || pc < MIN_POWER {
        return None;
    }
    if pc < pr / NORMAL_TWIST || pc > pr * REVERSE_TWIST {
        return None;
    }
    let apart = |g: &[f32], i: usize, peak: f32| {
        g.iter()
            .enumerate()
            .all(|(j, &v)| j == i || v * GROUP_MARGIN < peak)
    };
    if !apart(rows, r, pr) || !apart(cols, c, pc) {
        return None;
    }
    // A tone of amplitude A over N samples has Goertzel power (N·A/2)² and energy N·A²/2:
    // two pure tones give (pr + pc) = N·energy/2.
    let energy: f32 = x.iter().map(|v| v * v).sum();
    if pr + pc < TONE_SHARE * BLOCK as f32 * energy {
        return None;
    }
    Some(KEYS[r][c])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_freqs(k: char) -> (f32, f32) {
        for (r, row) in KEYS.iter().enumerate() {
            for (c, key) in row.iter().enumerate() {
                if *key == k {
                    return (ROWS[r], COLS[c]);
                }
            }
        }
        panic!("no key {k}")
    }

    /// `ms` of samples from `f(t)` (t in seconds), starting at sample `at`.
    fn samples(at: usize, ms: usize, f: impl Fn(f32) -> f32) -> Vec<i16> {
        (at..at + ms * 8)
            .map(|n| f(n as f32 / 8000.0).clamp(-32767.0, 32767.0) as i16)
            .collect()
    }

    fn tone(at: usize, ms: usize, k: char, row_amp: f32, col_amp: f32) -> Vec<i16> {
        let (fr, fc) = key_freqs(k);
        samples(at, ms, |t| {
            row_amp * (std::f32::consts::TAU * fr * t).sin()
                + col_amp * (std::f32::consts::TAU * fc * t).sin()
        })
    }

    /// Feeds `audio` in 20 ms packets; the keys heard.
    fn hear(audio: &[i16]) -> Vec<(char, u32)> {
        let mut d = InbandDtmf::new();
        let mut out = Vec::new();
        for (i, pkt) in audio.chunks(160).enumerate() {
            d.push(pkt, 1000 + 160 * i as u32, &mut out);
        }
        out
    }

    fn keys(audio: &[i16]) -> String {
        hear(audio).into_iter().map(|(k, _)| k).collect()
    }

    /// `keys` as 80 ms tones with 80 ms of silence after each.
    fn dialled(keys: &str, amp: f32) -> Vec<i16> {
        let mut audio = Vec::new();
        for k in keys.chars() {
            audio.extend(tone(audio.len(), 80, k, amp, amp));
            audio.extend(vec![0i16; 640]);
        }
        audio
    }

    #[test]
    fn every_key_is_heard_once() {
        let all = "123A456B789C*0#D";
        assert_eq!(keys(&dialled(all, 6000.0)), all);
    }

    #[test]
    fn quiet_and_loud_keys_are_heard() {
        assert_eq!(keys(&dialled("159", 1000.0)), "159");
        assert_eq!(keys(&dialled("159", 14000.0)), "159");
    }

    #[test]
    fn a_held_key_counts_once_and_a_repeat_after_a_pause_again() {
        let mut audio = tone(0, 600, '5', 6000.0, 6000.0);
        assert_eq!(keys(&audio), "5");
        audio.extend(vec![0i16; 640]);
        audio.extend(tone(audio.len(), 80, '5', 6000.0, 6000.0));
        assert_eq!(keys(&audio), "55");
    }

    #[test]
    fn the_start_is_where_the_tone_began() {
        let mut audio = vec![0i16; 1600];
        audio.extend(tone(1600, 100, '7', 6000.0, 6000.0));
        let heard = hear(&audio);
        assert_eq!(heard.len(), 1, "{heard:?}");
        // Within a block (205 samples) of sample 1600.
        let at = heard[0].1.wrapping_sub(1000);
        assert!((1600..1600 + 205).contains(&at), "{at}");
    }

    #[test]
    fn too_short_a_tone_is_not_a_key() {
        // 30 ms: at most one whole block.
        let mut audio = tone(0, 30, '3', 6000.0, 6000.0);
        audio.extend(vec![0i16; 800]);
        assert_eq!(keys(&audio), "");
    }

    #[test]
    fn twist_beyond_the_limits_is_refused() {
        // Column 12 dB below the row: past the normal twist.
        assert_eq!(keys(&dialled_twisted('2', 8000.0, 2000.0)), "");
        // Column 6 dB above the row: past the reverse twist.
        assert_eq!(keys(&dialled_twisted('2', 3000.0, 6000.0)), "");
        // Within: column 4 dB below.
        assert_eq!(keys(&dialled_twisted('2', 6000.0, 3800.0)), "2");
    }

    fn dialled_twisted(k: char, row: f32, col: f32) -> Vec<i16> {
        let mut audio = tone(0, 100, k, row, col);
        audio.extend(vec![0i16; 640]);
        audio
    }

    #[test]
    fn single_tones_chords_and_noise_are_not_keys() {
        let one = samples(0, 500, |t| {
            8000.0 * (std::f32::consts::TAU * 1000.0 * t).sin()
        });
        assert_eq!(keys(&one), "");
        let row_only = samples(0, 500, |t| {
            8000.0 * (std::f32::consts::TAU * 697.0 * t).sin()
        });
        assert_eq!(keys(&row_only), "");
        // A key under a loud third tone (speech-like): the tones are not most of the energy.
        let (fr, fc) = key_freqs('8');
        let masked = samples(0, 500, |t| {
            3000.0 * (std::f32::consts::TAU * fr * t).sin()
                + 3000.0 * (std::f32::consts::TAU * fc * t).sin()
                + 12000.0 * (std::f32::consts::TAU * 400.0 * t).sin()
        });
        assert_eq!(keys(&masked), "");
        // Noise (a fixed pseudo-random sequence).
        let mut x: u32 = 0x1234_5678;
        let noise: Vec<i16> = (0..8000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((x >> 16) as i16) / 2
            })
            .collect();
        assert_eq!(keys(&noise), "");
    }

    #[test]
    fn keys_survive_g711_both_ways() {
        use crate::media::codec::Codec;
        let audio = dialled("42#", 6000.0);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let decoded = codec.decode(&codec.encode(&audio));
            assert_eq!(keys(&decoded), "42#", "{codec:?}");
        }
    }
}
