//! The timeline on stdout: our own lines (what the caller saw and did) and the server's
//! events, merged in time order, then a last line saying how the call ended and who ended
//! it. Times are seconds since the INVITE: ours since we sent it, the server's since it
//! arrived (the same instant give or take the network's delay).
//!
//! Lines are held back a moment ([`Timeline::flush_before`]) so that a server event read
//! later still goes before our lines that came after it. Colours and a progress line only
//! on a terminal; `--json`: one object per line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{json, Value};

use super::server_log::EventsApi;
use super::{DialerError, EXIT_CALL_FAILED, EXIT_OK};
use crate::logsafe::wire;

/// How the timeline is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    /// Colours and a progress line.
    Terminal,
    Json,
}

impl Style {
    pub fn for_stdout(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stdout().is_terminal() {
            Style::Terminal
        } else {
            Style::Plain
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Caller,
    Server,
}

struct Entry {
    source: Source,
    at_ms: u64,
    kind: String,
    /// Shown after the time; for the server's, escaped when printed.
    text: String,
    /// The server's event as its API gave it.
    doc: Option<Value>,
}

/// How the call ended, for the last line and the JSON summary.
#[derive(Clone, Debug)]
pub struct Summary {
    pub call_id: String,
    pub answered: bool,
    /// `caller` or `server`; None when nobody hung up (a refusal, a failure).
    pub ended_by: Option<&'static str>,
    pub reason: String,
    /// The final SIP code of a call that was not answered.
    pub code: Option<u16>,
    pub at_ms: u64,
    pub exit_status: u8,
    /// The SRTP suite the call's audio was encrypted with (`--srtp`).
    pub srtp: Option<&'static str>,
}

/// The lines waiting to be printed, in time order.
pub struct Timeline {
    style: Style,
    out: Box<dyn Write + Send>,
    pending: BTreeMap<(u64, u64), Entry>,
    order: u64,
    status_shown: bool,
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl Timeline {
    pub fn new(style: Style) -> Timeline {
        Timeline::to(style, Box::new(std::io::stdout()))
    }

    /// A timeline written to `out` instead of stdout.
    fn to(style: Style, out: Box<dyn Write + Send>) -> Timeline {
        Timeline {
            style,
            out,
            pending: BTreeMap::new(),
            order: 0,
            status_shown: false,
        }
    }

    fn add(&mut self, e: Entry) {
        self.order += 1;
        self.pending.insert((e.at_ms, self.order), e);
    }

    /// One of our lines, `at` after the INVITE went.
    pub fn caller(&mut self, at: Duration, kind: &str, text: String) {
        self.add(Entry {
            source: Source::Caller,
            at_ms: u64::try_from(at.as_millis()).unwrap_or(u64::MAX),
            kind: kind.to_string(),
            text,
            doc: None,
        });
    }

    /// One event of the server's log (an object of the events API).
    pub fn server(&mut self, ev: Value) {
        let at_ms = ev["at"]
            .as_f64()
            .filter(|a| a.is_finite() && *a >= 0.0)
            .map_or(0, |a| (a * 1000.0).round() as u64);
        let line = ev["line"].as_str().unwrap_or("");
        // The API's line starts with its own time; ours is put in front when printed.
        let text = line.split_once(' ').map_or(line, |(_, t)| t).to_string();
        self.add(Entry {
            source: Source::Server,
            at_ms,
            kind: ev["kind"].as_str().unwrap_or("").to_string(),
            text,
            doc: Some(ev),
        });
    }

    /// Prints the lines before `watermark_ms`: nothing earlier is expected any more.
    pub fn flush_before(&mut self, watermark_ms: u64) {
        let later = self.pending.split_off(&(watermark_ms, 0));
        let ready = std::mem::replace(&mut self.pending, later);
        self.print(ready.into_values());
    }

    pub fn flush_all(&mut self) {
        let ready = std::mem::take(&mut self.pending);
        self.print(ready.into_values());
    }

    /// The progress line (a terminal only): replaced by the next lines or status.
    pub fn status(&mut self, text: &str) {
        if self.style != Style::Terminal {
            return;
        }
        let _ = write!(self.out, "\r\x1b[K\x1b[2m… {text}\x1b[0m");
        let _ = self.out.flush();
        self.status_shown = true;
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            let _ = write!(self.out, "\r\x1b[K");
            self.status_shown = false;
        }
    }

    fn print(&mut self, entries: impl Iterator<Item = Entry>) {
        let mut any = false;
        for e in entries {
            if !any {
                self.clear_status();
                any = true;
            }
            let out = &mut self.out;
            let at = seconds(e.at_ms);
            let _ = match self.style {
                Style::Json => {
                    let doc = match (e.source, e.doc) {
                        (Source::Server, Some(Value::Object(mut m))) => {
                            m.insert("source".into(), Value::from("server"));
                            Value::Object(m)
                        }
                        _ => json!({
                            "source": "caller",
                            "kind": e.kind,
                            "at": e.at_ms as f64 / 1000.0,
                            "line": format!("{at} {}", e.text),
                        }),
                    };
                    writeln!(out, "{doc}")
                }
                Style::Plain => writeln!(out, "{at} {}", shown(&e)),
                Style::Terminal => {
                    // Ours in cyan, the server's as they are; the time dimmed.
                    let colour = if e.source == Source::Caller {
                        "\x1b[36m"
                    } else {
                        ""
                    };
                    writeln!(out, "\x1b[2m{at:>7}\x1b[0m {colour}{}\x1b[0m", shown(&e))
                }
            };
        }
        let _ = self.out.flush();
    }

    /// The last line: how the call ended and who ended it.
    pub fn summary(&mut self, s: &Summary) {
        self.flush_all();
        self.clear_status();
        let at = seconds(s.at_ms);
        let out = &mut self.out;
        let _ = match self.style {
            Style::Json => writeln!(
                out,
                "{}",
                json!({
                    "kind": "summary",
                    "call_id": s.call_id,
                    "answered": s.answered,
                    "ended_by": s.ended_by,
                    "reason": s.reason,
                    "code": s.code,
                    "at": s.at_ms as f64 / 1000.0,
                    "exit_status": s.exit_status,
                    "srtp": s.srtp,
                })
            ),
            Style::Plain => writeln!(out, "{at} ended: {}", wire(&s.reason)),
            Style::Terminal => {
                let colour = if s.exit_status == EXIT_OK {
                    "\x1b[32m"
                } else {
                    "\x1b[31m"
                };
                writeln!(
                    out,
                    "\x1b[2m{at:>7}\x1b[0m {colour}\x1b[1mended: {}\x1b[0m",
                    wire(&s.reason)
                )
            }
        };
        let _ = self.out.flush();
    }
}

/// An entry's text as printed: the server's escaped (it came off the network).
fn shown(e: &Entry) -> String {
    match e.source {
        Source::Caller => e.text.clone(),
        Source::Server => wire(&e.text).to_string(),
    }
}

/// What the server's log says of the end: its `end` event's text (`BYE from server (flow
/// ended)`), who (`by`) and how (`how`).
pub struct ServerEnd {
    pub text: String,
    pub by: Option<&'static str>,
    pub how: String,
    /// What made the server end it (`flow ended`).
    pub why: Option<String>,
}

impl ServerEnd {
    pub fn of(ev: &Value) -> Option<ServerEnd> {
        if ev["kind"] != "end" {
            return None;
        }
        let line = ev["line"].as_str().unwrap_or("");
        let by = match ev["by"].as_str() {
            Some("caller") => Some("caller"),
            Some("server") => Some("server"),
            _ => None,
        };
        Some(ServerEnd {
            text: line.split_once(' ').map_or(line, |(_, t)| t).to_string(),
            by,
            how: ev["how"].as_str().unwrap_or("").to_string(),
            why: ev["why"].as_str().map(str::to_string),
        })
    }
}

/// `--show CALL_ID`: the stored timeline and how it ended; 0 when the call was answered and
/// ended by a BYE.
pub async fn show(api: &EventsApi, call_id: &str, style: Style) -> Result<u8, DialerError> {
    let events = api
        .events(call_id)
        .await?
        .ok_or_else(|| super::ApiError::NoSuchCall(wire(call_id).to_string()))?;
    let answered = events.iter().any(|e| {
        e["kind"] == "answer" && e["code"].as_u64().is_some_and(|c| (200..300).contains(&c))
    });
    let end = events.iter().rev().find_map(ServerEnd::of);
    let last_ms = events
        .last()
        .and_then(|e| e["at"].as_f64())
        .map_or(0, |a| (a.max(0.0) * 1000.0).round() as u64);
    let mut t = Timeline::new(style);
    for ev in events {
        t.server(ev);
    }
    let normal = answered && end.as_ref().is_some_and(|e| e.how == "BYE");
    let exit_status = if normal { EXIT_OK } else { EXIT_CALL_FAILED };
    let summary = Summary {
        call_id: call_id.to_string(),
        answered,
        ended_by: end.as_ref().and_then(|e| e.by),
        reason: end.as_ref().map_or_else(
            || "no end recorded (the call may still be up)".to_string(),
            |e| e.text.clone(),
        ),
        code: end.as_ref().and_then(|e| e.how.parse().ok()),
        at_ms: last_ms,
        exit_status,
        srtp: None,
    };
    t.summary(&summary);
    Ok(exit_status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn event(seq: u64, at: f64, kind: &str, line: &str) -> Value {
        json!({"seq": seq, "at": at, "kind": kind, "line": line})
    }

    fn summary(reason: &str) -> Summary {
        Summary {
            call_id: "c1@pivotd".into(),
            answered: true,
            ended_by: Some("server"),
            reason: reason.into(),
            code: None,
            at_ms: 1931,
            exit_status: 0,
            srtp: None,
        }
    }

    #[test]
    fn lines_merge_in_time_order_and_wait_for_the_watermark() {
        let buf = Buf::default();
        let mut t = Timeline::to(Style::Plain, Box::new(buf.clone()));
        t.caller(Duration::ZERO, "invite", "INVITE → 100 → 200".into());
        t.caller(Duration::from_millis(851), "digits", "sent digits 1".into());
        t.flush_before(500);
        assert_eq!(buf.text(), "0.000 INVITE → 100 → 200\n");
        // Read later, but earlier: goes before ours that came after it.
        t.server(event(
            0,
            0.003,
            "pivot",
            "0.003 pivot GET http://a/ 200 (1 ms)",
        ));
        t.server(event(1, 0.85, "dtmf", "0.850 DTMF 1"));
        t.flush_before(2000);
        t.server(event(2, 1.92, "end", "1.920 BYE from server (flow ended)"));
        t.summary(&summary("BYE from server (flow ended)"));
        assert_eq!(
            buf.text(),
            "0.000 INVITE → 100 → 200\n\
             0.003 pivot GET http://a/ 200 (1 ms)\n\
             0.850 DTMF 1\n\
             0.851 sent digits 1\n\
             1.920 BYE from server (flow ended)\n\
             1.931 ended: BYE from server (flow ended)\n"
        );
    }

    #[test]
    fn the_servers_text_is_escaped_and_json_keeps_its_fields() {
        let buf = Buf::default();
        let mut t = Timeline::to(Style::Plain, Box::new(buf.clone()));
        t.server(event(
            0,
            0.1,
            "play",
            "0.100 playing tts \"a\x1b[2Jb\r\nX\" (1.0 s)",
        ));
        t.flush_all();
        assert_eq!(
            buf.text(),
            "0.100 playing tts \"a\\x1B[2Jb\\x0D\\x0AX\" (1.0 s)\n"
        );

        let buf = Buf::default();
        let mut t = Timeline::to(Style::Json, Box::new(buf.clone()));
        t.caller(
            Duration::from_millis(5),
            "invite",
            "INVITE → 100 → 200".into(),
        );
        t.server(event(
            0,
            0.003,
            "pivot",
            "0.003 pivot GET http://a/ 200 (1 ms)",
        ));
        t.summary(&summary("BYE from server"));
        let lines: Vec<Value> = buf
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["source"], "server");
        assert_eq!(lines[0]["seq"], 0);
        assert_eq!(lines[0]["kind"], "pivot");
        assert_eq!(lines[1]["source"], "caller");
        assert_eq!(lines[1]["line"], "0.005 INVITE → 100 → 200");
        assert_eq!(lines[2]["kind"], "summary");
        assert_eq!(lines[2]["call_id"], "c1@pivotd");
        assert_eq!(lines[2]["exit_status"], 0);
    }

    #[test]
    fn the_server_end_event_says_who_and_how() {
        let ev =
            json!({"kind": "end", "by": "caller", "how": "BYE", "line": "2.000 BYE from caller"});
        let end = ServerEnd::of(&ev).unwrap();
        assert_eq!(
            (end.by, end.how.as_str(), end.why),
            (Some("caller"), "BYE", None)
        );
        assert_eq!(end.text, "BYE from caller");
        assert!(ServerEnd::of(&json!({"kind": "dtmf"})).is_none());
    }
}
