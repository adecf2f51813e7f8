//! `…/cdrs`: the account's call detail records, newest first, with Crossbar paging and the
//! `created_from`/`created_to` range (Gregorian seconds, on the call's start).

use std::collections::HashMap;

use axum::extract::{Extension, Query, State};
use serde_json::{json, Value};

use super::auth::Authed;
use super::{blocking, iso8601, time_param, ApiError, Paging, Reply, Shared};
use crate::store::{Cdr, CdrQuery, GREGORIAN_OFFSET};

/// One CDR as the API shows it: Kazoo's names where it has them (`duration_seconds`,
/// `billing_seconds`, `hangup_cause`, `hangup_code`, `timestamp` in Gregorian seconds,
/// `call_direction`, `other_leg_call_id`).
fn cdr_json(c: &Cdr) -> Value {
    json!({
        "id": c.call_id,
        "call_id": c.call_id,
        "account_id": c.account_id,
        "from": c.from,
        "to": c.to,
        "timestamp": c.start,
        "start": c.start,
        "answer": c.answer,
        "end": c.end,
        "iso_8601": iso8601(c.start.saturating_sub(GREGORIAN_OFFSET)),
        "duration_seconds": c.duration_s,
        "billing_seconds": c.answer.map(|a| c.end.saturating_sub(a).max(0)).unwrap_or(0),
        "hangup_cause": c.hangup_cause,
        "hangup_code": c.sip_code.map(|s| format!("sip:{s}")),
        "sip_code": c.sip_code,
        "call_direction": c.call_direction.as_str(),
        "other_leg_call_id": c.other_leg_call_id,
    })
}

pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Reply, ApiError> {
    let paging = Paging::from_query(&q)?;
    let from = time_param(&q, "created_from")?;
    let to = time_param(&q, "created_to")?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::validation(
                "created_to",
                "date_range",
                "created_to is before created_from",
            ));
        }
    }
    let store = st.parts.store.clone();
    let acc = auth.account_id.clone();
    let after = paging.after.clone();
    let limit = paging.fetch();
    let rows = blocking(move || {
        store.cdrs(
            &acc,
            &CdrQuery {
                created_from: from,
                created_to: to,
                after: after.as_ref().map(|(t, c)| (*t, c.as_str())),
                limit,
            },
        )
    })
    .await?;
    Ok(paging.reply(rows, |c| (c.start, &c.call_id), cdr_json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CallDirection;

    fn leg(direction: CallDirection, other: Option<&str>) -> Cdr {
        Cdr {
            call_id: "b-leg@pivotd".into(),
            account_id: "acc".into(),
            from: "alice@127.0.0.1".into(),
            to: "6000@127.0.0.1".into(),
            start: 63_900_000_000,
            answer: Some(63_900_000_002),
            end: 63_900_000_010,
            duration_s: 10,
            hangup_cause: "NORMAL_CLEARING".into(),
            sip_code: Some(200),
            call_direction: direction,
            other_leg_call_id: other.map(str::to_string),
        }
    }

    #[test]
    fn json_has_kazoos_call_direction_and_other_leg_call_id() {
        let j = cdr_json(&leg(CallDirection::Outbound, Some("a-leg@caller")));
        assert_eq!(j["call_direction"], "outbound");
        assert_eq!(j["other_leg_call_id"], "a-leg@caller");
        let j = cdr_json(&leg(CallDirection::Inbound, None));
        assert_eq!(j["call_direction"], "inbound");
        assert_eq!(j["other_leg_call_id"], Value::Null);
    }
}
