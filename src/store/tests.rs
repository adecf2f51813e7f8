use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use super::*;

/// The test binary's own PostgreSQL (the same harness the integration tests use).
#[path = "../../tests/common/postgres.rs"]
pub(super) mod test_postgres;

/// Which backend a test runs on: each store test runs on both (`both_backends!`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Sqlite,
    Postgres,
}

/// Declares `mod NAME { sqlite, postgres }`: the body once per backend, given as `kind`.
macro_rules! both_backends {
    ($(#[$attr:meta])* fn $name:ident($kind:ident) $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($kind: $crate::store::tests::Kind) $body
            #[test]
            fn sqlite() {
                run($crate::store::tests::Kind::Sqlite)
            }
            #[test]
            fn postgres() {
                run($crate::store::tests::Kind::Postgres)
            }
        }
    };
}
pub(super) use both_backends;

/// A fresh, empty store: SQLite in memory, or a new database on the test PostgreSQL.
pub(super) fn fresh(kind: Kind) -> Store {
    TestDb::new(kind, "fresh").open()
}

/// Where a test's store lives, to open it (again): a SQLite file in a temp dir, or a
/// database of its own on the test PostgreSQL.
pub(super) enum TestDb {
    Memory,
    File(TempDir),
    Postgres { db: String, url: PostgresUrl },
}

impl TestDb {
    /// SQLite in memory, or a new database.
    pub(super) fn new(kind: Kind, _tag: &str) -> TestDb {
        match kind {
            Kind::Sqlite => TestDb::Memory,
            Kind::Postgres => TestDb::postgres(),
        }
    }

    /// A SQLite file (it outlives a store, as a database does), or a new database.
    pub(super) fn lasting(kind: Kind, tag: &str) -> TestDb {
        match kind {
            Kind::Sqlite => TestDb::File(TempDir::new(tag)),
            Kind::Postgres => TestDb::postgres(),
        }
    }

    fn postgres() -> TestDb {
        let url = test_postgres::database();
        let db = url.rsplit('/').next().unwrap_or_default().to_string();
        TestDb::Postgres {
            db,
            url: PostgresUrl::parse(&url).expect("the harness's URL parses"),
        }
    }

    pub(super) fn open(&self) -> Store {
        self.open_with_queue(Store::DEFAULT_QUEUE)
    }

    pub(super) fn open_with_queue(&self, capacity: usize) -> Store {
        self.try_open(capacity).expect("the store opens")
    }

    fn try_open(&self, capacity: usize) -> Result<Store, StoreError> {
        match self {
            TestDb::Memory => Store::open_with_queue(":memory:", capacity),
            TestDb::File(dir) => Store::open_with_queue(dir.db(), capacity),
            TestDb::Postgres { url, .. } => Store::open_postgres_with_queue(url, capacity),
        }
    }

    /// The user tables, by name (without the schema's bookkeeping).
    fn tables(&self, store: &Store) -> Vec<String> {
        match self {
            TestDb::Postgres { db, .. } => test_postgres::server()
                .sql(
                    db,
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'
                     AND tablename <> 'pivotd_schema' ORDER BY tablename",
                )
                .lines()
                .map(str::to_owned)
                .collect(),
            _ => {
                let Db::Sqlite(conn) = store.db() else {
                    unreachable!("a SQLite store")
                };
                let mut stmt = conn
                    .prepare(
                        "SELECT name FROM sqlite_master WHERE type = 'table'
                         AND name NOT LIKE 'sqlite_%' ORDER BY name",
                    )
                    .unwrap();
                let names = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                names
            }
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop (tests run in parallel).
pub(super) struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "pivotd-store-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn db(&self) -> PathBuf {
        self.0.join("pivotd.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rec(
    account: &str,
    call: &str,
    iteration: u32,
    kind: RecordKind,
    created: i64,
    doc: Value,
) -> DebugRecord {
    DebugRecord {
        id: format!("{:032x}", rand::random::<u128>()),
        account_id: account.into(),
        call_id: call.into(),
        iteration,
        node: "pivotd@test".into(),
        kind,
        created,
        doc,
    }
}

fn request_doc(call: &str, iteration: u32, uri: &str) -> Value {
    json!({"call_id": call, "iteration": iteration, "uri": uri, "method": "get",
           "req_headers": {}, "req_body": ""})
}

fn response_doc(call: &str, iteration: u32, code: &str) -> Value {
    json!({"call_id": call, "iteration": iteration, "resp_status_code": code,
           "resp_headers": {"content-type": "application/json"}, "resp_body": "{}"})
}

#[test]
fn gregorian_seconds() {
    // The seed's 63635231906 is 1468012706 Unix seconds (2016-07-08T21:18:26Z).
    assert_eq!(unix_to_gregorian(1_468_012_706), 63_635_231_906);
    assert_eq!(unix_to_gregorian(0), 62_167_219_200);
    let now = gregorian_now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - GREGORIAN_OFFSET - unix).abs() <= 2,
        "{now} vs {unix}"
    );
}

both_backends! {
fn migrations_apply_on_fresh_file_and_reopen_keeps_data(kind) {
    let dir = TestDb::lasting(kind, "reopen");
    let created = gregorian_now();
    let r = rec(
        "acc1",
        "call-1@host",
        1,
        RecordKind::Request,
        created,
        request_doc("call-1@host", 1, "http://x/a?b=c"),
    );
    {
        let store = dir.open();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 9);
        assert_eq!(store.is_postgres(), kind == Kind::Postgres);
        assert_eq!(
            dir.tables(&store),
            [
                "api_tokens",
                "call_events",
                "callflow_numbers",
                "callflows",
                "cdrs",
                "devices",
                "pivot_debug",
                "presence_states",
                "presence_subscriptions",
                "registrations",
                "users"
            ]
        );
        assert!(store.write(Write::Debug(r.clone())));
        store.flush().unwrap();
        assert_eq!(store.written(), 1);
    }
    // Restart: the migrations are not applied twice and the record is still there.
    let store = dir.open();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.debug_records("acc1", "call-1@host").unwrap(), vec![r]);
}
}

#[test]
fn wal_mode_on_for_files() {
    let dir = TempDir::new("wal");
    let store = Store::open(dir.db()).unwrap();
    assert_eq!(store.journal_mode().unwrap(), "wal");
    store.ping().unwrap();
    // Another connection sees WAL too: the mode is a property of the file.
    let raw = Connection::open(dir.db()).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    let mem = Store::open(":memory:").unwrap();
    assert_eq!(mem.journal_mode().unwrap(), "memory");
    assert_eq!(mem.schema_version().unwrap(), SCHEMA_VERSION);
}

/// A file left at schema 4 (before CDRs had a direction): migration 5 keeps its CDRs
/// readable, as inbound legs never bridged, and new rows take both fields.
#[test]
fn migration_from_schema_4_keeps_old_cdrs_readable() {
    let dir = TempDir::new("from4");
    {
        let mut raw = Connection::open(dir.db()).unwrap();
        let tx = raw.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..4] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        tx.execute(
            "INSERT INTO cdrs (call_id, account_id, from_uri, to_uri, start_time, answer_time,
                end_time, duration_s, hangup_cause, sip_code)
             VALUES ('old@host', 'acc', 'sipp@127.0.0.1', '6000@pivotd.test', 1000, NULL,
                1004, 4, 'ORIGINATOR_CANCEL', 487)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let old = Cdr {
        call_id: "old@host".into(),
        account_id: "acc".into(),
        from: "sipp@127.0.0.1".into(),
        to: "6000@pivotd.test".into(),
        start: 1000,
        answer: None,
        end: 1004,
        duration_s: 4,
        hangup_cause: "ORIGINATOR_CANCEL".into(),
        sip_code: Some(487),
        call_direction: CallDirection::Inbound,
        other_leg_call_id: None,
    };
    let q = CdrQuery {
        limit: 10,
        ..CdrQuery::default()
    };
    assert_eq!(store.cdrs("acc", &q).unwrap(), std::slice::from_ref(&old));
    let new = Cdr {
        call_id: "new@pivotd".into(),
        start: 2000,
        end: 2004,
        call_direction: CallDirection::Outbound,
        other_leg_call_id: Some("in@host".into()),
        ..old.clone()
    };
    assert!(store.write(Write::Cdr(new.clone())));
    store.flush().unwrap();
    drop(store);
    // Reopened: not migrated twice, both rows as written.
    let store = Store::open(dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.cdrs("acc", &q).unwrap(), [new, old]);
}

both_backends! {
fn newer_schema_is_refused(kind) {
    let dir = TestDb::lasting(kind, "newer");
    match &dir {
        TestDb::File(f) => {
            let raw = Connection::open(f.db()).unwrap();
            raw.pragma_update(None, "user_version", 99).unwrap();
        }
        TestDb::Postgres { db, .. } => {
            drop(dir.open());
            test_postgres::server().sql(db, "UPDATE pivotd_schema SET version = 99");
        }
        TestDb::Memory => unreachable!("a lasting store"),
    }
    match dir.try_open(4) {
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported,
        }) => {
            assert_eq!(supported, SCHEMA_VERSION)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}
}

#[test]
fn missing_directory_is_an_open_error() {
    let dir = TempDir::new("missing");
    let p = dir.0.join("no/such/dir/p.db");
    match Store::open(&p) {
        Err(StoreError::Open { path, .. }) => assert_eq!(path, p),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a file in a missing directory"),
    }
}

both_backends! {
fn full_queue_drops_and_counts(kind) {
    let store = TestDb::new(kind, "full").open_with_queue(4);
    let release = store.hold_writer();
    let now = gregorian_now();
    let accepted = (0..100)
        .filter(|i| {
            store.write(Write::Debug(rec(
                "a",
                &format!("c{i}"),
                1,
                RecordKind::Request,
                now,
                json!({}),
            )))
        })
        .count();
    assert_eq!(accepted, 4);
    assert_eq!(store.dropped(), 96);
    release.send(()).unwrap();
    store.flush().unwrap();
    assert_eq!(store.written(), 4);
    assert_eq!(store.debug_record_count("a").unwrap(), 4);
    assert_eq!(store.failed(), 0);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_never_block_on_a_tiny_queue_sqlite() {
    many_tasks_never_block_on_a_tiny_queue(Kind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_never_block_on_a_tiny_queue_postgres() {
    many_tasks_never_block_on_a_tiny_queue(Kind::Postgres).await
}

async fn many_tasks_never_block_on_a_tiny_queue(kind: Kind) {
    let dir = tokio::task::spawn_blocking(move || TestDb::lasting(kind, "flood"))
        .await
        .unwrap();
    let store = dir.open_with_queue(2);
    let now = gregorian_now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..500 {
                let r = rec(
                    "flood",
                    &format!("t{t}-{i}"),
                    1,
                    RecordKind::Response,
                    now,
                    response_doc("x", 1, "200"),
                );
                let t0 = Instant::now();
                store.write(Write::Debug(r));
                slowest = slowest.max(t0.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    // 10 000 writes while a file-backed writer commits: a blocking queue would take seconds.
    assert!(
        elapsed < Duration::from_millis(500),
        "10 000 writes took {elapsed:?}"
    );
    assert!(
        slowest < Duration::from_millis(50),
        "slowest write {slowest:?}"
    );
    assert!(
        store.dropped() > 0,
        "a queue of 2 cannot take 10 000 writes unscathed"
    );
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush())
        .await
        .unwrap()
        .unwrap();
    let s = store.clone();
    let stored = tokio::task::spawn_blocking(move || s.debug_record_count("flood"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, store.written());
    assert_eq!(stored + store.dropped(), 10_000);
}

both_backends! {
fn records_read_back_with_their_fields_in_order(kind) {
    let store = fresh(kind);
    let t = unix_to_gregorian(1_700_000_000);
    let a = rec(
        "acc",
        "call@h",
        1,
        RecordKind::Request,
        t,
        request_doc("call@h", 1, "http://w/p?From=1"),
    );
    let b = rec(
        "acc",
        "call@h",
        1,
        RecordKind::Response,
        t,
        response_doc("call@h", 1, "404"),
    );
    let c = rec(
        "acc",
        "call@h",
        2,
        RecordKind::Error,
        t + 1,
        json!({"call_id": "call@h", "iteration": 2,
        "json_errors": {"before": "{", "after": "x", "message": "invalid JSON"}, "resp_body": "{x"}),
    );
    let other_account = rec(
        "acc2",
        "call@h",
        1,
        RecordKind::Request,
        t,
        request_doc("call@h", 1, "http://o/"),
    );
    for r in [&a, &other_account, &b, &c] {
        assert!(store.write(Write::Debug(r.clone())));
    }
    store.flush().unwrap();
    let got = store.debug_records("acc", "call@h").unwrap();
    assert_eq!(got, vec![a.clone(), b, c]);
    assert_eq!(got[0].doc["uri"], "http://w/p?From=1");
    assert_eq!(got[1].doc["resp_status_code"], "404");
    assert_eq!(got[0].kind, RecordKind::Request);
    assert_eq!(got[2].iteration, 2);
    assert!(store.debug_records("acc", "other").unwrap().is_empty());

    let api = a.to_api_json();
    assert_eq!(api["id"], Value::String(a.id.clone()));
    assert_eq!(api["created"], json!(t));
    assert_eq!(api["node"], "pivotd@test");
    assert_eq!(api["method"], "get");
}
}

both_backends! {
fn listing_newest_first_with_paging_and_summary_fields(kind) {
    let store = fresh(kind);
    let base = unix_to_gregorian(1_700_000_000);
    // call-a: request + 404 at iteration 1.
    store.write(Write::Debug(rec(
        "acc",
        "call-a",
        1,
        RecordKind::Request,
        base,
        request_doc("call-a", 1, "http://w/a"),
    )));
    store.write(Write::Debug(rec(
        "acc",
        "call-a",
        1,
        RecordKind::Response,
        base,
        response_doc("call-a", 1, "404"),
    )));
    // call-b (newer): debug off, only a schema error record.
    store.write(Write::Debug(rec("acc", "call-b", 1, RecordKind::Error, base + 10,
        json!({"call_id": "call-b", "iteration": 1, "schema_errors": {"flow.module": {"required": {"message": "required"}}}, "resp_body": "{}"}))));
    // call-c (newest): 200 at iteration 1, a JSON error at iteration 2.
    store.write(Write::Debug(rec(
        "acc",
        "call-c",
        1,
        RecordKind::Request,
        base + 20,
        request_doc("call-c", 1, "http://w/c"),
    )));
    store.write(Write::Debug(rec(
        "acc",
        "call-c",
        1,
        RecordKind::Response,
        base + 20,
        response_doc("call-c", 1, "200"),
    )));
    store.write(Write::Debug(rec("acc", "call-c", 2, RecordKind::Error, base + 21,
        json!({"call_id": "call-c", "iteration": 2, "json_errors": {"before": "", "after": "", "message": "invalid JSON"}, "resp_body": "<"}))));
    store.write(Write::Debug(rec(
        "other",
        "call-z",
        1,
        RecordKind::Request,
        base + 30,
        request_doc("call-z", 1, "http://o/"),
    )));
    store.flush().unwrap();

    let all = store.debug_calls("acc", 10).unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.call_id.as_str()).collect();
    assert_eq!(ids, ["call-c", "call-b", "call-a"]);
    assert_eq!(
        all[0],
        CallSummary {
            call_id: "call-c".into(),
            created: base + 20,
            iteration: 1,
            node: "pivotd@test".into(),
            status_code: Some("200".into()),
            has_schema_errors: false,
            has_json_errors: true,
            uri: Some("http://w/c".into()),
        }
    );
    assert_eq!(all[1].status_code, None);
    assert_eq!(all[1].uri, None);
    assert!(all[1].has_schema_errors);
    assert_eq!(all[2].status_code.as_deref(), Some("404"));
    assert_eq!(all[2].uri.as_deref(), Some("http://w/a"));

    // The listing item has Kazoo's fields; absent ones are left out (as call-b in the seed).
    let item = all[1].to_api_json();
    assert_eq!(item["created"], json!(base + 10));
    assert_eq!(item["has_schema_errors"], json!(true));
    assert!(item.get("uri").is_none() && item.get("status_code").is_none());

    // Paging: two, then the rest from the last key.
    let page1 = store.debug_calls("acc", 2).unwrap();
    assert_eq!(page1.len(), 2);
    let last = &page1[1];
    let page2 = store
        .debug_calls_after("acc", Some((last.created, &last.call_id)), 2)
        .unwrap();
    assert_eq!(
        page2.iter().map(|s| s.call_id.as_str()).collect::<Vec<_>>(),
        ["call-a"]
    );

    assert_eq!(store.debug_calls("other", 10).unwrap().len(), 1);
    assert!(store.debug_calls("nobody", 10).unwrap().is_empty());
}
}

both_backends! {
fn purge_removes_old_records_only(kind) {
    let store = fresh(kind);
    let now = gregorian_now();
    let day = 86_400;
    store.write(Write::Debug(rec(
        "acc",
        "old",
        1,
        RecordKind::Request,
        now - 8 * day,
        json!({}),
    )));
    store.write(Write::Debug(rec(
        "acc",
        "old",
        1,
        RecordKind::Response,
        now - 8 * day,
        json!({}),
    )));
    store.write(Write::Debug(rec(
        "acc",
        "recent",
        1,
        RecordKind::Request,
        now - 6 * day,
        json!({}),
    )));
    store.write(Write::Debug(rec(
        "acc",
        "new",
        1,
        RecordKind::Request,
        now,
        json!({}),
    )));
    store.flush().unwrap();
    let purged = store
        .purge_older_than(Duration::from_secs(7 * 86_400))
        .unwrap();
    assert_eq!(purged, 2);
    assert!(store.debug_records("acc", "old").unwrap().is_empty());
    assert_eq!(store.debug_records("acc", "recent").unwrap().len(), 1);
    assert_eq!(store.debug_records("acc", "new").unwrap().len(), 1);
    assert_eq!(
        store
            .purge_older_than(Duration::from_secs(7 * 86_400))
            .unwrap(),
        0
    );
}
}

both_backends! {
fn writes_arriving_together_share_one_commit(kind) {
    let store = fresh(kind);
    let now = gregorian_now();
    // 40 writes in far less than the writer's linger after the first: one transaction (two
    // if the writer was slow to wake), where it used to wake and commit per write.
    for i in 0..40 {
        assert!(store.write(Write::Debug(rec(
            "burst",
            &format!("c{i}"),
            1,
            RecordKind::Request,
            now,
            json!({})
        ))));
    }
    store.flush().unwrap();
    assert_eq!(store.debug_record_count("burst").unwrap(), 40);
    let commits = store.commits();
    assert!((1..=2).contains(&commits), "{commits} commits");
    // Nothing queued: a flush commits nothing.
    store.flush().unwrap();
    assert_eq!(store.commits(), commits);
}
}

both_backends! {
fn drop_commits_what_is_queued(kind) {
    let dir = TestDb::lasting(kind, "drop");
    {
        let store = dir.open();
        let now = gregorian_now();
        for i in 0..50 {
            assert!(store.write(Write::Debug(rec(
                "acc",
                &format!("c{i}"),
                1,
                RecordKind::Request,
                now,
                json!({})
            ))));
        }
        // No flush: dropping the last handle drains the queue before the writer stops.
    }
    let store = dir.open();
    assert_eq!(store.debug_record_count("acc").unwrap(), 50);
}
}

fn binding(device: &str, contact: &str, expires_at: u64) -> Registration {
    Registration {
        account_id: "acc1".into(),
        device_id: device.into(),
        contact: contact.into(),
        expires_at,
        call_id: "reg-1".into(),
        cseq: 7,
        path: vec!["<sip:edge.test;lr>".into()],
        source: "192.0.2.10:40000".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: "UDP".into(),
        user_agent: Some("baresip".into()),
        instance: None,
        q: Some("0.5".into()),
        updated: 1_000,
    }
}

both_backends! {
fn registrations_replace_per_device_survive_reopening_and_expire(kind) {
    let dir = TestDb::lasting(kind, "registrations");
    let a = binding("d1", "sip:2001@192.0.2.10:40000", 5_000);
    let b = binding("d1", "sip:2001@192.0.2.11", 2_000);
    let c = binding("d2", "sip:2002@192.0.2.12", 5_000);
    {
        let store = dir.open();
        let put = |device: &str, bindings: Vec<Registration>| {
            assert!(store.write(Write::Registrations(DeviceBindings {
                account_id: "acc1".into(),
                device_id: device.into(),
                bindings,
            })));
        };
        put("d1", vec![a.clone(), b.clone()]);
        put("d2", vec![c.clone()]);
        store.flush().unwrap();
        assert_eq!(
            store.registrations(1_000).unwrap(),
            [a.clone(), b.clone(), c.clone()]
        );
        // A device's new list replaces its old one, and leaves the others alone.
        put("d1", vec![a.clone()]);
        store.flush().unwrap();
        assert_eq!(store.registrations(1_000).unwrap(), [a.clone(), c.clone()]);
        put("d1", vec![a.clone(), b.clone()]);
        store.flush().unwrap();
    }
    let store = dir.open();
    assert_eq!(
        store.registrations(1_000).unwrap(),
        [a.clone(), b, c.clone()]
    );
    // Expired ones are not read back, and go when told.
    assert_eq!(store.registrations(3_000).unwrap(), [a.clone(), c.clone()]);
    assert!(store.write(Write::ExpireRegistrations(3_000)));
    store.flush().unwrap();
    // Only the two live ones are left (expired rows included in a read from 0).
    assert_eq!(store.registrations(0).unwrap(), [a, c]);
}
}

/// A PostgreSQL database left at schema 4 (before CDRs had a direction) migrates as the
/// SQLite file does: old CDRs read as inbound legs never bridged.
#[test]
fn postgres_migration_from_schema_4_keeps_old_cdrs_readable() {
    let TestDb::Postgres { db, url } = TestDb::postgres() else {
        unreachable!()
    };
    let pg = test_postgres::server();
    // As the role pivotd connects as, which owns the tables it migrates.
    let mut sql = String::from("SET ROLE pivotd; BEGIN;");
    for m in &pg::schema::MIGRATIONS[..4] {
        sql.push_str(m);
    }
    sql.push_str(
        "CREATE TABLE pivotd_schema (version BIGINT NOT NULL);
         INSERT INTO pivotd_schema VALUES (4);
         INSERT INTO cdrs (call_id, account_id, from_uri, to_uri, start_time, answer_time,
            end_time, duration_s, hangup_cause, sip_code)
         VALUES ('old@host', 'acc', 'sipp@127.0.0.1', '6000@pivotd.test', 1000, NULL,
            1004, 4, 'ORIGINATOR_CANCEL', 487);
         COMMIT;",
    );
    pg.sql(&db, &sql);
    let store = Store::open_postgres(&url).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let q = CdrQuery {
        limit: 10,
        ..CdrQuery::default()
    };
    let got = store.cdrs("acc", &q).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].call_direction,
            got[0].other_leg_call_id.clone(),
            got[0].sip_code
        ),
        (CallDirection::Inbound, None, Some(487))
    );
    assert_eq!(
        pg.sql(
            &db,
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'pivotd'"
        ),
        "t",
        "the role's password is kept as a SCRAM secret"
    );
}

/// Several nodes starting at once on an empty database: one applies the migrations, the
/// others wait for its advisory lock and find them applied.
#[test]
fn postgres_nodes_starting_together_migrate_once() {
    let TestDb::Postgres { db, url } = TestDb::postgres() else {
        unreachable!()
    };
    let nodes: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Store::open_postgres(&url).map(|s| s.schema_version()))
        })
        .collect();
    for n in nodes {
        assert_eq!(n.join().unwrap().unwrap().unwrap(), SCHEMA_VERSION);
    }
    assert_eq!(
        test_postgres::server().sql(
            &db,
            "SELECT count(*) || ':' || max(version) FROM pivotd_schema"
        ),
        format!("1:{SCHEMA_VERSION}")
    );
}

/// A server that is not there fails the start with a connection error, soon; and a
/// PostgreSQL store has no SQLite journal mode.
#[test]
fn postgres_unreachable_is_an_open_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = PostgresUrl::parse(&format!("postgres://pivotd:x@127.0.0.1:{port}/none")).unwrap();
    let t0 = Instant::now();
    match Store::open_postgres(&url) {
        Err(StoreError::Pool(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a database nobody serves"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    let store = fresh(Kind::Postgres);
    store.ping().unwrap();
    assert!(matches!(
        store.journal_mode(),
        Err(StoreError::NotSqlite(_))
    ));
}

/// A wrong password is refused by the server (scram-sha-256), not let in.
#[test]
fn postgres_wrong_password_is_refused() {
    let TestDb::Postgres { url, .. } = TestDb::postgres() else {
        unreachable!()
    };
    let pw = &test_postgres::server().password;
    let wrong = PostgresUrl::parse(&url.as_str().replace(pw.as_str(), "not-the-password")).unwrap();
    match Store::open_postgres(&wrong) {
        Err(e) => assert!(
            e.to_string()
                .contains("password authentication failed for user \"pivotd\""),
            "{e}"
        ),
        Ok(_) => panic!("a wrong password was accepted"),
    }
}

/// A TCP forwarder between the store and the test PostgreSQL that can be cut (open
/// connections shut, new ones closed at once) and restored: a database that went away.
struct Cuttable {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Cuttable {
    fn start(target: u16) -> Cuttable {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (Arc::clone(&up), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut conns = open2.lock().unwrap();
                for s in [&client, &server] {
                    conns.push(s.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cuttable { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// PostgreSQL going away mid-run: writes still return at once (queued, then dropped and
/// counted when the queue is full), the writer keeps its batch and retries, and once the
/// database is back every write it accepted is committed, none failed.
#[test]
fn postgres_unreachable_writes_never_wait_and_are_retried() {
    let TestDb::Postgres { url, .. } = TestDb::postgres() else {
        unreachable!()
    };
    let pg_port = test_postgres::server().port;
    let proxy = Cuttable::start(pg_port);
    let via = url
        .as_str()
        .replace(&format!(":{pg_port}/"), &format!(":{}/", proxy.port));
    let store = Store::open_postgres_with_queue(&PostgresUrl::parse(&via).unwrap(), 16).unwrap();
    let now = gregorian_now();
    let write = |i: usize| {
        let t0 = Instant::now();
        let accepted = store.write(Write::Debug(rec(
            "gone",
            &format!("c{i}"),
            1,
            RecordKind::Request,
            now,
            json!({}),
        )));
        assert!(
            t0.elapsed() < Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
        accepted
    };
    assert!(write(0));
    store.flush().unwrap();
    assert_eq!(store.written(), 1);

    proxy.cut();
    let mut accepted = 1;
    for i in 1..5 {
        accepted += usize::from(write(i));
    }
    let t0 = Instant::now();
    while store.retried() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no retry seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        store.written(),
        1,
        "nothing is written while the database is away"
    );
    // The writer is held by its retries: the queue fills, then drops, never waiting.
    for i in 5..100 {
        accepted += usize::from(write(i));
    }
    assert!(store.dropped() > 0);
    assert_eq!(accepted as u64 + store.dropped(), 100);

    // A shutdown's flush does not wait for the database for ever.
    match store.flush_within(Duration::from_millis(300)) {
        Err(StoreError::FlushTimedOut(_)) => {}
        other => panic!("flush_within while the database is away: {other:?}"),
    }

    proxy.restore();
    store.flush().unwrap();
    assert_eq!(store.failed(), 0);
    assert_eq!(store.written(), accepted as u64);
    assert_eq!(store.debug_record_count("gone").unwrap(), accepted as u64);
}

/// Every pooled connection runs with a statement timeout, so a stuck database fails a
/// statement (and the API request or the writer's batch behind it) instead of holding it;
/// a URL's own `options` setting wins.
#[test]
fn postgres_connections_have_a_statement_timeout() {
    let shown = |store: &Store| {
        let Db::Postgres(pg) = store.db() else {
            unreachable!("a PostgreSQL store")
        };
        pg.run(async |c| {
            let row = c.query_one("SHOW statement_timeout", &[]).await?;
            Ok(row.try_get::<_, String>(0)?)
        })
        .unwrap()
    };
    assert_eq!(shown(&fresh(Kind::Postgres)), "10s");
    let TestDb::Postgres { url, .. } = TestDb::postgres() else {
        unreachable!()
    };
    let own = PostgresUrl::parse(&format!(
        "{}?options=-c%20statement_timeout%3D3s",
        url.as_str()
    ))
    .unwrap();
    assert_eq!(shown(&Store::open_postgres(&own).unwrap()), "3s");
}

/// Two nodes giving one username to two devices at once: both checks run before either
/// insert commits, the unique index refuses the second insert, and that is answered as the
/// check would have (the holder named), not as a store fault (the API's 400, not a 500).
#[test]
fn postgres_a_username_taken_by_a_concurrent_insert_is_refused_as_taken() {
    let t = TestDb::postgres();
    let TestDb::Postgres { db, .. } = &t else {
        unreachable!()
    };
    let store = t.open();
    store.ping().unwrap();
    let other_node = {
        let db = db.clone();
        std::thread::spawn(move || {
            test_postgres::server().sql(
                &db,
                "BEGIN;
                 INSERT INTO devices (account_id, id, doc, username, realm, ha1, created, modified, rev)
                 VALUES ('acc', 'first', '{}', 'desk', 'r.test', '{}', 1, 1, 1);
                 SELECT pg_sleep(1.5);
                 COMMIT;",
            )
        })
    };
    // The other transaction holds its row (uncommitted) by now: this check sees no holder,
    // and the insert waits on the index until the other commits.
    std::thread::sleep(Duration::from_millis(500));
    let creds = devices::SipCredentials {
        username: "Desk".into(),
        realm: "r.test".into(),
        ha1: [("MD5".to_string(), "00ff".to_string())].into(),
    };
    let t0 = Instant::now();
    let answer = store.put_device("acc", "second", &json!({}), Some(&creds));
    other_node.join().unwrap();
    assert!(
        t0.elapsed() > Duration::from_millis(500),
        "did not wait on the index"
    );
    let taken = answer.expect("not a store fault").unwrap_err();
    assert_eq!(
        (taken.device_id.as_str(), taken.username.as_str()),
        ("first", "Desk")
    );
    assert!(store.device("acc", "second").unwrap().is_none());
}

both_backends! {
/// A debug record written again (the writer's retry of a batch whose commit did land) is kept
/// once: its id is unique (migration 8).
fn a_debug_record_written_twice_is_kept_once(kind) {
    let store = fresh(kind);
    let r = rec(
        "acc",
        "again@h",
        1,
        RecordKind::Request,
        gregorian_now(),
        request_doc("again@h", 1, "http://w/"),
    );
    assert!(store.write(Write::Debug(r.clone())));
    store.flush().unwrap();
    assert!(store.write(Write::Debug(r.clone())));
    store.flush().unwrap();
    assert_eq!(store.debug_records("acc", "again@h").unwrap(), vec![r]);
}
}

/// A stored event written straight to the queue, for the tests that set its time.
fn event(account: &str, call: &str, seq: u32, created: i64, ev: &CallEvent) -> StoredEvent {
    StoredEvent {
        account_id: account.into(),
        call_id: call.into(),
        seq,
        at_ms: u64::from(seq) * 10,
        created,
        doc: serde_json::to_value(ev).unwrap(),
    }
}

both_backends! {
fn call_events_read_back_in_order_per_call(kind) {
    let store = fresh(kind);
    let started = Instant::now() - Duration::from_millis(1500);
    let mut rec = CallEvents::new(Some(store.clone()), "acc", "c1@host", started);
    let mut other = CallEvents::new(Some(store.clone()), "acc", "c2@host", Instant::now());
    rec.record(CallEvent::Invite { from: "alice".into(), to: "6000".into() });
    other.record(CallEvent::Dtmf { digit: "9".into() });
    rec.record(CallEvent::Digits { digits: "12#".into(), into: "Digits[pin]".into() });
    rec.record(CallEvent::End { by: "server".into(), how: "BYE".into(), why: Some("flow ended".into()) });
    store.flush().unwrap();
    let evs = store.call_events("acc", "c1@host").unwrap();
    let kinds: Vec<&str> = evs.iter().map(StoredEvent::kind).collect();
    assert_eq!(kinds, ["invite", "digits", "end"]);
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    // Times count from the INVITE's arrival, not from the recorder's making.
    assert!(evs[0].at_ms >= 1500 && evs[0].at_ms < 60_000, "{}", evs[0].at_ms);
    assert!(evs.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let api = evs[1].to_api_json();
    assert_eq!(api["kind"], "digits");
    assert_eq!(api["into"], "Digits[pin]");
    let line = api["line"].as_str().unwrap();
    assert!(line.ends_with(" digits 12# collected as Digits[pin]"), "{line}");
    assert_eq!(
        evs[2].to_api_json()["line"].as_str().unwrap().split_once(' ').unwrap().1,
        "BYE from server (flow ended)"
    );
    // Another call, another account: not mixed in.
    assert_eq!(store.call_events("acc", "c2@host").unwrap().len(), 1);
    assert!(store.call_events("other", "c1@host").unwrap().is_empty());
    // The same event written again (a batch retried) adds no copy.
    let again = event("acc", "c1@host", 0, gregorian_now(), &CallEvent::Truncated);
    assert!(store.write(Write::CallEvent(again)));
    store.flush().unwrap();
    let evs = store.call_events("acc", "c1@host").unwrap();
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0].kind(), "invite");
}
}

both_backends! {
/// The debug page's list: one row per call of the account, newest first, with its INVITE
/// and its end (none while it lasts), paged by (created, call id).
fn recent_calls_list_each_call_once_newest_first(kind) {
    let store = fresh(kind);
    let now = gregorian_now();
    let invite = CallEvent::Invite { from: "a".into(), to: "6000".into() };
    let end = CallEvent::End { by: "caller".into(), how: "BYE".into(), why: None };
    let w = |call: &str, seq: u32, created: i64, ev: &CallEvent| {
        assert!(store.write(Write::CallEvent(event("acc", call, seq, created, ev))));
    };
    w("old", 0, now - 10, &invite);
    w("old", 1, now - 10, &CallEvent::Answer { code: 200 });
    w("old", 2, now - 9, &end);
    w("live", 0, now, &invite);
    w("live", 1, now, &CallEvent::Answer { code: 200 });
    w("b-same-second", 0, now, &invite);
    w("b-same-second", 1, now, &end);
    store.write(Write::CallEvent(event("other", "theirs", 0, now, &invite)));
    store.flush().unwrap();
    let all = store.recent_calls("acc", None, 10).unwrap();
    let ids: Vec<&str> = all.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["live", "b-same-second", "old"]);
    assert_eq!(all[0].end, None);
    assert_eq!(all[0].first["kind"], "invite");
    assert_eq!(all[0].created, now);
    let (at, doc) = all[2].end.clone().unwrap();
    assert_eq!(at, 20);
    assert_eq!(doc["how"], "BYE");
    let page = store.recent_calls("acc", Some((now, "live")), 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].call_id, "b-same-second");
    let rest = store.recent_calls("acc", Some((now, "b-same-second")), 10).unwrap();
    assert_eq!(rest.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["old"]);
}
}

both_backends! {
fn call_events_stop_after_the_cap_with_one_truncated(kind) {
    let store = fresh(kind);
    let mut rec = CallEvents::new(Some(store.clone()), "acc", "loop", Instant::now());
    for _ in 0..MAX_EVENTS_PER_CALL + 20 {
        rec.record(CallEvent::Dtmf { digit: "1".into() });
    }
    store.flush().unwrap();
    let evs = store.call_events("acc", "loop").unwrap();
    assert_eq!(evs.len(), MAX_EVENTS_PER_CALL as usize + 1);
    assert!(evs[..MAX_EVENTS_PER_CALL as usize].iter().all(|e| e.kind() == "dtmf"));
    assert_eq!(evs.last().unwrap().kind(), "truncated");
}
}

both_backends! {
fn call_events_are_purged_with_the_debug_records(kind) {
    let store = fresh(kind);
    let now = gregorian_now();
    let day = 86_400;
    let ev = CallEvent::Answer { code: 200 };
    store.write(Write::CallEvent(event("acc", "old", 0, now - 8 * day, &ev)));
    store.write(Write::CallEvent(event("acc", "old", 1, now - 8 * day, &ev)));
    store.write(Write::CallEvent(event("acc", "new", 0, now, &ev)));
    store.write(Write::Debug(rec("acc", "old", 1, RecordKind::Request, now - 8 * day, json!({}))));
    store.flush().unwrap();
    let purged = store.purge_older_than(Duration::from_secs(7 * day as u64)).unwrap();
    assert_eq!(purged, 3);
    assert!(store.call_events("acc", "old").unwrap().is_empty());
    assert_eq!(store.call_events("acc", "new").unwrap().len(), 1);
}
}

#[test]
fn wire_values_are_trimmed_to_a_sane_length() {
    let long = "é".repeat(MAX_VALUE_CHARS_TEST + 50);
    let t = trim_value(&long);
    assert_eq!(t.chars().count(), MAX_VALUE_CHARS_TEST + 1);
    assert!(t.ends_with('…'));
    assert_eq!(trim_value("short"), "short");
}

const MAX_VALUE_CHARS_TEST: usize = super::events::MAX_VALUE_CHARS;
