//! Building the pivot HTTP request from the state of a call: the parameter names of each
//! request format (spec a.2 Kazoo, a.3 TwiML, j.2, j.3), Kazoo's form encoding (spec a.4), the
//! GET / POST form / POST JSON transports, and pivotd's request signature.
//!
//! Pure: no sockets. The HTTP client sends the [`PreparedRequest`] this module builds.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::fields;
use crate::flow::bridge::BridgeOutcome;
use crate::flow::modules::pivot::{BodyFormat, Method, ReqFormat};
use crate::flow::{CallInfo, DigitCollections, DEFAULT_COLLECTION};

/// What a pivot request says about the call. Plain borrowed data: built per request.
#[derive(Clone, Copy, Debug)]
pub struct PivotState<'a> {
    pub info: &'a CallInfo,
    /// Kazoo format: the call's DTMF collections.
    pub digits: &'a DigitCollections,
    /// TwiML format: the digits gathered since the last request (cleared by the caller after
    /// each request, spec j.3).
    pub twiml_digits: Option<&'a str>,
    /// TwiML `CallStatus` (`ringing`, `in-progress`, `completed`, …); also sent as Kazoo's
    /// `Call-Status` when set (spec a.2).
    pub call_status: Option<&'a str>,
    /// Kazoo `Language`.
    pub language: Option<&'a str>,
    /// Kazoo `User-ID`: owners of the authorizing device.
    pub user_ids: &'a [String],
    /// How the bridge just before this request ended (TwiML `<Dial>`, or a bridging module
    /// before a pivot node): sent on the first request after it only.
    pub bridge: Option<&'a BridgeOutcome>,
}

impl<'a> PivotState<'a> {
    /// A state with only the call and its collections known.
    pub fn new(info: &'a CallInfo, digits: &'a DigitCollections) -> PivotState<'a> {
        PivotState {
            info,
            digits,
            twiml_digits: None,
            call_status: None,
            language: None,
            // The owner of the device that authenticated the call, when one did.
            user_ids: info.user_id.as_slice(),
            bridge: None,
        }
    }
}

/// Kazoo `Api-Version` (spec j.2: the documented value).
pub const KAZOO_API_VERSION: &str = "2015-03-01";
/// TwiML `ApiVersion`.
pub const TWIML_API_VERSION: &str = "2010-04-01";

/// The request parameters with the names of `format`. Unknown (empty) values are omitted, as
/// Kazoo does (spec a.2).
pub fn params(state: &PivotState<'_>, format: ReqFormat) -> Map<String, Value> {
    let info = state.info;
    let mut m = Map::new();
    let put = |m: &mut Map<String, Value>, k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            m.insert(k.to_string(), Value::from(v));
        }
    };
    match format {
        ReqFormat::Kazoo => {
            use fields::kazoo::*;
            put(&mut m, API_VERSION, Some(KAZOO_API_VERSION));
            put(&mut m, DIRECTION, Some(fields::INBOUND));
            put(&mut m, CALL_ID, Some(&info.call_id));
            put(&mut m, ACCOUNT_ID, Some(&info.account_id));
            put(&mut m, FROM, Some(&info.from_user));
            put(&mut m, FROM_REALM, Some(&info.from_realm));
            put(&mut m, TO, Some(&info.to_user));
            put(&mut m, TO_REALM, Some(&info.to_realm));
            put(&mut m, REQUEST, Some(&info.request_user));
            put(&mut m, REQUEST_REALM, Some(&info.request_realm));
            put(&mut m, CALLER_ID_NAME, info.caller_id_name.as_deref());
            put(&mut m, CALLER_ID_NUMBER, info.caller_id_number.as_deref());
            put(&mut m, LANGUAGE, state.language);
            put(&mut m, CALL_STATUS, state.call_status);
            match state.user_ids {
                [] => {}
                [one] => put(&mut m, USER_ID, Some(one)),
                many => {
                    m.insert(
                        USER_ID.to_string(),
                        Value::Array(many.iter().map(|u| Value::from(u.as_str())).collect()),
                    );
                }
            }
            let headers = custom_sip_headers(&info.custom_sip_headers);
            if !headers.is_empty() {
                m.insert(CUSTOM_SIP_HEADERS.to_string(), Value::Object(headers));
            }
            if let Some(d) = digits_param(state.digits) {
                m.insert(DIGITS.to_string(), d);
            }
            if let Some(b) = state.bridge {
                put_dial_call(&mut m, b);
                put(&mut m, HANGUP_CAUSE, Some(b.cause));
                if let Some(code) = final_sip_code(b) {
                    put(&mut m, HANGUP_CODE, Some(&format!("sip:{code}")));
                }
            }
        }
        ReqFormat::Twiml => {
            use fields::twiml::*;
            put(&mut m, CALL_SID, Some(&info.call_id));
            put(&mut m, ACCOUNT_SID, Some(&info.account_id));
            put(&mut m, FROM, Some(&info.from_user));
            put(&mut m, FROM_REALM, Some(&info.from_realm));
            put(&mut m, TO, Some(&info.to_user));
            put(&mut m, TO_REALM, Some(&info.to_realm));
            put(&mut m, CALL_STATUS, state.call_status);
            put(&mut m, API_VERSION, Some(TWIML_API_VERSION));
            put(&mut m, DIRECTION, Some(fields::INBOUND));
            put(&mut m, CALLER_NAME, info.caller_id_name.as_deref());
            put(&mut m, CALLER_NUMBER, info.caller_id_number.as_deref());
            put(&mut m, DIGITS, state.twiml_digits);
            if let Some(b) = state.bridge {
                put_dial_call(&mut m, b);
                if let Some(code) = final_sip_code(b) {
                    m.insert(DIAL_SIP_RESPONSE_CODE.to_string(), code.into());
                }
            }
        }
    }
    m
}

/// Twilio's `DialCall*` fields of a bridge's outcome, the same names in both formats (spec
/// a.3): the status, the other leg's Call-ID when one was sent, and the conversation's whole
/// seconds when it was answered.
fn put_dial_call(m: &mut Map<String, Value>, b: &BridgeOutcome) {
    use fields::twiml::*;
    m.insert(DIAL_CALL_STATUS.to_string(), b.status.as_str().into());
    if let Some(sid) = b.b_call_id.as_deref().filter(|s| !s.is_empty()) {
        m.insert(DIAL_CALL_SID.to_string(), sid.into());
    }
    if b.answered() {
        m.insert(DIAL_CALL_DURATION.to_string(), b.duration.as_secs().into());
    }
}

/// The final SIP response of the bridge's INVITE: the failure's code, or 200 when it was
/// answered (the outcome records codes of failures only). None when no response came (nothing
/// to ring, a timeout).
fn final_sip_code(b: &BridgeOutcome) -> Option<u16> {
    b.sip_code.or(b.answered().then_some(200))
}

/// The CDR posted to a TwiML pivot's `cdr_url` when the call ends (spec b.5), in Kazoo's
/// names. Unlike a request's parameters, empty values are sent. Durations are whole seconds
/// from the call's start (`duration_s`) and from its answer (`billing_s`).
pub fn cdr_params(
    info: &CallInfo,
    answered: bool,
    duration_s: u64,
    billing_s: u64,
) -> Map<String, Value> {
    use fields::kazoo::*;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put(CALL_ID, info.call_id.clone().into());
    put(ACCOUNT_ID, info.account_id.clone().into());
    put(DIRECTION, fields::INBOUND.into());
    put(FROM, info.from_user.clone().into());
    put(FROM_REALM, info.from_realm.clone().into());
    put(TO, info.to_user.clone().into());
    put(TO_REALM, info.to_realm.clone().into());
    put(REQUEST, info.request_user.clone().into());
    if let Some(n) = &info.caller_id_name {
        put(CALLER_ID_NAME, n.clone().into());
    }
    if let Some(n) = &info.caller_id_number {
        put(CALLER_ID_NUMBER, n.clone().into());
    }
    let (cause, code) = if answered {
        ("NORMAL_CLEARING", "sip:200")
    } else {
        ("NO_ANSWER", "sip:480")
    };
    put(HANGUP_CAUSE, cause.into());
    put(HANGUP_CODE, code.into());
    put(DURATION_SECONDS, duration_s.into());
    put(BILLING_SECONDS, billing_s.into());
    m
}

/// The `Digits` parameter of a Kazoo-format request (spec j.3): absent when there is no
/// collection, a plain string while only the unnamed one exists, else an object of all.
fn digits_param(digits: &DigitCollections) -> Option<Value> {
    if digits.is_empty() {
        return None;
    }
    if digits.unnamed_only() {
        return digits.get(DEFAULT_COLLECTION).map(Value::from);
    }
    Some(Value::Object(
        digits
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect(),
    ))
}

/// The INVITE's `X-` headers as Kazoo's `Custom-SIP-Headers` object. A header present more
/// than once is joined with ", " (RFC 3261 §7.3.1: equivalent to one comma-separated value).
fn custom_sip_headers(headers: &[(String, String)]) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let is_x = name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-"));
        if !is_x {
            continue;
        }
        match out.get_mut(name) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            _ => {
                out.insert(name.clone(), Value::from(value.as_str()));
            }
        }
    }
    out
}

/// Kazoo's form encoding (`kz_http_util:json_to_querystring`, spec a.4): `key=value` pairs
/// joined by `&`; in values a space becomes `+`, `A-Z a-z 0-9 . - ~ _` pass and every other
/// byte becomes `%XX` (upper-case hex); `true`/`false` words; numbers in decimal; a list
/// `K: [a, b]` gives `K[]=a&K[]=b`; an object `K: {x: 1}` gives `K[x]=1`, deeper `K[x][z]=…`.
///
/// Keys: Kazoo writes them raw. pivotd escapes each key segment like a value, which leaves
/// every name it sends unchanged (they use only `A-Z a-z 0-9 - _ .`) and keeps a strange
/// collection or header name (`a&b=c`) from breaking the form. `null` and empty lists or
/// objects emit nothing.
pub fn form_encode(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (k, v) in map {
        let mut key = String::new();
        escape_into(&mut key, k);
        encode_value(&mut out, &key, v);
    }
    out
}

fn encode_value(out: &mut String, key: &str, v: &Value) {
    let pair = |out: &mut String, text: &str, escape: bool| {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        if escape {
            escape_into(out, text);
        } else {
            out.push_str(text);
        }
    };
    match v {
        Value::Null => {}
        Value::Bool(b) => pair(out, if *b { "true" } else { "false" }, false),
        // Number's Display is decimal; a float's '.' and '-' are unreserved anyway.
        Value::Number(n) => pair(out, &n.to_string(), true),
        Value::String(s) => pair(out, s, true),
        Value::Array(items) => {
            let sub = format!("{key}[]");
            for item in items {
                encode_value(out, &sub, item);
            }
        }
        Value::Object(fields) => {
            for (name, item) in fields {
                let mut sub = String::with_capacity(key.len() + name.len() + 2);
                sub.push_str(key);
                sub.push('[');
                escape_into(&mut sub, name);
                sub.push(']');
                encode_value(out, &sub, item);
            }
        }
    }
}

/// Kazoo's `urlencode` of a value (spec a.4): byte-wise, space → `+`.
fn escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'~' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

pub const CONTENT_TYPE_FORM: &str = "application/x-www-form-urlencoded";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A pivot request ready for the HTTP client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedRequest {
    pub method: Method,
    /// For GET, with the parameters in the query string.
    pub url: url::Url,
    /// Set for POST only (Kazoo sets no other header, spec a.4).
    pub content_type: Option<&'static str>,
    /// `None` for GET.
    pub body: Option<Vec<u8>>,
}

impl PreparedRequest {
    /// The [`SIGNATURE_HEADER`] value of this request (see [`sign`]).
    pub fn signature(&self, secret: &[u8]) -> String {
        sign(
            secret,
            self.url.as_str(),
            self.body.as_deref().unwrap_or_default(),
        )
    }
}

/// The request for `params` (spec a.4): GET puts them in the query string whatever
/// `body_format` says, after an `&` when `url` already has a query; POST form sends them
/// form-encoded; POST JSON sends one JSON object, nested values kept as JSON.
pub fn build(
    url: &url::Url,
    method: Method,
    body_format: BodyFormat,
    params: &Map<String, Value>,
) -> PreparedRequest {
    match method {
        Method::Get => {
            let mut url = url.clone();
            let encoded = form_encode(params);
            if !encoded.is_empty() {
                let query = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{encoded}"),
                    _ => encoded,
                };
                // The form encoding only emits characters a query may hold, so `set_query`
                // keeps the string as is.
                url.set_query(Some(&query));
            }
            PreparedRequest {
                method,
                url,
                content_type: None,
                body: None,
            }
        }
        Method::Post => {
            let (content_type, body) = match body_format {
                BodyFormat::Form => (CONTENT_TYPE_FORM, form_encode(params).into_bytes()),
                BodyFormat::Json => (
                    CONTENT_TYPE_JSON,
                    Value::Object(params.clone()).to_string().into_bytes(),
                ),
            };
            PreparedRequest {
                method,
                url: url.clone(),
                content_type: Some(content_type),
                body: Some(body),
            }
        }
    }
}

/// The header carrying pivotd's request signature.
pub const SIGNATURE_HEADER: &str = "X-Pivotd-Signature";

/// pivotd's request signature, sent in [`SIGNATURE_HEADER`] when the account has a signing
/// secret (beyond Kazoo; in the spirit of Twilio's `X-Twilio-Signature`).
///
/// The value is `base64(HMAC-SHA256(secret, URL ‖ body))`, standard base64 alphabet with
/// padding, where:
/// - `URL` is the full request URL exactly as sent, scheme to query string (for GET it
///   includes every pivot parameter), without a fragment;
/// - `body` is the request body bytes exactly as sent (form-encoded or JSON for POST; empty
///   for GET);
/// - `‖` is plain concatenation: no separator.
///
/// A web server verifies by recomputing it over the URL it was asked for and the raw body
/// it received, and comparing in constant time. Unlike Twilio, POST parameters are not
/// sorted and re-joined: the raw body is signed, which works the same for form and JSON.
pub fn sign(secret: &[u8], url: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length (RFC 2104 §2: longer keys are hashed first), so this
    // constructor cannot fail whatever the secret is.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(url.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::bridge::DialStatus;
    use serde_json::json;
    use std::time::Duration;

    fn info() -> CallInfo {
        CallInfo {
            call_id: "abc@10.0.0.1".into(),
            account_id: "0123".into(),
            from_user: "alice".into(),
            from_realm: "acme.example".into(),
            to_user: "4786".into(),
            to_realm: "acme.example".into(),
            request_user: "4786".into(),
            request_realm: "acme.example".into(),
            caller_id_name: Some("Alice Smith".into()),
            caller_id_number: Some("+14155550100".into()),
            user_id: None,
            device_id: None,
            custom_sip_headers: vec![
                ("X-Account".into(), "gold".into()),
                ("User-Agent".into(), "softphone".into()),
                ("x-trace".into(), "a".into()),
                ("x-trace".into(), "b".into()),
            ],
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn form_encoding_matches_kazoo() {
        let m = obj(json!({
            "Caller-ID-Name": "Alice Smith",
            "Call-ID": "abc@10.0.0.1",
            "Num": "+1 (415) ~a_b.c-d",
            "Utf": "é",
            "T": true,
            "F": false,
            "N": 42,
            "Neg": -1.5,
            "Null": null,
        }));
        assert_eq!(
            form_encode(&m),
            "Call-ID=abc%4010.0.0.1&Caller-ID-Name=Alice+Smith&F=false&N=42&Neg=-1.5\
             &Num=%2B1+%28415%29+~a_b.c-d&T=true&Utf=%C3%A9"
        );
    }

    #[test]
    fn form_encoding_lists_and_objects() {
        let m = obj(json!({
            "User-ID": ["a", "b c"],
            "Digits": {"default": "12", "pin": "1234"},
            "Deep": {"x": {"z": 1, "l": [true]}},
            "Empty": [],
            "EmptyObj": {},
        }));
        assert_eq!(
            form_encode(&m),
            "Deep[x][l][]=true&Deep[x][z]=1&Digits[default]=12&Digits[pin]=1234\
             &User-ID[]=a&User-ID[]=b+c"
        );
    }

    #[test]
    fn form_encoding_escapes_odd_key_segments() {
        let m = obj(json!({"Digits": {"a&b=c": "1"}}));
        assert_eq!(form_encode(&m), "Digits[a%26b%3Dc]=1");
    }

    #[test]
    fn kazoo_names() {
        let info = info();
        let digits = DigitCollections::new();
        let users = vec!["u1".to_string()];
        let mut st = PivotState::new(&info, &digits);
        st.language = Some("en-us");
        st.user_ids = &users;
        let p = params(&st, ReqFormat::Kazoo);
        assert_eq!(
            Value::Object(p),
            json!({
                "Api-Version": "2015-03-01",
                "Direction": "inbound",
                "Call-ID": "abc@10.0.0.1",
                "Account-ID": "0123",
                "From": "alice",
                "From-Realm": "acme.example",
                "To": "4786",
                "To-Realm": "acme.example",
                "Request": "4786",
                "Request-Realm": "acme.example",
                "Caller-ID-Name": "Alice Smith",
                "Caller-ID-Number": "+14155550100",
                "Language": "en-us",
                "User-ID": "u1",
                "Custom-SIP-Headers": {"X-Account": "gold", "x-trace": "a, b"},
            })
        );
    }

    #[test]
    fn kazoo_omits_unknown_values_and_lists_user_ids() {
        let info = CallInfo {
            call_id: "c1".into(),
            ..CallInfo::default()
        };
        let digits = DigitCollections::new();
        let users = vec!["u1".to_string(), "u2".to_string()];
        let mut st = PivotState::new(&info, &digits);
        st.user_ids = &users;
        let p = params(&st, ReqFormat::Kazoo);
        assert_eq!(
            Value::Object(p.clone()),
            json!({
                "Api-Version": "2015-03-01",
                "Direction": "inbound",
                "Call-ID": "c1",
                "User-ID": ["u1", "u2"],
            })
        );
        assert_eq!(
            form_encode(&p),
            "Api-Version=2015-03-01&Call-ID=c1&Direction=inbound&User-ID[]=u1&User-ID[]=u2"
        );
    }

    #[test]
    fn twiml_names() {
        let info = info();
        let mut digits = DigitCollections::new();
        digits.set("pin", "99"); // Kazoo collections never leak into TwiML requests
        let mut st = PivotState::new(&info, &digits);
        st.twiml_digits = Some("123");
        st.call_status = Some("in-progress");
        st.language = Some("en-us");
        let p = params(&st, ReqFormat::Twiml);
        assert_eq!(
            Value::Object(p),
            json!({
                "CallSid": "abc@10.0.0.1",
                "AccountSid": "0123",
                "From": "alice",
                "FromRealm": "acme.example",
                "To": "4786",
                "ToRealm": "acme.example",
                "CallStatus": "in-progress",
                "ApiVersion": "2010-04-01",
                "Direction": "inbound",
                "CallerName": "Alice Smith",
                "CallerNumber": "+14155550100",
                "Digits": "123",
            })
        );
    }

    #[test]
    fn digits_plain_then_object_once_named() {
        let info = CallInfo::default();
        let mut d = DigitCollections::new();
        assert!(d.unnamed_only());
        assert_eq!(digits_param(&d), None);
        assert!(!params(&PivotState::new(&info, &d), ReqFormat::Kazoo).contains_key("Digits"));

        d.append(DEFAULT_COLLECTION, "1");
        d.append(DEFAULT_COLLECTION, "2");
        assert!(d.unnamed_only());
        let p = params(&PivotState::new(&info, &d), ReqFormat::Kazoo);
        assert_eq!(p.get("Digits"), Some(&json!("12")));
        assert!(form_encode(&p).contains("&Digits=12&"));

        d.set("pin", "1234");
        assert!(!d.unnamed_only());
        let p = params(&PivotState::new(&info, &d), ReqFormat::Kazoo);
        assert_eq!(
            p.get("Digits"),
            Some(&json!({"default": "12", "pin": "1234"}))
        );
        let form = form_encode(&p);
        assert!(
            form.contains("&Digits[default]=12&Digits[pin]=1234&"),
            "{form}"
        );

        // collect_dtmf takes `default`: the named one stays, still in object form.
        assert_eq!(d.take(DEFAULT_COLLECTION).as_deref(), Some("12"));
        let p = params(&PivotState::new(&info, &d), ReqFormat::Kazoo);
        assert_eq!(p.get("Digits"), Some(&json!({"pin": "1234"})));
    }

    #[test]
    fn get_appends_to_query() {
        let m = obj(json!({"Caller-ID-Name": "Alice Smith", "Digits": {"pin": "1"}}));
        let url = url::Url::parse("http://ivr.example/ivr.php?app=1").unwrap();
        let r = build(&url, Method::Get, BodyFormat::Json, &m);
        assert_eq!(
            r.url.as_str(),
            "http://ivr.example/ivr.php?app=1&Caller-ID-Name=Alice+Smith&Digits[pin]=1"
        );
        assert_eq!((r.content_type, r.body), (None, None));

        let url = url::Url::parse("http://ivr.example/ivr.php").unwrap();
        let r = build(&url, Method::Get, BodyFormat::Form, &m);
        assert_eq!(
            r.url.as_str(),
            "http://ivr.example/ivr.php?Caller-ID-Name=Alice+Smith&Digits[pin]=1"
        );
        // An empty query (`?`) gets no leading '&'.
        let url = url::Url::parse("http://ivr.example/ivr.php?").unwrap();
        let r = build(&url, Method::Get, BodyFormat::Form, &m);
        assert_eq!(
            r.url.as_str(),
            "http://ivr.example/ivr.php?Caller-ID-Name=Alice+Smith&Digits[pin]=1"
        );
    }

    #[test]
    fn post_form_and_json() {
        let m = obj(json!({"A": "x y", "Digits": {"pin": "1"}, "User-ID": ["a", "b"]}));
        let url = url::Url::parse("https://ivr.example/p?q=1").unwrap();
        let r = build(&url, Method::Post, BodyFormat::Form, &m);
        assert_eq!(r.url.as_str(), "https://ivr.example/p?q=1");
        assert_eq!(r.content_type, Some("application/x-www-form-urlencoded"));
        assert_eq!(
            r.body.as_deref(),
            Some(&b"A=x+y&Digits[pin]=1&User-ID[]=a&User-ID[]=b"[..])
        );

        let r = build(&url, Method::Post, BodyFormat::Json, &m);
        assert_eq!(r.content_type, Some("application/json"));
        let body: Value = serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            body,
            json!({"A": "x y", "Digits": {"pin": "1"}, "User-ID": ["a", "b"]})
        );
    }

    #[test]
    fn signature_is_hmac_sha256_of_url_then_body() {
        // RFC 4231 test case 2 (key "Jefe"), the data split between URL and body:
        // HMAC = 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843.
        let sig = sign(b"Jefe", "what do ya want ", b"for nothing?");
        assert_eq!(sig, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
        assert_eq!(sign(b"Jefe", "what do ya want for nothing?", b""), sig);

        let url = url::Url::parse("http://ivr.example/a").unwrap();
        let m = obj(json!({"A": "1"}));
        let r = build(&url, Method::Post, BodyFormat::Form, &m);
        assert_eq!(
            r.signature(b"k"),
            sign(b"k", "http://ivr.example/a", b"A=1")
        );
        let r = build(&url, Method::Get, BodyFormat::Form, &m);
        assert_eq!(
            r.signature(b"k"),
            sign(b"k", "http://ivr.example/a?A=1", b"")
        );
        assert_ne!(r.signature(b"k"), r.signature(b"other"));
    }

    fn busy() -> BridgeOutcome {
        BridgeOutcome::from_sip_code(486, Some("b-leg@pivotd".into()))
    }

    fn answered(secs: u64) -> BridgeOutcome {
        BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: None,
            b_call_id: Some("b2@pivotd".into()),
            duration: Duration::from_millis(secs * 1000 + 700),
        }
    }

    /// The fields a request carries about the bridge before it (only those).
    fn bridge_fields(b: &BridgeOutcome, format: ReqFormat) -> Value {
        let info = info();
        let digits = DigitCollections::new();
        let plain = params(&PivotState::new(&info, &digits), format);
        let mut st = PivotState::new(&info, &digits);
        st.bridge = Some(b);
        let with = params(&st, format);
        Value::Object(
            with.into_iter()
                .filter(|(k, _)| !plain.contains_key(k))
                .collect(),
        )
    }

    #[test]
    fn twiml_request_after_a_bridge() {
        assert_eq!(
            bridge_fields(&busy(), ReqFormat::Twiml),
            json!({
                "DialCallStatus": "busy",
                "DialCallSid": "b-leg@pivotd",
                "DialSipResponseCode": 486,
            })
        );
        // Answered: the whole seconds talked; the 2xx is the final response.
        assert_eq!(
            bridge_fields(&answered(42), ReqFormat::Twiml),
            json!({
                "DialCallStatus": "completed",
                "DialCallSid": "b2@pivotd",
                "DialCallDuration": 42,
                "DialSipResponseCode": 200,
            })
        );
        // Nothing was rung: no leg, no SIP code.
        assert_eq!(
            bridge_fields(
                &BridgeOutcome::failed("NORMAL_TEMPORARY_FAILURE"),
                ReqFormat::Twiml
            ),
            json!({"DialCallStatus": "failed"})
        );
        let mut no_answer = BridgeOutcome::from_sip_code(487, Some(String::new()));
        no_answer.status = DialStatus::NoAnswer;
        assert_eq!(
            bridge_fields(&no_answer, ReqFormat::Twiml),
            json!({"DialCallStatus": "no-answer", "DialSipResponseCode": 487})
        );
    }

    #[test]
    fn kazoo_request_after_a_bridge() {
        assert_eq!(
            bridge_fields(&busy(), ReqFormat::Kazoo),
            json!({
                "DialCallStatus": "busy",
                "DialCallSid": "b-leg@pivotd",
                "Hangup-Cause": "USER_BUSY",
                "Hangup-Code": "sip:486",
            })
        );
        assert_eq!(
            bridge_fields(&answered(3), ReqFormat::Kazoo),
            json!({
                "DialCallStatus": "completed",
                "DialCallSid": "b2@pivotd",
                "DialCallDuration": 3,
                "Hangup-Cause": "NORMAL_CLEARING",
                "Hangup-Code": "sip:200",
            })
        );
        let info = info();
        let digits = DigitCollections::new();
        let mut st = PivotState::new(&info, &digits);
        let b = busy();
        st.bridge = Some(&b);
        let form = form_encode(&params(&st, ReqFormat::Kazoo));
        assert!(
            form.contains("&DialCallSid=b-leg%40pivotd&DialCallStatus=busy&"),
            "{form}"
        );
        assert!(form.contains("&Hangup-Code=sip%3A486&"), "{form}");
    }

    #[test]
    fn cdr_names_and_values() {
        let mut i = info();
        i.caller_id_name = None;
        i.to_realm = String::new();
        assert_eq!(
            Value::Object(cdr_params(&i, true, 42, 30)),
            json!({
                "Call-ID": "abc@10.0.0.1",
                "Account-ID": "0123",
                "Direction": "inbound",
                "From": "alice",
                "From-Realm": "acme.example",
                "To": "4786",
                "To-Realm": "",
                "Request": "4786",
                "Caller-ID-Number": "+14155550100",
                "Hangup-Cause": "NORMAL_CLEARING",
                "Hangup-Code": "sip:200",
                "Duration-Seconds": 42,
                "Billing-Seconds": 30,
            })
        );
        let unanswered = cdr_params(&i, false, 5, 0);
        assert_eq!(unanswered["Hangup-Cause"], "NO_ANSWER");
        assert_eq!(unanswered["Hangup-Code"], "sip:480");
    }
}
