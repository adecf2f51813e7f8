//! `pivot` (spec a, b, j; `callflows.pivot.json`): asks the customer's web server what to do.
//! A Kazoo JSON answer replaces the running flow; a TwiML answer is carried out verb by verb
//! (`callflow::twiml_exec`). Any failure — the URL refused, DNS, connection, TLS, timeout, a
//! non-2xx status, an empty or unreadable body, a flow that fails validation — is logged with
//! its reason and the flow goes on with the node's `_` child (spec j.4), whether it was the
//! first request or a TwiML follow-up of the same node (see [`take_underscore`]). A node with
//! a `fallback_url` asks it the same request when the first one fails, before `_`.

mod cdr;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use url::Url;

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{twiml_exec, CallControl, CallEnded};
use crate::flow::modules::pivot::{BodyFormat, Method, Pivot, ReqFormat};
use crate::logsafe::wire;
use crate::pivot::client::{HttpError, HttpRequest, PivotHttp};
use crate::pivot::debug::{DebugContext, DebugSink};
use crate::pivot::fetch::UrlPrompts;
use crate::pivot::guard::GuardError;
use crate::pivot::kazoo::{self, Answer, AnswerError};
use crate::pivot::request::{self, PivotState};
use crate::pivot::twiml::{resolve_url, ResolveError};
use crate::store::{trim_value, CallEvent};

/// What pivot needs: the guarded HTTP client, the played-URL cache and the limits. One per
/// server, in [`Runtime::pivot`].
pub struct PivotServices {
    pub http: PivotHttp,
    pub url_prompts: UrlPrompts,
    /// `req_timeout_ms` is clamped to this (spec j.9).
    pub max_req_timeout: Duration,
    /// Pivot requests one call may make (spec j.18).
    pub max_requests_per_call: u32,
    /// Signing secret per account id (a reload replaces them: [`PivotServices::set_secrets`]).
    pub secrets: RwLock<HashMap<String, String>>,
    /// Where debug records go (the store's writer queue: never blocks the call).
    pub debug: DebugSink,
    /// Requests by outcome, for `/metrics`.
    pub stats: Arc<PivotStats>,
}

impl PivotServices {
    fn secret_of(&self, account_id: &str) -> Option<String> {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        secrets.get(account_id).cloned()
    }

    /// The accounts' signing secrets after a reload.
    pub fn set_secrets(&self, secrets: HashMap<String, String>) {
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = secrets;
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
    /// Round-trip times per outcome, in [`Outcome::COUNTED`]'s order.
    round_trips: [RoundTrips; 5],
}

/// Upper bounds (seconds) of the round-trip histogram's buckets: a loopback web server answers
/// in well under a millisecond, a distant one in tens, a slow one hits `req_timeout_ms`.
pub const ROUND_TRIP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One outcome's round trips: counts per bucket (not cumulative; the last one is above every
/// bound) and the sum. Relaxed atomics: a scrape may see a request in the count but not yet in
/// the sum, which Prometheus tolerates.
#[derive(Debug, Default)]
struct RoundTrips {
    buckets: [AtomicU64; ROUND_TRIP_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as `/metrics` prints it: cumulative counts per bound of
/// [`ROUND_TRIP_BUCKETS`], then the total (`+Inf`), and the sum in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundTripSnapshot {
    pub cumulative: [u64; ROUND_TRIP_BUCKETS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl RoundTrips {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = ROUND_TRIP_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(ROUND_TRIP_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RoundTripSnapshot {
        let mut cumulative = [0; ROUND_TRIP_BUCKETS.len()];
        let mut running = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            running += b.load(Ordering::Relaxed);
            *c = running;
        }
        // The bucket above every bound counts in the total only.
        running += self.buckets[ROUND_TRIP_BUCKETS.len()].load(Ordering::Relaxed);
        RoundTripSnapshot {
            cumulative,
            count: running,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl PivotStats {
    /// `(outcome label, count)` pairs, in a fixed order.
    pub fn outcomes(&self) -> [(&'static str, u64); 5] {
        Outcome::COUNTED.map(|o| {
            let n = self.counter(o).map_or(0, |c| c.load(Ordering::Relaxed));
            (o.label(), n)
        })
    }

    /// `(outcome label, round trips)` pairs, in the order of [`PivotStats::outcomes`].
    pub fn round_trips(&self) -> [(&'static str, RoundTripSnapshot); 5] {
        std::array::from_fn(|i| (Outcome::COUNTED[i].label(), self.round_trips[i].snapshot()))
    }

    /// Counts one request under its outcome, with the time from its start to its outcome.
    fn record(&self, o: Outcome, elapsed: Duration) {
        if let Some(c) = self.counter(o) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(i) = Outcome::COUNTED.iter().position(|&c| c == o) {
            self.round_trips[i].observe(elapsed);
        }
    }

    /// `None` for `not_configured`: without pivot services there are no counters.
    fn counter(&self, o: Outcome) -> Option<&AtomicU64> {
        match o {
            Outcome::Ok => Some(&self.ok),
            Outcome::Refused => Some(&self.refused),
            Outcome::Failed => Some(&self.failed),
            Outcome::HttpError => Some(&self.http_error),
            Outcome::Invalid => Some(&self.invalid),
            Outcome::NotConfigured => None,
        }
    }
}

/// What became of a pivot request: the `/metrics` counter it goes to and the log line's
/// `outcome`, named by [`Outcome::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
    HttpError,
    Invalid,
    NotConfigured,
}

impl Outcome {
    /// The outcomes `/metrics` counts (every one but `not_configured`), in its order.
    pub const COUNTED: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Failed,
        Outcome::HttpError,
        Outcome::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::HttpError => "http_error",
            Outcome::Invalid => "invalid",
            Outcome::NotConfigured => "not_configured",
        }
    }
}

/// Why a pivot request gave nothing to run. Each one is a failure of the pivot node, whichever
/// of its requests it was (the `voice_url` or a TwiML follow-up): the node's `_` child runs.
#[derive(Debug, thiserror::Error)]
pub enum PivotFailure {
    #[error("pivot is not configured on this server")]
    NotConfigured,
    /// A TwiML URL (Redirect, Gather or Dial action) that does not resolve to an http(s) URL.
    #[error("URL refused: {0}")]
    BadReference(ResolveError),
    /// The URL guard refused the URL before any request.
    #[error("URL refused: {0}")]
    Refused(GuardError),
    /// No usable response: DNS, connection, TLS, timeout, an oversized body.
    #[error("{}", .0.reason())]
    Fetch(HttpError),
    /// A response with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A 2xx answer that is neither TwiML nor a valid Kazoo flow (empty, unreadable, invalid).
    #[error("answer refused ({kind}): {0}", kind = .0.kind())]
    Answer(AnswerError),
}

impl PivotFailure {
    /// The outcome it is counted and logged under (the one mapping of failures to both).
    pub fn outcome(&self) -> Outcome {
        match self {
            PivotFailure::NotConfigured => Outcome::NotConfigured,
            PivotFailure::BadReference(_) | PivotFailure::Refused(_) => Outcome::Refused,
            PivotFailure::Fetch(_) => Outcome::Failed,
            PivotFailure::Status(_) => Outcome::HttpError,
            PivotFailure::Answer(_) => Outcome::Invalid,
        }
    }
}

/// A pivot request that failed: the URL asked (absolute once resolved), its iteration and why.
#[derive(Debug)]
pub struct Failed {
    pub url: String,
    pub iteration: u32,
    pub failure: PivotFailure,
}

/// One pivot request and its decoded answer.
pub(crate) struct PivotCall<'a> {
    /// The node's `voice_url`; with `base`, a TwiML reference (Redirect, Gather or Dial action).
    pub url: &'a str,
    /// The URL of the TwiML document `url` was written in (spec j.11: relative URLs).
    pub base: Option<&'a Url>,
    pub method: Method,
    pub req_format: ReqFormat,
    pub body_format: BodyFormat,
    pub timeout: Duration,
    /// TwiML: the digits gathered since the last request.
    pub twiml_digits: Option<&'a str>,
    /// Store request/response debug records (spec e.1); error records are stored anyway.
    pub debug: bool,
}

/// Counts the request against the call's cap, checks its URL, sends it and decodes the
/// answer, storing the debug records and counting the outcome as it goes. `Err(CallEnded)`
/// when the call ended, or was ended for reaching the cap.
pub(crate) async fn ask(
    p: PivotCall<'_>,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Result<(Answer, Url), Failed>, CallEnded> {
    let Some(svc) = rt.pivot.as_ref() else {
        return Ok(Err(Failed {
            url: p.url.to_string(),
            iteration: state.pivot_requests,
            failure: PivotFailure::NotConfigured,
        }));
    };
    let started = Instant::now();
    state.pivot_requests += 1;
    if state.pivot_requests > svc.max_requests_per_call {
        tracing::warn!(
            requests = state.pivot_requests - 1,
            "pivot: the call reached max_requests_per_call; ending it"
        );
        call.hangup().await?;
        return Err(CallEnded);
    }
    let guard = svc.http.guard();
    let checked = match p.base {
        None => guard.check_url_static(p.url).map_err(PivotFailure::Refused),
        Some(base) => match resolve_url(base, p.url) {
            Ok(u) => guard
                .check_parsed(&u)
                .map(|()| u)
                .map_err(PivotFailure::Refused),
            Err(e) => Err(PivotFailure::BadReference(e)),
        },
    };
    let ctx = DebugContext {
        account_id: call.info().account_id.clone(),
        call_id: call.info().call_id.clone(),
        iteration: state.pivot_requests,
        node: match (&checked, p.base) {
            (Ok(u), Some(_)) => u.to_string(),
            _ => p.url.to_string(),
        },
        debug: p.debug,
    };
    let result = match checked {
        Ok(url) => {
            let sent = send(svc, &p, url, &ctx, call, state).await;
            // A bridge's outcome goes on the first request sent after it only: a Twilio
            // server tells a `<Dial action>` request by its `DialCallStatus`, so a later
            // Redirect to the same URL must not look like one.
            state.last_bridge = None;
            sent
        }
        Err(failure) => {
            // debug.rs: a refused URL leaves an error record too.
            svc.debug.record_failure(&ctx, &failure.to_string());
            Err(failure)
        }
    };
    call.record(pivot_event(&p, &ctx.node, &result, started.elapsed()));
    Ok(match result {
        Ok((answer, base, _)) => {
            svc.stats.record(Outcome::Ok, started.elapsed());
            Ok((answer, base))
        }
        Err(failure) => {
            svc.stats.record(failure.outcome(), started.elapsed());
            Err(Failed {
                url: ctx.node,
                iteration: ctx.iteration,
                failure,
            })
        }
    })
}

/// Sends a checked request and decodes its answer (the document's base URL beside it).
async fn send(
    svc: &PivotServices,
    p: &PivotCall<'_>,
    url: Url,
    ctx: &DebugContext,
    // `&mut`: a `&dyn CallControl` would not be Send (the trait is not Sync).
    call: &mut dyn CallControl,
    state: &FlowState,
) -> Result<(Answer, Url, u16), PivotFailure> {
    let status = if call.is_answered() {
        "in-progress"
    } else {
        "ringing"
    };
    let mut pstate = PivotState::new(call.info(), &state.collections);
    pstate.twiml_digits = p.twiml_digits;
    pstate.bridge = state.last_bridge.as_ref();
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
    if let Some(secret) = svc.secret_of(&call.info().account_id) {
        req = req.header(
            request::SIGNATURE_HEADER,
            &prepared.signature(secret.as_bytes()),
        );
    }
    svc.debug.record_request(
        ctx,
        prepared.url.as_str(),
        prepared.method.as_str(),
        prepared.content_type.map(|c| ("content-type", c)),
        prepared.body.as_deref().unwrap_or_default(),
    );
    if let Some(b) = prepared.body {
        req = req.body(b);
    }
    // Every call makes one or more: DEBUG, not INFO (failures are logged as WARN).
    tracing::debug!(url = %wire(prepared.url.as_str()), method = prepared.method.as_str(), "pivot request");
    let resp = match svc.http.send(req).await {
        Ok(r) => r,
        Err(e) => {
            svc.debug.record_failure(ctx, &e.to_string());
            return Err(PivotFailure::Fetch(e));
        }
    };
    svc.debug.record_response(
        ctx,
        resp.status,
        resp.headers.iter().map(|(k, v)| (k, v)),
        &resp.body,
    );
    if !(200..300).contains(&resp.status) {
        return Err(PivotFailure::Status(resp.status));
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
        Ok(answer) => Ok((answer, base, resp.status)),
        Err(e) => {
            svc.debug.record_error(ctx, &e, &resp.body);
            Err(PivotFailure::Answer(e))
        }
    }
}

/// A pivot request as the call's event log shows it: the URL asked, its status or failure,
/// and what the answer starts with.
fn pivot_event(
    p: &PivotCall<'_>,
    url: &str,
    result: &Result<(Answer, Url, u16), PivotFailure>,
    elapsed: Duration,
) -> CallEvent {
    let (status, format, first, error) = match result {
        Ok((Answer::Flow(node), _, st)) => {
            (Some(*st), Some("kazoo"), Some(node.module.name()), None)
        }
        Ok((Answer::Twiml(verbs), _, st)) => (
            Some(*st),
            Some("twiml"),
            verbs.first().map(twiml_exec::verb_name),
            None,
        ),
        Err(PivotFailure::Status(st)) => (Some(*st), None, None, None),
        Err(e) => (None, None, None, Some(trim_value(&e.to_string()))),
    };
    CallEvent::Pivot {
        method: p.method.as_str().to_ascii_uppercase(),
        url: trim_value(url),
        status,
        ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        format: format.map(str::to_string),
        first: first.map(str::to_string),
        error,
    }
}

/// The rule for every request of a pivot node (spec j.4, issue 7): when its `voice_url` or any
/// later request it makes — a TwiML `<Redirect>`, Gather or Dial `action` — fails, the node's `_`
/// child runs (or the call ends where there is none). "Fails" is what a first request treats as
/// failure: a URL that does not resolve or that the guard refuses, no usable response (DNS,
/// connection, TLS, timeout, an oversized body), a non-2xx status, an answer that is neither
/// TwiML nor a valid flow. The same log line, debug records and metrics outcome either way.
/// Not request failures, so not `_`: a Play, Say or unknown verb that is skipped (j.11), a
/// Gather with no input (j.17, no request), a Dial nobody answers (its `action` is told, or
/// the next verb runs), and reaching `max_requests_per_call` (j.18, the
/// call ends). A Kazoo flow answer replaces the node, so a nested `pivot` in it is a node of
/// its own, with its own `_` (spec b.3).
fn take_underscore(failed: &Failed, request: &'static str) -> Next {
    tracing::warn!(
        url = %wire(&failed.url),
        request,
        iteration = failed.iteration,
        outcome = failed.failure.outcome().label(),
        reason = %wire(&failed.failure.to_string()),
        "pivot failed: taking the _ branch"
    );
    Next::Default
}

pub async fn run(
    data: &Pivot,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let first = |url| PivotCall {
        url,
        base: None,
        method: data.method,
        req_format: data.req_format,
        body_format: data.req_body_format,
        timeout: Duration::from_millis(data.req_timeout_ms),
        twiml_digits: None,
        debug: data.debug,
    };
    // A sent request clears the bridge's outcome (it goes on one request only); the fallback's
    // request is the same request, so it carries it again.
    let bridge = state.last_bridge.clone();
    let mut asked = ask(first(&data.voice_url), call, rt, state).await?;
    // Twilio's `fallback_url`: the same request, once, when `voice_url` failed in any of the
    // ways that would take `_` (what `ask` returns as `Failed`), its answer used alike.
    if let (Err(failed), Some(fallback)) = (&asked, &data.fallback_url) {
        state.last_bridge = bridge;
        tracing::warn!(
            url = %wire(&failed.url),
            iteration = failed.iteration,
            outcome = failed.failure.outcome().label(),
            reason = %wire(&failed.failure.to_string()),
            fallback = %wire(fallback),
            "pivot voice_url failed: asking the fallback_url"
        );
        asked = ask(first(fallback), call, rt, state).await?;
    }
    match asked {
        Ok((Answer::Flow(flow), _)) => Ok(Next::Replace(flow)),
        Ok((Answer::Twiml(verbs), base)) => {
            // Spec b.5: the CDR goes to cdr_url when a TwiML-driven call ends.
            if let (Some(url), Some(svc)) = (&data.cdr_url, &rt.pivot) {
                state.at_end = Some(Box::new(cdr::CdrPost {
                    url: url.clone(),
                    svc: svc.clone(),
                }));
            }
            match twiml_exec::run(verbs, base, data, call, rt, state).await? {
                twiml_exec::TwimlEnd::Done => Ok(Next::Stop),
                twiml_exec::TwimlEnd::Flow(flow) => Ok(Next::Replace(flow)),
                twiml_exec::TwimlEnd::Failed(failed) => Ok(take_underscore(&failed, "follow-up")),
            }
        }
        Err(failed) => {
            let request = if data.fallback_url.is_some() {
                "fallback_url"
            } else {
                "voice_url"
            };
            Ok(take_underscore(&failed, request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_failures_are_told_without_the_url_and_its_query() {
        let url = "http://pivot.example/ivr?Caller-ID-Name=Alice".to_string();
        for (e, shown) in [
            (
                HttpError::ConnectRefused { url: url.clone() },
                "connection refused",
            ),
            (
                HttpError::Timeout {
                    url: url.clone(),
                    after: Duration::from_millis(300),
                },
                "timeout after 300 ms",
            ),
            (
                HttpError::Other {
                    url: url.clone(),
                    error: "boom".into(),
                },
                "HTTP request failed: boom",
            ),
        ] {
            assert_eq!(PivotFailure::Fetch(e).to_string(), shown);
        }
    }

    /// The log line's `outcome` is the counter the failure went to.
    #[test]
    fn each_failure_is_counted_under_its_logged_outcome() {
        for f in [
            PivotFailure::BadReference(ResolveError::Scheme("ftp".into())),
            PivotFailure::Refused(GuardError::BlockedHost("internal.example".into())),
            PivotFailure::Fetch(HttpError::ConnectRefused { url: "u".into() }),
            PivotFailure::Status(500),
            PivotFailure::Answer(AnswerError::Empty),
        ] {
            let stats = PivotStats::default();
            stats.record(f.outcome(), Duration::from_millis(3));
            let counted: Vec<&str> = stats
                .outcomes()
                .into_iter()
                .filter(|(_, n)| *n == 1)
                .map(|(label, _)| label)
                .collect();
            assert_eq!(counted, [f.outcome().label()], "{f:?}");
        }
    }

    /// Each request lands in the first bucket whose bound holds it, the buckets are
    /// cumulative, the count matches the outcome's counter and the sum adds up.
    #[test]
    fn round_trips_are_bucketed_per_outcome() {
        let stats = PivotStats::default();
        stats.record(Outcome::Ok, Duration::from_micros(300));
        stats.record(Outcome::Ok, Duration::from_micros(1000));
        stats.record(Outcome::Ok, Duration::from_millis(40));
        stats.record(Outcome::Ok, Duration::from_secs(9));
        stats.record(Outcome::Failed, Duration::from_millis(2));
        stats.record(Outcome::NotConfigured, Duration::from_millis(2));
        let trips = stats.round_trips();
        let (label, ok) = &trips[0];
        assert_eq!(*label, "ok");
        // Bounds: 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500 ms, 1 s, 5 s.
        assert_eq!(ok.cumulative, [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(ok.count, 4);
        assert!((ok.sum_seconds - 9.0413).abs() < 1e-9, "{}", ok.sum_seconds);
        let failed = &trips[2];
        assert_eq!(failed.0, "failed");
        assert_eq!(failed.1.cumulative[2], 1);
        assert_eq!(failed.1.cumulative[1], 0);
        assert_eq!(failed.1.count, 1);
        let counts: Vec<u64> = trips.iter().map(|(_, h)| h.count).collect();
        let counters: Vec<u64> = stats.outcomes().iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, counters);
        assert_eq!(counters, [4, 0, 1, 0, 0]);
    }
}
