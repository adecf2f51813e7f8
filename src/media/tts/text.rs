//! What callers pass, checked before anything runs: the text, the Kazoo voice mapped to an
//! engine voice, the language. Apart from the hook because these are the caller-facing rules.

use std::collections::BTreeMap;

use super::{TtsError, DEFAULT_VOICE};

/// Longest voice or language token accepted from a caller.
const MAX_TOKEN: usize = 64;

/// The text: no NUL, not blank, at most `max` characters.
pub(super) fn check_text(text: &str, max: usize) -> Result<(), TtsError> {
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

/// A language, when given, is a plain token.
pub(super) fn check_language(language: Option<&str>) -> Result<(), TtsError> {
    if let Some(lang) = language {
        if !is_token(lang) {
            return Err(TtsError::BadLanguage(lang.to_string()));
        }
    }
    Ok(())
}

/// Maps a Kazoo voice name to the engine's voice.
pub(super) fn engine_voice(
    voices: &BTreeMap<String, String>,
    voice: &str,
) -> Result<String, TtsError> {
    let voice = if voice.is_empty() {
        DEFAULT_VOICE
    } else {
        voice
    };
    if let Some(v) = configured_voice(voices, voice) {
        return Ok(v.clone());
    }
    if is_token(voice) {
        Ok(voice.to_string())
    } else {
        Err(TtsError::BadVoice(voice.to_string()))
    }
}

/// The engine's voice for a name in `[tts] voices`, as written or in lower case.
pub(super) fn configured_voice<'a>(
    voices: &'a BTreeMap<String, String>,
    voice: &str,
) -> Option<&'a String> {
    voices
        .get(voice)
        .or_else(|| voices.get(&voice.to_ascii_lowercase()))
}

/// A plain engine voice / language token: `[A-Za-z0-9_+.-]`, not starting with '-'.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
}
