//! `response` data (spec c.8, `callflows.response.json`): the final SIP `code` and reason
//! `message`, and the `media` played first as early media.

use serde_json::{Map, Value};

use crate::flow::node::{Data, ValidationError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Final non-2xx code, 300..=699 (schema default 486).
    pub code: u16,
    /// SIP reason phrase; `None` = the standard one.
    pub message: Option<String>,
    /// Media played as early media before responding.
    pub media: Option<String>,
}

impl Response {
    pub fn from_data(d: &Data<'_>) -> Result<Response, ValidationError> {
        // A 1xx is not final and a 2xx would answer the call: only 3xx-6xx make sense here.
        let code = d.opt_int("code", 300, 699)?.unwrap_or(486);
        let message = d.opt_str("message")?;
        if let Some(m) = &message {
            // The reason phrase goes on the status line: no line breaks (RFC 3261 §25.1).
            if m.contains(['\r', '\n']) {
                return Err(ValidationError::new(
                    d.path_of("message"),
                    "must not contain line breaks",
                ));
            }
        }
        let media = d.opt_str("media")?;
        if let Some(m) = &media {
            if m.chars().count() > 2048 {
                return Err(ValidationError::new(
                    d.path_of("media"),
                    "longer than 2048 characters",
                ));
            }
        }
        Ok(Response {
            code: u16::try_from(code).unwrap_or(486),
            message,
            media: media.filter(|m| !m.is_empty()),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("code".into(), Value::from(self.code));
        if let Some(msg) = &self.message {
            m.insert("message".into(), Value::String(msg.clone()));
        }
        if let Some(media) = &self.media {
            m.insert("media".into(), Value::String(media.clone()));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{ModuleData, Node};
    use serde_json::json;

    fn response_of(v: serde_json::Value) -> Result<Response, ValidationError> {
        Node::from_json(&json!({"module": "response", "data": v})).map(|n| match n.module {
            ModuleData::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        })
    }

    #[test]
    fn code_default_and_string_coercion() {
        assert_eq!(response_of(json!({})).unwrap().code, 486);
        let r = response_of(json!({"code": "486", "message": "Busy Here"})).unwrap();
        assert_eq!(r.code, 486);
        assert_eq!(r.message.as_deref(), Some("Busy Here"));
        assert_eq!(response_of(json!({"code": 603})).unwrap().code, 603);
    }

    #[test]
    fn bad_values_are_rejected_with_their_path() {
        for (data, path) in [
            (json!({"code": 200}), "flow.data.code"),
            (json!({"code": "180"}), "flow.data.code"),
            (json!({"code": 700}), "flow.data.code"),
            (json!({"code": "busy"}), "flow.data.code"),
            (json!({"code": [486]}), "flow.data.code"),
            (json!({"message": 5}), "flow.data.message"),
            (json!({"message": "a\r\nVia: x"}), "flow.data.message"),
            (json!({"media": "x".repeat(2049)}), "flow.data.media"),
        ] {
            assert_eq!(response_of(data.clone()).unwrap_err().path, path, "{data}");
        }
    }
}
