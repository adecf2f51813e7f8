//! The debug page's list of recent calls. They come from the event log (`Store::recent_calls`):
//! it is recorded for every call of a known account, whatever `debug` says, from the INVITE
//! on (so a call still up is listed), and its `end` event says how the call ended and who
//! ended it, which a CDR does not. One row per call: time, caller → number, outcome,
//! duration (INVITE to end), link.

use std::fmt::Write as _;

use serde_json::Value;

use super::html::{esc, frame, path_segment, time};
use crate::api::paging::encode_key;
use crate::store::{CallEvent, RecentCall};

/// The page for `rows`, fetched with one more than `page` (its presence: an older page).
pub(super) fn page(account: &str, mut rows: Vec<RecentCall>, page: usize) -> String {
    let more = rows.len() > page;
    rows.truncate(page);
    let mut body = String::from("<h1>Recent calls</h1>\n");
    if rows.is_empty() {
        body.push_str(r#"<p class="empty">No calls recorded yet.</p>"#);
        return frame("Recent calls", Some(account), &body);
    }
    body.push_str(
        r#"<table class="calls">
<thead><tr><th>time</th><th>caller → number</th><th>outcome</th><th>duration</th><th></th></tr></thead>
<tbody>
"#,
    );
    for c in &rows {
        let _ = writeln!(body, "{}", row(c));
    }
    body.push_str("</tbody></table>\n");
    if let Some(last) = rows.last().filter(|_| more) {
        let _ = write!(
            body,
            r#"<p><a class="older" href="/ui?start_key={}">Older calls</a></p>"#,
            encode_key(last.created, &last.call_id)
        );
    }
    frame("Recent calls", Some(account), &body)
}

fn row(c: &RecentCall) -> String {
    let field = |k: &str| c.first.get(k).and_then(Value::as_str).unwrap_or("?");
    let parties = if c.first.get("kind").and_then(Value::as_str) == Some("invite") {
        format!("{} → {}", esc(field("from")), esc(field("to")))
    } else {
        "?".to_string()
    };
    let (outcome, duration) = match &c.end {
        Some((at_ms, doc)) => {
            let text = serde_json::from_value::<CallEvent>(doc.clone())
                .map(|e| e.text())
                .unwrap_or_else(|_| "ended".to_string());
            let class = if doc.get("how").and_then(Value::as_str) == Some("BYE") {
                "ok"
            } else {
                "failed"
            };
            (
                format!(r#"<span class="{class}">{}</span>"#, esc(&text)),
                format!("{}.{} s", at_ms / 1000, at_ms % 1000 / 100),
            )
        }
        None => (
            r#"<span class="live">no end recorded (in progress?)</span>"#.to_string(),
            String::new(),
        ),
    };
    format!(
        r#"<tr><td>{}</td><td>{parties}</td><td>{outcome}</td><td class="num">{duration}</td><td><a class="call" href="/ui/calls/{}">timeline</a></td></tr>"#,
        time(c.created),
        path_segment(&c.call_id)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(id: &str, end: Option<(u64, Value)>) -> RecentCall {
        RecentCall {
            call_id: id.into(),
            created: 63_900_000_000,
            first: json!({"kind": "invite", "from": "<b>@x", "to": "6000"}),
            end,
        }
    }

    #[test]
    fn rows_escape_the_caller_and_say_how_the_call_ended() {
        let html = page(
            "acc",
            vec![
                call(
                    "a@h",
                    Some((
                        12_345,
                        json!({"kind": "end", "by": "server", "how": "BYE", "why": "flow ended"}),
                    )),
                ),
                call("b@h", None),
            ],
            50,
        );
        assert!(html.contains("&lt;b&gt;@x → 6000"), "{html}");
        assert!(!html.contains("<b>@x"), "{html}");
        assert!(html.contains("BYE from server (flow ended)"), "{html}");
        assert!(html.contains("12.3 s"), "{html}");
        assert!(html.contains(r#"href="/ui/calls/a%40h""#), "{html}");
        assert!(html.contains("no end recorded"), "{html}");
        assert!(!html.contains("Older calls"), "{html}");
    }

    #[test]
    fn a_full_page_links_the_older_ones() {
        let rows = (0..3).map(|i| call(&format!("c{i}"), None)).collect();
        let html = page("acc", rows, 2);
        assert_eq!(html.matches(r#"class="call""#).count(), 2);
        let key = encode_key(63_900_000_000, "c1");
        assert!(html.contains(&format!("/ui?start_key={key}")), "{html}");
    }
}
