//! A bridge that does not end in a conversation, on real sockets: a caller dials pivotd, a
//! test pivot web server answers with a bridging Kazoo node or a TwiML `<Dial>`, a scripted
//! callee (a registered device, or a carrier) is busy, only rings, rejects, answers, or is not
//! there at all. Checked: which child the flow goes on with, what the next pivot request says
//! about the bridge (as the web server received it), what the caller gets, and what the callee
//! gets (CANCEL at the ring timeout, BYE at a `timeLimit`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::bridge::*;
use common::http::{HttpReq, HttpResp, HttpServer};
use common::*;
use tokio::net::TcpListener;

/// The pivot web server: each path's answer; `{base}` in a body becomes the server's own URL
/// (a nested Kazoo `pivot` needs an absolute one). Other paths get 404.
async fn web(routes: &[(&str, HttpResp)]) -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes: Vec<(String, HttpResp)> = routes
        .iter()
        .map(|(path, resp)| {
            let body = String::from_utf8_lossy(&resp.body).replace("{base}", &base);
            let resp = HttpResp {
                body: body.into_bytes(),
                ..resp.clone()
            };
            (path.to_string(), resp)
        })
        .collect();
    HttpServer::on(listener, move |req| {
        routes
            .iter()
            .find(|(path, _)| req.path() == path)
            .map(|(_, resp)| resp.clone())
            .unwrap_or_else(|| HttpResp::status(404))
    })
}

/// A pivotd whose number 6000 asks `web`'s `/start` in `format` (`kazoo`, `twiml`), with
/// device d1 (SIP user 2001) and the carrier `carrier1` at `gateway`; `sip_extra` are more
/// `[sip]` keys.
async fn server(
    web: &HttpServer,
    format: &str,
    gateway: SocketAddr,
    sip_extra: &str,
) -> TestServer {
    server_with_carriers(web, format, &[gateway], sip_extra).await
}

/// [`server`] with the account's carriers at `gateways`, tried in this order.
async fn server_with_carriers(
    web: &HttpServer,
    format: &str,
    gateways: &[SocketAddr],
    sip_extra: &str,
) -> TestServer {
    let carriers: String = gateways
        .iter()
        .enumerate()
        .map(|(i, gw)| {
            format!(
                "[[accounts.resources]]\nid = \"carrier{}\"\ngateway = \"sip:{gw}\"\n",
                i + 1
            )
        })
        .collect();
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ voice_url = "{}", req_format = "{format}" }} }}
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
{carriers}
[pivot]
blacklist_cidrs = []
"#,
        web.url("/start")
    );
    let sip = format!("allow_unauthenticated = true\n{sip_extra}");
    start(&config_toml(&callflows, &sip, "")).await
}

/// T1 of 50 ms: an INVITE nobody answers times out (Timer B, 64·T1) in 3.2 s.
const FAST_T1: &str = "timer_t1_ms = 50";

/// A UDP address where nothing listens: a carrier that is down.
fn nowhere() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

/// A callee registered as device d1.
async fn registered_device(server: &TestServer, script: Script) -> Callee {
    let callee = Callee::start(script).await;
    let reg = callee
        .register(server.udp, "2001", "pivotd.test", "s3cret")
        .await;
    assert_eq!(status(&reg), 200, "{reg}");
    callee
}

/// The paths the web server was asked for, in order.
fn paths(web: &HttpServer) -> Vec<String> {
    web.requests()
        .iter()
        .map(|r| r.path().to_string())
        .collect()
}

/// The first request to `path`, waited for up to `secs`.
async fn request_to(web: &HttpServer, path: &str, secs: u64) -> HttpReq {
    let asked = eventually(secs, || web.requests().iter().any(|r| r.path() == path)).await;
    assert!(
        asked,
        "no request to {path}; the web server got {:?}",
        paths(web)
    );
    web.requests()
        .into_iter()
        .find(|r| r.path() == path)
        .unwrap()
}

/// The caller's final response to its INVITE of 6000.
async fn final_answer(caller: &mut Caller, ms: u64) -> String {
    let mut seen = Vec::new();
    caller
        .final_response(ms, &mut seen)
        .await
        .unwrap_or_else(|| panic!("no final response; seen {seen:?}"))
}

/// Calls 6000 and expects pivotd to answer (a TwiML `<Dial>` answers first); ACKs it.
async fn answered_by_dial(caller: &mut Caller) -> String {
    caller.invite("6000", &[0], "").await;
    let ok = final_answer(caller, 8000).await;
    assert_eq!(status(&ok), 200, "<Dial> answers the caller first: {ok}");
    caller.ack(&ok).await;
    ok
}

/// The Call-ID of the (last) INVITE the callee got: the bridge's `DialCallSid`.
fn b_call_id(callee: &Callee) -> String {
    let invite = callee
        .received("INVITE")
        .pop()
        .expect("the callee got an INVITE");
    header(&invite, "Call-ID").expect("a Call-ID")
}

/// Waits for the callee's INVITE; returns when it came (to time the ring timeout from).
async fn invited(callee: &Callee) -> Instant {
    assert!(
        eventually(5, || !callee.received("INVITE").is_empty()).await,
        "the callee was never rung"
    );
    Instant::now()
}

/// The callee, which only rang, got a CANCEL about `timeout` after its INVITE, answered it 487,
/// and pivotd acknowledged the 487.
async fn cancelled_at_timeout(callee: &Callee, invited_at: Instant, timeout: Duration) {
    assert!(
        eventually(timeout.as_secs() + 5, || !callee
            .received("CANCEL")
            .is_empty())
        .await,
        "the ringing callee never got a CANCEL"
    );
    let after = invited_at.elapsed();
    assert!(
        after + Duration::from_millis(300) >= timeout
            && after <= timeout + Duration::from_millis(1500),
        "CANCEL {after:?} after the INVITE, the ring timeout is {timeout:?}"
    );
    let cancel = callee.received("CANCEL").remove(0);
    let invite = callee.received("INVITE").remove(0);
    assert_eq!(header(&cancel, "Call-ID"), header(&invite, "Call-ID"));
    // The Callee answers a CANCEL with 200 and the INVITE with 487; pivotd ACKs the 487.
    assert!(
        eventually(3, || !callee.received("ACK").is_empty()).await,
        "the 487 was not acknowledged"
    );
}

/// Asserts the bridge fields of a Kazoo-format pivot request.
fn assert_kazoo_outcome(req: &HttpReq, cause: &str, code: Option<&str>, status: &str) {
    assert_eq!(req.method, "GET", "a Kazoo pivot asks with GET by default");
    assert_eq!(req.field("Hangup-Cause").as_deref(), Some(cause), "{req:?}");
    assert_eq!(req.field("Hangup-Code").as_deref(), code, "{req:?}");
    assert_eq!(
        req.field("DialCallStatus").as_deref(),
        Some(status),
        "{req:?}"
    );
    assert_eq!(req.field("DialCallDuration"), None, "not answered: {req:?}");
}

/// A Kazoo answer that ends the call with 410 once the flow reached it.
const AFTER: &str = r#"{"module":"response","data":{"code":410,"message":"After the bridge"}}"#;

/// A nested Kazoo pivot node asking `path`.
fn pivot_to(path: &str) -> String {
    format!(r#"{{"module":"pivot","data":{{"voice_url":"{{base}}{path}"}}}}"#)
}

// ---- Kazoo: device ------------------------------------------------------------------------

/// `device` to a busy phone: no child names USER_BUSY or sip:486, so the flow goes on at `_`,
/// whose pivot request says how the bridge ended; its answer reaches the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_device_goes_on_at_underscore_whose_request_says_user_busy() {
    let start = format!(
        r#"{{"module":"device","data":{{"id":"d1","timeout":5}},"children":{{"_":{}}}}}"#,
        pivot_to("/after")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/after", HttpResp::json(AFTER)),
    ])
    .await;
    let server = server(&web, "kazoo", nowhere(), "").await;
    let callee = registered_device(
        &server,
        Script::Reject {
            ring_ms: 100,
            code: 486,
        },
    )
    .await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let last = final_answer(&mut caller, 8000).await;
    assert!(last.starts_with("SIP/2.0 410 After the bridge"), "{last}");
    let after = request_to(&web, "/after", 1).await;
    assert_kazoo_outcome(&after, "USER_BUSY", Some("sip:486"), "busy");
    assert_eq!(after.field("DialCallSid"), Some(b_call_id(&callee)));
    assert_eq!(paths(&web), ["/start", "/after"]);
    assert!(
        eventually(3, || !callee.received("ACK").is_empty()).await,
        "the 486 was acknowledged"
    );
    // The caller's timeline names what was rung and how the bridge ended.
    let lines = event_lines(&server, &caller.call_id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("bridge device d1: USER_BUSY (486)")),
        "{lines:#?}"
    );
}

/// `device` to a phone that only rings, `timeout` 2: it is CANCELled at 2 s (it answers 487)
/// and the flow goes on at `_` with NO_ANSWER (no SIP code: the 487 answers our CANCEL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_only_rings_is_cancelled_at_its_timeout_and_the_flow_goes_on() {
    let start = format!(
        r#"{{"module":"device","data":{{"id":"d1","timeout":2}},"children":{{"_":{}}}}}"#,
        pivot_to("/after")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/after", HttpResp::json(AFTER)),
    ])
    .await;
    let server = server(&web, "kazoo", nowhere(), "").await;
    let callee = registered_device(&server, Script::Ring).await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let invited_at = invited(&callee).await;
    cancelled_at_timeout(&callee, invited_at, Duration::from_secs(2)).await;
    let last = final_answer(&mut caller, 5000).await;
    assert_eq!(status(&last), 410, "{last}");
    let after = request_to(&web, "/after", 1).await;
    assert_kazoo_outcome(&after, "NO_ANSWER", None, "no-answer");
    assert_eq!(after.field("DialCallSid"), Some(b_call_id(&callee)));
}

/// `device` to a phone that rejects with 603: no child is named CALL_REJECTED, so the one
/// named `sip:603` runs, not `_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_rejecting_with_603_takes_the_sip_603_child() {
    let start = format!(
        r#"{{"module":"device","data":{{"id":"d1","timeout":5}},
            "children":{{"sip:603":{},"_":{}}}}}"#,
        pivot_to("/rejected"),
        pivot_to("/after")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/rejected", HttpResp::json(AFTER)),
        ("/after", HttpResp::json(AFTER)),
    ])
    .await;
    let server = server(&web, "kazoo", nowhere(), "").await;
    let _callee = registered_device(
        &server,
        Script::Reject {
            ring_ms: 100,
            code: 603,
        },
    )
    .await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let last = final_answer(&mut caller, 8000).await;
    assert_eq!(status(&last), 410, "{last}");
    let rejected = request_to(&web, "/rejected", 1).await;
    assert_kazoo_outcome(&rejected, "CALL_REJECTED", Some("sip:603"), "failed");
    assert_eq!(paths(&web), ["/start", "/rejected"]);
}

// ---- Kazoo: resources ---------------------------------------------------------------------

/// `resources` to a busy carrier: the child named by the cause wins over `sip:486` and `_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_carrier_takes_the_user_busy_child() {
    let start = format!(
        r#"{{"module":"resources","data":{{"to_did":"5551234","timeout":5}},
            "children":{{"USER_BUSY":{},"sip:486":{},"_":{}}}}}"#,
        pivot_to("/busy"),
        pivot_to("/sip486"),
        pivot_to("/after")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/busy", HttpResp::json(AFTER)),
    ])
    .await;
    let callee = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 486,
    })
    .await;
    let server = server(&web, "kazoo", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let last = final_answer(&mut caller, 8000).await;
    assert_eq!(status(&last), 410, "{last}");
    let invite = callee
        .received("INVITE")
        .pop()
        .expect("the carrier was called");
    assert!(
        invite.starts_with(&format!("INVITE sip:5551234@{} ", callee.addr)),
        "{invite}"
    );
    let busy = request_to(&web, "/busy", 1).await;
    assert_kazoo_outcome(&busy, "USER_BUSY", Some("sip:486"), "busy");
    assert_eq!(busy.field("DialCallSid"), Some(b_call_id(&callee)));
    assert_eq!(paths(&web), ["/start", "/busy"]);
}

/// `resources` to a carrier where nothing listens: pivotd's UDP socket is not told of the
/// ICMP port unreachable, so the INVITE times out (Timer B, 64·T1: 3.2 s here) as 408 —
/// `RECOVERY_ON_TIMER_EXPIRE` — and the `sip:408` child runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_carrier_times_out_as_408_and_takes_the_sip_408_child() {
    let start = format!(
        r#"{{"module":"resources","data":{{"to_did":"5551234","timeout":10}},
            "children":{{"sip:408":{}}}}}"#,
        pivot_to("/unreachable")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/unreachable", HttpResp::json(AFTER)),
    ])
    .await;
    let server = server(&web, "kazoo", nowhere(), FAST_T1).await;
    let mut caller = Caller::new(server.udp).await;
    let began = Instant::now();
    caller.invite("6000", &[0], "").await;
    let last = final_answer(&mut caller, 8000).await;
    let took = began.elapsed();
    assert_eq!(status(&last), 410, "{last}");
    assert!(
        took >= Duration::from_millis(3000) && took < Duration::from_secs(6),
        "Timer B is 3.2 s, the caller's answer came after {took:?}"
    );
    let req = request_to(&web, "/unreachable", 1).await;
    assert_kazoo_outcome(&req, "RECOVERY_ON_TIMER_EXPIRE", Some("sip:408"), "failed");
    assert!(req.field("DialCallSid").is_some(), "{req:?}");
}

/// `resources` with two carriers, the first down: its INVITE times out (408, Timer B at
/// 3.2 s here), the second is tried at once, and its busy decides the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_first_carrier_fails_over_to_the_next_after_timer_b() {
    let start = format!(
        r#"{{"module":"resources","data":{{"to_did":"5551234","timeout":10}},
            "children":{{"USER_BUSY":{}}}}}"#,
        pivot_to("/busy")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/busy", HttpResp::json(AFTER)),
    ])
    .await;
    let second = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 486,
    })
    .await;
    let server = server_with_carriers(&web, "kazoo", &[nowhere(), second.addr], FAST_T1).await;
    let mut caller = Caller::new(server.udp).await;
    let began = Instant::now();
    caller.invite("6000", &[0], "").await;
    let tried_at = invited(&second).await.duration_since(began);
    assert!(
        tried_at >= Duration::from_millis(3000) && tried_at < Duration::from_secs(5),
        "the second carrier is tried when the first's INVITE times out (3.2 s): {tried_at:?}"
    );
    let last = final_answer(&mut caller, 5000).await;
    assert_eq!(status(&last), 410, "{last}");
    let busy = request_to(&web, "/busy", 1).await;
    assert_kazoo_outcome(&busy, "USER_BUSY", Some("sip:486"), "busy");
    assert_eq!(busy.field("DialCallSid"), Some(b_call_id(&second)));
}

/// With the default T1 (Timer B 32 s, past the ring timeout), a carrier that sends nothing at
/// all — not even 100 Trying — is given up after `invite_response_timeout_ms` and counted as
/// 408, and the next carrier is tried long before the ring timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_carrier_is_given_up_after_the_invite_response_timeout() {
    let start = format!(
        r#"{{"module":"resources","data":{{"to_did":"5551234"}},
            "children":{{"USER_BUSY":{}}}}}"#,
        pivot_to("/busy")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/busy", HttpResp::json(AFTER)),
    ])
    .await;
    // Bound and silent: it gets the INVITEs and never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let second = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 486,
    })
    .await;
    let server = server_with_carriers(
        &web,
        "kazoo",
        &[silent.local_addr().unwrap(), second.addr],
        "invite_response_timeout_ms = 1000",
    )
    .await;
    let mut caller = Caller::new(server.udp).await;
    let began = Instant::now();
    caller.invite("6000", &[0], "").await;
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), silent.recv_from(&mut buf))
        .await
        .expect("the first carrier got an INVITE")
        .unwrap();
    assert!(buf[..n].starts_with(b"INVITE "));
    let tried_at = invited(&second).await.duration_since(began);
    assert!(
        tried_at >= Duration::from_millis(900) && tried_at < Duration::from_millis(2500),
        "the second carrier is tried 1 s after the first INVITE: {tried_at:?}"
    );
    let last = final_answer(&mut caller, 5000).await;
    assert_eq!(status(&last), 410, "{last}");
    let busy = request_to(&web, "/busy", 1).await;
    assert_kazoo_outcome(&busy, "USER_BUSY", Some("sip:486"), "busy");
}

/// `resources` whose failure no child names, without `_`: the flow stops and the caller gets
/// Kazoo's default response for the cause.
async fn default_response_reaches_the_caller(
    callee: Option<Script>,
    timeout_s: u32,
    want: &str,
    within_ms: u64,
) {
    let start = format!(
        r#"{{"module":"resources","data":{{"to_did":"5551234","timeout":{timeout_s}}},
            "children":{{"NO_ROUTE_DESTINATION":{}}}}}"#,
        pivot_to("/never")
    );
    let web = web(&[("/start", HttpResp::json(&start))]).await;
    let callee = match callee {
        Some(script) => Some(Callee::start(script).await),
        None => None,
    };
    let gateway = callee.as_ref().map_or_else(nowhere, |c| c.addr);
    let server = server(&web, "kazoo", gateway, FAST_T1).await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let last = final_answer(&mut caller, within_ms).await;
    assert!(last.starts_with(want), "want {want:?}, got:\n{last}");
    assert_eq!(paths(&web), ["/start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_rejecting_with_603_gives_the_caller_kazoos_603() {
    let script = Script::Reject {
        ring_ms: 100,
        code: 603,
    };
    default_response_reaches_the_caller(Some(script), 5, "SIP/2.0 603 Call Rejected", 5000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_only_rings_gives_the_caller_kazoos_480_no_answer() {
    default_response_reaches_the_caller(Some(Script::Ring), 2, "SIP/2.0 480 No answer", 5000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_carrier_gives_the_caller_kazoos_504() {
    default_response_reaches_the_caller(None, 10, "SIP/2.0 504 Recovery on timer expire", 6000)
        .await;
}

/// `resources` with a `_` child and no child naming the failure: as Kazoo, `_` only
/// suppresses the default response — it does not run — and the flow stops: the unanswered
/// caller gets pivotd's 480 for a flow that ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resources_underscore_suppresses_the_default_response_and_does_not_run() {
    let start = format!(
        r#"{{"module":"resources","data":{{"to_did":"5551234","timeout":5}},"children":{{"_":{}}}}}"#,
        pivot_to("/after")
    );
    let web = web(&[
        ("/start", HttpResp::json(&start)),
        ("/after", HttpResp::json(AFTER)),
    ])
    .await;
    let callee = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 486,
    })
    .await;
    let server = server(&web, "kazoo", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let last = final_answer(&mut caller, 8000).await;
    assert_eq!(status(&last), 480, "not Kazoo's 486 Number busy: {last}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(paths(&web), ["/start"], "`_` did not run");
}

// ---- TwiML <Dial> -------------------------------------------------------------------------

/// A document with one `<Dial>` (its attributes) of carrier number 5551234; its action
/// (`/after`) pauses a second, then hangs up.
async fn dial_web(dial_attrs: &str) -> HttpServer {
    let doc = format!(
        r#"<Response><Dial {dial_attrs}><Number>5551234</Number></Dial><Say>not reached</Say></Response>"#
    );
    web(&[
        ("/start", HttpResp::xml(&doc)),
        (
            "/after",
            HttpResp::xml(r#"<Response><Pause length="1"/><Hangup/></Response>"#),
        ),
    ])
    .await
}

/// The caller, still on the line, gets the BYE of the action's `<Pause>` and `<Hangup/>`: a
/// second after the action was asked (`asked_at`), not with the end of the bridge.
async fn action_hangs_up(caller: &mut Caller, asked_at: Instant) {
    assert!(
        caller.sip.expect("BYE ", 5000).await.is_some(),
        "the action's <Hangup/> did not reach the caller"
    );
    let after = asked_at.elapsed();
    assert!(
        after >= Duration::from_millis(500),
        "the caller got a BYE {after:?} after the action was asked: hung up with the bridge?"
    );
}

/// Asserts the `DialCall*` fields of a TwiML action request.
fn assert_dial_outcome(req: &HttpReq, status: &str, sip_code: Option<&str>) {
    assert_eq!(
        req.field("DialCallStatus").as_deref(),
        Some(status),
        "{req:?}"
    );
    assert_eq!(
        req.field("DialSipResponseCode").as_deref(),
        sip_code,
        "{req:?}"
    );
    assert_eq!(req.field("Hangup-Cause"), None, "TwiML names only: {req:?}");
}

/// Nobody answers in `timeout`: the callee is CANCELled at 2 s, the GET action says
/// `no-answer` (no SIP response code: only the 487 of our CANCEL came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_nobody_answers_reports_no_answer_to_its_get_action() {
    let web = dial_web(r#"action="/after" method="GET" timeout="2""#).await;
    let callee = Callee::start(Script::Ring).await;
    let server = server(&web, "twiml", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    answered_by_dial(&mut caller).await;
    let invited_at = invited(&callee).await;
    cancelled_at_timeout(&callee, invited_at, Duration::from_secs(2)).await;
    let after = request_to(&web, "/after", 3).await;
    let asked_at = Instant::now();
    assert_eq!(after.method, "GET");
    assert_dial_outcome(&after, "no-answer", None);
    assert_eq!(after.field("DialCallSid"), Some(b_call_id(&callee)));
    assert_eq!(after.field("DialCallDuration"), None);
    action_hangs_up(&mut caller, asked_at).await;
}

/// The callee rejects with 603: `failed`, `DialSipResponseCode=603`, POSTed (the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_to_a_rejecting_number_reports_failed_603() {
    let web = dial_web(r#"action="/after" timeout="5""#).await;
    let callee = Callee::start(Script::Reject {
        ring_ms: 100,
        code: 603,
    })
    .await;
    let server = server(&web, "twiml", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    answered_by_dial(&mut caller).await;
    let after = request_to(&web, "/after", 5).await;
    let asked_at = Instant::now();
    assert_eq!(after.method, "POST");
    assert_dial_outcome(&after, "failed", Some("603"));
    assert_eq!(after.field("DialCallSid"), Some(b_call_id(&callee)));
    action_hangs_up(&mut caller, asked_at).await;
}

/// The carrier is down: the INVITE times out (Timer B, 3.2 s here) and the action hears
/// `failed` with 408, well before the ring timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_to_an_unreachable_carrier_reports_failed_408() {
    let web = dial_web(r#"action="/after" timeout="10""#).await;
    let server = server(&web, "twiml", nowhere(), FAST_T1).await;
    let mut caller = Caller::new(server.udp).await;
    let began = Instant::now();
    answered_by_dial(&mut caller).await;
    let after = request_to(&web, "/after", 6).await;
    let asked_at = Instant::now();
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(3000) && took < Duration::from_secs(6),
        "Timer B is 3.2 s; the action came after {took:?}"
    );
    assert_dial_outcome(&after, "failed", Some("408"));
    assert!(after.field("DialCallSid").is_some(), "{after:?}");
    action_hangs_up(&mut caller, asked_at).await;
}

/// The callee answers, talks about 1.5 s and hangs up: the caller stays, and the action hears
/// `completed` with the whole seconds talked and the 2xx as the SIP response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_answered_then_hung_up_by_the_callee_reports_completed_with_its_duration() {
    let web = dial_web(r#"action="/after""#).await;
    let callee = Callee::start(Script::Answer {
        ring_ms: 100,
        codec: 0,
    })
    .await;
    let server = server(&web, "twiml", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    answered_by_dial(&mut caller).await;
    assert!(
        eventually(5, || callee.dialog_up()).await,
        "the callee answered"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    callee.hang_up().await;
    let after = request_to(&web, "/after", 5).await;
    let asked_at = Instant::now();
    assert_dial_outcome(&after, "completed", Some("200"));
    assert_eq!(
        after.field("DialCallDuration").as_deref(),
        Some("1"),
        "{after:?}"
    );
    assert_eq!(after.field("DialCallSid"), Some(b_call_id(&callee)));
    action_hangs_up(&mut caller, asked_at).await;
}

/// `<Dial>` without `action`: whatever the outcome, the next verb runs — here a `<Redirect>`,
/// whose request is the first after the bridge and so carries its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_without_action_goes_on_with_the_next_verb() {
    let doc = r#"<Response><Dial timeout="2"><Number>5551234</Number></Dial><Redirect>/next</Redirect></Response>"#;
    let web = web(&[
        ("/start", HttpResp::xml(doc)),
        ("/next", HttpResp::xml("<Response><Hangup/></Response>")),
    ])
    .await;
    let callee = Callee::start(Script::Ring).await;
    let server = server(&web, "twiml", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    answered_by_dial(&mut caller).await;
    let next = request_to(&web, "/next", 6).await;
    assert_eq!(next.method, "POST", "Redirect's default method");
    assert_dial_outcome(&next, "no-answer", None);
    assert!(
        caller.sip.expect("BYE ", 5000).await.is_some(),
        "the redirected document's <Hangup/> reached the caller"
    );
    assert_eq!(paths(&web), ["/start", "/next"]);
}

/// `timeLimit="2"`: pivotd ends the conversation at 2 s (the callee gets a BYE), the caller
/// stays on the line, and the action hears `completed` after 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_time_limit_hangs_up_the_callee_and_the_caller_stays() {
    let web = dial_web(r#"action="/after" timeLimit="2""#).await;
    let callee = Callee::start(Script::Answer {
        ring_ms: 0,
        codec: 0,
    })
    .await;
    let server = server(&web, "twiml", callee.addr, "").await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let ok = final_answer(&mut caller, 8000).await;
    assert_eq!(status(&ok), 200, "{ok}");
    caller.ack(&ok).await;
    assert!(
        eventually(5, || callee.dialog_up()).await,
        "the callee answered"
    );
    let answered_at = Instant::now();
    assert!(
        eventually(5, || !callee.received("BYE").is_empty()).await,
        "the callee got no BYE at the time limit"
    );
    let talked = answered_at.elapsed();
    assert!(
        talked >= Duration::from_millis(1800) && talked <= Duration::from_millis(2600),
        "the time limit is 2 s; the callee's BYE came after {talked:?}"
    );
    let after = request_to(&web, "/after", 3).await;
    let asked_at = Instant::now();
    assert_dial_outcome(&after, "completed", Some("200"));
    assert_eq!(
        after.field("DialCallDuration").as_deref(),
        Some("2"),
        "{after:?}"
    );
    // The caller was not hung up with the callee: its only BYE is the action's <Hangup/>.
    action_hangs_up(&mut caller, asked_at).await;
}
