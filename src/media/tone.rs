//! Tones pivotd makes itself: the ringback a caller hears while a bridge rings once early
//! media is open (its phone no longer rings by itself then), and the tones a flow names in
//! FreeSWITCH's tone-stream notation (`tone_stream://%(2000,4000,440,480)`), which Kazoo
//! callflows use for `ringback` and `play`.

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

/// Why a tone-stream text is not a tone pivotd makes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToneSpecError {
    #[error("not a tone_stream: expected `%(on_ms,off_ms,freq[,freq…])`")]
    Syntax,
    #[error("tone cadence out of range: on/off up to {MAX_MS} ms, and some tone")]
    Cadence,
    #[error("tone frequencies: 1 to {MAX_FREQS} of them, each up to {MAX_HZ} Hz")]
    Frequencies,
}

const MAX_MS: u32 = 60_000;
const MAX_HZ: u32 = 3_900;
const MAX_FREQS: usize = 4;

/// Whether a media id is a tone rather than a prompt name or URL.
pub fn is_tone_spec(id: &str) -> bool {
    id.starts_with("tone_stream://") || id.starts_with("%(")
}

/// One cadence of a FreeSWITCH tone stream: `tone_stream://%(on,off,f1,f2,…)` or the bare
/// `%(…)` Kazoo stores in `ringback`. Only the first segment is made; options after `;`
/// (`loops=`, `v=`) and further `%(…)` segments are ignored (a ringback loops by itself).
pub fn from_spec(spec: &str) -> Result<Arc<Prompt>, ToneSpecError> {
    let body = spec.strip_prefix("tone_stream://").unwrap_or(spec);
    let inner = body
        .strip_prefix("%(")
        .and_then(|rest| rest.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or(ToneSpecError::Syntax)?;
    let mut numbers = inner.split(',').map(|n| n.trim().parse::<u32>());
    let mut next = || {
        numbers
            .next()
            .ok_or(ToneSpecError::Syntax)?
            .map_err(|_| ToneSpecError::Syntax)
    };
    let on_ms = next()?;
    let off_ms = next()?;
    if on_ms > MAX_MS || off_ms > MAX_MS || on_ms + off_ms == 0 {
        return Err(ToneSpecError::Cadence);
    }
    let freqs: Vec<f32> = numbers
        .map(|n| match n {
            Ok(hz) if hz <= MAX_HZ => Ok(hz as f32),
            Ok(_) => Err(ToneSpecError::Frequencies),
            Err(_) => Err(ToneSpecError::Syntax),
        })
        .collect::<Result<_, _>>()?;
    if freqs.is_empty() || freqs.len() > MAX_FREQS {
        return Err(ToneSpecError::Frequencies);
    }
    Ok(Arc::new(cadence(spec, on_ms, off_ms, &freqs)))
}

/// `on_ms` of the frequencies summed (peaking near −10 dBm0), then `off_ms` of silence.
fn cadence(name: &str, on_ms: u32, off_ms: u32, freqs: &[f32]) -> Prompt {
    let on = (RATE * on_ms / 1000) as usize;
    let off = (RATE * off_ms / 1000) as usize;
    // The sum stays as loud however many frequencies there are.
    let amplitude = 6000.0 / freqs.len().max(1) as f32;
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

    #[test]
    fn a_tone_stream_is_made_as_it_says() {
        let t = from_spec("tone_stream://%(500,250,1000);loops=25").unwrap();
        assert_eq!(t.duration().as_millis(), 750);
        assert!(t.pcm[..4000].iter().any(|&s| s.unsigned_abs() > 2000));
        assert!(t.pcm[4000..].iter().all(|&s| s == 0));
        assert_eq!(
            from_spec("%(2000,4000,440,480)")
                .unwrap()
                .duration()
                .as_millis(),
            6000
        );
        assert!(is_tone_spec("%(1,1,1)") && !is_tone_spec("welcome"));
    }

    #[test]
    fn a_bad_tone_stream_says_why() {
        assert_eq!(
            from_spec("tone_stream://ring").err(),
            Some(ToneSpecError::Syntax)
        );
        assert_eq!(from_spec("%(100,100").err(), Some(ToneSpecError::Syntax));
        assert_eq!(from_spec("%(100,x,440)").err(), Some(ToneSpecError::Syntax));
        assert_eq!(
            from_spec("%(100,100)").err(),
            Some(ToneSpecError::Frequencies)
        );
        assert_eq!(
            from_spec("%(100,100,9000)").err(),
            Some(ToneSpecError::Frequencies)
        );
        assert_eq!(
            from_spec("%(1,1,1,2,3,4,5)").err(),
            Some(ToneSpecError::Frequencies)
        );
        assert_eq!(from_spec("%(0,0,440)").err(), Some(ToneSpecError::Cadence));
        assert_eq!(
            from_spec("%(4294967295,1,440)").err(),
            Some(ToneSpecError::Cadence)
        );
        assert_eq!(from_spec("%(é,1,440)").err(), Some(ToneSpecError::Syntax));
    }
}
