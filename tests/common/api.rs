//! A client of pivotd's HTTP API (reqwest over loopback): `api_auth` with an account's key,
//! then requests carrying the token; each answer's status and JSON envelope.

use std::net::SocketAddr;

use pivotd::server::ServerHandle;
use serde_json::{json, Value};

pub struct Api {
    pub base: String,
    /// Sent as `X-Auth-Token`; empty: none sent.
    pub token: String,
    http: reqwest::Client,
}

/// An answer: its status and its envelope.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl Api {
    /// A client without a token yet.
    pub fn new(server: &ServerHandle) -> Api {
        Api::at(server.api.expect("the API listens"))
    }

    /// A client without a token of the API at `addr` (a pivotd process).
    pub fn at(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            token: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// A client with a token for the account whose `api_key` is `key`.
    pub async fn login(server: &ServerHandle, key: &str) -> Api {
        Api::login_at(server.api.expect("the API listens"), key).await
    }

    /// [`Api::login`] to the API at `addr`.
    pub async fn login_at(addr: SocketAddr, key: &str) -> Api {
        let mut api = Api::at(addr);
        let a = api
            .send(
                reqwest::Method::PUT,
                "/v2/api_auth",
                Some(&json!({"data": {"api_key": key}}).to_string()),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        api.token = a.body["auth_token"].as_str().expect("a token").to_string();
        api
    }

    /// One request with `body` as given (JSON or not); the answer must be JSON.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.header("x-auth-token", &self.token);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("api body");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text}"));
        Answer { status, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POST with `data` in the request envelope.
    pub async fn post(&self, path: &str, data: Value) -> Answer {
        self.send(
            reqwest::Method::POST,
            path,
            Some(&json!({ "data": data }).to_string()),
        )
        .await
    }
}
