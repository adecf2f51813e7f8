//! `GET /healthz` and `GET /metrics` (Prometheus text exposition 0.0.4). No token: they are
//! for load balancers and scrapers, and say nothing about any account.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::callflow::modules::pivot::ROUND_TRIP_BUCKETS;
use crate::registrar::auth::AuthFailure;

/// 200 when the store answers a query, every configured SIP socket is bound and every SIP
/// task (receive loops, shards, admission) is alive; else 503, naming the dead tasks.
/// Overload (new calls refused for load) is reported in `sip.overloaded` and stays 200: this
/// is a liveness check, and a load balancer that took an overloaded node out would only move
/// its load onto the others.
pub(crate) async fn healthz(State(st): State<Shared>) -> Response {
    let store = st.parts.store.clone();
    let store_ok = match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let t = st.parts.endpoint.transport();
    let (udp, tcp, tls) = (t.udp_addrs(), t.tcp_addrs(), t.tls_addrs());
    let degraded = st.parts.health.degraded();
    let sip = &st.parts.cfg.get().sip;
    let sip_ok = udp.len() == sip.udp.len()
        && tcp.len() == sip.tcp.len()
        && tls.len() == sip.tls.len()
        && !(udp.is_empty() && tcp.is_empty() && tls.is_empty())
        && degraded.is_empty();
    let ok = store_ok.is_ok() && sip_ok;
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "store": match &store_ok { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
        "sip": {
            "status": if sip_ok { "ok" } else { "error" },
            "udp": udp.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "tcp": tcp.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "tls": tls.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "degraded": degraded,
            "overloaded": st.parts.load.overloaded(),
        },
        "panics": crate::health::panics_total(),
        "calls_active": st.parts.active.load(Ordering::Relaxed),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Builds the exposition text; one `# HELP`/`# TYPE` per family.
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.0,
            "# HELP pivotd_{name} {help}\n# TYPE pivotd_{name} {kind}"
        );
    }

    fn value(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "pivotd_{name} {v}");
        } else {
            let _ = writeln!(self.0, "pivotd_{name}{{{labels}}} {v}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.value(name, "", v);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub(crate) async fn metrics(State(st): State<Shared>) -> Response {
    let p = &st.parts;
    let mut m = Metrics(String::with_capacity(4096));
    m.one(
        "calls_active",
        "gauge",
        "Calls in progress.",
        p.active.load(Ordering::Relaxed),
    );
    m.one(
        "calls_total",
        "counter",
        "Calls admitted since start.",
        get(&p.calls.total),
    );
    m.one(
        "calls_answered_total",
        "counter",
        "Calls answered (200 OK sent).",
        get(&p.calls.answered),
    );
    m.one(
        "calls_rtp_timeout_total",
        "counter",
        "Calls ended because no RTP arrived.",
        get(&p.calls.rtp_timeouts),
    );
    m.one(
        "srtp_calls_total",
        "counter",
        "Ended calls whose caller's audio was SRTP.",
        get(&p.calls.srtp_calls),
    );
    m.family(
        "srtp_packets_dropped_total",
        "counter",
        "SRTP packets of ended calls dropped before use, by reason.",
    );
    m.value(
        "srtp_packets_dropped_total",
        "reason=\"unauthentic\"",
        get(&p.calls.srtp_unauthentic),
    );
    m.value(
        "srtp_packets_dropped_total",
        "reason=\"replayed\"",
        get(&p.calls.srtp_replayed),
    );
    m.family(
        "pivot_requests_total",
        "counter",
        "Pivot requests by outcome.",
    );
    for (outcome, n) in p.pivot.outcomes() {
        m.value("pivot_requests_total", &format!("outcome=\"{outcome}\""), n);
    }
    m.family(
        "pivot_request_seconds",
        "histogram",
        "Pivot requests' round trip by outcome: the URL check, the HTTP exchange (redirects included) and decoding the answer.",
    );
    for (outcome, h) in p.pivot.round_trips() {
        for (le, n) in ROUND_TRIP_BUCKETS.iter().zip(h.cumulative) {
            m.value(
                "pivot_request_seconds_bucket",
                &format!("outcome=\"{outcome}\",le=\"{le}\""),
                n,
            );
        }
        m.value(
            "pivot_request_seconds_bucket",
            &format!("outcome=\"{outcome}\",le=\"+Inf\""),
            h.count,
        );
        let label = format!("outcome=\"{outcome}\"");
        m.value("pivot_request_seconds_sum", &label, h.sum_seconds);
        m.value("pivot_request_seconds_count", &label, h.count);
    }
    let ts = &p.endpoint.transport().stats;
    m.family(
        "sip_messages_total",
        "counter",
        "SIP messages received (in) and sent (out).",
    );
    m.value("sip_messages_total", "direction=\"in\"", get(&ts.received));
    m.value("sip_messages_total", "direction=\"out\"", get(&ts.sent));
    m.family(
        "sip_requests_total",
        "counter",
        "SIP requests by direction and method (retransmissions not counted).",
    );
    for (dir, method, n) in p.endpoint.stats.messages.requests() {
        let d = if dir == crate::sip::endpoint::Direction::In {
            "in"
        } else {
            "out"
        };
        m.value(
            "sip_requests_total",
            &format!("direction=\"{d}\",method=\"{method}\""),
            n,
        );
    }
    m.family(
        "sip_responses_total",
        "counter",
        "SIP responses by direction and status code (retransmissions not counted).",
    );
    for (dir, code, n) in p.endpoint.stats.messages.responses() {
        let d = if dir == crate::sip::endpoint::Direction::In {
            "in"
        } else {
            "out"
        };
        m.value(
            "sip_responses_total",
            &format!("direction=\"{d}\",code=\"{code}\""),
            n,
        );
    }
    m.family(
        "sip_messages_rejected_total",
        "counter",
        "Received SIP messages dropped as unparsable or answered as invalid.",
    );
    m.value(
        "sip_messages_rejected_total",
        "reason=\"unparsable\"",
        get(&ts.dropped_unparsable),
    );
    m.value(
        "sip_messages_rejected_total",
        "reason=\"invalid\"",
        get(&ts.invalid),
    );
    m.family(
        "sip_connections",
        "gauge",
        "SIP stream connections open now, by transport.",
    );
    m.value("sip_connections", "transport=\"tcp\"", get(&ts.tcp_open));
    m.value("sip_connections", "transport=\"tls\"", get(&ts.tls_open));
    m.one(
        "sip_tls_handshakes_failed_total",
        "counter",
        "TLS handshakes that failed or timed out (clients', and ours to carriers).",
        get(&ts.tls_handshake_failed),
    );
    let es = &p.endpoint.stats;
    m.family(
        "sip_transactions_total",
        "counter",
        "SIP transactions created.",
    );
    m.value(
        "sip_transactions_total",
        "side=\"server\"",
        get(&es.server_transactions),
    );
    m.value(
        "sip_transactions_total",
        "side=\"client\"",
        get(&es.client_transactions),
    );
    m.family(
        "sip_transactions",
        "gauge",
        "SIP transactions alive now (they end with their timers, RFC 3261 §17).",
    );
    m.value(
        "sip_transactions",
        "side=\"server\"",
        get(&es.live_server_transactions),
    );
    m.value(
        "sip_transactions",
        "side=\"client\"",
        get(&es.live_client_transactions),
    );
    m.family(
        "sip_overload_503_total",
        "counter",
        "INVITEs refused with 503 for overload, by reason (global and per-source limits).",
    );
    m.value(
        "sip_overload_503_total",
        "reason=\"queue_full\"",
        get(&es.overload_503),
    );
    m.value(
        "sip_overload_503_total",
        "reason=\"load\"",
        p.load.refused(),
    );
    let sources = p.endpoint.transport().sources();
    for why in crate::call::admission::Overload::ALL {
        let label = format!("reason=\"{}\"", why.label());
        let n = p.overload.get(why, &sources.stats);
        m.value("sip_overload_503_total", &label, n);
    }
    m.one(
        "sip_overloaded",
        "gauge",
        "1 while new calls that come late are refused for load (sip_queue_delay_seconds, rtp_pacer_lateness_seconds), else 0.",
        u8::from(p.load.overloaded()),
    );
    m.one(
        "sip_queue_delay_seconds",
        "gauge",
        "The least time a SIP message waited between its arrival and its handling, over the last 100 ms.",
        p.load.queue_delay().as_secs_f64(),
    );
    m.one(
        "rtp_pacer_lateness_seconds",
        "gauge",
        "The least lateness of the RTP pacer's sends over the last 100 ms.",
        p.load.pacer_lateness().as_secs_f64(),
    );
    m.family(
        "sip_source_refused_total",
        "counter",
        "Messages, calls and connections refused by the per-source limits, by reason.",
    );
    for why in crate::sip::source::SourceRefusal::ALL {
        let label = format!("reason=\"{}\"", why.label());
        m.value(
            "sip_source_refused_total",
            &label,
            sources.stats.refused(why),
        );
    }
    m.one(
        "sip_sources_blocked",
        "gauge",
        "Source addresses blocked now (scanners, too many failures).",
        sources.blocked_now(),
    );
    let auth = &p.registrar.authenticator().stats;
    m.one(
        "auth_challenges_total",
        "counter",
        "Digest challenges sent (401 to REGISTER, 407 to INVITE).",
        get(&auth.challenges),
    );
    m.one(
        "auth_successes_total",
        "counter",
        "Requests whose digest credentials were accepted.",
        get(&auth.successes),
    );
    m.family(
        "auth_failures_total",
        "counter",
        "Digest credentials refused (403), by reason; each counts against its source address.",
    );
    for reason in AuthFailure::LABELS {
        m.value(
            "auth_failures_total",
            &format!("reason=\"{reason}\""),
            auth.failures(reason),
        );
    }
    m.one(
        "registrations",
        "gauge",
        "Contacts registered now (bindings not expired).",
        p.registrar.binding_count(),
    );
    m.one(
        "panics_total",
        "counter",
        "Panics caught since start (each cost one message, timer or task run).",
        crate::health::panics_total(),
    );
    m.one(
        "task_restarts_total",
        "counter",
        "Long-lived tasks restarted after a panic.",
        p.health.restarts(),
    );
    m.one(
        "tasks_degraded",
        "gauge",
        "Long-lived SIP tasks dead or restarting now (healthz is 503 while above 0).",
        p.health.degraded_count(),
    );
    m.one(
        "sip_dialogs",
        "gauge",
        "Dialogs registered now.",
        get(&es.live_dialogs),
    );
    let ps = p.pacer.stats();
    m.one(
        "rtp_packets_sent_total",
        "counter",
        "RTP packets sent.",
        ps.packets_sent,
    );
    m.one(
        "rtp_send_errors_total",
        "counter",
        "RTP packets lost to send errors.",
        ps.send_errors,
    );
    m.one(
        "rtp_late_packets_total",
        "counter",
        "RTP packets sent late.",
        ps.late_packets,
    );
    m.one(
        "rtp_streams",
        "gauge",
        "RTP streams registered with the pacer.",
        ps.streams,
    );
    m.one(
        "media_ports_available",
        "gauge",
        "RTP port pairs free.",
        p.pool.available(),
    );
    m.one(
        "store_queue_dropped_total",
        "counter",
        "Store writes dropped because the queue was full.",
        p.store.dropped(),
    );
    m.one(
        "store_written_total",
        "counter",
        "Store writes committed.",
        p.store.written(),
    );
    m.one(
        "store_failed_total",
        "counter",
        "Store writes that failed in the database.",
        p.store.failed(),
    );
    m.one(
        "store_retried_total",
        "counter",
        "Store commits tried again because the database could not be reached.",
        p.store.retried(),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.0,
    )
        .into_response()
}
