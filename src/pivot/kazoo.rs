//! Reading the pivot server's answer: choosing Kazoo JSON or TwiML by Content-Type (spec b.1,
//! j.5, j.6) and decoding it. A Kazoo answer is the flow node itself (spec b.3), validated by
//! [`Node::from_json`] (spec j.7). Errors tell a JSON syntax error from a schema error, because
//! the debug log stores those two whatever `debug` says (spec j.4).

use serde_json::Value;

use super::twiml::{self, TwimlError, Verb};
use crate::flow::Node;

/// Largest answer body accepted (the HTTP client stops reading past it).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Bytes of context kept on each side of a JSON syntax error (`json_errors.before/after`).
const JSON_CONTEXT_BYTES: usize = 40;

/// Which translator reads the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFormat {
    KazooJson,
    Twiml,
}

/// A decoded answer, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The call's new callflow (spec b.3).
    Flow(Box<Node>),
    /// TwiML verbs to run in order (spec d).
    Twiml(Vec<Verb>),
}

/// Why an answer cannot be run. Every one sends the call to the pivot node's `_` child (j.4).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No body, or only whitespace (spec j.5: nothing to run).
    #[error("empty answer")]
    Empty,
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    /// A Content-Type that is neither JSON nor XML, on a body that starts with neither `<`
    /// nor `{` (spec j.6).
    #[error("answer of type {content_type:?} is neither TwiML nor Kazoo JSON")]
    UnknownFormat { content_type: String },
    /// Not JSON. `line`/`column` are 1-based (column in bytes); `before`/`after` are the text
    /// around the error, as Kazoo's `json_errors` record keeps them.
    #[error("json error at line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
        before: String,
        after: String,
    },
    /// JSON, but not a valid callflow: the JSON path of the fault (`flow.data.id`) and why.
    #[error("schema error at {path}: {message}")]
    Schema { path: String, message: String },
    /// Chosen as TwiML but not a TwiML document.
    #[error("twiml error: {0}")]
    Twiml(#[from] TwimlError),
}

impl AnswerError {
    /// A short name for logs and debug records: `empty`, `too-large`, `unknown-format`,
    /// `json-error`, `schema-error`, `twiml-error`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnswerError::Empty => "empty",
            AnswerError::TooLarge => "too-large",
            AnswerError::UnknownFormat { .. } => "unknown-format",
            AnswerError::Json { .. } => "json-error",
            AnswerError::Schema { .. } => "schema-error",
            AnswerError::Twiml(_) => "twiml-error",
        }
    }

    /// Json and schema errors are stored in the debug log even when `debug` is false (j.4).
    pub fn always_recorded(&self) -> bool {
        matches!(self, AnswerError::Json { .. } | AnswerError::Schema { .. })
    }
}

/// The body without a UTF-8 byte order mark and leading whitespace.
fn content_start(body: &[u8]) -> &[u8] {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let skip = body.iter().take_while(|b| b.is_ascii_whitespace()).count();
    body.get(skip..).unwrap_or_default()
}

/// Chooses the translator (spec j.6). The media type is the Content-Type cut at `;` and
/// trimmed, compared without case (RFC 9110 §8.3.1; Kazoo compares with case, which only
/// matters for `Application/JSON`, and that still reaches JSON through the sniffing below):
/// - `application/json` → Kazoo JSON;
/// - `text/xml`, `application/xml`, or no (or an empty) Content-Type → TwiML;
/// - anything else → TwiML if the body (after a BOM and whitespace) starts with `<`, Kazoo
///   JSON if it starts with `{`, else [`AnswerError::UnknownFormat`].
///
/// An empty (or all-whitespace) body is [`AnswerError::Empty`] whatever the type (spec j.5).
pub fn choose_format(content_type: Option<&str>, body: &[u8]) -> Result<AnswerFormat, AnswerError> {
    let start = content_start(body);
    if start.is_empty() {
        return Err(AnswerError::Empty);
    }
    let media = content_type
        .map(|ct| ct.split(';').next().unwrap_or_default().trim())
        .unwrap_or_default();
    if media.is_empty()
        || media.eq_ignore_ascii_case("text/xml")
        || media.eq_ignore_ascii_case("application/xml")
    {
        return Ok(AnswerFormat::Twiml);
    }
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(AnswerFormat::KazooJson);
    }
    match start.first() {
        Some(b'<') => Ok(AnswerFormat::Twiml),
        Some(b'{') => Ok(AnswerFormat::KazooJson),
        _ => Err(AnswerError::UnknownFormat {
            content_type: media.to_string(),
        }),
    }
}

/// Parses a Kazoo answer as JSON (a UTF-8 BOM is allowed). Nesting is bounded by serde_json's
/// recursion limit (128), so no body can exhaust the stack.
pub fn parse_kazoo(body: &[u8]) -> Result<Value, AnswerError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if content_start(body).is_empty() {
        return Err(AnswerError::Empty);
    }
    serde_json::from_slice(body).map_err(|e| json_error(body, &e))
}

fn json_error(body: &[u8], e: &serde_json::Error) -> AnswerError {
    let (line, column) = (e.line(), e.column());
    // serde_json counts columns in bytes, 1-based, at the last byte it read.
    let line_start = if line <= 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map_or(body.len(), |(i, _)| i + 1)
    };
    // An EOF error points at the last byte read: the fault is after it, at the end.
    let at = if e.is_eof() {
        body.len()
    } else {
        (line_start + column.saturating_sub(1)).min(body.len())
    };
    let from = at.saturating_sub(JSON_CONTEXT_BYTES);
    let to = at.saturating_add(JSON_CONTEXT_BYTES).min(body.len());
    let text = |r: std::ops::Range<usize>| {
        String::from_utf8_lossy(body.get(r).unwrap_or_default()).into_owned()
    };
    // serde_json's Display adds " at line L column C"; the fields carry those already.
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(&message).to_string(),
        None => message,
    };
    AnswerError::Json {
        line,
        column,
        message,
        before: text(from..at),
        after: text(at..to),
    }
}

/// Decodes a Kazoo answer into the call's new callflow: JSON, then validation with defaults
/// filled (spec b.3, j.7). The body is the node itself; error paths start at `flow`.
pub fn decode_flow(body: &[u8]) -> Result<Node, AnswerError> {
    let value = parse_kazoo(body)?;
    Node::from_json(&value).map_err(|e| AnswerError::Schema {
        path: e.path,
        message: e.message,
    })
}

/// Chooses the format and decodes the answer: what the pivot runtime calls on a 2xx.
pub fn decode(content_type: Option<&str>, body: &[u8]) -> Result<Answer, AnswerError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(AnswerError::TooLarge);
    }
    match choose_format(content_type, body)? {
        AnswerFormat::KazooJson => Ok(Answer::Flow(Box::new(decode_flow(body)?))),
        AnswerFormat::Twiml => Ok(Answer::Twiml(twiml::parse(body)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnswerFormat::{KazooJson, Twiml};

    #[test]
    fn choose_format_table() {
        let xml = b"<Response/>".as_slice();
        let json = b"{\"module\":\"hangup\"}".as_slice();
        type Case<'a> = (Option<&'a str>, &'a [u8], Result<AnswerFormat, &'a str>);
        let cases: [Case; 17] = [
            (Some("application/json"), json, Ok(KazooJson)),
            (Some("application/json; charset=utf-8"), xml, Ok(KazooJson)),
            (Some(" Application/JSON "), json, Ok(KazooJson)),
            (Some("text/xml"), json, Ok(Twiml)),
            (Some("application/xml;charset=UTF-8"), xml, Ok(Twiml)),
            (None, xml, Ok(Twiml)),
            (None, json, Ok(Twiml)),
            (Some(""), xml, Ok(Twiml)),
            (Some("text/html; charset=UTF-8"), xml, Ok(Twiml)),
            (
                Some("text/html"),
                b"\xEF\xBB\xBF \r\n <?xml?><Response/>",
                Ok(Twiml),
            ),
            (Some("text/html"), json, Ok(KazooJson)),
            (Some("text/plain"), b"\n\t{}", Ok(KazooJson)),
            (Some("text/html"), b"Hello world", Err("unknown-format")),
            (Some("text/html"), b"[1]", Err("unknown-format")),
            (Some("application/json"), b"", Err("empty")),
            (None, b"  \r\n", Err("empty")),
            (Some("text/html"), b"\xEF\xBB\xBF", Err("empty")),
        ];
        for (ct, body, want) in cases {
            let got = choose_format(ct, body).map_err(|e| e.kind());
            assert_eq!(got, want, "{ct:?} {:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            choose_format(Some("text/html; q=1"), b"oops"),
            Err(AnswerError::UnknownFormat {
                content_type: "text/html".into()
            })
        );
    }

    #[test]
    fn json_error_is_located() {
        let err = decode_flow(b"{\"module\":");
        let Err(AnswerError::Json {
            line,
            column,
            message,
            before,
            after,
        }) = err
        else {
            panic!("{err:?}")
        };
        assert_eq!((line, column), (1, 10));
        assert_eq!(message, "EOF while parsing a value");
        assert_eq!(before, "{\"module\":");
        assert_eq!(after, "");

        let err = parse_kazoo(b"{\n  \"module\": \"play\",\n  \"data\": {x}\n}");
        let Err(AnswerError::Json {
            line,
            column,
            before,
            after,
            ..
        }) = err
        else {
            panic!("{err:?}")
        };
        assert_eq!((line, column), (3, 12));
        assert!(before.ends_with("\"data\": {"), "{before:?}");
        assert!(after.starts_with("x}"), "{after:?}");

        let err = parse_kazoo(b"{} trailing").map_err(|e| e.kind());
        assert_eq!(err, Err("json-error"));
        assert!(AnswerError::Json {
            line: 1,
            column: 1,
            message: String::new(),
            before: String::new(),
            after: String::new()
        }
        .always_recorded());
    }

    #[test]
    fn schema_error_has_path() {
        let err = decode_flow(br#"{"module":"play","data":{"id":5}}"#);
        let Err(AnswerError::Schema { path, message }) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, "flow.data.id");
        assert!(!message.is_empty());
        assert!(err.as_ref().err().is_some_and(AnswerError::always_recorded));

        // A body wrapped as a callflow document is refused: module missing (spec b.3).
        let err = decode_flow(br#"{"flow":{"module":"play","data":{"id":"welcome"}}}"#);
        assert_eq!(
            err,
            Err(AnswerError::Schema {
                path: "flow.module".into(),
                message: "required".into()
            })
        );

        let err = decode_flow(br#"{"module":"no_such_module"}"#);
        assert!(
            matches!(&err, Err(AnswerError::Schema { path, .. }) if path == "flow.module"),
            "{err:?}"
        );
        let err = decode_flow(b"[1,2]");
        assert!(
            matches!(&err, Err(AnswerError::Schema { path, .. }) if path == "flow"),
            "{err:?}"
        );
    }

    #[test]
    fn valid_flow_gets_defaults() {
        let body = "\u{feff}{\"module\":\"play\",\"data\":{\"id\":\"welcome\"},\
                    \"children\":{\"_\":{\"module\":\"hangup\"}}}";
        let node = match decode_flow(body.as_bytes()) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(node.children.len(), 1);
        let json = node.to_json();
        assert_eq!(json["module"], "play");
        assert_eq!(json["data"]["id"], "welcome");
        assert_eq!(json["data"]["answer"], true);
    }

    #[test]
    fn decode_dispatches() {
        let a = decode(Some("text/html"), b"<Response><Hangup/></Response>");
        assert_eq!(a, Ok(Answer::Twiml(vec![Verb::Hangup])));
        let a = decode(Some("application/json"), br#"{"module":"hangup"}"#);
        assert!(matches!(a, Ok(Answer::Flow(_))), "{a:?}");
        let a = decode(None, b"<Reply/>").map_err(|e| e.kind());
        assert_eq!(a, Err("twiml-error"));
        // application/json is never read as TwiML, even when it looks like it.
        let a = decode(Some("application/json"), b"<Response/>").map_err(|e| e.kind());
        assert_eq!(a, Err("json-error"));
        let big = vec![b' '; MAX_ANSWER_BYTES + 1];
        assert_eq!(decode(None, &big), Err(AnswerError::TooLarge));
    }
}
