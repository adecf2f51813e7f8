//! `…/pivot/debug` (spec e.2, j.14, j.15): the calls with pivot debug records, newest first,
//! one row per call from its first request; and one call's records in the order written.

use std::collections::HashMap;

use axum::extract::{Extension, Path, Query, State};
use serde_json::Value;

use super::auth::Authed;
use super::{blocking, year_month, ApiError, Paging, Reply, Shared};

/// Kazoo's `debug_id`: `YYYYMM-<call_id>` (the month database the records live in).
fn debug_id(created: i64, call_id: &str) -> String {
    format!("{}-{call_id}", year_month(created))
}

/// `GET …/pivot/debug`: `page_size`, `start_key` → `next_start_key` (absent on the last page).
pub(crate) async fn list(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Reply, ApiError> {
    let paging = Paging::from_query(&q)?;
    let store = st.parts.store.clone();
    let acc = auth.account_id.clone();
    let after = paging.after.clone();
    let limit = paging.fetch();
    let rows = blocking(move || {
        store.debug_calls_after(&acc, after.as_ref().map(|(t, c)| (*t, c.as_str())), limit)
    })
    .await?;
    Ok(paging.reply(
        rows,
        |r| (r.created, &r.call_id),
        |r| {
            let mut v = r.to_api_json();
            if let Value::Object(m) = &mut v {
                m.insert("debug_id".into(), debug_id(r.created, &r.call_id).into());
            }
            v
        },
    ))
}

/// `GET …/pivot/debug/{CALL_ID}` (URL-encoded; a `debug_id` works too): every record of the
/// call, each with `id`, `created`, `node`, `debug_id`.
pub(crate) async fn get_call(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, call_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let store = st.parts.store.clone();
    let acc = auth.account_id.clone();
    let id = call_id.clone();
    let records = blocking(move || {
        let recs = store.debug_records(&acc, &id)?;
        if !recs.is_empty() {
            return Ok(recs);
        }
        // A debug_id: YYYYMM-<call_id>, the records of that month.
        match id.split_once('-') {
            Some((ym, rest)) if ym.len() == 6 && ym.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(store
                    .debug_records(&acc, rest)?
                    .into_iter()
                    .filter(|r| year_month(r.created) == ym)
                    .collect())
            }
            _ => Ok(recs),
        }
    })
    .await?;
    if records.is_empty() {
        return Err(ApiError::not_found(
            "pivot debug records for call",
            &call_id,
        ));
    }
    let data: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = r.to_api_json();
            if let Value::Object(m) = &mut v {
                m.insert("debug_id".into(), debug_id(r.created, &r.call_id).into());
            }
            v
        })
        .collect();
    Ok(Reply::ok(Value::Array(data)))
}
