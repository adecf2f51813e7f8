//! The debug page's HTML pieces: escaping (every value from a call or a pivot answer goes
//! through [`esc`]), the page frame, the login form, and JSON shown with one value marked.

use std::fmt::Write as _;

use serde_json::Value;

use crate::api::iso8601;
use crate::store::GREGORIAN_OFFSET;

/// `s` as HTML text or attribute value: `& < > " '` escaped, so wire text is shown, never
/// run.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one path segment: every byte but the unreserved ones percent-encoded (a Call-ID's
/// `@`, `/`, spaces …).
pub(super) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Gregorian seconds as `2026-12-03 14:05:21 UTC`.
pub(super) fn time(gregorian: i64) -> String {
    iso8601(gregorian.saturating_sub(GREGORIAN_OFFSET))
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// A whole page: `title` (text) and `body` (HTML already escaped); `account` when logged
/// in (the logout button beside it).
pub(super) fn frame(title: &str, account: Option<&str>, body: &str) -> String {
    let session = match account {
        Some(a) => format!(
            r#"<span class="account">account {}</span>
<form method="post" action="/ui/logout"><button type="submit">Log out</button></form>"#,
            esc(a)
        ),
        None => String::new(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · pivotd</title>
<link rel="stylesheet" href="/ui/style.css">
</head>
<body>
<header><a class="home" href="/ui">pivotd</a>{session}</header>
<main>
{body}
</main>
</body>
</html>
"#,
        title = esc(title)
    )
}

/// The login form, with `message` (ours, not wire text) when the last try failed.
pub(super) fn login(message: Option<&str>) -> String {
    let msg = match message {
        Some(m) => format!(r#"<p class="error" id="login-error">{}</p>"#, esc(m)),
        None => String::new(),
    };
    frame(
        "Log in",
        None,
        &format!(
            r#"<h1>Debug page</h1>
{msg}<form class="login" method="post" action="/ui/login">
<label for="api_key">The account's API key</label>
<input id="api_key" name="api_key" type="password" autocomplete="off" required>
<button id="login" type="submit">Log in</button>
</form>
<p class="hint">Or open <code>/ui?auth_token=TOKEN</code> with a token from <code>PUT /v2/api_auth</code>.</p>"#
        ),
    )
}

/// A page saying one thing: `text` is HTML (escape wire values before).
pub(super) fn message_page(title: &str, text: &str) -> String {
    frame(
        title,
        None,
        &format!(
            r#"<h1>{}</h1><p>{text}</p><p><a href="/ui">Back to the calls</a></p>"#,
            esc(title)
        ),
    )
}

/// `v` pretty-printed as escaped HTML, the value at `mark` (a path of object keys and array
/// indices) inside `<mark>`.
pub(super) fn json_marked(v: &Value, mark: Option<&[String]>) -> String {
    let mut out = String::new();
    write_json(&mut out, v, 0, mark, true);
    out
}

fn write_json(out: &mut String, v: &Value, depth: usize, mark: Option<&[String]>, here: bool) {
    let marked = here && mark.is_some_and(<[String]>::is_empty);
    if marked {
        out.push_str(r#"<mark class="fault">"#);
    }
    let pad = "  ".repeat(depth + 1);
    let close = "  ".repeat(depth);
    // The rest of the path below this value, when the mark lies under it.
    let below = |key: &str| -> (Option<&[String]>, bool) {
        match mark {
            Some([first, rest @ ..]) if here && first == key => (Some(rest), true),
            _ => (None, false),
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, child)) in m.iter().enumerate() {
                let (sub, on) = below(k);
                let _ = write!(out, "{pad}{}: ", esc(&Value::String(k.clone()).to_string()));
                write_json(out, child, depth + 1, sub, on);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{close}}}");
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, child) in a.iter().enumerate() {
                let (sub, on) = below(&i.to_string());
                out.push_str(&pad);
                write_json(out, child, depth + 1, sub, on);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{close}]");
        }
        other => out.push_str(&esc(&other.to_string())),
    }
    if marked {
        out.push_str("</mark>");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("é→"), "é→");
    }

    #[test]
    fn call_ids_become_one_path_segment() {
        assert_eq!(path_segment("a1@10.0.0.1"), "a1%4010.0.0.1");
        assert_eq!(path_segment("x/y z?"), "x%2Fy%20z%3F");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn json_marks_the_value_at_the_path_and_escapes_the_rest() {
        let v = json!({"module": "play", "data": {"id": 5, "t": "<b>"}, "l": [1, {"k": 2}]});
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let out = json_marked(&v, Some(&path(&["data", "id"])));
        assert!(
            out.contains(r#"&quot;id&quot;: <mark class="fault">5</mark>"#),
            "{out}"
        );
        assert!(out.contains("&quot;&lt;b&gt;&quot;"), "{out}");
        assert!(!out.contains("<b>"), "{out}");
        let out = json_marked(&v, Some(&path(&["l", "1", "k"])));
        assert!(
            out.contains(r#"&quot;k&quot;: <mark class="fault">2</mark>"#),
            "{out}"
        );
        assert_eq!(out.matches("<mark").count(), 1);
        let out = json_marked(&v, Some(&path(&["nope"])));
        assert!(!out.contains("<mark"), "{out}");
        let out = json_marked(&v, None);
        assert!(!out.contains("<mark"), "{out}");
        assert_eq!(
            json_marked(&json!({"a": [1], "b": {}}), None),
            "{\n  &quot;a&quot;: [\n    1\n  ],\n  &quot;b&quot;: {}\n}"
        );
    }

    #[test]
    fn gregorian_times_read_as_utc() {
        assert_eq!(time(63_635_231_906), "2016-07-08 21:18:26 UTC");
    }
}
