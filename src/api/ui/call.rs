//! One call's page: its event log as a timeline (each event's `at` and `line`, as
//! `…/calls/{CALL_ID}/events` gives them), what was played, spoken and collected (from the
//! events), and each pivot request beside its debug records (`pivot/debug.rs`): the request
//! (URL, method, fields), the answer (status, headers, body) and a JSON or schema error marked
//! where it is in the body. The k-th `pivot` event is iteration k: the pivot module records
//! one event per request it counts (`callflow/modules/pivot.rs` `ask`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::html::{esc, frame, json_marked, time};
use crate::store::{CallEvent, DebugRecord, RecordKind, StoredEvent};

pub(super) fn page(
    account: &str,
    call_id: &str,
    events: &[StoredEvent],
    records: &[DebugRecord],
) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        r#"<h1>Call <code id="call-id">{}</code></h1>"#,
        esc(call_id)
    );
    summary(&mut b, events, records);
    timeline(&mut b, events);
    media(&mut b, events);
    pivots(&mut b, events, records);
    frame(&format!("Call {call_id}"), Some(account), &b)
}

fn summary(b: &mut String, events: &[StoredEvent], records: &[DebugRecord]) {
    let started = events
        .first()
        .map(|e| e.created)
        .or(records.first().map(|r| r.created));
    b.push_str(r#"<dl class="summary">"#);
    if let Some(t) = started {
        let _ = write!(b, "<dt>started</dt><dd>{}</dd>", time(t));
    }
    if let Some(Ok(CallEvent::Invite { from, to })) = events.first().map(event) {
        let _ = write!(
            b,
            "<dt>caller → number</dt><dd>{} → {}</dd>",
            esc(&from),
            esc(&to)
        );
    }
    let end = events.iter().find(|e| e.kind() == "end");
    match end {
        Some(e) => {
            let text = event(e).map(|ev| ev.text()).unwrap_or_default();
            let _ = write!(
                b,
                "<dt>ended</dt><dd>{} after {}.{:03} s</dd>",
                esc(&text),
                e.at_ms / 1000,
                e.at_ms % 1000
            );
        }
        None if !events.is_empty() => {
            b.push_str("<dt>ended</dt><dd>no end recorded yet</dd>");
        }
        None => {}
    }
    b.push_str("</dl>\n");
}

fn event(e: &StoredEvent) -> Result<CallEvent, serde_json::Error> {
    serde_json::from_value(e.doc.clone())
}

/// The timeline line split into its time and its text (the API's `line`).
fn line(e: &StoredEvent) -> (String, String) {
    let j = e.to_api_json();
    let l = j.get("line").and_then(Value::as_str).unwrap_or("");
    let (at, text) = l.split_once(' ').unwrap_or((l, ""));
    (at.to_string(), text.to_string())
}

fn timeline(b: &mut String, events: &[StoredEvent]) {
    b.push_str("<h2>Timeline</h2>\n");
    if events.is_empty() {
        b.push_str(
            r#"<p class="empty">No event log for this call (past retention); the pivot debug records follow.</p>"#,
        );
        return;
    }
    b.push_str(r#"<table id="timeline" class="timeline"><tbody>"#);
    for e in events {
        let (at, text) = line(e);
        let failed = match e.kind() {
            "pivot" => e.doc.get("error").is_some() || !status_ok(&e.doc),
            "end" => e.doc.get("how").and_then(Value::as_str) != Some("BYE"),
            _ => false,
        };
        let _ = writeln!(
            b,
            r#"<tr class="ev ev-{}{}"><td class="at">{}</td><td class="line">{}</td></tr>"#,
            // Our kinds are plain words; an unknown one is escaped anyway.
            esc(e.kind()),
            if failed { " failed" } else { "" },
            esc(&at),
            esc(&text)
        );
    }
    b.push_str("</tbody></table>\n");
}

fn status_ok(doc: &Value) -> bool {
    doc.get("status")
        .and_then(Value::as_u64)
        .is_some_and(|s| (200..300).contains(&s))
}

fn media(b: &mut String, events: &[StoredEvent]) {
    b.push_str("<h2>Played, spoken, collected</h2>\n");
    let items: Vec<String> = events
        .iter()
        .filter(|e| matches!(e.kind(), "play" | "digits" | "dtmf"))
        .map(|e| {
            let (at, text) = line(e);
            format!(
                r#"<li><span class="at">{}</span> {}</li>"#,
                esc(&at),
                esc(&text)
            )
        })
        .collect();
    if items.is_empty() {
        b.push_str(r#"<p class="empty">Nothing was played or collected.</p>"#);
    } else {
        let _ = writeln!(b, r#"<ul class="media">{}</ul>"#, items.concat());
    }
}

fn pivots(b: &mut String, events: &[StoredEvent], records: &[DebugRecord]) {
    b.push_str("<h2>Pivot requests</h2>\n");
    let asked: Vec<&StoredEvent> = events.iter().filter(|e| e.kind() == "pivot").collect();
    let mut by_iteration: BTreeMap<u32, Vec<&DebugRecord>> = BTreeMap::new();
    for r in records {
        by_iteration.entry(r.iteration).or_default().push(r);
    }
    let last = by_iteration.keys().next_back().copied().unwrap_or(0);
    let n = u32::try_from(asked.len()).unwrap_or(u32::MAX).max(last);
    if n == 0 {
        b.push_str(r#"<p class="empty">This call made no pivot request.</p>"#);
        return;
    }
    for k in 1..=n {
        let ev = asked.get(k as usize - 1).copied();
        let recs = by_iteration.get(&k).map(Vec::as_slice).unwrap_or_default();
        iteration(b, k, ev, recs);
    }
}

fn str_of<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or("")
}

fn iteration(b: &mut String, k: u32, ev: Option<&StoredEvent>, recs: &[&DebugRecord]) {
    let request = recs.iter().find(|r| r.kind == RecordKind::Request);
    let response = recs.iter().find(|r| r.kind == RecordKind::Response);
    let errors: Vec<&&DebugRecord> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Error)
        .collect();
    let failed = ev.is_some_and(|e| e.doc.get("error").is_some() || !status_ok(&e.doc))
        || !errors.is_empty();
    let _ = writeln!(
        b,
        r#"<section class="pivot{}" id="pivot-{k}">"#,
        if failed { " failed" } else { "" }
    );
    let (method, url) = match (ev, request) {
        (Some(e), _) => (
            str_of(&e.doc, "method").to_string(),
            str_of(&e.doc, "url").to_string(),
        ),
        (None, Some(r)) => (
            str_of(&r.doc, "method").to_ascii_uppercase(),
            str_of(&r.doc, "uri").to_string(),
        ),
        (None, None) => (String::new(), String::new()),
    };
    let _ = writeln!(
        b,
        "<h3>Request {k}: {} <code>{}</code></h3>",
        esc(&method),
        esc(&url)
    );
    if let Some(e) = ev {
        let (at, text) = line(e);
        let _ = writeln!(
            b,
            r#"<p class="event"><span class="at">{}</span> {}</p>"#,
            esc(&at),
            esc(&text)
        );
    }
    if let Some(r) = request {
        request_detail(b, &r.doc);
    }
    if let Some(r) = response {
        response_detail(b, &r.doc, &errors);
    }
    for e in &errors {
        error_detail(b, &e.doc, response.is_some());
    }
    if request.is_none() && response.is_none() {
        b.push_str(
            r#"<p class="nodebug">The pivot node had no <code>debug: true</code>: its request and answer were not stored. The event log's line above is what is known.</p>"#,
        );
    }
    b.push_str("</section>\n");
}

/// A table of name → value pairs (escaped).
fn pairs_table<'a>(b: &mut String, class: &str, pairs: impl Iterator<Item = (String, &'a str)>) {
    let rows: Vec<String> = pairs
        .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(v)))
        .collect();
    if rows.is_empty() {
        let _ = write!(b, r#"<p class="empty {class}">none</p>"#);
    } else {
        let _ = write!(
            b,
            r#"<table class="pairs {class}">{}</table>"#,
            rows.concat()
        );
    }
}

fn request_detail(b: &mut String, doc: &Value) {
    let uri = str_of(doc, "uri");
    let method = str_of(doc, "method");
    let body = str_of(doc, "req_body");
    let _ = writeln!(
        b,
        r#"<h4>Request</h4><p>{} <code>{}</code></p>"#,
        esc(&method.to_ascii_uppercase()),
        esc(uri)
    );
    // The fields: a GET's in the query string, a POST's in the form body.
    let raw = if method.eq_ignore_ascii_case("get") {
        uri.split_once('?').map_or("", |(_, q)| q)
    } else {
        body
    };
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    b.push_str("<h5>Fields</h5>");
    pairs_table(
        b,
        "fields",
        fields.iter().map(|(k, v)| (k.clone(), v.as_str())),
    );
    if let Some(Value::Object(h)) = doc.get("req_headers") {
        if !h.is_empty() {
            b.push_str("<h5>Headers</h5>");
            pairs_table(
                b,
                "headers",
                h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or(""))),
            );
        }
    }
    b.push('\n');
}

fn response_detail(b: &mut String, doc: &Value, errors: &[&&DebugRecord]) {
    let _ = writeln!(
        b,
        r#"<h4>Response</h4><p>status <span class="status">{}</span></p>"#,
        esc(str_of(doc, "resp_status_code"))
    );
    b.push_str("<h5>Headers</h5>");
    let headers = match doc.get("resp_headers") {
        Some(Value::Object(h)) => h.iter().collect(),
        _ => Vec::new(),
    };
    pairs_table(
        b,
        "headers",
        headers
            .into_iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or(""))),
    );
    b.push_str("<h5>Body</h5>");
    let text = str_of(doc, "resp_body");
    // With an error record, the body is shown there, marked; here as it came.
    let pretty = if errors.is_empty() {
        serde_json::from_str::<Value>(text)
            .ok()
            .filter(|v| v.is_object() || v.is_array())
    } else {
        None
    };
    match pretty {
        Some(v) => {
            let _ = writeln!(b, r#"<pre class="body">{}</pre>"#, json_marked(&v, None));
        }
        None => {
            let _ = writeln!(b, r#"<pre class="body">{}</pre>"#, esc(text));
        }
    }
}

/// An error record: a JSON error marked between its `before` and `after`, a schema error's
/// value marked at its path, or pivotd's failure reason.
fn error_detail(b: &mut String, doc: &Value, had_response: bool) {
    let body = str_of(doc, "resp_body");
    if let Some(j) = doc.get("json_errors") {
        let _ = writeln!(
            b,
            r#"<h4 class="error">JSON error</h4><p class="error">{} ({})</p>"#,
            esc(str_of(j, "message")),
            esc(str_of(j, "detail"))
        );
        let (before, after) = (str_of(j, "before"), str_of(j, "after"));
        let joined = format!("{before}{after}");
        let marked = match body.split_once(&joined) {
            Some((head, tail)) if !joined.is_empty() => format!(
                r#"{}{}<mark class="fault" title="here">⟂</mark>{}{}"#,
                esc(head),
                esc(before),
                esc(after),
                esc(tail)
            ),
            _ => esc(body),
        };
        let _ = writeln!(b, r#"<pre class="body marked">{marked}</pre>"#);
    } else if let Some(Value::Object(s)) = doc.get("schema_errors") {
        b.push_str(r#"<h4 class="error">Schema error</h4>"#);
        let mut first_path = None;
        for (path, rules) in s {
            first_path.get_or_insert(path.clone());
            if let Value::Object(rules) = rules {
                for (rule, detail) in rules {
                    let _ = writeln!(
                        b,
                        r#"<p class="error"><code>{}</code> {}: {}</p>"#,
                        esc(path),
                        esc(rule),
                        esc(str_of(detail, "message"))
                    );
                }
            }
        }
        match serde_json::from_str::<Value>(body) {
            Ok(v) => {
                let mark = first_path.map(|p| body_path(&v, &p));
                let _ = writeln!(
                    b,
                    r#"<pre class="body marked">{}</pre>"#,
                    json_marked(&v, mark.as_deref())
                );
            }
            Err(_) => {
                let _ = writeln!(b, r#"<pre class="body">{}</pre>"#, esc(body));
            }
        }
    } else if let Some(e) = doc.get("error").and_then(Value::as_str) {
        let _ = writeln!(
            b,
            r#"<h4 class="error">Failed</h4><p class="error">{}</p>"#,
            esc(e)
        );
    }
    if !had_response && doc.get("resp_body").is_none() && doc.get("error").is_none() {
        b.push_str(r#"<p class="empty">An error record without a body.</p>"#);
    }
}

/// A schema error's path (`flow.data.endpoints[0].id`: the node is `flow`) as keys and
/// indices into the answer's JSON: the node is the body itself, or its `flow` when the
/// answer wraps it so.
fn body_path(body: &Value, path: &str) -> Vec<String> {
    let mut segs: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some((name, idx)) = rest.split_once('[') {
            if !name.is_empty() {
                segs.push(name.to_string());
            }
            let (i, after) = idx.split_once(']').unwrap_or((idx, ""));
            segs.push(i.to_string());
            rest = after;
        }
        if !rest.is_empty() {
            segs.push(rest.to_string());
        }
    }
    if segs.first().map(String::as_str) == Some("flow") && body.get("flow").is_none() {
        segs.remove(0);
    }
    segs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::gregorian_now;

    fn ev(seq: u32, at_ms: u64, doc: Value) -> StoredEvent {
        StoredEvent {
            account_id: "acc".into(),
            call_id: "c@h".into(),
            seq,
            at_ms,
            created: gregorian_now(),
            doc,
        }
    }

    fn rec(iteration: u32, kind: RecordKind, doc: Value) -> DebugRecord {
        DebugRecord {
            id: format!("{iteration}{kind:?}"),
            account_id: "acc".into(),
            call_id: "c@h".into(),
            iteration,
            node: "n".into(),
            kind,
            created: gregorian_now(),
            doc,
        }
    }

    fn pivot_ev(seq: u32, status: u16) -> StoredEvent {
        ev(
            seq,
            12,
            json!({"kind": "pivot", "method": "GET", "url": "http://w/start", "status": status, "ms": 3}),
        )
    }

    #[test]
    fn the_timeline_and_a_debug_iteration_are_shown_escaped() {
        let events = [
            ev(
                0,
                0,
                json!({"kind": "invite", "from": "<i>a</i>@h", "to": "6000"}),
            ),
            pivot_ev(1, 200),
            ev(
                2,
                50,
                json!({"kind": "play", "what": "tts", "id": "<script>x</script>", "ms": 2000}),
            ),
            ev(
                3,
                4100,
                json!({"kind": "end", "by": "server", "how": "BYE", "why": "flow ended"}),
            ),
        ];
        let records = [
            rec(
                1,
                RecordKind::Request,
                json!({"uri": "http://w/start?Caller-ID-Number=a%3Cb&To=6000", "method": "get", "req_headers": {}, "req_body": ""}),
            ),
            rec(
                1,
                RecordKind::Response,
                json!({"resp_status_code": "200", "resp_headers": {"content-type": "application/json"},
                       "resp_body": "{\"module\":\"tts\",\"data\":{\"text\":\"<script>alert(1)</script>\"}}"}),
            ),
        ];
        let html = page("acc", "c@h", &events, &records);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<i>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains(r#"<td class="at">0.000</td><td class="line">INVITE from &lt;i&gt;a&lt;/i&gt;@h to 6000 → 100</td>"#), "{html}");
        assert!(
            html.contains(
                r#"<td class="at">4.100</td><td class="line">BYE from server (flow ended)</td>"#
            ),
            "{html}"
        );
        assert!(
            html.contains("<tr><th>Caller-ID-Number</th><td>a&lt;b</td></tr>"),
            "{html}"
        );
        assert!(
            html.contains("<tr><th>content-type</th><td>application/json</td></tr>"),
            "{html}"
        );
        assert!(html.contains(r#"id="pivot-1""#), "{html}");
        assert!(!html.contains("nodebug"), "{html}");
        assert!(
            html.contains("playing tts &quot;&lt;script&gt;x&lt;/script&gt;&quot; (2.0 s)"),
            "{html}"
        );
    }

    #[test]
    fn without_debug_the_event_log_is_what_is_shown() {
        let events = [pivot_ev(0, 200), pivot_ev(1, 500)];
        let html = page("acc", "c@h", &events, &[]);
        assert_eq!(html.matches(r#"class="nodebug""#).count(), 2, "{html}");
        assert!(
            html.contains(r#"<section class="pivot failed" id="pivot-2">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<section class="pivot" id="pivot-1">"#),
            "{html}"
        );
    }

    #[test]
    fn a_json_error_is_marked_where_it_is() {
        let body = "{\"module\":}";
        let records = [rec(
            1,
            RecordKind::Error,
            json!({"json_errors": {"before": "{\"module\":", "after": "}", "message": "invalid JSON",
                   "detail": "expected value at line 1 column 11"}, "resp_body": body}),
        )];
        let html = page("acc", "c@h", &[pivot_ev(0, 200)], &records);
        assert!(
            html.contains(r#"{&quot;module&quot;:<mark class="fault" title="here">⟂</mark>}"#),
            "{html}"
        );
        assert!(
            html.contains("expected value at line 1 column 11"),
            "{html}"
        );
    }

    #[test]
    fn a_schema_error_marks_the_value_at_its_path() {
        let body = r#"{"module":"play","data":{"id":5}}"#;
        let records = [rec(
            1,
            RecordKind::Error,
            json!({"schema_errors": {"flow.data.id": {"invalid": {"message": "expected a string"}}},
                   "resp_body": body}),
        )];
        let html = page("acc", "c@h", &[pivot_ev(0, 200)], &records);
        assert!(
            html.contains(r#"&quot;id&quot;: <mark class="fault">5</mark>"#),
            "{html}"
        );
        assert!(html.contains("expected a string"), "{html}");
    }

    #[test]
    fn schema_paths_reach_into_arrays_and_wrapped_flows() {
        let node = json!({"module": "ring_group"});
        assert_eq!(
            body_path(&node, "flow.data.endpoints[1].id"),
            ["data", "endpoints", "1", "id"]
        );
        let wrapped = json!({"flow": {}});
        assert_eq!(body_path(&wrapped, "flow.module"), ["flow", "module"]);
    }
}
