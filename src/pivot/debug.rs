//! Pivot debug records (spec e.1, j.4, j.15): what pivotd stores about each pivot request so a
//! developer can see what was sent and what came back. Records follow Kazoo's
//! `pivot_call.erl` documents field for field:
//! - request: `uri` (with the query string for GET), `method` (`get`/`post`), `req_headers`
//!   (names and values lower-cased, `{}` when none), `req_body` (`""` for GET);
//! - response: `resp_status_code` (a string), `resp_headers` (lower-cased), `resp_body`;
//! - schema error: `schema_errors` (`{path: {rule: {message}}}`) and `resp_body`;
//! - JSON error: `json_errors` `{before, after, message}` and `resp_body`;
//!
//! each with `call_id` and `iteration`. Request and response records are stored only when
//! the node has `debug: true`; schema- and JSON-error records always (j.4). pivotd adds one
//! record Kazoo does not have: with `debug: true`, a request that got no answer (DNS,
//! connection, TLS, timeout, URL refused) leaves an error record `{"error": reason}`.
//!
//! Plain data in, no SIP types; everything goes through [`Store::write`], which never blocks.

use serde_json::{Map, Value};

use crate::pivot::kazoo::AnswerError;
use crate::store::{gregorian_now, DebugRecord, RecordKind, Store, Write};

/// Which call and which request a record belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugContext {
    pub account_id: String,
    pub call_id: String,
    /// Spec j.14: 1, 2, 3 … over every pivot request of the call.
    pub iteration: u32,
    /// Stored as Kazoo's `pvt_node` and shown as `node` (the pivot node's `voice_url`, or
    /// this server's name: the caller chooses).
    pub node: String,
    /// The pivot node's `debug` flag.
    pub debug: bool,
}

/// Kazoo's `message` for a JSON error: `"trailing data"` when a document was followed by
/// more text, else `"invalid JSON"`.
pub fn kazoo_json_message(serde_message: &str) -> &'static str {
    if serde_message.contains("trailing") {
        "trailing data"
    } else {
        "invalid JSON"
    }
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Headers as Kazoo stores them (`fix_value`): names and values lower-cased. A repeated name
/// keeps all its values joined by `", "` (RFC 9110 §5.3).
pub fn headers_json<I, K, V>(headers: I) -> Value
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut m = Map::new();
    for (k, v) in headers {
        let k = k.as_ref().to_lowercase();
        let v = v.as_ref().to_lowercase();
        match m.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                m.insert(k, Value::String(v));
            }
        }
    }
    Value::Object(m)
}

fn record(ctx: &DebugContext, kind: RecordKind, fields: Vec<(&str, Value)>) -> DebugRecord {
    let mut doc = Map::new();
    doc.insert("call_id".into(), Value::String(ctx.call_id.clone()));
    doc.insert("iteration".into(), Value::from(ctx.iteration));
    for (k, v) in fields {
        doc.insert(k.into(), v);
    }
    DebugRecord {
        id: new_id(),
        account_id: ctx.account_id.clone(),
        call_id: ctx.call_id.clone(),
        iteration: ctx.iteration,
        node: ctx.node.clone(),
        kind,
        created: gregorian_now(),
        doc: Value::Object(doc),
    }
}

/// The request record. `method` is stored lower-cased (`get`/`post`, as Kazoo's atoms).
pub fn request_record<I, K, V>(
    ctx: &DebugContext,
    uri: &str,
    method: &str,
    headers: I,
    body: &[u8],
) -> DebugRecord
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    record(
        ctx,
        RecordKind::Request,
        vec![
            ("uri", Value::String(uri.to_owned())),
            ("method", Value::String(method.to_ascii_lowercase())),
            ("req_headers", headers_json(headers)),
            ("req_body", Value::String(body_text(body))),
        ],
    )
}

/// The response record: status as a string (`"404"`), headers lower-cased, body as text.
pub fn response_record<I, K, V>(
    ctx: &DebugContext,
    status: u16,
    headers: I,
    body: &[u8],
) -> DebugRecord
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    record(
        ctx,
        RecordKind::Response,
        vec![
            ("resp_status_code", Value::String(status.to_string())),
            ("resp_headers", headers_json(headers)),
            ("resp_body", Value::String(body_text(body))),
        ],
    )
}

/// A schema-error record: `schema_errors` in the shape of Kazoo's `errors_to_jobj`,
/// `{"<path>": {"<rule>": {"message": …}}}`. The rule is `required` for a missing key, else
/// `invalid` (pivotd's typed decoding names no finer rule).
pub fn schema_error_record(
    ctx: &DebugContext,
    path: &str,
    message: &str,
    body: &[u8],
) -> DebugRecord {
    let rule = if message == "required" {
        "required"
    } else {
        "invalid"
    };
    let mut rule_obj = Map::new();
    rule_obj.insert("message".into(), Value::String(message.to_owned()));
    let mut by_rule = Map::new();
    by_rule.insert(rule.into(), Value::Object(rule_obj));
    let mut errors = Map::new();
    errors.insert(path.to_owned(), Value::Object(by_rule));
    record(
        ctx,
        RecordKind::Error,
        vec![
            ("schema_errors", Value::Object(errors)),
            ("resp_body", Value::String(body_text(body))),
        ],
    )
}

/// A JSON-error record: `json_errors` `{before, after, message}` with Kazoo's message
/// (see [`kazoo_json_message`]); `detail` adds the parser's own words and position.
pub fn json_error_record(
    ctx: &DebugContext,
    detail: &str,
    before: &str,
    after: &str,
    body: &[u8],
) -> DebugRecord {
    let mut e = Map::new();
    e.insert("before".into(), Value::String(before.to_owned()));
    e.insert("after".into(), Value::String(after.to_owned()));
    e.insert(
        "message".into(),
        Value::String(kazoo_json_message(detail).into()),
    );
    e.insert("detail".into(), Value::String(detail.to_owned()));
    record(
        ctx,
        RecordKind::Error,
        vec![
            ("json_errors", Value::Object(e)),
            ("resp_body", Value::String(body_text(body))),
        ],
    )
}

/// pivotd's record of a request that failed without a usable answer: `{"error": reason}`.
pub fn failure_record(ctx: &DebugContext, reason: &str) -> DebugRecord {
    record(
        ctx,
        RecordKind::Error,
        vec![("error", Value::String(reason.to_owned()))],
    )
}

/// Where the pivot module sends its debug records. `DebugSink::disabled()` (no store
/// configured) accepts every call and stores nothing. Each `record_*` returns whether a record
/// was queued (false: not to be stored, no store, or the queue was full).
#[derive(Clone, Default)]
pub struct DebugSink {
    store: Option<Store>,
}

impl std::fmt::Debug for DebugSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugSink")
            .field("enabled", &self.store.is_some())
            .finish()
    }
}

impl DebugSink {
    pub fn new(store: Store) -> DebugSink {
        DebugSink { store: Some(store) }
    }

    pub fn disabled() -> DebugSink {
        DebugSink { store: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.store.is_some()
    }

    fn put(&self, r: DebugRecord) -> bool {
        match &self.store {
            Some(s) => s.write(Write::Debug(r)),
            None => false,
        }
    }

    /// Stores the request record when `ctx.debug`. Pass the headers pivotd sends (for POST,
    /// `content-type`; none for GET, as Kazoo).
    pub fn record_request<I, K, V>(
        &self,
        ctx: &DebugContext,
        uri: &str,
        method: &str,
        headers: I,
        body: &[u8],
    ) -> bool
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        if !ctx.debug || self.store.is_none() {
            return false;
        }
        self.put(request_record(ctx, uri, method, headers, body))
    }

    /// Stores the response record when `ctx.debug` (any status: Kazoo logs 4xx/5xx too).
    pub fn record_response<I, K, V>(
        &self,
        ctx: &DebugContext,
        status: u16,
        headers: I,
        body: &[u8],
    ) -> bool
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        if !ctx.debug || self.store.is_none() {
            return false;
        }
        self.put(response_record(ctx, status, headers, body))
    }

    /// Records why an answer was refused: JSON and schema errors whatever `ctx.debug` says
    /// (spec j.4); the other kinds (empty, too large, unknown format, TwiML) as a failure
    /// record when `ctx.debug`. `body` is the answer's body.
    pub fn record_error(&self, ctx: &DebugContext, err: &AnswerError, body: &[u8]) -> bool {
        if self.store.is_none() {
            return false;
        }
        match err {
            AnswerError::Json {
                line,
                column,
                message,
                before,
                after,
            } => {
                let detail = format!("{message} at line {line} column {column}");
                self.put(json_error_record(ctx, &detail, before, after, body))
            }
            AnswerError::Schema { path, message } => {
                self.put(schema_error_record(ctx, path, message, body))
            }
            other if ctx.debug => self.put(failure_record(
                ctx,
                &format!("answer refused ({}): {other}", other.kind()),
            )),
            _ => false,
        }
    }

    /// Records a request that got no usable answer (URL refused, DNS, connection, TLS,
    /// timeout) when `ctx.debug`.
    pub fn record_failure(&self, ctx: &DebugContext, reason: &str) -> bool {
        if !ctx.debug || self.store.is_none() {
            return false;
        }
        self.put(failure_record(ctx, reason))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::GREGORIAN_OFFSET;

    fn ctx(iteration: u32, debug: bool) -> DebugContext {
        DebugContext {
            account_id: "acc".into(),
            call_id: "829597750@10.26.0.158".into(),
            iteration,
            node: "pivotd@host".into(),
            debug,
        }
    }

    fn unix_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    #[test]
    fn request_record_has_the_seed_shape() {
        let uri = "http://pivot.example/cf.php?CallSid=829597750%4010.26.0.158";
        let r = request_record(&ctx(1, true), uri, "GET", Vec::<(&str, &str)>::new(), b"");
        assert_eq!(r.kind, RecordKind::Request);
        assert_eq!(
            r.doc,
            json!({"call_id": "829597750@10.26.0.158", "iteration": 1, "uri": uri,
                   "method": "get", "req_headers": {}, "req_body": ""})
        );
        assert_eq!(r.id.len(), 32);
        assert!(r.id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!((r.created - GREGORIAN_OFFSET - unix_now()).abs() <= 2);
        assert!(r.created > 63_000_000_000);
    }

    #[test]
    fn response_headers_are_lower_cased_and_status_is_a_string() {
        let r = response_record(
            &ctx(1, true),
            404,
            [
                ("Content-Type", "text/html"),
                ("Date", "Fri, 30 May 2014 20:42:53 GMT"),
                ("X-A", "1"),
                ("x-a", "2"),
            ],
            b"<h1>Not Found</h1>",
        );
        assert_eq!(
            r.doc,
            json!({"call_id": "829597750@10.26.0.158", "iteration": 1,
                   "resp_status_code": "404",
                   "resp_headers": {"content-type": "text/html",
                                    "date": "fri, 30 may 2014 20:42:53 gmt", "x-a": "1, 2"},
                   "resp_body": "<h1>Not Found</h1>"})
        );
    }

    #[test]
    fn error_records_follow_kazoo() {
        let s = schema_error_record(&ctx(2, false), "flow.module", "required", b"{}");
        assert_eq!(s.kind, RecordKind::Error);
        assert_eq!(
            s.doc["schema_errors"],
            json!({"flow.module": {"required": {"message": "required"}}})
        );
        assert_eq!(s.doc["resp_body"], "{}");
        assert_eq!(s.doc["iteration"], 2);

        let j = json_error_record(
            &ctx(1, false),
            "trailing characters at line 1 column 3",
            "{}",
            "x",
            b"{}x",
        );
        assert_eq!(j.doc["json_errors"]["message"], "trailing data");
        assert_eq!(j.doc["json_errors"]["before"], "{}");
        assert_eq!(j.doc["json_errors"]["after"], "x");
        let j = json_error_record(&ctx(1, false), "EOF while parsing a value", "{", "", b"{");
        assert_eq!(j.doc["json_errors"]["message"], "invalid JSON");
        assert_eq!(j.doc["resp_body"], "{");
    }

    #[test]
    fn full_flow_reads_back_in_order() {
        let store = Store::open(":memory:").unwrap();
        let sink = DebugSink::new(store.clone());
        let c1 = ctx(1, true);
        let uri1 = "http://w.example/ivr?Call-ID=829597750%4010.26.0.158";
        assert!(sink.record_request(&c1, uri1, "GET", Vec::<(String, String)>::new(), b""));
        // As in `HttpResponse::headers`.
        let headers: Vec<(String, String)> =
            Vec::from([("Content-Type".to_string(), "application/json".to_string())]);
        let body1 = br#"{"module":"pivot","data":{"voice_url":"http://w.example/2"}}"#;
        assert!(sink.record_response(&c1, 200, headers.iter().map(|(k, v)| (k, v)), body1));
        let c2 = ctx(2, true);
        assert!(sink.record_request(
            &c2,
            "http://w.example/2",
            "post",
            [("Content-Type", "application/x-www-form-urlencoded")],
            b"Digits=12&Call-ID=829597750%4010.26.0.158",
        ));
        assert!(sink.record_response(
            &c2,
            200,
            [("content-type", "application/json")],
            b"{\"module\":}"
        ));
        let err = AnswerError::Json {
            line: 1,
            column: 11,
            message: "expected value".into(),
            before: "{\"module\":".into(),
            after: "}".into(),
        };
        assert!(sink.record_error(&c2, &err, b"{\"module\":}"));
        store.flush().unwrap();

        let got = store.debug_records("acc", "829597750@10.26.0.158").unwrap();
        let kinds: Vec<_> = got.iter().map(|r| (r.kind, r.iteration)).collect();
        assert_eq!(
            kinds,
            [
                (RecordKind::Request, 1),
                (RecordKind::Response, 1),
                (RecordKind::Request, 2),
                (RecordKind::Response, 2),
                (RecordKind::Error, 2)
            ]
        );
        assert_eq!(got[0].doc["uri"], uri1);
        assert_eq!(got[0].doc["req_headers"], json!({}));
        assert_eq!(got[1].doc["resp_status_code"], "200");
        assert_eq!(
            got[1].doc["resp_body"],
            String::from_utf8_lossy(body1).as_ref()
        );
        assert_eq!(got[2].doc["method"], "post");
        assert_eq!(
            got[2].doc["req_headers"],
            json!({"content-type": "application/x-www-form-urlencoded"})
        );
        assert_eq!(
            got[2].doc["req_body"],
            "Digits=12&Call-ID=829597750%4010.26.0.158"
        );
        assert_eq!(got[4].doc["json_errors"]["message"], "invalid JSON");
        assert_eq!(
            got[4].doc["json_errors"]["detail"],
            "expected value at line 1 column 11"
        );
        for r in &got {
            assert_eq!(r.node, "pivotd@host");
            assert!((r.created - GREGORIAN_OFFSET - unix_now()).abs() <= 2);
        }

        // The listing row of this call: from the first iteration, with the later JSON error.
        let calls = store.debug_calls("acc", 10).unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].uri.as_deref(), Some(uri1));
        assert_eq!(calls[0].status_code.as_deref(), Some("200"));
        assert_eq!(calls[0].iteration, 1);
        assert!(calls[0].has_json_errors && !calls[0].has_schema_errors);
    }

    #[test]
    fn debug_off_stores_only_schema_and_json_errors() {
        let store = Store::open(":memory:").unwrap();
        let sink = DebugSink::new(store.clone());
        let c = ctx(1, false);
        assert!(!sink.record_request(&c, "http://w/", "get", Vec::<(&str, &str)>::new(), b""));
        assert!(!sink.record_response(&c, 404, Vec::<(&str, &str)>::new(), b"nope"));
        assert!(!sink.record_failure(&c, "timeout"));
        assert!(!sink.record_error(&c, &AnswerError::Empty, b""));
        let schema = AnswerError::Schema {
            path: "flow.data.id".into(),
            message: "expected a string".into(),
        };
        assert!(schema.always_recorded());
        assert!(sink.record_error(&c, &schema, br#"{"module":"play","data":{"id":5}}"#));
        store.flush().unwrap();
        let got = store.debug_records("acc", &c.call_id).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].doc["schema_errors"],
            json!({"flow.data.id": {"invalid": {"message": "expected a string"}}})
        );
        assert_eq!(
            got[0].doc["resp_body"],
            r#"{"module":"play","data":{"id":5}}"#
        );
        let calls = store.debug_calls("acc", 10).unwrap();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].has_schema_errors);
        assert_eq!(calls[0].uri, None);
    }

    #[test]
    fn debug_on_records_failures() {
        let store = Store::open(":memory:").unwrap();
        let sink = DebugSink::new(store.clone());
        let c = ctx(3, true);
        assert!(sink.record_failure(&c, "timeout after 5000 ms"));
        assert!(sink.record_error(&c, &AnswerError::Empty, b""));
        store.flush().unwrap();
        let got = store.debug_records("acc", &c.call_id).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].doc["error"], "timeout after 5000 ms");
        assert_eq!(got[1].doc["error"], "answer refused (empty): empty answer");
        assert!(got
            .iter()
            .all(|r| r.kind == RecordKind::Error && r.iteration == 3));
    }

    #[test]
    fn disabled_sink_stores_nothing() {
        let sink = DebugSink::disabled();
        assert!(!sink.is_enabled());
        let c = ctx(1, true);
        assert!(!sink.record_request(&c, "http://w/", "get", Vec::<(&str, &str)>::new(), b""));
        assert!(!sink.record_error(
            &c,
            &AnswerError::Schema {
                path: "flow".into(),
                message: "required".into()
            },
            b"{}"
        ));
    }
}
