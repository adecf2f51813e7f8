//! Beyond one box (issue 13): the shared PostgreSQL goes away for 10 s under load. Three
//! pivotd processes behind Kamailio keep answering every call (routing is in memory, writes
//! queue), and once the database is back every call's CDR is in it (the writer tries its
//! batch again every 0.5 s). Its own binary: it stops and starts a PostgreSQL of its own.

mod common;

use std::time::{Duration, Instant};

use common::cluster::start_nodes;
use common::kamailio::Kamailio;
use common::*;

/// A short call: a prompt, then the node hangs up.
const SHORT_CALL: &str = r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = { module = "play", data = { id = "digit-7" } }
"#;

const CALLS: u32 = 250;
const RATE: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_while_the_database_is_away_and_every_cdr_lands_after() {
    let started = Instant::now();
    let pg = tokio::task::spawn_blocking(common::postgres::private_server)
        .await
        .unwrap();
    let url = pg.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let nodes = start_nodes(3, &url, SHORT_CALL, "").await;
    let sips: Vec<_> = nodes.iter().map(|n| n.sip).collect();
    let proxy = Kamailio::start(&sips, &[]).await;
    let uac = path_str(&repo().join("tests/sipp/uac_rr.xml"));
    let addr = proxy.addr;
    let load = tokio::spawn(async move {
        sipp_calls(
            &uac,
            false,
            addr,
            CALLS,
            &["-s", "6000", "-r", &RATE.to_string()],
        )
        .await
    });

    // Away from 5 s into the load to 15 s: a hundred calls start and end meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pg = std::sync::Arc::new(pg);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    let stopped = Instant::now();
    let during = nodes[0].metric("pivotd_calls_answered_total").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let answered_away = nodes[0].metric("pivotd_calls_answered_total").await - during;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again())
        .await
        .unwrap();
    let away = stopped.elapsed();
    // The calls that ended while it was away: their CDRs land within a few of the writer's
    // 0.5 s retries.
    let mut ended = 0;
    for n in &nodes {
        ended += n.metric("pivotd_calls_total").await - n.metric("pivotd_calls_active").await;
    }
    let (p, d) = (pg.clone(), db.clone());
    let caught_up = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let n: u64 = p.sql(&d, "SELECT count(*) FROM cdrs").parse().unwrap();
            if n >= ended {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();

    let run = load.await.unwrap();
    assert_eq!(
        (
            sipp_stat(&run.output, "Successful call"),
            sipp_stat(&run.output, "Failed call")
        ),
        (Some(CALLS), Some(0)),
        "{}\n{}",
        run.output,
        proxy.log()
    );
    assert!(
        answered_away > 0,
        "node 1 answered nothing while the database was away"
    );

    // Every call's CDR, once each, within a few retries of the database coming back.
    let mut retried = 0;
    for n in &nodes {
        retried += n.metric("pivotd_store_retried_total").await;
    }
    let t = Instant::now();
    let (p, d) = (pg.clone(), db.clone());
    let (landed, rows) = tokio::task::spawn_blocking(move || {
        let count = |sql: &str| -> u64 { p.sql(&d, sql).parse().unwrap() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = count("SELECT count(DISTINCT call_id) FROM cdrs");
            if n >= CALLS as u64 || Instant::now() > deadline {
                return (n, count("SELECT count(*) FROM cdrs"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let mut dropped = 0;
    for n in &nodes {
        dropped += n.metric("pivotd_store_queue_dropped_total").await;
    }
    eprintln!(
        "database away {away:?}; node 1 answered {answered_away} calls meanwhile; \
         the CDRs of the {ended} calls ended by then in {caught_up:?}; \
         {CALLS} calls ok; {landed} CDRs ({rows} rows) {:?} after the load, \
         {retried} commits retried, {dropped} dropped; test {:?}",
        t.elapsed(),
        started.elapsed()
    );
    assert_eq!(
        landed, CALLS as u64,
        "CDRs missing after the database came back"
    );
    assert_eq!(rows, CALLS as u64, "a CDR written twice");
    assert!(
        retried > 0,
        "no commit was retried: was the database away at all?"
    );
}
