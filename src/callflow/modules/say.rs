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
    let tts = rt.tts.as_ref()?;
    match tts
        .speak(text, data.voice(), data.language.as_deref())
        .await
    {
        Ok(p) => Some(p),
        Err(reason) => {
            tracing::warn!(reason = %wire(&reason.to_string()), "say: tts failed");
            None
        }
    }
}

/// Plays one prompt; true when a terminator stopped it (the rest is not said).
async fn play(
    data: &Say,
    call: &mut dyn CallControl,
    state: &mut FlowState,
    prompt: Arc<Prompt>,
) -> Result<bool, CallEnded> {
    let stopped = super::play_collecting(call, &prompt, 1, &data.terminators, state).await?;
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
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::callflow::runtime::Speaker;
    use crate::flow::{ModuleData, Node, ValidationError, DEFAULT_COLLECTION};
    use serde_json::json;
    use std::sync::Mutex;

    /// Records (text, voice, language) and answers a prompt named `tts:<text>`, or fails.
    #[derive(Default)]
    struct FakeSpeaker {
        spoken: Mutex<Vec<(String, String, Option<String>)>>,
        fail: bool,
    }

    impl FakeSpeaker {
        fn texts(&self) -> Vec<String> {
            self.spoken
                .lock()
                .map(|v| v.iter().map(|(t, _, _)| t.clone()).collect())
                .unwrap_or_default()
        }
    }

    #[async_trait::async_trait]
    impl Speaker for FakeSpeaker {
        async fn speak(
            &self,
            text: &str,
            voice: &str,
            language: Option<&str>,
        ) -> Result<Arc<Prompt>, crate::media::tts::TtsError> {
            if let Ok(mut v) = self.spoken.lock() {
                v.push((text.into(), voice.into(), language.map(String::from)));
            }
            if self.fail {
                return Err(crate::media::tts::TtsError::Failed {
                    status: "exit status: 1".into(),
                    stderr: String::new(),
                });
            }
            Prompt::from_pcm(&format!("tts:{text}"), &[0; 160], 8000, 1)
                .map(Arc::new)
                .map_err(|e| crate::media::tts::TtsError::BadOutput(e.to_string()))
        }
    }

    fn rt_with(speaker: Option<Arc<FakeSpeaker>>) -> Runtime {
        let mut rt = Runtime::for_tests();
        rt.tts = speaker.map(|s| s as Arc<dyn Speaker>);
        rt
    }

    fn say_of(v: serde_json::Value) -> Result<Say, ValidationError> {
        Node::from_json(&json!({"module": "say", "data": v})).map(|n| match n.module {
            ModuleData::Say(s) => s,
            other => panic!("not a say: {other:?}"),
        })
    }

    fn plays(names: &[&str]) -> Vec<Op> {
        std::iter::once(Op::Answer)
            .chain(names.iter().map(|n| Op::Play(n.to_string())))
            .collect()
    }

    async fn run_say(data: serde_json::Value, rt: &Runtime) -> (FakeCall, FlowState) {
        let say = say_of(data).unwrap();
        let mut call = FakeCall::new();
        let mut state = FlowState::default();
        assert_eq!(
            run(&say, &mut call, rt, &mut state).await,
            Ok(Next::Default)
        );
        (call, state)
    }

    #[tokio::test]
    async fn digits_are_played_with_the_shipped_prompts() {
        let (call, _) = run_say(json!({"text": "5012", "type": "digits"}), &rt_with(None)).await;
        assert_eq!(
            call.ops,
            plays(&["digit-5", "digit-0", "digit-1", "digit-2"])
        );
    }

    #[tokio::test]
    async fn number_pronounced_goes_through_tts_in_words() {
        let sp = Arc::new(FakeSpeaker::default());
        let rt = rt_with(Some(sp.clone()));
        let (call, _) = run_say(
            json!({"text": "123", "type": "number", "language": "en-US"}),
            &rt,
        )
        .await;
        assert_eq!(call.ops, plays(&["tts:one hundred twenty-three"]));
        let spoken = sp.spoken.lock().unwrap().clone();
        assert_eq!(
            spoken,
            [(
                "one hundred twenty-three".to_string(),
                "female".to_string(),
                Some("en-US".to_string())
            )]
        );
    }

    #[tokio::test]
    async fn number_without_a_speaker_or_with_a_failing_one_is_said_digit_by_digit() {
        let (call, _) = run_say(json!({"text": "123", "type": "number"}), &rt_with(None)).await;
        assert_eq!(call.ops, plays(&["digit-1", "digit-2", "digit-3"]));

        let (call, _) = run_say(json!({"text": "-3.14", "type": "number"}), &rt_with(None)).await;
        assert_eq!(call.ops, plays(&["digit-3", "digit-1", "digit-4"]));

        let sp = Arc::new(FakeSpeaker {
            fail: true,
            ..FakeSpeaker::default()
        });
        let (call, _) = run_say(
            json!({"text": "1,024", "type": "items"}),
            &rt_with(Some(sp.clone())),
        )
        .await;
        assert_eq!(sp.texts(), ["one thousand twenty-four"]);
        assert_eq!(
            call.ops,
            plays(&["digit-1", "digit-0", "digit-2", "digit-4"])
        );
    }

    #[tokio::test]
    async fn iterated_number_is_digit_by_digit_even_with_a_speaker() {
        let sp = Arc::new(FakeSpeaker::default());
        let (call, _) = run_say(
            json!({"text": "907", "type": "number", "method": "iterated"}),
            &rt_with(Some(sp.clone())),
        )
        .await;
        assert_eq!(call.ops, plays(&["digit-9", "digit-0", "digit-7"]));
        assert!(sp.texts().is_empty());
    }

    #[tokio::test]
    async fn counted_number_is_the_ordinal() {
        let sp = Arc::new(FakeSpeaker::default());
        let rt = rt_with(Some(sp.clone()));
        run_say(
            json!({"text": "21", "type": "number", "method": "counted"}),
            &rt,
        )
        .await;
        // A decimal has no ordinal: its cardinal is said.
        run_say(
            json!({"text": "2.5", "type": "number", "method": "counted"}),
            &rt,
        )
        .await;
        assert_eq!(sp.texts(), ["twenty-first", "two point five"]);
    }

    #[tokio::test]
    async fn telephone_number_says_only_its_digits() {
        let (call, _) = run_say(
            json!({"text": "+1 (415) 555-0100", "type": "telephone_number"}),
            &rt_with(None),
        )
        .await;
        let expected: Vec<String> = "14155550100"
            .chars()
            .map(|c| format!("digit-{c}"))
            .collect();
        let names: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(call.ops, plays(&names));
    }

    #[tokio::test]
    async fn a_terminator_stops_the_rest_and_the_key_is_collected() {
        let say = say_of(json!({"text": "5012", "type": "digits"})).unwrap();
        let mut call = FakeCall::new();
        call.digits.push_back('#');
        let mut state = FlowState::default();
        let rt = rt_with(None);
        assert_eq!(
            run(&say, &mut call, &rt, &mut state).await,
            Ok(Next::Default)
        );
        assert_eq!(call.ops, plays(&["digit-5"]));
        assert_eq!(state.collections.get(DEFAULT_COLLECTION), Some("#"));

        // A key that is not a terminator is collected and the saying goes on.
        let say = say_of(json!({"text": "50", "type": "digits", "terminators": ["#"]})).unwrap();
        let mut call = FakeCall::new();
        call.digits.push_back('1');
        let mut state = FlowState::default();
        run(&say, &mut call, &rt, &mut state).await.unwrap();
        assert_eq!(call.ops, plays(&["digit-5", "digit-0"]));
        assert_eq!(state.collections.get(DEFAULT_COLLECTION), Some("1"));
    }

    #[tokio::test]
    async fn a_terminator_stops_spoken_words_too() {
        let sp = Arc::new(FakeSpeaker::default());
        let say = say_of(json!({"text": "Ab1", "terminators": ["*"]})).unwrap();
        let mut call = FakeCall::new();
        call.digits.push_back('*');
        let mut state = FlowState::default();
        run(&say, &mut call, &rt_with(Some(sp.clone())), &mut state)
            .await
            .unwrap();
        assert_eq!(call.ops, plays(&["tts:A"]));
        assert_eq!(sp.texts(), ["A"]);
    }

    #[tokio::test]
    async fn name_spelled_is_the_default_type_letters_by_tts_digits_by_prompt() {
        let sp = Arc::new(FakeSpeaker::default());
        let (call, _) = run_say(json!({"text": "Ab 1!"}), &rt_with(Some(sp.clone()))).await;
        assert_eq!(call.ops, plays(&["tts:A", "tts:B", "digit-1"]));
        // Without a hook the letters are skipped, the digits still said.
        let (call, _) = run_say(json!({"text": "Ab 1!"}), &rt_with(None)).await;
        assert_eq!(call.ops, plays(&["digit-1"]));
    }

    #[tokio::test]
    async fn name_phonetic_uses_the_nato_alphabet_and_gender_picks_the_voice() {
        let sp = Arc::new(FakeSpeaker::default());
        run_say(
            json!({"text": "xZ9", "type": "name_phonetic", "gender": "masculine"}),
            &rt_with(Some(sp.clone())),
        )
        .await;
        let spoken = sp.spoken.lock().unwrap().clone();
        let got: Vec<(&str, &str)> = spoken
            .iter()
            .map(|(t, v, _)| (t.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, [("X-ray", "male"), ("Zulu", "male")]);
    }

    #[tokio::test]
    async fn text_types_go_through_tts_as_written_or_are_skipped() {
        let sp = Arc::new(FakeSpeaker::default());
        let (call, _) = run_say(
            json!({"text": "bob@example.com", "type": "e-mail_address"}),
            &rt_with(Some(sp.clone())),
        )
        .await;
        assert_eq!(call.ops, plays(&["tts:bob@example.com"]));
        let (call, _) = run_say(
            json!({"text": "bob@example.com", "type": "e-mail_address"}),
            &rt_with(None),
        )
        .await;
        assert_eq!(call.ops, [Op::Answer]);
    }

    #[tokio::test]
    async fn runs_as_a_node_in_a_flow() {
        let flow = Node::from_json(&json!({
            "module": "say", "data": {"say": "42", "type": "number", "method": "iterated"},
            "children": {"_": {"module": "hangup"}}
        }))
        .unwrap();
        let mut call = FakeCall::new();
        rt_with(None).run(&flow, &mut call).await;
        let mut expected = plays(&["digit-4", "digit-2"]);
        expected.push(Op::Hangup);
        assert_eq!(call.ops, expected);
    }

    #[test]
    fn number_words_table() {
        let table = [
            ("0", "zero"),
            ("7", "seven"),
            ("13", "thirteen"),
            ("20", "twenty"),
            ("21", "twenty-one"),
            ("100", "one hundred"),
            ("101", "one hundred one"),
            ("999", "nine hundred ninety-nine"),
            ("1000", "one thousand"),
            ("1001", "one thousand one"),
            ("1000000", "one million"),
            ("2000000005", "two billion five"),
            ("-42", "minus forty-two"),
            ("3.14", "three point one four"),
            ("1,234", "one thousand two hundred thirty-four"),
            ("+7", "seven"),
            (" 0012 ", "twelve"),
            (".5", "zero point five"),
            ("-0", "zero"),
            ("-0.50", "minus zero point five zero"),
            ("1000000000000000", "one quadrillion"),
            (
                "999999999999999999",
                "nine hundred ninety-nine quadrillion nine hundred ninety-nine trillion \
                 nine hundred ninety-nine billion nine hundred ninety-nine million \
                 nine hundred ninety-nine thousand nine hundred ninety-nine",
            ),
            ("1001001000", "one billion one million one thousand"),
            ("1000001000", "one billion one thousand"),
        ];
        for (n, words) in table {
            assert_eq!(number_words(n).as_deref(), Some(words), "{n}");
        }
        let w = number_words(&"1".repeat(33)).unwrap_or_default();
        assert!(
            w.starts_with("one hundred eleven nonillion one hundred eleven octillion"),
            "{w}"
        );
        assert!(w.ends_with("thousand one hundred eleven"), "{w}");
        // Past 10^33 - 1, and anything that is not a number: no words.
        for bad in [
            "1".repeat(34).as_str(),
            "",
            "-",
            "+",
            "abc",
            "1.",
            "1..2",
            "1.2.3",
            ",1",
            "1,",
            "1,,2",
            "--1",
            "1e5",
            "1 2",
        ] {
            assert_eq!(number_words(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ordinal_words_table() {
        let table = [
            ("0", "zeroth"),
            ("1", "first"),
            ("2", "second"),
            ("3", "third"),
            ("5", "fifth"),
            ("8", "eighth"),
            ("9", "ninth"),
            ("12", "twelfth"),
            ("20", "twentieth"),
            ("21", "twenty-first"),
            ("100", "one hundredth"),
            ("1003", "one thousand third"),
            ("1000000", "one millionth"),
        ];
        for (n, words) in table {
            assert_eq!(ordinal_words(n).as_deref(), Some(words), "{n}");
        }
        for bad in ["-1", "1.5", "x"] {
            assert_eq!(ordinal_words(bad), None, "{bad}");
        }
    }
}
