//! The HTTP API: a Crossbar-compatible subset (spec e) on axum: callflows, devices, users,
//! registrations, presence, pivot debug records, CDRs, and the debug page (`/ui`, HTML). Every
//! answer but `/healthz`, `/metrics` and `/ui` is a
//! Crossbar envelope:
//! `{"data":…, "status":"success", "request_id":…, "auth_token":…, "revision":…, …}`, or on
//! failure `{"status":"error", "error":"400", "message":…, "data":{…}}`.
//!
//! Handlers return [`Reply`] or [`ApiError`]; both leave the envelope's body in a response
//! extension and the outer [`envelope`] middleware adds the per-request fields (request id,
//! the token used, time) and writes the JSON. axum's own refusals (unknown route 404, wrong
//! method 405, body too large 413) get the error envelope there too.

mod auth;
mod call_events;
mod callflows;
mod cdrs;
mod changes;
mod devices;
mod docs;
mod health;
mod paging;
mod pivot_debug;
mod presence;
mod registrations;
mod ui;
mod users;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::call::CallStats;
use crate::callflow::modules::pivot::PivotStats;
use crate::config::live::LiveConfig;
use crate::media::player::Pacer;
use crate::media::rtp::PortPool;
use crate::registrar::Registrar;
use crate::routing::Routes;
use crate::sip::endpoint::Endpoint;
use crate::store::{Store, StoreError};

pub use callflows::load_callflows;
pub use devices::load_devices;
pub(crate) use paging::{time_param, Paging};

/// What the API reads and changes.
pub struct ApiParts {
    /// The config in force: read per request, so a reload's accounts (their API keys, the
    /// list tokens are checked against) count at once; `config::live` keeps the rest fixed.
    pub cfg: Arc<LiveConfig>,
    pub store: Store,
    pub routes: Arc<Routes>,
    pub endpoint: Arc<Endpoint>,
    pub calls: Arc<CallStats>,
    pub active: Arc<AtomicUsize>,
    pub pivot: Arc<PivotStats>,
    pub pacer: Pacer,
    pub pool: Arc<PortPool>,
    /// The SIP service's tasks: `/healthz` is 503 while any is dead or restarting.
    pub health: Arc<crate::health::TaskHealth>,
    pub overload: Arc<crate::call::admission::OverloadStats>,
    /// Whether the box is overloaded, its signals and the 503s it sent.
    pub load: Arc<crate::sip::overload::LoadGate>,
    /// Devices' bindings and the directory the API's device and user changes update.
    pub registrar: Arc<Registrar>,
    /// Lamps: listed and reset by the presence resource.
    pub presence: Arc<crate::presence::Presence>,
}

/// Shared by all requests.
pub struct ApiState {
    parts: ApiParts,
    tokens: auth::Tokens,
    /// Callflow changes one at a time: the number check, the store write and the routing
    /// table swap happen together.
    callflow_lock: tokio::sync::Mutex<()>,
    /// Device and user changes one at a time: the username check, the store write and the
    /// directory update happen together, and a user's change reaches its devices' entries.
    directory_lock: tokio::sync::Mutex<()>,
}

impl ApiState {
    pub fn new(parts: ApiParts) -> Arc<ApiState> {
        let api = &parts.cfg.get().api;
        let lifetime = Duration::from_secs(api.token_lifetime_s);
        let failures = api.auth_failures_per_minute;
        Arc::new(ApiState {
            tokens: auth::Tokens::new(parts.store.clone(), lifetime, failures),
            callflow_lock: tokio::sync::Mutex::new(()),
            directory_lock: tokio::sync::Mutex::new(()),
            parts,
        })
    }
}

type Shared = Arc<ApiState>;

/// The routes.
pub fn router(state: Shared) -> Router {
    let accounts = Router::new()
        .route(
            "/v2/accounts/{account_id}/callflows",
            get(callflows::list).put(callflows::create),
        )
        .route(
            "/v2/accounts/{account_id}/callflows/{id}",
            get(callflows::get_one)
                .post(callflows::replace)
                .patch(callflows::patch)
                .delete(callflows::delete),
        )
        .route(
            "/v2/accounts/{account_id}/pivot/debug",
            get(pivot_debug::list),
        )
        .route(
            "/v2/accounts/{account_id}/pivot/debug/{call_id}",
            get(pivot_debug::get_call),
        )
        .route("/v2/accounts/{account_id}/cdrs", get(cdrs::list))
        .route(
            "/v2/accounts/{account_id}/calls/{call_id}/events",
            get(call_events::get_call),
        )
        .route(
            "/v2/accounts/{account_id}/devices",
            get(devices::list).put(devices::create),
        )
        .route(
            "/v2/accounts/{account_id}/devices/{id}",
            get(devices::get_one)
                .post(devices::replace)
                .patch(devices::patch)
                .delete(devices::delete),
        )
        .route(
            "/v2/accounts/{account_id}/users",
            get(users::list).put(users::create),
        )
        .route(
            "/v2/accounts/{account_id}/users/{id}",
            get(users::get_one)
                .post(users::replace)
                .patch(users::patch)
                .delete(users::delete),
        )
        .route(
            "/v2/accounts/{account_id}/registrations",
            get(registrations::list),
        )
        .route("/v2/accounts/{account_id}/presence", get(presence::list))
        .route(
            "/v2/accounts/{account_id}/presence/{id}",
            get(presence::get_one).post(presence::post_one),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/v2/api_auth", put(auth::api_auth))
        .merge(accounts)
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .merge(ui::router(state.clone()))
        .layer(middleware::from_fn(envelope))
        .with_state(state)
}

/// Binds `addr` and serves the API until `stop`'s sender is dropped. Returns the bound
/// address (port 0 resolved).
pub async fn start(
    addr: SocketAddr,
    state: Shared,
    mut stop: watch::Receiver<()>,
) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    changes::follow(state.clone(), stop.clone());
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // Err once the ServerHandle (the sender) is gone.
                while stop.changed().await.is_ok() {}
            })
            .await;
        if let Err(e) = served {
            tracing::warn!("api: server stopped: {e}");
        }
    });
    tracing::info!(%local, "api listening");
    Ok(local)
}

/// Retention (issue 4): purges pivot debug records older than `retention` now and then
/// every few minutes, until `stop`'s sender is dropped.
pub fn spawn_retention(store: Store, retention: Duration, mut stop: watch::Receiver<()>) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.purge_older_than(retention)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(records = n, "retention: purged old debug records"),
                Ok(Err(e)) => tracing::warn!("retention: purge failed: {e}"),
                Err(e) => tracing::warn!("retention: purge task failed: {e}"),
            }
        }
    });
}

/// A success: the envelope's `data` and the listing/revision fields beside it.
pub(crate) struct Reply {
    status: StatusCode,
    fields: Map<String, Value>,
    /// Set by `api_auth`: the token just issued goes in the envelope.
    new_token: Option<String>,
}

impl Reply {
    pub(crate) fn ok(data: Value) -> Reply {
        let mut fields = Map::new();
        fields.insert("data".into(), data);
        Reply {
            status: StatusCode::OK,
            fields,
            new_token: None,
        }
    }

    pub(crate) fn created(data: Value) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            ..Reply::ok(data)
        }
    }

    /// 202: Crossbar's answer to a command carried out after the answer (a presence reset).
    pub(crate) fn accepted(data: Value) -> Reply {
        Reply {
            status: StatusCode::ACCEPTED,
            ..Reply::ok(data)
        }
    }

    pub(crate) fn with(mut self, key: &str, v: impl Into<Value>) -> Reply {
        self.fields.insert(key.into(), v.into());
        self
    }
}

/// The envelope body a handler produced, picked up by [`envelope`].
#[derive(Clone)]
struct Pending {
    fields: Map<String, Value>,
    new_token: Option<String>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut fields = self.fields;
        fields.insert("status".into(), "success".into());
        let mut r = self.status.into_response();
        r.extensions_mut().insert(Pending {
            fields,
            new_token: self.new_token,
        });
        r
    }
}

/// A failure in Crossbar's shape: HTTP status, `message`, and `data` with the detail.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    data: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            data: json!({}),
        }
    }

    pub(crate) fn data(mut self, data: Value) -> ApiError {
        self.data = data;
        self
    }

    /// 400 `validation error` with Kazoo's detail shape `{key: {rule: {"message": …}}}`.
    pub(crate) fn validation(key: &str, rule: &str, message: impl Into<String>) -> ApiError {
        let mut detail = Map::new();
        detail.insert("message".into(), Value::String(message.into()));
        ApiError::validation_detail(key, rule, detail)
    }

    pub(crate) fn validation_detail(key: &str, rule: &str, detail: Map<String, Value>) -> ApiError {
        let mut rules = Map::new();
        rules.insert(rule.into(), Value::Object(detail));
        let mut data = Map::new();
        data.insert(key.into(), Value::Object(rules));
        ApiError::new(StatusCode::BAD_REQUEST, "validation error").data(Value::Object(data))
    }

    pub(crate) fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "bad identifier")
            .data(json!({ "message": format!("no {what} {id:?}"), "cause": id }))
    }

    /// A store failure: the one 500 (never caused by the request's content).
    pub(crate) fn store(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!("api: store error: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "datastore fault")
            .data(json!({ "message": e.to_string() }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut fields = Map::new();
        fields.insert("status".into(), "error".into());
        fields.insert("error".into(), self.status.as_u16().to_string().into());
        fields.insert("message".into(), self.message.into());
        fields.insert("data".into(), self.data);
        let mut r = self.status.into_response();
        r.extensions_mut().insert(Pending {
            fields,
            new_token: None,
        });
        r
    }
}

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::store(e)),
    }
}

/// Parses a request body as JSON: 400 with the parser's reason when it is not.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid JSON: the body is empty")
                .data(json!({"message": "the request needs a JSON body {\"data\": {…}}"})),
        );
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")).data(json!({
            "message": e.to_string(), "line": e.line(), "column": e.column()
        }))
    })
}

/// The `data` object of a request envelope.
pub(crate) fn request_data(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match parse_json(body)? {
        Value::Object(mut env) => match env.remove("data") {
            Some(Value::Object(d)) => Ok(d),
            Some(_) => Err(ApiError::validation(
                "data",
                "type",
                "data must be an object",
            )),
            None => Err(ApiError::validation(
                "data",
                "required",
                "the body must be an envelope {\"data\": {…}}",
            )),
        },
        _ => Err(ApiError::validation(
            "data",
            "type",
            "the body must be a JSON object {\"data\": {…}}",
        )),
    }
}

/// The token the request carried (spec e.4: `X-Auth-Token`, `Authorization: Bearer`, or
/// `auth_token` in the query string).
pub(crate) fn request_token(req: &Request) -> Option<String> {
    let h = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    if let Some(t) = h(header::HeaderName::from_static("x-auth-token")).filter(|t| !t.is_empty()) {
        return Some(t);
    }
    if let Some(b) = h(header::AUTHORIZATION) {
        let mut it = b.splitn(2, ' ');
        if it.next().is_some_and(|s| s.eq_ignore_ascii_case("bearer")) {
            if let Some(t) = it.next().map(str::trim).filter(|t| !t.is_empty()) {
                return Some(t.to_string());
            }
        }
    }
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "auth_token")
            .map(|(_, v)| v.into_owned())
            .filter(|t| !t.is_empty())
    })
}

/// 32 random hex digits (request ids, callflow ids: the shape of a CouchDB id).
pub(crate) fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    hex(&b)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// Adds the per-request envelope fields and writes the JSON body.
async fn envelope(req: Request, next: Next) -> Response {
    let token = request_token(&req).unwrap_or_default();
    let mut resp = next.run(req).await;
    if resp.extensions().get::<ui::Html>().is_some() {
        // The debug page's own answers (HTML, its errors too).
        return resp;
    }
    let pending = match resp.extensions_mut().remove::<Pending>() {
        Some(p) => p,
        None => {
            let status = resp.status();
            if !status.is_client_error() {
                // healthz and metrics (200 or 503): their own body.
                return resp;
            }
            // axum's own refusals (no such route, wrong method, body too large, a query
            // that does not decode): the error envelope, with axum's words as the detail.
            let message = status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase();
            let detail = axum::body::to_bytes(std::mem::take(resp.body_mut()), 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let mut r = ApiError::new(status, message)
                .data(json!({ "message": detail }))
                .into_response();
            match r.extensions_mut().remove::<Pending>() {
                Some(p) => {
                    resp = r;
                    p
                }
                None => return resp,
            }
        }
    };
    let mut fields = pending.fields;
    fields.insert("request_id".into(), random_id().into());
    fields.insert(
        "auth_token".into(),
        pending.new_token.unwrap_or(token).into(),
    );
    fields.insert("node".into(), NODE.into());
    fields.insert("timestamp".into(), iso8601(unix_now()).into());
    fields.insert(
        "version".into(),
        concat!("pivotd ", env!("CARGO_PKG_VERSION")).into(),
    );
    let body = Value::Object(fields).to_string();
    *resp.body_mut() = Body::from(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// The envelope's `node` (Kazoo: the Erlang node that answered).
const NODE: &str = "pivotd";

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds as ISO 8601 UTC (`2014-05-30T20:42:53Z`).
pub(crate) fn iso8601(unix: i64) -> String {
    let (y, m, d) = civil(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Gregorian seconds to `YYYYMM` (the month prefix of a Kazoo `debug_id`).
pub(crate) fn year_month(gregorian: i64) -> String {
    let unix = gregorian.saturating_sub(crate::store::GREGORIAN_OFFSET);
    let (y, m, _) = civil(unix.div_euclid(86_400));
    format!("{y:04}{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_401_482_573), "2014-05-30T20:42:53Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        // The seed's example (spec j.15): 63635231906 Gregorian seconds is 2016-07-08.
        assert_eq!(year_month(63_635_231_906), "201607");
    }

    #[test]
    fn dates_at_the_ends_of_i64_do_not_overflow() {
        for t in [i64::MIN, i64::MIN + 1, -1, i64::MAX - 1, i64::MAX] {
            assert!(!iso8601(t).is_empty());
            assert!(!year_month(t).is_empty());
        }
    }

    #[tokio::test]
    async fn retention_purges_old_debug_records_and_keeps_new_ones() {
        use crate::store::{gregorian_now, DebugRecord, RecordKind, Write};
        let store = Store::open(":memory:").unwrap();
        let rec = |id: &str, age: i64| DebugRecord {
            id: id.into(),
            account_id: "acc".into(),
            call_id: id.into(),
            iteration: 1,
            node: "n".into(),
            kind: RecordKind::Request,
            created: gregorian_now() - age,
            doc: json!({"call_id": id}),
        };
        assert!(store.write(Write::Debug(rec("old", 7200))));
        assert!(store.write(Write::Debug(rec("new", 10))));
        store.flush().unwrap();
        let (_keep, stop) = watch::channel(());
        spawn_retention(store.clone(), Duration::from_secs(3600), stop);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.debug_record_count("acc").unwrap() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "not purged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.debug_records("acc", "old").unwrap().is_empty());
        assert_eq!(store.debug_records("acc", "new").unwrap().len(), 1);
    }

    #[test]
    fn hex_ids() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        let id = random_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
