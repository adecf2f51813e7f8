//! `…/calls/{CALL_ID}/events` (issue 14): one call's event log, in the order recorded, each
//! event with its time since the INVITE (`at`), its `kind` and fields, and its timeline `line`.

use axum::extract::{Extension, Path, State};
use serde_json::Value;

use super::auth::Authed;
use super::{blocking, ApiError, Reply, Shared};

/// `GET …/calls/{CALL_ID}/events` (the Call-ID URL-encoded, `@` as `%40`; the path is
/// decoded by the router): 404 when the account has no event of that call.
pub(crate) async fn get_call(
    State(st): State<Shared>,
    Extension(auth): Extension<Authed>,
    Path((_, call_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let store = st.parts.store.clone();
    let acc = auth.account_id.clone();
    let id = call_id.clone();
    let events = blocking(move || store.call_events(&acc, &id)).await?;
    if events.is_empty() {
        return Err(ApiError::not_found("events for call", &call_id));
    }
    let data: Vec<Value> = events.iter().map(|e| e.to_api_json()).collect();
    Ok(Reply::ok(Value::Array(data)))
}
