//! CDRs on PostgreSQL (see `store/cdrs.rs`).

use deadpool_postgres::Transaction;

use super::Pg;
use crate::store::{CallDirection, Cdr, CdrQuery, StoreError};

pub(super) async fn insert(tx: &Transaction<'_>, c: &Cdr) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO cdrs (call_id, account_id, from_uri, to_uri, start_time,
                answer_time, end_time, duration_s, hangup_cause, sip_code, call_direction,
                other_leg_call_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (call_id) DO UPDATE SET account_id = EXCLUDED.account_id,
                from_uri = EXCLUDED.from_uri, to_uri = EXCLUDED.to_uri,
                start_time = EXCLUDED.start_time, answer_time = EXCLUDED.answer_time,
                end_time = EXCLUDED.end_time, duration_s = EXCLUDED.duration_s,
                hangup_cause = EXCLUDED.hangup_cause, sip_code = EXCLUDED.sip_code,
                call_direction = EXCLUDED.call_direction,
                other_leg_call_id = EXCLUDED.other_leg_call_id",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &c.call_id,
            &c.account_id,
            &c.from,
            &c.to,
            &c.start,
            &c.answer,
            &c.end,
            &c.duration_s,
            &c.hangup_cause,
            &c.sip_code.map(i32::from),
            &c.call_direction.as_str(),
            &c.other_leg_call_id,
        ],
    )
    .await?;
    Ok(())
}

impl Pg {
    pub(in crate::store) fn cdrs(
        &self,
        account_id: &str,
        q: &CdrQuery<'_>,
    ) -> Result<Vec<Cdr>, StoreError> {
        let (after_start, after_call) = match q.after {
            Some((s, c)) => (Some(s), Some(c)),
            None => (None, None),
        };
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT call_id, account_id, from_uri, to_uri, start_time, answer_time,
                            end_time, duration_s, hangup_cause, sip_code, call_direction,
                            other_leg_call_id
                     FROM cdrs
                     WHERE account_id = $1
                       AND ($2::BIGINT IS NULL OR start_time >= $2)
                       AND ($3::BIGINT IS NULL OR start_time <= $3)
                       AND ($4::BIGINT IS NULL OR start_time < $4
                            OR (start_time = $4 AND call_id < $5::TEXT))
                     ORDER BY start_time DESC, call_id DESC
                     LIMIT $6",
                    &[
                        &account_id,
                        &q.created_from,
                        &q.created_to,
                        &after_start,
                        &after_call,
                        &limit,
                    ],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let direction: String = r.try_get(10)?;
                let sip_code: Option<i32> = r.try_get(9)?;
                out.push(Cdr {
                    call_id: r.try_get(0)?,
                    account_id: r.try_get(1)?,
                    from: r.try_get(2)?,
                    to: r.try_get(3)?,
                    start: r.try_get(4)?,
                    answer: r.try_get(5)?,
                    end: r.try_get(6)?,
                    duration_s: r.try_get(7)?,
                    hangup_cause: r.try_get(8)?,
                    sip_code: sip_code.and_then(|s| u16::try_from(s).ok()),
                    // The CHECK constraint keeps it valid.
                    call_direction: CallDirection::parse(&direction)
                        .unwrap_or(CallDirection::Inbound),
                    other_leg_call_id: r.try_get(11)?,
                });
            }
            Ok(out)
        })
    }
}
