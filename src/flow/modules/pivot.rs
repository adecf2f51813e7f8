//! `pivot` data (spec a, b, j; `callflows.pivot.json`): the web server's `voice_url`, how to
//! ask it (`method`, `req_format`, `req_body_format`, `req_timeout_ms`), whether to keep debug
//! records, a TwiML call's `cdr_url`, and the `fallback_url` asked when `voice_url` fails.

use serde_json::{Map, Value};

use crate::flow::is_http_url;
use crate::flow::node::{Data, ValidationError};

/// Spec j.9: `req_timeout_ms` defaults to 5000.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pivot {
    pub voice_url: String,
    pub method: Method,
    pub req_format: ReqFormat,
    pub req_body_format: BodyFormat,
    pub req_timeout_ms: u64,
    pub debug: bool,
    pub cdr_url: Option<String>,
    /// Twilio's pattern: asked the same request when the first request to `voice_url` fails,
    /// before the `_` child.
    pub fallback_url: Option<String>,
}

fn http_url(d: &Data<'_>, key: &str, v: String) -> Result<String, ValidationError> {
    if is_http_url(&v) {
        Ok(v)
    } else {
        Err(ValidationError::new(
            d.path_of(key),
            format!("{v:?} is not an http:// or https:// URL"),
        ))
    }
}

impl Pivot {
    pub fn from_data(d: &Data<'_>) -> Result<Pivot, ValidationError> {
        let voice_url = d
            .opt_str("voice_url")?
            .ok_or_else(|| ValidationError::new(d.path_of("voice_url"), "required"))?;
        let voice_url = http_url(d, "voice_url", voice_url)?;
        let method = d
            .opt_word("method", Method::parse, "get or post")?
            .unwrap_or_default();
        let req_format = d
            .opt_word("req_format", ReqFormat::parse, "kazoo or twiml")?
            .unwrap_or_default();
        let req_body_format = d
            .opt_word("req_body_format", BodyFormat::parse, "form or json")?
            .unwrap_or_default();
        // Spec j.7: `req_timeout` (seconds, as in the docs' example) is accepted beside
        // `req_timeout_ms`, which wins.
        let req_timeout_ms = match d.opt_int("req_timeout_ms", 1, 3_600_000)? {
            Some(ms) => ms as u64,
            None => match d.opt_int("req_timeout", 1, 3600)? {
                Some(s) => s as u64 * 1000,
                None => DEFAULT_TIMEOUT_MS,
            },
        };
        let cdr_url = match d.opt_str("cdr_url")? {
            Some(u) => Some(http_url(d, "cdr_url", u)?),
            None => None,
        };
        let fallback_url = match d.opt_str("fallback_url")? {
            Some(u) => Some(http_url(d, "fallback_url", u)?),
            None => None,
        };
        Ok(Pivot {
            voice_url,
            method,
            req_format,
            req_body_format,
            req_timeout_ms,
            debug: d.opt_bool("debug")?.unwrap_or(false),
            cdr_url,
            fallback_url,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("voice_url".into(), Value::String(self.voice_url.clone()));
        m.insert(
            "method".into(),
            Value::String(self.method.as_str().to_ascii_lowercase()),
        );
        m.insert(
            "req_format".into(),
            Value::String(self.req_format.as_str().into()),
        );
        m.insert(
            "req_body_format".into(),
            Value::String(self.req_body_format.as_str().into()),
        );
        m.insert("req_timeout_ms".into(), Value::from(self.req_timeout_ms));
        m.insert("debug".into(), Value::Bool(self.debug));
        if let Some(u) = &self.cdr_url {
            m.insert("cdr_url".into(), Value::String(u.clone()));
        }
        if let Some(u) = &self.fallback_url {
            m.insert("fallback_url".into(), Value::String(u.clone()));
        }
        m
    }
}

/// Which set of parameter names the request carries (`req_format`; spec j.1: default Kazoo).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReqFormat {
    #[default]
    Kazoo,
    Twiml,
}

impl ReqFormat {
    /// `kazoo` / `twiml`, in any case.
    pub fn parse(s: &str) -> Option<ReqFormat> {
        if s.eq_ignore_ascii_case("kazoo") {
            Some(ReqFormat::Kazoo)
        } else if s.eq_ignore_ascii_case("twiml") {
            Some(ReqFormat::Twiml)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReqFormat::Kazoo => "kazoo",
            ReqFormat::Twiml => "twiml",
        }
    }
}

/// How a POST carries the parameters (`req_body_format`; default form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFormat {
    #[default]
    Form,
    Json,
}

impl BodyFormat {
    /// `form` / `json`, in any case.
    pub fn parse(s: &str) -> Option<BodyFormat> {
        if s.eq_ignore_ascii_case("form") {
            Some(BodyFormat::Form)
        } else if s.eq_ignore_ascii_case("json") {
            Some(BodyFormat::Json)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Form => "form",
            BodyFormat::Json => "json",
        }
    }
}

/// The HTTP verb of a pivot request (`method`, TwiML `method` attributes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Get,
    Post,
}

impl Method {
    /// `get` / `post`, in any case (the pivot schema allows both spellings).
    pub fn parse(s: &str) -> Option<Method> {
        if s.eq_ignore_ascii_case("get") {
            Some(Method::Get)
        } else if s.eq_ignore_ascii_case("post") {
            Some(Method::Post)
        } else {
            None
        }
    }

    /// Upper case, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_words() {
        assert_eq!(Method::parse("POST"), Some(Method::Post));
        assert_eq!(Method::parse("get"), Some(Method::Get));
        assert_eq!(Method::parse("put"), None);
        assert_eq!(ReqFormat::parse("TwiML"), Some(ReqFormat::Twiml));
        assert_eq!(BodyFormat::parse("json"), Some(BodyFormat::Json));
        assert_eq!(BodyFormat::parse("xml"), None);
    }

    /// `fallback_url` is kept (the API saves `to_json`, which dropped unknown keys) and
    /// refused, with its path, when it is not an http(s) URL, as `voice_url` is.
    #[test]
    fn fallback_url_is_kept_and_checked_like_voice_url() {
        let read = |data: Value| {
            let m = data.as_object().cloned().unwrap_or_default();
            Pivot::from_data(&Data::new(&m, "flow.data"))
        };
        let p = read(serde_json::json!({"voice_url": "http://a/", "fallback_url": "https://b/f"}))
            .expect("valid");
        assert_eq!(p.fallback_url.as_deref(), Some("https://b/f"));
        assert_eq!(p.to_json()["fallback_url"], "https://b/f");
        assert_eq!(read(Value::Object(p.to_json())).expect("round trip"), p);
        let none = read(serde_json::json!({"voice_url": "http://a/"})).expect("valid");
        assert_eq!(none.fallback_url, None);
        assert!(!none.to_json().contains_key("fallback_url"));
        let e = read(serde_json::json!({"voice_url": "http://a/", "fallback_url": "ftp://b/"}))
            .unwrap_err();
        assert_eq!(e.path, "flow.data.fallback_url");
        assert!(
            e.message.contains("is not an http:// or https:// URL"),
            "{}",
            e.message
        );
    }
}
