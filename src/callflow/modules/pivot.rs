//! `pivot` (spec a, b, j; `callflows.pivot.json`): asks the customer's web server what to do.
//! A Kazoo JSON answer replaces the running flow; a TwiML answer is carried out verb by verb
//! (`callflow::twiml_exec`). Any failure — the URL refused, DNS, connection, TLS, timeout, a
//! non-2xx status, an empty or unreadable body, a flow that fails validation — is logged with
//! its reason and the flow goes on with the node's `_` child (spec j.4).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::callflow::node::{Data, ValidationError};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{twiml_exec, CallControl, CallEnded};
use crate::pivot::client::HttpRequest;
use crate::pivot::debug::DebugContext;
use crate::pivot::kazoo::{self, Answer};
use crate::pivot::request::{self, BodyFormat, Method, PivotState, ReqFormat};

/// Spec j.9: `req_timeout_ms` defaults to 5000.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pivot {
    pub voice_url: String,
    pub method: Method,
    pub req_format: ReqFormat,
    pub req_body_format: BodyFormat,
    pub req_timeout_ms: u64,
    pub debug: bool,
    pub cdr_url: Option<String>,
}

fn http_url(d: &Data<'_>, key: &str, v: String) -> Result<String, ValidationError> {
    let lower = v.get(..8).unwrap_or(&v).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(v)
    } else {
        Err(ValidationError::new(
            d.path_of(key),
            format!("{v:?} is not an http:// or https:// URL"),
        ))
    }
}

impl Pivot {
    pub fn from_data(d: &Data<'_>) -> Result<Pivot, ValidationError> {
        let voice_url = d
            .opt_str("voice_url")?
            .ok_or_else(|| ValidationError::new(d.path_of("voice_url"), "required"))?;
        let voice_url = http_url(d, "voice_url", voice_url)?;
        let method = match d.opt_str("method")? {
            None => Method::Get,
            Some(m) => Method::parse(&m).ok_or_else(|| {
                ValidationError::new(d.path_of("method"), format!("{m:?} is not get or post"))
            })?,
        };
        let req_format = match d.opt_str("req_format")? {
            None => ReqFormat::Kazoo,
            Some(f) => ReqFormat::parse(&f).ok_or_else(|| {
                ValidationError::new(
                    d.path_of("req_format"),
                    format!("{f:?} is not kazoo or twiml"),
                )
            })?,
        };
        let req_body_format = match d.opt_str("req_body_format")? {
            None => BodyFormat::Form,
            Some(f) => BodyFormat::parse(&f).ok_or_else(|| {
                ValidationError::new(
                    d.path_of("req_body_format"),
                    format!("{f:?} is not form or json"),
                )
            })?,
        };
        // Spec j.7: `req_timeout` (seconds, as in the docs' example) is accepted beside
        // `req_timeout_ms`, which wins.
        let req_timeout_ms = match d.opt_int("req_timeout_ms", 1, 3_600_000)? {
            Some(ms) => ms as u64,
            None => match d.opt_int("req_timeout", 1, 3600)? {
                Some(s) => s as u64 * 1000,
                None => DEFAULT_TIMEOUT_MS,
            },
        };
        let cdr_url = match d.opt_str("cdr_url")? {
            Some(u) => Some(http_url(d, "cdr_url", u)?),
            None => None,
        };
        Ok(Pivot {
            voice_url,
            method,
            req_format,
            req_body_format,
            req_timeout_ms,
            debug: d.opt_bool("debug")?.unwrap_or(false),
            cdr_url,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("voice_url".into(), Value::String(self.voice_url.clone()));
        m.insert(
            "method".into(),
            Value::String(self.method.as_str().to_ascii_lowercase()),
        );
        m.insert(
            "req_format".into(),
            Value::String(self.req_format.as_str().into()),
        );
        m.insert(
            "req_body_format".into(),
            Value::String(self.req_body_format.as_str().into()),
        );
        m.insert("req_timeout_ms".into(), Value::from(self.req_timeout_ms));
        m.insert("debug".into(), Value::Bool(self.debug));
        if let Some(u) = &self.cdr_url {
            m.insert("cdr_url".into(), Value::String(u.clone()));
        }
        m
    }
}

/// Pivot requests by outcome, across calls (for `/metrics`).
#[derive(Debug, Default)]
pub struct PivotStats {
    /// A 2xx answer that decoded to a flow or TwiML.
    pub ok: AtomicU64,
    /// The URL was refused by the guard before any request.
    pub refused: AtomicU64,
    /// DNS, connection, TLS, timeout, oversized body: no usable response.
    pub failed: AtomicU64,
    /// A response with a non-2xx status.
    pub http_error: AtomicU64,
    /// A 2xx answer that was neither valid Kazoo JSON nor TwiML.
    pub invalid: AtomicU64,
}

impl PivotStats {
    /// `(outcome label, count)` pairs, in a fixed order.
    pub fn outcomes(&self) -> [(&'static str, u64); 5] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("ok", g(&self.ok)),
            ("refused", g(&self.refused)),
            ("failed", g(&self.failed)),
            ("http_error", g(&self.http_error)),
            ("invalid", g(&self.invalid)),
        ]
    }
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One pivot request and its decoded answer; the error is the logged reason.
pub(crate) struct PivotCall<'a> {
    pub url: &'a str,
    pub method: Method,
    pub req_format: ReqFormat,
    pub body_format: BodyFormat,
    pub timeout: Duration,
    /// TwiML: the digits gathered since the last request.
    pub twiml_digits: Option<&'a str>,
    /// Store request/response debug records (spec e.1); error records are stored anyway.
    pub debug: bool,
}

/// Counts the request against the call's cap, sends it and decodes the answer, storing the
/// debug records as it goes. The inner error is the logged reason; `Err(CallEnded)` when the
/// call ended, or was ended for reaching the cap.
pub(crate) async fn ask(
    p: PivotCall<'_>,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Result<(Answer, url::Url), String>, CallEnded> {
    let Some(svc) = rt.pivot.as_ref() else {
        return Ok(Err("pivot is not configured on this server".into()));
    };
    state.pivot_requests += 1;
    if state.pivot_requests > svc.max_requests_per_call {
        tracing::warn!(
            requests = state.pivot_requests - 1,
            "pivot: the call reached max_requests_per_call; ending it"
        );
        call.hangup().await?;
        return Err(CallEnded);
    }
    let url = match svc.http.guard().check_url_static(p.url) {
        Ok(u) => u,
        Err(e) => {
            count(&svc.stats.refused);
            return Ok(Err(format!("URL refused: {e}")));
        }
    };
    let status = if call.is_answered() {
        "in-progress"
    } else {
        "ringing"
    };
    let mut pstate = PivotState::new(call.info(), &state.collections);
    pstate.twiml_digits = p.twiml_digits;
    if p.req_format == ReqFormat::Twiml {
        pstate.call_status = Some(status);
    }
    let params = request::params(&pstate, p.req_format);
    let prepared = request::build(&url, p.method, p.body_format, &params);
    let timeout = p.timeout.min(svc.max_req_timeout);
    let method = match prepared.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
    };
    let mut req = HttpRequest::new(method, prepared.url.clone())
        .timeout(timeout)
        .max_body(kazoo::MAX_ANSWER_BYTES);
    if let Some(ct) = prepared.content_type {
        req = req.header("content-type", ct);
    }
    if let Some(secret) = svc.secrets.get(&call.info().account_id) {
        req = req.header(
            request::SIGNATURE_HEADER,
            &prepared.signature(secret.as_bytes()),
        );
    }
    let ctx = DebugContext {
        account_id: call.info().account_id.clone(),
        call_id: call.info().call_id.clone(),
        iteration: state.pivot_requests,
        node: p.url.to_string(),
        debug: p.debug,
    };
    svc.debug.record_request(
        &ctx,
        prepared.url.as_str(),
        prepared.method.as_str(),
        prepared.content_type.map(|c| ("content-type", c)),
        prepared.body.as_deref().unwrap_or_default(),
    );
    if let Some(b) = prepared.body {
        req = req.body(b);
    }
    tracing::info!(url = %prepared.url, method = prepared.method.as_str(), "pivot request");
    let resp = match svc.http.send(req).await {
        Ok(r) => r,
        Err(e) => {
            let reason = e.to_string();
            count(&svc.stats.failed);
            svc.debug.record_failure(&ctx, &reason);
            return Ok(Err(reason));
        }
    };
    svc.debug.record_response(
        &ctx,
        resp.status,
        resp.headers.iter().map(|(k, v)| (k, v)),
        &resp.body,
    );
    if !(200..300).contains(&resp.status) {
        count(&svc.stats.http_error);
        return Ok(Err(format!("{url} answered HTTP {}", resp.status)));
    }
    // The document's URL (base of its relative URLs, Gather's default action) is the one
    // asked for, not the GET with the call's parameters added; after an HTTP redirect, the
    // URL the server sent us to.
    let base = if resp.final_url == prepared.url {
        url
    } else {
        resp.final_url
    };
    match kazoo::decode(resp.content_type.as_deref(), &resp.body) {
        Ok(answer) => {
            count(&svc.stats.ok);
            Ok(Ok((answer, base)))
        }
        Err(e) => {
            count(&svc.stats.invalid);
            svc.debug.record_error(&ctx, &e, &resp.body);
            Ok(Err(format!("{} answer refused ({}): {e}", p.url, e.kind())))
        }
    }
}

pub async fn run(
    data: &Pivot,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let asked = ask(
        PivotCall {
            url: &data.voice_url,
            method: data.method,
            req_format: data.req_format,
            body_format: data.req_body_format,
            timeout: Duration::from_millis(data.req_timeout_ms),
            twiml_digits: None,
            debug: data.debug,
        },
        call,
        rt,
        state,
    )
    .await?;
    match asked {
        Ok((Answer::Flow(flow), _)) => Ok(Next::Replace(flow)),
        Ok((Answer::Twiml(verbs), base)) => {
            // Spec b.5: the CDR goes to cdr_url when a TwiML-driven call ends.
            if data.cdr_url.is_some() {
                state.cdr_url = data.cdr_url.clone();
            }
            match twiml_exec::run(verbs, base, data, call, rt, state).await? {
                twiml_exec::TwimlEnd::Done => Ok(Next::Stop),
                twiml_exec::TwimlEnd::Flow(flow) => Ok(Next::Replace(flow)),
            }
        }
        Err(reason) => {
            tracing::warn!(voice_url = %data.voice_url, %reason, "pivot failed: taking the _ branch");
            Ok(Next::Default)
        }
    }
}
