//! MP3 decoding through symphonia, panics in it caught as errors. Apart from WAV because it
//! goes through a third-party demuxer with its own errors.

use std::io::Cursor;

use symphonia::core::errors::Error as SymphoniaError;

use super::{check_format, downmix, Prompt, PromptError, MAX_SECONDS};

/// Why an MP3 stream gave no audio (wrapped in [`PromptError::Decode`] with the prompt's name).
#[derive(Debug, thiserror::Error)]
enum Mp3Error {
    #[error(transparent)]
    Symphonia(#[from] SymphoniaError),
    #[error("no audio track")]
    NoTrack,
    #[error("sample rate changes mid-stream")]
    RateChange,
    #[error("too many channels")]
    TooManyChannels,
    #[error("longer than {MAX_SECONDS} s")]
    TooLong,
    #[error("no decodable MP3 frames")]
    NoFrames,
}

pub(super) fn looks_like_mp3(bytes: &[u8]) -> bool {
    match bytes {
        [b'I', b'D', b'3', ..] => true,
        // MPEG audio frame sync: 11 set bits; layer bits not 00.
        [0xFF, b, ..] => b & 0xE0 == 0xE0 && b & 0x06 != 0,
        _ => false,
    }
}

pub(super) fn decode_mp3(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
    let owned = bytes.to_vec();
    // symphonia is third-party code on untrusted bytes: a panic in it becomes an error.
    let decoded = std::panic::catch_unwind(move || symphonia_decode(owned))
        .map_err(|_| PromptError::Decode(format!("{name}: MP3 decoder failed")))?;
    let (mono, rate) = decoded.map_err(|e| PromptError::Decode(format!("{name}: {e}")))?;
    check_format(rate, 1)?;
    Ok(Prompt::from_mono_f32(name, &mono, rate))
}

fn symphonia_decode(bytes: Vec<u8>) -> Result<(Vec<f32>, u32), Mp3Error> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
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
    let probed = symphonia::default::get_probe().format(
        &hint,
        mss,
        &fmt_opts,
        &MetadataOptions::default(),
    )?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or(Mp3Error::NoTrack)?;
    let track_id = track.id;
    let mut decoder =
        symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default())?;
    let mut mono: Vec<f32> = Vec::new();
    let mut rate: Option<u32> = None;
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(_)) | Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(e.into()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged frame is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if channels == 0 || spec.rate == 0 {
            continue;
        }
        match rate {
            None => rate = Some(spec.rate),
            Some(r) if r != spec.rate => return Err(Mp3Error::RateChange),
            Some(_) => {}
        }
        let need = decoded.capacity() as u64;
        let sb = match &mut buf {
            Some(b) if b.capacity() as u64 >= need * channels as u64 => b,
            _ => buf.insert(SampleBuffer::<f32>::new(need, spec)),
        };
        sb.copy_interleaved_ref(decoded);
        let ch = u16::try_from(channels).map_err(|_| Mp3Error::TooManyChannels)?;
        mono.extend(downmix(sb.samples().iter().copied(), ch));
        if mono.len() as u64 > MAX_SECONDS * u64::from(spec.rate) {
            return Err(Mp3Error::TooLong);
        }
    }
    let rate = rate.ok_or(Mp3Error::NoFrames)?;
    Ok((mono, rate))
}
