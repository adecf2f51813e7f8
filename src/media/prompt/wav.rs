//! WAV decoding: the RIFF chunk walk, μ-law/A-law (which hound cannot read) and PCM/float
//! through hound. Apart from MP3 and the library because each container has its own rules.

use std::io::Cursor;

use super::{check_format, downmix, Prompt, PromptError, MAX_SECONDS};
use crate::media::codec::Codec;

/// RIFF/WAVE by its header.
pub(super) fn looks_like_wav(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
pub(super) const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;
pub(super) const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

pub(super) struct WavFmt {
    /// The effective format (the SubFormat's code for WAVE_FORMAT_EXTENSIBLE).
    format: u16,
    channels: u16,
    rate: u32,
    block_align: u16,
    bits: u16,
}

pub(super) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the RIFF chunks for `fmt ` and `data` (chunks are padded to even sizes, RIFF rule).
/// A data chunk whose size runs past the end of the file (streamed writers) is cut to the file.
pub(super) fn parse_wav_chunks(bytes: &[u8]) -> Result<(WavFmt, &[u8]), PromptError> {
    let bad = |m: &str| PromptError::Decode(format!("WAV: {m}"));
    let mut pos = 12usize;
    let mut fmt: Option<WavFmt> = None;
    let mut data: Option<&[u8]> = None;
    while pos + 8 <= bytes.len() && (fmt.is_none() || data.is_none()) {
        let id = bytes
            .get(pos..pos + 4)
            .ok_or_else(|| bad("truncated chunk"))?;
        let size = le_u32(bytes, pos + 4).ok_or_else(|| bad("truncated chunk"))? as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(size).min(bytes.len());
        let body = bytes
            .get(body_start..body_end)
            .ok_or_else(|| bad("truncated chunk"))?;
        match id {
            b"fmt " => {
                let format_tag = le_u16(body, 0).ok_or_else(|| bad("short fmt chunk"))?;
                let channels = le_u16(body, 2).ok_or_else(|| bad("short fmt chunk"))?;
                let rate = le_u32(body, 4).ok_or_else(|| bad("short fmt chunk"))?;
                let block_align = le_u16(body, 12).ok_or_else(|| bad("short fmt chunk"))?;
                let bits = le_u16(body, 14).ok_or_else(|| bad("short fmt chunk"))?;
                let format = if format_tag == WAVE_FORMAT_EXTENSIBLE {
                    // cbSize(2) validBits(2) channelMask(4) then the SubFormat GUID, whose
                    // first two bytes are the format code.
                    le_u16(body, 24).ok_or_else(|| bad("short WAVE_FORMAT_EXTENSIBLE fmt"))?
                } else {
                    format_tag
                };
                fmt = Some(WavFmt {
                    format,
                    channels,
                    rate,
                    block_align,
                    bits,
                });
            }
            b"data" => data = Some(body),
            _ => {}
        }
        // Odd-sized chunks are followed by one pad byte.
        pos = body_start.saturating_add(size).saturating_add(size & 1);
    }
    let fmt = fmt.ok_or_else(|| bad("no fmt chunk"))?;
    let data = data.ok_or_else(|| bad("no data chunk"))?;
    check_format(fmt.rate, fmt.channels)?;
    Ok((fmt, data))
}

pub(super) fn decode_wav(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
    let (fmt, data) = parse_wav_chunks(bytes)?;
    let max_frames = MAX_SECONDS * u64::from(fmt.rate);
    match fmt.format {
        WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW => {
            if fmt.bits != 8 {
                return Err(PromptError::Unsupported(format!(
                    "{name}: G.711 WAV with {} bits per sample",
                    fmt.bits
                )));
            }
            let frames = data.len() / usize::from(fmt.channels);
            if frames as u64 > max_frames {
                return Err(PromptError::Decode(format!(
                    "{name}: longer than {MAX_SECONDS} s"
                )));
            }
            let law = if fmt.format == WAVE_FORMAT_ALAW {
                Codec::Pcma
            } else {
                Codec::Pcmu
            };
            // Linear samples, then the same path as any 16-bit PCM (8 kHz mono is kept as is).
            Prompt::from_pcm(name, &law.decode(data), fmt.rate, fmt.channels)
        }
        WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT => {
            let ok_bits = match fmt.format {
                WAVE_FORMAT_PCM => matches!(fmt.bits, 8 | 16 | 24 | 32),
                _ => fmt.bits == 32,
            };
            if !ok_bits {
                return Err(PromptError::Unsupported(format!(
                    "{name}: {}-bit {} WAV",
                    fmt.bits,
                    if fmt.format == WAVE_FORMAT_PCM {
                        "PCM"
                    } else {
                        "float"
                    }
                )));
            }
            let frame_bytes = usize::from(fmt.channels) * usize::from(fmt.bits / 8);
            if usize::from(fmt.block_align) != frame_bytes {
                return Err(PromptError::Decode(format!(
                    "{name}: block align {} does not match {} channels of {} bits",
                    fmt.block_align, fmt.channels, fmt.bits
                )));
            }
            if (data.len() / frame_bytes) as u64 > max_frames {
                return Err(PromptError::Decode(format!(
                    "{name}: longer than {MAX_SECONDS} s"
                )));
            }
            // hound is third-party code on untrusted bytes: a panic in it becomes an error.
            let decoded = std::panic::catch_unwind(|| hound_decode(bytes, fmt.channels))
                .map_err(|_| PromptError::Decode(format!("{name}: WAV decoder failed")))?;
            let (mono, rate) = decoded.map_err(|e| PromptError::Decode(format!("{name}: {e}")))?;
            Ok(Prompt::from_mono_f32(name, &mono, rate))
        }
        other => Err(PromptError::Unsupported(format!(
            "{name}: WAV format {other:#06x}"
        ))),
    }
}

fn hound_decode(bytes: &[u8], channels: u16) -> Result<(Vec<f32>, u32), hound::Error> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes))?;
    let spec = reader.spec();
    let rate = spec.sample_rate;
    let capacity = sample_capacity(reader.len(), bytes.len());
    let mono = match spec.sample_format {
        hound::SampleFormat::Float => {
            let mut samples = Vec::with_capacity(capacity);
            for s in reader.samples::<f32>() {
                samples.push(s?);
            }
            downmix(samples.into_iter(), channels)
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            let mut samples = Vec::with_capacity(capacity);
            for s in reader.samples::<i32>() {
                samples.push(s? as f32 * scale);
            }
            downmix(samples.into_iter(), channels)
        }
    };
    Ok((mono, rate))
}

/// Room for the samples of a WAV: the count its data chunk header declares (up to 2^32,
/// whatever the file holds: a 300-byte file declaring 4 GB made the decoder reserve 5.7 GB,
/// found by fuzzing), never more than the file's length (every sample takes a byte or more).
pub(super) fn sample_capacity(declared: u32, file_bytes: usize) -> usize {
    usize::try_from(declared)
        .unwrap_or(usize::MAX)
        .min(file_bytes)
}
