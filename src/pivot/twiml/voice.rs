//! The voice of a TwiML `<Say>` (issue 14): TwiML written for Twilio names Twilio's voices,
//! which no TTS hook knows. A name the operator's `[tts] voices` holds is used as it is; else
//! Twilio's are mapped here onto the hook's Kazoo voices (`male`, `female`, which `[tts]
//! voices` turns into the engine's) and, for Polly and Google names, the language they imply;
//! any other name speaks with the default voice, logged once per name (an unknown voice used
//! to make the engine fail, and the `<Say>` was skipped). The parser asks for the language
//! ([`implied_language`]), the executor for the voice ([`hook_voice`]), which needs the hook.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::logsafe::wire;

/// Voice of `<Say>` when none is given (Kazoo's `speech.tts_voice`), and of an unknown one.
pub const DEFAULT_VOICE: &str = "male";
const MALE: &str = "male";
const FEMALE: &str = "female";

/// A Twilio voice name mapped: the Kazoo voice and the language it implies (Polly, Google).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SayVoice {
    /// A Kazoo voice name: `male` or `female`.
    voice: &'static str,
    language: Option<String>,
}

/// Amazon Polly's voices as Twilio names them (`Polly.<Name>`, also with `-Neural`,
/// `-Generative` or `-LongForm`): the gender and language of each.
const POLLY: &[(&str, &str, &str)] = &[
    ("Joanna", FEMALE, "en-US"),
    ("Salli", FEMALE, "en-US"),
    ("Kendra", FEMALE, "en-US"),
    ("Kimberly", FEMALE, "en-US"),
    ("Ivy", FEMALE, "en-US"),
    ("Ruth", FEMALE, "en-US"),
    ("Danielle", FEMALE, "en-US"),
    ("Joey", MALE, "en-US"),
    ("Justin", MALE, "en-US"),
    ("Kevin", MALE, "en-US"),
    ("Matthew", MALE, "en-US"),
    ("Stephen", MALE, "en-US"),
    ("Gregory", MALE, "en-US"),
    ("Amy", FEMALE, "en-GB"),
    ("Emma", FEMALE, "en-GB"),
    ("Brian", MALE, "en-GB"),
    ("Arthur", MALE, "en-GB"),
    ("Geraint", MALE, "en-GB-WLS"),
    ("Nicole", FEMALE, "en-AU"),
    ("Olivia", FEMALE, "en-AU"),
    ("Russell", MALE, "en-AU"),
    ("Aditi", FEMALE, "en-IN"),
    ("Raveena", FEMALE, "en-IN"),
    ("Kajal", FEMALE, "en-IN"),
    ("Aria", FEMALE, "en-NZ"),
    ("Ayanda", FEMALE, "en-ZA"),
    ("Niamh", FEMALE, "en-IE"),
    ("Marlene", FEMALE, "de-DE"),
    ("Vicki", FEMALE, "de-DE"),
    ("Hans", MALE, "de-DE"),
    ("Daniel", MALE, "de-DE"),
    ("Hannah", FEMALE, "de-AT"),
    ("Celine", FEMALE, "fr-FR"),
    ("Céline", FEMALE, "fr-FR"),
    ("Lea", FEMALE, "fr-FR"),
    ("Léa", FEMALE, "fr-FR"),
    ("Mathieu", MALE, "fr-FR"),
    ("Remi", MALE, "fr-FR"),
    ("Rémi", MALE, "fr-FR"),
    ("Chantal", FEMALE, "fr-CA"),
    ("Gabrielle", FEMALE, "fr-CA"),
    ("Liam", MALE, "fr-CA"),
    ("Conchita", FEMALE, "es-ES"),
    ("Lucia", FEMALE, "es-ES"),
    ("Enrique", MALE, "es-ES"),
    ("Sergio", MALE, "es-ES"),
    ("Mia", FEMALE, "es-MX"),
    ("Andres", MALE, "es-MX"),
    ("Penelope", FEMALE, "es-US"),
    ("Lupe", FEMALE, "es-US"),
    ("Miguel", MALE, "es-US"),
    ("Pedro", MALE, "es-US"),
    ("Carla", FEMALE, "it-IT"),
    ("Bianca", FEMALE, "it-IT"),
    ("Giorgio", MALE, "it-IT"),
    ("Adriano", MALE, "it-IT"),
    ("Ines", FEMALE, "pt-PT"),
    ("Inês", FEMALE, "pt-PT"),
    ("Cristiano", MALE, "pt-PT"),
    ("Vitoria", FEMALE, "pt-BR"),
    ("Vitória", FEMALE, "pt-BR"),
    ("Camila", FEMALE, "pt-BR"),
    ("Ricardo", MALE, "pt-BR"),
    ("Thiago", MALE, "pt-BR"),
    ("Lotte", FEMALE, "nl-NL"),
    ("Laura", FEMALE, "nl-NL"),
    ("Ruben", MALE, "nl-NL"),
    ("Naja", FEMALE, "da-DK"),
    ("Sofie", FEMALE, "da-DK"),
    ("Mads", MALE, "da-DK"),
    ("Liv", FEMALE, "nb-NO"),
    ("Ida", FEMALE, "nb-NO"),
    ("Astrid", FEMALE, "sv-SE"),
    ("Elin", FEMALE, "sv-SE"),
    ("Suvi", FEMALE, "fi-FI"),
    ("Ewa", FEMALE, "pl-PL"),
    ("Maja", FEMALE, "pl-PL"),
    ("Ola", FEMALE, "pl-PL"),
    ("Jacek", MALE, "pl-PL"),
    ("Jan", MALE, "pl-PL"),
    ("Tatyana", FEMALE, "ru-RU"),
    ("Maxim", MALE, "ru-RU"),
    ("Filiz", FEMALE, "tr-TR"),
    ("Carmen", FEMALE, "ro-RO"),
    ("Dora", FEMALE, "is-IS"),
    ("Karl", MALE, "is-IS"),
    ("Gwyneth", FEMALE, "cy-GB"),
    ("Mizuki", FEMALE, "ja-JP"),
    ("Tomoko", FEMALE, "ja-JP"),
    ("Kazuha", FEMALE, "ja-JP"),
    ("Takumi", MALE, "ja-JP"),
    ("Seoyeon", FEMALE, "ko-KR"),
    ("Zhiyu", FEMALE, "cmn-CN"),
    ("Zeina", FEMALE, "arb"),
    ("Hala", FEMALE, "ar-AE"),
];

/// Polly engine suffixes Twilio appends to a name; they change the sound, not the voice.
const POLLY_SUFFIXES: &[&str] = &["-Neural", "-Generative", "-LongForm"];

/// Distinct unknown names logged, at most: names come from web servers, so the set that
/// remembers them is bounded (past it, further unknown names are not logged).
const MAX_WARNED: usize = 256;
/// Characters of a name remembered and logged.
const MAX_NAME_CHARS: usize = 64;

static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The language a `<Say voice=name>` implies (`Polly.Joanna` → `en-US`), for a `<Say>` with
/// no `language`.
pub fn implied_language(name: &str) -> Option<String> {
    known(name.trim()).and_then(|v| v.language)
}

/// The voice the TTS hook is asked for, for `<Say voice=name>` (empty: none given):
/// `configured` names (the operator's `[tts] voices`) as they are, Twilio's and Kazoo's names
/// mapped, anything else the default voice.
pub fn hook_voice(name: &str, configured: impl Fn(&str) -> bool) -> String {
    let name = name.trim();
    if name.is_empty() {
        return DEFAULT_VOICE.to_string();
    }
    if configured(name) {
        return name.to_string();
    }
    if let Some(v) = known(name) {
        return v.voice.to_string();
    }
    if first_sighting(&WARNED, name) {
        let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
        tracing::warn!(
            voice = %wire(&shown),
            default = DEFAULT_VOICE,
            "TwiML Say: unknown voice, speaking with the default voice (logged once per name)"
        );
    }
    DEFAULT_VOICE.to_string()
}

fn plain(voice: &'static str) -> SayVoice {
    SayVoice {
        voice,
        language: None,
    }
}

/// Twilio's generic names, Kazoo's own, `Polly.*` and `Google.*`; `None` for anything else.
fn known(name: &str) -> Option<SayVoice> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "man" | "male" => return Some(plain(MALE)),
        "woman" | "female" | "alice" => return Some(plain(FEMALE)),
        _ => {}
    }
    if let Some(rest) = strip_prefix_ignore_case(name, "Polly.") {
        return polly(rest);
    }
    if let Some(rest) = strip_prefix_ignore_case(name, "Google.") {
        return google(rest);
    }
    None
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `Joanna`, `Joanna-Neural`: the named voice's gender and language.
fn polly(rest: &str) -> Option<SayVoice> {
    let name = POLLY_SUFFIXES
        .iter()
        .find_map(|suffix| {
            let cut = rest.len().checked_sub(suffix.len())?;
            let tail = rest.get(cut..)?;
            tail.eq_ignore_ascii_case(suffix).then(|| &rest[..cut])
        })
        .unwrap_or(rest);
    POLLY
        .iter()
        .find(|(n, _, _)| n.to_lowercase() == name.to_lowercase())
        .map(|&(_, voice, language)| SayVoice {
            voice,
            language: Some(language.to_string()),
        })
}

/// `de-DE-Standard-A`, `en-US-Neural2-F`, `cmn-CN-Wavenet-B`: the language is the name's first
/// two parts. The letter does not tell the gender (it differs per language), so the default
/// voice speaks it.
fn google(rest: &str) -> Option<SayVoice> {
    let mut parts = rest.splitn(3, '-');
    let (lang, region, model) = (parts.next()?, parts.next()?, parts.next()?);
    let letters = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
    };
    let region_ok =
        letters(region, 2..=2) || (region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit()));
    if !letters(lang, 2..=3) || !region_ok || model.is_empty() {
        return None;
    }
    Some(SayVoice {
        voice: DEFAULT_VOICE,
        language: Some(format!("{lang}-{region}")),
    })
}

/// Whether `name` is seen for the first time (so it is logged): remembered, cut to
/// [`MAX_NAME_CHARS`], while the set holds fewer than [`MAX_WARNED`].
fn first_sighting(seen: &Mutex<BTreeSet<String>>, name: &str) -> bool {
    let key: String = name.chars().take(MAX_NAME_CHARS).collect();
    // A panic elsewhere while holding the lock leaves a set that is still whole.
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() >= MAX_WARNED || seen.contains(&key) {
        return false;
    }
    seen.insert(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hook's voice and the implied language, with only Kazoo's names configured.
    fn v(name: &str) -> (String, Option<String>) {
        let kazoo = |n: &str| n == "male" || n == "female";
        (hook_voice(name, kazoo), implied_language(name))
    }

    fn want(voice: &str, language: Option<&str>) -> (String, Option<String>) {
        (voice.to_string(), language.map(String::from))
    }

    #[test]
    fn twilio_and_kazoo_generic_names() {
        for (name, voice) in [
            ("man", "male"),
            ("male", "male"),
            ("MAN", "male"),
            ("woman", "female"),
            ("female", "female"),
            ("alice", "female"),
            (" Alice ", "female"),
            ("", DEFAULT_VOICE),
            ("  ", DEFAULT_VOICE),
        ] {
            assert_eq!(v(name), want(voice, None), "{name:?}");
        }
    }

    #[test]
    fn polly_names_give_their_gender_and_language() {
        for (name, voice, lang) in [
            ("Polly.Joanna", "female", "en-US"),
            ("Polly.Joanna-Neural", "female", "en-US"),
            ("polly.joanna-neural", "female", "en-US"),
            ("Polly.Matthew-Generative", "male", "en-US"),
            ("Polly.Brian", "male", "en-GB"),
            ("Polly.Hans", "male", "de-DE"),
            ("Polly.Léa-Neural", "female", "fr-FR"),
            ("Polly.Lea", "female", "fr-FR"),
            ("Polly.Mizuki", "female", "ja-JP"),
        ] {
            assert_eq!(v(name), want(voice, Some(lang)), "{name}");
        }
    }

    #[test]
    fn google_names_give_their_language() {
        for (name, lang) in [
            ("Google.de-DE-Standard-A", "de-DE"),
            ("Google.en-US-Neural2-F", "en-US"),
            ("Google.en-US-Chirp3-HD-Aoede", "en-US"),
            ("Google.cmn-CN-Wavenet-B", "cmn-CN"),
            ("Google.es-419-Standard-A", "es-419"),
        ] {
            assert_eq!(v(name), want(DEFAULT_VOICE, Some(lang)), "{name}");
        }
    }

    #[test]
    fn anything_else_is_the_default_voice() {
        for name in [
            "nonsense",
            "en+m3",
            "Polly.Nobody",
            "Polly.",
            "Polly.Joanna-Turbo",
            "Google.de",
            "Google.de-DE",
            "Google.d1-DE-Standard-A",
            "Google.de-DEU-Standard-A",
            "Pollyanna",
            "x\u{1b}[31m\nvoice",
        ] {
            assert_eq!(v(name), want(DEFAULT_VOICE, None), "{name:?}");
        }
    }

    /// A name in the operator's `[tts] voices` wins over the mapping (the language a Polly
    /// name implies still holds).
    #[test]
    fn configured_names_are_used_as_they_are() {
        let configured = |n: &str| n == "Polly.Joanna" || n == "amy-custom";
        assert_eq!(hook_voice("Polly.Joanna", configured), "Polly.Joanna");
        assert_eq!(hook_voice("amy-custom", configured), "amy-custom");
        assert_eq!(hook_voice("Polly.Hans", configured), "male");
        assert_eq!(implied_language("Polly.Joanna").as_deref(), Some("en-US"));
    }

    /// One warning per distinct name, and a bounded memory of names.
    #[test]
    fn unknown_names_are_logged_once_each_and_remembered_up_to_a_bound() {
        let seen = Mutex::new(BTreeSet::new());
        assert!(first_sighting(&seen, "nonsense"));
        assert!(!first_sighting(&seen, "nonsense"));
        assert!(first_sighting(&seen, "other"));
        let long = "x".repeat(5000);
        assert!(first_sighting(&seen, &long));
        assert!(
            !first_sighting(&seen, &format!("{long}y")),
            "cut to the same key"
        );
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .all(|k| k.chars().count() <= MAX_NAME_CHARS));
        for i in 0..MAX_WARNED * 2 {
            first_sighting(&seen, &format!("name-{i}"));
        }
        assert_eq!(seen.lock().unwrap().len(), MAX_WARNED);
        assert!(
            !first_sighting(&seen, "yet another"),
            "past the bound: not logged"
        );
    }
}
