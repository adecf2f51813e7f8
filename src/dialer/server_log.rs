//! The server's side of the timeline: its per-call event log, read over the HTTP API
//! (`PUT /v2/api_auth` for a token and the account id, then
//! `GET /v2/accounts/{ACCOUNT_ID}/calls/{CALL_ID}/events`), polled while the call is up.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::logsafe::wire;

/// How often the log is read while the call is up.
const POLL_EVERY: Duration = Duration::from_millis(300);
/// After the call, how long the server's last events (its `end`, written through its store's
/// queue) are waited for.
const SETTLE_FOR: Duration = Duration::from_secs(3);
/// One API request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("--api {0}: not an http(s) URL")]
    BadUrl(String),
    #[error("the API at {url} cannot be reached: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the API refused the key ({status}: {message})")]
    Refused { status: u16, message: String },
    #[error("the API answered {status} to {what}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("the API's answer to {what} is not what pivotd's API sends")]
    BadAnswer { what: &'static str },
    #[error("the server has no events for call {0}")]
    NoSuchCall(String),
}

/// A logged-in client of the events API.
pub struct EventsApi {
    base: url::Url,
    http: reqwest::Client,
    token: String,
    account_id: String,
}

impl EventsApi {
    /// `PUT /v2/api_auth` with the account's key: its token and account id.
    pub async fn login(base: &str, key: &str) -> Result<EventsApi, ApiError> {
        let url = url::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| ApiError::BadUrl(base.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| ApiError::Unreachable {
                url: base.to_string(),
                source,
            })?;
        let auth = url
            .join("/v2/api_auth")
            .map_err(|_| ApiError::BadUrl(base.to_string()))?;
        let body = serde_json::json!({"data": {"api_key": key}}).to_string();
        let resp = http
            .put(auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|source| ApiError::Unreachable {
                url: base.to_string(),
                source,
            })?;
        let status = resp.status().as_u16();
        let doc = read_json(resp).await;
        if matches!(status, 400 | 401 | 403 | 429) {
            return Err(ApiError::Refused {
                status,
                message: message_of(doc.as_ref()),
            });
        }
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                what: "api_auth",
                status,
                message: message_of(doc.as_ref()),
            });
        }
        let doc = doc.ok_or(ApiError::BadAnswer { what: "api_auth" })?;
        let token = doc["auth_token"].as_str();
        let account_id = doc["data"]["account_id"].as_str();
        let (Some(token), Some(account_id)) = (token, account_id) else {
            return Err(ApiError::BadAnswer { what: "api_auth" });
        };
        Ok(EventsApi {
            base: url,
            http,
            token: token.to_string(),
            account_id: account_id.to_string(),
        })
    }

    /// The call's events in the order recorded; `Ok(None)` while the server has none (404).
    pub async fn events(&self, call_id: &str) -> Result<Option<Vec<Value>>, ApiError> {
        let mut url = self.base.clone();
        // Each part a path segment of its own: the Call-ID's `@` (and anything else) encoded.
        url.path_segments_mut()
            .map_err(|_| ApiError::BadUrl(self.base.to_string()))?
            .clear()
            .extend([
                "v2",
                "accounts",
                &self.account_id,
                "calls",
                call_id,
                "events",
            ]);
        let resp = self
            .http
            .get(url)
            .header("x-auth-token", &self.token)
            .send()
            .await
            .map_err(|source| ApiError::Unreachable {
                url: self.base.to_string(),
                source,
            })?;
        let status = resp.status().as_u16();
        let doc = read_json(resp).await;
        match status {
            200 => match doc.as_ref().map(|d| &d["data"]) {
                Some(Value::Array(events)) => Ok(Some(events.clone())),
                _ => Err(ApiError::BadAnswer {
                    what: "call events",
                }),
            },
            404 => Ok(None),
            401 | 403 => Err(ApiError::Refused {
                status,
                message: message_of(doc.as_ref()),
            }),
            _ => Err(ApiError::Status {
                what: "call events",
                status,
                message: message_of(doc.as_ref()),
            }),
        }
    }
}

async fn read_json(resp: reqwest::Response) -> Option<Value> {
    let text = resp.text().await.ok()?;
    serde_json::from_str(&text).ok()
}

/// The envelope's message (`data.message`, else `message`, else `error`), escaped: it came
/// off the network.
fn message_of(doc: Option<&Value>) -> String {
    let Some(doc) = doc else {
        return "no JSON body".to_string();
    };
    let text = [&doc["data"]["message"], &doc["message"], &doc["error"]]
        .into_iter()
        .find_map(Value::as_str)
        .unwrap_or("no message");
    wire(text).to_string()
}

/// What the poller passes on.
pub enum Polled {
    /// One event, new since the last poll.
    Event(Value),
    /// A read failed (said once, then the poller keeps trying quietly).
    Failed(ApiError),
}

/// Reads the call's log every [`POLL_EVERY`] until `ended` turns true, then until its `end`
/// event is there (at most [`SETTLE_FOR`]); each event is sent once. The channel closes when
/// it is done.
pub fn spawn_poller(
    api: std::sync::Arc<EventsApi>,
    call_id: String,
    out: mpsc::UnboundedSender<Polled>,
    mut ended: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: usize = 0;
        let mut complained = false;
        let mut have_end = false;
        let mut settle_until = None;
        loop {
            match api.events(&call_id).await {
                Ok(Some(events)) => {
                    for ev in events.into_iter().skip(seen) {
                        seen += 1;
                        have_end |= ev["kind"] == "end";
                        let _ = out.send(Polled::Event(ev));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if !complained {
                        complained = true;
                        let _ = out.send(Polled::Failed(e));
                    }
                }
            }
            if let Some(until) = settle_until {
                if have_end || tokio::time::Instant::now() >= until {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if *ended.borrow() {
                settle_until = Some(tokio::time::Instant::now() + SETTLE_FOR);
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_EVERY) => {}
                changed = ended.changed() => {
                    if changed.is_err() {
                        // The call is gone without saying so: settle as after its end.
                        settle_until = Some(tokio::time::Instant::now() + SETTLE_FOR);
                    }
                }
            }
        }
    })
}
