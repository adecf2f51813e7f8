//! The TwiML executor on a fake call against a real local web server: what `<Dial>` asks the
//! call for, where its outcome goes (the `action` request, else the next verb and the next
//! request), a caller who hangs up while it rings, and what a `fallback_url` is asked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, Method as HttpMethod, StatusCode, Uri};
use axum::response::IntoResponse;

use crate::callflow::fake::{FakeCall, Op};
use crate::callflow::modules::pivot::{self, PivotServices, PivotStats};
use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::CallEnded;
use crate::flow::bridge::{
    BridgeEndpoint, BridgeOutcome, BridgeRequest, CallerIdOverride, DialStatus, Target,
};
use crate::flow::modules::pivot::{BodyFormat, Method, Pivot, ReqFormat};
use crate::pivot::client::PivotHttp;
use crate::pivot::debug::DebugSink;
use crate::pivot::fetch::{FetchOptions, UrlPrompts};
use crate::pivot::guard::{SystemResolver, UrlGuard};

/// One request the web server received: its path, method, and parameters (query and form
/// body together).
#[derive(Debug)]
struct Seen {
    path: String,
    method: String,
    params: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A web server answering each path with a TwiML document (404 for any other path), keeping
/// what it was asked.
struct Web {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Web {
    async fn start(docs: &[(&str, &str)]) -> Web {
        let docs: Vec<(String, String)> = docs
            .iter()
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app =
            axum::Router::new().fallback(move |method: HttpMethod, uri: Uri, body: String| {
                let docs = docs.clone();
                let record = record.clone();
                async move {
                    let mut params: Vec<(String, String)> =
                        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                            .into_owned()
                            .collect();
                    params.extend(url::form_urlencoded::parse(body.as_bytes()).into_owned());
                    let path = uri.path().to_string();
                    record.lock().unwrap().push(Seen {
                        path: path.clone(),
                        method: method.to_string(),
                        params,
                    });
                    match docs.iter().find(|(p, _)| *p == path) {
                        Some((_, doc)) => {
                            ([(header::CONTENT_TYPE, "text/xml")], doc.clone()).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Web { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.seen.lock().unwrap()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().iter().map(|s| s.path.clone()).collect()
    }
}

/// A runtime whose pivot client may reach the local server (the guard allows everything).
fn runtime() -> Runtime {
    let http = PivotHttp::new(
        Arc::new(UrlGuard::allow_all()),
        Arc::new(SystemResolver),
        None,
    )
    .unwrap();
    let mut rt = Runtime::for_tests();
    rt.pivot = Some(Arc::new(PivotServices {
        url_prompts: UrlPrompts::new(http.clone(), FetchOptions::default()),
        http,
        max_req_timeout: Duration::from_secs(5),
        max_requests_per_call: 20,
        secrets: Default::default(),
        debug: DebugSink::disabled(),
        stats: Arc::new(PivotStats::default()),
    }));
    rt
}

fn node(voice_url: String, req_format: ReqFormat) -> Pivot {
    Pivot {
        voice_url,
        method: Method::Post,
        req_format,
        req_body_format: BodyFormat::Form,
        req_timeout_ms: 5000,
        debug: false,
        cdr_url: None,
        fallback_url: None,
    }
}

/// Runs the pivot node asking `/start` in TwiML format on `call`.
async fn run(web: &Web, call: &mut FakeCall, state: &mut FlowState) -> Result<Next, CallEnded> {
    let data = node(web.url("/start"), ReqFormat::Twiml);
    pivot::run(&data, call, &runtime(), state).await
}

fn busy() -> BridgeOutcome {
    BridgeOutcome::from_sip_code(486, Some("b-leg-1".into()))
}

/// Ops after the answer and the bridge.
fn bridged_then(call: &FakeCall) -> &[Op] {
    assert_eq!(call.ops.first(), Some(&Op::Answer), "{:?}", call.ops);
    assert!(
        matches!(call.ops.get(1), Some(Op::Bridge(_))),
        "{:?}",
        call.ops
    );
    &call.ops[2..]
}

#[tokio::test]
async fn dial_with_action_sends_the_outcome_and_runs_the_answer() {
    let web = Web::start(&[
        (
            "/start",
            r#"<Response>
                 <Dial action="after-dial" method="GET" timeout="9" callerId="+15550001">
                   <Number>+1 415 555 0100</Number><Sip>sip:desk@pbx.example</Sip>
                 </Dial>
                 <Pause length="7"/>
               </Response>"#,
        ),
        ("/after-dial", r#"<Response><Pause length="2"/></Response>"#),
    ])
    .await;
    let mut call = FakeCall::new();
    call.bridge_outcomes.push_back(busy());
    let mut state = FlowState::default();
    assert_eq!(run(&web, &mut call, &mut state).await, Ok(Next::Stop));

    let want = BridgeRequest {
        timeout: Duration::from_secs(9),
        caller_id: Some(CallerIdOverride {
            name: None,
            number: Some("+15550001".into()),
        }),
        time_limit: Some(Duration::from_secs(14400)),
        ..BridgeRequest::to(vec![
            BridgeEndpoint::now(Target::Number {
                number: "+14155550100".into(),
                local: false,
            }),
            BridgeEndpoint::now(Target::Sip {
                uri: "sip:desk@pbx.example".into(),
            }),
        ])
    };
    // The action's document replaces the rest of the first one (no 7 s pause).
    assert_eq!(
        call.ops,
        [
            Op::Answer,
            Op::Bridge(want),
            Op::Sleep(Duration::from_secs(2)),
            Op::Hangup
        ]
    );
    assert_eq!(web.paths(), ["/start", "/after-dial"]);
    let seen = web.seen();
    let after = &seen[1];
    assert_eq!(after.method, "GET");
    assert_eq!(after.param("DialCallStatus"), Some("busy"));
    assert_eq!(after.param("DialCallSid"), Some("b-leg-1"));
    assert_eq!(after.param("DialSipResponseCode"), Some("486"));
    assert_eq!(after.param("DialCallDuration"), None);
    assert_eq!(after.param("CallStatus"), Some("in-progress"));
    assert_eq!(seen[0].param("DialCallStatus"), None);
    assert_eq!(state.last_bridge, None, "consumed by the action request");
}

#[tokio::test]
async fn an_answered_dial_reports_its_duration() {
    let web = Web::start(&[
        (
            "/start",
            r#"<Response><Dial action="/done">100</Dial></Response>"#,
        ),
        ("/done", "<Response><Hangup/></Response>"),
    ])
    .await;
    let mut call = FakeCall::new();
    call.bridge_outcomes.push_back(BridgeOutcome {
        status: DialStatus::Completed,
        cause: "NORMAL_CLEARING",
        sip_code: None,
        b_call_id: Some("b-leg-2".into()),
        duration: Duration::from_secs(65),
    });
    run(&web, &mut call, &mut FlowState::default())
        .await
        .unwrap();
    let seen = web.seen();
    let done = &seen[1];
    assert_eq!(done.method, "POST", "method defaults to POST");
    assert_eq!(done.param("DialCallStatus"), Some("completed"));
    assert_eq!(done.param("DialCallDuration"), Some("65"));
    assert_eq!(done.param("DialSipResponseCode"), Some("200"));
}

#[tokio::test]
async fn without_action_the_next_verb_runs_and_the_next_request_carries_the_outcome() {
    let web = Web::start(&[
        (
            "/start",
            r#"<Response><Dial>100</Dial><Pause length="3"/><Redirect>two</Redirect></Response>"#,
        ),
        ("/two", "<Response><Redirect>three</Redirect></Response>"),
        ("/three", "<Response><Hangup/></Response>"),
    ])
    .await;
    let mut call = FakeCall::new();
    call.bridge_outcomes.push_back(busy());
    run(&web, &mut call, &mut FlowState::default())
        .await
        .unwrap();
    assert_eq!(
        bridged_then(&call),
        [Op::Sleep(Duration::from_secs(3)), Op::Hangup]
    );
    assert_eq!(web.paths(), ["/start", "/two", "/three"]);
    let seen = web.seen();
    assert_eq!(seen[1].param("DialCallStatus"), Some("busy"));
    // Only the first request after the bridge: a Twilio server tells a Dial's request by it.
    assert_eq!(seen[2].param("DialCallStatus"), None);
    assert_eq!(seen[2].param("DialCallSid"), None);
}

#[tokio::test]
async fn after_a_completed_bridge_the_next_verb_runs() {
    let web = Web::start(&[(
        "/start",
        r#"<Response><Dial hangupOnStar="true"><User>u1</User><Device>d1</Device></Dial>
             <Pause length="4"/></Response>"#,
    )])
    .await;
    let mut call = FakeCall::new();
    call.bridge_outcomes.push_back(BridgeOutcome {
        status: DialStatus::Completed,
        cause: "NORMAL_CLEARING",
        sip_code: Some(200),
        b_call_id: Some("b".into()),
        duration: Duration::from_secs(30),
    });
    let mut state = FlowState::default();
    run(&web, &mut call, &mut state).await.unwrap();
    let Some(Op::Bridge(req)) = call.ops.get(1) else {
        panic!("{:?}", call.ops)
    };
    assert!(req.hangup_on_star);
    assert_eq!(
        req.endpoints,
        [
            BridgeEndpoint::now(Target::User { id: "u1".into() }),
            BridgeEndpoint::now(Target::Device { id: "d1".into() }),
        ]
    );
    assert_eq!(
        bridged_then(&call),
        [Op::Sleep(Duration::from_secs(4)), Op::Hangup]
    );
    // No request followed: the outcome waits for the next one.
    assert_eq!(
        state.last_bridge.map(|b| b.status),
        Some(DialStatus::Completed)
    );
}

#[tokio::test]
async fn a_caller_who_hangs_up_during_the_bridge_ends_the_run() {
    let web = Web::start(&[
        (
            "/start",
            r#"<Response><Dial action="after">100</Dial><Pause/></Response>"#,
        ),
        ("/after", "<Response><Hangup/></Response>"),
    ])
    .await;
    // Op 1 is the answer, op 2 the bridge, during which the caller hangs up.
    let mut call = FakeCall::ending_at(2);
    assert_eq!(
        run(&web, &mut call, &mut FlowState::default()).await,
        Err(CallEnded)
    );
    assert_eq!(call.ops.len(), 2, "{:?}", call.ops);
    assert_eq!(web.paths(), ["/start"], "no action request");
}

#[tokio::test]
async fn a_dial_pivotd_cannot_do_is_skipped_without_ringing() {
    let web = Web::start(&[(
        "/start",
        r#"<Response>
             <Dial record="record-from-answer">100</Dial>
             <Dial><Conference>room</Conference></Dial>
             <Dial timeout="soon">100</Dial>
             <Pause length="1"/>
           </Response>"#,
    )])
    .await;
    let mut call = FakeCall::new();
    run(&web, &mut call, &mut FlowState::default())
        .await
        .unwrap();
    assert_eq!(
        call.ops,
        [Op::Answer, Op::Sleep(Duration::from_secs(1)), Op::Hangup]
    );
}

/// A Kazoo-format pivot node after a bridge (a bridging module before it) gets the outcome in
/// Kazoo's names too, once.
#[tokio::test]
async fn a_kazoo_request_after_a_bridge_carries_its_cause() {
    let web = Web::start(&[("/start", "<Response><Hangup/></Response>")]).await;
    let mut state = FlowState {
        last_bridge: Some(busy()),
        ..FlowState::default()
    };
    let data = node(web.url("/start"), ReqFormat::Kazoo);
    pivot::run(&data, &mut FakeCall::new(), &runtime(), &mut state)
        .await
        .unwrap();
    let seen = web.seen();
    assert_eq!(seen[0].param("DialCallStatus"), Some("busy"));
    assert_eq!(seen[0].param("Hangup-Cause"), Some("USER_BUSY"));
    assert_eq!(seen[0].param("Hangup-Code"), Some("sip:486"));
    assert_eq!(state.last_bridge, None);
}

/// `fallback_url` gets the same request as the failed `voice_url` (here a 404), bridge
/// outcome included, and its answer runs.
#[tokio::test]
async fn the_fallback_url_gets_the_same_request_bridge_outcome_included() {
    let web = Web::start(&[("/fallback", "<Response><Hangup/></Response>")]).await;
    let mut state = FlowState {
        last_bridge: Some(busy()),
        ..FlowState::default()
    };
    let mut data = node(web.url("/gone"), ReqFormat::Twiml);
    data.fallback_url = Some(web.url("/fallback"));
    let next = pivot::run(&data, &mut FakeCall::new(), &runtime(), &mut state)
        .await
        .unwrap();
    assert!(matches!(next, Next::Stop), "the fallback's TwiML ran");
    assert_eq!(web.paths(), ["/gone", "/fallback"]);
    let seen = web.seen();
    assert_eq!(seen[0].method, seen[1].method);
    assert_eq!(seen[0].params, seen[1].params);
    assert_eq!(seen[1].param("DialCallStatus"), Some("busy"));
    assert_eq!(state.last_bridge, None);
}
