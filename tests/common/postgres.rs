//! A PostgreSQL server of the test binary's own: `initdb` into a temp dir, listening on
//! 127.0.0.1 and a free port, password authentication (scram-sha-256) over TCP, a role
//! `pivotd` with a password, and a fresh database for each test ([`database`]). One server per
//! test binary, started by the first test that asks; a watchdog process stops it and removes
//! its files when the binary exits (statics are never dropped).
//!
//! Tests run as root, which PostgreSQL refuses to run as: the server then runs as the
//! `postgres` user (made by Debian's package; else `nobody`) through `setpriv`.
//!
//! A machine without PostgreSQL fails the test with a message saying what to install.
//! Std and libc only: this file is also compiled into the library's unit tests
//! (`src/store/tests.rs`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The role the tests' pivotd connects as.
pub const ROLE: &str = "pivotd";

pub struct TestPostgres {
    bin: PathBuf,
    pub port: u16,
    dir: PathBuf,
    /// The `postgres` superuser's password (for the harness's own statements).
    admin_password: String,
    /// [`ROLE`]'s password.
    pub password: String,
}

/// The binary's server, started on first use.
pub fn server() -> &'static TestPostgres {
    static SERVER: OnceLock<TestPostgres> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A new, empty database owned by [`ROLE`] on the binary's server, and its URL.
pub fn database() -> String {
    server().database()
}

/// A server of the caller's own, beside the binary's: for a test that stops and starts it
/// ([`TestPostgres::stop`], [`TestPostgres::start_again`]). Stopped with the binary, as the
/// shared one.
pub fn private_server() -> TestPostgres {
    start()
}

impl TestPostgres {
    /// A new, empty database owned by [`ROLE`] on this server, and its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name} OWNER {ROLE}"));
        self.url(&name)
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected at once).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]);
    }

    /// Starts the stopped server again, on the same data directory and port.
    pub fn start_again(&self) {
        let log = self.dir.join("log");
        self.pg_ctl(&["start", "-w", "-t", "30", "-l", &log.to_string_lossy()]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = as_server_user(&self.bin.join("pg_ctl"))
            .args(args)
            .arg("-D")
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// `postgres://pivotd:…@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Runs `sql` as the superuser on database `db` (over TCP, with its password); returns
    /// what psql printed (unaligned, tuples only). Panics when it fails.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.admin_password)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?} on {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Debian's server binaries: the newest `/usr/lib/postgresql/N/bin` with `initdb`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: no /usr/lib/postgresql/N/bin/initdb. \
             Install Debian's `postgresql` package (scripts/test.sh does)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The (uid, gid) the server runs as when the tests run as root.
fn server_user() -> (u32, u32) {
    for name in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, name]).output().ok()?;
            out.status.success().then_some(())?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        if let (Some(u), Some(g)) = (id("-u"), id("-g")) {
            return (u, g);
        }
    }
    panic!(
        "running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as"
    );
}

/// `program` run as the server's user (itself unless root).
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let (uid, gid) = server_user();
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn random_hex() -> String {
    // Unique enough for a test password and a directory name, with std only.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

fn start() -> TestPostgres {
    let bin = bin_dir();
    let dir =
        std::env::temp_dir().join(format!("pivotd-pg-{}-{}", std::process::id(), random_hex()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let admin_password = random_hex();
    let password = random_hex();
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, &admin_password).expect("password file");
    if is_root() {
        let (uid, gid) = server_user();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown temp dir");
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown password file");
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--nosync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
        .current_dir(&dir)
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&pwfile);
    let mut last_err = String::new();
    // A port found free may be taken before the server binds it: try another.
    for _ in 0..3 {
        let port = free_port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\nmax_connections = 300\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            dir.display()
        );
        let confpath = data.join("postgresql.auto.conf");
        std::fs::write(&confpath, conf).expect("postgresql.auto.conf");
        let pg = TestPostgres {
            bin: bin.clone(),
            port,
            dir: dir.clone(),
            admin_password: admin_password.clone(),
            password: password.clone(),
        };
        let out = as_server_user(&bin.join("pg_ctl"))
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        if !out.status.success() {
            last_err = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            continue;
        }
        watchdog(&pg);
        pg.sql(
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'"),
        );
        return pg;
    }
    panic!("the test PostgreSQL did not start: {last_err}");
}

/// A detached shell that waits for this process to end, then stops the server and removes
/// its directory.
fn watchdog(pg: &TestPostgres) {
    let stop = if is_root() {
        let (uid, gid) = server_user();
        format!("setpriv --reuid={uid} --regid={gid} --clear-groups -- ")
    } else {
        String::new()
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {stop}'{pg_ctl}' stop -m immediate -D '{data}' >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = pg.bin.join("pg_ctl").display(),
        data = pg.dir.join("data").display(),
        dir = pg.dir.display(),
    );
    // Started through a shell that exits at once (`&`), so the watchdog is no child of
    // this process to be waited for.
    let started = Command::new("sh")
        .args([
            "-c",
            "setsid sh -c \"$0\" </dev/null >/dev/null 2>&1 &",
            &script,
        ])
        .status()
        .expect("sh runs");
    assert!(started.success(), "the PostgreSQL watchdog did not start");
}
