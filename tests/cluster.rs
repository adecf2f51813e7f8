//! Beyond one box (issue 13): Kamailio (`deploy/kamailio/kamailio.cfg`) in front of three
//! pivotd processes on 127.0.0.1/.2/.3 sharing one PostgreSQL database. SIPp calls through
//! the proxy, following its Record-Route (`tests/sipp/uac_rr.xml`). Each test has its own
//! database, nodes and Kamailio.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::api::Api;
use common::cluster::{start_nodes, Node, KEY};
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
