//! Prompts: audio files decoded once, converted to 8 kHz mono, encoded once to both G.711 laws,
//! and shared between calls by `Arc` (never decoded or encoded per call or per packet).
//!
//! Formats: PCM WAV through hound (any rate, channel count, 8/16/24/32-bit integer, 32-bit
//! float); μ-law and A-law WAV (WAVE format 7 and 6, also inside WAVE_FORMAT_EXTENSIBLE),
//! which hound cannot read, from the RIFF chunks directly; MP3 through symphonia.
//!
//! This file holds [`Prompt`] and what every decoder shares (limits, downmix); the formats are
//! in `wav.rs` and `mp3.rs`, rate conversion in `resample.rs`, play-id lookup and the cache in
//! `library.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::codec::Codec;

mod library;
mod mp3;
mod resample;
#[cfg(test)]
pub(super) mod test_support;
#[cfg(test)]
mod tests;
mod wav;

pub use library::PromptLibrary;

/// The rate every prompt is converted to (G.711's RTP clock).
pub const PROMPT_RATE: u32 = 8000;

/// Longest prompt accepted, so a hostile or broken file cannot make us allocate without bound.
const MAX_SECONDS: u64 = 3600;
/// Highest source rate accepted (the resampler's table grows with the ratio).
const MAX_RATE: u32 = 768_000;
/// Most channels accepted in a source file.
const MAX_CHANNELS: u16 = 64;

/// Why a prompt could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// No file in the media dir and no embedded prompt of that name.
    #[error("prompt not found: {0}")]
    NotFound(String),
    /// The id would leave the media dir or is not a plain relative name.
    #[error("invalid prompt id: {0}")]
    BadId(String),
    /// Reading the file or the dir failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not an audio format (or variant) pivotd reads.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The file claims a supported format but its content is broken.
    #[error("cannot decode audio: {0}")]
    Decode(String),
}

/// A prompt converted once to 8 kHz mono and encoded once to both G.711 laws; shared by Arc.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    /// 8 kHz mono 16-bit linear samples.
    pub pcm: Arc<[i16]>,
    /// `pcm` in μ-law, one byte per sample.
    pub pcmu: Arc<[u8]>,
    /// `pcm` in A-law, one byte per sample.
    pub pcma: Arc<[u8]>,
}

impl Prompt {
    /// The pre-encoded payload bytes for `codec` (160 bytes per 20 ms packet).
    pub fn payload(&self, codec: Codec) -> &Arc<[u8]> {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }

    /// Length of the audio.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.pcm.len() as u64 * 1_000_000_000 / u64::from(PROMPT_RATE))
    }

    /// Builds a prompt from interleaved 16-bit samples at any rate and channel count
    /// (a trailing partial frame is ignored). 8 kHz mono input is used sample for sample.
    pub fn from_pcm(
        name: &str,
        samples: &[i16],
        sample_rate: u32,
        channels: u16,
    ) -> Result<Prompt, PromptError> {
        check_format(sample_rate, channels)?;
        if sample_rate == PROMPT_RATE && channels == 1 {
            return Ok(Prompt::from_8k(name, samples.to_vec()));
        }
        let mono = downmix(samples.iter().map(|&s| f32::from(s) / 32768.0), channels);
        Ok(Prompt::from_mono_f32(name, &mono, sample_rate))
    }

    /// Sniffs the bytes: RIFF/WAVE (PCM any rate/channels/bit depth incl. float; format 6
    /// A-law, 7 μ-law decoded directly), MP3.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
        let prompt = if wav::looks_like_wav(bytes) {
            wav::decode_wav(name, bytes)?
        } else if mp3::looks_like_mp3(bytes) {
            mp3::decode_mp3(name, bytes)?
        } else {
            return Err(PromptError::Unsupported(format!(
                "{name}: neither RIFF/WAVE nor MP3"
            )));
        };
        if prompt.pcm.is_empty() {
            return Err(PromptError::Decode(format!("{name}: no audio samples")));
        }
        Ok(prompt)
    }

    fn from_8k(name: &str, pcm: Vec<i16>) -> Prompt {
        let pcmu: Arc<[u8]> = Codec::Pcmu.encode(&pcm).into();
        let pcma: Arc<[u8]> = Codec::Pcma.encode(&pcm).into();
        Prompt {
            name: name.to_string(),
            pcm: pcm.into(),
            pcmu,
            pcma,
        }
    }

    fn from_mono_f32(name: &str, mono: &[f32], rate: u32) -> Prompt {
        let resampled;
        let at_8k: &[f32] = if rate == PROMPT_RATE {
            mono
        } else {
            resampled = resample::resample(mono, rate, PROMPT_RATE);
            &resampled
        };
        let pcm = at_8k
            .iter()
            .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        Prompt::from_8k(name, pcm)
    }
}

fn check_format(rate: u32, channels: u16) -> Result<(), PromptError> {
    if rate == 0 || rate > MAX_RATE {
        return Err(PromptError::Unsupported(format!("sample rate {rate} Hz")));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(PromptError::Unsupported(format!("{channels} channels")));
    }
    Ok(())
}

/// Averages interleaved frames to mono (a trailing partial frame is dropped).
fn downmix(samples: impl Iterator<Item = f32>, channels: u16) -> Vec<f32> {
    let ch = usize::from(channels.max(1));
    let (lower, _) = samples.size_hint();
    let mut out = Vec::with_capacity(lower / ch);
    let mut acc = 0.0f32;
    let mut n = 0usize;
    for s in samples {
        acc += s;
        n += 1;
        if n == ch {
            out.push(acc / ch as f32);
            acc = 0.0;
            n = 0;
        }
    }
    out
}
