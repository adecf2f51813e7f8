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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

use super::prompt::Prompt;

/// Language given to a `{language}` placeholder when the caller has none (spec h: system
/// `speech.tts_language`).
pub const DEFAULT_LANGUAGE: &str = "en-us";
/// Kazoo voice used when the caller passes an empty voice (spec j.12).
pub const DEFAULT_VOICE: &str = "female";
/// Largest WAV the hook may write (about 30 min of 22.05 kHz 16-bit mono).
const MAX_OUTPUT_BYTES: u64 = 80 * 1024 * 1024;
/// Bytes of the hook's stderr kept for the error message (the end of it).
const STDERR_TAIL: usize = 512;
/// Longest voice or language token accepted from a caller.
const MAX_TOKEN: usize = 64;
/// After the hook exits, how long its stderr may stay open (held by a leftover child).
const STDERR_GRACE: Duration = Duration::from_millis(200);

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

/// Where the text goes in the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextVia {
    /// `{text}` appears only in arguments after a `--` argument.
    Argument,
    /// No `{text}` placeholder: the text is written on standard input.
    Stdin,
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

/// Cache key: text, engine voice (after mapping), language as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    text: String,
    voice: String,
    language: Option<String>,
}

type Outcome = Option<Result<Arc<Prompt>, TtsError>>;

enum Slot {
    Ready {
        prompt: Arc<Prompt>,
        cost: usize,
        used: u64,
    },
    /// A synthesis is running; its result is published here (None until done).
    Pending(watch::Receiver<Outcome>),
}

#[derive(Default)]
struct Cache {
    slots: HashMap<Key, Slot>,
    bytes: usize,
    clock: u64,
}

impl Cache {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Stores a finished prompt, evicting the least recently used until it fits; a prompt
    /// bigger than the whole cache is not kept.
    fn insert(&mut self, key: Key, prompt: Arc<Prompt>, limit: usize) {
        self.slots.remove(&key);
        let cost = cost(&key, &prompt);
        if cost > limit {
            return;
        }
        while self.bytes + cost > limit {
            let oldest = self
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready { used, .. } => Some((*used, k)),
                    Slot::Pending(_) => None,
                })
                .min_by_key(|(used, _)| *used)
                .map(|(_, k)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(Slot::Ready { cost, .. }) = self.slots.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(cost);
            }
        }
        let used = self.tick();
        self.bytes += cost;
        self.slots.insert(key, Slot::Ready { prompt, cost, used });
    }
}

/// Bytes a cached prompt holds: its samples in the three forms, and the key.
fn cost(key: &Key, p: &Prompt) -> usize {
    p.pcm.len() * 2
        + p.pcmu.len()
        + p.pcma.len()
        + key.text.len()
        + key.voice.len()
        + key.language.as_ref().map_or(0, String::len)
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
        let voice = self.engine_voice(voice)?;
        if let Some(lang) = language {
            if !is_token(lang) {
                return Err(TtsError::BadLanguage(lang.to_string()));
            }
        }
        let key = Key {
            text: text.to_string(),
            voice,
            language: language.map(str::to_string),
        };
        let mut rx = {
            let mut cache = lock(&self.inner.cache);
            let tick = cache.tick();
            match cache.slots.get_mut(&key) {
                Some(Slot::Ready { prompt, used, .. }) => {
                    *used = tick;
                    return Ok(prompt.clone());
                }
                Some(Slot::Pending(rx)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    cache.slots.insert(key.clone(), Slot::Pending(rx.clone()));
                    // The synthesis runs in its own task so that a caller giving up
                    // (hang-up) neither kills it for the others nor leaves them waiting.
                    // The guard is made before the spawn so that a task dropped unpolled
                    // (runtime shutting down) still clears the slot.
                    let mut flight = Flight {
                        inner: self.inner.clone(),
                        key: key.clone(),
                        tx,
                        done: false,
                    };
                    tokio::spawn(async move {
                        let result = flight.inner.synthesize(&flight.key).await;
                        flight.finish(result);
                    });
                    rx
                }
            }
        };
        // Ref holds the channel's read lock: clone out of it at once.
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        // None: the synthesis task vanished without a result (runtime shutting down);
        // its guard cleared the slot. Retrying could spin, so say so instead.
        outcome.unwrap_or_else(|| Err(TtsError::Io("synthesis task ended without a result".into())))
    }

    /// Maps a Kazoo voice name to the engine's voice.
    fn engine_voice(&self, voice: &str) -> Result<String, TtsError> {
        let voice = if voice.is_empty() {
            DEFAULT_VOICE
        } else {
            voice
        };
        let voices = &self.inner.voices;
        if let Some(v) = voices
            .get(voice)
            .or_else(|| voices.get(&voice.to_ascii_lowercase()))
        {
            return Ok(v.clone());
        }
        if is_token(voice) {
            Ok(voice.to_string())
        } else {
            Err(TtsError::BadVoice(voice.to_string()))
        }
    }
}

/// The running synthesis of one key: publishes the result and settles the cache slot, also
/// when the task is dropped before finishing.
struct Flight {
    inner: Arc<Inner>,
    key: Key,
    tx: watch::Sender<Outcome>,
    done: bool,
}

impl Flight {
    fn finish(&mut self, result: Result<Arc<Prompt>, TtsError>) {
        {
            let mut cache = lock(&self.inner.cache);
            match &result {
                Ok(prompt) => cache.insert(
                    self.key.clone(),
                    prompt.clone(),
                    self.inner.limits.cache_bytes,
                ),
                Err(_) => {
                    cache.slots.remove(&self.key);
                }
            }
        }
        self.done = true;
        // Waiters get the result, error included, so a failing hook runs once for them all.
        self.tx.send_replace(Some(result));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.done {
            let mut cache = lock(&self.inner.cache);
            if matches!(cache.slots.get(&self.key), Some(Slot::Pending(_))) {
                cache.slots.remove(&self.key);
            }
        }
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

/// Spawns the hook (no shell), feeds stdin, and waits within `timeout`; on timeout the
/// whole process group is killed so helpers it started do not linger.
async fn run(
    program: &str,
    args: &[String],
    stdin: Option<String>,
    timeout: Duration,
) -> Result<(), TtsError> {
    let deadline = Instant::now() + timeout;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TtsError::NotFound {
            program: program.to_string(),
        },
        _ => TtsError::Spawn {
            program: program.to_string(),
            reason: e.to_string(),
        },
    })?;
    let pid = child.id();

    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A hook that exits without reading its input is its own business (EPIPE ignored).
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let stderr_task = child.stderr.take().map(|mut pipe| {
        tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(buf.get(..n).unwrap_or_default());
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        })
    });

    let status: ExitStatus = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(TtsError::Io(format!("waiting for {program}: {e}"))),
        Err(_) => {
            // Not yet reaped, so the group id cannot have been reused.
            kill_group(pid);
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(t) = stderr_task {
                t.abort();
            }
            return Err(TtsError::Timeout { after: timeout });
        }
    };

    let stderr = match stderr_task {
        Some(task) => {
            let mut task = task;
            match tokio::time::timeout(STDERR_GRACE, &mut task).await {
                Ok(Ok(tail)) => tail,
                Ok(Err(_)) => Vec::new(),
                Err(_) => {
                    // A leftover child of the hook still holds stderr: the group is alive
                    // (so its id is still its own); end it.
                    kill_group(pid);
                    task.abort();
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };

    if status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&stderr);
        Err(TtsError::Failed {
            status: status.to_string(),
            stderr: text.trim().to_string(),
        })
    }
}

#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        if pid > 1 {
            // SAFETY: kill(2) has no memory effects; a negative pid names the process group
            // the hook leads (made by `process_group(0)` at spawn).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>) {}

/// Validates the command and says where the text goes.
fn command_plan(command: &[String]) -> Result<TextVia, TtsError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| TtsError::BadCommand("empty command".into()))?;
    if program.is_empty() {
        return Err(TtsError::BadCommand("empty program name".into()));
    }
    if PLACEHOLDERS.iter().any(|p| program.contains(p)) {
        return Err(TtsError::BadCommand(format!(
            "the program name {program:?} must not hold a placeholder"
        )));
    }
    if !args.iter().any(|a| a.contains("{out}")) {
        return Err(TtsError::BadCommand(
            "no {out} argument: the command must write its WAV to {out}".into(),
        ));
    }
    let end_of_options = args.iter().position(|a| a == "--");
    let mut via = TextVia::Stdin;
    for (i, arg) in args.iter().enumerate() {
        if arg.contains("{text}") {
            match end_of_options {
                Some(eoo) if i > eoo => via = TextVia::Argument,
                _ => {
                    return Err(TtsError::BadCommand(format!(
                        "{{text}} in argument {arg:?} is not after a \"--\" argument, so \
                         a text starting with '-' would be read as an option"
                    )))
                }
            }
        }
    }
    Ok(via)
}

const PLACEHOLDERS: [&str; 4] = ["{voice}", "{out}", "{text}", "{language}"];

/// Replaces the placeholders in one pass (a text holding "{out}" stays as it is).
fn substitute(arg: &str, voice: &str, out: &str, text: &str, language: &str) -> String {
    let mut result = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let (before, from) = rest.split_at(start);
        result.push_str(before);
        let replacement = [
            ("{voice}", voice),
            ("{out}", out),
            ("{text}", text),
            ("{language}", language),
        ]
        .into_iter()
        .find(|(p, _)| from.starts_with(p));
        match replacement {
            Some((p, value)) => {
                result.push_str(value);
                rest = from.get(p.len()..).unwrap_or_default();
            }
            None => {
                result.push('{');
                rest = from.get(1..).unwrap_or_default();
            }
        }
    }
    result.push_str(rest);
    result
}

fn check_text(text: &str, max: usize) -> Result<(), TtsError> {
    if text.contains('\0') {
        return Err(TtsError::BadText("contains a NUL character".into()));
    }
    if text.trim().is_empty() {
        return Err(TtsError::BadText("empty".into()));
    }
    let chars = text.chars().count();
    if chars > max {
        return Err(TtsError::TextTooLong { chars, max });
    }
    Ok(())
}

/// A plain engine voice / language token: `[A-Za-z0-9_+.-]`, not starting with '-'.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    const TONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/media/tone-1khz.wav");

    /// A unique temp dir removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "pivotd-tts-test-{tag}-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.file(name)).unwrap_or_default()
        }
        /// Writes a shell script; `@DIR@` and `@TONE@` are replaced. Run as `/bin/sh
        /// script` (not exec'd itself: a freshly written executable can hit ETXTBSY when
        /// tests fork in parallel).
        fn script(&self, name: &str, body: &str) -> String {
            let path = self.file(name);
            let body = body
                .replace("@DIR@", self.0.to_str().unwrap())
                .replace("@TONE@", TONE);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            path.to_str().unwrap().to_string()
        }
        /// Lines of the invocation counter file.
        fn runs(&self) -> usize {
            self.read("count").lines().count()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn espeak_voices() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("female".to_string(), "en+f3".to_string()),
            ("male".to_string(), "en+m3".to_string()),
        ])
    }

    fn default_command() -> Vec<String> {
        ["espeak-ng", "-v", "{voice}", "-w", "{out}", "--", "{text}"]
            .map(String::from)
            .to_vec()
    }

    /// A fake hook: counts its runs, records its argv (one per line), optionally sleeps,
    /// then copies the 2 s 1 kHz tone to the `-w` path.
    fn fake_engine(dir: &TempDir, sleep: &str, limits: TtsLimits) -> TtsEngine {
        let script = dir.script(
            "fake.sh",
            &format!(
                "echo run >> @DIR@/count\n\
                 for a in \"$@\"; do printf '%s\\n' \"$a\"; done > @DIR@/argv\n\
                 {sleep}\n\
                 cp @TONE@ \"$4\""
            ),
        );
        let command = [
            "/bin/sh", &script, "-v", "{voice}", "-w", "{out}", "--", "{text}",
        ]
        .map(String::from)
        .to_vec();
        TtsEngine::new(command, espeak_voices(), limits)
    }

    fn rms(pcm: &[i16]) -> f64 {
        let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / pcm.len().max(1) as f64).sqrt()
    }

    fn sh_command(script: &str) -> Vec<String> {
        ["/bin/sh", script, "-w", "{out}", "--", "{text}"]
            .map(String::from)
            .to_vec()
    }

    #[tokio::test]
    async fn espeak_speaks_hello_world() {
        let engine = TtsEngine::new(default_command(), espeak_voices(), TtsLimits::default());
        let prompt = engine
            .speak("Hello world", "female", None)
            .await
            .expect("espeak-ng is required for this test (apt-get install espeak-ng)");
        let d = prompt.duration();
        assert!(
            d >= Duration::from_millis(500) && d <= Duration::from_secs(3),
            "{d:?}"
        );
        assert!(rms(&prompt.pcm) > 500.0, "rms {}", rms(&prompt.pcm));
        assert_eq!(prompt.pcmu.len(), prompt.pcm.len());
        assert_eq!(prompt.pcma.len(), prompt.pcm.len());
        assert_eq!(engine.runs(), 1);
    }

    #[tokio::test]
    async fn espeak_speaks_text_that_looks_like_options() {
        // Were the text read as options, espeak-ng would print its help and write no WAV.
        let engine = TtsEngine::new(default_command(), espeak_voices(), TtsLimits::default());
        let prompt = engine
            .speak("-v xx --help", "male", Some("en-us"))
            .await
            .expect("espeak-ng is required for this test");
        assert!(prompt.duration() >= Duration::from_millis(500));
        assert!(rms(&prompt.pcm) > 500.0);
    }

    #[tokio::test]
    async fn same_text_twice_is_synthesised_once() {
        let dir = TempDir::new("twice");
        let engine = fake_engine(&dir, "", TtsLimits::default());
        let a = engine.speak("Hello again", "female", None).await.unwrap();
        let b = engine.speak("Hello again", "female", None).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(dir.runs(), 1);
        assert_eq!(engine.runs(), 1);
        // The tone is 2 s at 8 kHz.
        assert_eq!(a.pcm.len(), 16_000);
        // Another voice or language is another sentence.
        let c = engine.speak("Hello again", "male", None).await.unwrap();
        let d = engine
            .speak("Hello again", "female", Some("en-gb"))
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &c) && !Arc::ptr_eq(&a, &d));
        assert_eq!(dir.runs(), 3);
        // The mapped voice is the key: "female" and "en+f3" are the same sentence.
        let e = engine.speak("Hello again", "en+f3", None).await.unwrap();
        assert!(Arc::ptr_eq(&a, &e));
        assert_eq!(dir.runs(), 3);
    }

    #[tokio::test]
    async fn text_comes_after_double_dash_and_files_are_removed() {
        let dir = TempDir::new("argv");
        let engine = fake_engine(&dir, "", TtsLimits::default());
        engine.speak("-v xx --help", "female", None).await.unwrap();
        let argv = dir.read("argv");
        let argv: Vec<&str> = argv.lines().collect();
        assert_eq!(argv.len(), 6, "{argv:?}");
        assert_eq!(argv[0..2], ["-v", "en+f3"]);
        assert_eq!(argv[2], "-w");
        assert_eq!(argv[4..6], ["--", "-v xx --help"]);
        // The WAV path is in the private dir and gone after use.
        let out = Path::new(argv[3]);
        assert!(!out.exists(), "{out:?} left behind");
        let private = out.parent().unwrap();
        assert!(private.is_dir());
        assert_eq!(std::fs::read_dir(private).unwrap().count(), 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        drop(engine);
        assert!(!private.exists(), "private dir not removed with the engine");
    }

    #[tokio::test]
    async fn text_without_placeholder_goes_on_stdin() {
        let dir = TempDir::new("stdin");
        let script = dir.script("stdin.sh", "cat > @DIR@/stdin\ncp @TONE@ \"$2\"");
        let command = ["/bin/sh", &script, "-w", "{out}"]
            .map(String::from)
            .to_vec();
        let engine = TtsEngine::new(command, espeak_voices(), TtsLimits::default());
        engine.speak("--help me", "female", None).await.unwrap();
        assert_eq!(dir.read("stdin"), "--help me\n");
    }

    #[tokio::test]
    async fn unsafe_commands_are_refused() {
        let refused = [
            vec!["espeak-ng", "-w", "{out}", "{text}"],
            vec!["espeak-ng", "-w", "{out}", "{text}", "--"],
            vec!["espeak-ng", "--text={text}", "-w", "{out}", "--"],
            vec!["espeak-ng", "-v", "{voice}", "--", "{text}"],
            vec!["{text}", "-w", "{out}"],
            vec![],
            vec!["", "-w", "{out}"],
        ];
        for cmd in refused {
            let cmd: Vec<String> = cmd.into_iter().map(String::from).collect();
            assert!(
                matches!(TtsEngine::check_command(&cmd), Err(TtsError::BadCommand(_))),
                "{cmd:?} accepted"
            );
            let engine = TtsEngine::new(cmd.clone(), espeak_voices(), TtsLimits::default());
            assert!(engine.check().is_err());
            let err = engine.speak("hi", "female", None).await.unwrap_err();
            assert!(matches!(err, TtsError::BadCommand(_)), "{cmd:?}: {err}");
        }
        assert_eq!(TtsEngine::check_command(&default_command()), Ok(()));
        let stdin = ["espeak-ng", "-w", "{out}"].map(String::from);
        assert_eq!(TtsEngine::check_command(&stdin), Ok(()));
    }

    #[tokio::test]
    async fn timeout_kills_the_hook_and_its_children() {
        let dir = TempDir::new("timeout");
        // The sleep is a child of the shell, not exec'd: the whole group must go.
        let script = dir.script(
            "slow.sh",
            "sleep 5 &\necho $! > @DIR@/child\necho $$ > @DIR@/pid\nwait",
        );
        let limits = TtsLimits {
            timeout: Duration::from_millis(300),
            ..TtsLimits::default()
        };
        let engine = TtsEngine::new(sh_command(&script), espeak_voices(), limits);
        let started = StdInstant::now();
        let err = engine.speak("slow", "female", None).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err,
            TtsError::Timeout {
                after: Duration::from_millis(300)
            }
        );
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(err.to_string().contains("300ms"), "{err}");
        for f in ["pid", "child"] {
            let pid: u32 = dir.read(f).trim().parse().expect("script wrote its pids");
            assert!(gone(pid).await, "{f} {pid} still running");
        }
    }

    /// Whether a process has ended (absent, or a zombie waiting for a reaper).
    async fn gone(pid: u32) -> bool {
        for _ in 0..50 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) => {
                    // State is the field after the parenthesised command name.
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                    if state.starts_with('Z') || state.starts_with('X') {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn failing_hook_reports_status_and_stderr_and_is_not_cached() {
        let dir = TempDir::new("fail");
        let script = dir.script(
            "fail.sh",
            "echo run >> @DIR@/count\necho 'no such voice: xx' >&2\nexit 1",
        );
        let engine = TtsEngine::new(sh_command(&script), espeak_voices(), TtsLimits::default());
        let err = engine.speak("hi", "female", None).await.unwrap_err();
        match &err {
            TtsError::Failed { status, stderr } => {
                assert!(status.contains('1'), "{status}");
                assert_eq!(stderr, "no such voice: xx");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("no such voice: xx"));
        engine.speak("hi", "female", None).await.unwrap_err();
        assert_eq!(dir.runs(), 2, "a failure must not be cached");
        assert_eq!(engine.cached_bytes(), 0);
    }

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let cmd = ["/nonexistent/pivotd-no-tts", "-w", "{out}", "--", "{text}"]
            .map(String::from)
            .to_vec();
        let engine = TtsEngine::new(cmd, espeak_voices(), TtsLimits::default());
        let err = engine.speak("hi", "female", None).await.unwrap_err();
        assert_eq!(
            err,
            TtsError::NotFound {
                program: "/nonexistent/pivotd-no-tts".into()
            }
        );
    }

    #[tokio::test]
    async fn garbage_or_missing_output_is_bad_output() {
        let dir = TempDir::new("garbage");
        let script = dir.script("garbage.sh", "echo 'this is not a wav' > \"$2\"");
        let engine = TtsEngine::new(sh_command(&script), espeak_voices(), TtsLimits::default());
        let err = engine.speak("hi", "female", None).await.unwrap_err();
        assert!(matches!(err, TtsError::BadOutput(_)), "{err:?}");

        let script = dir.script("nothing.sh", "exit 0");
        let engine = TtsEngine::new(sh_command(&script), espeak_voices(), TtsLimits::default());
        let err = engine.speak("hi", "female", None).await.unwrap_err();
        assert!(matches!(err, TtsError::BadOutput(_)), "{err:?}");
        assert!(err.to_string().contains("no output file"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_synthesis() {
        let dir = TempDir::new("herd");
        let engine = fake_engine(&dir, "sleep 0.3", TtsLimits::default());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let engine = engine.clone();
            set.spawn(async move { engine.speak("Same sentence", "male", None).await });
        }
        let mut prompts = Vec::new();
        while let Some(r) = set.join_next().await {
            prompts.push(r.unwrap().unwrap());
        }
        assert_eq!(prompts.len(), 10);
        assert!(prompts.iter().all(|p| Arc::ptr_eq(p, &prompts[0])));
        assert_eq!(dir.runs(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_failure() {
        let dir = TempDir::new("herdfail");
        let script = dir.script(
            "fail.sh",
            "echo run >> @DIR@/count\nsleep 0.3\necho boom >&2\nexit 3",
        );
        let engine = TtsEngine::new(sh_command(&script), espeak_voices(), TtsLimits::default());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let engine = engine.clone();
            set.spawn(async move { engine.speak("Same failure", "male", None).await });
        }
        while let Some(r) = set.join_next().await {
            assert!(matches!(r.unwrap(), Err(TtsError::Failed { .. })));
        }
        assert_eq!(dir.runs(), 1);
    }

    #[tokio::test]
    async fn a_caller_giving_up_does_not_stop_the_synthesis() {
        let dir = TempDir::new("cancel");
        let engine = fake_engine(&dir, "sleep 0.3", TtsLimits::default());
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            engine.speak("Patience", "female", None),
        )
        .await;
        assert!(gave_up.is_err());
        let p = engine.speak("Patience", "female", None).await.unwrap();
        assert_eq!(p.pcm.len(), 16_000);
        assert_eq!(dir.runs(), 1);
    }

    #[tokio::test]
    async fn cache_is_bounded_and_evicts_least_recently_used() {
        let dir = TempDir::new("evict");
        // Each 2 s tone costs 16000 * 4 bytes plus its key: room for two.
        let limits = TtsLimits {
            cache_bytes: 150_000,
            ..TtsLimits::default()
        };
        let engine = fake_engine(&dir, "", limits);
        engine.speak("a", "female", None).await.unwrap();
        engine.speak("b", "female", None).await.unwrap();
        assert_eq!(dir.runs(), 2);
        engine.speak("a", "female", None).await.unwrap(); // a is now the most recent
        assert_eq!(dir.runs(), 2);
        engine.speak("c", "female", None).await.unwrap(); // evicts b
        assert_eq!(dir.runs(), 3);
        assert!(engine.cached_bytes() <= 150_000);
        assert!(engine.cached_bytes() >= 128_000);
        engine.speak("a", "female", None).await.unwrap();
        assert_eq!(dir.runs(), 3, "a should have stayed");
        engine.speak("b", "female", None).await.unwrap();
        assert_eq!(dir.runs(), 4, "b should have been evicted");

        // A prompt bigger than the whole cache is returned but not kept.
        let tiny = fake_engine(
            &dir,
            "",
            TtsLimits {
                cache_bytes: 1000,
                ..TtsLimits::default()
            },
        );
        tiny.speak("big", "female", None).await.unwrap();
        assert_eq!(tiny.cached_bytes(), 0);
        tiny.speak("big", "female", None).await.unwrap();
        assert_eq!(dir.runs(), 6);
    }

    #[tokio::test]
    async fn bad_text_voice_and_language_are_refused_without_running() {
        let dir = TempDir::new("refuse");
        let engine = fake_engine(&dir, "", TtsLimits::default());
        let cases = [
            ("a\0b", "female", None),
            ("", "female", None),
            ("   ", "female", None),
            ("hi", "en f3", None),
            ("hi", "-v", None),
            ("hi", "x;rm -rf /", None),
            ("hi", "female", Some("en us")),
            ("hi", "female", Some("--help")),
        ];
        for (text, voice, lang) in cases {
            let err = engine.speak(text, voice, lang).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    TtsError::BadText(_) | TtsError::BadVoice(_) | TtsError::BadLanguage(_)
                ),
                "{text:?} {voice:?} {lang:?}: {err:?}"
            );
        }
        let long = "x".repeat(1001);
        assert_eq!(
            engine.speak(&long, "female", None).await.unwrap_err(),
            TtsError::TextTooLong {
                chars: 1001,
                max: 1000
            }
        );
        assert_eq!(dir.runs(), 0);
        // TwiML's own limit.
        engine.speak_max(&long, "female", None, 4000).await.unwrap();
        assert_eq!(dir.runs(), 1);
    }

    #[tokio::test]
    async fn voices_are_mapped_or_passed_through_when_plain() {
        let dir = TempDir::new("voices");
        let engine = fake_engine(&dir, "", TtsLimits::default());
        let voice_arg = |dir: &TempDir| dir.read("argv").lines().nth(1).unwrap().to_string();
        engine.speak("one", "male", None).await.unwrap();
        assert_eq!(voice_arg(&dir), "en+m3");
        engine.speak("two", "Female", None).await.unwrap();
        assert_eq!(voice_arg(&dir), "en+f3");
        engine.speak("three", "", None).await.unwrap();
        assert_eq!(voice_arg(&dir), "en+f3");
        engine.speak("four", "fr+m1", None).await.unwrap();
        assert_eq!(voice_arg(&dir), "fr+m1");
    }

    #[test]
    fn substitution_is_one_pass() {
        assert_eq!(
            substitute("{text}", "v", "/o.wav", "say {out} and {voice}", "en"),
            "say {out} and {voice}"
        );
        assert_eq!(
            substitute("--lang={language}:{voice}{", "en+f3", "/o", "t", "en-us"),
            "--lang=en-us:en+f3{"
        );
        assert_eq!(substitute("{x}{out}", "v", "/o", "t", "l"), "{x}/o");
    }
}
