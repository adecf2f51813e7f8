//! Tones pivotd makes itself: the ringback a caller hears while a bridge rings once early
//! media is open (its phone no longer rings by itself then).

use std::f32::consts::TAU;
use std::sync::{Arc, OnceLock};

use super::prompt::Prompt;

const RATE: u32 = 8000;

/// One cadence of the North American ringback (ITU-T E.180: 440 + 480 Hz, 2 s on, 4 s off,
/// Kazoo's default `%(2000,4000,440,480)`), played over and over while a bridge rings.
pub fn ringback() -> Arc<Prompt> {
    static RINGBACK: OnceLock<Arc<Prompt>> = OnceLock::new();
    RINGBACK
        .get_or_init(|| Arc::new(cadence("ringback", 2000, 4000, &[440.0, 480.0])))
        .clone()
}

/// `on_ms` of the frequencies summed, then `off_ms` of silence, at about −16 dBm0 each.
fn cadence(name: &str, on_ms: u32, off_ms: u32, freqs: &[f32]) -> Prompt {
    let on = (RATE * on_ms / 1000) as usize;
    let off = (RATE * off_ms / 1000) as usize;
    let amplitude = 3000.0;
    let mut pcm: Vec<i16> = (0..on)
        .map(|n| {
            let t = n as f32 / RATE as f32;
            let s: f32 = freqs.iter().map(|f| (TAU * f * t).sin()).sum();
            (s * amplitude) as i16
        })
        .collect();
    pcm.resize(on + off, 0);
    Prompt::from_pcm(name, &pcm, RATE, 1).unwrap_or_else(|_| unreachable_prompt(name))
}

/// `from_pcm` refuses only rates and channel counts it cannot convert; 8 kHz mono is never
/// one of them, so this is an empty prompt in name only.
fn unreachable_prompt(name: &str) -> Prompt {
    Prompt {
        name: name.to_string(),
        pcm: Arc::from(Vec::new()),
        pcmu: Arc::from(Vec::new()),
        pcma: Arc::from(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ringback_is_two_seconds_of_tone_then_four_of_silence() {
        let r = ringback();
        assert_eq!(r.duration().as_millis(), 6000);
        let on = &r.pcm[..16000];
        let off = &r.pcm[16000..];
        assert!(on.iter().any(|&s| s.unsigned_abs() > 2000));
        assert!(off.iter().all(|&s| s == 0));
        // 440 + 480 Hz beat at 40 Hz: the envelope falls to near zero every 25 ms.
        let window = &on[..200];
        assert!(window.iter().any(|&s| s.unsigned_abs() < 100));
    }
}
