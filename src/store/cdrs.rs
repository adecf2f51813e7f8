//! Call detail records: one per call leg, queued by the call task when it ends (through the
//! non-blocking writer), listed by the API newest first with keyset paging. A bridged call
//! has two: the inbound leg's and the outbound leg's, each naming the other's Call-ID.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};

use super::{Db, Store, StoreError};

/// Which way a leg goes, relative to pivotd (Kazoo's `call_direction`, relative to the media
/// switch): the caller's leg is inbound, a leg pivotd originates (a bridge) is outbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallDirection {
    Inbound,
    Outbound,
}

impl CallDirection {
    /// Kazoo's string, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }

    pub fn parse(s: &str) -> Option<CallDirection> {
        match s {
            "inbound" => Some(CallDirection::Inbound),
            "outbound" => Some(CallDirection::Outbound),
            _ => None,
        }
    }
}

impl ToSql for CallDirection {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for CallDirection {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        CallDirection::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown call_direction {s:?}").into()))
    }
}

/// One call leg. Times are Gregorian seconds (as Kazoo stamps documents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cdr {
    /// The leg's Call-ID.
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
    /// The INVITE's final response (200 when answered): the one pivotd sent on an inbound
    /// leg, the one it received on an outbound leg.
    pub sip_code: Option<u16>,
    pub call_direction: CallDirection,
    /// The other leg of a bridge: on the inbound leg, the answered outbound leg's Call-ID; on
    /// an outbound leg, the inbound leg's. `None` when the call was never bridged.
    pub other_leg_call_id: Option<String>,
}

pub(super) fn insert(conn: &Connection, c: &Cdr) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO cdrs (call_id, account_id, from_uri, to_uri, start_time,
            answer_time, end_time, duration_s, hangup_cause, sip_code, call_direction,
            other_leg_call_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
        c.sip_code,
        c.call_direction,
        c.other_leg_call_id
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
        let conn = match self.db() {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.cdrs(account_id, q),
        };
        let (after_start, after_call) = match q.after {
            Some((s, c)) => (Some(s), Some(c)),
            None => (None, None),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT call_id, account_id, from_uri, to_uri, start_time, answer_time, end_time,
                    duration_s, hangup_cause, sip_code, call_direction, other_leg_call_id
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
                        call_direction: r.get(10)?,
                        other_leg_call_id: r.get(11)?,
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
    use crate::store::tests::{both_backends, fresh};
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
            call_direction: CallDirection::Inbound,
            other_leg_call_id: None,
        }
    }

    both_backends! {
    fn written_through_the_queue_listed_newest_first_with_paging_and_range(kind) {
        let store = fresh(kind);
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

    both_backends! {
    fn both_legs_of_a_bridge_round_trip_with_direction_and_other_leg(kind) {
        let store = fresh(kind);
        let inbound = Cdr {
            other_leg_call_id: Some("b-leg@pivotd".into()),
            ..cdr("a-leg@caller", 2000)
        };
        let outbound = Cdr {
            call_id: "b-leg@pivotd".into(),
            from: "sipp@127.0.0.1".into(),
            to: "callee@10.0.0.9".into(),
            start: 2001,
            answer: Some(2003),
            end: 2005,
            duration_s: 4,
            call_direction: CallDirection::Outbound,
            other_leg_call_id: Some("a-leg@caller".into()),
            ..cdr("", 0)
        };
        // An unbridged call next to them.
        let alone = cdr("alone@caller", 1000);
        for c in [&inbound, &outbound, &alone] {
            assert!(store.write(Write::Cdr(c.clone())));
        }
        store.flush().unwrap();
        let q = CdrQuery {
            limit: 10,
            ..CdrQuery::default()
        };
        assert_eq!(store.cdrs("acc", &q).unwrap(), [outbound, inbound, alone]);
    }
    }

    #[test]
    fn direction_strings_are_kazoos() {
        for d in [CallDirection::Inbound, CallDirection::Outbound] {
            assert_eq!(CallDirection::parse(d.as_str()), Some(d));
        }
        assert_eq!(CallDirection::Inbound.as_str(), "inbound");
        assert_eq!(CallDirection::Outbound.as_str(), "outbound");
        assert_eq!(CallDirection::parse("Inbound"), None);
    }
}
