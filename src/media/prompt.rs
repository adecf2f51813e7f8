//! Prompts: audio files decoded once, converted to 8 kHz mono, encoded once to both G.711 laws,
//! and shared between calls by `Arc` (never decoded or encoded per call or per packet).
//!
//! Formats: PCM WAV through hound (any rate, channel count, 8/16/24/32-bit integer, 32-bit
//! float); μ-law and A-law WAV (WAVE format 7 and 6, also inside WAVE_FORMAT_EXTENSIBLE),
//! which hound cannot read, from the RIFF chunks directly; MP3 through symphonia.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::codec::{alaw_decode, ulaw_decode, Codec};

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
        let prompt = if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
            decode_wav(name, bytes)?
        } else if looks_like_mp3(bytes) {
            decode_mp3(name, bytes)?
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
            resampled = resample(mono, rate, PROMPT_RATE);
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

// ---------------------------------------------------------------------------------------------
// Resampling: windowed-sinc (Kaiser) low-pass evaluated at each output instant. The cutoff sits
// below the lower of the two Nyquist frequencies so going down from 44.1/48 kHz does not alias.

/// Zero crossings of the sinc on each side of the centre.
const SINC_ZEROS: f64 = 24.0;
/// Cutoff as a fraction of the lower Nyquist frequency (3.6 kHz when going to 8 kHz).
const ROLLOFF: f64 = 0.9;
const KAISER_BETA: f64 = 8.6;
/// Kernel table points per input sample (linear interpolation between them).
const TABLE_RES: usize = 256;

fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

/// Resamples mono audio from `from` Hz to `to` Hz.
fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    // Cutoff in cycles per input sample.
    let cutoff = 0.5 * ratio.min(1.0) * ROLLOFF;
    let half = SINC_ZEROS / (2.0 * cutoff);
    let table_len = (half * TABLE_RES as f64).ceil() as usize + 2;
    let i0_beta = bessel_i0(KAISER_BETA);
    let table: Vec<f32> = (0..table_len)
        .map(|i| {
            let x = i as f64 / TABLE_RES as f64;
            if x >= half {
                return 0.0;
            }
            let arg = 2.0 * cutoff * x;
            let sinc = if arg == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            let r = x / half;
            let w = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            (2.0 * cutoff * sinc * w) as f32
        })
        .collect();
    let kernel = |x: f64| -> f32 {
        let p = x.abs() * TABLE_RES as f64;
        let i = p as usize;
        let f = (p - i as f64) as f32;
        match (table.get(i), table.get(i + 1)) {
            (Some(a), Some(b)) => a + (b - a) * f,
            _ => 0.0,
        }
    };

    let n_in = input.len() as u64;
    let (from64, to64) = (u64::from(from), u64::from(to));
    let n_out = (n_in * to64).div_ceil(from64);
    let reach = half.ceil() as i64;
    let taps = (2 * reach + 2) as usize;
    // Output instants fall on `to / gcd` distinct fractional phases (80 for 44.1 kHz): their
    // normalised weights are computed once each, unless that table would be large.
    let phases = to64 / gcd(from64, to64);
    let step = to64 / phases;
    let mut cache: Vec<Vec<f32>> = if phases.saturating_mul(taps as u64) <= 1 << 20 {
        vec![Vec::new(); phases as usize]
    } else {
        Vec::new()
    };
    let weights_for = |frac_num: u64| -> Vec<f32> {
        let frac = frac_num as f64 / to as f64;
        let mut w: Vec<f32> = (0..taps)
            .map(|t| kernel((t as i64 - reach) as f64 - frac))
            .collect();
        // Normalising by the full kernel sum keeps the DC gain at exactly 1 for every phase.
        let sum: f32 = w.iter().sum();
        if sum > 0.0 {
            w.iter_mut().for_each(|x| *x /= sum);
        }
        w
    };
    let mut out = Vec::with_capacity(n_out as usize);
    for k in 0..n_out {
        // Exact position of output sample k on the input grid: k * from / to.
        let num = k * from64;
        let base = (num / to64) as i64;
        let frac_num = num % to64;
        let scratch;
        let weights: &[f32] = match cache.get_mut((frac_num / step) as usize) {
            Some(slot) => {
                if slot.is_empty() {
                    *slot = weights_for(frac_num);
                }
                slot
            }
            None => {
                scratch = weights_for(frac_num);
                &scratch
            }
        };
        let first = base - reach;
        let acc: f32 = if first >= 0 && (first as usize + taps) <= input.len() {
            let start = first as usize;
            input
                .get(start..start + taps)
                .map(|win| win.iter().zip(weights).map(|(s, w)| s * w).sum())
                .unwrap_or(0.0)
        } else {
            // Near the edges: samples outside the input count as silence.
            weights
                .iter()
                .enumerate()
                .filter_map(|(t, w)| {
                    let j = usize::try_from(first + t as i64).ok()?;
                    input.get(j).map(|s| s * w)
                })
                .sum()
        };
        out.push(acc);
    }
    out
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

// ---------------------------------------------------------------------------------------------
// WAV

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

struct WavFmt {
    /// The effective format (the SubFormat's code for WAVE_FORMAT_EXTENSIBLE).
    format: u16,
    channels: u16,
    rate: u32,
    block_align: u16,
    bits: u16,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the RIFF chunks for `fmt ` and `data` (chunks are padded to even sizes, RIFF rule).
/// A data chunk whose size runs past the end of the file (streamed writers) is cut to the file.
fn parse_wav_chunks(bytes: &[u8]) -> Result<(WavFmt, &[u8]), PromptError> {
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

fn decode_wav(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
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
            let table: fn(u8) -> i16 = if fmt.format == WAVE_FORMAT_ALAW {
                alaw_decode
            } else {
                ulaw_decode
            };
            if fmt.channels == 1 && fmt.rate == PROMPT_RATE {
                return Ok(Prompt::from_8k(
                    name,
                    data.iter().map(|&b| table(b)).collect(),
                ));
            }
            let mono = downmix(
                data.iter().map(|&b| f32::from(table(b)) / 32768.0),
                fmt.channels,
            );
            Ok(Prompt::from_mono_f32(name, &mono, fmt.rate))
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
/// whatever the file holds: a 927-byte file declaring 4 GB made the decoder reserve 5.7 GB,
/// found by fuzzing), never more than the file's length (every sample takes a byte or more).
fn sample_capacity(declared: u32, file_bytes: usize) -> usize {
    usize::try_from(declared)
        .unwrap_or(usize::MAX)
        .min(file_bytes)
}

// ---------------------------------------------------------------------------------------------
// MP3

fn looks_like_mp3(bytes: &[u8]) -> bool {
    match bytes {
        [b'I', b'D', b'3', ..] => true,
        // MPEG audio frame sync: 11 set bits; layer bits not 00.
        [0xFF, b, ..] => b & 0xE0 == 0xE0 && b & 0x06 != 0,
        _ => false,
    }
}

fn decode_mp3(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
    let owned = bytes.to_vec();
    // symphonia is third-party code on untrusted bytes: a panic in it becomes an error.
    let decoded = std::panic::catch_unwind(move || symphonia_decode(owned))
        .map_err(|_| PromptError::Decode(format!("{name}: MP3 decoder failed")))?;
    let (mono, rate) = decoded.map_err(|e| PromptError::Decode(format!("{name}: {e}")))?;
    check_format(rate, 1)?;
    Ok(Prompt::from_mono_f32(name, &mono, rate))
}

fn symphonia_decode(bytes: Vec<u8>) -> Result<(Vec<f32>, u32), String> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
    use symphonia::core::errors::Error;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    // Gapless: trims the encoder delay and padding the LAME/Xing header records, so the
    // prompt's length is the source's.
    let fmt_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &fmt_opts, &MetadataOptions::default())
        .map_err(|e| e.to_string())?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or("no audio track")?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| e.to_string())?;
    let mut mono: Vec<f32> = Vec::new();
    let mut rate: Option<u32> = None;
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(Error::IoError(_)) | Err(Error::ResetRequired) => break,
            Err(e) => return Err(e.to_string()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged frame is skipped, as players do.
            Err(Error::DecodeError(_)) | Err(Error::IoError(_)) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if channels == 0 || spec.rate == 0 {
            continue;
        }
        match rate {
            None => rate = Some(spec.rate),
            Some(r) if r != spec.rate => return Err("sample rate changes mid-stream".into()),
            Some(_) => {}
        }
        let need = decoded.capacity() as u64;
        let sb = match &mut buf {
            Some(b) if b.capacity() as u64 >= need * channels as u64 => b,
            _ => buf.insert(SampleBuffer::<f32>::new(need, spec)),
        };
        sb.copy_interleaved_ref(decoded);
        let ch = u16::try_from(channels).map_err(|_| "too many channels")?;
        mono.extend(downmix(sb.samples().iter().copied(), ch));
        if mono.len() as u64 > MAX_SECONDS * u64::from(spec.rate) {
            return Err(format!("longer than {MAX_SECONDS} s"));
        }
    }
    let rate = rate.ok_or("no decodable MP3 frames")?;
    Ok((mono, rate))
}

// ---------------------------------------------------------------------------------------------
// Library

/// The prompts compiled into the binary, so `pivotd` runs from any folder.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("welcome.wav", include_bytes!("../../media/welcome.wav")),
    ("error.wav", include_bytes!("../../media/error.wav")),
    ("tone-1khz.wav", include_bytes!("../../media/tone-1khz.wav")),
    ("digit-0.wav", include_bytes!("../../media/digit-0.wav")),
    ("digit-1.wav", include_bytes!("../../media/digit-1.wav")),
    ("digit-2.wav", include_bytes!("../../media/digit-2.wav")),
    ("digit-3.wav", include_bytes!("../../media/digit-3.wav")),
    ("digit-4.wav", include_bytes!("../../media/digit-4.wav")),
    ("digit-5.wav", include_bytes!("../../media/digit-5.wav")),
    ("digit-6.wav", include_bytes!("../../media/digit-6.wav")),
    ("digit-7.wav", include_bytes!("../../media/digit-7.wav")),
    ("digit-8.wav", include_bytes!("../../media/digit-8.wav")),
    ("digit-9.wav", include_bytes!("../../media/digit-9.wav")),
];

/// Where a prompt id resolved to.
enum Source {
    File(PathBuf),
    Embedded(&'static str, &'static [u8]),
}

impl Source {
    fn cache_key(&self) -> String {
        match self {
            Source::File(p) => format!("file:{}", p.display()),
            Source::Embedded(n, _) => format!("embedded:{n}"),
        }
    }
}

/// Resolves play ids to prompts: files in the media dir (never outside it: no `..`, no absolute
/// paths), then the prompts compiled into the binary; each decoded once and cached.
///
/// The cache is never invalidated: a file changed on disk is picked up on restart.
pub struct PromptLibrary {
    dir: Option<PathBuf>,
    /// Keyed by the id as asked and by the resolved source, so `welcome` and `welcome.wav`
    /// share one `Arc`.
    cache: RwLock<HashMap<String, Arc<Prompt>>>,
}

impl PromptLibrary {
    pub fn new(dir: Option<PathBuf>) -> PromptLibrary {
        PromptLibrary {
            dir,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The media dir, if one is set.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Names of the prompts compiled into the binary (`welcome.wav`, …).
    pub fn embedded_names() -> impl Iterator<Item = &'static str> {
        EMBEDDED.iter().map(|(n, _)| *n)
    }

    /// `id` is `welcome` or `welcome.wav`; without an extension `.wav` then `.mp3` is tried.
    pub fn get(&self, id: &str) -> Result<Arc<Prompt>, PromptError> {
        if let Some(p) = self.cached(id) {
            return Ok(p);
        }
        let source = self.locate(id)?;
        let key = source.cache_key();
        if let Some(p) = self.cached(&key) {
            self.insert(id, p.clone());
            return Ok(p);
        }
        let prompt = match &source {
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| PromptError::Io {
                    path: path.clone(),
                    source,
                })?;
                Prompt::decode(id, &bytes)?
            }
            Source::Embedded(name, bytes) => Prompt::decode(name, bytes)?,
        };
        // Another thread may have decoded it meanwhile: keep the first so every caller
        // shares one Arc.
        let p = self.insert(&key, Arc::new(prompt));
        self.insert(id, p.clone());
        Ok(p)
    }

    /// Whether `id` resolves to a file in the media dir or an embedded prompt (not decoded).
    pub fn exists(&self, id: &str) -> bool {
        self.cached(id).is_some() || self.locate(id).is_ok()
    }

    /// The media dir exists and is readable (when set).
    pub fn check_dir(&self) -> Result<(), PromptError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let io = |source| PromptError::Io {
            path: dir.clone(),
            source,
        };
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(io(std::io::Error::other("not a directory")));
        }
        std::fs::read_dir(dir).map_err(io)?;
        Ok(())
    }

    fn cached(&self, key: &str) -> Option<Arc<Prompt>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn insert(&self, key: &str, p: Arc<Prompt>) -> Arc<Prompt> {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert(p)
            .clone()
    }

    fn locate(&self, id: &str) -> Result<Source, PromptError> {
        validate_id(id)?;
        let lower = id.to_ascii_lowercase();
        let candidates: Vec<String> = if lower.ends_with(".wav") || lower.ends_with(".mp3") {
            vec![id.to_string()]
        } else {
            vec![format!("{id}.wav"), format!("{id}.mp3")]
        };
        if let Some(dir) = &self.dir {
            // A missing or unreadable dir falls through to the embedded prompts;
            // check_dir reports it at start-up.
            if let Ok(canon_dir) = dir.canonicalize() {
                for c in &candidates {
                    let path = dir.join(c);
                    if std::fs::symlink_metadata(&path).is_err() {
                        continue;
                    }
                    let canon = path.canonicalize().map_err(|source| PromptError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    // A symlink inside the dir must not lead out of it.
                    if !canon.starts_with(&canon_dir) {
                        return Err(PromptError::BadId(id.to_string()));
                    }
                    if canon.is_file() {
                        return Ok(Source::File(canon));
                    }
                }
            }
        }
        for c in &candidates {
            if let Some((name, bytes)) = EMBEDDED.iter().find(|(n, _)| n == c) {
                return Ok(Source::Embedded(name, bytes));
            }
        }
        Err(PromptError::NotFound(id.to_string()))
    }
}

/// A play id is a relative path below the media dir: no `..`, no absolute path, no
/// backslash (Windows separators), no NUL, nothing empty.
fn validate_id(id: &str) -> Result<(), PromptError> {
    let bad = id.is_empty()
        || id.len() > 1024
        || id.contains('\0')
        || id.contains('\\')
        || id.starts_with('/')
        || Path::new(id).is_absolute()
        || id
            .split('/')
            .any(|c| c == ".." || c.is_empty() && id.ends_with('/'));
    if bad {
        return Err(PromptError::BadId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A unique temp dir removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "pivotd-prompt-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs sox; a missing sox fails the test (it is a required tool).
    fn sox(args: &[&str]) {
        let out = Command::new("sox")
            .args(args)
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

    /// One second of a 1 kHz sine at -6 dBFS made by sox: `rate` Hz, `channels`, with the
    /// output `format` options (`-b`, `-e`); `dither` false keeps sox's default dither.
    fn sox_tone(path: &str, dither: bool, rate: &str, channels: &str, format: &[&str]) {
        let mut args = vec![];
        if dither {
            args.push("-D");
        }
        args.extend(["-r", rate, "-c", channels, "-n"]);
        args.extend_from_slice(format);
        args.extend([path, "synth", "1.0", "sine", "1000", "gain", "-6"]);
        sox(&args);
    }

    #[test]
    fn decodes_sox_made_files_to_1khz() {
        let t = TempDir::new("sox");
        let p = |n: &str| t.0.join(n);
        let s = |p: &PathBuf| p.to_str().unwrap().to_string();
        // 44.1 kHz stereo 24-bit (sox writes WAVE_FORMAT_EXTENSIBLE for > 16 bits).
        let f = p("s24.wav");
        sox_tone(&s(&f), true, "44100", "2", &["-b", "24"]);
        assert_1khz(&decode_file(&f), 1.0, 0.5);
        // 22.05 kHz 32-bit float.
        let f = p("f32.wav");
        sox_tone(
            &s(&f),
            false,
            "22050",
            "1",
            &["-e", "floating-point", "-b", "32"],
        );
        assert_1khz(&decode_file(&f), 1.0, 0.5);
        // 8-bit unsigned PCM at 16 kHz.
        let f = p("u8.wav");
        sox_tone(
            &s(&f),
            true,
            "16000",
            "1",
            &["-b", "8", "-e", "unsigned-integer"],
        );
        assert_1khz(&decode_file(&f), 1.0, 0.5);
        // 48 kHz 32-bit integer, 3 channels.
        let f = p("s32.wav");
        sox_tone(&s(&f), true, "48000", "3", &["-b", "32"]);
        assert_1khz(&decode_file(&f), 1.0, 0.5);
        // μ-law and A-law WAV (format 7 and 6), 8 kHz mono and 16 kHz stereo.
        for (enc, tag) in [("u-law", 7u16), ("a-law", 6u16)] {
            let f = p(&format!("{enc}.wav"));
            sox_tone(&s(&f), true, "8000", "1", &["-e", enc]);
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(le_u16(&bytes, 20), Some(tag), "sox wrote format {tag}");
            assert_1khz(&decode_file(&f), 1.0, 0.5);
            let f = p(&format!("{enc}-16k.wav"));
            sox_tone(&s(&f), true, "16000", "2", &["-e", enc]);
            assert_1khz(&decode_file(&f), 1.0, 0.5);
        }
        // MP3 (libsox-fmt-mp3), 44.1 kHz stereo.
        let f = p("tone.mp3");
        sox_tone(&s(&f), false, "44100", "2", &[]);
        // sox writes no LAME/Xing header, so nothing tells the decoder to trim LAME's
        // 1105-sample delay and the padding to whole 1152-sample frames.
        assert_1khz_within(&decode_file(&f), 1.0, MP3_EXTRA_44K, 0.5, 0.1);
    }

    #[test]
    fn ulaw_wav_at_8k_keeps_bytes() {
        // An 8 kHz μ-law WAV is decoded sample for sample: re-encoding gives the same bytes.
        let t = TempDir::new("ulaw");
        let f = t.0.join("u.wav");
        let fs = f.to_str().unwrap();
        sox(&[
            "-D", "-r", "8000", "-c", "1", "-n", "-e", "u-law", fs, "synth", "0.5", "sine", "440",
        ]);
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
        super::super::codec::alaw_encode((i * 37 % 20000) as i16)
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
        // A 6 kHz tone at 44.1 kHz lies above 4 kHz: it must vanish, not fold to 2 kHz.
        let x: Vec<f32> = (0..44100)
            .map(|i| (i as f64 * 2.0 * std::f64::consts::PI * 6000.0 / 44100.0).sin() as f32 * 0.5)
            .collect();
        let y = resample(&x, 44100, 8000);
        assert_eq!(y.len(), 8000);
        let rms = (y[400..7600]
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / 7200.0)
            .sqrt();
        assert!(rms < 0.5 * 1e-3, "alias rms {rms}");
        // A 3 kHz tone passes at (almost) full level.
        let x: Vec<f32> = (0..44100)
            .map(|i| (i as f64 * 2.0 * std::f64::consts::PI * 3000.0 / 44100.0).sin() as f32 * 0.5)
            .collect();
        let y = resample(&x, 44100, 8000);
        let rms = (y[400..7600]
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / 7200.0)
            .sqrt();
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
        let t = TempDir::new("lib");
        let media = t.0.join("media");
        std::fs::create_dir_all(media.join("sub")).unwrap();
        let ms = |n: &str| media.join(n).to_str().unwrap().to_string();
        sox(&[
            "-D",
            "-r",
            "8000",
            "-c",
            "1",
            "-n",
            "-b",
            "16",
            &ms("welcome.wav"),
            "synth",
            "0.5",
            "sine",
            "1000",
        ]);
        sox(&[
            "-D",
            "-r",
            "8000",
            "-c",
            "1",
            "-n",
            "-b",
            "16",
            &ms("sub/x.wav"),
            "synth",
            "0.25",
            "sine",
            "1000",
        ]);
        sox(&[
            "-r",
            "8000",
            "-c",
            "1",
            "-n",
            &ms("m.mp3"),
            "synth",
            "0.5",
            "sine",
            "1000",
        ]);
        std::fs::write(
            t.0.join("secret.wav"),
            std::fs::read(media.join("welcome.wav")).unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink(t.0.join("secret.wav"), media.join("escape.wav")).unwrap();
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

        let missing = PromptLibrary::new(Some(t.0.join("nope")));
        assert!(matches!(missing.check_dir(), Err(PromptError::Io { .. })));
        assert!(missing.get("welcome").is_ok());
        let file_as_dir = PromptLibrary::new(Some(t.0.join("secret.wav")));
        assert!(file_as_dir.check_dir().is_err());
    }

    /// Found by `fuzz/` (media_file): a 927-byte WAVE_FORMAT_EXTENSIBLE file whose data chunk
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
            le_u32(crash, 0x4c),
            Some(0xFF00_01E0),
            "declared data length"
        );
        assert!(Prompt::decode("oom", crash).is_err());
        assert_eq!(sample_capacity(u32::MAX, crash.len()), crash.len());
        assert_eq!(sample_capacity(100, crash.len()), 100);
    }

    #[test]
    fn decode_never_panics() {
        use rand::{Rng, SeedableRng};
        let t = TempDir::new("fuzz");
        let mp3 = t.0.join("f.mp3");
        sox(&[
            "-r",
            "8000",
            "-c",
            "1",
            "-n",
            mp3.to_str().unwrap(),
            "synth",
            "0.2",
            "sine",
            "1000",
        ]);
        let wav = t.0.join("f.wav");
        sox(&[
            "-r",
            "11025",
            "-c",
            "2",
            "-n",
            "-b",
            "24",
            wav.to_str().unwrap(),
            "synth",
            "0.1",
            "sine",
            "1000",
        ]);
        let ul = t.0.join("u.wav");
        sox(&[
            "-r",
            "8000",
            "-c",
            "1",
            "-n",
            "-e",
            "u-law",
            ul.to_str().unwrap(),
            "synth",
            "0.1",
            "sine",
            "1000",
        ]);
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
}
