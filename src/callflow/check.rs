//! The checks of a config that need more than the config: every prompt a callflow plays is in
//! the prompt library (and a configured media dir is readable), every pivot URL passes the URL
//! guard's save-time check (spec j.10), and the TTS hook's command is usable. They report like
//! the config's own checks (a key path and a message), after them: [`load`] and
//! [`from_toml_str`] run both, for `pivotd check-config` and start-up.

use std::path::Path;

use crate::config::{Config, ConfigErrors, ConfigProblem};
use crate::flow::{is_http_url, ModuleData, Node};
use crate::media::prompt::PromptLibrary;
use crate::media::tts::TtsEngine;
use crate::pivot::guard::UrlGuard;

/// Reads a config file and checks it: the config's own checks, then [`problems`]. Every
/// problem is reported, not just the first.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let (cfg, problems) = Config::read(path)?;
    checked(cfg, problems)
}

/// [`load`] for TOML text; relative paths resolve against `base_dir`.
pub fn from_toml_str(s: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let (cfg, problems) = Config::parse(s, base_dir);
    checked(cfg, problems)
}

fn checked(cfg: Config, mut problems: Vec<ConfigProblem>) -> Result<Config, ConfigErrors> {
    // Reported beside the config's own problems, so one run names every problem.
    problems.extend(self::problems(&cfg));
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// What is wrong with `cfg` beyond its own keys: the media dir and play ids, the pivot URLs,
/// the TTS command, in that order.
pub fn problems(cfg: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    check_media(cfg, &mut problems);
    check_urls(cfg, &mut problems);
    if let Err(e) = TtsEngine::check_command(&cfg.tts.command) {
        problems.push(ConfigProblem {
            key: "tts.command".into(),
            message: e.to_string(),
        });
    }
    problems
}

/// The prompt library a config's `[media]` settings describe (the media dir when there is
/// one, and the embedded prompts).
pub fn prompt_library(cfg: &Config) -> PromptLibrary {
    PromptLibrary::new(cfg.media.prompt_dir())
}

/// The checks that read the disk: the media dir, and every media id of every flow.
fn check_media(cfg: &Config, problems: &mut Vec<ConfigProblem>) {
    let lib = prompt_library(cfg);
    if cfg.media.prompt_dir().is_some() {
        if let Err(e) = lib.check_dir() {
            problems.push(ConfigProblem {
                key: "media.dir".into(),
                message: format!("{}: {e}", cfg.media.dir.display()),
            });
            // Every file id would fail too; the dir is the one problem to fix.
            return;
        }
    }
    for a in &cfg.accounts {
        for c in &a.callflows {
            let path = format!("{}.flow", c.source);
            check_node_media(&c.flow, &path, &lib, problems);
        }
    }
}

/// Spec j.10 at save time: the scheme and a literal address of every pivot URL (no DNS).
fn check_urls(cfg: &Config, problems: &mut Vec<ConfigProblem>) {
    let guard = UrlGuard::from_config(&cfg.pivot);
    for a in &cfg.accounts {
        for c in &a.callflows {
            check_node_urls(&c.flow, &format!("{}.flow", c.source), &guard, problems);
        }
    }
}

/// The save-time URL check of one flow (spec j.10): every `voice_url`, `cdr_url` and
/// `fallback_url` of its pivot nodes through [`UrlGuard::check_url_static`]. The API runs it
/// on each callflow it saves.
pub fn check_node_urls(node: &Node, path: &str, guard: &UrlGuard, out: &mut Vec<ConfigProblem>) {
    if let ModuleData::Pivot(p) = &node.module {
        let urls = [
            ("voice_url", Some(&p.voice_url)),
            ("cdr_url", p.cdr_url.as_ref()),
            ("fallback_url", p.fallback_url.as_ref()),
        ];
        for (key, url) in urls {
            if let Some(Err(e)) = url.map(|u| guard.check_url_static(u)) {
                out.push(ConfigProblem {
                    key: format!("{path}.data.{key}"),
                    message: format!("invalid client URL: {e}"),
                });
            }
        }
    }
    for (k, child) in &node.children {
        check_node_urls(child, &format!("{path}.children.{k}"), guard, out);
    }
}

fn check_node_media(node: &Node, path: &str, lib: &PromptLibrary, out: &mut Vec<ConfigProblem>) {
    let key = node.module.media_key();
    for id in node.module.media_ids() {
        if crate::media::tone::is_tone_spec(id) {
            if let Err(e) = crate::media::tone::from_spec(id) {
                out.push(ConfigProblem {
                    key: format!("{path}.data.{key}"),
                    message: format!("tone {id:?}: {e}"),
                });
            }
        } else if !is_http_url(id) && !lib.exists(id) {
            out.push(ConfigProblem {
                key: format!("{path}.data.{key}"),
                message: format!("no prompt {id:?} in the media dir or the built-in prompts"),
            });
        }
    }
    for (k, child) in &node.children {
        check_node_media(child, &format!("{path}.children.{k}"), lib, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty folder under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "pivotd-check-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn keys(e: &ConfigErrors) -> Vec<&str> {
        e.0.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn an_empty_file_passes_with_the_embedded_prompts() {
        let empty_dir = temp_dir("empty");
        let cfg = from_toml_str("", &empty_dir).unwrap();
        assert_eq!(cfg.media.prompt_dir(), None);
        assert!(problems(&cfg).is_empty());
        std::fs::remove_dir_all(empty_dir).unwrap();
    }

    #[test]
    fn media_ids_are_checked_against_the_library() {
        let dir = temp_dir("media");
        std::fs::create_dir(dir.join("prompts")).unwrap();
        // A real (tiny, silent) 8 kHz WAV in the configured dir.
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(dir.join("prompts").join("custom.wav"), spec).unwrap();
        for _ in 0..160 {
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let text = r#"
[media]
dir = "prompts"
[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["1"]
flow = { module = "play", data = { id = "custom" }, children = { _ = { module = "play", data = { id = "absent-prompt" }, children = { _ = { module = "response", data = { media = "also-absent" } } } } } }
[[accounts.callflows]]
numbers = ["2"]
flow = { module = "play", data = { id = "https://media.example.test/x.mp3" } }
"#;
        let e = from_toml_str(text, &dir).unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "accounts[0].callflows[0].flow.children._.data.id",
                "accounts[0].callflows[0].flow.children._.children._.data.media"
            ]
        );
        assert!(e.0[0].message.contains("absent-prompt"));

        // A configured media dir that does not exist is reported once, by its key.
        let e = from_toml_str("[media]\ndir = \"no-such-dir\"", &dir).unwrap_err();
        assert_eq!(keys(&e), ["media.dir"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ringbacks_are_checked_like_media_ids() {
        let text = r#"
[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["1"]
flow = { module = "ring_group", data = { endpoints = [{ endpoint_type = "device", id = "d" }], ringback = "no-such-ringback" }, children = { _ = { module = "offnet", data = { ringback = "welcome" }, children = { _ = { module = "resources", data = { ringback = "http://media.example.test/ring.wav" } } } } } }
"#;
        let e = from_toml_str(text, Path::new("/x")).unwrap_err();
        assert_eq!(keys(&e), ["accounts[0].callflows[0].flow.data.ringback"]);
        assert!(e.0[0].message.contains("no-such-ringback"), "{e}");

        // A tone stream is made, not looked up: a malformed one is refused with the reason.
        let tones = text
            .replace("no-such-ringback", "tone_stream://%(2000,4000,440,480)")
            .replace("\"welcome\"", "\"%(100,100,99999)\"");
        let e = from_toml_str(&tones, Path::new("/x")).unwrap_err();
        assert_eq!(
            keys(&e),
            ["accounts[0].callflows[0].flow.children._.data.ringback"]
        );
        assert!(e.0[0].message.contains("frequencies"), "{e}");
    }

    #[test]
    fn pivot_urls_and_the_tts_command_are_checked_after_the_config() {
        let text = r#"
[sip]
max_calls = 0
[tts]
command = ["espeak-ng", "{nope}"]
[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["1"]
flow = { module = "pivot", data = { voice_url = "http://127.0.0.1/x", cdr_url = "http://localhost/c", fallback_url = "http://10.0.0.1/f" } }
"#;
        let e = from_toml_str(text, Path::new("/x")).unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "sip.max_calls",
                "accounts[0].callflows[0].flow.data.voice_url",
                "accounts[0].callflows[0].flow.data.cdr_url",
                "accounts[0].callflows[0].flow.data.fallback_url",
                "tts.command"
            ]
        );
        assert!(e.0[1].message.starts_with("invalid client URL: "), "{e}");
        // The config's own checks alone take it but for its own key.
        let own = Config::from_toml_str(text, Path::new("/x")).unwrap_err();
        assert_eq!(keys(&own), ["sip.max_calls"]);
    }
}
