//! `say` data (spec c.4 and j.8): the `text` (alias `say`), its `type`, `method`, `language`,
//! `gender` and `terminators`; what each type does is told in `callflow::modules::say`.
//! The date and time types are refused here, and the number types need a number.

use serde_json::{Map, Value};

use crate::flow::node::{terminators_json, Data, ValidationError, ALL_KEYS};

/// Types accepted: Kazoo's enum (`callflows.audio_macro.say.json`) less the date and time
/// ones, plus `digits`.
pub const TYPES: &[&str] = &[
    "number",
    "items",
    "persons",
    "messages",
    "digits",
    "telephone_number",
    "telephone_extension",
    "account_number",
    "name_spelled",
    "name_phonetic",
    "url",
    "ip_address",
    "e-mail_address",
    "postal_address",
    "currency",
];

/// Kazoo types pivotd refuses: they need a clock and a language pack.
const REFUSED_TYPES: &[&str] = &[
    "time_measurement",
    "current_date",
    "current_time",
    "current_date_time",
    "short_date_time",
];

pub const METHODS: &[&str] = &["pronounced", "iterated", "counted", "none"];

pub const GENDERS: &[&str] = &["masculine", "feminine", "neuter"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Say {
    pub text: String,
    /// One of [`TYPES`].
    pub say_type: String,
    /// One of [`METHODS`].
    pub method: String,
    pub language: Option<String>,
    /// One of [`GENDERS`], when given.
    pub gender: Option<String>,
    pub terminators: Vec<char>,
}

/// How a type is said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Number,
    Spelled,
    Phonetic,
    Text,
}

pub fn kind_of(say_type: &str) -> Kind {
    match say_type {
        "number" | "items" | "persons" | "messages" => Kind::Number,
        "name_phonetic" => Kind::Phonetic,
        "url" | "ip_address" | "e-mail_address" | "postal_address" | "currency" => Kind::Text,
        _ => Kind::Spelled,
    }
}

impl Say {
    /// Says `text` with the defaults (`name_spelled`, `pronounced`, every key a terminator).
    pub fn new(text: &str, say_type: &str) -> Say {
        Say {
            text: text.to_string(),
            say_type: say_type.to_string(),
            method: "pronounced".into(),
            language: None,
            gender: None,
            terminators: ALL_KEYS.to_vec(),
        }
    }

    pub fn from_data(d: &Data<'_>) -> Result<Say, ValidationError> {
        let (text, text_key) = match d.opt_str("text")? {
            Some(t) => (t, "text"),
            None => match d.opt_str("say")? {
                Some(t) => (t, "say"),
                None => {
                    return Err(ValidationError::new(
                        d.path_of("text"),
                        "required (the text to say; `say` is accepted as its alias)",
                    ))
                }
            },
        };
        d.check_text_len(text_key, &text, 1000)?;
        if let Some(refused) = d
            .opt_str("type")?
            .filter(|t| REFUSED_TYPES.contains(&t.as_str()))
        {
            return Err(ValidationError::new(
                d.path_of("type"),
                format!(
                    "{refused:?} is not supported by pivotd (it needs a clock and a language \
                     pack); use the tts module with the sentence to say"
                ),
            ));
        }
        let say_type = d
            .opt_one_of("type", TYPES)?
            .unwrap_or_else(|| "name_spelled".into());
        if kind_of(&say_type) == Kind::Number && parse_number(&text).is_none() {
            return Err(ValidationError::new(
                d.path_of(text_key),
                format!(
                    "type {say_type} needs a number such as 123, -42, 1,234 or 3.14, not {text:?}"
                ),
            ));
        }
        let method = d
            .opt_one_of("method", METHODS)?
            .unwrap_or_else(|| "pronounced".into());
        let gender = d.opt_one_of("gender", GENDERS)?;
        let terminators = d.terminators()?;
        Ok(Say {
            text,
            say_type,
            method,
            language: d.opt_str("language")?,
            gender,
            terminators,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("text".into(), Value::String(self.text.clone()));
        m.insert("type".into(), Value::String(self.say_type.clone()));
        m.insert("method".into(), Value::String(self.method.clone()));
        if let Some(l) = &self.language {
            m.insert("language".into(), Value::String(l.clone()));
        }
        if let Some(g) = &self.gender {
            m.insert("gender".into(), Value::String(g.clone()));
        }
        m.insert("terminators".into(), terminators_json(&self.terminators));
        m
    }

    /// The TTS voice for `gender` (Kazoo voices: `male`, `female`; `female` is tts's default).
    pub fn voice(&self) -> &'static str {
        match self.gender.as_deref() {
            Some("masculine") => "male",
            _ => "female",
        }
    }
}

/// A number as written: sign, integer digits (grouping commas dropped), fraction digits.
#[derive(Debug, PartialEq, Eq)]
pub struct Number<'a> {
    pub negative: bool,
    /// Digits and commas; commas are skipped when read.
    pub integer: &'a str,
    pub fraction: Option<&'a str>,
}

/// `[+-]?[0-9,]*(\.[0-9]+)?` with at least one digit, blanks around allowed; commas only
/// between digits of the integer part.
pub fn parse_number(text: &str) -> Option<Number<'_>> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    let (integer, fraction) = match t.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (t, None),
    };
    let int_ok = integer.bytes().all(|b| b.is_ascii_digit() || b == b',')
        && !integer.starts_with(',')
        && !integer.ends_with(',')
        && !integer.contains(",,");
    let frac_ok = fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    let has_digit = integer.bytes().any(|b| b.is_ascii_digit()) || fraction.is_some();
    (int_ok && frac_ok && has_digit).then_some(Number {
        negative,
        integer,
        fraction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn say_of(v: serde_json::Value) -> Result<Say, ValidationError> {
        Node::from_json(&json!({"module": "say", "data": v})).map(|n| match n.module {
            ModuleData::Say(s) => s,
            other => panic!("not a say: {other:?}"),
        })
    }

    #[test]
    fn defaults_alias_and_round_trip() {
        let s = say_of(json!({"say": "hello"})).unwrap();
        assert_eq!(s, Say::new("hello", "name_spelled"));
        assert_eq!(s.terminators.len(), 12);
        // `text` wins over its alias.
        let s = say_of(json!({"text": "1", "say": "2", "type": "number"})).unwrap();
        assert_eq!(s.text, "1");
        let s = say_of(json!({"text": "7", "type": "number", "method": "counted",
                              "language": "en", "gender": "feminine", "terminators": ["#"]}))
        .unwrap();
        assert_eq!(s.terminators, ['#']);
        // A key that could never be pressed is refused, as in every module.
        let e = say_of(json!({"text": "7", "terminators": ["#", "xx"]})).unwrap_err();
        assert_eq!(e.path, "flow.data.terminators[1]");
        let out = Node::from_json(&json!({"module": "say", "data": {"say": "hi"}}))
            .unwrap()
            .to_json();
        assert_eq!(out["data"]["text"], json!("hi"));
        assert_eq!(out["data"]["type"], json!("name_spelled"));
        assert_eq!(out["data"]["method"], json!("pronounced"));
        assert_eq!(out["data"].get("say"), None);
        let node = Node::from_json(&json!({"module": "say", "data": s.to_json()})).unwrap();
        assert_eq!(node.module, ModuleData::Say(s));
        assert!(node.module.media_ids().is_empty());
    }

    #[test]
    fn bad_values_are_rejected_with_their_path() {
        let cases = [
            (json!({}), "flow.data.text", "required"),
            (json!({"text": 5}), "flow.data.text", "expected a string"),
            (json!({"say": ""}), "flow.data.say", "1 to 1000"),
            (
                json!({"text": "a".repeat(1001)}),
                "flow.data.text",
                "1 to 1000",
            ),
            (
                json!({"text": "1", "type": "digit"}),
                "flow.data.type",
                "not one of",
            ),
            (
                json!({"text": "1", "type": "current_date"}),
                "flow.data.type",
                "not supported",
            ),
            (
                json!({"text": "1", "method": "spoken"}),
                "flow.data.method",
                "not one of",
            ),
            (
                json!({"text": "1", "gender": "male"}),
                "flow.data.gender",
                "not one of",
            ),
            (
                json!({"text": "12a", "type": "number"}),
                "flow.data.text",
                "needs a number",
            ),
            (
                json!({"say": "one", "type": "persons"}),
                "flow.data.say",
                "needs a number",
            ),
            (
                json!({"text": "1", "terminators": "#"}),
                "flow.data.terminators",
                "expected an array",
            ),
        ];
        for (data, path, msg) in cases {
            let e = say_of(data.clone()).unwrap_err();
            assert_eq!(e.path, path, "{data}");
            assert!(e.message.contains(msg), "{data}: {}", e.message);
        }
    }
}
