//! `say` on a fake call with a fake speaker: what each type and method plays, the fallbacks
//! without TTS, terminators, and the number and ordinal word tables.

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
