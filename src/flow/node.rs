//! The callflow node tree (`callflows.action`): `module`, `data`, `children`, validated by
//! typed decoding (spec j.7): schema defaults filled, the documented string forms of integers
//! coerced (`"486"` → 486), anything else refused with the JSON path of the fault.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::modules::ModuleData;

/// Deepest node nesting accepted; keeps every walk over a tree (validation, visit, drop) well
/// inside the stack whatever a pivot server sends.
pub const MAX_DEPTH: usize = 64;

/// A flow that failed validation: where (`flow.children._.data.code`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One callflow node: a typed module, and the children it may continue to (`_` by default).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub module: ModuleData,
    /// `data.skip_module`: the node is not run; the walk goes straight to its `_` child.
    pub skip_module: bool,
    pub children: BTreeMap<String, Node>,
}

impl Node {
    /// A node without children.
    pub fn new(module: ModuleData) -> Node {
        Node {
            module,
            skip_module: false,
            children: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the `_` child; handy for building flows in code.
    pub fn then(mut self, child: Node) -> Node {
        self.children.insert("_".to_string(), child);
        self
    }

    /// Validates a flow whose root is reported as `flow` in error paths.
    pub fn from_json(v: &Value) -> Result<Node, ValidationError> {
        Node::from_json_at(v, "flow")
    }

    /// Validates a flow whose root sits at `path` (e.g. `accounts[0].callflows[1].flow`).
    pub fn from_json_at(v: &Value, path: &str) -> Result<Node, ValidationError> {
        Node::decode(v, path, 1)
    }

    fn decode(v: &Value, path: &str, depth: usize) -> Result<Node, ValidationError> {
        if depth > MAX_DEPTH {
            return Err(ValidationError::new(
                path,
                format!("callflow nested deeper than {MAX_DEPTH} nodes"),
            ));
        }
        let obj = v.as_object().ok_or_else(|| {
            ValidationError::new(
                path,
                format!(
                    "expected a callflow node (an object with module, data, children), found {}",
                    kind(v)
                ),
            )
        })?;

        let module_path = format!("{path}.module");
        let module = match obj.get("module") {
            None | Some(Value::Null) => {
                return Err(ValidationError::new(module_path, "required"));
            }
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(ValidationError::new(
                    module_path,
                    format!("expected a string, found {}", kind(other)),
                ))
            }
        };
        if module.is_empty() || module.chars().count() > 64 {
            return Err(ValidationError::new(
                module_path,
                "must be 1 to 64 characters long",
            ));
        }

        // `data` defaults to {} (callflows.action schema).
        let data_path = format!("{path}.data");
        let empty = Map::new();
        let data = match obj.get("data") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(ValidationError::new(
                    data_path,
                    format!("expected an object, found {}", kind(other)),
                ))
            }
        };
        let reader = Data::new(data, &data_path);
        let skip_module = reader.opt_bool("skip_module")?.unwrap_or(false);
        let module = ModuleData::from_data(module, &reader, &module_path)?;

        let mut children = BTreeMap::new();
        match obj.get("children") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (key, child) in m {
                    if key.is_empty() {
                        return Err(ValidationError::new(
                            format!("{path}.children"),
                            "a child key must not be empty",
                        ));
                    }
                    let child_path = format!("{path}.children.{key}");
                    children.insert(key.clone(), Node::decode(child, &child_path, depth + 1)?);
                }
            }
            Some(other) => {
                return Err(ValidationError::new(
                    format!("{path}.children"),
                    format!("expected an object of nodes, found {}", kind(other)),
                ))
            }
        }
        Ok(Node {
            module,
            skip_module,
            children,
        })
    }

    /// The node as Kazoo JSON, with the schema defaults filled in.
    pub fn to_json(&self) -> Value {
        let mut data = self.module.to_json();
        if self.skip_module {
            data.insert("skip_module".into(), Value::Bool(true));
        }
        let children: Map<String, Value> = self
            .children
            .iter()
            .map(|(k, n)| (k.clone(), n.to_json()))
            .collect();
        let mut obj = Map::new();
        obj.insert("module".into(), Value::String(self.module.name().into()));
        obj.insert("data".into(), Value::Object(data));
        obj.insert("children".into(), Value::Object(children));
        Value::Object(obj)
    }

    /// Calls `f` on this node and every node below it (pre-order).
    pub fn visit(&self, f: &mut dyn FnMut(&Node)) {
        f(self);
        for child in self.children.values() {
            child.visit(f);
        }
    }
}

/// JSON type name for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to one node's `data` object. A key given as JSON `null` counts as absent.
pub struct Data<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Data<'a> {
    pub fn new(map: &'a Map<String, Value>, path: &'a str) -> Data<'a> {
        Data { map, path }
    }

    /// JSON path of `key` inside this data object.
    pub fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, ValidationError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ValidationError::new(
                self.path_of(key),
                format!("expected a string, found {}", kind(v)),
            )),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ValidationError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ValidationError::new(
                self.path_of(key),
                format!("expected a boolean, found {}", kind(v)),
            )),
        }
    }

    /// An integer in `min..=max`; a string of decimal digits (`"486"`, `"20"`) is accepted
    /// as the number it spells (spec j.7).
    pub fn opt_int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ValidationError> {
        let n = match self.get(key) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                ValidationError::new(self.path_of(key), format!("expected an integer, found {n}"))
            })?,
            Some(Value::String(s)) => parse_int_str(s).ok_or_else(|| {
                ValidationError::new(
                    self.path_of(key),
                    format!("expected an integer, found the string {s:?}"),
                )
            })?,
            Some(v) => {
                return Err(ValidationError::new(
                    self.path_of(key),
                    format!("expected an integer, found {}", kind(v)),
                ))
            }
        };
        if n < min || n > max {
            return Err(ValidationError::new(
                self.path_of(key),
                format!("{n} is out of range {min}..={max}"),
            ));
        }
        Ok(Some(n))
    }

    /// A string under `key` that `parse` reads; one it does not read is refused as
    /// "`"x" is not {expected}`".
    pub fn opt_word<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, ValidationError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).ok_or_else(|| {
                ValidationError::new(self.path_of(key), format!("{s:?} is not {expected}"))
            }),
        }
    }

    /// A string under `key` that must be one of `words`.
    pub fn opt_one_of(&self, key: &str, words: &[&str]) -> Result<Option<String>, ValidationError> {
        let expected = || format!("one of {}", words.join(", "));
        match self.opt_str(key)? {
            Some(s) if !words.contains(&s.as_str()) => Err(ValidationError::new(
                self.path_of(key),
                format!("{s:?} is not {}", expected()),
            )),
            other => Ok(other),
        }
    }

    /// A text of 1 to `max` characters under `key` (it is read as already given: `text`).
    pub fn check_text_len(&self, key: &str, text: &str, max: usize) -> Result<(), ValidationError> {
        let chars = text.chars().count();
        if (1..=max).contains(&chars) {
            Ok(())
        } else {
            Err(ValidationError::new(
                self.path_of(key),
                format!("must be 1 to {max} characters, not {chars}"),
            ))
        }
    }

    /// The array under `key`, its items unchecked (the module reads each one).
    pub fn opt_array(&self, key: &str) -> Result<Option<&'a [Value]>, ValidationError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items.as_slice())),
            Some(v) => Err(ValidationError::new(
                self.path_of(key),
                format!("expected an array, found {}", kind(v)),
            )),
        }
    }

    pub fn opt_str_list(&self, key: &str) -> Result<Option<Vec<String>>, ValidationError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ValidationError::new(
                        format!("{}[{i}]", self.path_of(key)),
                        format!("expected a string, found {}", kind(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(ValidationError::new(
                self.path_of(key),
                format!("expected an array of strings, found {}", kind(v)),
            )),
        }
    }
}

impl Data<'_> {
    /// `terminators`: the DTMF keys that stop a prompt or a collection; every key when
    /// absent. An entry that is not one key of 0-9 * # could never be pressed: it is a
    /// validation error, in every module.
    pub fn terminators(&self) -> Result<Vec<char>, ValidationError> {
        Ok(self
            .opt_terminators("terminators")?
            .unwrap_or_else(|| ALL_KEYS.to_vec()))
    }

    /// A list of DTMF keys under `key`, each checked by [`dtmf_key`]; None when absent.
    pub fn opt_terminators(&self, key: &str) -> Result<Option<Vec<char>>, ValidationError> {
        let Some(list) = self.opt_str_list(key)? else {
            return Ok(None);
        };
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                dtmf_key(s).ok_or_else(|| {
                    ValidationError::new(
                        format!("{}[{i}]", self.path_of(key)),
                        format!("{s:?} is not a DTMF key (0-9, *, #)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// One DTMF key under `key` (a string), checked by [`dtmf_key`]; None when absent.
    pub fn opt_dtmf_key(&self, key: &str) -> Result<Option<char>, ValidationError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => dtmf_key(&s).map(Some).ok_or_else(|| {
                ValidationError::new(
                    self.path_of(key),
                    format!("{s:?} is not a DTMF key (0-9, *, #)"),
                )
            }),
        }
    }
}

/// The DTMF key a one-character string names: 0-9, `*` or `#` (the keys RFC 4733 events
/// 0-11 carry). The one check of a key, for callflow data and TwiML alike.
pub fn dtmf_key(s: &str) -> Option<char> {
    single_char(s).filter(|k| ALL_KEYS.contains(k))
}

/// Terminators as Kazoo JSON (`["1", "#"]`).
pub fn terminators_json(keys: &[char]) -> Value {
    Value::Array(keys.iter().map(|c| Value::String(c.to_string())).collect())
}

/// Every DTMF key, in Kazoo's default `terminators` order.
pub const ALL_KEYS: [char; 12] = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

/// The one character of a one-character string.
pub fn single_char(s: &str) -> Option<char> {
    let mut c = s.chars();
    match (c.next(), c.next()) {
        (Some(k), None) => Some(k),
        _ => None,
    }
}

/// `-?[0-9]+` to i64; anything else (blanks, signs twice, decimals, overflow) is None.
fn parse_int_str(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::modules::{play::Play, sleep::Sleep, sleep::Unit};
    use serde_json::json;

    #[test]
    fn parses_nested_children_with_any_key_and_default_data() {
        let n = Node::from_json(&json!({
            "module": "play", "data": {"id": "welcome"},
            "children": {
                "_": {"module": "hangup"},
                "timeout": {"module": "sleep", "data": {"duration": 2}}
            }
        }))
        .unwrap();
        assert_eq!(n.module.name(), "play");
        assert_eq!(n.children.len(), 2);
        assert_eq!(n.children["_"].module, ModuleData::Hangup);
        assert_eq!(
            n.children["timeout"].module,
            ModuleData::Sleep(Sleep {
                duration: 2,
                unit: Unit::S
            })
        );
    }

    #[test]
    fn unknown_module_is_rejected_naming_it_and_its_path() {
        let e = Node::from_json(&json!({
            "module": "play", "data": {"id": "x"},
            "children": {"_": {"module": "frobnicate", "data": {}}}
        }))
        .unwrap_err();
        assert_eq!(e.path, "flow.children._.module");
        assert!(e.message.contains("frobnicate"), "{}", e.message);
    }

    #[test]
    fn missing_module_and_bad_shapes_are_rejected_with_paths() {
        let e = Node::from_json(&json!({"data": {}})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("flow.module", "required")
        );
        let e = Node::from_json(&json!({"flow": {"module": "hangup"}})).unwrap_err();
        assert_eq!(e.path, "flow.module");
        let e = Node::from_json(&json!("hangup")).unwrap_err();
        assert_eq!(e.path, "flow");
        let e = Node::from_json(&json!({"module": "hangup", "data": []})).unwrap_err();
        assert_eq!(e.path, "flow.data");
        let e = Node::from_json(&json!({"module": "hangup", "children": ["x"]})).unwrap_err();
        assert_eq!(e.path, "flow.children");
        let e = Node::from_json(&json!({"module": "hangup", "children": {"_": 5}})).unwrap_err();
        assert_eq!(e.path, "flow.children._");
        let e = Node::from_json(&json!({"module": 7})).unwrap_err();
        assert_eq!(e.path, "flow.module");
    }

    #[test]
    fn skip_module_is_read_and_must_be_boolean() {
        let n =
            Node::from_json(&json!({"module": "hangup", "data": {"skip_module": true}})).unwrap();
        assert!(n.skip_module);
        let e = Node::from_json(&json!({"module": "hangup", "data": {"skip_module": "yes"}}))
            .unwrap_err();
        assert_eq!(e.path, "flow.data.skip_module");
    }

    #[test]
    fn integer_strings_are_coerced_and_other_forms_refused() {
        let m = Map::new();
        let d = Data::new(&m, "x");
        assert_eq!(d.opt_int("a", 0, 10).unwrap(), None);
        let m: Map<String, Value> = serde_json::from_value(json!({
            "a": "486", "b": 20, "c": "20.5", "d": 1.5, "e": "", "f": " 3", "g": -4, "h": "-4",
            "i": true, "j": null
        }))
        .unwrap();
        let d = Data::new(&m, "x");
        assert_eq!(d.opt_int("a", 0, 1000).unwrap(), Some(486));
        assert_eq!(d.opt_int("b", 0, 1000).unwrap(), Some(20));
        assert_eq!(d.opt_int("h", -10, 10).unwrap(), Some(-4));
        assert_eq!(d.opt_int("j", 0, 1).unwrap(), None);
        for k in ["c", "d", "e", "f", "i"] {
            let e = d.opt_int(k, -1000, 1000).unwrap_err();
            assert_eq!(e.path, format!("x.{k}"));
            assert!(
                e.message.starts_with("expected an integer"),
                "{k}: {}",
                e.message
            );
        }
        let e = d.opt_int("g", 0, 10).unwrap_err();
        assert_eq!(e.message, "-4 is out of range 0..=10");
    }

    /// The words each module's reader refuses with, as the API and config checks show them.
    #[test]
    fn refused_words_and_text_lengths_are_told_the_same_way_in_every_module() {
        let refused = |module: &str, data: Value| {
            let e = Node::from_json(&json!({"module": module, "data": data})).unwrap_err();
            format!("{}: {}", e.path, e.message)
        };
        for (module, data, told) in [
            (
                "pivot",
                json!({"voice_url": "http://a/", "method": "put"}),
                r#"flow.data.method: "put" is not get or post"#,
            ),
            (
                "pivot",
                json!({"voice_url": "http://a/", "req_format": "x"}),
                r#"flow.data.req_format: "x" is not kazoo or twiml"#,
            ),
            (
                "pivot",
                json!({"voice_url": "http://a/", "req_body_format": "xml"}),
                r#"flow.data.req_body_format: "xml" is not form or json"#,
            ),
            (
                "sleep",
                json!({"unit": "days"}),
                r#"flow.data.unit: "days" is not one of "ms", "s", "m", "h""#,
            ),
            (
                "say",
                json!({"text": "1", "gender": "x"}),
                r#"flow.data.gender: "x" is not one of masculine, feminine, neuter"#,
            ),
            (
                "say",
                json!({"text": "1", "method": "sung"}),
                r#"flow.data.method: "sung" is not one of pronounced, iterated, counted, none"#,
            ),
            (
                "say",
                json!({"say": ""}),
                "flow.data.say: must be 1 to 1000 characters, not 0",
            ),
            (
                "tts",
                json!({"text": "a".repeat(1001)}),
                "flow.data.text: must be 1 to 1000 characters, not 1001",
            ),
        ] {
            assert_eq!(refused(module, data), told, "{module}");
        }
        let e = refused("say", json!({"text": "1", "type": "current_time"}));
        assert!(
            e.starts_with(r#"flow.data.type: "current_time" is not supported"#),
            "{e}"
        );
        let e = refused("say", json!({"text": "1", "type": "song"}));
        assert!(
            e.starts_with(r#"flow.data.type: "song" is not one of number, "#),
            "{e}"
        );
    }

    #[test]
    fn to_json_fills_defaults_and_round_trips() {
        let src = json!({"module": "play", "data": {"id": "welcome", "skip_module": true},
                         "children": {"_": {"module": "sleep", "data": {"duration": "3"}}}});
        let n = Node::from_json(&src).unwrap();
        let out = n.to_json();
        assert_eq!(out["data"]["answer"], json!(true));
        assert_eq!(out["data"]["endless_playback"], json!(false));
        assert_eq!(
            out["data"]["terminators"].as_array().map(|a| a.len()),
            Some(12)
        );
        assert_eq!(out["data"]["skip_module"], json!(true));
        assert_eq!(
            out["children"]["_"]["data"],
            json!({"duration": 3, "unit": "s"})
        );
        assert_eq!(Node::from_json(&out).unwrap(), n);
    }

    #[test]
    fn visit_sees_every_node_and_depth_is_capped() {
        let n = Node::new(ModuleData::Play(Play::new("a")))
            .then(Node::new(ModuleData::Play(Play::new("b"))).then(Node::new(ModuleData::Hangup)));
        let mut names = vec![];
        n.visit(&mut |x| names.push(x.module.name()));
        assert_eq!(names, ["play", "play", "hangup"]);

        let mut v = json!({"module": "hangup"});
        for _ in 0..MAX_DEPTH {
            v = json!({"module": "hangup", "children": {"_": v}});
        }
        let e = Node::from_json(&v).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{}", e.message);
    }
}
