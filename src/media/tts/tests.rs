//! Tests of the TTS engine: espeak-ng itself, and fake hooks (shell scripts) for the
//! command rules, the process limits and the cache.

use super::*;
use crate::media::prompt::test_support::TempDir;
use std::time::Instant as StdInstant;

const TONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/media/tone-1khz.wav");

/// Writes a shell script into `dir`; `@DIR@` and `@TONE@` are replaced. Run as `/bin/sh
/// script` (not exec'd itself: a freshly written executable can hit ETXTBSY when tests fork
/// in parallel).
fn write_script(dir: &TempDir, name: &str, body: &str) -> String {
    let path = dir.join(name);
    let body = body
        .replace("@DIR@", dir.path().to_str().unwrap())
        .replace("@TONE@", TONE);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// How many times a fake hook ran (lines of its counter file in `dir`).
fn runs(dir: &TempDir) -> usize {
    dir.read("count").lines().count()
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
    let script = write_script(
        dir,
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

/// An engine whose hook is the script `name` with `body` (see [`write_script`]), called as
/// `script -w {out} -- {text}`.
fn script_engine(dir: &TempDir, name: &str, body: &str, limits: TtsLimits) -> TtsEngine {
    let script = write_script(dir, name, body);
    let command = ["/bin/sh", &script, "-w", "{out}", "--", "{text}"]
        .map(String::from)
        .to_vec();
    TtsEngine::new(command, espeak_voices(), limits)
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
    let dir = TempDir::new("tts-test-twice");
    let engine = fake_engine(&dir, "", TtsLimits::default());
    let a = engine.speak("Hello again", "female", None).await.unwrap();
    let b = engine.speak("Hello again", "female", None).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(runs(&dir), 1);
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
    assert_eq!(runs(&dir), 3);
    // The mapped voice is the key: "female" and "en+f3" are the same sentence.
    let e = engine.speak("Hello again", "en+f3", None).await.unwrap();
    assert!(Arc::ptr_eq(&a, &e));
    assert_eq!(runs(&dir), 3);
}

#[tokio::test]
async fn text_comes_after_double_dash_and_files_are_removed() {
    let dir = TempDir::new("tts-test-argv");
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
    let dir = TempDir::new("tts-test-stdin");
    let script = write_script(&dir, "stdin.sh", "cat > @DIR@/stdin\ncp @TONE@ \"$2\"");
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
    let dir = TempDir::new("tts-test-timeout");
    // The sleep is a child of the shell, not exec'd: the whole group must go.
    let limits = TtsLimits {
        timeout: Duration::from_millis(300),
        ..TtsLimits::default()
    };
    let engine = script_engine(
        &dir,
        "slow.sh",
        "sleep 5 &\necho $! > @DIR@/child\necho $$ > @DIR@/pid\nwait",
        limits,
    );
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
    let dir = TempDir::new("tts-test-fail");
    let engine = script_engine(
        &dir,
        "fail.sh",
        "echo run >> @DIR@/count\necho 'no such voice: xx' >&2\nexit 1",
        TtsLimits::default(),
    );
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
    assert_eq!(runs(&dir), 2, "a failure must not be cached");
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
    let dir = TempDir::new("tts-test-garbage");
    let engine = script_engine(
        &dir,
        "garbage.sh",
        "echo 'this is not a wav' > \"$2\"",
        TtsLimits::default(),
    );
    let err = engine.speak("hi", "female", None).await.unwrap_err();
    assert!(matches!(err, TtsError::BadOutput(_)), "{err:?}");

    let engine = script_engine(&dir, "nothing.sh", "exit 0", TtsLimits::default());
    let err = engine.speak("hi", "female", None).await.unwrap_err();
    assert!(matches!(err, TtsError::BadOutput(_)), "{err:?}");
    assert!(err.to_string().contains("no output file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_synthesis() {
    let dir = TempDir::new("tts-test-herd");
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
    assert_eq!(runs(&dir), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_failure() {
    let dir = TempDir::new("tts-test-herdfail");
    let engine = script_engine(
        &dir,
        "fail.sh",
        "echo run >> @DIR@/count\nsleep 0.3\necho boom >&2\nexit 3",
        TtsLimits::default(),
    );
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let engine = engine.clone();
        set.spawn(async move { engine.speak("Same failure", "male", None).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap(), Err(TtsError::Failed { .. })));
    }
    assert_eq!(runs(&dir), 1);
}

#[tokio::test]
async fn a_caller_giving_up_does_not_stop_the_synthesis() {
    let dir = TempDir::new("tts-test-cancel");
    let engine = fake_engine(&dir, "sleep 0.3", TtsLimits::default());
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        engine.speak("Patience", "female", None),
    )
    .await;
    assert!(gave_up.is_err());
    let p = engine.speak("Patience", "female", None).await.unwrap();
    assert_eq!(p.pcm.len(), 16_000);
    assert_eq!(runs(&dir), 1);
}

#[tokio::test]
async fn cache_is_bounded_and_evicts_least_recently_used() {
    let dir = TempDir::new("tts-test-evict");
    // Each 2 s tone costs 16000 * 4 bytes plus its key: room for two.
    let limits = TtsLimits {
        cache_bytes: 150_000,
        ..TtsLimits::default()
    };
    let engine = fake_engine(&dir, "", limits);
    engine.speak("a", "female", None).await.unwrap();
    engine.speak("b", "female", None).await.unwrap();
    assert_eq!(runs(&dir), 2);
    engine.speak("a", "female", None).await.unwrap(); // a is now the most recent
    assert_eq!(runs(&dir), 2);
    engine.speak("c", "female", None).await.unwrap(); // evicts b
    assert_eq!(runs(&dir), 3);
    assert!(engine.cached_bytes() <= 150_000);
    assert!(engine.cached_bytes() >= 128_000);
    engine.speak("a", "female", None).await.unwrap();
    assert_eq!(runs(&dir), 3, "a should have stayed");
    engine.speak("b", "female", None).await.unwrap();
    assert_eq!(runs(&dir), 4, "b should have been evicted");

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
    assert_eq!(runs(&dir), 6);
}

#[tokio::test]
async fn bad_text_voice_and_language_are_refused_without_running() {
    let dir = TempDir::new("tts-test-refuse");
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
    assert_eq!(runs(&dir), 0);
    // TwiML's own limit.
    engine.speak_max(&long, "female", None, 4000).await.unwrap();
    assert_eq!(runs(&dir), 1);
}

#[tokio::test]
async fn voices_are_mapped_or_passed_through_when_plain() {
    let dir = TempDir::new("tts-test-voices");
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
    // The names `[tts] voices` holds, as `speak` looks them up (TwiML asks before mapping).
    assert!(engine.has_voice("male") && engine.has_voice("Female"));
    assert!(!engine.has_voice("fr+m1") && !engine.has_voice("alice"));
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
