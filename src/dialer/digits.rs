//! When the prompt we hear has ended, for `--digits` without `--digits-after`: an IVR plays
//! a prompt and then waits for keys, so the keys go once sound was heard and then the line
//! stayed quiet for [`QUIET_FOR`] (quiet frames, or no packets at all: pivotd sends nothing
//! between prompts).

use std::time::{Duration, Instant};

/// A 20 ms frame is sound when its RMS is above this (16-bit linear, after G.711 decoding):
/// about −35 dBm0. A μ-law or A-law 0 dBm0 sine is about 15,800 RMS, so speech (−20 dBm0 on
/// average, syllables louder) is well above it, while the quietest codes G.711 has (silence
/// is exactly 0 from pivotd, idle-channel noise on a real line −60 dBm0 or lower) and the
/// gaps between words are below it.
pub const LOUD_RMS: f64 = 280.0;

/// How long after the last sound the prompt counts as ended: longer than the pauses inside
/// a spoken sentence, short enough that a collect's timeout (5 s by default) is not near.
pub const QUIET_FOR: Duration = Duration::from_millis(500);

/// Loud frames needed before anything counts as a prompt (one click is not a prompt): 60 ms.
const LOUD_FRAMES_NEEDED: u32 = 3;

/// Listens for a prompt's end.
#[derive(Debug, Default)]
pub struct PromptEnd {
    loud_frames: u32,
    last_loud: Option<Instant>,
}

impl PromptEnd {
    /// A frame of decoded audio received at `at`.
    pub fn hear(&mut self, pcm: &[i16], at: Instant) {
        if is_loud(pcm) {
            self.loud_frames = self.loud_frames.saturating_add(1);
            self.last_loud = Some(at);
        }
    }

    /// Whether, at `now`, a prompt was heard and has ended.
    pub fn ended(&self, now: Instant) -> bool {
        self.loud_frames >= LOUD_FRAMES_NEEDED
            && self
                .last_loud
                .is_some_and(|t| now.saturating_duration_since(t) >= QUIET_FOR)
    }
}

/// Whether a frame's RMS is above [`LOUD_RMS`].
fn is_loud(pcm: &[i16]) -> bool {
    if pcm.is_empty() {
        return false;
    }
    let energy: f64 = pcm.iter().map(|s| f64::from(*s).powi(2)).sum();
    (energy / pcm.len() as f64).sqrt() > LOUD_RMS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Codec;

    /// 20 ms of a sine at `dbm0` through μ-law and back, as the dialer hears it.
    fn frame(dbm0: f64) -> Vec<i16> {
        let amp = 15_800.0 * 2f64.sqrt() * 10f64.powf(dbm0 / 20.0);
        let pcm: Vec<i16> = (0..160)
            .map(|i| (amp * (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin()) as i16)
            .collect();
        Codec::Pcmu.decode(&Codec::Pcmu.encode(&pcm))
    }

    #[test]
    fn speech_level_is_sound_and_line_noise_is_not() {
        assert!(is_loud(&frame(-20.0)));
        assert!(is_loud(&frame(-30.0)));
        assert!(!is_loud(&frame(-45.0)));
        assert!(!is_loud(&frame(-60.0)));
        assert!(!is_loud(&Codec::Pcmu.decode(&[0xFF; 160])));
    }

    #[test]
    fn a_prompt_ends_after_half_a_second_of_quiet() {
        let t0 = Instant::now();
        let mut p = PromptEnd::default();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert!(!p.ended(ms(5000)), "nothing heard yet: no prompt ended");
        p.hear(&frame(-20.0), ms(0));
        assert!(!p.ended(ms(1000)), "one click is not a prompt");
        for i in 1..50 {
            p.hear(&frame(-20.0), ms(20 * i));
        }
        // Quiet frames, then no packets at all: the time since the last sound counts.
        p.hear(&frame(-60.0), ms(1000));
        assert!(!p.ended(ms(1300)));
        assert!(p.ended(ms(980 + 500)));
        // More speech starts the wait again.
        p.hear(&frame(-20.0), ms(1600));
        assert!(!p.ended(ms(1700)));
        assert!(p.ended(ms(2100)));
    }
}
