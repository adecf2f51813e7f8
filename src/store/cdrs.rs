//! Call detail records: one per call, queued by the call task when it ends (through the
//! non-blocking writer), listed by the API newest first with keyset paging.

use rusqlite::{params, Connection};

use super::{Store, StoreError};

/// One call. Times are Gregorian seconds (as Kazoo stamps documents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cdr {
    pub call_id: String,
    pub account_id: String,
    /// The caller, `user@host` of the From URI.
    pub from: String,
    /// The dialled number, `user@host` of the Request-URI.
    pub to: String,
    pub start: i64,
    /// `None`: never answered.
    pub answer: Option<i64>,
    pub end: i64,
    /// Seconds from start to end.
    pub duration_s: i64,
    /// Kazoo/FreeSWITCH style cause: `NORMAL_CLEARING`, `ORIGINATOR_CANCEL`, …
    pub hangup_cause: String,
    /// The final response pivotd sent to the INVITE (200 when answered).
    pub sip_code: Option<u16>,
}

pub(super) fn insert(conn: &Connection, c: &Cdr) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO cdrs (call_id, account_id, from_uri, to_uri, start_time,
            answer_time, end_time, duration_s, hangup_cause, sip_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        c.call_id,
        c.account_id,
        c.from,
        c.to,
        c.start,
        c.answer,
        c.end,
        c.duration_s,
        c.hangup_cause,
        c.sip_code
    ])?;
    Ok(())
}

/// Which CDRs to list.
#[derive(Clone, Debug, Default)]
pub struct CdrQuery<'a> {
    /// Start time at or after (Gregorian seconds).
    pub created_from: Option<i64>,
    /// Start time at or before.
    pub created_to: Option<i64>,
    /// The `(start, call_id)` of the previous page's last item.
    pub after: Option<(i64, &'a str)>,
    pub limit: usize,
}

impl Store {
    /// The account's CDRs, newest first.
    pub fn cdrs(&self, account_id: &str, q: &CdrQuery<'_>) -> Result<Vec<Cdr>, StoreError> {
        let conn = self.reader();
        let (after_start, after_call) = match q.after {
            Some((s, c)) => (Some(s), Some(c)),
            None => (None, None),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT call_id, account_id, from_uri, to_uri, start_time, answer_time, end_time,
                    duration_s, hangup_cause, sip_code
             FROM cdrs
             WHERE account_id = ?1
               AND (?2 IS NULL OR start_time >= ?2) AND (?3 IS NULL OR start_time <= ?3)
               AND (?4 IS NULL OR start_time < ?4 OR (start_time = ?4 AND call_id < ?5))
             ORDER BY start_time DESC, call_id DESC
             LIMIT ?6",
        )?;
        let rows = stmt
            .query_map(
                params![
                    account_id,
                    q.created_from,
                    q.created_to,
                    after_start,
                    after_call,
                    i64::try_from(q.limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok(Cdr {
                        call_id: r.get(0)?,
                        account_id: r.get(1)?,
                        from: r.get(2)?,
                        to: r.get(3)?,
                        start: r.get(4)?,
                        answer: r.get(5)?,
                        end: r.get(6)?,
                        duration_s: r.get(7)?,
                        hangup_cause: r.get(8)?,
                        sip_code: r.get(9)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;

    fn cdr(call: &str, start: i64) -> Cdr {
        Cdr {
            call_id: call.into(),
            account_id: "acc".into(),
            from: "sipp@127.0.0.1".into(),
            to: "6000@pivotd.test".into(),
            start,
            answer: Some(start + 1),
            end: start + 5,
            duration_s: 5,
            hangup_cause: "NORMAL_CLEARING".into(),
            sip_code: Some(200),
        }
    }

    #[test]
    fn written_through_the_queue_listed_newest_first_with_paging_and_range() {
        let store = Store::open(":memory:").unwrap();
        for (i, c) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(store.write(Write::Cdr(cdr(c, 1000 + i as i64))));
        }
        store.flush().unwrap();
        let ids = |v: Vec<Cdr>| v.into_iter().map(|c| c.call_id).collect::<Vec<_>>();
        let q = CdrQuery {
            limit: 2,
            ..CdrQuery::default()
        };
        let page1 = store.cdrs("acc", &q).unwrap();
        assert_eq!(page1[0], cdr("d", 1003));
        assert_eq!(ids(page1), ["d", "c"]);
        let q2 = CdrQuery {
            after: Some((1002, "c")),
            limit: 10,
            ..CdrQuery::default()
        };
        assert_eq!(ids(store.cdrs("acc", &q2).unwrap()), ["b", "a"]);
        let range = CdrQuery {
            created_from: Some(1001),
            created_to: Some(1002),
            limit: 10,
            ..CdrQuery::default()
        };
        assert_eq!(ids(store.cdrs("acc", &range).unwrap()), ["c", "b"]);
        assert!(store.cdrs("other", &q).unwrap().is_empty());
    }
}
