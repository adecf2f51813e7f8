//! Beyond one box (issue 13): Kamailio (`deploy/kamailio/kamailio.cfg`) in front of three
//! pivotd processes on 127.0.0.1/.2/.3 sharing one PostgreSQL database. SIPp calls through
//! the proxy, following its Record-Route (`tests/sipp/uac_rr.xml`). Each test has its own
//! database, nodes and Kamailio.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::api::Api;
use common::cluster::{start_nodes, start_nodes_each, Node, KEY};
use common::http::{HttpResp, HttpServer};
use common::kamailio::Kamailio;
use common::*;
use serde_json::{json, Value};

/// A call through the proxy: the node answers, plays its flow and hangs up.
fn uac_rr() -> String {
    path_str(&repo().join("tests/sipp/uac_rr.xml"))
}

async fn database() -> String {
    tokio::task::spawn_blocking(common::postgres::database)
        .await
        .unwrap()
}

fn sips(nodes: &[Node]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.sip).collect()
}

/// `calls` SIPp calls to `number` through the proxy at `rate` calls/s.
async fn calls_through(proxy: SocketAddr, number: &str, calls: u32, rate: u32) -> SippRun {
    sipp_calls(
        &uac_rr(),
        false,
        proxy,
        calls,
        &["-s", number, "-r", &rate.to_string()],
    )
    .await
}

/// SIPp's closing count of successful and failed calls.
fn outcome(run: &SippRun) -> (u32, u32) {
    let ok = sipp_stat(&run.output, "Successful call");
    let failed = sipp_stat(&run.output, "Failed call");
    match (ok, failed) {
        (Some(o), Some(f)) => (o, f),
        _ => panic!("no SIPp statistics:\n{}", run.output),
    }
}

/// Each node's `pivotd_calls_total`.
async fn calls_per_node(nodes: &[Node]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.metric("pivotd_calls_total").await);
    }
    out
}

/// The `field` of every row an API list gives (one page of up to 1000).
async fn listed(api: &Api, what: &str, field: &str) -> Vec<String> {
    let a = api
        .get(&format!("/v2/accounts/{ACCOUNT}/{what}?page_size=1000"))
        .await;
    assert_eq!(a.status, 200, "{what}: {}", a.body);
    a.data()
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {}", a.body))
        .iter()
        .map(|r| r[field].as_str().unwrap_or_default().to_string())
        .collect()
}

const PIVOT_ANSWER: &str = r#"{"module": "play", "data": {"id": "digit-7"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_kamailio_share_calls_records_callflows_and_tokens() {
    let started = Instant::now();
    let url = database().await;
    let web = HttpServer::start(|_| HttpResp::json(PIVOT_ANSWER)).await;
    let flows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "pivot", data = {{ voice_url = "{}", debug = true }} }}
"#,
        web.url("/pivot")
    );
    let nodes = start_nodes(3, &url, &flows, "").await;
    let proxy = Kamailio::start(&sips(&nodes), &[]).await;

    // 300 calls through the proxy: every one succeeds, every node takes a share.
    const CALLS: u32 = 300;
    let t = Instant::now();
    let run = calls_through(proxy.addr, "6000", CALLS, 50).await;
    let took = t.elapsed();
    assert_eq!(outcome(&run), (CALLS, 0), "{}\n{}", run.output, proxy.log());
    let split = calls_per_node(&nodes).await;
    eprintln!("{CALLS} calls through kamailio in {took:?}, per node {split:?}");
    assert_eq!(split.iter().sum::<u64>(), CALLS as u64, "{split:?}");
    assert!(
        split.iter().all(|&n| n > 0),
        "a node took no call: {split:?}"
    );

    // Every node's CDRs and debug records are listed by node 1's API (the writers commit
    // within a moment of each call's end).
    let call_ids: HashSet<String> = web
        .requests()
        .iter()
        .filter_map(|r| r.field("Call-ID"))
        .collect();
    assert_eq!(call_ids.len(), CALLS as usize);
    let api1 = Api::login_at(nodes[0].api, KEY).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cdrs: HashSet<String> = listed(&api1, "cdrs", "call_id").await.into_iter().collect();
        let debug: HashSet<String> = listed(&api1, "pivot/debug", "call_id")
            .await
            .into_iter()
            .collect();
        if cdrs == call_ids && debug == call_ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 lists {} CDRs and {} debug calls of {CALLS} (missing CDRs {:?})",
            cdrs.len(),
            debug.len(),
            call_ids.difference(&cdrs).take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A callflow created through node 1 answers the next call on node 3 (called directly);
    // before, that number is unknown there.
    let sink = RtpSink::bind().await;
    let port = sink.addr.port().to_string();
    let direct = |n: SocketAddr| {
        let port = port.clone();
        async move {
            sipp(
                "basic_call.xml",
                false,
                n,
                &["-s", "7000", "-key", "rtp_port", &port],
            )
            .await
        }
    };
    let before = direct(nodes[2].sip).await;
    assert!(
        !before.ok,
        "7000 answered before it existed: {}",
        before.output
    );
    let created = api1
        .send(
            reqwest::Method::PUT,
            &format!("/v2/accounts/{ACCOUNT}/callflows"),
            Some(
                &json!({"data": {"numbers": ["7000"],
                    "flow": {"module": "play", "data": {"id": "digit-7"}}}})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let on3 = nodes[2].metric("pivotd_calls_total").await;
    let after = direct(nodes[2].sip).await;
    assert!(
        after.ok,
        "node 3 did not follow node 1's callflow: {}",
        after.output
    );
    assert_eq!(nodes[2].metric("pivotd_calls_total").await, on3 + 1);

    // A token node 2 issued works on node 1.
    let from2 = Api::login_at(nodes[1].api, KEY).await;
    let mut on1 = Api::at(nodes[0].api);
    on1.token = from2.token.clone();
    let flows = on1.get(&format!("/v2/accounts/{ACCOUNT}/callflows")).await;
    assert_eq!(flows.status, 200, "{}", flows.body);
    let numbers: Vec<Value> = flows
        .data()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["numbers"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(numbers.contains(&json!("7000")), "{}", flows.body);
    eprintln!("test took {:?}", started.elapsed());
}

/// Calls of about four seconds: a short prompt answers, three seconds pass, the node hangs up.
const LONG_CALL: &str = r#"
[[accounts.callflows]]
numbers = ["6100"]
flow = { module = "play", data = { id = "digit-7" }, children = { _ = { module = "sleep", data = { duration = 3 }, children = { _ = { module = "hangup" } } } } }
"#;

/// 10 calls/s of four-second calls through the proxy for 15 s (about 40 live at once).
const LOAD_CALLS: u32 = 150;
const LOAD_RATE: u32 = 10;

/// Three nodes (with `sip_extra`) behind Kamailio, SIPp's load through it running, 6 s in
/// (about 40 calls live); the load's outcome comes from the handle.
async fn three_nodes_under_load(
    sip_extra: &str,
) -> (Vec<Node>, Kamailio, tokio::task::JoinHandle<SippRun>) {
    let url = database().await;
    let nodes = start_nodes(3, &url, LONG_CALL, sip_extra).await;
    let proxy = Kamailio::start(&sips(&nodes), &[]).await;
    let addr = proxy.addr;
    let load =
        tokio::spawn(async move { calls_through(addr, "6100", LOAD_CALLS, LOAD_RATE).await });
    tokio::time::sleep(Duration::from_secs(6)).await;
    (nodes, proxy, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_load_costs_only_its_live_calls() {
    let started = Instant::now();
    let (mut nodes, proxy, load) = three_nodes_under_load("").await;
    // What node 2 holds just before it dies: only those calls may fail (and one whose 200
    // went out between this read and the kill).
    let live = nodes[1].metric("pivotd_calls_active").await;
    let done_on_2 = nodes[1].metric("pivotd_calls_total").await - live;
    nodes[1].kill();
    let killed_at = started.elapsed();
    assert!(live > 0, "node 2 held no call when killed");

    let run = load.await.unwrap();
    let (ok, failed) = outcome(&run);
    let on1 = nodes[0].metric("pivotd_calls_total").await;
    let on3 = nodes[2].metric("pivotd_calls_total").await;
    let moved = proxy.log().matches("failed (408)").count();
    eprintln!(
        "node 2 killed at {killed_at:?} with {live} live calls ({done_on_2} done); \
         kamailio moved {moved} INVITEs it timed out; SIPp: {ok} ok, {failed} failed; \
         nodes 1 and 3 took {on1} and {on3}; test {:?}",
        started.elapsed()
    );
    assert_eq!(ok + failed, LOAD_CALLS, "{}", run.output);
    assert!(
        failed as u64 <= live + 1,
        "{failed} calls failed, node 2 held {live}:\n{}\n{}",
        run.output,
        proxy.log()
    );
    // Every call that did not end on node 2 before the kill was (or was moved to) nodes 1
    // and 3, and every call there succeeded.
    assert!(
        ok as u64 >= on1 + on3 + done_on_2,
        "ok {ok} < {on1} + {on3} + {done_on_2}: a call on a surviving node failed\n{}",
        run.output
    );
    assert!(
        on1 + on3 + done_on_2 + live >= LOAD_CALLS as u64,
        "calls lost: {on1} + {on3} + {done_on_2} + {live}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_draining_mid_load_loses_no_call() {
    let started = Instant::now();
    let (mut nodes, proxy, load) = three_nodes_under_load("shutdown_grace_s = 20").await;
    let live = nodes[1].metric("pivotd_calls_active").await;
    nodes[1].terminate();
    let term_at = started.elapsed();
    assert!(live > 0, "node 2 held no call when told to stop");

    // Its live calls finish (about four seconds each), then it exits 0.
    let exited = nodes[1].exited(15).await;
    let exit_after = started.elapsed() - term_at;
    assert!(
        exited.is_some_and(|s| s.success()),
        "node 2: {exited:?}\n{}",
        nodes[1].log()
    );

    let run = load.await.unwrap();
    let (ok, failed) = outcome(&run);
    let on1 = nodes[0].metric("pivotd_calls_total").await;
    let on3 = nodes[2].metric("pivotd_calls_total").await;
    let refused = proxy.log().matches("failed (503)").count();
    eprintln!(
        "node 2 told to stop at {term_at:?} with {live} live calls, exited {exit_after:?} later; \
         kamailio moved {refused} refused INVITEs; SIPp: {ok} ok, {failed} failed; \
         nodes 1 and 3 took {on1} and {on3}; test {:?}",
        started.elapsed()
    );
    assert_eq!(
        (ok, failed),
        (LOAD_CALLS, 0),
        "{}\n{}",
        run.output,
        proxy.log()
    );
}

/// The device a phone registers as, and the number that rings it.
const PHONE: &str = r#"
[[accounts.devices]]
id = "d2001"
username = "2001"
password = "phone-s3cret"
[[accounts.callflows]]
numbers = ["7100"]
flow = { module = "device", data = { id = "d2001" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_through_kamailio_is_rung_by_another_node_through_it() {
    use common::bridge::{Callee, Caller, Script};
    let url = database().await;
    let nodes = start_nodes(3, &url, PHONE, "").await;
    let proxy = Kamailio::start(&sips(&nodes), &[]).await;

    // The phone registers through the proxy; one node takes it, with the proxy's Path.
    let phone = Callee::start(Script::Answer {
        ring_ms: 0,
        codec: 0,
    })
    .await;
    let ok = phone
        .register(proxy.addr, "2001", "pivotd.test", "phone-s3cret")
        .await;
    assert_eq!(status(&ok), 200, "{ok}\n{}", proxy.log());
    let api = Api::login_at(nodes[0].api, KEY).await;
    // Listed once the node's writer has committed it (a moment; longer on a busy machine).
    let mut regs = None;
    for _ in 0..100 {
        let r = api
            .get(&format!("/v2/accounts/{ACCOUNT}/registrations"))
            .await;
        if r.data().as_array().is_some_and(|a| !a.is_empty()) {
            regs = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let regs = regs.expect("the registration is listed within 5 s");
    let reg = &regs.data()[0];
    let took: SocketAddr = format!(
        "{}:{}",
        reg["proxy_ip"].as_str().unwrap_or_default(),
        reg["proxy_port"].as_str().unwrap_or_default()
    )
    .parse()
    .unwrap_or_else(|e| panic!("{e}: {}", regs.body));
    let registrar = nodes
        .iter()
        .position(|n| n.sip == took)
        .expect("a node took it");
    let other = &nodes[(registrar + 1) % nodes.len()];
    eprintln!(
        "node {} took the REGISTER; node {} calls",
        registrar + 1,
        other.index
    );
    assert_eq!(reg["source_ip"], "127.0.0.4", "{}", regs.body);

    // The other node knows the binding (through the database) and rings the phone through
    // the proxy: the INVITE and the BYE reach the phone from the proxy's address.
    let knows = {
        let mut ok = false;
        for _ in 0..100 {
            if other.metric("pivotd_registrations").await >= 1 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ok
    };
    assert!(knows, "node {} never heard of the binding", other.index);
    let mut caller = Caller::new(other.sip).await;
    caller.invite("7100", &[0], "").await;
    let answer = caller.final_response(5000, &mut Vec::new()).await;
    let answer = answer.unwrap_or_default();
    assert_eq!(
        status(&answer),
        200,
        "{answer}\nphone got {:?}\nnode {}:\n{}\nkamailio:\n{}",
        phone.requests(),
        other.index,
        other.log(),
        proxy.log()
    );
    caller.ack(&answer).await;
    let invites = phone.received("INVITE");
    assert_eq!(invites.len(), 1, "{:?}\n{}", phone.requests(), proxy.log());
    let invite = &invites[0];
    assert!(
        invite
            .lines()
            .filter(|l| l.starts_with("Via:"))
            .any(|l| l.contains(&proxy.addr.to_string())),
        "the INVITE did not come through the proxy:\n{invite}"
    );
    assert!(
        invite
            .lines()
            .any(|l| l.starts_with("Via:") && l.contains(&other.sip.to_string())),
        "the INVITE is not node {}'s:\n{invite}",
        other.index
    );
    let acked = eventually(5, || !phone.received("ACK").is_empty()).await;
    assert!(
        acked,
        "the phone's 200 was not acknowledged through the proxy"
    );
    caller.bye(&answer).await;
    let bye = eventually(5, || !phone.received("BYE").is_empty()).await;
    assert!(
        bye,
        "the phone got no BYE: {:?}\n{}",
        phone.requests(),
        proxy.log()
    );
}

/// pike: a source sending more than PIKE_DENSITY requests in PIKE_UNIT seconds is dropped
/// unanswered; another source is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_drops_a_flooding_source_and_serves_the_others() {
    // No node is needed: Kamailio answers an OPTIONS for itself.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = Kamailio::start(&[nowhere], &[("PIKE_DENSITY", "5")]).await;
    let options = |from: SocketAddr, n: usize| {
        format!(
            "OPTIONS sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{t}{n};rport\r\n\
             From: <sip:flood@{from}>;tag={t}\r\nTo: <sip:{p}>\r\nCall-ID: {t}-{n}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p = proxy.addr,
            t = token()
        )
    };
    let mut flood = RawSip::udp_from("127.0.0.5", proxy.addr).await;
    let from = flood.local();
    for n in 0..40 {
        flood.send(options(from, n).as_bytes()).await;
    }
    let mut answered = 0;
    while flood.recv(500).await.is_some() {
        answered += 1;
    }
    let mut other = RawSip::udp_from("127.0.0.6", proxy.addr).await;
    let from = other.local();
    other.send(options(from, 0).as_bytes()).await;
    let served = other.expect("200", 2000).await;
    eprintln!("pike: {answered} of 40 OPTIONS from one source answered");
    assert!(
        (1..=10).contains(&answered),
        "{answered} of 40 answered\n{}",
        proxy.log()
    );
    assert!(proxy
        .log()
        .contains("pike: dropping requests from 127.0.0.5"));
    assert!(served.is_some(), "another source was not served");
}

/// Node 1 takes at most one new call a second (`max_calls_per_second`, `503` with
/// `Retry-After` above it), node 2 any number. Offered 4 a second, node 1 refuses about half
/// of its share: Kamailio must hand each refused call to node 2 *and leave node 1 in*, so it
/// keeps taking its one a second to the end. Were a node taken out on a 503 for load (as on
/// `503 Shutting Down`), node 1 would take no call after its first refusal until the next
/// probe (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refusing_for_load_hands_the_call_on_and_stays_in() {
    let url = database().await;
    let nodes = start_nodes_each(&url, LONG_CALL, &["max_calls_per_second = 1", ""]).await;
    let proxy = Kamailio::start(&sips(&nodes), &[("PROBE_INTERVAL", "30")]).await;
    let run = calls_through(proxy.addr, "6100", 48, 4).await;
    let (ok, failed) = outcome(&run);
    let moved = proxy.log().matches("trying the next").count();
    let taken = calls_per_node(&nodes).await;
    eprintln!("SIPp {ok} ok, {failed} failed; nodes took {taken:?}; kamailio moved {moved}");
    assert_eq!((ok, failed), (48, 0), "{}\n{}", run.output, proxy.log());
    assert!(moved > 0, "node 1 refused nothing: {taken:?}");
    // About one a second for the 12 s of the run; 2 or 3 if it had been taken out.
    assert!(taken[0] >= 6, "{taken:?}\n{}", proxy.log());
    assert!(
        !proxy.log().contains("out until it answers a probe"),
        "{}",
        proxy.log()
    );
}

/// A watcher of the presence id `2100` and the device it subscribes as.
const WATCHER: &str = r#"
[[accounts.devices]]
id = "w1"
username = "2009"
password = "pass-2009"
"#;

/// A SUBSCRIBE through Kamailio lands on one node (its dialog Record-Routed through the
/// proxy); a lamp set through either node's API reaches the watcher, the NOTIFYs coming back
/// through Kamailio — one of the two changes is made on the node that does not hold the
/// subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_through_kamailio_hears_lamps_set_on_any_node() {
    use common::presence::{shown, watch};
    let url = database().await;
    let nodes = start_nodes(2, &url, WATCHER, "").await;
    let proxy = Kamailio::start(&sips(&nodes), &[]).await;
    let mut blf = watch(proxy.addr, "pivotd.test", "2100", "dialog").await;
    assert!(
        blf.sip.local().ip().is_loopback(),
        "the watcher is on loopback"
    );

    for (node, state) in [(&nodes[0], "confirmed"), (&nodes[1], "terminated")] {
        let api = Api::login_at(node.api, KEY).await;
        let a = api
            .post(
                &format!("/v2/accounts/{ACCOUNT}/presence/2100"),
                json!({"action": "set", "state": state}),
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.body);
        let n = blf.next_notify(3000).await.unwrap_or_else(|| {
            panic!(
                "no NOTIFY after the set on node {}\n{}",
                node.index,
                proxy.log()
            )
        });
        let want = if state == "terminated" { "idle" } else { state };
        assert_eq!(shown(&n).state, want, "{}", n.body);
        assert!(
            n.raw.contains(&format!("Via: SIP/2.0/UDP {}", proxy.addr)),
            "the NOTIFY came through the proxy: {}",
            n.raw
        );
    }
}
