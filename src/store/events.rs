//! The per-call event log (issue 14): what happened on a call, step by step — the INVITE's
//! answer, each pivot request, each prompt played, the digits collected, DTMF received, how
//! the call ended — recorded for every call through the writer queue, read back in order
//! per (account, call) for `GET …/calls/{CALL_ID}/events`, purged with the debug records.
//!
//! This file decides the kinds, their fields and their timeline line; the call layer, the
//! runtime's modules and the pivot module only fill them in through a [`CallEvents`].

use std::time::Instant;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{gregorian_now, Db, Store, StoreError, Write};

/// Events one call records at most: a flow looping on a pivot server must not fill the
/// store. The next one becomes [`CallEvent::Truncated`], the rest are not recorded.
pub const MAX_EVENTS_PER_CALL: u32 = 500;

/// Longest wire value (URL, TTS text, error, prompt id) kept in an event, in characters.
pub const MAX_VALUE_CHARS: usize = 120;

/// One thing that happened on a call. Stored as its JSON (`kind` and the fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallEvent {
    /// The INVITE arrived and was taken (`100 Trying` went out).
    Invite { from: String, to: String },
    /// A response to the INVITE besides the final refusal: 180, 183 (early media), 200.
    Answer { code: u16 },
    /// A pivot request: the URL asked, and its status or why it failed; for an answer that
    /// decoded, its format (`kazoo`, `twiml`) and first module or verb.
    Pivot {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A prompt played: `what` is `media` (a prompt id, URL or tone), `tts` or `say` (the
    /// text); `ms` its length; `stopped_by` the key that cut it short.
    Play {
        what: String,
        id: String,
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped_by: Option<String>,
    },
    /// Digits a module collected and the request field they go out as (`Digits[pin]`).
    Digits { digits: String, into: String },
    /// One DTMF key received (RFC 4733 or SIP INFO).
    Dtmf { digit: String },
    /// A module with no kind of its own (`sleep`, `send_dtmf`, `manual_presence`) and what
    /// it did.
    Module { module: String, summary: String },
    /// A bridge: what was rung and how it ended (`answered`, a hangup cause).
    Bridge { target: String, outcome: String },
    /// How the call ended and who ended it: `how` is `BYE`, `CANCEL` or the final code;
    /// `by` is `caller` or `server`; `why` what made the server end it.
    End {
        by: String,
        how: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// [`MAX_EVENTS_PER_CALL`] reached: what followed was not recorded.
    Truncated,
}

/// `s` cut to [`MAX_VALUE_CHARS`] characters, with `…` when cut.
pub fn trim_value(s: &str) -> String {
    match s.char_indices().nth(MAX_VALUE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl CallEvent {
    /// The kind's name, as stored and shown.
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::Invite { .. } => "invite",
            CallEvent::Answer { .. } => "answer",
            CallEvent::Pivot { .. } => "pivot",
            CallEvent::Play { .. } => "play",
            CallEvent::Digits { .. } => "digits",
            CallEvent::Dtmf { .. } => "dtmf",
            CallEvent::Module { .. } => "module",
            CallEvent::Bridge { .. } => "bridge",
            CallEvent::End { .. } => "end",
            CallEvent::Truncated => "truncated",
        }
    }

    /// The timeline text after the time: `pivot GET http://… 200 (34 ms) kazoo: tts`.
    pub fn text(&self) -> String {
        match self {
            CallEvent::Invite { from, to } => format!("INVITE from {from} to {to} → 100"),
            CallEvent::Answer { code: 183 } => "→ 183 (early media)".to_string(),
            CallEvent::Answer { code } => format!("→ {code}"),
            CallEvent::Pivot {
                method,
                url,
                status,
                ms,
                format,
                first,
                error,
            } => {
                let mut s = format!("pivot {method} {url}");
                if let Some(st) = status {
                    s.push_str(&format!(" {st}"));
                }
                s.push_str(&format!(" ({ms} ms)"));
                match (format, first) {
                    (Some(f), Some(m)) => s.push_str(&format!(" {f}: {m}")),
                    (Some(f), None) => s.push_str(&format!(" {f}")),
                    _ => {}
                }
                if let Some(e) = error {
                    s.push_str(&format!(" failed: {e}"));
                }
                s
            }
            CallEvent::Play {
                what,
                id,
                ms,
                stopped_by,
            } => {
                let secs = *ms as f64 / 1000.0;
                let shown = if what == "media" {
                    id.clone()
                } else {
                    format!("{what} {id:?}")
                };
                match stopped_by {
                    Some(k) => format!("playing {shown} ({secs:.1} s), stopped by {k}"),
                    None => format!("playing {shown} ({secs:.1} s)"),
                }
            }
            CallEvent::Digits { digits, into } => format!("digits {digits} collected as {into}"),
            CallEvent::Dtmf { digit } => format!("DTMF {digit}"),
            CallEvent::Module { module, summary } => format!("{module} {summary}"),
            CallEvent::Bridge { target, outcome } => format!("bridge {target}: {outcome}"),
            CallEvent::End { by, how, why } => match why {
                Some(w) => format!("{how} from {by} ({w})"),
                None => format!("{how} from {by}"),
            },
            CallEvent::Truncated => {
                format!("… more events not recorded (at most {MAX_EVENTS_PER_CALL} per call)")
            }
        }
    }
}

/// One stored event of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub account_id: String,
    pub call_id: String,
    /// Order within the call, from 0.
    pub seq: u32,
    /// Milliseconds since the INVITE arrived.
    pub at_ms: u64,
    /// Gregorian seconds when recorded (retention).
    pub created: i64,
    /// The event's JSON (`kind` and its fields); kept as read, so a kind this build does
    /// not know still shows.
    pub doc: Value,
}

impl StoredEvent {
    pub fn kind(&self) -> &str {
        self.doc.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    /// The event as the API shows it: `at` (seconds since the INVITE, 3 decimals), `kind`,
    /// its fields, and the ready-made timeline `line`.
    pub fn to_api_json(&self) -> Value {
        let at = format!("{}.{:03}", self.at_ms / 1000, self.at_ms % 1000);
        let text = match serde_json::from_value::<CallEvent>(self.doc.clone()) {
            Ok(ev) => ev.text(),
            Err(_) => self.kind().to_string(),
        };
        let mut m = match &self.doc {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        m.insert("seq".into(), Value::from(self.seq));
        // A number with its 3 decimals (`0.012`), parsed from the text so no float noise.
        let at_num: f64 = at.parse().unwrap_or(0.0);
        m.insert("at".into(), Value::from(at_num));
        m.insert("line".into(), Value::String(format!("{at} {text}")));
        Value::Object(m)
    }
}

/// One call's recorder, made when the INVITE is taken and carried where things happen.
/// Recording is a non-blocking push on the store's writer queue (dropped and counted when
/// full); without a store it records nothing.
pub struct CallEvents {
    store: Option<Store>,
    account_id: String,
    call_id: String,
    started: Instant,
    next_seq: u32,
}

impl CallEvents {
    /// A recorder for the call, `started` being when its INVITE arrived.
    pub fn new(store: Option<Store>, account_id: &str, call_id: &str, started: Instant) -> Self {
        CallEvents {
            store,
            account_id: account_id.to_string(),
            call_id: call_id.to_string(),
            started,
            next_seq: 0,
        }
    }

    /// Records `ev` now; past [`MAX_EVENTS_PER_CALL`] one `truncated`, then nothing.
    pub fn record(&mut self, ev: CallEvent) {
        let Some(store) = &self.store else {
            return;
        };
        let ev = match self.next_seq.cmp(&MAX_EVENTS_PER_CALL) {
            std::cmp::Ordering::Less => ev,
            std::cmp::Ordering::Equal => CallEvent::Truncated,
            std::cmp::Ordering::Greater => return,
        };
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let doc = serde_json::to_value(&ev).unwrap_or(Value::Null);
        store.write(Write::CallEvent(StoredEvent {
            account_id: self.account_id.clone(),
            call_id: self.call_id.clone(),
            seq: self.next_seq,
            at_ms,
            created: gregorian_now(),
            doc,
        }));
        self.next_seq += 1;
    }
}

impl Store {
    /// The events of one call of the account, in the order recorded.
    pub fn call_events(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.call_events(account_id, call_id),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at_ms, created, doc FROM call_events
             WHERE account_id = ?1 AND call_id = ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![account_id, call_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|row| decode(account_id, call_id, row))
            .collect()
    }

    /// The account's calls that have an event log, newest first (by their first event's
    /// time, then Call-ID, both descending), after the keyset `after` (the `(created,
    /// call_id)` of the previous page's last row): each with its first event and its `end`
    /// event (none while the call lasts, or when the log was cut).
    pub fn recent_calls(
        &self,
        account_id: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<RecentCall>, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.recent_calls(account_id, after, limit),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_created, after_call) = match after {
            Some((c, id)) => (Some(c), Some(id)),
            None => (None, None),
        };
        let mut stmt =
            conn.prepare_cached(&format!("{RECENT_CALLS} LIMIT ?4").replace('$', "?"))?;
        let rows = stmt
            .query_map(params![account_id, after_created, after_call, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(recent_call).collect()
    }

    /// Deletes the events recorded before `cutoff` (Gregorian seconds).
    pub(super) fn purge_events_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.purge_events_before(cutoff),
        };
        Ok(conn.execute("DELETE FROM call_events WHERE created < ?1", [cutoff])?)
    }
}

/// One call of [`Store::recent_calls`].
#[derive(Clone, Debug, PartialEq)]
pub struct RecentCall {
    pub call_id: String,
    /// Gregorian seconds of the call's first event (its INVITE).
    pub created: i64,
    /// The first event (`invite` for every call recorded whole).
    pub first: Value,
    /// The `end` event and its milliseconds since the INVITE.
    pub end: Option<(u64, Value)>,
}

/// The page query of [`Store::recent_calls`], the one text for both backends (`$n`
/// parameters; SQLite reads them as `?n`): a call's first event is its seq 0, its end the
/// first `end` (the call layer records one; the first wins should two ever be there).
pub(super) const RECENT_CALLS: &str = "SELECT s.call_id, s.created, s.doc, e.at_ms, e.doc
     FROM call_events s
     LEFT JOIN call_events e ON e.account_id = s.account_id AND e.call_id = s.call_id
        AND e.seq = (SELECT MIN(x.seq) FROM call_events x WHERE x.account_id = s.account_id
                     AND x.call_id = s.call_id AND x.kind = 'end')
     WHERE s.account_id = $1 AND s.seq = 0
       AND ($2 IS NULL OR s.created < $2 OR (s.created = $2 AND s.call_id < $3))
     ORDER BY s.created DESC, s.call_id DESC";

/// A [`RecentCall`] from its columns as both backends read them.
pub(super) fn recent_call(
    (call_id, created, first, end_at, end): (String, i64, String, Option<i64>, Option<String>),
) -> Result<RecentCall, StoreError> {
    let end = match (end_at, end) {
        (Some(at), Some(doc)) => {
            Some((u64::try_from(at).unwrap_or(0), serde_json::from_str(&doc)?))
        }
        _ => None,
    };
    Ok(RecentCall {
        call_id,
        created,
        first: serde_json::from_str(&first)?,
        end,
    })
}

/// An event's columns as both backends read them: seq, at_ms, created, doc.
pub(super) fn decode(
    account_id: &str,
    call_id: &str,
    (seq, at_ms, created, doc): (i64, i64, i64, String),
) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        account_id: account_id.to_string(),
        call_id: call_id.to_string(),
        seq: u32::try_from(seq).unwrap_or(u32::MAX),
        at_ms: u64::try_from(at_ms).unwrap_or(0),
        created,
        doc: serde_json::from_str(&doc)?,
    })
}

/// The writer's insert of one event; a batch written again adds no second copy.
pub(super) fn insert(conn: &Connection, e: &StoredEvent) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO call_events (account_id, call_id, seq, at_ms, kind, created, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (account_id, call_id, seq) DO NOTHING",
    )?
    .execute(params![
        e.account_id,
        e.call_id,
        e.seq,
        i64::try_from(e.at_ms).unwrap_or(i64::MAX),
        e.kind(),
        e.created,
        e.doc.to_string()
    ])?;
    Ok(())
}
