//! `say` (spec c.4 and j.8): says `text` as a number, digit by digit, or spelled, with the
//! shipped `digit-0` … `digit-9` prompts and the TTS hook — pivotd's stand-in for Kazoo's
//! `audio_macro` `say` entry (FreeSWITCH `mod_say`), without a language pack.
//!
//! Data: `text` (alias `say`; required, 1 to 1000 characters), `type` (default
//! `name_spelled`, the engine's default), `method` (`pronounced` default, `iterated`,
//! `counted`, `none`), `language` (to the TTS hook), `gender` (`masculine` → voice `male`,
//! `feminine` / `neuter` / absent → `female`), `terminators` (default every key).
//!
//! What each type does (English, as FreeSWITCH's `mod_say_en`):
//! - `number`, `items`, `persons`, `messages`: `text` must be a number (`123`, `-42`,
//!   `1,234`, `3.14`). `pronounced` / `none`: its words ("one hundred twenty-three") through
//!   TTS; `counted`: the ordinal ("twenty-first") for a whole number ≥ 0; `iterated`: digit by
//!   digit with the prompts. Without a TTS hook, or when it fails, digit by digit: `say`
//!   always works with the shipped prompts.
//! - `telephone_number`, `telephone_extension`, `account_number`, `name_spelled`, and
//!   `digits` (a pivotd extension): one character at a time — digits with the prompts, letters
//!   through TTS (skipped without a hook), anything else (`+`, `(`, `-`, spaces) skipped.
//! - `name_phonetic`: as spelled, letters in the NATO alphabet ("Bravo") through TTS.
//! - `url`, `ip_address`, `e-mail_address`, `postal_address`, `currency`: the text through
//!   TTS as written (skipped with a log without a hook).
//! - `time_measurement`, `current_date`, `current_time`, `current_date_time`,
//!   `short_date_time`: refused at validation; they need a clock, a time zone and a language
//!   pack (use `tts` with the sentence instead).
//!
//! Keys in `terminators` stop the rest of the saying; every key pressed goes to the `default`
//! collection. The flow always goes on with `_`.

use std::sync::Arc;

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::say::{kind_of, parse_number, Kind, Say};
use crate::logsafe::wire;
use crate::media::prompt::Prompt;

/// One thing to say: a shipped digit prompt, or text for the TTS hook.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Digit(char),
    Speech(String),
}

/// The digits of `text`, one piece each.
fn digit_pieces(text: &str) -> Vec<Piece> {
    text.chars()
        .filter(char::is_ascii_digit)
        .map(Piece::Digit)
        .collect()
}

/// One piece per character: digits as prompts, letters through TTS (spelled as the capital
/// letter, or its NATO word when `phonetic`), everything else skipped.
fn spelled_pieces(text: &str, phonetic: bool) -> Vec<Piece> {
    text.chars()
        .filter_map(|c| {
            if c.is_ascii_digit() {
                Some(Piece::Digit(c))
            } else if c.is_alphabetic() {
                let word = if phonetic { nato(c) } else { None };
                Some(Piece::Speech(
                    word.map(str::to_string)
                        .unwrap_or_else(|| c.to_uppercase().collect()),
                ))
            } else {
                None
            }
        })
        .collect()
}

/// The NATO / ICAO spelling alphabet word for an ASCII letter.
fn nato(c: char) -> Option<&'static str> {
    const WORDS: [&str; 26] = [
        "Alfa", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
        "Juliett", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo",
        "Sierra", "Tango", "Uniform", "Victor", "Whiskey", "X-ray", "Yankee", "Zulu",
    ];
    let c = c.to_ascii_lowercase();
    if !c.is_ascii_lowercase() {
        return None;
    }
    WORDS.get(usize::from(c as u8 - b'a')).copied()
}

pub async fn run(
    data: &Say,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    if !call.is_answered() {
        call.answer().await?;
    }
    let pieces = match kind_of(&data.say_type) {
        Kind::Number => {
            let words = match data.method.as_str() {
                "iterated" => None,
                "counted" => ordinal_words(&data.text).or_else(|| number_words(&data.text)),
                _ => number_words(&data.text),
            };
            if let Some(words) = words {
                if rt.tts.is_none() {
                    tracing::debug!("say: no TTS hook; the number is said digit by digit");
                } else if let Some(prompt) = speak(data, rt, &words).await {
                    play(data, call, state, prompt).await?;
                    return Ok(Next::Default);
                }
            }
            // Iterated, too long for words, or the words could not be spoken: the shipped
            // prompts still say it.
            digit_pieces(&data.text)
        }
        Kind::Spelled => spelled_pieces(&data.text, false),
        Kind::Phonetic => spelled_pieces(&data.text, true),
        Kind::Text => vec![Piece::Speech(data.text.clone())],
    };
    if rt.tts.is_none() && pieces.iter().any(|p| matches!(p, Piece::Speech(_))) {
        tracing::warn!(say_type = %wire(&data.say_type), "say: no TTS hook configured; letters and text skipped");
    }
    for piece in pieces {
        let prompt = match piece {
            Piece::Digit(d) => match rt.prompts.get(&format!("digit-{d}")) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(reason = %wire(&e.to_string()), "say: digit prompt missing");
                    continue;
                }
            },
            Piece::Speech(text) => match speak(data, rt, &text).await {
                Some(p) => p,
                None => continue,
            },
        };
        if play(data, call, state, prompt).await? {
            break;
        }
    }
    Ok(Next::Default)
}

/// Speaks `text` through the hook; `None` without a hook, or on failure (logged).
async fn speak(data: &Say, rt: &Runtime, text: &str) -> Option<Arc<Prompt>> {
    let language = data.language.as_deref();
    rt.speak(text, data.voice(), language, "say: tts failed")
        .await
}

/// Plays one prompt; true when a terminator stopped it (the rest is not said).
async fn play(
    data: &Say,
    call: &mut dyn CallControl,
    state: &mut FlowState,
    prompt: Arc<Prompt>,
) -> Result<bool, CallEnded> {
    let played = super::Played {
        what: "say",
        id: &prompt.name,
    };
    let stopped =
        super::play_collecting(call, &prompt, 1, &data.terminators, state, played).await?;
    Ok(stopped.is_some())
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// Short-scale names of the powers of 1000, from 10^3 to 10^33.
const SCALES: [&str; 11] = [
    "",
    "thousand",
    "million",
    "billion",
    "trillion",
    "quadrillion",
    "quintillion",
    "sextillion",
    "septillion",
    "octillion",
    "nonillion",
];

/// Words of 1..=999 (American: no "and").
fn group_words(n: usize, out: &mut Vec<String>) {
    let (h, rest) = (n / 100, n % 100);
    if h > 0 {
        out.push(format!("{} hundred", ONES.get(h).copied().unwrap_or("")));
    }
    if rest >= 20 {
        let (t, u) = (rest / 10, rest % 10);
        let tens = TENS.get(t).copied().unwrap_or("");
        out.push(if u == 0 {
            tens.to_string()
        } else {
            format!("{tens}-{}", ONES.get(u).copied().unwrap_or(""))
        });
    } else if rest > 0 {
        out.push(ONES.get(rest).copied().unwrap_or("").to_string());
    }
}

/// Words of a string of decimal digits (leading zeros fine); `None` past 10^33 - 1.
fn integer_words(digits: &str) -> Option<String> {
    let digits: Vec<usize> = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| usize::from(b - b'0'))
        .skip_while(|&d| d == 0)
        .collect();
    if digits.is_empty() {
        return Some("zero".into());
    }
    let groups = digits.len().div_ceil(3);
    if groups > SCALES.len() {
        return None;
    }
    let mut out = Vec::new();
    // The first group may be short: pad the count so every group is 3 digits from the left.
    let pad = groups * 3 - digits.len();
    for g in 0..groups {
        let n = (0..3).fold(0, |acc, i| {
            let idx = (g * 3 + i).checked_sub(pad);
            acc * 10 + idx.and_then(|k| digits.get(k)).copied().unwrap_or(0)
        });
        if n == 0 {
            continue;
        }
        group_words(n, &mut out);
        let scale = SCALES.get(groups - 1 - g).copied().unwrap_or("");
        if !scale.is_empty() {
            out.push(scale.to_string());
        }
    }
    Some(out.join(" "))
}

/// English words of a number as written in `text`: `123` → "one hundred twenty-three",
/// `-42` → "minus forty-two", `3.14` → "three point one four", `1,000` → "one thousand".
/// `None` for text that is not a number (see `type: number`) or an integer part past 10^33.
pub fn number_words(text: &str) -> Option<String> {
    let n = parse_number(text)?;
    let mut words = integer_words(n.integer)?;
    if let Some(f) = n.fraction {
        words.push_str(" point");
        for b in f.bytes() {
            words.push(' ');
            words.push_str(ONES.get(usize::from(b - b'0')).copied().unwrap_or(""));
        }
    }
    let zero = !n
        .integer
        .bytes()
        .chain(n.fraction.unwrap_or("").bytes())
        .any(|b| (b'1'..=b'9').contains(&b));
    if n.negative && !zero {
        words.insert_str(0, "minus ");
    }
    Some(words)
}

/// The ordinal of a whole number ≥ 0: `21` → "twenty-first", `100` → "one hundredth".
/// `None` for negatives, decimals and anything [`number_words`] refuses.
pub fn ordinal_words(text: &str) -> Option<String> {
    let n = parse_number(text)?;
    if n.fraction.is_some() || (n.negative && n.integer.bytes().any(|b| b != b'0' && b != b',')) {
        return None;
    }
    let words = integer_words(n.integer)?;
    // Only the last word changes, and in "twenty-one" only its last part.
    let cut = words.rfind([' ', '-']).map_or(0, |i| i + 1);
    let (head, last) = words.split_at(cut);
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w => match w.strip_suffix('y') {
            Some(stem) => format!("{stem}ieth"),
            None => format!("{w}th"),
        },
    };
    Some(format!("{head}{last}"))
}

#[cfg(test)]
mod tests;
