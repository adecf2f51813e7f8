//! `--record`: what we hear from the answer to the end, decoded to 8 kHz 16-bit mono WAV.
//! Each packet is placed by its RTP timestamp, so the time the server sent nothing (between
//! prompts: pivotd's timestamps run on over silence) is silence in the file, as it was heard.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::DialerError;

/// Samples per second (G.711).
const RATE: u32 = 8000;
/// The longest gap filled with silence (a timestamp jump beyond it is a new stream, not a
/// pause): 10 s.
const MAX_GAP: u32 = 10 * RATE;

/// The WAV being written.
pub struct Recording {
    path: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
    answered: Instant,
    /// The SSRC and the timestamp the next packet of that stream should carry.
    next: Option<(u32, u32)>,
}

impl Recording {
    /// Creates the file; the recording starts at `answered`.
    pub fn create(path: &Path, answered: Instant) -> Result<Recording, DialerError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer =
            hound::WavWriter::create(path, spec).map_err(|source| DialerError::Record {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Recording {
            path: path.to_path_buf(),
            writer,
            answered,
            next: None,
        })
    }

    /// One packet's decoded samples, sent with RTP timestamp `ts` in stream `ssrc`, arrived
    /// at `at`.
    pub fn push(
        &mut self,
        ssrc: u32,
        ts: u32,
        pcm: &[i16],
        at: Instant,
    ) -> Result<(), DialerError> {
        let gap = match self.next {
            // The first packet: silence from the answer until it came.
            None => {
                let since = at.saturating_duration_since(self.answered);
                let samples = since.as_millis() * u128::from(RATE) / 1000;
                u32::try_from(samples).unwrap_or(u32::MAX).min(MAX_GAP)
            }
            Some((s, next)) if s == ssrc => {
                let ahead = ts.wrapping_sub(next);
                if ahead > u32::MAX / 2 {
                    // Older than what was written (late or repeated): dropped.
                    return Ok(());
                }
                if ahead > MAX_GAP {
                    0
                } else {
                    ahead
                }
            }
            // A new stream: carries on where the last one ended.
            Some(_) => 0,
        };
        let n = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
        self.next = Some((ssrc, ts.wrapping_add(n)));
        for _ in 0..gap {
            self.write(0)?;
        }
        for s in pcm {
            self.write(*s)?;
        }
        Ok(())
    }

    fn write(&mut self, sample: i16) -> Result<(), DialerError> {
        self.writer
            .write_sample(sample)
            .map_err(|source| DialerError::Record {
                path: self.path.clone(),
                source,
            })
    }

    /// Completes the WAV header.
    pub fn finish(self) -> Result<(), DialerError> {
        let path = self.path;
        self.writer
            .finalize()
            .map_err(|source| DialerError::Record { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn read(path: &Path) -> Vec<i16> {
        hound::WavReader::open(path)
            .unwrap()
            .into_samples::<i16>()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn packets_are_placed_by_timestamp_with_the_pauses_as_silence() {
        let path = std::env::temp_dir().join(format!("dialer-rec-{}.wav", rand::random::<u64>()));
        let t0 = Instant::now();
        let mut r = Recording::create(&path, t0).unwrap();
        let a = [100i16; 160];
        let b = [-200i16; 160];
        // Arrived 10 ms after the answer: 80 samples of silence first.
        r.push(7, 1000, &a, t0 + Duration::from_millis(10)).unwrap();
        // A late repeat of the first packet is dropped.
        r.push(7, 1000, &a, t0 + Duration::from_millis(30)).unwrap();
        // 40 ms of nothing sent, then the next packet: 320 samples of silence.
        r.push(7, 1160 + 320, &b, t0 + Duration::from_millis(70))
            .unwrap();
        // A new stream (another SSRC) carries on at once.
        r.push(9, 5, &a, t0 + Duration::from_millis(90)).unwrap();
        r.finish().unwrap();
        let s = read(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(s.len(), 80 + 160 + 320 + 160 + 160);
        assert!(s[..80].iter().all(|x| *x == 0));
        assert!(s[80..240].iter().all(|x| *x == 100));
        assert!(s[240..560].iter().all(|x| *x == 0));
        assert!(s[560..720].iter().all(|x| *x == -200));
        assert!(s[720..].iter().all(|x| *x == 100));
    }
}
