//! The TTS hook (spec c.3, h, j.12): an operator-configured command (espeak-ng by default)
//! writes a WAV, which is decoded once into a [`Prompt`] and cached by (text, voice, language).
//!
//! Safety of the hook: the command runs without a shell; the text reaches it only as an
//! argument placed after a `--` argument (end of options) or on standard input, never where
//! it could be read as an option; voice and language values are plain tokens. The process
//! is bounded in time (killed with its process group on timeout), its output file lives in
//! a private (0700) temp dir and is removed after use.
//!
//! Cache: one synthesis per key even under concurrent requests (later requests wait for
//! the running one and share its result, error included); bounded by the bytes of audio
//! held, least recently used evicted first; errors are not kept.
//!
//! This file holds the engine (its API and one synthesis from command to prompt); the
//! command's checks and the process runner are in `hook.rs`, the single-flight cache in
//! `cache.rs`, and the checks of what callers pass (text, voice, language) in `text.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::prompt::Prompt;

mod cache;
mod hook;
#[cfg(test)]
mod tests;
mod text;

use cache::{Cache, Key};
use hook::{command_plan, run, substitute, TextVia};
use text::{check_language, check_text, configured_voice, engine_voice};

/// Language given to a `{language}` placeholder when the caller has none (spec h: system
/// `speech.tts_language`).
pub const DEFAULT_LANGUAGE: &str = "en-us";
/// Kazoo voice used when the caller passes an empty voice (spec j.12).
pub const DEFAULT_VOICE: &str = "female";
/// Largest WAV the hook may write (about 30 min of 22.05 kHz 16-bit mono).
const MAX_OUTPUT_BYTES: u64 = 80 * 1024 * 1024;

/// Bounds of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtsLimits {
    /// Longest a synthesis may run before the process is killed. Default 10 s.
    pub timeout: Duration,
    /// Audio bytes the cache may hold (PCM plus both G.711 encodings). Default 64 MiB.
    pub cache_bytes: usize,
    /// Longest text in characters for [`TtsEngine::speak`] (callflow `tts`: 1000, spec c.3).
    /// TwiML `<Say>` (4000) passes its own through [`TtsEngine::speak_max`].
    pub max_text_chars: usize,
}

impl Default for TtsLimits {
    fn default() -> TtsLimits {
        TtsLimits {
            timeout: Duration::from_secs(10),
            cache_bytes: 64 * 1024 * 1024,
            max_text_chars: 1000,
        }
    }
}

/// Why no speech was had. Messages go into logs; the flow then takes its `_` child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtsError {
    /// `[tts] command` cannot be used safely or at all.
    #[error("tts command refused: {0}")]
    BadCommand(String),
    /// The text is empty, holds a NUL or is otherwise unusable.
    #[error("tts text refused: {0}")]
    BadText(String),
    /// The text is longer than the limit of the caller.
    #[error("tts text too long: {chars} characters, at most {max}")]
    TextTooLong { chars: usize, max: usize },
    /// The voice is neither in `[tts] voices` nor a plain engine voice token.
    #[error("tts voice refused: {0:?} (not in [tts] voices and not a plain token)")]
    BadVoice(String),
    /// The language is not a plain token.
    #[error("tts language refused: {0:?}")]
    BadLanguage(String),
    /// The program does not exist.
    #[error("tts program not found: {program}")]
    NotFound { program: String },
    /// The program exists but could not be started (permissions, resources).
    #[error("cannot start tts program {program}: {reason}")]
    Spawn { program: String, reason: String },
    /// The hook ran longer than the limit and was killed.
    #[error("tts command timed out after {}ms and was killed", .after.as_millis())]
    Timeout { after: Duration },
    /// The hook exited unsuccessfully.
    #[error("tts command failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    /// The hook succeeded but its output is missing, too big or not decodable audio.
    #[error("tts output unusable: {0}")]
    BadOutput(String),
    /// Local trouble (temp dir, pipes).
    #[error("tts i/o error: {0}")]
    Io(String),
}

/// The text-to-speech engine shared by all calls (cheap to clone).
#[derive(Clone)]
pub struct TtsEngine {
    inner: Arc<Inner>,
}

struct Inner {
    command: Vec<String>,
    /// The checked command plan, or why the command is refused.
    plan: Result<TextVia, TtsError>,
    voices: BTreeMap<String, String>,
    limits: TtsLimits,
    cache: Mutex<Cache>,
    /// Private temp dir, made on first use.
    tmp: Mutex<Option<PathBuf>>,
    /// Commands started (for metrics and tests).
    runs: AtomicU64,
    /// Names the output files uniquely within the private dir.
    seq: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(dir) = lock(&self.tmp).take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl fmt::Debug for TtsEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtsEngine")
            .field("command", &self.inner.command)
            .field("voices", &self.inner.voices)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take TTS down with it: the data stays consistent because
    // every critical section is short and completes its updates.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TtsEngine {
    /// An engine for `command` (`[tts] command`) and `voices` (`[tts] voices`). A command
    /// that cannot be used safely is reported by [`TtsEngine::check`] and by every `speak`.
    pub fn new(
        command: Vec<String>,
        voices: BTreeMap<String, String>,
        limits: TtsLimits,
    ) -> TtsEngine {
        let plan = command_plan(&command);
        TtsEngine {
            inner: Arc::new(Inner {
                command,
                plan,
                voices,
                limits,
                cache: Mutex::new(Cache::default()),
                tmp: Mutex::new(None),
                runs: AtomicU64::new(0),
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// Checks a `[tts] command` without running it (for check-config): a program without
    /// placeholders, an `{out}` argument, and `{text}` only in arguments after a `--`
    /// argument (or nowhere: the text then goes on standard input).
    pub fn check_command(command: &[String]) -> Result<(), TtsError> {
        command_plan(command).map(|_| ())
    }

    /// Whether this engine's command is usable (same rules as [`TtsEngine::check_command`]).
    pub fn check(&self) -> Result<(), TtsError> {
        self.inner.plan.clone().map(|_| ())
    }

    /// The limits given at construction.
    pub fn limits(&self) -> TtsLimits {
        self.inner.limits
    }

    /// How many times the command has been started (cache misses that got to run it).
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(Ordering::Relaxed)
    }

    /// Audio bytes held by the cache now.
    pub fn cached_bytes(&self) -> usize {
        lock(&self.inner.cache).bytes
    }

    /// Whether `voice` is named in `[tts] voices` (as [`TtsEngine::speak`] looks it up).
    pub fn has_voice(&self, voice: &str) -> bool {
        configured_voice(&self.inner.voices, voice).is_some()
    }

    /// Speech for `text` in the Kazoo `voice` (`female`, `male`, or an engine voice token;
    /// empty = `female`, spec j.12) and `language`, at most `limits.max_text_chars` long.
    /// Synthesised once per (text, voice, language) while cached.
    pub async fn speak(
        &self,
        text: &str,
        voice: &str,
        language: Option<&str>,
    ) -> Result<Arc<Prompt>, TtsError> {
        self.speak_max(text, voice, language, self.inner.limits.max_text_chars)
            .await
    }

    /// As [`TtsEngine::speak`] with the caller's own text limit (TwiML `<Say>`: 4000,
    /// spec d, `pivot.tts_texts_size`; truncating to it is the caller's choice).
    pub async fn speak_max(
        &self,
        text: &str,
        voice: &str,
        language: Option<&str>,
        max_text_chars: usize,
    ) -> Result<Arc<Prompt>, TtsError> {
        self.inner.plan.clone()?;
        check_text(text, max_text_chars)?;
        let voice = engine_voice(&self.inner.voices, voice)?;
        check_language(language)?;
        let key = Key {
            text: text.to_string(),
            voice,
            language: language.map(str::to_string),
        };
        cache::get_or_synthesize(&self.inner, key).await
    }
}

impl Inner {
    /// Runs the hook once and decodes its WAV.
    async fn synthesize(&self, key: &Key) -> Result<Arc<Prompt>, TtsError> {
        let via = self.plan.clone()?;
        let dir = self.private_dir()?;
        let out = dir.join(format!(
            "tts-{}-{:016x}.wav",
            self.seq.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        ));
        let _cleanup = RemoveOnDrop(&out);
        let out_str = out
            .to_str()
            .ok_or_else(|| TtsError::Io(format!("temp path not UTF-8: {}", out.display())))?;
        let language = key.language.as_deref().unwrap_or(DEFAULT_LANGUAGE);
        let args: Vec<String> = self
            .command
            .iter()
            .map(|a| substitute(a, &key.voice, out_str, &key.text, language))
            .collect();
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| TtsError::BadCommand("empty command".into()))?;
        let stdin = match via {
            TextVia::Argument => None,
            TextVia::Stdin => Some(format!("{}\n", key.text)),
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        run(program, rest, stdin, self.limits.timeout).await?;

        let len = tokio::fs::metadata(&out)
            .await
            .map_err(|e| TtsError::BadOutput(format!("no output file written: {e}")))?
            .len();
        if len > MAX_OUTPUT_BYTES {
            return Err(TtsError::BadOutput(format!(
                "output of {len} bytes is over {MAX_OUTPUT_BYTES}"
            )));
        }
        let bytes = tokio::fs::read(&out)
            .await
            .map_err(|e| TtsError::BadOutput(format!("cannot read output: {e}")))?;
        let name = format!("tts:{}", key.voice);
        // Resampling and encoding are CPU work: keep them off the reactor threads.
        let prompt = tokio::task::spawn_blocking(move || Prompt::decode(&name, &bytes))
            .await
            .map_err(|e| TtsError::Io(format!("decoder task: {e}")))?
            .map_err(|e| TtsError::BadOutput(e.to_string()))?;
        Ok(Arc::new(prompt))
    }

    /// The engine's private temp dir (0700, made with `create_dir` so an existing path,
    /// symlink included, is never reused).
    fn private_dir(&self) -> Result<PathBuf, TtsError> {
        let mut slot = lock(&self.tmp);
        if let Some(dir) = slot.as_ref() {
            if dir.is_dir() {
                return Ok(dir.clone());
            }
        }
        let mut last = None;
        for _ in 0..8 {
            let dir = std::env::temp_dir().join(format!(
                "pivotd-tts-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            match builder.create(&dir) {
                Ok(()) => {
                    *slot = Some(dir.clone());
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(TtsError::Io(format!(
                        "cannot create temp dir {}: {e}",
                        dir.display()
                    )))
                }
            }
        }
        Err(TtsError::Io(format!(
            "cannot create a fresh temp dir: {}",
            last.map_or_else(String::new, |e| e.to_string())
        )))
    }
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}
