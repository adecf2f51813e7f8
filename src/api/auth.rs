//! `PUT /v2/api_auth` (spec e.4) and the token check in front of every account resource.
//! Tokens are 32 random bytes (64 hex digits) given once to the client; the server keeps only
//! their SHA-256, with the account and the expiry: in the store (so that every node sharing
//! a PostgreSQL store accepts a token any of them issued, and a token outlives a restart) and
//! in memory, where a token is looked up first. Failed `api_auth` attempts are counted per
//! source address; past the limit in a minute the address gets 429.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{blocking, hex, request_data, request_token, ApiError, ApiState, Reply, Shared};
use crate::store::{unix_now, Store};

/// The account a request's token belongs to; put in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct Authed {
    pub account_id: String,
}

const WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct Tokens {
    store: Store,
    lifetime: Duration,
    failures_allowed: u32,
    /// SHA-256 of the token -> (account id, expiry): the tokens this node issued or has
    /// already found in the store.
    live: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// Source address -> (window start, failures in it).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub(crate) fn new(store: Store, lifetime: Duration, failures_allowed: u32) -> Tokens {
        Tokens {
            store,
            lifetime,
            failures_allowed,
            live: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// A new token for the account, written to the store before it is given out.
    pub(crate) async fn issue(&self, account_id: &str) -> Result<String, ApiError> {
        let raw: [u8; 32] = rand::random();
        let token = hex(&raw);
        let key = digest(&token);
        let unix = unix_now();
        let expires_at = unix.saturating_add(self.lifetime.as_secs());
        let (store, d, acc) = (self.store.clone(), hex(&key), account_id.to_string());
        blocking(move || store.put_api_token(&d, &acc, expires_at, unix)).await?;
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the expired ones now and then: the map stays the size of the live tokens.
        live.retain(|_, (_, exp)| *exp > now);
        live.insert(key, (account_id.to_string(), now + self.lifetime));
        Ok(token)
    }

    /// The account of a live token: from memory, else from the store (a token another node
    /// issued, or this one before a restart), then remembered until it expires. Whether that
    /// account is still served is [`token_account`]'s question.
    async fn check(&self, token: &str) -> Result<Option<String>, ApiError> {
        let key = digest(token);
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            match live.get(&key) {
                Some((acc, exp)) if *exp > Instant::now() => return Ok(Some(acc.clone())),
                Some(_) => {
                    live.remove(&key);
                    return Ok(None);
                }
                None => {}
            }
        }
        let unix = unix_now();
        let (store, d) = (self.store.clone(), hex(&key));
        let Some((account_id, expires_at)) = blocking(move || store.api_token(&d, unix)).await?
        else {
            return Ok(None);
        };
        let left = Duration::from_secs(expires_at.saturating_sub(unix));
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(key, (account_id.clone(), Instant::now() + left));
        Ok(Some(account_id))
    }

    /// Ends a token before its time (the debug page's logout): gone from memory, and
    /// expired in the store, so this node and any that has not met it yet refuse it. Another
    /// node that already holds it in memory accepts it until its expiry.
    pub(crate) async fn revoke(&self, token: &str) -> Result<(), ApiError> {
        let key = digest(token);
        let known = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.remove(&key).map(|(acc, _)| acc)
        };
        let unix = unix_now();
        let (store, d) = (self.store.clone(), hex(&key));
        blocking(move || {
            let account = match known {
                Some(a) => Some(a),
                None => store.api_token(&d, unix)?.map(|(a, _)| a),
            };
            match account {
                // An expiry of now: `api_token` wants one after now.
                Some(acc) => store.put_api_token(&d, &acc, unix, unix),
                None => Ok(()),
            }
        })
        .await
    }

    /// Whether the address has used up its failures for this minute.
    pub(crate) fn limited(&self, ip: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < WINDOW && *n >= self.failures_allowed)
    }

    fn failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if f.len() > 10_000 {
            f.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let e = f.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

/// Constant-time comparison: the time taken does not tell how much of a key matched.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An API key for a token: the account whose key it is and a new token for it, or `None`
/// (the failure counted against `ip`). The one key check of `api_auth` and the debug page's
/// login; each asks [`Tokens::limited`] first.
pub(crate) async fn exchange_key(
    st: &ApiState,
    ip: IpAddr,
    key: &str,
) -> Result<Option<(String, String)>, ApiError> {
    // The config in force: a reload's new, changed and removed keys count at once.
    let account = st
        .parts
        .cfg
        .get()
        .accounts
        .iter()
        .find(|a| a.api_key.as_deref().is_some_and(|k| same(k, key)))
        .map(|a| a.id.clone());
    let Some(account_id) = account else {
        st.tokens.failed(ip);
        tracing::info!(%ip, "api_auth: unknown api_key");
        return Ok(None);
    };
    let token = st.tokens.issue(&account_id).await?;
    Ok(Some((account_id, token)))
}

/// The account a token gives access to: a live token of an account in the config in force.
/// A reload that removes an account ends its tokens here (the token table keeps only the
/// account id). The one token check of the API and the debug pages.
pub(crate) async fn token_account(st: &ApiState, token: &str) -> Result<Option<String>, ApiError> {
    let Some(account_id) = st.tokens.check(token).await? else {
        return Ok(None);
    };
    let served = st.parts.cfg.get().account(&account_id).is_some();
    Ok(served.then_some(account_id))
}

/// `PUT /v2/api_auth` `{"data": {"api_key": "<64 chars>"}}` → 201 with the token in the
/// envelope and the account in `data`.
pub(crate) async fn api_auth(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let ip = peer.ip();
    if st.tokens.limited(ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
        )
        .data(json!({"message": "too many failed api_auth attempts from this address; try again in a minute"})));
    }
    let data = request_data(&body)?;
    // Spec e.4: the schema wants exactly a 64-character api_key and nothing else.
    if let Some(k) = data.keys().find(|k| k.as_str() != "api_key") {
        return Err(ApiError::validation(
            k,
            "additionalProperties",
            "api_auth takes only api_key",
        ));
    }
    let key = match data.get("api_key") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ApiError::validation(
                "api_key",
                "type",
                "api_key must be a string",
            ))
        }
        None => {
            return Err(ApiError::validation(
                "api_key",
                "required",
                "Field is required but missing",
            ))
        }
    };
    if key.chars().count() != 64 {
        return Err(ApiError::validation(
            "api_key",
            if key.chars().count() < 64 {
                "minLength"
            } else {
                "maxLength"
            },
            "api_key must be 64 characters long",
        ));
    }
    let Some((account_id, token)) = exchange_key(&st, ip, key).await? else {
        return Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid credentials")
                .data(json!({"message": "invalid credentials"})),
        );
    };
    let mut reply = Reply::created(json!({
        "account_id": account_id,
        "apps": [],
        "is_reseller": false,
        "language": "en-us",
        "owner_id": null,
        "reseller_id": null,
    }));
    reply.new_token = Some(token);
    Ok(reply)
}

/// In front of `/v2/accounts/{ACCOUNT_ID}/…`: 401 without a live token, 403 when the token's
/// account is not the one in the path.
pub(crate) async fn require_token(
    State(st): State<Shared>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = request_token(&req) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "invalid credentials")
            .data(json!({"message": "an X-Auth-Token is required"}))
            .into_response();
    };
    let account_id = match token_account(&st, &token).await {
        Ok(Some(account_id)) => account_id,
        Ok(None) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "invalid credentials")
                .data(json!({"message": "the auth token is unknown or has expired"}))
                .into_response()
        }
        Err(e) => return e.into_response(),
    };
    let path_account = req
        .uri()
        .path()
        .strip_prefix("/v2/accounts/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if path_account != account_id {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden")
            .data(json!({"message": "the auth token does not give access to this account"}))
            .into_response();
    }
    req.extensions_mut().insert(Authed { account_id });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open(":memory:").unwrap()
    }

    #[tokio::test]
    async fn tokens_expire_and_are_kept_hashed() {
        let store = store();
        let t = Tokens::new(store.clone(), Duration::from_millis(50), 3);
        let tok = t.issue("acc").await.unwrap();
        assert_eq!(tok.len(), 64);
        assert_eq!(t.check(&tok).await.unwrap().as_deref(), Some("acc"));
        assert_eq!(t.check("nope").await.unwrap(), None);
        {
            let live = t.live.lock().unwrap();
            assert!(live.contains_key(&digest(&tok)));
            assert!(live.values().all(|(a, _)| a == "acc"));
        }
        // The store keeps the digest, never the token.
        let d = hex(&digest(&tok));
        assert!(store.api_token(&d, 0).unwrap().is_some());
        assert!(store.api_token(&tok, 0).unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(t.check(&tok).await.unwrap(), None);
    }

    /// Another node on the same store (here: another `Tokens`) accepts a token it did not
    /// issue, for its account, until it expires.
    #[tokio::test]
    async fn a_token_issued_elsewhere_is_found_in_the_store() {
        let store = store();
        let a = Tokens::new(store.clone(), Duration::from_secs(60), 3);
        let b = Tokens::new(store.clone(), Duration::from_secs(60), 3);
        let tok = a.issue("acc").await.unwrap();
        assert_eq!(b.check(&tok).await.unwrap().as_deref(), Some("acc"));
        // Remembered: found again without the store's row.
        store
            .put_api_token(&hex(&digest(&tok)), "acc", 1, unix_now())
            .unwrap();
        assert_eq!(b.check(&tok).await.unwrap().as_deref(), Some("acc"));
        let c = Tokens::new(store, Duration::from_secs(60), 3);
        assert_eq!(c.check(&tok).await.unwrap(), None, "expired in the store");
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_here_and_by_a_node_that_had_not_met_it() {
        let store = store();
        let a = Tokens::new(store.clone(), Duration::from_secs(60), 3);
        let tok = a.issue("acc").await.unwrap();
        let keep = a.issue("acc").await.unwrap();
        a.revoke(&tok).await.unwrap();
        assert_eq!(a.check(&tok).await.unwrap(), None);
        let b = Tokens::new(store, Duration::from_secs(60), 3);
        assert_eq!(b.check(&tok).await.unwrap(), None);
        assert_eq!(b.check(&keep).await.unwrap().as_deref(), Some("acc"));
        a.revoke("never-issued").await.unwrap();
    }

    #[test]
    fn failures_limit_per_address() {
        let t = Tokens::new(store(), Duration::from_secs(60), 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(!t.limited(a));
        t.failed(a);
        assert!(!t.limited(a));
        t.failed(a);
        assert!(t.limited(a));
        assert!(!t.limited(b));
    }

    #[test]
    fn key_comparison() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
