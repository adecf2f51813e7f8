//! Crossbar's keyset paging and time filters, shared by the paged lists (CDRs, pivot debug).

use base64::Engine;
use serde_json::{json, Value};

use super::{ApiError, Reply};

/// Crossbar keyset paging (spec e.3), the one implementation every paged list uses:
/// `page_size` and an opaque URL-safe `start_key` in, the page with `next_start_key` out.
/// A key is the `(time, id)` of the last row of the previous page, the list's order.
pub(crate) struct Paging {
    pub size: usize,
    pub after: Option<(i64, String)>,
    /// The `start_key` as given, echoed in the envelope.
    pub start_key: Option<String>,
}

pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 1000;

impl Paging {
    pub(crate) fn from_query(
        q: &std::collections::HashMap<String, String>,
    ) -> Result<Paging, ApiError> {
        let size = match q.get("page_size") {
            None => DEFAULT_PAGE,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(ApiError::validation(
                        "page_size",
                        "range",
                        format!("page_size must be a whole number from 1 to {MAX_PAGE}"),
                    ))
                }
            },
        };
        let after = match q.get("start_key") {
            None => None,
            Some(k) => Some(decode_key(k).ok_or_else(|| {
                ApiError::validation("start_key", "format", "not a start_key this server gave")
            })?),
        };
        Ok(Paging {
            size,
            after,
            start_key: q.get("start_key").cloned(),
        })
    }

    /// How many rows to fetch: one more than the page, whose presence says a next page exists.
    pub(crate) fn fetch(&self) -> usize {
        self.size + 1
    }

    /// The reply for rows fetched with [`Paging::fetch`], in the list's order: the page's rows
    /// as `json` shows them, `page_size` (rows returned), `start_key` as given and, when there
    /// is more, `next_start_key` from the `key` of the page's last row.
    pub(crate) fn reply<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> (i64, &str),
        json: impl Fn(&T) -> Value,
    ) -> Reply {
        let more = rows.len() > self.size;
        rows.truncate(self.size);
        let next = rows.last().filter(|_| more).map(|r| {
            let (t, id) = key(r);
            encode_key(t, id)
        });
        let data: Vec<Value> = rows.iter().map(json).collect();
        let mut reply = Reply::ok(Value::Array(data)).with("page_size", rows.len());
        if let Some(k) = &self.start_key {
            reply = reply.with("start_key", k.clone());
        }
        if let Some(k) = next {
            reply = reply.with("next_start_key", k);
        }
        reply
    }
}

pub(crate) fn encode_key(t: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([t, id]).to_string())
}

fn decode_key(k: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((v.get(0)?.as_i64()?, v.get(1)?.as_str()?.to_string()))
}

/// A `created_from`/`created_to` query value: Gregorian seconds as in Crossbar.
pub(crate) fn time_param(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<i64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::validation(key, "type", format!("{key} must be Gregorian seconds"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_the_ends_of_i64_round_trip() {
        assert_eq!(
            decode_key(&encode_key(i64::MIN, "")),
            Some((i64::MIN, String::new()))
        );
    }

    #[test]
    fn start_keys_round_trip_and_garbage_is_refused() {
        let k = encode_key(63_635_231_906, "a@b");
        assert!(!k.contains('+') && !k.contains('/') && !k.contains('='));
        assert_eq!(decode_key(&k), Some((63_635_231_906, "a@b".to_string())));
        assert_eq!(decode_key("!!"), None);
        assert_eq!(decode_key("WzFd"), None); // [1]
    }

    /// One more row than the page is fetched: it says there is a next page, and the key of
    /// the page's last row starts it.
    #[test]
    fn paging_cuts_the_extra_row_into_a_next_start_key() {
        let q = |pairs: &[(&str, &str)]| {
            let q = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Paging::from_query(&q).unwrap()
        };
        let rows = |n: i64| {
            (0..n)
                .map(|i| (100 - i, format!("c{i}")))
                .collect::<Vec<_>>()
        };
        let p = q(&[("page_size", "2")]);
        assert_eq!(p.fetch(), 3);
        let r = p.reply(rows(3), |(t, id)| (*t, id), |(_, id)| json!(id));
        assert_eq!(r.fields["data"], json!(["c0", "c1"]));
        assert_eq!(r.fields["page_size"], json!(2));
        let next = r.fields["next_start_key"].as_str().unwrap();
        assert_eq!(decode_key(next), Some((99, "c1".to_string())));
        assert!(!r.fields.contains_key("start_key"));
        let p = q(&[("page_size", "2"), ("start_key", next)]);
        assert_eq!(p.after, Some((99, "c1".to_string())));
        let r = p.reply(rows(2), |(t, id)| (*t, id), |(_, id)| json!(id));
        assert_eq!(r.fields["start_key"], json!(next));
        assert!(!r.fields.contains_key("next_start_key"), "the last page");
    }
}
